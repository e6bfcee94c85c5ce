//! Backward compatibility of what Strata stores: a stream directory of
//! format v1 still verifies and decodes, and a `meta.db` written at each
//! earlier schema (`tests/fixtures/compat/make_old_dbs.py`, with a partner,
//! a model and a token) migrates and serves, at a server's start or
//! through `strata migrate`.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;

use crate::server::{client, rt, serve_in};
use crate::util::run;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat")
}

#[test]
fn a_format_v1_stream_still_verifies_and_decodes() {
    let dir = fixtures().join("stream-v1");
    let verify = run(&["stream", "verify", dir.to_str().expect("utf-8")]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let info = run(&["stream", "info", dir.to_str().expect("utf-8"), "--json"]);
    assert!(info.status.success());
    let info: Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(info["version"], 1);
    // The dataset's cube is 2 mm on a side (its MANIFEST bbox): every
    // section is a 2 x 2 square.
    let layers = info["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 10);
    for l in layers {
        assert!((l["area"].as_f64().expect("area") - 4.0).abs() < 1e-6, "{l}");
    }
}

#[test]
fn a_meta_db_of_every_earlier_schema_migrates_and_serves() {
    for version in 1..=4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data");
        std::fs::copy(fixtures().join(format!("meta-v{version}.db")), data.join("meta.db")).expect("copy");
        let list = run(&["models", "list", "--data", data.to_str().expect("utf-8"), "--json"]);
        assert!(list.status.success(), "v{version}: {}", String::from_utf8_lossy(&list.stderr));
        let models: Value = serde_json::from_slice(&list.stdout).expect("json");
        assert_eq!(models[0]["file_name"], "cube.stl", "v{version}: {models}");
        if version < 2 {
            continue;
        }
        let s = serve_in(&data, &[]);
        rt().block_on(async {
            let c = client();
            let key = "0123456789abcdef0123456789abcdef";
            let token = "fedcba9876543210fedcba9876543210";
            let t: Value = c
                .get(format!("{}/token/{token}/", s.base))
                .header("x-api-key", key)
                .send()
                .await
                .expect("t")
                .json()
                .await
                .expect("json");
            assert_eq!(
                (t["printing_job_status"].as_str(), t["print_value"].to_string()),
                (Some("PRINTING"), "9.99".to_string()),
                "v{version}: {t}"
            );
            let r =
                c.get(format!("{}/model/m-old/", s.base)).header("x-api-key", key).send().await.expect("m");
            assert_eq!(r.status(), StatusCode::OK, "v{version}");
            let m: Value = r.json().await.expect("json");
            assert_eq!((m["name"].as_str(), m["status"].as_str()), (Some("Old cube"), Some("processed")));
            let legacy: Value = c
                .get(format!("{}/api3/api_get_partner_print_status?api_key={key}&token={token}", s.base))
                .send()
                .await
                .expect("legacy")
                .json()
                .await
                .expect("json");
            assert_eq!(legacy["data"]["printing_job_status_name"], "PRINTING", "v{version}");
        });
        // Every later migration ran: the partner was given a callback
        // secret (schema 3) and the admin command prints it.
        let secret = run(&["admin", "callback-secret", "oldshop", "--data", data.to_str().expect("utf-8")]);
        assert!(String::from_utf8_lossy(&secret.stdout).starts_with("whsec_"), "v{version}");
    }
}

/// `strata migrate`: an old store is left as it is by `--check` and by a
/// server started with `--no-migrate` (which refuses, naming the command),
/// migrated by `strata migrate`, then served; a store newer than this
/// build is refused by both.
#[test]
fn an_old_store_waits_for_strata_migrate_under_no_migrate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::copy(fixtures().join("meta-v2.db"), data.join("meta.db")).expect("copy");
    let d = data.to_str().expect("utf-8");
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let check = run(&["migrate", "--check", "--data", d]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("schema version 2; "), "{}", text(&check));
    assert!(text(&check).contains("pending migration(s): 3, 4, "), "{}", text(&check));

    // A server that may not migrate refuses at once and changes nothing.
    let mut child = crate::util::strata()
        .args(["serve", "--no-migrate", "--listen", "127.0.0.1:0", "--data", d])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "strata serve --no-migrate started on an old store");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused = child.wait_with_output().expect("output");
    assert!(!refused.status.success());
    assert!(text(&refused).contains("run `strata migrate` first"), "{}", text(&refused));
    let again = run(&["migrate", "--check", "--data", d]);
    assert!(text(&again).contains("schema version 2; "), "the refusal changed the store: {}", text(&again));

    let migrated = run(&["migrate", "--data", d]);
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(text(&migrated).contains("schema version 2 -> "), "{}", text(&migrated));
    let check = run(&["migrate", "--check", "--data", d]);
    assert!(check.status.success() && text(&check).contains("up to date"), "{}", text(&check));
    let s = serve_in(&data, &["--no-migrate"]);
    rt().block_on(async {
        let r = client()
            .get(format!("{}/model/m-old/", s.base))
            .header("x-api-key", "0123456789abcdef0123456789abcdef")
            .send()
            .await
            .expect("model");
        assert_eq!(r.status(), StatusCode::OK);
    });
    // While it runs, `strata migrate` is refused by the data lock.
    let busy = run(&["migrate", "--data", d]);
    assert!(!busy.status.success(), "{}", text(&busy));
    drop(s);

    // A store from a newer build: refused, not touched.
    let db = rusqlite::Connection::open(data.join("meta.db")).expect("open");
    db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)", []).expect("bump");
    drop(db);
    let newer = run(&["migrate", "--data", d]);
    assert!(!newer.status.success());
    assert!(text(&newer).contains("newer than this build"), "{}", text(&newer));
    let check = run(&["migrate", "--check", "--data", d]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
}
