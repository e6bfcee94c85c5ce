//! `strata ingest` and `strata models`: a catalog into the store, per-model
//! failures as data, idempotent re-runs, duplicates, and resuming.

use std::path::Path;

use serde_json::Value;

use crate::util::{repo_datasets, run};

fn ingest(paths: &[&Path], data: &Path, extra: &[&str]) -> (std::process::Output, Value) {
    let report = data.with_extension("report.json");
    let mut args: Vec<String> = vec!["ingest".into()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    args.extend([
        "--data".into(),
        data.display().to_string(),
        "--report".into(),
        report.display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    let report = std::fs::read(&report).map(|b| serde_json::from_slice(&b).expect("report is JSON"));
    (out, report.unwrap_or(Value::Null))
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| {
            let file = m["file"].as_str().expect("file");
            let name = Path::new(file).file_name().expect("name").to_string_lossy().into_owned();
            (name, m["status"].as_str().expect("status").to_string())
        })
        .collect()
}

#[test]
fn a_catalog_is_ingested_once_and_skipped_after() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let (out, report) = ingest(&[&repo_datasets()], &data, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = &report["summary"];
    let total = s["total"].as_u64().expect("total");
    assert!(total >= 15);
    let sum: u64 = ["ok", "repaired", "failed", "duplicate", "skipped"]
        .iter()
        .map(|k| s[*k].as_u64().expect("count"))
        .sum();
    assert_eq!(sum, total);
    let st = statuses(&report);
    // What the repair tests commit to, seen through the pipeline.
    for (file, want) in [
        ("numpystl_cube_binary_solidheader.stl", "ok"),
        ("3mf_box.3mf", "ok"),
        ("spot.obj", "ok"),
        ("assimp_sphere_with_hole.stl", "repaired"),
        ("numpystl_triamid_flipped.stl", "repaired"),
        ("trimesh_soup.stl", "failed"),
        ("trimesh_empty_binary.stl", "failed"),
    ] {
        assert!(st.contains(&(file.to_string(), want.to_string())), "{file}: {st:?}");
    }
    for m in report["models"].as_array().expect("models") {
        match m["status"].as_str() {
            Some("failed") => {
                assert!(m["error"]["code"].is_string() && m["error"]["message"].is_string(), "{m}")
            }
            Some("ok" | "repaired") => {
                let a = &m["artefacts"];
                for key in ["original", "snapshot", "manifest"] {
                    let id = a[key].as_str().expect("blob id");
                    assert!(data.join("blobs").join(&id[..2]).join(id).is_file(), "{key} blob missing");
                }
                assert_eq!(a["original"], m["sha256"]);
                assert!(m["summary"]["layers"].as_u64().expect("layers") > 0);
            }
            other => panic!("first run status {other:?}"),
        }
    }
    // A manifest in the store decodes against its chunk blobs.
    let first = report["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["status"] == "ok")
        .expect("an ok model");
    let id = first["artefacts"]["manifest"].as_str().expect("manifest");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(data.join("blobs").join(&id[..2]).join(id)).expect("manifest blob"),
    )
    .expect("json");
    assert_eq!(manifest["model_sha256"], first["sha256"]);

    // The second run skips everything and changes nothing.
    let (out, again) = ingest(&[&repo_datasets()], &data, &[]);
    assert!(out.status.success());
    assert_eq!(again["summary"]["skipped"].as_u64(), Some(total));

    // `models list --json` and `models show` read the same store.
    let list = run(&["models", "list", "--json", "--data", data.to_str().expect("utf-8")]);
    assert!(list.status.success());
    let models: Value = serde_json::from_slice(&list.stdout).expect("json");
    let distinct = total - s["duplicate"].as_u64().expect("dup");
    assert_eq!(models.as_array().map(|m| m.len() as u64), Some(distinct));
    let sha = first["sha256"].as_str().expect("sha");
    let show = run(&["models", "show", &sha[..10], "--data", data.to_str().expect("utf-8")]);
    assert!(show.status.success());
    let one: Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(one["id"].as_str(), Some(sha));
    let missing = run(&["models", "show", "0123456789", "--data", data.to_str().expect("utf-8")]);
    assert!(!missing.status.success());
}

#[test]
fn bad_files_are_recorded_and_the_rest_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cat = tmp.path().join("catalog");
    std::fs::create_dir_all(cat.join("sub")).expect("mkdir");
    let cube = std::fs::read(repo_datasets().join("numpystl_cube_binary_solidheader.stl")).expect("cube");
    std::fs::write(cat.join("a_cube.stl"), &cube).expect("write");
    std::fs::write(cat.join("sub/same_cube.STL"), &cube).expect("write");
    std::fs::write(cat.join("empty.stl"), b"").expect("write");
    std::fs::write(cat.join("truncated.stl"), &cube[..300]).expect("write");
    std::fs::write(cat.join("notes.txt"), b"not a model").expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink(cat.join("gone.stl"), cat.join("dangling.stl")).expect("symlink");
    let data = tmp.path().join("data");
    let (out, report) = ingest(&[&cat], &data, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = statuses(&report);
    assert!(!st.iter().any(|(f, _)| f == "notes.txt"), "only model extensions are walked");
    let status_of = |f: &str| st.iter().find(|(n, _)| n == f).map(|(_, s)| s.clone());
    assert_eq!(status_of("a_cube.stl").as_deref(), Some("ok"));
    assert_eq!(status_of("same_cube.STL").as_deref(), Some("duplicate"));
    assert_eq!(status_of("empty.stl").as_deref(), Some("failed"));
    assert_eq!(status_of("truncated.stl").as_deref(), Some("failed"));
    #[cfg(unix)]
    assert_eq!(status_of("dangling.stl").as_deref(), Some("failed"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("truncated.stl"), "{stdout}");

    // A path that does not exist stops the run before it starts.
    let (out, _) = ingest(&[&tmp.path().join("nowhere")], &data, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
}

#[test]
fn a_run_interrupted_after_its_blobs_resumes_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let model = repo_datasets().join("spot.obj");
    let (out, _) = ingest(&[&model], &data, &[]);
    assert!(out.status.success());
    // As if killed after writing blobs but before the row (and with a
    // half-written temporary file left behind): drop the database.
    for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    std::fs::write(data.join("tmp").join("half-written"), b"partial").expect("write");
    let (out, report) = ingest(&[&model], &data, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(statuses(&report)[0].1, "ok");
    assert_eq!(std::fs::read_dir(data.join("tmp")).expect("tmp").count(), 0);
}
