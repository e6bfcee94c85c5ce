//! The `strata` command: a thin CLI over the library crates.
//!
//! Each subcommand parses its flags, calls one library entry point per
//! input and formats the result; no model logic lives here.

mod config;
mod files;
mod ingest;
mod printer;
mod render;
mod repair;
mod serve;
mod stream;
mod upload;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use strata_core::{Error, Inspection, ModelBytes, ValidateOptions, ValidationReport, Warning, WeldOptions};

#[derive(Debug, Parser)]
#[command(name = "strata", version, about = "Parse, validate, slice and stream 3D models for printing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse STL, OBJ or 3MF files and report their geometry and defects.
    Inspect(InspectArgs),
    /// Repair a model (holes, flipped faces, duplicates, degenerate faces,
    /// inside-out bodies) and write it as binary STL.
    Repair(RepairArgs),
    /// Slice a model into layers and write the chunked, compressed stream
    /// printers pull (a directory: manifest.json and chunk files).
    Slice(stream::SliceArgs),
    /// Check, describe or print a stream written by `strata slice`.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Render a snapshot of a model to PNG.
    Render(render::RenderArgs),
    /// Process a catalog (files or directories) into the store: validate,
    /// repair, render, slice and pack every model.
    Ingest(ingest::IngestArgs),
    /// Look at the models in the store.
    #[command(subcommand)]
    Models(ingest::ModelsCommand),
    /// Serve the partner API, printer streams and the widget over HTTP.
    Serve(serve::ServeArgs),
    /// Upload a catalog to a Strata server: skip what it has (by SHA-256),
    /// upload the rest with bounded concurrency, follow each to the end,
    /// report every file (resumes when run again).
    Upload(upload::UploadArgs),
    /// Act as a printer holding a print token: pull the stream, verify
    /// and decode it, and report the print's progress (resumable).
    Printer(printer::PrinterArgs),
    /// Run the reference service provider (model healing with Strata's
    /// repair), for trying and testing external services.
    Provider(serve::ProviderArgs),
    /// Settings: `strata.toml` (or `--config FILE`, or `STRATA_CONFIG`)
    /// under `[serve]` and `[ingest]`, overridden by `STRATA_<SETTING>`
    /// variables, overridden by flags.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Process the shared job queue (uploads) without serving HTTP: one or
    /// more per machine beside `strata serve --no-workers`, over a shared
    /// PostgreSQL database and S3-compatible bucket.
    Worker(serve::WorkerArgs),
    /// Apply the store's database migrations (servers started with
    /// `--no-migrate` wait for this), or with `--check` list what is pending.
    Migrate(serve::MigrateArgs),
    /// Administration: partner accounts.
    #[command(subcommand)]
    Admin(serve::AdminCommand),
    /// Write generated test models (for benchmarks; not a user command).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// What to write: `torus` (closed) or `damaged-torus` (the repair
    /// benchmark's input: holes, flips, duplicates, collapsed faces).
    #[arg(value_parser = ["torus", "damaged-torus"])]
    kind: String,
    /// Output binary STL.
    output: PathBuf,
    /// Approximate triangle count.
    #[arg(long, default_value_t = 1_000_000)]
    triangles: usize,
}

#[derive(Debug, clap::Args)]
struct RepairArgs {
    /// The model to repair: binary or ASCII STL, OBJ or 3MF.
    input: PathBuf,
    /// Where to write the repaired binary STL (replaced atomically).
    output: PathBuf,
    /// Also write the repair log and both validation reports as JSON here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Merge vertices closer than this distance (file units). Default:
    /// 1e-6 of the bounding-box diagonal; 0 merges exact matches only.
    #[arg(long, value_name = "T", value_parser = parse_tolerance, allow_negative_numbers = true)]
    weld_tolerance: Option<f32>,
    /// Remove bodies that stay open after hole filling, and flat sheets
    /// (stray faces, loose fragments).
    #[arg(long)]
    remove_unconnected: bool,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// Model files: binary or ASCII STL, Wavefront OBJ or 3MF (told apart
    /// by content, not by name).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON object per file, one per line.
    #[arg(long)]
    json: bool,
    /// Also merge vertices closer than this distance (file units).
    #[arg(long, value_name = "T", value_parser = parse_tolerance, allow_negative_numbers = true)]
    weld_tolerance: Option<f32>,
    /// Count self-intersecting face pairs (slower).
    #[arg(long)]
    self_intersections: bool,
}

fn parse_tolerance(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(_) => Err("must be a finite number >= 0".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let file = config::take_file(&mut args);
    let command = config::with_env(Cli::command());
    let (args, from_file) = match config::layered(&command, args, file.as_deref()) {
        Ok(layered) => layered,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let matches = command.clone().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Config(config::ConfigCommand::Check { serve }) => {
            config::check(&command, &serve, &from_file, file.as_deref())
        }
        Command::Inspect(args) => inspect(&args),
        Command::Repair(args) => repair::run(&args),
        Command::Slice(args) => stream::slice(&args),
        Command::Stream(command) => stream::run(&command),
        Command::Render(args) => render::run(&args),
        Command::Ingest(args) => ingest::run(&args),
        Command::Models(command) => ingest::models(&command),
        Command::Serve(args) => serve::serve(&args),
        Command::Provider(args) => serve::provider(&args),
        Command::Printer(args) => printer::run(&args),
        Command::Upload(args) => upload::run(&args),
        Command::Admin(command) => serve::admin(&command),
        Command::Migrate(args) => serve::migrate(&args),
        Command::Worker(args) => serve::worker(&args),
        Command::Generate(args) => generate(&args),
    }
}

/// One line of `strata inspect --json`.
#[derive(Serialize)]
struct InspectLine<'a> {
    file: &'a str,
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    weld_tolerance: Option<f32>,
    #[serde(flatten)]
    report: &'a ValidationReport,
    warnings: &'a [Warning],
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    file: &'a str,
    error: ErrorBody,
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

fn inspect(args: &InspectArgs) -> ExitCode {
    let weld = WeldOptions { tolerance: args.weld_tolerance };
    let validate = ValidateOptions { self_intersections: args.self_intersections };
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in &args.files {
        let name = path.to_string_lossy();
        let result = load(path).and_then(|bytes| {
            strata_core::inspect(bytes.as_bytes(), &weld, &validate)
                .map_err(|source| Error::Parse { path: path.clone(), source })
        });
        let written = match (&result, args.json) {
            (Ok(ins), true) => {
                let line = InspectLine {
                    file: &name,
                    format: ins.format,
                    weld_tolerance: args.weld_tolerance,
                    report: &ins.report,
                    warnings: &ins.warnings,
                };
                write_json(&mut out, &line)
            }
            (Ok(ins), false) => write!(out, "{}", summary(&name, ins)),
            (Err(e), true) => {
                let line =
                    ErrorLine { file: &name, error: ErrorBody { code: e.code(), message: e.reason() } };
                write_json(&mut out, &line)
            }
            (Err(e), false) => {
                eprintln!("error: {e}");
                Ok(())
            }
        };
        failed |= result.is_err();
        if written.is_err() {
            // Stdout is gone (a closed pipe): nothing more can be reported.
            return ExitCode::FAILURE;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Writes a generated torus of about `triangles` faces (2 rings x 1
/// segment aspect), damaged for the repair benchmark if asked.
fn generate(args: &GenerateArgs) -> ExitCode {
    let segments = ((args.triangles / 4) as f64).sqrt().max(3.0) as usize;
    let rings = (args.triangles / (2 * segments)).max(3);
    let torus = strata_core::synth::torus(rings, segments);
    let (facets, header) = if args.kind == "damaged-torus" {
        let (f, d) = strata_core::synth::damage(&torus, torus.len() / 1000);
        let header = format!(
            "Strata damaged torus: {} faces originally; {} holes {} flips {} dups {} degenerate",
            torus.len(),
            d.holes,
            d.flipped,
            d.duplicates,
            d.degenerate
        );
        (f, header)
    } else {
        (torus, "Strata torus".to_string())
    };
    let bytes = strata_core::synth::to_binary_stl(&header, &facets);
    match std::fs::write(&args.output, bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}: {e}", args.output.display());
            ExitCode::FAILURE
        }
    }
}

/// The exit code for a subcommand's result: its own code, or 1 after
/// printing the error.
pub(crate) fn exit_with(result: Result<ExitCode, String>) -> ExitCode {
    result.unwrap_or_else(|message| {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    })
}

/// Loads, welds and validates one model file with default options, for
/// the subcommands that take a single model; the error names the file.
pub(crate) fn inspect_file(path: &Path) -> Result<(ModelBytes, Inspection), String> {
    let bytes = load(path).map_err(|e| e.to_string())?;
    let inspection =
        strata_core::inspect(bytes.as_bytes(), &WeldOptions::default(), &ValidateOptions::default())
            .map_err(|source| Error::Parse { path: path.to_path_buf(), source }.to_string())?;
    Ok((bytes, inspection))
}

pub(crate) fn load(path: &Path) -> Result<ModelBytes, Error> {
    if path.is_dir() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("is a directory, not a model file"),
        });
    }
    // SAFETY: `inspect` reads files the user named on the command line, as
    // ripgrep does: if another process truncates one while we parse it, the
    // map may fault. The user owns that race; services spool uploads to
    // their own directory instead.
    unsafe { ModelBytes::map(path) }
}

fn write_json(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

/// The human-readable report.
fn summary(name: &str, ins: &Inspection) -> String {
    let r = &ins.report;
    let kind = match ins.format {
        "obj" => "OBJ".to_string(),
        "3mf" => "3MF".to_string(),
        other => format!("{other} STL"),
    };
    let mut s = format!("{name}: {kind}, {} triangles, {} vertices\n", r.triangles, r.vertices);
    if let (Some(lo), Some(hi)) = (r.bbox_min, r.bbox_max) {
        s += &format!(
            "  size       {} x {} x {}   (from {} to {})\n",
            g(hi[0] - lo[0]),
            g(hi[1] - lo[1]),
            g(hi[2] - lo[2]),
            triple(lo),
            triple(hi)
        );
    }
    s += &format!("  area       {}\n  volume     {}\n", g64(r.area), g64(r.volume));
    let yes_no = |b: bool, yes: &str, no: &str| if b { yes.to_string() } else { no.to_string() };
    s += &format!(
        "  topology   {}, {}, {}; {} bod{}, Euler number {}\n",
        yes_no(r.watertight, "watertight", "not watertight"),
        yes_no(r.winding_consistent, "consistent winding", "inconsistent winding"),
        yes_no(r.is_volume, "a valid volume", "not a valid volume"),
        r.bodies,
        if r.bodies == 1 { "y" } else { "ies" },
        r.euler_number
    );
    let defects: Vec<String> = [
        (r.boundary_edges, "boundary edges"),
        (r.nonmanifold_edges, "non-manifold edges"),
        (r.misoriented_edges, "misoriented edges"),
        (r.degenerate_faces, "degenerate faces"),
        (r.duplicate_faces, "duplicate faces"),
        (r.normal_mismatches, "stored normals disagreeing with winding"),
        (r.nonfinite_facets, "non-finite facets dropped"),
        (r.self_intersections.unwrap_or(0), "self-intersecting face pairs"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    s += &format!(
        "  defects    {}\n",
        if defects.is_empty() { "none".to_string() } else { defects.join(", ") }
    );
    for w in &ins.warnings {
        s += &format!("  warning    {w}\n");
    }
    s
}

fn g(x: f32) -> String {
    format!("{}", (f64::from(x) * 1e6).round() / 1e6)
}

fn g64(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e9 || x.abs() < 1e-3) { format!("{x:.6e}") } else { format!("{:.6}", x) }
}

fn triple(v: [f32; 3]) -> String {
    format!("[{}, {}, {}]", g(v[0]), g(v[1]), g(v[2]))
}
