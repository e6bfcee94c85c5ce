//! The model lifecycle under failure: acknowledged uploads survive
//! `kill -9`, one process owns a data directory, a partner's queue is
//! bounded, and the legacy upload checks its key before it writes a byte.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::callbacks::Receiver;
use crate::server::{client, create_model, get_json_as, login, multipart, partner, rt, serve, serve_in};

/// A distinct closed model of about `2 * rings * 120` faces.
fn torus(rings: usize) -> Vec<u8> {
    strata_core::synth::to_binary_stl("torus", &strata_core::synth::torus(rings, 120))
}

/// Creates a model with a callback to `callback` and uploads `bytes`:
/// the model's URI, after checking the upload was acknowledged (204).
async fn acknowledged_upload(
    c: &reqwest::Client,
    base: &str,
    cookie: &str,
    callback: &str,
    bytes: Vec<u8>,
) -> String {
    let (uri, upload, _) = create_model(
        c,
        base,
        cookie,
        json!({"name": "torus", "callback": {"url": callback, "method": "POST"}}),
    )
    .await;
    let r = c.put(&upload).body(bytes).send().await.expect("upload");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    uri
}

/// Polls until every model is out of `processing`; their final statuses.
async fn final_statuses(c: &reqwest::Client, uris: &[String], cookie: &str, within: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for uri in uris {
            statuses.push(get_json_as(c, uri, cookie).await["status"].as_str().expect("status").to_string());
        }
        if statuses.iter().all(|s| s != "processing") {
            return statuses;
        }
        assert!(started.elapsed() < within, "still processing after {within:?}: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn acknowledged_uploads_survive_kill_9_and_every_change_is_called_back_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let receiver = Receiver::start(&[]);
    let args = ["--allow-private-callbacks", "--callback-retry-base-ms", "200"];
    let first = serve_in(&data, &args);
    let p = partner(&data, "Crash Shop");
    let uris = rt().block_on(async {
        let c = client();
        let cookie = login(&c, &first.base, &p).await;
        let mut uris = Vec::new();
        for i in 0..20 {
            uris.push(acknowledged_upload(&c, &first.base, &cookie, &receiver.url, torus(40 + i)).await);
        }
        uris
    });
    // Killed while the acknowledged uploads are being processed.
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    let second = serve_in(&data, &args);
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &second.base, &p).await;
        let uris: Vec<String> =
            uris.iter().map(|u| u.replace(u.split("/model/").next().expect("base"), &second.base)).collect();
        let statuses = final_statuses(&c, &uris, &cookie, Duration::from_secs(240)).await;
        assert!(statuses.iter().all(|s| s == "processed"), "{statuses:?}");
        // Every change was announced, each by one delivery (a delivery cut
        // off by the kill is retried under its same webhook-id).
        let ids: HashSet<String> = uris
            .iter()
            .map(|u| u.trim_end_matches('/').rsplit('/').next().expect("id").to_string())
            .collect();
        let started = Instant::now();
        loop {
            let mut deliveries: HashMap<(String, String), HashSet<String>> = HashMap::new();
            for r in receiver.seen() {
                let body: Value = serde_json::from_str(&r.body).expect("callback JSON");
                let key = (
                    body["id"].as_str().expect("id").to_string(),
                    body["status"].as_str().expect("s").to_string(),
                );
                deliveries.entry(key).or_default().insert(r.headers["webhook-id"].clone());
            }
            let complete = ids.iter().all(|id| {
                ["processing", "processed"]
                    .iter()
                    .all(|s| deliveries.contains_key(&(id.clone(), (*s).to_string())))
            });
            if complete {
                assert_eq!(
                    deliveries.len(),
                    40,
                    "one announcement per change, no more: {:?}",
                    deliveries.keys()
                );
                for (change, webhook_ids) in &deliveries {
                    assert_eq!(webhook_ids.len(), 1, "{change:?} was announced by {webhook_ids:?}");
                }
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "missing callbacks: {} seen",
                deliveries.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Nothing is left spooled once every job has finished.
    assert_eq!(std::fs::read_dir(data.join("uploads")).expect("uploads").count(), 0);
}

#[test]
fn a_second_process_on_one_data_directory_is_refused_naming_the_first() {
    let s = serve(&[]);
    let data = s.data.to_str().expect("utf-8").to_string();
    let holder = format!("in use by process {}", s.pid());
    let ingest = crate::util::run(&["ingest", "datasets", "--data", &data]);
    assert!(!ingest.status.success());
    let stderr = String::from_utf8_lossy(&ingest.stderr);
    assert!(stderr.contains(&holder), "{stderr}");
    let second = crate::util::run(&["serve", "--listen", "127.0.0.1:0", "--data", &data]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains(&holder));
    // The first is untouched and still serves.
    rt().block_on(async {
        let r = client().get(format!("{}/healthz", s.base)).send().await.expect("health");
        assert_eq!(r.status(), StatusCode::OK);
    });
}

#[test]
fn a_partner_over_its_queue_gets_503_and_no_acknowledged_upload_is_lost() {
    let s = serve(&["--queue-per-partner", "10"]);
    let p = partner(&s.data, "Busy Shop");
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let cookie = login(&c, base, &p).await;
        let mut uploads = Vec::new();
        for _ in 0..100 {
            let (uri, upload, _) = create_model(&c, base, &cookie, json!({"name": "t"})).await;
            uploads.push((uri, upload));
        }
        let body = torus(60);
        let sent = futures_util::future::join_all(uploads.iter().map(|(_, u)| {
            let (c, body) = (c.clone(), body.clone());
            async move { c.put(u).body(body).send().await.expect("upload") }
        }))
        .await;
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (r, (uri, upload)) in sent.into_iter().zip(&uploads) {
            match r.status() {
                StatusCode::NO_CONTENT => accepted.push(uri.clone()),
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(r.headers()["retry-after"].to_str().expect("ascii").parse::<u64>().is_ok());
                    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "queue_full");
                    refused.push((uri.clone(), upload.clone()));
                }
                other => panic!("upload answered {other}"),
            }
        }
        assert!(
            accepted.len() >= 10 && !refused.is_empty(),
            "{} accepted, {} refused",
            accepted.len(),
            refused.len()
        );
        let statuses = final_statuses(&c, &accepted, &cookie, Duration::from_secs(240)).await;
        assert!(statuses.iter().all(|s| s == "processed"), "{statuses:?}");
        // A refused upload left its model ready to be sent again.
        let (uri, upload) = &refused[0];
        assert_eq!(get_json_as(&c, uri, &cookie).await["status"], "not-uploaded");
        assert_eq!(c.put(upload).body(body).send().await.expect("again").status(), StatusCode::NO_CONTENT);
    });
}

#[test]
fn the_legacy_upload_with_a_bad_key_is_refused_before_any_byte_is_written() {
    let s = serve(&[]);
    let p = partner(&s.data, "Legacy Shop");
    let key = p["api_key"].as_str().expect("key").to_string();
    rt().block_on(async {
        let c = client();
        let base = &s.base;
        let created: Value = c
            .get(format!("{base}/api3/api_create_partner_token?api_key={key}"))
            .send()
            .await
            .expect("t")
            .json()
            .await
            .expect("json");
        let token = created["data"]["token"].as_str().expect("token").to_string();
        let fields = [("receiver_email", "a@b.example"), ("print_value", "1")];
        let body = multipart("b0undary", &fields, &torus(60));
        let r = c
            .post(format!("{base}/api3/api_upload_partner_stl?api_key=wrong&token={token}"))
            .header("content-type", "multipart/form-data; boundary=b0undary")
            .body(body)
            .send()
            .await
            .expect("upload");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["status"]["extended_description"], "invalid api_key\n");
        assert_eq!(
            std::fs::read_dir(s.data.join("uploads")).expect("uploads").count(),
            0,
            "a spool was written"
        );
    });
}

#[test]
fn a_locked_database_holds_up_only_the_requests_that_need_it() {
    let s = serve(&[]);
    let p = partner(&s.data, "Shop");
    rt().block_on(async {
        let c = client();
        let cookie = login(&c, &s.base, &p).await;
        // Another process takes the write lock (as a backup or an `admin`
        // command may): every write waits for it, up to the busy timeout.
        let other = rusqlite::Connection::open(s.data.join("meta.db")).expect("open the database");
        other.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
        // More waiting writes than the runtime has threads.
        let waiting: Vec<_> = (0..8)
            .map(|i| {
                let (c, base, cookie) = (c.clone(), s.base.clone(), cookie.clone());
                tokio::spawn(async move {
                    c.post(format!("{base}/model/"))
                        .header("cookie", cookie)
                        .json(&json!({"name": format!("waiting {i}")}))
                        .send()
                        .await
                        .map(|r| r.status())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let health =
            tokio::time::timeout(Duration::from_secs(5), c.get(format!("{}/healthz", s.base)).send()).await;
        let held_up = waiting.iter().filter(|w| !w.is_finished()).count();
        other.execute_batch("COMMIT").expect("release the lock");
        let health =
            health.expect("/healthz stalled behind requests waiting on the database").expect("health");
        assert_eq!(health.status(), StatusCode::OK);
        assert!(held_up > 0, "the lock held no request up: the test proves nothing");
        for w in waiting {
            assert_eq!(w.await.expect("task").expect("create"), StatusCode::CREATED);
        }
    });
}
