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

/// The report entry of the input whose file name is `name`.
fn model_named<'a>(report: &'a Value, name: &str) -> &'a Value {
    let models = report["models"].as_array().expect("models");
    let found = models
        .iter()
        .find(|m| m["file"].as_str().and_then(|f| Path::new(f).file_name()).is_some_and(|f| f == name));
    found.unwrap_or_else(|| panic!("{name} is not in the report"))
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
    let cube = crate::util::cube();
    std::fs::write(cat.join("a_cube.stl"), &cube).expect("write");
    std::fs::write(cat.join("sub/same_cube.STL"), &cube).expect("write");
    std::fs::write(cat.join("empty.stl"), b"").expect("write");
    std::fs::write(cat.join("truncated.stl"), &cube[..300]).expect("write");
    std::fs::write(cat.join("notes.txt"), b"not a model").expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink(cat.join("gone.stl"), cat.join("dangling.stl")).expect("symlink");
    #[cfg(unix)]
    std::os::unix::fs::symlink("/dev/zero", cat.join("endless.stl")).expect("symlink");
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
    #[cfg(unix)]
    {
        // A device behind a model's name is refused, not read for ever.
        assert_eq!(status_of("endless.stl").as_deref(), Some("failed"));
        let message = model_named(&report, "endless.stl")["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not a regular file"), "{message}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("truncated.stl"), "{stdout}");

    // A path that does not exist stops the run before it starts.
    let (out, _) = ingest(&[&tmp.path().join("nowhere")], &data, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
}

/// A binary STL of `n` faces that are all degenerate: each has its second
/// and third vertex at the same point (collapsed), on a grid so that no two
/// faces are alike.
fn all_degenerate_stl(n: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(84 + 50 * n as usize);
    bytes.extend_from_slice(&[b' '; 80]);
    bytes.extend_from_slice(&n.to_le_bytes());
    for i in 0..n {
        let (x, y) = ((i % 1000) as f32, (i / 1000) as f32);
        let vertices = [[x, y, 0.0], [x + 1.0, y, 0.0], [x + 1.0, y, 0.0]];
        bytes.extend_from_slice(&[0u8; 12]);
        for v in vertices.iter().flatten() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&[0u8; 2]);
    }
    bytes
}

#[test]
fn a_million_degenerate_faces_fail_alone_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cat = tmp.path().join("catalog");
    std::fs::create_dir_all(&cat).expect("mkdir");
    std::fs::write(cat.join("a_cube.stl"), crate::util::cube()).expect("write");
    std::fs::write(cat.join("degenerate.stl"), all_degenerate_stl(1_000_000)).expect("write");
    let data = tmp.path().join("data");
    let (out, report) = ingest(&[&cat], &data, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let degenerate = model_named(&report, "degenerate.stl");
    assert_eq!(degenerate["status"], "failed");
    assert_eq!(degenerate["error"]["code"], "all_degenerate", "{degenerate}");
    let message = degenerate["error"]["message"].as_str().expect("message");
    assert!(message.contains("all 1000000 triangles are degenerate"), "{message}");
    assert_eq!(statuses(&report).iter().filter(|(_, s)| s == "ok").count(), 1, "the cube went on");
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

#[test]
fn a_memory_budget_below_one_model_processes_the_models_one_at_a_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cat = tmp.path().join("catalog");
    torus_catalog(&cat, 6);
    // 1 MiB: every 1 MB torus is estimated above it, so each goes alone.
    let (out, report) = ingest(&[&cat], &tmp.path().join("tight"), &["--jobs", "2", "--max-memory", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["summary"]["ok"].as_u64(), Some(6), "{}", report["summary"]);
    assert_eq!(report["summary"]["peak_models_in_flight"].as_u64(), Some(1));
    assert_eq!(report["summary"]["memory_budget"].as_u64(), Some(1 << 20));
    // The default budget lets the reader run ahead of two workers.
    let (out, report) = ingest(&[&cat], &tmp.path().join("roomy"), &["--jobs", "2"]);
    assert!(out.status.success());
    assert_eq!(report["summary"]["ok"].as_u64(), Some(6));
    assert!(report["summary"]["peak_models_in_flight"].as_u64() >= Some(2), "{}", report["summary"]);
    // A budget of 0 is refused at once, naming the flag.
    let (out, _) = ingest(&[&cat], &tmp.path().join("zero"), &["--max-memory", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-memory"));
}

/// A catalog of `n` distinct tori (one generated mesh, a distinct header
/// each), big enough that a debug build is still busy when it is killed.
fn torus_catalog(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let first = dir.join("torus_000.stl");
    let out = run(&["generate", "torus", first.to_str().expect("utf-8"), "--triangles", "20000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&first).expect("read");
    for i in 1..n {
        let mut b = bytes.clone();
        let header = format!("torus {i:06}");
        b[..header.len()].copy_from_slice(header.as_bytes());
        std::fs::write(dir.join(format!("torus_{i:03}.stl")), b).expect("write");
    }
}

fn stored_models(data: &Path) -> Vec<Value> {
    let list = run(&["models", "list", "--json", "--data", data.to_str().expect("utf-8")]);
    if !list.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&list.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// Kills a real run mid-way with `signal`, then checks what a crash may
/// leave: no blob under its final name that is not whole, no row whose
/// blobs are missing, and a second run that finishes the rest.
fn interrupted_run_resumes(signal: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cat = tmp.path().join("catalog");
    torus_catalog(&cat, 40);
    let data = tmp.path().join("data");
    let mut child = crate::util::strata()
        .args([
            "ingest",
            cat.to_str().expect("utf-8"),
            "--data",
            data.to_str().expect("utf-8"),
            "--jobs",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while stored_models(&data).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no model stored in time");
        assert!(child.try_wait().expect("wait").is_none(), "the run ended before it could be interrupted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(!exit.success(), "the run was interrupted, not finished");

    let before = stored_models(&data);
    assert!(before.len() < 40, "interrupted before the end ({} stored)", before.len());
    // Every visible blob is whole: its name is its bytes' hash.
    for shard in std::fs::read_dir(data.join("blobs")).expect("blobs") {
        for blob in std::fs::read_dir(shard.expect("entry").path()).expect("shard") {
            let path = blob.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read");
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            assert_eq!(strata_core::stream::sha256_hex(&bytes), name, "partial blob {}", path.display());
        }
    }
    // Every row's blobs are there.
    let blob =
        |id: &Value| data.join("blobs").join(&id.as_str().expect("id")[..2]).join(id.as_str().expect("id"));
    for m in &before {
        for key in ["original_blob", "snapshot_blob", "manifest_blob"] {
            assert!(blob(&m[key]).is_file(), "{key} of {} missing", m["file_name"]);
        }
    }

    let (out, report) = ingest(&[&cat], &data, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = &report["summary"];
    assert_eq!(s["skipped"].as_u64(), Some(before.len() as u64), "what was stored is not redone");
    assert_eq!(s["ok"].as_u64(), Some(40 - before.len() as u64), "the rest is done");
    assert_eq!(stored_models(&data).len(), 40);
    assert_eq!(std::fs::read_dir(data.join("tmp")).expect("tmp").count(), 0, "no staging file survives");
}

#[test]
fn a_run_killed_with_sigkill_resumes_where_it_stopped() {
    interrupted_run_resumes("-KILL");
}

#[test]
fn a_run_stopped_with_ctrl_c_resumes_where_it_stopped() {
    interrupted_run_resumes("-INT");
}

#[test]
fn failed_models_are_skipped_unless_retried() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cat = tmp.path().join("catalog");
    std::fs::create_dir_all(&cat).expect("mkdir");
    let sheet: Vec<_> = strata_core::synth::cube_facets().into_iter().take(2).collect();
    std::fs::write(cat.join("sheet.stl"), strata_core::synth::to_binary_stl("sheet", &sheet)).expect("write");
    let data = tmp.path().join("data");
    let (_, first) = ingest(&[&cat], &data, &[]);
    assert_eq!(statuses(&first)[0].1, "failed");
    assert_eq!(first["models"][0]["error"]["code"], "not_a_volume");
    let (_, again) = ingest(&[&cat], &data, &[]);
    assert_eq!(statuses(&again)[0].1, "skipped");
    let (out, retried) = ingest(&[&cat], &data, &["--retry-failed", "--timings"]);
    assert!(out.status.success());
    assert_eq!(statuses(&retried)[0].1, "failed", "processed again");
    assert_eq!(retried["models"][0]["error"]["code"], "not_a_volume");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("core stages"), "{stdout}");
    assert!(retried["summary"]["stage_seconds"]["parse"].as_f64().is_some_and(|t| t > 0.0));
}

/// Regression (issue 16): a store that fails mid-run used to leave the
/// workers blocked on a full channel and `strata ingest` hanging for ever.
#[test]
fn a_failing_store_ends_the_run_with_its_error_within_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = dir.path().join("catalog");
    // More models than the writer's channel holds, so blocked workers would show.
    torus_catalog(&catalog, 150);
    let data = dir.path().join("data");
    // Every blob directory is a file: each publish fails, as on a full or
    // broken disk (permissions would not stop root).
    std::fs::create_dir_all(data.join("blobs")).expect("blobs");
    for b in 0..=255u8 {
        std::fs::write(data.join("blobs").join(format!("{b:02x}")), b"").expect("sabotage");
    }
    let started = std::time::Instant::now();
    let mut child = crate::util::strata()
        .args([
            "ingest",
            catalog.to_str().expect("utf-8"),
            "--data",
            data.to_str().expect("utf-8"),
            "--jobs",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ingest starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("ingest still running 60 s after its store failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(!status.success());
    assert!(stderr.contains("could not proceed") && stderr.contains("/blobs/"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
}
