//! `strata printer`: the printer side of a print token. It pulls the
//! manifest and the chunks, checks every hash before using a byte, decodes
//! the layers and "prints" them (it has no hardware: printing a layer is
//! adding up its area), reporting its progress to the server as a real
//! printer would.
//!
//! The output directory is a stream directory (`manifest.json` and chunk
//! files, readable by `strata stream`) plus `progress.json`, so a printer
//! killed at any moment starts again where it stopped: verified chunks are
//! kept, a half-downloaded chunk (`.part`) continues with a `Range`
//! request, and layers already printed are not printed again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use strata_core::stream::{self, Limits, Manifest};

#[derive(Debug, clap::Args)]
pub(crate) struct PrinterArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    server: String,
    /// The print token.
    #[arg(long)]
    token: String,
    /// Where the stream and the progress are kept (default:
    /// `print-<first 12 characters of the token>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Report the percentage every N layers (the last layer is always
    /// reported).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    report_every: u32,
    /// Printer model sent with the status.
    #[arg(long, default_value = concat!("strata-printer/", env!("CARGO_PKG_VERSION")))]
    printer_model: String,
    /// Print the final summary as JSON.
    #[arg(long)]
    json: bool,
    /// Wait this long per layer (tests use it to interrupt a print).
    #[arg(long, default_value_t = 0, hide = true)]
    layer_delay_ms: u64,
}

/// What survives a restart besides the verified chunk files.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    stream_sha256: String,
    layers_printed: u32,
    /// Net area summed over the printed layers (file units²).
    area_sum: f64,
    /// Seconds spent printing in earlier runs.
    seconds: f64,
}

/// The end of a print, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Summary {
    token: String,
    status: String,
    layers: u32,
    chunks: usize,
    /// Chunk bytes fetched by this run (resumed chunks count only the rest).
    bytes_downloaded: u64,
    /// Chunks already on disk and verified.
    chunks_reused: usize,
    /// Chunks continued from a partial download.
    chunks_resumed: usize,
    /// Layers printed by earlier, interrupted runs.
    layers_resumed: u32,
    /// Sum of layer area times layer thickness: the printed volume.
    volume: f64,
    out: PathBuf,
}

/// A failure, and whether the server should hear that the print failed
/// (a bad stream) or not (the network; the next run resumes).
struct Failure {
    message: String,
    report: bool,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure { message: e.to_string(), report: false }
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure { message: message.into(), report: false })
}

pub(crate) fn run(args: &PrinterArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let printer = match Printer::new(args) {
        Ok(p) => p,
        Err(f) => {
            eprintln!("error: {}", f.message);
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match printer.print().await {
            Ok(summary) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
                } else {
                    println!(
                        "{}: {} layers from {} chunks ({} reused, {} resumed, {} bytes fetched); volume {:.3}",
                        summary.status,
                        summary.layers,
                        summary.chunks,
                        summary.chunks_reused,
                        summary.chunks_resumed,
                        summary.bytes_downloaded,
                        summary.volume
                    );
                }
                ExitCode::SUCCESS
            }
            Err(f) => {
                if f.report {
                    let body = serde_json::json!({
                        "printing_job_status": "FAILURE",
                        "message": f.message,
                        "printer_model": printer.model,
                    });
                    if let Err(e) = printer.post_status(&body).await {
                        eprintln!("warning: could not report the failure: {}", e.message);
                    }
                }
                eprintln!("error: token {}: {}", printer.token, f.message);
                ExitCode::FAILURE
            }
        }
    })
}

struct Printer {
    http: reqwest::Client,
    base: String,
    token: String,
    out: PathBuf,
    report_every: u32,
    model: String,
    layer_delay: Duration,
}

impl Printer {
    fn new(args: &PrinterArgs) -> Result<Printer, Failure> {
        let base = args.server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return fail(format!("--server {base:?} is not an http(s) URL"));
        }
        // Tokens are URL path segments; refuse anything that would change
        // the path rather than percent-encode a typo into a 404.
        if args.token.is_empty()
            || !args.token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return fail(format!("--token {:?} is not a token (letters, digits, - and _)", args.token));
        }
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("print-{}", &args.token[..args.token.len().min(12)])));
        // This printer's id, kept in the output directory: a restart resumes
        // the same print (the server lets it pull again without using up
        // the token), while another printer is told apart.
        std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let id_path = out.join("printer-id");
        let id = match std::fs::read_to_string(&id_path) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let id = format!("strata-printer-{}", strata_server::auth::random_hex(8));
                write_atomic(&id_path, id.as_bytes())?;
                id
            }
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-printer-id",
            reqwest::header::HeaderValue::from_str(&id).map_err(|e| format!("{}: {e}", id_path.display()))?,
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .default_headers(headers)
            .build()?;
        Ok(Printer {
            http,
            base,
            token: args.token.clone(),
            out,
            report_every: args.report_every,
            model: args.printer_model.clone(),
            layer_delay: Duration::from_millis(args.layer_delay_ms),
        })
    }

    async fn print(&self) -> Result<Summary, Failure> {
        let started = Instant::now();
        std::fs::create_dir_all(&self.out)
            .map_err(|e| format!("cannot create {}: {e}", self.out.display()))?;
        let status = self.current_status().await?;
        // A print that already ended needs no stream: what this printer
        // kept of it tells the end (the server refuses the stream to a
        // token whose prints are used up).
        let ended = status.as_deref().is_some_and(|s| !matches!(s, "WARMING_UP" | "PRINTING"));
        let kept = std::fs::read(self.out.join("manifest.json"))
            .ok()
            .and_then(|bytes| Manifest::from_json(&bytes, &Limits::default()).ok());
        let manifest = match kept {
            Some(m) if ended => m,
            _ => self.manifest().await?,
        };
        let mut progress = self.progress(&manifest)?;
        let layers_resumed = progress.layers_printed;
        let mut summary = Summary {
            token: self.token.clone(),
            status: String::new(),
            layers: manifest.layer_count,
            chunks: manifest.chunks.len(),
            bytes_downloaded: 0,
            chunks_reused: 0,
            chunks_resumed: 0,
            layers_resumed,
            volume: 0.0,
            out: self.out.clone(),
        };
        match status.as_deref() {
            None => {
                self.post_status(&serde_json::json!({
                    "printing_job_status": "WARMING_UP",
                    "printing_percentage": 0,
                    "printer_model": self.model,
                }))
                .await?;
            }
            Some("WARMING_UP" | "PRINTING") => {}
            Some(done) => {
                // Killed after reporting the end: nothing left to do but say so.
                summary.status = done.to_string();
                summary.volume = progress.area_sum * manifest.slicing.layer_height;
                return Ok(summary);
            }
        }
        let limits = Limits::default();
        let mut since_report = 0u32;
        for (i, info) in manifest.chunks.iter().enumerate() {
            if info.last_layer < progress.layers_printed {
                continue;
            }
            let bytes = self.chunk(&manifest, i, &mut summary).await?;
            let layers = stream::decode_chunk(&manifest, i, &bytes, &limits)
                .map_err(|e| Failure { message: format!("chunk {i}: {e}"), report: true })?;
            for (offset, layer) in layers.iter().enumerate() {
                let n = info.first_layer + offset as u32;
                if n < progress.layers_printed {
                    continue;
                }
                if !self.layer_delay.is_zero() {
                    tokio::time::sleep(self.layer_delay).await;
                }
                progress.area_sum += layer.area();
                progress.layers_printed = n + 1;
                since_report += 1;
                if since_report >= self.report_every || progress.layers_printed == manifest.layer_count {
                    since_report = 0;
                    let done = progress.layers_printed as f64 / manifest.layer_count as f64;
                    // The pace of this run only: earlier runs' time was spent on
                    // layers not counted here.
                    let per_layer = started.elapsed().as_secs_f64()
                        / f64::from(progress.layers_printed - layers_resumed).max(1.0);
                    let left = f64::from(manifest.layer_count - progress.layers_printed) * per_layer / 60.0;
                    self.post_status(&serde_json::json!({
                        "printing_job_status": "PRINTING",
                        "printing_percentage": (done * 1000.0).round() / 10.0,
                        "minutes_left": (left * 10.0).round() / 10.0,
                        "printer_model": self.model,
                    }))
                    .await?;
                    self.save_progress(&progress, started)?;
                }
            }
        }
        self.save_progress(&progress, started)?;
        let total_minutes = (progress.seconds + started.elapsed().as_secs_f64()) / 60.0;
        let total = (total_minutes * 100.0).round() / 100.0;
        if manifest.layer_count == 0 {
            // An empty model: the machine warms up and is done.
            self.post_status(
                &serde_json::json!({"printing_job_status": "PRINTING", "printing_percentage": 100}),
            )
            .await?;
        }
        self.post_status(&serde_json::json!({
            "printing_job_status": "SUCCESS",
            "printing_percentage": 100,
            "minutes_left": 0,
            "total_time": total,
            "printer_model": self.model,
            "message": format!("{} layers printed", manifest.layer_count),
        }))
        .await?;
        summary.status = "SUCCESS".to_string();
        summary.volume = progress.area_sum * manifest.slicing.layer_height;
        Ok(summary)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Reads the token's status from the public print view.
    async fn current_status(&self) -> Result<Option<String>, Failure> {
        let r = self.http.get(self.url(&format!("prints/{}", self.token))).send().await?;
        let r = check(r, "read the print status").await?;
        let v: serde_json::Value = r.json().await?;
        Ok(v["printing_job_status"].as_str().map(str::to_string))
    }

    async fn post_status(&self, body: &serde_json::Value) -> Result<(), Failure> {
        let r = self.http.post(self.url(&format!("prints/{}/status", self.token))).json(body).send().await?;
        check(r, "report the status").await?;
        Ok(())
    }

    /// Fetches and checks the manifest, and makes sure the output directory
    /// holds this stream (or nothing yet).
    async fn manifest(&self) -> Result<Manifest, Failure> {
        let r = self.http.get(self.url(&format!("streams/{}/manifest", self.token))).send().await?;
        let bytes = check(r, "fetch the manifest").await?.bytes().await?;
        let manifest = Manifest::from_json(&bytes, &Limits::default())
            .map_err(|e| Failure { message: format!("the server's manifest: {e}"), report: true })?;
        let path = self.out.join("manifest.json");
        match std::fs::read(&path) {
            Ok(old) => {
                let old = Manifest::from_json(&old, &Limits::default())
                    .map_err(|e| format!("{}: {e}; remove it or choose another --out", path.display()))?;
                if old.stream_sha256 != manifest.stream_sha256 {
                    return fail(format!(
                        "{} holds another stream ({}); choose another --out",
                        self.out.display(),
                        old.stream_sha256
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&path, &manifest.to_json())?;
            }
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
        Ok(manifest)
    }

    fn progress(&self, manifest: &Manifest) -> Result<Progress, Failure> {
        let path = self.out.join("progress.json");
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Progress>(&bytes) {
                Ok(p)
                    if p.stream_sha256 == manifest.stream_sha256
                        && p.layers_printed <= manifest.layer_count =>
                {
                    Ok(p)
                }
                // A progress file from another stream or a damaged one:
                // printing again from the first layer is the safe choice.
                _ => Ok(Progress { stream_sha256: manifest.stream_sha256.clone(), ..Progress::default() }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Progress { stream_sha256: manifest.stream_sha256.clone(), ..Progress::default() })
            }
            Err(e) => fail(format!("{}: {e}", path.display())),
        }
    }

    fn save_progress(&self, p: &Progress, started: Instant) -> Result<(), Failure> {
        let mut p = Progress { stream_sha256: p.stream_sha256.clone(), ..*p };
        p.seconds += started.elapsed().as_secs_f64();
        let bytes = serde_json::to_vec(&p)?;
        write_atomic(&self.out.join("progress.json"), &bytes)?;
        Ok(())
    }

    /// Chunk `i`'s verified bytes: from disk when a verified copy is there,
    /// else downloaded (continuing a `.part` file) and verified.
    async fn chunk(&self, manifest: &Manifest, i: usize, summary: &mut Summary) -> Result<Vec<u8>, Failure> {
        let info = &manifest.chunks[i];
        let path = self.out.join(&info.file);
        if let Ok(bytes) = std::fs::read(&path) {
            if stream::sha256_hex(&bytes) == info.sha256 {
                summary.chunks_reused += 1;
                return Ok(bytes);
            }
            // A damaged copy is fetched again, never used.
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let part = self.out.join(format!("{}.part", info.file));
        // Two tries: the second starts from byte 0, in case the partial
        // file was not a prefix of this chunk.
        for attempt in 0..2 {
            let have = match std::fs::metadata(&part) {
                Ok(m) if attempt == 0 && m.len() < info.bytes => m.len(),
                Ok(_) => {
                    std::fs::remove_file(&part).map_err(|e| format!("{}: {e}", part.display()))?;
                    0
                }
                Err(_) => 0,
            };
            let mut req = self.http.get(self.url(&format!("streams/{}/chunks/{i}", self.token)));
            if have > 0 {
                req = req
                    .header("range", format!("bytes={have}-"))
                    .header("if-range", format!("\"{}\"", info.sha256));
            }
            let mut r = req.send().await?;
            let append = match r.status() {
                StatusCode::PARTIAL_CONTENT if have > 0 => {
                    summary.chunks_resumed += 1;
                    true
                }
                StatusCode::OK => false,
                _ => {
                    check(r, &format!("fetch chunk {i}")).await?;
                    return fail(format!("chunk {i}: unexpected answer"));
                }
            };
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(&part)
                .map_err(|e| format!("{}: {e}", part.display()))?;
            // The chunk's bytes so far: the partial file's, then what
            // arrives (kept to verify and return, not read back).
            let mut bytes = if append {
                std::fs::read(&part).map_err(|e| format!("{}: {e}", part.display()))?
            } else {
                Vec::with_capacity(info.bytes.min(64 << 20) as usize)
            };
            while let Some(piece) = r.chunk().await? {
                if bytes.len() as u64 + piece.len() as u64 > info.bytes {
                    break;
                }
                file.write_all(&piece).map_err(|e| format!("{}: {e}", part.display()))?;
                bytes.extend_from_slice(&piece);
                summary.bytes_downloaded += piece.len() as u64;
            }
            file.sync_all().map_err(|e| format!("{}: {e}", part.display()))?;
            drop(file);
            if stream::sha256_hex(&bytes) == info.sha256 {
                std::fs::rename(&part, &path).map_err(|e| format!("{}: {e}", path.display()))?;
                return Ok(bytes);
            }
            std::fs::remove_file(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        }
        Err(Failure {
            message: format!(
                "chunk {i}: the server's bytes do not match the manifest's SHA-256 {}",
                info.sha256
            ),
            report: true,
        })
    }
}

/// Passes a success through; turns anything else into the server's own
/// error message.
async fn check(r: reqwest::Response, what: &str) -> Result<reqwest::Response, Failure> {
    let status = r.status();
    if status.is_success() {
        return Ok(r);
    }
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let reason = body["error"]["message"].as_str().unwrap_or("no details");
    let hint = if status == StatusCode::NOT_FOUND { " (unknown, revoked or expired token?)" } else { "" };
    fail(format!("cannot {what}: HTTP {status}: {reason}{hint}"))
}

/// Writes `bytes` under `path` so a reader sees the old file or the new
/// one, never half of it (the CLI's one atomic write: temp, fsync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    crate::files::write_atomically(path, bytes).map_err(|e| format!("{}: {e}", path.display()).into())
}
