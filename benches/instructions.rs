//! Instruction counts of the hot path under Valgrind's callgrind
//! (gungraun): parse (binary and ASCII STL), weld, validate, repair and slice of small generated
//! meshes, compared with the committed baseline in
//! `benches/instructions.baseline.json`.
//!
//! Wall-clock benches on a noisy 2-core machine cannot gate anything;
//! instruction counts can: they do not depend on load, so CI fails any
//! bench that needs more than 3% more instructions than its baseline
//! (gungraun's hard limit on `Ir`, which names the bench). A deliberate
//! change updates the baseline in the same commit: `benches/instructions.sh
//! --bless`. Needs valgrind and `gungraun-runner` 0.20 (`cargo install
//! gungraun-runner --version 0.20.0`); `.ci/run` installs both.

use std::hint::black_box;

use gungraun::{
    Callgrind, EventKind, LibraryBenchmarkConfig, library_benchmark, library_benchmark_group, main,
};
use strata_core::mesh::{IndexedMesh, SoupStats};
use strata_core::slice::SliceOptions;
use strata_core::{RepairOptions, ValidateOptions, WeldOptions, mesh, stl, synth, validate};

/// Allowed growth over the baseline, in percent.
const TOLERANCE: f64 = 3.0;

/// The committed baseline: bench name -> instructions.
fn baseline(name: &str) -> Option<u64> {
    let text = include_str!("instructions.baseline.json");
    let map: serde_json::Value = serde_json::from_str(text).ok()?;
    map.get(name)?.as_u64()
}

/// A bench's configuration: a hard limit of the baseline plus
/// [`TOLERANCE`] on instructions, when there is a baseline.
fn limited(name: &str) -> LibraryBenchmarkConfig {
    let mut config = LibraryBenchmarkConfig::default();
    if let Some(base) = baseline(name) {
        let limit = (base as f64 * (1.0 + TOLERANCE / 100.0)).ceil() as u64;
        config.tool(Callgrind::default().hard_limits([(EventKind::Ir, limit)]));
    }
    config
}

/// Makes this thread rayon's only one, so the core's parallel loops run on
/// it: callgrind counts the benchmark function's thread, and work sent to
/// other threads would go uncounted (and vary with their scheduling).
fn sequential() {
    // Each bench runs in its own process; a second call finds it built.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread().build_global();
}

/// A closed torus of 2 * 60 * 60 = 7,200 triangles, as binary STL.
fn torus_stl() -> Vec<u8> {
    sequential();
    synth::to_binary_stl("bench torus", &synth::torus(60, 60))
}

fn welded() -> (IndexedMesh, SoupStats) {
    let bytes = torus_stl();
    let parsed = stl::parse(&bytes).expect("parses");
    mesh::weld_stl(&parsed, &WeldOptions::default()).expect("welds")
}

/// The torus damaged on purpose (holes, flipped faces, duplicates,
/// collapsed faces; 7 of each).
fn damaged() -> IndexedMesh {
    sequential();
    let torus = synth::torus(60, 60);
    let (facets, _) = synth::damage(&torus, 7);
    let bytes = synth::to_binary_stl("bench damaged torus", &facets);
    strata_core::inspect(&bytes, &WeldOptions::default(), &ValidateOptions::default()).expect("loads").mesh
}

fn mesh_only() -> IndexedMesh {
    welded().0
}

/// The same torus as ASCII STL.
fn torus_ascii() -> String {
    sequential();
    synth::to_ascii_stl("bench torus", &synth::torus(60, 60))
}

// Binary STL: the zero-copy view, every vertex read once.
#[library_benchmark]
#[bench::torus(setup = torus_stl, config = limited("parse_binary"))]
fn parse_binary(bytes: Vec<u8>) -> f32 {
    let parsed = stl::parse(black_box(&bytes)).expect("parses");
    let stl::Facets::Binary(records) = parsed.facets() else { unreachable!("binary input") };
    let mut sum = 0f32;
    for r in records {
        sum += r.vertices().iter().flatten().sum::<f32>();
    }
    black_box(sum)
}

// ASCII STL through the nom parser.
#[library_benchmark]
#[bench::torus(setup = torus_ascii, config = limited("parse_ascii"))]
fn parse_ascii(text: String) -> usize {
    let parsed = stl::parse(black_box(text.as_bytes())).expect("parses");
    black_box(parsed.facet_count())
}

#[library_benchmark]
#[bench::torus(setup = torus_stl, config = limited("weld"))]
fn weld(bytes: Vec<u8>) -> usize {
    let parsed = stl::parse(&bytes).expect("parses");
    let (mesh, _) = mesh::weld_stl(black_box(&parsed), &WeldOptions::default()).expect("welds");
    black_box(mesh.faces.len())
}

#[library_benchmark]
#[bench::torus(setup = welded, config = limited("validate"))]
fn validate_mesh(input: (IndexedMesh, SoupStats)) -> bool {
    let report = validate::validate(black_box(&input.0), &input.1, &ValidateOptions::default());
    black_box(report.is_volume)
}

#[library_benchmark]
#[bench::damaged_torus(setup = damaged, config = limited("repair"))]
fn repair(input: IndexedMesh) -> usize {
    let fixed = strata_core::repair(black_box(input), &RepairOptions::default());
    black_box(fixed.mesh.faces.len())
}

#[library_benchmark]
#[bench::torus(setup = mesh_only, config = limited("slice"))]
fn slice(input: IndexedMesh) -> usize {
    let options = SliceOptions { layer_height: 0.1, first_layer: 0.1 };
    let layers = strata_core::slice::slice(black_box(&input), &options).expect("slices");
    black_box(layers.len())
}

library_benchmark_group!(
    name = hot_path;
    benchmarks = parse_binary, parse_ascii, weld, validate_mesh, repair, slice
);

main!(library_benchmark_groups = hot_path);
