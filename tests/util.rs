//! Shared helpers for the integration tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `strata` binary under test.
pub(crate) fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// Runs `strata` with `args` and returns its output.
pub(crate) fn run(args: &[&str]) -> Output {
    strata().args(args).output().expect("the strata binary runs")
}

/// The repository's own sample models.
pub(crate) fn repo_datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets")
}

/// The repository's small binary cube (with a `solid` header), the model
/// the server tests upload.
pub(crate) fn cube() -> Vec<u8> {
    std::fs::read(repo_datasets().join("numpystl_cube_binary_solidheader.stl")).expect("the cube")
}

/// One row of a `MANIFEST.tsv`, by column name.
#[derive(Debug, Clone)]
pub(crate) struct Row(pub(crate) HashMap<String, String>);

impl Row {
    pub(crate) fn get(&self, column: &str) -> &str {
        self.0.get(column).map(String::as_str).unwrap_or_else(|| panic!("MANIFEST has no column {column}"))
    }

    pub(crate) fn file(&self) -> &str {
        self.get("file")
    }

    pub(crate) fn u64(&self, column: &str) -> u64 {
        self.get(column)
            .parse()
            .unwrap_or_else(|e| panic!("{}: {column}={:?}: {e}", self.file(), self.get(column)))
    }

    pub(crate) fn f64(&self, column: &str) -> f64 {
        self.get(column)
            .parse()
            .unwrap_or_else(|e| panic!("{}: {column}={:?}: {e}", self.file(), self.get(column)))
    }

    pub(crate) fn bool(&self, column: &str) -> bool {
        match self.get(column) {
            "True" => true,
            "False" => false,
            other => panic!("{}: {column}={other:?} is not a boolean", self.file()),
        }
    }

    pub(crate) fn triple(&self, column: &str) -> [f64; 3] {
        let v: Vec<f64> = self.get(column).split_whitespace().map(|x| x.parse().expect("a number")).collect();
        v.try_into().unwrap_or_else(|v| panic!("{}: {column} is not 3 numbers: {v:?}", self.file()))
    }
}

/// Reads `dir/MANIFEST.tsv`.
pub(crate) fn manifest(dir: &Path) -> Vec<Row> {
    let path = dir.join("MANIFEST.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split('\t').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            assert_eq!(cells.len(), header.len(), "MANIFEST row has the wrong number of cells: {l}");
            Row(header.iter().zip(cells).map(|(h, c)| (h.to_string(), c.to_string())).collect())
        })
        .collect()
}

/// Reads `dir/oracle.jsonl`, keyed by file name.
pub(crate) fn oracle(dir: &Path) -> HashMap<String, serde_json::Value> {
    let path = dir.join("oracle.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("oracle line is JSON");
            let file = v["file"].as_str().expect("oracle line has a file").to_string();
            (file, v)
        })
        .collect()
}

/// Parses each stdout line as JSON.
pub(crate) fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// The reference section areas (`tests/fixtures/slice_areas.json`, made by
/// `tests/fixtures/slice_reference.py`).
pub(crate) fn slice_fixtures() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slice_areas.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture readable")).expect("fixture is JSON")
}

/// Layers where the reference itself is unsure: in these, one body of the
/// MK4 gantry (an STL of 117 bodies) crosses itself, and the reference's
/// per-body even-odd region differs from the union by winding that the
/// slicer (like PrusaSlicer) prints. At 2 of its 607 planes trimesh's
/// `section` and `section_multiplane` disagree with each other there too.
const SELF_CROSSING_LAYERS: &[(&str, usize)] =
    &[("prusa_mk4_gantry.stl", 352), ("prusa_mk4_gantry.stl", 470)];

/// How far a layer's area may be from the reference's `union_area`: 0.01%
/// (at least `tiny`), or 1% on the layers above.
pub(crate) fn area_tolerance(file: &str, layer: usize, reference: f64, tiny: f64) -> f64 {
    let relative = if SELF_CROSSING_LAYERS.contains(&(file, layer)) { 1e-2 } else { 1e-4 };
    (relative * reference.abs()).max(tiny)
}

/// Standard base64 to bytes (the base64 crate, not the server's code);
/// panics on anything else. The tests decode screenshots and webhook keys.
pub(crate) fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_else(|e| panic!("not base64 ({e}): {s}"))
}
