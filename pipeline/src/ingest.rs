//! A catalog through the pipeline: reader -> rayon workers -> writer.
//!
//! ```text
//! reader thread ──bounded(jobs)──> workers (rayon, `jobs` threads) ──bounded(64)──> writer (this thread)
//!   reserves memory,                 hash, skip / duplicate,           stages originals, publishes,
//!   reads files                      process, stage derived blobs      the rows
//!      │ (unreadable)                                                          ▲
//!      └───────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The bounded channels are the memory bound: a fixed number of models'
//! bytes and results exist at once, whatever the catalog's size, and a
//! slow disk or a huge model slows the reader instead of piling up.
//! On top of that, a [`MemoryBudget`] bounds what the models in flight may
//! take (estimated from their file sizes): a catalog of 1 GB models on a
//! 16-core machine would otherwise hold 16 of them at once, several GB
//! each while they are repaired.
//! A model is done when its row is written, after all its blobs: a run
//! killed at any point resumes by redoing only the models without a row.
//! Every stage is timed, so a run's wall time can be held against the sum
//! of the core's stage times (`Counts::stage_seconds`).

use std::path::{Path, PathBuf};

use rayon::iter::{ParallelBridge, ParallelIterator};
use serde::Serialize;

use crate::PipelineError;
use crate::blob::{BlobId, BlobStore};
use crate::buffers::{BufferPool, ModelBuf, ModelFile};
use crate::db::{ModelRecord, now_ms};
use crate::process::{ProcessOptions, Processed, StageTimes, Summary, process_timed};

/// How to run an ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Models processed at once (and rayon threads).
    pub jobs: usize,
    /// Per-model processing.
    pub process: ProcessOptions,
    /// Owner recorded on new models.
    pub owner: Option<String>,
    /// Process again the models a previous run recorded as failed (after
    /// an upgrade that may handle them); otherwise they are skipped.
    pub retry_failed: bool,
    /// Bytes the models in flight may take together, by
    /// [`estimated_cost`]; a model that alone costs more is processed alone.
    pub memory_budget: u64,
    /// Where the blobs are (`--blobs`): the data directory or a bucket.
    pub blobs: crate::objstore::BlobLocation,
    /// Where the metadata is (`--database`).
    pub database: crate::db::DatabaseLocation,
}

impl Default for IngestOptions {
    fn default() -> IngestOptions {
        IngestOptions {
            jobs: std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            process: ProcessOptions::default(),
            owner: None,
            retry_failed: false,
            memory_budget: default_memory_budget(),
            blobs: crate::objstore::BlobLocation::Local,
            database: crate::db::DatabaseLocation::InDataDir,
        }
    }
}

/// Half the memory available now (Linux: `MemAvailable`), at least
/// 256 MiB; 4 GiB where that cannot be read.
pub fn default_memory_budget() -> u64 {
    const MIB: u64 = 1 << 20;
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    available.map_or(4096 * MIB, |bytes| (bytes / 2).max(256 * MIB))
}

/// What processing a model of `size` bytes is estimated to take at its
/// peak, file bytes included. Measured (peak RSS of `strata ingest` of one
/// file, less the 8 MB of an empty run): a 250 MB binary torus 1.6x its
/// size, a 100 MB damaged torus through repair 2.9x, a 9 MB ASCII model
/// 3.6x; a 3 MB 3MF 10x (its XML is deflated). Rounded up, plus a fixed
/// part for the snapshot and stream buffers.
pub fn estimated_cost(path: &Path, size: u64) -> u64 {
    let is_3mf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("3mf"));
    let factor = if is_3mf { 16 } else { 4 };
    size.saturating_mul(factor).saturating_add(16 << 20)
}

/// The bytes the models in flight may take together. The reader reserves
/// a model's estimated cost before reading it and waits while the budget
/// is spent; a model's reservation is returned when its worker is done
/// with it. A model that costs more than the whole budget is let in once
/// nothing else is in flight, so no model ever waits for ever.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    state: std::sync::Mutex<BudgetState>,
    returned: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct BudgetState {
    used: u64,
    models: usize,
    peak_models: usize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget { limit, state: Default::default(), returned: std::sync::Condvar::new() }
    }

    /// Reserves `cost` bytes, waiting until they fit (or nothing else is
    /// in flight); the reservation is returned when the result is dropped.
    pub fn reserve(&self, cost: u64) -> Reservation<'_> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while state.models > 0 && state.used.saturating_add(cost) > self.limit {
            state = self.returned.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.used += cost;
        state.models += 1;
        state.peak_models = state.peak_models.max(state.models);
        Reservation { budget: self, cost }
    }

    /// The most models that were in flight at once.
    pub fn peak_models(&self) -> usize {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).peak_models
    }
}

/// A model's share of a [`MemoryBudget`], returned on drop (also when its
/// processing panicked and the panic was caught).
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    cost: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.budget.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.used -= self.cost;
        state.models -= 1;
        drop(state);
        self.budget.returned.notify_all();
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
    /// The run's wall time.
    pub wall_seconds: f64,
    /// Time spent in each stage, summed over models and threads.
    pub stage_seconds: StageTimes,
    /// The memory budget for models in flight, in bytes.
    pub memory_budget: u64,
    /// The most models that were in flight at once.
    pub peak_models_in_flight: usize,
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

/// The model files under `dir`, in sorted order, following links to
/// directories (a catalog is often assembled from links) but never into a
/// loop: a link back to a directory being walked is skipped (walkdir
/// detects it), where a hand-written walk recursed until the stack
/// overflowed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PipelineError> {
    for entry in walkdir::WalkDir::new(dir).follow_links(true).sort_by_file_name() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.loop_ancestor().is_some() => continue,
            // A dangling link is listed like a file: reading it fails, and
            // the model is recorded as failed with the reason.
            Err(e)
                if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                    && e.path().is_some() =>
            {
                let p = e.path().map(Path::to_path_buf).unwrap_or_default();
                if is_model_file(&p) {
                    out.push(p);
                }
                continue;
            }
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_path_buf();
                let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("cannot walk"));
                return Err(PipelineError::Io { path, source });
            }
        };
        if entry.file_type().is_dir() {
            continue;
        }
        let p = entry.into_path();
        if is_model_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Whether a walk takes `p`: `.stl`, `.obj` or `.3mf`, any case.
fn is_model_file(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(ext.as_deref(), Some("stl" | "obj" | "3mf"))
}

/// What travels from the reader or a worker to the writer.
enum Outcome<'a> {
    /// Processed, and its derived blobs staged by the worker (so those
    /// writes run in parallel). The original travels on to the writer,
    /// which stages it, publishes the lot, then writes the row.
    Stored(Box<Result<Stored, PipelineError>>, Original<'a>),
    Unreadable(PipelineError),
    Duplicate(String),
    Skipped(String),
}

/// An input's bytes with their share of the memory budget, which is
/// returned with them: from the reader to a worker, then, once processed,
/// on to the writer. The writer stages the originals (direct writes that
/// wait on the disk, not the CPU) so that a worker never sits idle waiting
/// for the device: at 2 jobs on 2 cores that wait was 0.35 s of each
/// core's time per 1,000 models.
struct Original<'a> {
    bytes: ModelBuf<'a>,
    _reservation: Reservation<'a>,
}

/// The most models committed together (one pair of file-system flushes and
/// one database transaction).
const GROUP_MAX: usize = 64;

/// The shortest time between the starts of two commits. Each commit costs
/// two file-system flushes whose waits and wake-ups land on the workers'
/// cores; at 250 models/s on 2 cores, commits every model or two cost
/// 2,000 writer wake-ups per 1,000 models. A model waits at most this long
/// longer to be visible, and a killed run redoes at most this much more.
const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Which input of a run owns each content hash. Workers hash in parallel,
/// so two inputs with the same bytes can race; the lowest index always
/// wins (it is processed whatever the order), which keeps reports and
/// rows the same from run to run. A later input that loses the race may
/// be processed too, and is reported as the duplicate it is.
#[derive(Default)]
struct Owners(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl Owners {
    /// Whether input `i` should process `sha` (no earlier input has it).
    fn claim(&self, sha: &str, i: usize) -> bool {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(sha) {
            Some(&owner) if owner < i => false,
            _ => {
                map.insert(sha.to_string(), i);
                true
            }
        }
    }
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
    let started = std::time::Instant::now();
    // The one way to open a data directory for writing: the lock first
    // (its temporary files may be another process's), then the blobs, the
    // database and the recovery of an interrupted server's jobs.
    let store_options = crate::store::StoreOptions {
        blobs: options.blobs.clone(),
        database: options.database.clone(),
        ..Default::default()
    };
    let (opened, _recovered) = crate::store::Store::open_with(data_dir, 1, &store_options)?;
    let blobs = opened.blobs();
    let db = opened.db();
    let known = db.model_ids(options.retry_failed)?;
    let jobs = options.jobs.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("strata-worker-{i}"))
        .build()
        .map_err(|e| PipelineError::Panic(format!("cannot start worker threads: {e}")))?;
    let budget = MemoryBudget::new(options.memory_budget);
    // Results are small (the derived blobs are staged on disk) but for the
    // originals, whose memory the budget bounds; so this channel can hold a
    // whole commit group.
    let out_capacity = GROUP_MAX.max(2 * jobs);
    // Spare buffers for every model that can be in flight (read, queued,
    // processed, waiting for the writer), so that the pool never frees a
    // buffer the next input needs: with fewer, buffers were unmapped and
    // mapped again, 290,000 page faults per 1,000 models instead of 40,000.
    // At most an eighth of the memory budget (and 256 MiB) is held idle.
    let keep_bytes = (options.memory_budget / 8).min(256 << 20) as usize;
    let buffers = BufferPool::new(out_capacity + 2 * jobs + 2, keep_bytes);
    let (work_tx, work_rx) = crossbeam_channel::bounded::<(usize, Original<'_>, f64)>(jobs);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<(usize, u64, Outcome, StageTimes)>(out_capacity);
    let mut reports: Vec<Option<ModelReport>> = vec![None; inputs.len()];
    let mut stages = StageTimes::default();
    let mut bytes_read = 0u64;
    let owners = Owners::default();
    // The index whose row holds each stored hash (the lowest processed).
    let mut rows: std::collections::HashMap<String, usize> = std::collections::HashMap::new();

    // Set when the writer fails: the reader stops reading and the workers
    // drop what is left instead of processing it for nobody.
    let cancelled = std::sync::atomic::AtomicBool::new(false);
    let cancelled = &cancelled;
    std::thread::scope(|scope| -> Result<(), PipelineError> {
        // The reader only reads: the I/O stage. Hashing is CPU work and
        // runs in the workers, so one reader never limits the speed-up.
        let reader_out = out_tx.clone();
        let (budget, buffers) = (&budget, &buffers);
        scope.spawn(move || {
            for (i, path) in inputs.iter().enumerate() {
                if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                // One open and one stat give the size to reserve by and
                // the file to read.
                let read = ModelFile::open(path).and_then(|file| {
                    let reservation = budget.reserve(estimated_cost(path, file.size()));
                    let clock = std::time::Instant::now();
                    let bytes = buffers.read(file)?;
                    Ok((Original { bytes, _reservation: reservation }, clock.elapsed().as_secs_f64()))
                });
                match read {
                    Ok((original, read)) => {
                        if work_tx.send((i, original, read)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let e = PipelineError::Io { path: path.clone(), source: e };
                        if reader_out.send((i, 0, Outcome::Unreadable(e), StageTimes::default())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let worker_out = out_tx.clone();
        let (owners, known) = (&owners, &known);
        scope.spawn(move || {
            pool.install(|| {
                work_rx.into_iter().par_bridge().for_each(|(i, original, read)| {
                    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let bytes = &original.bytes[..];
                    let size = bytes.len() as u64;
                    let clock = std::time::Instant::now();
                    let sha = strata_core::stream::sha256_hex(bytes);
                    let mut times =
                        StageTimes { read, hash: clock.elapsed().as_secs_f64(), ..StageTimes::default() };
                    let outcome = if known.contains(&sha) {
                        Outcome::Skipped(sha)
                    } else if !owners.claim(&sha, i) {
                        Outcome::Duplicate(sha)
                    } else {
                        let result = process_timed(bytes, &sha, &options.process, &mut times);
                        let clock = std::time::Instant::now();
                        let stored = store(blobs, &inputs[i], bytes, sha, result, options.owner.clone());
                        times.store = clock.elapsed().as_secs_f64();
                        let _ =
                            worker_out.send((i, size, Outcome::Stored(Box::new(stored), original), times));
                        return;
                    };
                    // The model's bytes are not needed any more: their
                    // memory is returned before the hand-over, which may
                    // wait for the writer.
                    drop(original);
                    let _ = worker_out.send((i, size, outcome, times));
                });
            });
        });
        drop(out_tx);
        // The writer: this thread. It commits in groups: whatever has
        // arrived while the last group was flushing goes in the next one,
        // so a slow disk makes the groups larger instead of the run slower.
        // A group is also given until `COMMIT_INTERVAL` after the last one
        // began to fill up, so that fast workers do not make a commit (two
        // flushes, a transaction) out of every model or two.
        // The receiver is owned here, so that when the writer stops (done,
        // or failed on the store) it is dropped and no worker can block on
        // a full channel: a failing store ends the run with its error
        // instead of hanging it.
        let out_rx = out_rx;
        let mut write = || -> Result<(), PipelineError> {
            let mut last_commit = std::time::Instant::now();
            while let Ok(first) = out_rx.recv() {
                let since = last_commit.elapsed();
                if since < COMMIT_INTERVAL && out_rx.len() + 1 < GROUP_MAX {
                    std::thread::sleep(COMMIT_INTERVAL - since);
                }
                last_commit = std::time::Instant::now();
                let mut group = vec![first];
                group.extend(out_rx.try_iter().take(GROUP_MAX - 1));
                let mut staged: Vec<BlobId> = Vec::new();
                let mut new_rows: Vec<ModelRecord> = Vec::new();
                let mut done = Vec::with_capacity(group.len());
                for (i, size, outcome, mut times) in group {
                    let report = match outcome {
                        Outcome::Stored(stored, original) => {
                            let (row, report, blob_ids) = (*stored)?;
                            let clock = std::time::Instant::now();
                            staged.push(stage_original(blobs, &row.id, &original.bytes)?);
                            times.store += clock.elapsed().as_secs_f64();
                            staged.extend(blob_ids);
                            // A later input that raced an earlier one with the
                            // same bytes leaves the row to the earlier input.
                            if rows.get(&row.id).is_none_or(|&j| i < j) {
                                rows.insert(row.id.clone(), i);
                                new_rows.retain(|r| r.id != row.id);
                                new_rows.push(row);
                            }
                            report
                        }
                        other => unstored_report(&inputs[i], other),
                    };
                    bytes_read += size;
                    stages.add(&times);
                    done.push((i, size, report));
                }
                let clock = std::time::Instant::now();
                blobs.publish(&staged)?;
                db.put_models(&new_rows)?;
                stages.commit += clock.elapsed().as_secs_f64();
                for (i, size, report) in done {
                    progress.model_done(&inputs[i], size);
                    reports[i] = Some(report);
                }
            }
            Ok(())
        };
        let written = write();
        if written.is_err() {
            cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        drop(out_rx);
        written
    })?;
    // Inputs processed only because they raced the earlier input with the
    // same bytes are the duplicates they are.
    for (i, report) in reports.iter_mut().enumerate() {
        if let Some(r) = report
            && let Some(sha) = &r.sha256
            && matches!(r.status, Status::Ok | Status::Repaired | Status::Failed)
            && rows.get(sha).is_some_and(|&row| row != i)
        {
            *r = unstored_report(Path::new(&r.file), Outcome::Duplicate(sha.clone()));
        }
    }
    let models: Vec<ModelReport> = reports.into_iter().flatten().collect();
    let mut summary = Counts { total: inputs.len(), bytes: bytes_read, ..Counts::default() };
    for m in &models {
        match m.status {
            Status::Ok => summary.ok += 1,
            Status::Repaired => summary.repaired += 1,
            Status::Failed => summary.failed += 1,
            Status::Duplicate => summary.duplicate += 1,
            Status::Skipped => summary.skipped += 1,
        }
    }
    summary.wall_seconds = started.elapsed().as_secs_f64();
    summary.stage_seconds = stages;
    summary.memory_budget = options.memory_budget;
    summary.peak_models_in_flight = budget.peak_models();
    Ok(Report { summary, models })
}

/// The report of an input that made no row.
fn unstored_report(path: &Path, outcome: Outcome) -> ModelReport {
    let mut report = ModelReport {
        file: path.display().to_string(),
        sha256: None,
        status: Status::Failed,
        error: None,
        summary: None,
        artefacts: None,
    };
    match outcome {
        Outcome::Unreadable(e) => report.error = Some(ErrorBody { code: e.code(), message: e.to_string() }),
        Outcome::Duplicate(sha) => {
            report.sha256 = Some(sha);
            report.status = Status::Duplicate;
        }
        Outcome::Skipped(sha) => {
            report.sha256 = Some(sha);
            report.status = Status::Skipped;
        }
        Outcome::Stored(..) => {}
    }
    report
}

/// A model whose blobs are staged: its row, report entry and blobs to
/// publish before the row is written.
type Stored = (ModelRecord, ModelReport, Vec<BlobId>);

/// Stages an input's original under `sha256`, the digest computed when the
/// input was identified (so the store does not hash it again).
fn stage_original(blobs: &dyn BlobStore, sha256: &str, bytes: &[u8]) -> Result<BlobId, PipelineError> {
    blobs.stage_hashed(BlobId::of_known(sha256, bytes), bytes)
}

/// Stages a processed model's derived blobs (the caller stages the
/// original, see [`stage_original`]) and returns the row to write and its
/// report entry. An `Err` is a store failure (disk full), which stops the
/// run; a processing failure is a `failed` row.
fn store(
    blobs: &dyn BlobStore,
    path: &Path,
    bytes: &[u8],
    sha256: String,
    result: Result<Processed, PipelineError>,
    owner: Option<String>,
) -> Result<Stored, PipelineError> {
    let file = path.display().to_string();
    let mut staged = Vec::new();
    // `known`: the bytes' digest when it was computed already (the
    // original's and the chunks'), so the store need not hash them again.
    let mut stage = |bytes: &[u8], known: Option<&str>| -> Result<String, PipelineError> {
        let id = known.map_or_else(|| BlobId::of(bytes), |hex| BlobId::of_known(hex, bytes));
        let id = blobs.stage_hashed(id, bytes)?;
        let hex = id.to_string();
        staged.push(id);
        Ok(hex)
    };
    let original = sha256.clone();
    let now = now_ms();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| file.clone());
    let mut row = ModelRecord {
        id: sha256.clone(),
        file_name: name,
        owner,
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
        original_blob: Some(original.clone()),
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
                Some(stl) => Some(stage(stl, None)?),
                None => None,
            };
            let snapshot = stage(&p.snapshot_png, None)?;
            let mut chunks = Vec::with_capacity(p.stream.chunks.len());
            for (bytes, info) in p.stream.chunks.iter().zip(&p.stream.manifest.chunks) {
                chunks.push(stage(bytes, Some(&info.sha256))?);
            }
            let manifest = stage(&p.stream.manifest.to_json(), None)?;
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
            report.artefacts = Some(Artefacts { original, repaired, snapshot, manifest, chunks });
        }
    }
    Ok((row, report, staged))
}

/// One upload through the pipeline into the store (the server's path):
/// hash, process, stage and publish the blobs. The caller writes the
/// returned row (it owns the database connection). A processing failure
/// is a `failed` row, not an `Err`; an `Err` is a store failure.
/// `sha256` is the bytes' digest when the caller already computed it
/// (the server hashes while spooling); it is trusted, not re-checked.
pub fn ingest_upload(
    bytes: &[u8],
    sha256: Option<String>,
    name: &str,
    owner: Option<String>,
    blobs: &dyn BlobStore,
    options: &ProcessOptions,
) -> Result<(ModelRecord, ModelReport), PipelineError> {
    ingest_upload_timed(bytes, sha256, name, owner, blobs, options, false)
        .map(|(row, report, _)| (row, report))
}

/// [`ingest_upload`], with the time spent in each stage. With
/// `original_stored`, the original is already in `blobs` under `sha256`
/// (a shared store puts it there before acknowledging the upload) and is
/// not written again: on an object store that would be a conditional
/// create refused, a wasted upload of the whole model.
pub fn ingest_upload_timed(
    bytes: &[u8],
    sha256: Option<String>,
    name: &str,
    owner: Option<String>,
    blobs: &dyn BlobStore,
    options: &ProcessOptions,
    original_stored: bool,
) -> Result<(ModelRecord, ModelReport, StageTimes), PipelineError> {
    let mut times = StageTimes::default();
    let clock = std::time::Instant::now();
    let sha = sha256.unwrap_or_else(|| strata_core::stream::sha256_hex(bytes));
    times.hash = clock.elapsed().as_secs_f64();
    let result = process_timed(bytes, &sha, options, &mut times);
    let clock = std::time::Instant::now();
    let original = if original_stored { None } else { Some(stage_original(blobs, &sha, bytes)?) };
    let (row, report, mut staged) = store(blobs, Path::new(name), bytes, sha, result, owner)?;
    staged.extend(original);
    times.store = clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    blobs.publish(&staged)?;
    times.commit = clock.elapsed().as_secs_f64();
    Ok((row, report, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_follows_directory_links_but_not_around_a_loop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("catalog");
        std::fs::create_dir_all(root.join("a/b")).expect("dirs");
        std::fs::write(root.join("a/b/part.STL"), b"x").expect("write");
        std::fs::write(root.join("a/notes.txt"), b"x").expect("write");
        // A link back up (a loop), and a link to a directory elsewhere.
        std::os::unix::fs::symlink(&root, root.join("a/b/up")).expect("loop");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("dir");
        std::fs::write(elsewhere.join("z.obj"), b"x").expect("write");
        std::os::unix::fs::symlink(&elsewhere, root.join("linked")).expect("link");
        let found = collect_inputs(std::slice::from_ref(&root)).expect("walked");
        assert_eq!(found, vec![root.join("a/b/part.STL"), root.join("linked/z.obj")]);
    }

    #[test]
    fn a_reservation_waits_until_enough_is_returned() {
        let budget = MemoryBudget::new(100);
        let first = budget.reserve(60);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let second = budget.reserve(60);
                tx.send(()).expect("send");
                drop(second);
            });
            // 60 + 60 > 100: the second waits as long as the first is held.
            assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err(), "admitted early");
            drop(first);
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("admitted once returned");
        });
        assert_eq!(budget.peak_models(), 1);
    }

    #[test]
    fn a_model_larger_than_the_budget_goes_alone_and_small_ones_together() {
        let budget = MemoryBudget::new(100);
        drop(budget.reserve(1_000));
        let a = budget.reserve(30);
        let b = budget.reserve(30);
        let c = budget.reserve(30);
        assert_eq!(budget.peak_models(), 3);
        drop((a, b, c));
        // Nothing in flight: the oversized one is let in.
        let big = budget.reserve(u64::MAX);
        drop(big);
    }

    #[test]
    fn an_upload_stores_its_original_and_every_artefact_it_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = crate::blob::FsBlobStore::open(dir.path()).expect("store");
        let bytes = strata_core::synth::to_binary_stl("cube", &strata_core::synth::cube_facets());
        let (row, report) = ingest_upload(&bytes, None, "cube.stl", None, &blobs, &ProcessOptions::default())
            .expect("stored");
        assert_eq!(report.status, Status::Ok);
        let original = BlobId::parse(row.original_blob.as_deref().expect("original")).expect("id");
        assert_eq!(original.as_str(), row.id, "the original is named by the upload's digest");
        assert_eq!(blobs.get(&original).expect("published"), bytes);
        let artefacts = report.artefacts.expect("artefacts");
        for id in [&artefacts.snapshot, &artefacts.manifest].into_iter().chain(&artefacts.chunks) {
            assert!(blobs.contains(&BlobId::parse(id).expect("id")).expect("contains"), "{id}");
        }
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0, "nothing left staged");
    }

    #[test]
    fn costs_grow_with_size_and_more_for_3mf() {
        let stl = estimated_cost(Path::new("a.STL"), 100 << 20);
        let threemf = estimated_cost(Path::new("a.3MF"), 100 << 20);
        assert!(stl > 400 << 20 && threemf > 4 * stl / 2, "{stl} {threemf}");
        assert_eq!(estimated_cost(Path::new("x.stl"), u64::MAX), u64::MAX, "saturates");
        assert!(default_memory_budget() >= 256 << 20);
    }
}
