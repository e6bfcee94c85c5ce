//! Backward compatibility of what Strata stores: a stream directory of
//! format v1 still verifies and decodes, and a `meta.db` written at each
//! earlier schema (`tests/fixtures/compat/make_old_dbs.py`, with a partner,
//! a model and a token) migrates and serves.

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
