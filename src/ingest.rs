//! `strata ingest PATH...` and `strata models list|show`: the catalog
//! pipeline and a look into the store it fills.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use strata_pipeline::db::Db;
use strata_pipeline::ingest::{IngestOptions, Progress, Report, collect_inputs, ingest};

use crate::files::write_atomically;

/// The default data directory.
pub(crate) const DEFAULT_DATA: &str = "strata-data";

#[derive(Debug, clap::Args)]
pub(crate) struct IngestArgs {
    /// Model files or directories (walked for .stl, .obj and .3mf).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The data directory (blobs and the metadata database).
    #[arg(long, env = "STRATA_DATA", default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Where the metadata is: `sqlite://PATH` or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (default: `DATA/meta.db`).
    #[arg(long, env = "STRATA_DATABASE", value_name = "URL", value_parser = strata_pipeline::db::DatabaseLocation::parse)]
    database: Option<strata_pipeline::db::DatabaseLocation>,
    /// Where blobs are stored: `local` (the data directory) or
    /// `s3://BUCKET[/PREFIX]`, with credentials and the endpoint from the
    /// usual AWS variables.
    #[arg(long, default_value = "local", value_parser = strata_pipeline::objstore::BlobLocation::parse)]
    blobs: strata_pipeline::objstore::BlobLocation,
    /// Models processed at once (default: the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    jobs: Option<u16>,
    /// Memory the models in flight may take together, in MiB, estimated
    /// from their file sizes (default: half the memory available). A model
    /// estimated above it is processed alone.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_memory: Option<u64>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Process again the models an earlier run recorded as failed
    /// (otherwise they are skipped like the rest of the store).
    #[arg(long)]
    retry_failed: bool,
    /// Print the time spent in each stage, summed over models.
    #[arg(long)]
    timings: bool,
    /// Layer height for the streams.
    #[arg(long, default_value_t = 0.2, value_parser = crate::stream::positive)]
    layer_height: f64,
    /// What one model's processing may cost.
    #[command(flatten)]
    limits: crate::serve::LimitArgs,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModelsCommand {
    /// List the stored models.
    List {
        /// The data directory.
        #[arg(long, env = "STRATA_DATA", default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one model (by id or a unique prefix of 8+ hex digits).
    Show {
        /// The model's id.
        id: String,
        /// The data directory.
        #[arg(long, env = "STRATA_DATA", default_value = DEFAULT_DATA)]
        data: PathBuf,
    },
}

/// The indicatif bar: models done / total, models/s, MB/s, ETA.
struct Bar {
    bar: indicatif::ProgressBar,
    bytes: std::sync::atomic::AtomicU64,
    start: std::time::Instant,
}

impl Progress for Bar {
    fn model_done(&self, _file: &Path, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes;
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_message(format!("{:.1} MB/s", total as f64 / 1e6 / secs));
        self.bar.inc(1);
    }
}

pub(crate) fn run(args: &IngestArgs) -> ExitCode {
    let inputs = match collect_inputs(&args.paths) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = IngestOptions::default();
    if let Some(j) = args.jobs {
        options.jobs = usize::from(j);
    }
    if let Some(mib) = args.max_memory {
        options.memory_budget = mib << 20;
    }
    options.retry_failed = args.retry_failed;
    options.blobs = args.blobs.clone();
    options.database = args.database.clone().unwrap_or_default();
    options.process.slice.layer_height = args.layer_height;
    options.process.slice.first_layer = args.layer_height;
    options.process.limits = args.limits.limits();
    let bar = indicatif::ProgressBar::new(inputs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} models  {per_sec}  {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = Bar { bar, bytes: 0.into(), start: std::time::Instant::now() };
    let report = match ingest(&inputs, &args.data, &options, &progress) {
        Ok(r) => r,
        Err(e) => {
            progress.bar.abandon();
            eprintln!("error: {}: the run could not proceed: {e}", args.data.display());
            return ExitCode::FAILURE;
        }
    };
    progress.bar.finish_and_clear();
    let secs = progress.start.elapsed().as_secs_f64();
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(e) = write_atomically(path, &json) {
            eprintln!("error: {}: cannot write the report: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    print_summary(&report, secs, &args.data);
    if args.timings {
        print_timings(&report, options.jobs);
    }
    ExitCode::SUCCESS
}

fn print_summary(report: &Report, secs: f64, data: &Path) {
    let c = &report.summary;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>8} {:>9} {:>8} {:>8}\n{:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "ok",
        "repaired",
        "failed",
        "duplicate",
        "skipped",
        "total",
        c.ok,
        c.repaired,
        c.failed,
        c.duplicate,
        c.skipped,
        c.total
    );
    let _ = writeln!(
        out,
        "{} models in {secs:.2} s ({:.1} models/s, {:.1} MB/s) into {}",
        c.total,
        c.total as f64 / secs.max(1e-9),
        c.bytes as f64 / 1e6 / secs.max(1e-9),
        data.display()
    );
    for m in report.models.iter().filter(|m| m.error.is_some()) {
        if let Some(e) = &m.error {
            let _ = writeln!(out, "failed: {}: {} ({})", m.file, e.message, e.code);
        }
    }
}

/// Stage times summed over models, and the wall time against them: the
/// pipeline's own overhead is what the wall time adds to `sum / jobs`.
fn print_timings(report: &Report, jobs: usize) {
    let t = &report.summary.stage_seconds;
    let mut out = std::io::stdout().lock();
    for (name, secs) in [
        ("read", t.read),
        ("hash", t.hash),
        ("parse", t.parse),
        ("repair", t.repair),
        ("render", t.render),
        ("slice", t.slice),
        ("encode", t.encode),
        ("store", t.store),
        ("commit", t.commit),
    ] {
        let _ = writeln!(out, "{name:>8} {secs:9.3} s");
    }
    let core = t.parse + t.repair + t.render + t.slice + t.encode;
    let wall = report.summary.wall_seconds;
    let _ = writeln!(
        out,
        "core stages {core:.3} s, all stages {:.3} s over {jobs} job(s); wall {wall:.3} s = {:.2}x core/jobs, {:.2}x all/jobs",
        t.total(),
        wall / (core / jobs as f64).max(1e-9),
        wall / (t.total() / jobs as f64).max(1e-9),
    );
    let _ = writeln!(
        out,
        "at most {} model(s) in flight, memory budget {} MiB",
        report.summary.peak_models_in_flight,
        report.summary.memory_budget >> 20
    );
}

pub(crate) fn models(command: &ModelsCommand) -> ExitCode {
    let data = match command {
        ModelsCommand::List { data, .. } | ModelsCommand::Show { data, .. } => data,
    };
    let db_path = data.join("meta.db");
    if !db_path.is_file() {
        eprintln!("error: {}: no store here (run `strata ingest` first)", data.display());
        return ExitCode::FAILURE;
    }
    let db = match Db::open(&db_path) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {}: {e}", db_path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    match command {
        ModelsCommand::List { json, .. } => match db.models() {
            Ok(models) if *json => {
                let _ = serde_json::to_writer_pretty(&mut out, &models);
                let _ = writeln!(out);
                ExitCode::SUCCESS
            }
            Ok(models) => {
                for m in models {
                    let _ = writeln!(
                        out,
                        "{}  {:<8} {:>7} layers  {}",
                        &m.id[..12],
                        m.status,
                        m.layers.unwrap_or(0),
                        m.file_name
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ModelsCommand::Show { id, .. } => match db.model(id) {
            Ok(Some(m)) => {
                let _ = serde_json::to_writer_pretty(&mut out, &m);
                let _ = writeln!(out);
                ExitCode::SUCCESS
            }
            Ok(None) => {
                eprintln!("error: no model {id:?} in {} (or the prefix is not unique)", data.display());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
