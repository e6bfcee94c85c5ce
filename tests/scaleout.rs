//! Beyond one machine: two `strata serve --no-workers` and two `strata
//! worker` processes on different ports and data directories, over one real
//! PostgreSQL database and one real S3 server (s3s-fs in this binary, SigV4
//! checked). Uploads through one server are processed by the workers and
//! streamed from the other; a worker killed with SIGKILL in the middle of a
//! job loses nothing (its lease runs out and the other takes the job); every
//! callback is delivered once.
//!
//! PostgreSQL comes from `STRATA_TEST_POSTGRES` (`scripts/test-services.sh
//! start`); without it these tests say so and skip, and `.ci/run` makes
//! them mandatory.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::callbacks::Receiver;
use crate::objstore::{KillOnDrop, S3, print_all, serve_with_env};
use crate::server::{client, create_model, get_json_as, login, rt};
use crate::util::{run, strata};
use strata_pipeline::db::DatabaseLocation;
use strata_pipeline::db::sql::Conn;

const BLOBS: &str = "s3://strata-test/fleet";

/// A fresh PostgreSQL schema's URL, or `None` (skipped, with a message).
fn database() -> Option<String> {
    match strata_pipeline::db::testing::fresh_postgres()? {
        DatabaseLocation::Postgres(url) => Some(url),
        other => panic!("not a PostgreSQL location: {other:?}"),
    }
}

/// `strata worker` on `data`; killed on drop.
fn worker(data: &Path, env: &[(&'static str, String)], args: &[&str]) -> KillOnDrop {
    let mut child = strata()
        .args(["worker", "--data", data.to_str().expect("utf-8")])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(data.with_extension("log")).expect("log file"))
        .spawn()
        .expect("worker starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    assert!(line.starts_with("strata: worker"), "the worker did not start: {line:?}");
    KillOnDrop(child)
}

/// The holders of running jobs, as the database has them.
fn running_jobs(db: &Conn) -> Vec<(String, String)> {
    db.query_map("SELECT subject, locked_by FROM jobs WHERE status = 'running'", &[], |r| {
        Ok((r.get::<String>(0)?, r.get::<String>(1)?))
    })
    .expect("jobs")
}

#[test]
fn two_servers_and_two_workers_share_one_database_and_bucket() {
    let Some(url) = database() else { return };
    let s3 = S3::start();
    let env = s3.env();
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_string();
    let secrets_arg = secrets.to_str().expect("utf-8");
    let shared =
        ["--database", url.as_str(), "--blobs", BLOBS, "--secrets", secrets_arg, "--job-lease-secs", "3"];

    // The partner is made once, in the shared database.
    let made = run(&["admin", "create-partner", "Fleet Shop", "--email", "ops@shop.example", "--json"]
        .into_iter()
        .chain(["--data", &path("admin"), "--database", &url])
        .collect::<Vec<_>>());
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let p: Value = serde_json::from_slice(&made.stdout).expect("json");

    let server_args: Vec<&str> =
        shared.iter().copied().chain(["--no-workers", "--allow-private-callbacks"]).collect();
    let (_a, base_a) = serve_with_env(Path::new(&path("a")), &env, &server_args).expect("server A");
    let (_b, base_b) = serve_with_env(Path::new(&path("b")), &env, &server_args).expect("server B");
    let worker_args: Vec<&str> = shared
        .iter()
        .copied()
        .chain(["--public-url", base_a.as_str(), "--jobs", "1", "--allow-private-callbacks"])
        .collect();
    let mut w1 = Some(worker(Path::new(&path("w1")), &env, &worker_args));
    let mut w2 = worker(Path::new(&path("w2")), &env, &worker_args);
    let pids = [w1.as_ref().expect("w1").0.id(), w2.0.id()];

    let receiver = Receiver::start(&[]);
    let big = dir.path().join("big.stl");
    let out = run(&["generate", "torus", big.to_str().expect("utf-8"), "--triangles", "800000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = Conn::postgres(&url).expect("the test's own connection");

    let (big_id, cookie) = rt().block_on(async {
        let c = client();
        // A session made on A is good on B: sessions are rows, not memory.
        let cookie = login(&c, &base_a, &p).await;
        let r = c.get(format!("{base_b}/model/")).header("cookie", &cookie).send().await.expect("list");
        assert_eq!(r.status(), StatusCode::OK, "a session from server A on server B");
        let (_, upload, created) = create_model(
            &c,
            &base_a,
            &cookie,
            json!({"name": "Big torus", "callback": {"url": receiver.url, "method": "POST"}}),
        )
        .await;
        let bytes = std::fs::read(&big).expect("big");
        let r = c.put(&upload).body(bytes).send().await.expect("upload");
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
        (created["id"].as_str().expect("id").to_string(), cookie)
    });
    // Password guesses spread over both servers meet one limit: twenty
    // failures for a name in a minute, wherever they land (the counts are
    // rows; alone, each server would have let forty through).
    rt().block_on(async {
        let c = client();
        let second = (strata_pipeline::db::now_ms() / 1000) % 60;
        if second > 50 {
            // Fixed one-minute windows: start the burst in a fresh one.
            tokio::time::sleep(Duration::from_secs(61 - second as u64)).await;
        }
        for i in 0..20 {
            let base = if i % 2 == 0 { &base_a } else { &base_b };
            let r = c
                .post(format!("{base}/sessions"))
                .json(&json!({"username": p["username"], "password": format!("guess-{i}")}))
                .send()
                .await
                .expect("login");
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "attempt {i}");
        }
        for base in [&base_a, &base_b] {
            let r = c
                .post(format!("{base}/sessions"))
                .json(&json!({"username": p["username"], "password": p["password"]}))
                .send()
                .await
                .expect("login");
            assert_eq!(
                r.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "{base}: the guesses on the other server count"
            );
        }
    });

    // The spool went to the bucket before the upload was acknowledged: no
    // server's data directory holds it once its job is queued.
    let spools = std::fs::read_dir(dir.path().join("a/uploads")).expect("uploads").count();
    assert_eq!(spools, 0, "server A kept the upload's spool");

    // Whichever worker takes the big model is killed in the middle of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let running = running_jobs(&db);
        if let Some((_, by)) = running.iter().find(|(subject, _)| *subject == big_id) {
            break by.clone();
        }
        let exited: Vec<String> = [w1.as_mut().map(|w| &mut w.0), Some(&mut w2.0)]
            .into_iter()
            .flatten()
            .filter_map(|c| c.try_wait().ok().flatten().map(|s| format!("pid {} exited: {s}", c.id())))
            .collect();
        assert!(
            exited.is_empty() && Instant::now() < deadline,
            "no worker took the job ({exited:?}); jobs: {:?}; worker logs:\n{}\n{}",
            db.query_map("SELECT status, attempts, last_error FROM jobs", &[], |r| Ok((
                r.get::<String>(0)?,
                r.get::<i64>(1)?,
                r.get::<Option<String>>(2)?
            ))),
            std::fs::read_to_string(dir.path().join("w1.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("w2.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = pids.iter().position(|pid| holder.contains(&format!("-{pid}-"))).expect("a worker's lease");
    let survivor_pid = pids[1 - killed];
    if killed == 0 {
        let mut w = w1.take().expect("w1");
        w.0.kill().expect("SIGKILL");
        let _ = w.0.wait();
    } else {
        let mut w = w2;
        w.0.kill().expect("SIGKILL");
        let _ = w.0.wait();
        // w1 stays the survivor; keep it alive below.
    }
    assert_eq!(
        running_jobs(&db).iter().filter(|(s, _)| *s == big_id).count(),
        1,
        "the killed worker's job is still leased to it until the lease runs out"
    );

    // The rest of the catalog goes in through server B with the bulk
    // uploader, while the survivor works.
    let catalog = dir.path().join("catalog");
    std::fs::create_dir_all(&catalog).expect("catalog");
    for name in
        ["numpystl_cube_binary_solidheader.stl", "assimp_sphere_with_hole.stl", "3mf_box.3mf", "spot.obj"]
    {
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets").join(name), catalog.join(name))
            .expect("copy");
    }
    let report = dir.path().join("upload.json");
    let uploaded = run(&[
        "upload",
        catalog.to_str().expect("utf-8"),
        "--server",
        &base_b,
        "--api-key",
        p["api_key"].as_str().expect("key"),
        "--report",
        report.to_str().expect("utf-8"),
    ]);
    assert!(uploaded.status.success(), "{}", String::from_utf8_lossy(&uploaded.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let files = report["files"].as_array().or_else(|| report.as_array()).expect("files").clone();
    assert_eq!(files.len(), 4, "{report}");
    for f in &files {
        assert_eq!(f["status"], "processed", "{f}");
    }

    // The big model ends processed, by the survivor, on its second attempt.
    let model = rt().block_on(async {
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let m = get_json_as(&c, &format!("{base_b}/model/{big_id}/"), &cookie).await;
            if m["status"] != "processing" {
                break m;
            }
            assert!(Instant::now() < deadline, "the killed worker's job was never taken over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(model["status"], "processed", "{model}");
    let (attempts, by): (i64, Option<String>) = db
        .query_row("SELECT attempts, locked_by FROM jobs WHERE subject = $1", &[&big_id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("the job");
    assert_eq!(attempts, 2, "claimed by the killed worker, then by the survivor");
    assert_eq!(by, None, "completed jobs hold no lease");
    let done_by: Vec<String> =
        db.query_map("SELECT DISTINCT status FROM jobs", &[], |r| r.get(0)).expect("statuses");
    assert_eq!(done_by, vec!["done".to_string()], "every job ended done");
    // The survivor is alive and well: it was not a restart that did it.
    let state = std::fs::read_to_string(format!("/proc/{survivor_pid}/status")).expect("the survivor runs");
    assert!(!state.contains("zombie"), "the surviving worker died too: {state}");

    // A printer holding a token made on B pulls the stream from A.
    let (token, manifest) = rt().block_on(async {
        let c = client();
        let r = c
            .post(format!("{base_b}/tokens"))
            .json(
                &json!({"api_key": p["api_key"], "receiver_email": "ann@example.com", "model": model["uri"]}),
            )
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), StatusCode::CREATED);
        let token = r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_string();
        let manifest: Value = get_json_as(&c, &format!("{base_a}/streams/{token}/manifest"), &cookie).await;
        (token, manifest)
    });
    print_all(&base_a, &token, &dir.path().join("print"), &manifest);
    // Its status, reported to A, reads back on B.
    rt().block_on(async {
        let c = client();
        let t = get_json_as(&c, &format!("{base_b}/tokens/{token}"), &cookie).await;
        assert_eq!(t["printing_job_status"], "SUCCESS", "{t}");
    });

    // Both servers sign with the keys in --secrets: they publish the same
    // key set, and a JWT the CLI issues from the shared database and keys
    // opens the model on either server.
    let issued = run(&[
        "admin",
        "issue-jwt",
        "--data",
        &path("admin"),
        "--database",
        &url,
        "--secrets",
        secrets_arg,
        "--partner",
        p["username"].as_str().expect("username"),
        "--scope",
        "get.model",
        "--model",
        &big_id,
    ]);
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let jwt = String::from_utf8(issued.stdout).expect("utf-8").trim().to_string();
    rt().block_on(async {
        let c = client();
        let jwks_a: Value = get_json_as(&c, &format!("{base_a}/.well-known/jwks.json"), "").await;
        let jwks_b: Value = get_json_as(&c, &format!("{base_b}/.well-known/jwks.json"), "").await;
        assert_eq!(jwks_a, jwks_b, "the servers publish one key set");
        for base in [&base_a, &base_b] {
            let r =
                c.get(format!("{base}/api/v2/model/{big_id}")).bearer_auth(&jwt).send().await.expect("get");
            assert_eq!(r.status(), StatusCode::OK, "{base}: {:?}", r.text().await);
        }
    });

    // Every delivery the database holds went out exactly once, whichever
    // process sent it (servers and workers all run senders).
    std::thread::sleep(Duration::from_secs(2));
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    for r in receiver.seen() {
        let id = r.headers.get("webhook-id").cloned().unwrap_or_default();
        *per_delivery.entry(id).or_default() += 1;
    }
    assert!(per_delivery.values().all(|n| *n == 1), "a callback was delivered twice: {per_delivery:?}");
    let queued: i64 =
        db.query_row("SELECT CAST(COUNT(*) AS BIGINT) FROM callbacks", &[], |r| r.get(0)).expect("callbacks");
    assert_eq!(per_delivery.len() as i64, queued, "{per_delivery:?}");
    let delivered: i64 = db
        .query_row("SELECT CAST(COUNT(*) AS BIGINT) FROM callbacks WHERE state = 'delivered'", &[], |r| {
            r.get(0)
        })
        .expect("callbacks");
    assert_eq!(delivered, queued, "every delivery is recorded delivered");
}
