//! A catalog through the pipeline: reader -> rayon workers -> writer.
//!
//! ```text
//! reader thread ──bounded(jobs)──> workers (rayon, `jobs` threads) ──┐
//!      │  (skipped, duplicate, unreadable)                           ├─bounded(2 jobs)─> writer (this thread)
//!      └─────────────────────────────────────────────────────────────┘     blobs, then the model's row
//! ```
//!
//! The bounded channels are the memory bound: at most about `4 * jobs`
//! models' bytes and results exist at once, whatever the catalog's size,
//! and a slow disk or a huge model slows the reader instead of piling up.
//! A model is done when its row is written, after all its blobs: a run
//! killed at any point resumes by redoing only the models without a row.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;

use crate::PipelineError;
use crate::blob::{BlobStore, FsBlobStore};
use crate::db::{Db, ModelRecord, now_ms};
use crate::process::{ProcessOptions, Processed, Summary, process};

/// How to run an ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Models processed at once (and rayon threads).
    pub jobs: usize,
    /// Per-model processing.
    pub process: ProcessOptions,
    /// Owner recorded on new models.
    pub owner: Option<String>,
}

impl Default for IngestOptions {
    fn default() -> IngestOptions {
        IngestOptions {
            jobs: std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            process: ProcessOptions::default(),
            owner: None,
        }
    }
}

/// How one input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A valid volume, sliced as uploaded.
    Ok,
    /// Repaired, then sliced.
    Repaired,
    /// Could not be processed; the error says why.
    Failed,
    /// The same bytes as an earlier input of this run.
    Duplicate,
    /// Already in the store from an earlier run.
    Skipped,
}

/// An error in a report.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: &'static str,
    /// Human-readable reason.
    pub message: String,
}

/// Blob ids of a model's artefacts.
#[derive(Debug, Clone, Serialize)]
pub struct Artefacts {
    /// The original upload.
    pub original: String,
    /// Repaired binary STL, when repaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
    /// Snapshot PNG.
    pub snapshot: String,
    /// Stream manifest JSON.
    pub manifest: String,
    /// Chunk blobs, in order.
    pub chunks: Vec<String>,
}

/// One input in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The input path.
    pub file: String,
    /// SHA-256 of its bytes (absent when it could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// How it ended.
    pub status: Status,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Validation and stream summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Stored artefacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artefacts: Option<Artefacts>,
}

/// Counts per status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Inputs.
    pub total: usize,
    /// Valid as uploaded.
    pub ok: usize,
    /// Repaired.
    pub repaired: usize,
    /// Failed.
    pub failed: usize,
    /// Duplicates within the run.
    pub duplicate: usize,
    /// Already stored.
    pub skipped: usize,
    /// Bytes read.
    pub bytes: u64,
}

/// The run's report (`strata ingest --report`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Counts.
    pub summary: Counts,
    /// One entry per input, in input order.
    pub models: Vec<ModelReport>,
}

/// Told about progress as models finish (implemented by the CLI's bar).
pub trait Progress: Sync {
    /// A model finished (any status); `bytes` were read for it.
    fn model_done(&self, file: &Path, bytes: u64);
}

/// No progress reporting.
#[derive(Debug)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn model_done(&self, _: &Path, _: u64) {}
}

/// The model files under `paths`: directories are walked recursively for
/// `.stl`, `.obj` and `.3mf` (any case), in sorted order; a file named
/// directly is taken whatever its extension. A path that does not exist
/// is an error: the run cannot do what was asked.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PipelineError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| PipelineError::Io { path: p.clone(), source: e })?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PipelineError> {
    let io = |e| PipelineError::Io { path: dir.to_path_buf(), source: e };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
            if matches!(ext.as_deref(), Some("stl" | "obj" | "3mf")) {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// What travels from the reader or a worker to the writer.
enum Outcome {
    /// Processed and its blobs stored (by the worker, so blob writes and
    /// their fsyncs run in parallel); the row is still to write.
    Stored(Box<Result<(ModelRecord, ModelReport), PipelineError>>),
    Unreadable(PipelineError),
    Duplicate(String),
    Skipped(String),
}

/// Ingests `inputs` into the store under `data_dir` (see the module
/// documentation). Per-model failures are in the report; an `Err` means
/// the run itself could not proceed (the store cannot be opened or
/// written).
pub fn ingest(
    inputs: &[PathBuf],
    data_dir: &Path,
    options: &IngestOptions,
    progress: &dyn Progress,
) -> Result<Report, PipelineError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| PipelineError::Io { path: data_dir.to_path_buf(), source: e })?;
    let blobs = FsBlobStore::open(data_dir)?;
    let db = Db::open(&data_dir.join("meta.db"))?;
    let known = db.model_ids()?;
    let jobs = options.jobs.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("strata-worker-{i}"))
        .build()
        .map_err(|e| PipelineError::Panic(format!("cannot start worker threads: {e}")))?;
    let (work_tx, work_rx) = crossbeam_channel::bounded::<(usize, Vec<u8>, String)>(jobs);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<(usize, u64, Outcome)>(2 * jobs);
    let mut reports: Vec<Option<ModelReport>> = vec![None; inputs.len()];
    let mut counts = Counts { total: inputs.len(), ..Counts::default() };

    std::thread::scope(|scope| -> Result<(), PipelineError> {
        let reader_out = out_tx.clone();
        scope.spawn(move || {
            let mut seen: HashSet<String> = HashSet::new();
            for (i, path) in inputs.iter().enumerate() {
                let (size, outcome) = match std::fs::read(path) {
                    Err(e) => (0, Outcome::Unreadable(PipelineError::Io { path: path.clone(), source: e })),
                    Ok(bytes) => {
                        let sha = strata_core::stream::sha256_hex(&bytes);
                        let size = bytes.len() as u64;
                        if known.contains(&sha) {
                            (size, Outcome::Skipped(sha))
                        } else if !seen.insert(sha.clone()) {
                            (size, Outcome::Duplicate(sha))
                        } else {
                            if work_tx.send((i, bytes, sha)).is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                };
                if reader_out.send((i, size, outcome)).is_err() {
                    return;
                }
            }
        });
        let worker_out = out_tx.clone();
        let blobs = &blobs;
        scope.spawn(move || {
            pool.install(|| {
                work_rx.into_iter().par_bridge().for_each(|(i, bytes, sha256)| {
                    let result = process(&bytes, &sha256, &options.process);
                    let stored = store(blobs, &inputs[i], &bytes, sha256, result, options);
                    let _ = worker_out.send((i, bytes.len() as u64, Outcome::Stored(Box::new(stored))));
                });
            });
        });
        drop(out_tx);
        // The writer: this thread.
        for (i, size, outcome) in out_rx {
            let path = &inputs[i];
            let report = write(&db, path, outcome, &mut counts)?;
            progress.model_done(path, size);
            reports[i] = Some(report);
        }
        Ok(())
    })?;
    let models: Vec<ModelReport> = reports.into_iter().flatten().collect();
    Ok(Report { summary: counts, models })
}

/// Records one outcome: the row (after the worker stored the blobs) and
/// the counts.
fn write(db: &Db, path: &Path, outcome: Outcome, counts: &mut Counts) -> Result<ModelReport, PipelineError> {
    let mut report = ModelReport {
        file: path.display().to_string(),
        sha256: None,
        status: Status::Failed,
        error: None,
        summary: None,
        artefacts: None,
    };
    match outcome {
        Outcome::Unreadable(e) => {
            counts.failed += 1;
            report.error = Some(ErrorBody { code: e.code(), message: e.to_string() });
        }
        Outcome::Duplicate(sha) => {
            counts.duplicate += 1;
            report.sha256 = Some(sha);
            report.status = Status::Duplicate;
        }
        Outcome::Skipped(sha) => {
            counts.skipped += 1;
            report.sha256 = Some(sha);
            report.status = Status::Skipped;
        }
        Outcome::Stored(stored) => {
            let (row, stored_report) = (*stored)?;
            db.put_model(&row)?;
            counts.bytes += row.size_bytes as u64;
            match stored_report.status {
                Status::Ok => counts.ok += 1,
                Status::Repaired => counts.repaired += 1,
                _ => counts.failed += 1,
            }
            report = stored_report;
        }
    }
    Ok(report)
}

/// Stores a processed model's blobs (the original first) and returns the
/// row to write and its report entry. An `Err` is a store failure (disk
/// full), which stops the run; a processing failure is a `failed` row.
fn store(
    blobs: &dyn BlobStore,
    path: &Path,
    bytes: &[u8],
    sha256: String,
    result: Result<Processed, PipelineError>,
    options: &IngestOptions,
) -> Result<(ModelRecord, ModelReport), PipelineError> {
    let file = path.display().to_string();
    let original = blobs.put(bytes)?;
    let now = now_ms();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| file.clone());
    let mut row = ModelRecord {
        id: sha256.clone(),
        file_name: name,
        owner: options.owner.clone(),
        status: "failed".into(),
        error_code: None,
        error: None,
        format: None,
        size_bytes: bytes.len() as i64,
        triangles: None,
        volume: None,
        layers: None,
        chunks: None,
        report: None,
        original_blob: Some(original.to_string()),
        repaired_blob: None,
        snapshot_blob: None,
        manifest_blob: None,
        created_at: now,
        updated_at: now,
    };
    let mut report = ModelReport {
        file,
        sha256: Some(sha256),
        status: Status::Failed,
        error: None,
        summary: None,
        artefacts: None,
    };
    match result {
        Err(e) => {
            row.error_code = Some(e.code().to_string());
            row.error = Some(e.to_string());
            report.error = Some(ErrorBody { code: e.code(), message: e.to_string() });
        }
        Ok(p) => {
            let repaired = match &p.repaired_stl {
                Some(stl) => Some(blobs.put(stl)?.to_string()),
                None => None,
            };
            let snapshot = blobs.put(&p.snapshot_png)?.to_string();
            let mut chunks = Vec::with_capacity(p.stream.chunks.len());
            for c in &p.stream.chunks {
                chunks.push(blobs.put(c)?.to_string());
            }
            let manifest = blobs.put(&p.stream.manifest.to_json())?.to_string();
            let summary = p.summary();
            report.status = if p.repaired() { Status::Repaired } else { Status::Ok };
            row.status = if p.repaired() { "repaired" } else { "ok" }.into();
            row.format = Some(p.format.to_string());
            row.triangles = Some(summary.triangles as i64);
            row.volume = Some(summary.volume);
            row.layers = Some(i64::from(summary.layers));
            row.chunks = Some(summary.chunks as i64);
            row.report = serde_json::to_string(&serde_json::json!({
                "before": p.before,
                "repair": p.repair.as_ref().map(|(log, _)| log),
                "after": p.repair.as_ref().map(|(_, r)| r),
            }))
            .ok();
            row.repaired_blob = repaired.clone();
            row.snapshot_blob = Some(snapshot.clone());
            row.manifest_blob = Some(manifest.clone());
            report.summary = Some(summary);
            report.artefacts =
                Some(Artefacts { original: original.to_string(), repaired, snapshot, manifest, chunks });
        }
    }
    Ok((row, report))
}
