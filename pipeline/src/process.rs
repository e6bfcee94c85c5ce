//! One model's CPU work, with no I/O: bytes in, artefacts out.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use strata_core::render::RenderOptions;
use strata_core::repair::{RepairLog, RepairOptions, repair_validated, to_binary_stl};
use strata_core::slice::{SliceLimits, SliceOptions};
use strata_core::stream::{BoundingBox, EncodeOptions, EncodedStream, ModelInfo};
use strata_core::{ValidateOptions, ValidationReport, WeldOptions};

use crate::PipelineError;

/// How to process each model.
#[derive(Debug, Clone, Copy)]
pub struct ProcessOptions {
    /// Slicing parameters.
    pub slice: SliceOptions,
    /// Snapshot parameters (`cull_back_faces` is set per model).
    pub render: RenderOptions,
    /// Stream packing.
    pub encode: EncodeOptions,
    /// What one model may cost.
    pub limits: ModelLimits,
}

impl Default for ProcessOptions {
    fn default() -> ProcessOptions {
        ProcessOptions {
            slice: SliceOptions::default(),
            render: RenderOptions { width: 256, height: 256, antialias: true, ..RenderOptions::default() },
            encode: EncodeOptions::default(),
            limits: ModelLimits::default(),
        }
    }
}

/// What processing one model may cost; past any of them the model fails
/// with its own code (`too_many_layers`, `stored_bytes_limit`,
/// `time_limit`, `memory_limit`, `bad_container` for an XML bomb) before
/// or instead of spending more. Each is a setting of `strata serve` and
/// `strata ingest`; the defaults are safe on the open internet and far
/// above any real print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Layers per model (100,000: 20 m at 0.2 mm).
    pub max_layers: usize,
    /// Bytes a model's derived artefacts (stream chunks and manifest,
    /// snapshot, repaired copy) may add to the store (2 GiB).
    pub max_stored_bytes: u64,
    /// Processing time per job (10 minutes), checked between stages and
    /// before every layer.
    pub max_job_time: std::time::Duration,
    /// Memory a 3MF's mesh may take while it is read (2 GiB).
    pub max_mesh_bytes: u64,
    /// Bytes a 3MF's model XML may inflate to (1 GiB).
    pub max_3mf_xml_bytes: u64,
}

impl Default for ModelLimits {
    fn default() -> ModelLimits {
        ModelLimits {
            max_layers: 100_000,
            max_stored_bytes: 2 << 30,
            max_job_time: std::time::Duration::from_secs(600),
            max_mesh_bytes: 2 << 30,
            max_3mf_xml_bytes: strata_core::threemf::MAX_MODEL_BYTES,
        }
    }
}

impl ModelLimits {
    fn threemf(&self) -> strata_core::threemf::Limits {
        strata_core::threemf::Limits {
            max_xml_bytes: self.max_3mf_xml_bytes,
            max_mesh_bytes: self.max_mesh_bytes,
        }
    }

    /// The slicer's bounds for a job that started at `start`.
    pub fn slicing(&self, start: std::time::Instant) -> SliceLimits {
        SliceLimits { max_layers: self.max_layers, deadline: start.checked_add(self.max_job_time) }
    }
}

/// What processing made of one model.
#[derive(Debug)]
pub struct Processed {
    /// `"binary"`, `"ascii"`, `"obj"` or `"3mf"`.
    pub format: &'static str,
    /// Validation of the model as uploaded.
    pub before: ValidationReport,
    /// When the model needed repair: what was done and the result's report.
    pub repair: Option<(RepairLog, ValidationReport)>,
    /// The repaired mesh as binary STL, when repaired.
    pub repaired_stl: Option<Vec<u8>>,
    /// The snapshot PNG.
    pub snapshot_png: Vec<u8>,
    /// The sliced stream.
    pub stream: EncodedStream,
}

/// Seconds spent in each stage, per model or summed over a run: what the
/// pipeline's wall time is compared with (it should add little on top).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    /// Reading the file.
    pub read: f64,
    /// SHA-256 of its bytes.
    pub hash: f64,
    /// Parsing, welding and validation.
    pub parse: f64,
    /// Repair (zero for valid models).
    pub repair: f64,
    /// The snapshot.
    pub render: f64,
    /// Slicing.
    pub slice: f64,
    /// Packing the stream.
    pub encode: f64,
    /// Writing the blobs to staging files (workers).
    pub store: f64,
    /// Publishing blobs and writing rows, in groups (the writer thread,
    /// beside the workers: not on their path).
    pub commit: f64,
}

impl StageTimes {
    /// Adds `other` stage by stage.
    pub fn add(&mut self, other: &StageTimes) {
        self.read += other.read;
        self.hash += other.hash;
        self.parse += other.parse;
        self.repair += other.repair;
        self.render += other.render;
        self.slice += other.slice;
        self.encode += other.encode;
        self.store += other.store;
        self.commit += other.commit;
    }

    /// All stages together.
    pub fn total(&self) -> f64 {
        self.read
            + self.hash
            + self.parse
            + self.repair
            + self.render
            + self.slice
            + self.encode
            + self.store
            + self.commit
    }
}

/// The per-model summary kept in the store and the report.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Format read.
    pub format: &'static str,
    /// Triangles in the file.
    pub triangles: u64,
    /// Validation before repair.
    pub valid_volume_before: bool,
    /// Volume of the printable mesh.
    pub volume: f64,
    /// Layers in the stream.
    pub layers: u32,
    /// Chunks in the stream.
    pub chunks: usize,
}

impl Processed {
    /// Whether the model was repaired.
    pub fn repaired(&self) -> bool {
        self.repair.is_some()
    }

    /// The summary of this result.
    pub fn summary(&self) -> Summary {
        let after = self.repair.as_ref().map_or(&self.before, |(_, r)| r);
        Summary {
            format: self.format,
            triangles: self.before.triangles,
            valid_volume_before: self.before.is_volume,
            volume: after.volume,
            layers: self.stream.manifest.layer_count,
            chunks: self.stream.chunks.len(),
        }
    }
}

/// Processes one model; a panic anywhere inside is caught and returned as
/// [`PipelineError::Panic`], so one bad model cannot take a catalog down.
pub fn process(bytes: &[u8], sha256: &str, options: &ProcessOptions) -> Result<Processed, PipelineError> {
    process_timed(bytes, sha256, options, &mut StageTimes::default())
}

/// [`process`], adding the time of each stage to `timings` (failed models
/// count too: their time was spent).
pub fn process_timed(
    bytes: &[u8],
    sha256: &str,
    options: &ProcessOptions,
    timings: &mut StageTimes,
) -> Result<Processed, PipelineError> {
    catch_panics(|| process_inner(bytes, sha256, options, timings))
}

/// Runs `f`, turning a panic into [`PipelineError::Panic`] with its message.
pub(crate) fn catch_panics<T>(f: impl FnOnce() -> Result<T, PipelineError>) -> Result<T, PipelineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(PipelineError::Panic(message))
        }
    }
}

fn process_inner(
    bytes: &[u8],
    sha256: &str,
    options: &ProcessOptions,
    timings: &mut StageTimes,
) -> Result<Processed, PipelineError> {
    let mut clock = std::time::Instant::now();
    let mut lap = || {
        let now = std::time::Instant::now();
        let secs = now.duration_since(clock).as_secs_f64();
        clock = now;
        secs
    };
    let start = std::time::Instant::now();
    let limits = &options.limits;
    let in_time = || {
        if start.elapsed() > limits.max_job_time {
            return Err(PipelineError::TimeLimit(limits.max_job_time.as_secs()));
        }
        Ok(())
    };
    let ins = strata_core::inspect_within(
        bytes,
        &WeldOptions::default(),
        &ValidateOptions::default(),
        &limits.threemf(),
    );
    timings.parse += lap();
    let ins = ins?;
    in_time()?;
    if ins.mesh.faces.is_empty() {
        return Err(PipelineError::Empty);
    }
    let before = ins.report;
    let (mesh, repair, repaired_stl) = if before.is_volume {
        (ins.mesh, None, None)
    } else {
        let faces = ins.mesh.faces.len();
        let fixed = repair_validated(ins.mesh, &before, &RepairOptions::default());
        timings.repair += lap();
        in_time()?;
        if fixed.mesh.faces.is_empty() {
            return Err(PipelineError::AllDegenerate(faces));
        }
        if !fixed.report.is_volume {
            let r = &fixed.report;
            return Err(PipelineError::NotAVolume(format!(
                "{} boundary, {} non-manifold, {} misoriented edges left",
                r.boundary_edges, r.nonmanifold_edges, r.misoriented_edges
            )));
        }
        let stl = to_binary_stl(&fixed.mesh, &format!("Strata repair of {sha256}"));
        (fixed.mesh, Some((fixed.log, fixed.report)), Some(stl))
    };
    timings.repair += lap();
    let render = RenderOptions { cull_back_faces: true, ..options.render };
    let snapshot_png = strata_core::render::render(&mesh, &render)?.image.to_png()?;
    timings.render += lap();
    in_time()?;
    let (_, stream) = stream_within(
        &mesh,
        &before,
        sha256,
        &options.slice,
        &limits.slicing(start),
        &options.encode,
        timings,
    )?;
    in_time()?;
    let manifest = serde_json::to_vec(&stream.manifest).map_or(0, |m| m.len());
    let stored = stream.chunks.iter().map(Vec::len).sum::<usize>()
        + manifest
        + snapshot_png.len()
        + repaired_stl.as_ref().map_or(0, Vec::len);
    if stored as u64 > limits.max_stored_bytes {
        return Err(PipelineError::StoredBytesLimit { bytes: stored as u64, limit: limits.max_stored_bytes });
    }
    Ok(Processed { format: ins.format, before, repair, repaired_stl, snapshot_png, stream })
}

/// A mesh's print stream: its layers (`slice`) packed into checksummed,
/// compressed chunks (`encode`), named by the original's digest and the
/// bounding box of `report`; the layers are returned too. The path every
/// stream takes (a processed upload, `strata ingest`, `strata slice`);
/// the time of each step is added to `timings`.
pub fn stream_of(
    mesh: &strata_core::IndexedMesh,
    report: &ValidationReport,
    sha256: &str,
    slice: &SliceOptions,
    encode: &EncodeOptions,
    timings: &mut StageTimes,
) -> Result<(Vec<strata_core::slice::Layer>, EncodedStream), PipelineError> {
    stream_within(mesh, report, sha256, slice, &SliceLimits::default(), encode, timings)
}

/// [`stream_of`], sliced within `limits`.
pub fn stream_within(
    mesh: &strata_core::IndexedMesh,
    report: &ValidationReport,
    sha256: &str,
    slice: &SliceOptions,
    limits: &SliceLimits,
    encode: &EncodeOptions,
    timings: &mut StageTimes,
) -> Result<(Vec<strata_core::slice::Layer>, EncodedStream), PipelineError> {
    let clock = std::time::Instant::now();
    let layers = strata_core::slice::slice_within(mesh, slice, limits)?;
    timings.slice += clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    let bbox = report
        .bbox_min
        .zip(report.bbox_max)
        .map(|(lo, hi)| BoundingBox { min: lo.map(f64::from), max: hi.map(f64::from) });
    let model = ModelInfo { sha256: sha256.to_string(), bbox };
    let stream = strata_core::stream::encode(&layers, &model, slice, encode)?;
    timings.encode += clock.elapsed().as_secs_f64();
    Ok((layers, stream))
}

/// A snapshot of a stored mesh (`bytes`: the printable STL) from `view`,
/// `width` x `height` pixels, as PNG: what the server renders on demand for
/// views and sizes the ingest did not make.
pub fn snapshot(
    bytes: &[u8],
    view: strata_core::render::View,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, PipelineError> {
    catch_panics(|| {
        let ins = strata_core::inspect(bytes, &WeldOptions::default(), &ValidateOptions::default())?;
        let options = RenderOptions {
            view,
            width,
            height,
            antialias: true,
            cull_back_faces: ins.report.is_volume,
            ..RenderOptions::default()
        };
        Ok(strata_core::render::render(&ins.mesh, &options)?.image.to_png()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube() -> Vec<u8> {
        strata_core::synth::to_binary_stl("cube", &strata_core::synth::cube_facets())
    }

    #[test]
    fn a_valid_model_is_sliced_and_rendered_without_repair() {
        let p = process(&cube(), "x", &ProcessOptions::default()).expect("processes");
        assert!(!p.repaired());
        assert_eq!(p.stream.manifest.layer_count, 10);
        assert_eq!(&p.snapshot_png[1..4], b"PNG");
        assert_eq!(p.summary().chunks, 1);
    }

    #[test]
    fn a_cube_with_a_missing_face_is_repaired_first() {
        let mut facets = strata_core::synth::cube_facets();
        facets.pop();
        let bytes = strata_core::synth::to_binary_stl("open", &facets);
        let p = process(&bytes, "x", &ProcessOptions::default()).expect("processes");
        assert!(p.repaired());
        assert!(p.repaired_stl.is_some());
        assert!((p.summary().volume - 8.0).abs() < 1e-4);
    }

    #[test]
    fn a_panic_becomes_an_error_naming_it() {
        let e = catch_panics::<()>(|| panic!("index {} out of range", 7)).expect_err("caught");
        assert_eq!(e.code(), "panic");
        assert!(e.to_string().contains("index 7 out of range"), "{e}");
        let e = catch_panics::<()>(|| std::panic::panic_any(42u8)).expect_err("caught");
        assert!(e.to_string().contains("unknown panic"));
    }

    #[test]
    fn bad_models_are_errors_with_codes() {
        let o = ProcessOptions::default();
        assert_eq!(process(b"", "x", &o).map(|_| ()).map_err(|e| e.code()), Err("too_short"));
        let empty = strata_core::synth::to_binary_stl("none", &[]);
        assert_eq!(process(&empty, "x", &o).map(|_| ()).map_err(|e| e.code()), Err("empty"));
        let sheet: Vec<_> = strata_core::synth::cube_facets().into_iter().take(2).collect();
        let bytes = strata_core::synth::to_binary_stl("sheet", &sheet);
        assert_eq!(process(&bytes, "x", &o).map(|_| ()).map_err(|e| e.code()), Err("not_a_volume"));
        // Faces that all collapse: repair leaves nothing, which is said so.
        let collapsed: Vec<_> = (0..3u8)
            .map(|i| {
                let p = [f32::from(i), 0.0, 0.0];
                strata_core::stl::Facet { normal: [0.0; 3], vertices: [p, [p[0] + 1.0, 1.0, 0.0], p] }
            })
            .collect();
        let bytes = strata_core::synth::to_binary_stl("collapsed", &collapsed);
        let e = process(&bytes, "x", &o).map(|_| ()).expect_err("nothing to print");
        assert_eq!(e.code(), "all_degenerate");
        assert!(e.to_string().starts_with("all 3 triangles are degenerate"), "{e}");
    }

    #[test]
    fn each_limit_fails_the_model_with_its_code() {
        let limited = |limits: ModelLimits| ProcessOptions { limits, ..ProcessOptions::default() };
        let code =
            |bytes: &[u8], o: &ProcessOptions| process(bytes, "x", o).map(|_| ()).map_err(|e| e.code());
        let base = ModelLimits::default();
        // A 4-facet tetrahedron 200 m tall: a million layers at 0.2 mm,
        // refused before any is cut.
        let tall = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 200_000.0]];
        let facets: Vec<_> = [[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]]
            .iter()
            .map(|f: &[usize; 3]| strata_core::stl::Facet { normal: [0.0; 3], vertices: f.map(|i| tall[i]) })
            .collect();
        let tall = strata_core::synth::to_binary_stl("tall", &facets);
        let clock = std::time::Instant::now();
        let e = process(&tall, "x", &limited(base)).map(|_| ()).expect_err("too tall");
        assert_eq!(e.code(), "too_many_layers");
        assert!(e.to_string().contains("the limit is 100000"), "{e}");
        assert!(clock.elapsed() < std::time::Duration::from_secs(5), "refused before the work");
        // The same model within a raised limit is sliced.
        let few = limited(ModelLimits { max_layers: 2_000, ..base });
        let short = strata_core::synth::to_binary_stl("short", &strata_core::synth::cube_facets());
        assert_eq!(code(&short, &few), Ok(()));
        // Stored bytes: a cube's stream and snapshot take more than 100 bytes.
        let tiny = limited(ModelLimits { max_stored_bytes: 100, ..base });
        let e = process(&short, "x", &tiny).map(|_| ()).expect_err("over");
        assert_eq!(e.code(), "stored_bytes_limit");
        assert!(e.to_string().contains("over the 100-byte limit per model"), "{e}");
        // Time: a job with no time at all stops at the first check.
        let none = limited(ModelLimits { max_job_time: std::time::Duration::ZERO, ..base });
        assert_eq!(code(&short, &none), Err("time_limit"));
    }
}
