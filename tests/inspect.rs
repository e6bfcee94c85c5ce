//! `strata inspect`: the JSON contract, the human summary, and clear errors
//! with a non-zero exit for input that cannot be read.

use std::path::{Path, PathBuf};

use strata_core::synth;

use crate::util::{self, json_lines, run};

fn sample(name: &str) -> String {
    util::repo_datasets().join(name).to_string_lossy().into_owned()
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("temp file written");
    path
}

#[test]
fn json_has_every_documented_key() {
    let out = run(&["inspect", "--json", &sample("numpystl_cube_ascii_crlf.stl")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    for key in [
        "file",
        "format",
        "triangles",
        "vertices",
        "bbox_min",
        "bbox_max",
        "area",
        "volume",
        "watertight",
        "winding_consistent",
        "euler_number",
        "bodies",
        "boundary_edges",
        "nonmanifold_edges",
        "misoriented_edges",
        "degenerate_faces",
        "duplicate_faces",
        "warnings",
        "is_volume",
        "normal_mismatches",
    ] {
        assert!(v.get(key).is_some(), "missing key {key} in {v}");
    }
    assert_eq!(v["format"], "ascii");
    assert_eq!(v["triangles"], 12);
    assert!((v["volume"].as_f64().expect("a number") - 8.0).abs() < 1e-12, "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert!(v.get("self_intersections").is_none(), "only reported when asked for");
}

#[test]
fn human_summary_names_defects_and_warnings() {
    let out = run(&["inspect", &sample("numpystl_halfdonut_binary_trailing_byte.stl")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("binary STL, 288 triangles, 144 vertices"), "{text}");
    assert!(
        text.contains("watertight, consistent winding, a valid volume; 1 body, Euler number 0"),
        "{text}"
    );
    assert!(text.contains("warning    1 bytes after the last facet record were ignored"), "{text}");

    let out = run(&["inspect", &sample("assimp_spider_binary.stl")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("72 boundary edges, 10 misoriented edges, 56 degenerate faces"), "{text}");
}

#[test]
fn unreadable_inputs_fail_with_code_and_reason_but_others_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cube = synth::to_binary_stl("cube", &synth::cube_facets());
    let truncated = write_temp(dir.path(), "truncated.stl", &cube[..84 + 50 * 4 + 10]);
    let bad_number = write_temp(
        dir.path(),
        "bad.stl",
        synth::to_ascii_stl("x", &synth::cube_facets()).replacen("vertex 2e0", "vertex two", 1).as_bytes(),
    );
    let missing = dir.path().join("missing.stl");
    let zip = write_temp(dir.path(), "model.3mf", b"PK\x03\x04\x14\x00\x00\x00 a zip, not STL");
    let args: Vec<String> = ["inspect".into(), "--json".into()]
        .into_iter()
        .chain(
            [&truncated, &bad_number, &missing, zip.as_path()]
                .iter()
                .map(|p| p.to_string_lossy().into_owned()),
        )
        .chain([sample("numpystl_cube_ascii_crlf.stl")])
        .collect();
    let out = util::strata().args(&args).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 5, "one line per input, failures included");
    assert_eq!(lines[0]["error"]["code"], "truncated");
    assert_eq!(
        lines[0]["error"]["message"],
        "binary STL truncated: header declares 12 facets (684 bytes) but the file ends at byte 294, inside facet record 4"
    );
    assert_eq!(lines[1]["error"]["code"], "ascii_syntax");
    let msg = lines[1]["error"]["message"].as_str().expect("a message");
    assert!(msg.starts_with("line ") && msg.ends_with("expected a number, found 'two'"), "{msg}");
    assert_eq!(lines[2]["error"]["code"], "io");
    assert_eq!(lines[3]["error"]["code"], "bad_container");
    assert!(lines[3]["error"]["message"].as_str().is_some_and(|m| m.starts_with("3MF: not a readable zip")));
    assert_eq!(lines[4]["triangles"], 12, "a good file after bad ones is still reported");

    // Without --json the reason goes to stderr with the file name.
    let out = run(&["inspect", &truncated.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("truncated.stl: binary STL truncated"), "{err}");
}

#[test]
fn obj_is_read_by_content_and_its_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An OBJ quad-faced cube under an .stl name: content decides.
    let cube = "v 0 0 0\nv 2 0 0\nv 2 2 0\nv 0 2 0\nv 0 0 2\nv 2 0 2\nv 2 2 2\nv 0 2 2\n\
                f 1 4 3 2\nf 5 6 7 8\nf 1 2 6 5\nf 2 3 7 6\nf 3 4 8 7\nf 4 1 5 8\n";
    let good = write_temp(dir.path(), "cube.stl", cube.as_bytes());
    let bad = write_temp(dir.path(), "bad.obj", cube.replace("f 3 4 8 7", "f 3 4 8 9").as_bytes());
    let out = run(&["inspect", "--json", &good.to_string_lossy(), &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["format"], "obj");
    assert_eq!((lines[0]["triangles"].as_u64(), lines[0]["vertices"].as_u64()), (Some(12), Some(8)));
    assert_eq!((lines[0]["is_volume"].as_bool(), lines[0]["volume"].as_f64()), (Some(true), Some(8.0)));
    assert_eq!(lines[1]["error"]["code"], "obj_syntax");
    assert_eq!(
        lines[1]["error"]["message"],
        "OBJ line 13: vertex index 9 out of range (only 8 vertices so far) in face corner '9'"
    );
}

#[test]
fn directories_and_bad_flags_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run(&["inspect", "--json", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out)[0]["error"]["code"], "io");

    let out = run(&["inspect", "--weld-tolerance", "-1", &sample("trimesh_soup.stl")]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a finite number >= 0"));
    let out = run(&["inspect"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn weld_tolerance_closes_the_near_coincident_cad_export() {
    // Reference: trimesh (8-decimal merge) finds 352 vertices and a
    // watertight mesh; an exact weld has 398 vertices and 166 open edges.
    let row = util::manifest(&util::repo_datasets())
        .into_iter()
        .find(|r| r.file() == "trimesh_angle_block_near_coincident.STL")
        .expect("sample present");
    let path = sample(row.file());
    let exact = &json_lines(&run(&["inspect", "--json", &path]))[0];
    assert_eq!(exact["boundary_edges"], row.u64("boundary_edges"));
    let welded = &json_lines(&run(&["inspect", "--json", "--weld-tolerance", "1e-6", &path]))[0];
    assert_eq!(welded["vertices"], row.u64("tm_vertices"));
    assert_eq!(welded["watertight"], row.bool("tm_is_watertight"));
    assert_eq!(welded["is_volume"], row.bool("tm_is_volume"));
    assert_eq!(welded["euler_number"], row.u64("tm_euler_number"));
    assert_eq!(welded["weld_tolerance"], 1e-6);
}

#[test]
fn self_intersections_on_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut facets = synth::cube_facets();
    // A second cube shifted by (1, 1, 1) overlaps the first.
    facets.extend(synth::cube_facets().into_iter().map(|mut f| {
        f.vertices = f.vertices.map(|v| v.map(|c| c + 1.0));
        f
    }));
    let overlapping = write_temp(dir.path(), "overlap.stl", &synth::to_binary_stl("two cubes", &facets));
    let lines = json_lines(&run(&[
        "inspect",
        "--json",
        "--self-intersections",
        &overlapping.to_string_lossy(),
        &sample("trimesh_two_solids_mixed_case.stl"),
    ]));
    assert!(lines[0]["self_intersections"].as_u64().expect("a count") > 0, "{}", lines[0]);
    assert_eq!(lines[1]["self_intersections"], 0, "two disjoint cubes");
}
