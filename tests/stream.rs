//! `strata slice` and `strata stream`: the written stream decodes to
//! layers whose areas match trimesh's sections (the independent fixture of
//! `tests/slice.rs`), and every kind of damage is named by chunk.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{repo_datasets, run};

fn slice_to(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["slice", model.to_str().expect("utf-8"), out.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    run(&args)
}

fn info(dir: &Path) -> Value {
    let out = run(&["stream", "info", dir.to_str().expect("utf-8"), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("info is JSON")
}

/// Slices every fixture model found in `dir` through the CLI (small chunks,
/// so most streams span several) and compares `stream info`'s decoded
/// areas with trimesh's.
fn check(dir: &Path) -> usize {
    let fx = crate::util::slice_fixtures();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (file, want) in fx["models"].as_object().expect("models") {
        let model = dir.join(file);
        if !model.exists() {
            continue;
        }
        let out_dir = tmp.path().join(file);
        let h = want["layer_height"].as_f64().expect("h").to_string();
        let f = want["first_layer"].as_f64().expect("first").to_string();
        let out =
            slice_to(&model, &out_dir, &["--layer-height", &h, "--first-layer", &f, "--chunk-size", "20000"]);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let verified = run(&["stream", "verify", out_dir.to_str().expect("utf-8")]);
        assert!(verified.status.success(), "{file}: {}", String::from_utf8_lossy(&verified.stderr));
        let got = info(&out_dir);
        let layers = got["layers"].as_array().expect("layers");
        let area = want["union_area"].as_array().expect("area");
        let z = want["z"].as_array().expect("z");
        checked += 1;
        assert_eq!(got["layer_count"].as_u64(), Some(layers.len() as u64));
        if layers.len() != area.len() {
            problems.push(format!("{file}: {} layers, trimesh {}", layers.len(), area.len()));
            continue;
        }
        let h = want["layer_height"].as_f64().expect("h");
        let tiny = 1e-3 * (h / 0.2) * (h / 0.2);
        for (i, (l, (ra, rz))) in layers.iter().zip(area.iter().zip(z)).enumerate() {
            assert_eq!(l["index"].as_u64(), Some(i as u64));
            let (ra, rz) = (ra.as_f64().expect("f64"), rz.as_f64().expect("f64"));
            let (a, lz) = (l["area"].as_f64().expect("area"), l["z"].as_f64().expect("z"));
            if (lz - rz).abs() > 1e-6 * rz.abs().max(1.0) {
                problems.push(format!("{file} layer {i}: z {lz} vs {rz}"));
            }
            if (a - ra).abs() > crate::util::area_tolerance(file, i, ra, tiny) {
                problems.push(format!("{file} layer {i}: area {a} vs trimesh {ra}"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    checked
}

#[test]
fn repo_models_stream_areas_match_trimesh() {
    assert!(check(&repo_datasets()) >= 6);
}

#[test]
fn shared_models_stream_areas_match_trimesh() {
    let Some(dir) = std::env::var_os("STRATA_DATASETS") else { return };
    assert!(check(&PathBuf::from(dir)) >= 20);
}

/// A sliced sample with several chunks.
fn sliced(tmp: &Path) -> PathBuf {
    let dir = tmp.join("stream");
    let model = repo_datasets().join("ur3_collision_upperarm.stl");
    let out = slice_to(&model, &dir, &["--chunk-size", "3000", "--layer-height", "0.004"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn verify_err(dir: &Path) -> String {
    let out = run(&["stream", "verify", dir.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "verify passed a damaged stream");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn manifest_has_the_documented_fields_and_chunks_are_layer_aligned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = sliced(tmp.path());
    let m = info(&dir);
    for key in [
        "format",
        "version",
        "model_sha256",
        "coordinate_scale",
        "slicing",
        "layer_count",
        "layer_z",
        "bbox",
        "chunk_target_bytes",
        "chunks",
        "stream_sha256",
        "layers",
    ] {
        assert!(m.get(key).is_some(), "no {key} in {m}");
    }
    let bytes = std::fs::read(repo_datasets().join("ur3_collision_upperarm.stl")).expect("model");
    assert_eq!(m["model_sha256"].as_str(), Some(strata_core::stream::sha256_hex(&bytes).as_str()));
    let chunks = m["chunks"].as_array().expect("chunks");
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let mut next = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["index"].as_u64(), Some(i as u64));
        assert_eq!(c["first_layer"].as_u64(), Some(next));
        next = c["last_layer"].as_u64().expect("last") + 1;
        let file = dir.join(c["file"].as_str().expect("file"));
        let data = std::fs::read(&file).expect("chunk file");
        assert_eq!(data.len() as u64, c["bytes"].as_u64().expect("bytes"));
        assert_eq!(c["sha256"].as_str(), Some(strata_core::stream::sha256_hex(&data).as_str()));
        // An independent zstd frame: the zstd library alone decodes it.
        let raw = zstd::decode_all(&data[..]).expect("zstd frame");
        assert_eq!(raw.len() as u64, c["raw_bytes"].as_u64().expect("raw"));
        assert_eq!(&raw[..5], b"STRL\x01");
    }
    assert_eq!(Some(next), m["layer_count"].as_u64());
    let layers = m["layers"].as_array().expect("layers");
    for l in layers {
        for key in ["index", "z", "area", "polygons", "holes"] {
            assert!(l.get(key).is_some(), "no {key} in {l}");
        }
    }
}

#[test]
fn verify_names_the_damaged_chunk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = sliced(tmp.path());
    let chunk1 = dir.join("chunk-000001.zst");
    let original = std::fs::read(&chunk1).expect("chunk");

    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x20;
    std::fs::write(&chunk1, &flipped).expect("write");
    let e = verify_err(&dir);
    assert!(e.contains("chunk 1") && e.contains("SHA-256"), "{e}");

    std::fs::write(&chunk1, &original[..original.len() - 3]).expect("write");
    let e = verify_err(&dir);
    assert!(e.contains("chunk 1") && e.contains("truncated"), "{e}");

    std::fs::remove_file(&chunk1).expect("remove");
    let e = verify_err(&dir);
    assert!(e.contains("chunk 1") && e.contains("chunk-000001.zst"), "{e}");

    std::fs::write(&chunk1, &original).expect("write");
    let ok = run(&["stream", "verify", dir.to_str().expect("utf-8")]);
    assert!(ok.status.success());
}

#[test]
fn manifest_damage_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = sliced(tmp.path());
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).expect("manifest");
    let mut v: Value = serde_json::from_str(&text).expect("json");
    v["version"] = 9.into();
    std::fs::write(&path, v.to_string()).expect("write");
    assert!(verify_err(&dir).contains("version 9 is not supported"));
    v["version"] = 1.into();
    v["stream_sha256"] = "00".repeat(32).into();
    std::fs::write(&path, v.to_string()).expect("write");
    assert!(verify_err(&dir).contains("stream SHA-256"));
    // A chunk file name that would leave the directory is refused.
    let mut v: Value = serde_json::from_str(&text).expect("json");
    v["chunks"][0]["file"] = "../../etc/passwd".into();
    std::fs::write(&path, v.to_string()).expect("write");
    assert!(verify_err(&dir).contains("inconsistent"));
    std::fs::write(&path, "{").expect("write");
    assert!(verify_err(&dir).contains("manifest"));
}

#[test]
fn cat_prints_a_layer_and_refuses_one_past_the_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = sliced(tmp.path());
    let d = dir.to_str().expect("utf-8");
    let m = info(&dir);
    let count = m["layer_count"].as_u64().expect("count");
    let mid = (count / 2).to_string();
    let out = run(&["stream", "cat", d, "--layer", &mid, "--json"]);
    assert!(out.status.success());
    let layer: Value = serde_json::from_slice(&out.stdout).expect("json");
    let want = &m["layers"][count as usize / 2];
    assert_eq!(layer["z"], want["z"]);
    assert_eq!(layer["polygons"].as_array().map(Vec::len), want["polygons"].as_u64().map(|n| n as usize));
    // The shoelace over the printed integer points gives the layer's area.
    let twice: f64 = layer["polygons"]
        .as_array()
        .expect("polygons")
        .iter()
        .map(|p| {
            let pts = p["points_nm"].as_array().expect("points");
            let xy = |q: &Value| (q[0].as_f64().expect("x"), q[1].as_f64().expect("y"));
            (0..pts.len())
                .map(|i| {
                    let ((ax, ay), (bx, by)) = (xy(&pts[i]), xy(&pts[(i + 1) % pts.len()]));
                    ax * by - bx * ay
                })
                .sum::<f64>()
        })
        .sum();
    let area = want["area"].as_f64().expect("area");
    assert!((twice / 2e12 - area).abs() < 1e-6 * area.max(1.0), "{} vs {area}", twice / 2e12);
    let text = run(&["stream", "cat", d, "--layer", &mid]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with(&format!("layer {mid} at z ")));
    let past = run(&["stream", "cat", d, "--layer", &count.to_string()]);
    assert!(!past.status.success());
    assert!(String::from_utf8_lossy(&past.stderr).contains(&format!("no layer {count}")));
}

#[test]
fn a_failed_slice_leaves_the_existing_stream_and_other_directories_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = sliced(tmp.path());
    let before = std::fs::read(dir.join("manifest.json")).expect("manifest");
    let bad = tmp.path().join("bad.stl");
    std::fs::write(&bad, b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 1 2\n").expect("write");
    let out = slice_to(&bad, &dir, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.stl"));
    assert_eq!(std::fs::read(dir.join("manifest.json")).expect("manifest"), before);
    let out = slice_to(&repo_datasets().join("ur3_collision_upperarm.stl"), &dir, &["--layer-height", "0"]);
    assert!(!out.status.success());
    // Re-slicing replaces the stream whole: no chunk of the old one stays.
    let out = slice_to(&repo_datasets().join("numpystl_cube_binary_solidheader.stl"), &dir, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = std::fs::read_dir(&dir).expect("dir").count();
    assert_eq!(files, 2, "manifest and one chunk");
    // A directory that is not a stream is never replaced.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).expect("mkdir");
    std::fs::write(mine.join("notes.txt"), b"keep").expect("write");
    let out = slice_to(&repo_datasets().join("numpystl_cube_binary_solidheader.stl"), &mine, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to replace"));
    assert_eq!(std::fs::read(mine.join("notes.txt")).expect("kept"), b"keep");
    // No temporary directories are left behind.
    let stray: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("strata-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn open_meshes_slice_with_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = repo_datasets().join("assimp_sphere_with_hole.stl");
    let out = slice_to(&model, &tmp.path().join("open"), &[]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("do not close") && err.contains("--repair"), "{err}");
    let out = slice_to(&model, &tmp.path().join("fixed"), &["--repair", "--json"]);
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["repaired"], true);
    assert_eq!(summary["layers_with_open_chains"], 0);
}
