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

/// The bare floor the slicing goal is measured against: every face's
/// edge-plane crossings for every plane it spans, no chaining.
fn segment_floor(mesh: &strata_core::IndexedMesh, z: &[f64]) -> f64 {
    let mut acc = 0.0;
    for f in &mesh.faces {
        let p = f.map(|v| mesh.vertices[v as usize].as_dvec3());
        let lo = p[0].z.min(p[1].z).min(p[2].z);
        let hi = p[0].z.max(p[1].z).max(p[2].z);
        let first = z.partition_point(|&q| q <= lo);
        for &plane in &z[first..z.partition_point(|&q| q <= hi)] {
            for k in 0..3 {
                let (a, b) = (p[k], p[(k + 1) % 3]);
                if (a.z >= plane) != (b.z >= plane) {
                    let t = (plane - a.z) / (b.z - a.z);
                    acc += a.x + (b.x - a.x) * t + a.y + (b.y - a.y) * t;
                }
            }
        }
    }
    acc
}

/// Slicing, stream encode/decode and rendering on the 1M-triangle torus
/// (6 tall: 0.04 per layer gives the 150 layers the reference
/// figures were measured at), next to loading the same mesh.
fn slice_benches(c: &mut Criterion) {
    use strata_core::render::{RenderOptions, render};
    use strata_core::slice::{SliceOptions, plane_heights, slice};
    use strata_core::stream::{EncodeOptions, Limits, ModelInfo, decode, encode};
    if std::env::var_os("STRATA_BENCH_FILE").is_some() {
        return;
    }
    let (label, rings, segments) = sizes()[0];
    let bytes = synth::to_binary_stl("bench torus", &synth::torus(rings, segments));
    let mesh = strata_core::inspect(&bytes, &WeldOptions::default(), &ValidateOptions::default())
        .expect("loads")
        .mesh;
    let options = SliceOptions { layer_height: 0.04, first_layer: 0.04 };
    let z = plane_heights(-3.0, 3.0, &options).expect("planes");
    let layers = slice(&mesh, &options).expect("slices");
    let model = ModelInfo { sha256: String::new(), bbox: None };
    let stream = encode(&layers, &model, &options, &EncodeOptions::default()).expect("encodes");
    let raw: u64 = stream.manifest.chunks.iter().map(|c| c.raw_bytes).sum();
    let packed: u64 = stream.manifest.chunks.iter().map(|c| c.bytes).sum();
    let points: usize = layers.iter().flat_map(|l| &l.polygons).map(|p| p.points.len()).sum();
    eprintln!(
        "stream {label}: {} layers, {points} points, {} chunks, raw {raw} bytes ({:.2} bytes/point), \
         compressed {packed} bytes (ratio {:.3})",
        layers.len(),
        stream.manifest.chunks.len(),
        raw as f64 / points as f64,
        packed as f64 / raw as f64
    );
    let mut g = c.benchmark_group(format!("slice-{label}"));
    g.sample_size(10);
    g.bench_function("load: parse + weld + validate", |b| {
        b.iter(|| {
            strata_core::inspect(black_box(&bytes), &WeldOptions::default(), &ValidateOptions::default())
        })
    });
    g.bench_function("parse + weld", |b| {
        b.iter(|| {
            let stl = stl::parse(black_box(&bytes)).expect("parses");
            mesh::weld_stl(&stl, &WeldOptions::default()).expect("welds")
        })
    });
    g.bench_function("floor: edge-plane segments (1 thread)", |b| {
        b.iter(|| segment_floor(black_box(&mesh), &z))
    });
    g.bench_function("slice 150 layers", |b| b.iter(|| slice(black_box(&mesh), &options)));
    g.throughput(Throughput::Bytes(raw));
    g.bench_function("encode stream", |b| {
        b.iter(|| encode(black_box(&layers), &model, &options, &EncodeOptions::default()))
    });
    g.bench_function("decode + verify stream", |b| b.iter(|| decode(black_box(&stream), &Limits::default())));
    g.throughput(Throughput::Elements(mesh.faces.len() as u64));
    for (name, antialias, cull_back_faces) in [
        ("render 512 iso", false, false),
        ("render 512 iso, back faces culled (valid volume)", false, true),
        ("render 512 iso, antialiased, culled", true, true),
    ] {
        let opts = RenderOptions { antialias, cull_back_faces, ..RenderOptions::default() };
        g.bench_function(name, |b| b.iter(|| render(black_box(&mesh), &opts)));
    }
    g.finish();
}

criterion_group!(core, benches, repair_benches, slice_benches);
criterion_main!(core);
