//! `strata slice IN OUTDIR` and `strata stream verify|info|cat OUTDIR`:
//! a stream directory is `manifest.json` plus the chunk files it names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use strata_core::RepairOptions;
use strata_core::slice::{Layer, NM_PER_UNIT, SliceOptions};
use strata_core::stream::{self, EncodeOptions, Limits, Manifest, StreamError};

use crate::files::write_dir_atomically;

/// The manifest's file name in a stream directory.
pub(crate) const MANIFEST: &str = "manifest.json";

#[derive(Debug, clap::Args)]
pub(crate) struct SliceArgs {
    /// The model: binary or ASCII STL, OBJ or 3MF.
    input: PathBuf,
    /// The stream directory to write (replaced atomically if it already
    /// holds a stream).
    output: PathBuf,
    /// Layer height in file units (mm).
    #[arg(long, default_value_t = 0.2, value_name = "H", value_parser = positive)]
    layer_height: f64,
    /// First layer height (default: the layer height).
    #[arg(long, value_name = "H", value_parser = positive)]
    first_layer: Option<f64>,
    /// Raw bytes per chunk to aim for.
    #[arg(long, default_value_t = stream::DEFAULT_CHUNK_TARGET, value_name = "BYTES")]
    chunk_size: usize,
    /// Repair the mesh before slicing (holes, flips, duplicates).
    #[arg(long)]
    repair: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Print how long each phase took (load, repair, slice, encode,
    /// write) on stderr.
    #[arg(long)]
    timings: bool,
}

pub(crate) fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a positive number".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum StreamCommand {
    /// Check every hash and decode every chunk; names the failing chunks.
    Verify {
        /// A stream directory written by `strata slice`.
        dir: PathBuf,
    },
    /// Print the manifest and per-layer area, polygon and hole counts.
    Info {
        /// A stream directory written by `strata slice`.
        dir: PathBuf,
        /// Print JSON: the manifest's fields plus a `layers` array.
        #[arg(long)]
        json: bool,
    },
    /// Print one layer's polygons (coordinates in file units).
    Cat {
        /// A stream directory written by `strata slice`.
        dir: PathBuf,
        /// The layer's index (0 is the bottom).
        #[arg(long)]
        layer: u64,
        /// Print JSON with exact integer coordinates (nanometres).
        #[arg(long)]
        json: bool,
    },
}

/// `strata slice` output with `--json`.
#[derive(Serialize)]
struct SliceSummary<'a> {
    file: String,
    output: String,
    model_sha256: &'a str,
    repaired: bool,
    layers: u32,
    chunks: usize,
    raw_bytes: u64,
    compressed_bytes: u64,
    layers_with_open_chains: usize,
    stream_sha256: &'a str,
}

pub(crate) fn slice(args: &SliceArgs) -> ExitCode {
    crate::exit_with(slice_inner(args))
}

fn slice_inner(args: &SliceArgs) -> Result<ExitCode, String> {
    let mut clock = Phases::new(args.timings);
    let name = args.input.display().to_string();
    let (bytes, inspection) = crate::inspect_file(&args.input)?;
    let sha256 = stream::sha256_hex(bytes.as_bytes());
    drop(bytes);
    clock.done("load (parse, weld, validate)");
    let mut mesh = inspection.mesh;
    let repaired = args.repair && !inspection.report.is_volume;
    if repaired {
        mesh =
            strata_core::repair::repair_validated(mesh, &inspection.report, &RepairOptions::default()).mesh;
    }
    let options = SliceOptions {
        layer_height: args.layer_height,
        first_layer: args.first_layer.unwrap_or(args.layer_height),
    };
    let mut times = strata_pipeline::process::StageTimes::default();
    let (layers, encoded) = strata_pipeline::process::stream_of(
        &mesh,
        &inspection.report,
        &sha256,
        &options,
        &EncodeOptions { chunk_target: args.chunk_size.max(1), ..EncodeOptions::default() },
        &mut times,
    )
    .map_err(|e| format!("{name}: {e}"))?;
    clock.report("slice", times.slice);
    clock.report("encode (chunks, zstd, SHA-256)", times.encode);
    clock.done_silently();
    let manifest_json = encoded.manifest.to_json();
    let files = encoded
        .manifest
        .chunks
        .iter()
        .zip(&encoded.chunks)
        .map(|(c, bytes)| (c.file.as_str(), bytes.as_slice()))
        .chain([(MANIFEST, manifest_json.as_slice())]);
    write_dir_atomically(&args.output, files, |d| d.join(MANIFEST).is_file())
        .map_err(|e| format!("{}: cannot write the stream: {e}", args.output.display()))?;
    clock.done("write (fsync, rename)");

    let m = &encoded.manifest;
    let open = layers.iter().filter(|l| l.open_chains > 0).count();
    let summary = SliceSummary {
        file: name.clone(),
        output: args.output.display().to_string(),
        model_sha256: &sha256,
        repaired,
        layers: m.layer_count,
        chunks: m.chunks.len(),
        raw_bytes: m.chunks.iter().map(|c| c.raw_bytes).sum(),
        compressed_bytes: m.chunks.iter().map(|c| c.bytes).sum(),
        layers_with_open_chains: open,
        stream_sha256: &m.stream_sha256,
    };
    let mut out = std::io::stdout().lock();
    let shown = if args.json {
        crate::write_json(&mut out, &summary)
    } else {
        let ratio = summary.compressed_bytes as f64 / summary.raw_bytes.max(1) as f64;
        writeln!(
            out,
            "{name}: {} layers ({} mm, first {} mm) in {} chunks, {} bytes ({} raw, ratio {ratio:.3}){}\n{}: written",
            summary.layers,
            options.layer_height,
            options.first_layer,
            summary.chunks,
            summary.compressed_bytes,
            summary.raw_bytes,
            if repaired { ", repaired first" } else { "" },
            summary.output
        )
    };
    if shown.is_err() {
        return Ok(ExitCode::FAILURE);
    }
    if open > 0 {
        eprintln!(
            "warning: {name}: {open} layers have contours that do not close (the mesh has holes){}",
            if args.repair { "" } else { "; --repair fills them before slicing" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(command: &StreamCommand) -> ExitCode {
    crate::exit_with(match command {
        StreamCommand::Verify { dir } => verify(dir),
        StreamCommand::Info { dir, json } => info(dir, *json),
        StreamCommand::Cat { dir, layer, json } => cat(dir, *layer, *json),
    })
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let limits = Limits::default();
    let size = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    if size > limits.max_manifest_bytes as u64 {
        return Err(format!("{}: {size} bytes; the limit is {}", path.display(), limits.max_manifest_bytes));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Manifest::from_json(&bytes, &limits).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads and decodes chunk `i`; the error names the chunk and its file.
fn read_chunk(dir: &Path, m: &Manifest, i: usize) -> Result<Vec<Layer>, String> {
    let info = &m.chunks[i];
    let path = dir.join(&info.file);
    let named = |e: &dyn std::fmt::Display| format!("chunk {i} ({}): {e}", path.display());
    // Refuse to read a file far longer than the manifest says before
    // reading it.
    let len = std::fs::metadata(&path).map_err(|e| named(&e))?.len();
    if len != info.bytes {
        return Err(named(&StreamError::ChunkLength { chunk: i, expected: info.bytes, actual: len }));
    }
    let bytes = std::fs::read(&path).map_err(|e| named(&e))?;
    stream::decode_chunk(m, i, &bytes, &Limits::default()).map_err(|e| named(&e))
}

fn verify(dir: &Path) -> Result<ExitCode, String> {
    let m = read_manifest(dir)?;
    let mut failed = 0;
    for i in 0..m.chunks.len() {
        if let Err(e) = read_chunk(dir, &m, i) {
            eprintln!("error: {}: {e}", dir.display());
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("error: {}: {failed} of {} chunks failed", dir.display(), m.chunks.len());
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{}: ok, {} layers in {} chunks, stream sha256 {}",
        dir.display(),
        m.layer_count,
        m.chunks.len(),
        m.stream_sha256
    );
    Ok(ExitCode::SUCCESS)
}

/// One layer in `strata stream info --json`.
#[derive(Serialize)]
struct LayerInfo {
    index: usize,
    z: f64,
    area: f64,
    polygons: usize,
    holes: usize,
    open_chains: u32,
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(flatten)]
    manifest: &'a Manifest,
    layers: Vec<LayerInfo>,
}

fn info(dir: &Path, json: bool) -> Result<ExitCode, String> {
    let m = read_manifest(dir)?;
    let mut layers = Vec::with_capacity(m.layer_count as usize);
    for i in 0..m.chunks.len() {
        for l in read_chunk(dir, &m, i)? {
            layers.push(LayerInfo {
                index: layers.len(),
                z: l.z,
                area: l.area(),
                polygons: l.polygons.len(),
                holes: l.holes(),
                open_chains: l.open_chains,
            });
        }
    }
    let mut out = std::io::stdout().lock();
    let shown = if json {
        let info = Info { manifest: &m, layers };
        serde_json::to_writer_pretty(&mut out, &info)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        let raw: u64 = m.chunks.iter().map(|c| c.raw_bytes).sum();
        let packed: u64 = m.chunks.iter().map(|c| c.bytes).sum();
        let volume: f64 = layers
            .iter()
            .enumerate()
            .map(|(i, l)| l.area * if i == 0 { m.slicing.first_layer } else { m.slicing.layer_height })
            .sum();
        let mut s = format!(
            "{}: {} v{}\n  model sha256   {}\n  layers         {} ({} mm, first {} mm)\n",
            dir.display(),
            m.format,
            m.version,
            m.model_sha256,
            m.layer_count,
            m.slicing.layer_height,
            m.slicing.first_layer
        );
        if let (Some(first), Some(last)) = (m.layer_z.first(), m.layer_z.last()) {
            s += &format!("  z              {first} to {last}\n");
        }
        s += &format!(
            "  chunks         {} ({packed} bytes, {raw} raw)\n  stacked volume {volume:.6}\n  polygons       {} ({} holes)\n  stream sha256  {}\n",
            m.chunks.len(),
            layers.iter().map(|l| l.polygons).sum::<usize>(),
            layers.iter().map(|l| l.holes).sum::<usize>(),
            m.stream_sha256
        );
        let open = layers.iter().filter(|l| l.open_chains > 0).count();
        if open > 0 {
            s += &format!("  open contours  in {open} layers\n");
        }
        out.write_all(s.as_bytes())
    };
    Ok(if shown.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[derive(Serialize)]
struct PolygonJson<'a> {
    hole: bool,
    area: f64,
    points_nm: &'a [[i64; 2]],
}

#[derive(Serialize)]
struct LayerJson<'a> {
    index: u64,
    z: f64,
    area: f64,
    open_chains: u32,
    polygons: Vec<PolygonJson<'a>>,
}

fn cat(dir: &Path, layer: u64, json: bool) -> Result<ExitCode, String> {
    let m = read_manifest(dir)?;
    let chunk = m.chunk_of_layer(layer).map_err(|e| format!("{}: {e}", dir.display()))?;
    let layers = read_chunk(dir, &m, chunk)?;
    let offset = (layer - u64::from(m.chunks[chunk].first_layer)) as usize;
    let l = &layers[offset];
    let area = |p: &strata_core::slice::Polygon| p.area2() as f64 / 2.0 / (NM_PER_UNIT * NM_PER_UNIT);
    let mut out = std::io::stdout().lock();
    let shown = if json {
        let body = LayerJson {
            index: layer,
            z: l.z,
            area: l.area(),
            open_chains: l.open_chains,
            polygons: l
                .polygons
                .iter()
                .map(|p| PolygonJson { hole: p.is_hole(), area: area(p), points_nm: &p.points })
                .collect(),
        };
        crate::write_json(&mut out, &body)
    } else {
        let mut s = format!(
            "layer {layer} at z {}: {} polygons ({} holes), area {:.6}, {} open contours\n",
            l.z,
            l.polygons.len(),
            l.holes(),
            l.area(),
            l.open_chains
        );
        for (i, p) in l.polygons.iter().enumerate() {
            s += &format!(
                "polygon {i}: {}, {} points, area {:.6}\n",
                if p.is_hole() { "hole" } else { "outer" },
                p.points.len(),
                area(p).abs()
            );
            for q in &p.points {
                s += &format!("  {:.6} {:.6}\n", q[0] as f64 / NM_PER_UNIT, q[1] as f64 / NM_PER_UNIT);
            }
        }
        out.write_all(s.as_bytes())
    };
    Ok(if shown.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Phase timings for `--timings`.
struct Phases {
    on: bool,
    last: std::time::Instant,
}

impl Phases {
    fn new(on: bool) -> Phases {
        Phases { on, last: std::time::Instant::now() }
    }

    /// A phase timed elsewhere.
    fn report(&self, phase: &str, seconds: f64) {
        if self.on {
            eprintln!("timing: {phase}: {:.1} ms", seconds * 1e3);
        }
    }

    /// Starts the next phase's clock without printing.
    fn done_silently(&mut self) {
        self.last = std::time::Instant::now();
    }

    fn done(&mut self, phase: &str) {
        if self.on {
            let now = std::time::Instant::now();
            eprintln!("timing: {phase}: {:.1} ms", (now - self.last).as_secs_f64() * 1e3);
            self.last = now;
        }
    }
}
