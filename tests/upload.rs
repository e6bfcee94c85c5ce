//! `strata upload` against a real `strata serve`: a catalog with copies and
//! a broken file, a second run that finds everything there, and a run
//! killed part-way that the next one finishes without uploading anything
//! twice.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::server::{partner, serve};
use crate::util::strata;

fn catalog(dir: &Path, tori: usize) {
    std::fs::create_dir_all(dir.join("nested")).expect("dirs");
    let cube = crate::util::cube();
    std::fs::write(dir.join("cube.stl"), &cube).expect("write");
    std::fs::write(dir.join("nested/cube copy.stl"), &cube).expect("write");
    std::fs::write(dir.join("nested/broken.stl"), b"solid nonsense\nthis is not a facet\n").expect("write");
    for i in 0..tori {
        let torus = strata_core::synth::to_binary_stl("torus", &strata_core::synth::torus(30 + i, 90));
        std::fs::write(dir.join(format!("torus-{i:02}.stl")), torus).expect("write");
    }
}

fn upload(base: &str, key: &str, dir: &Path, report: &Path) -> (std::process::Output, Value) {
    let out = strata()
        .args(["upload", dir.to_str().expect("utf-8"), "--server", base, "--jobs", "3"])
        .args(["--report", report.to_str().expect("utf-8")])
        .env("STRATA_API_KEY", key)
        .output()
        .expect("upload runs");
    let report =
        std::fs::read(report).map(|b| serde_json::from_slice(&b).expect("JSON")).unwrap_or(Value::Null);
    (out, report)
}

fn by_file<'a>(report: &'a Value, end: &str) -> &'a Value {
    report["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["file"].as_str().is_some_and(|n| n.ends_with(end)))
        .expect(end)
}

#[test]
fn a_catalog_is_uploaded_once_copies_share_a_model_and_a_second_run_uploads_nothing() {
    let s = serve(&[]);
    let p = partner(&s.data, "Bulk Shop");
    let key = p["api_key"].as_str().expect("key");
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("catalog");
    catalog(&dir, 4);
    let (out, report) = upload(&s.base, key, &dir, &work.path().join("r1.json"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = &report["summary"];
    assert_eq!(summary["total"], 7, "{report}");
    assert_eq!(summary["uploaded"], 6, "the copy is not sent again: {report}");
    assert_eq!(
        (summary["processed"].as_u64(), summary["error"].as_u64(), summary["failed"].as_u64()),
        (Some(6), Some(1), Some(0))
    );
    let (cube, copy) = (by_file(&report, "/cube.stl"), by_file(&report, "cube copy.stl"));
    assert_eq!(cube["model"], copy["model"]);
    assert_eq!(copy["uploaded"], false);
    let broken = by_file(&report, "broken.stl");
    assert_eq!(broken["status"], "error");
    assert!(broken["error"].as_str().is_some_and(|e| !e.is_empty()), "{broken}");
    // Again: everything is there already.
    let (out, again) = upload(&s.base, key, &dir, &work.path().join("r2.json"));
    assert!(out.status.success());
    assert_eq!(again["summary"]["uploaded"], 0, "{again}");
    assert_eq!(again["summary"]["already_there"], 7);
    assert_eq!(by_file(&again, "/cube.stl")["model"], cube["model"]);
    // A bad key is a clear error at once.
    let (out, _) = upload(&s.base, "nope", &dir, &work.path().join("r3.json"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown API key"));
}

#[test]
fn a_killed_upload_is_finished_by_the_next_run_without_duplicates() {
    let s = serve(&[]);
    let p = partner(&s.data, "Bulk Shop");
    let key = p["api_key"].as_str().expect("key");
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("catalog");
    catalog(&dir, 30);
    let mut child = strata()
        .args(["upload", dir.to_str().expect("utf-8"), "--server", &s.base, "--jobs", "2"])
        .env("STRATA_API_KEY", key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("upload starts");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().expect("wait").is_none(), "the first run ended before it could be interrupted");
    let _ = child.kill();
    let _ = child.wait();
    let (out, report) = upload(&s.base, key, &dir, &work.path().join("r.json"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = &report["summary"];
    assert_eq!(summary["processed"], 32, "{summary}");
    assert_eq!(summary["error"], 1);
    // Every distinct file has exactly one uploaded model on the server.
    let c = crate::server::client();
    crate::server::rt().block_on(async {
        let listed: Value = c
            .get(format!("{}/model/?per_page=200", s.base))
            .header("x-api-key", key)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let uploaded: Vec<&Value> = listed["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter(|m| m["status"] != "not-uploaded")
            .collect();
        assert_eq!(uploaded.len(), 32, "one model per distinct file (the cube's copy shares one)");
        let mut shas: Vec<&str> = uploaded.iter().filter_map(|m| m["sha256"].as_str()).collect();
        shas.sort_unstable();
        shas.dedup();
        assert_eq!(shas.len(), 32, "no bytes uploaded twice");
    });
}
