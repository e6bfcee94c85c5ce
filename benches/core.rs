//! Criterion benches for the mesh core: binary parse (the zero-copy view),
//! ASCII parse, weld, validation and the whole `inspect` path, on generated
//! 1M- and 5M-triangle meshes (nothing large is committed), and repair of a
//! 1M-triangle torus damaged on purpose.
//!
//! Before the timed runs it prints, once per size, the peak heap each stage
//! allocates (a counting global allocator), next to the indexed mesh's own
//! size: the memory budget is 1.5x the mesh, the mapped file not counted.
//!
//! `STRATA_BENCH_SMOKE=1` shrinks every input to 20k triangles so CI can run
//! the benches once (`cargo bench --bench core -- --test`) in seconds.
//! `STRATA_BENCH_FILE=model.stl` benches that file instead of the tori
//! (e.g. a large model made by `../shared/datasets/tools/make_large.py`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_core::stl::{self, Facets};
use strata_core::{ValidateOptions, WeldOptions, mesh, synth, validate};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the
// counters are bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap growth while `f` runs, and its result.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

fn smoke() -> bool {
    std::env::var_os("STRATA_BENCH_SMOKE").is_some()
}

/// (label, torus rings, torus segments): 2 * rings * segments triangles.
fn sizes() -> Vec<(&'static str, usize, usize)> {
    if smoke() { vec![("20k", 100, 100)] } else { vec![("1M", 1000, 500), ("5M", 2500, 1000)] }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The floor: one pass that reads every float of the file.
fn float_sum(bytes: &[u8]) -> f32 {
    let mut acc = [0f32; 12];
    for rec in bytes[84..].chunks_exact(50) {
        for (a, c) in acc.iter_mut().zip(rec[..48].chunks_exact(4)) {
            *a += f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    acc.iter().sum()
}

/// The same sums through `stl::parse` and the zero-copy facet view.
fn view_sum(bytes: &[u8]) -> f32 {
    let stl = stl::parse(bytes).expect("parses");
    let Facets::Binary(records) = stl.facets() else { unreachable!("binary input") };
    let mut acc = [0f32; 12];
    for r in records {
        let [v0, v1, v2] = r.vertices();
        for (a, x) in acc.iter_mut().zip([r.normal(), v0, v1, v2].iter().flatten()) {
            *a += x;
        }
    }
    acc.iter().sum()
}

fn report_memory(label: &str, bytes: &[u8]) {
    let (stl, parse_peak) = peak_during(|| stl::parse(bytes).expect("parses"));
    let ((mesh, soup), weld_peak) =
        peak_during(|| mesh::weld_stl(&stl, &WeldOptions::default()).expect("welds"));
    let (_, validate_peak) = peak_during(|| validate::validate(&mesh, &soup, &ValidateOptions::default()));
    let (_, inspect_peak) = peak_during(|| {
        strata_core::inspect(bytes, &WeldOptions::default(), &ValidateOptions::default()).expect("inspects")
    });
    let own = mesh.heap_bytes();
    eprintln!(
        "memory {label}: mesh {:.1} MiB; peak heap: parse {:.1} MiB, parse+weld {:.1} MiB ({:.2}x mesh), \
         validate {:.1} MiB extra, whole inspect {:.1} MiB ({:.2}x mesh); file {:.1} MiB not copied",
        mib(own),
        mib(parse_peak),
        mib(parse_peak + weld_peak),
        (parse_peak + weld_peak) as f64 / own as f64,
        mib(validate_peak),
        mib(inspect_peak),
        inspect_peak as f64 / own as f64,
        mib(bytes.len()),
    );
}

fn benches(c: &mut Criterion) {
    if let Some(path) = std::env::var_os("STRATA_BENCH_FILE") {
        let bytes = std::fs::read(&path).expect("STRATA_BENCH_FILE is readable");
        report_memory("file", &bytes);
        return bench_binary(c, "file", &bytes);
    }
    for (label, rings, segments) in sizes() {
        let facets = synth::torus(rings, segments);
        let bytes = synth::to_binary_stl("bench torus", &facets);
        report_memory(label, &bytes);
        bench_binary(c, label, &bytes);

        // ASCII: 1M facets is ~200 MB of text, the size the anchors were
        // measured on; 5M would be 1 GB, so ASCII stops at the first size.
        if label != "5M" {
            let text = synth::to_ascii_stl("bench", &facets);
            let mut g = c.benchmark_group(format!("ascii-{label}"));
            g.sample_size(10);
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_function("parse", |b| b.iter(|| stl::parse(black_box(text.as_bytes())).expect("parses")));
            g.finish();
        }
    }
}

fn bench_binary(c: &mut Criterion, label: &str, bytes: &[u8]) {
    let mut g = c.benchmark_group(format!("binary-{label}"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("floor: float sum", |b| b.iter(|| float_sum(black_box(bytes))));
    g.bench_function("parse + triangle view", |b| b.iter(|| view_sum(black_box(bytes))));
    let stl = stl::parse(bytes).expect("parses");
    g.bench_function("weld", |b| b.iter(|| mesh::weld_stl(black_box(&stl), &WeldOptions::default())));
    let (mesh, soup) = mesh::weld_stl(&stl, &WeldOptions::default()).expect("welds");
    g.bench_function("validate", |b| {
        b.iter(|| validate::validate(black_box(&mesh), &soup, &ValidateOptions::default()))
    });
    g.bench_function("inspect (parse + weld + validate)", |b| {
        b.iter(|| {
            strata_core::inspect(black_box(bytes), &WeldOptions::default(), &ValidateOptions::default())
        })
    });
    g.finish();
}

/// Repair of a closed torus damaged on purpose (`synth::damage`: holes,
/// flipped faces, duplicates, collapsed faces; about 1 in 1000 faces each):
/// the repair itself, and load + repair as `strata repair` runs it.
fn repair_benches(c: &mut Criterion) {
    if std::env::var_os("STRATA_BENCH_FILE").is_some() {
        return;
    }
    let (label, rings, segments) = sizes()[0];
    let torus = synth::torus(rings, segments);
    let (facets, _) = synth::damage(&torus, torus.len() / 1000);
    let bytes = synth::to_binary_stl("bench damaged torus", &facets);
    let loaded =
        strata_core::inspect(&bytes, &WeldOptions::default(), &ValidateOptions::default()).expect("loads");
    let (repaired, repair_peak) =
        peak_during(|| strata_core::repair(loaded.mesh.clone(), &strata_core::RepairOptions::default()));
    let after = validate::validate(&repaired.mesh, &Default::default(), &ValidateOptions::default());
    eprintln!(
        "repair {label}: {} -> {} faces, valid volume {}, peak heap {:.1} MiB ({:.2}x mesh)",
        facets.len(),
        after.faces,
        after.is_volume,
        mib(repair_peak),
        repair_peak as f64 / loaded.mesh.heap_bytes() as f64
    );
    let mut g = c.benchmark_group(format!("repair-{label}"));
    g.sample_size(10);
    g.bench_function("repair", |b| {
        b.iter(|| strata_core::repair(black_box(loaded.mesh.clone()), &strata_core::RepairOptions::default()))
    });
    g.bench_function("inspect + repair", |b| {
        b.iter(|| {
            let ins =
                strata_core::inspect(black_box(&bytes), &WeldOptions::default(), &ValidateOptions::default())
                    .expect("loads");
            strata_core::repair(ins.mesh, &strata_core::RepairOptions::default())
        })
    });
    g.finish();
}

criterion_group!(core, benches, repair_benches);
criterion_main!(core);
