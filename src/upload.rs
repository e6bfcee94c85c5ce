//! `strata upload`: a partner's catalog into a remote Strata, over the same
//! HTTP API partners' own clients use.
//!
//! It walks the catalog as `strata ingest` does, hashes every file, asks
//! the server whether it already has those bytes (`GET /model/?sha256=`),
//! creates and uploads the rest with bounded concurrency (waiting out a
//! full queue's 503 and `Retry-After`), follows each model to `processed`
//! or `error`, and writes one JSON report of every file's outcome. Run
//! again after an interruption, it skips what the server has and follows
//! what is still being processed, so it resumes where it stopped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, clap::Args)]
pub(crate) struct UploadArgs {
    /// Files or directories (walked for .stl, .obj and .3mf).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The server, e.g. `https://print.example.com`.
    #[arg(long)]
    server: String,
    /// The partner's API key (what `strata admin create-partner` prints).
    #[arg(long, env = "STRATA_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Write the JSON report of every file here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Seconds to wait for a model to be processed before giving up on it.
    #[arg(long, default_value_t = 3600)]
    wait_secs: u64,
}

/// One file's outcome.
#[derive(Debug, Clone, Serialize)]
struct FileReport {
    file: String,
    sha256: Option<String>,
    /// `processed`, `error` (the server could not make a printable model of
    /// it), `failed` (it could not be uploaded or followed).
    status: String,
    /// Whether this run uploaded it (false: the server had it).
    uploaded: bool,
    model: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    total: usize,
    uploaded: usize,
    already_there: usize,
    processed: usize,
    error: usize,
    failed: usize,
    bytes_uploaded: u64,
    wall_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    summary: Summary,
    files: Vec<FileReport>,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    wait: Duration,
}

pub(crate) fn run(args: &UploadArgs) -> ExitCode {
    let base = args.server.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        eprintln!("error: --server {base:?} is not an http(s) URL");
        return ExitCode::FAILURE;
    }
    let inputs = match strata_server::pipeline::ingest::collect_inputs(&args.paths) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let http = match reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client =
        Arc::new(Client { http, base, key: args.api_key.clone(), wait: Duration::from_secs(args.wait_secs) });
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(inputs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} distinct files  {per_sec}  {msg}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (files, bytes) = rt
        .block_on(async {
            // A first call says at once whether the server and key work.
            client.find("0".repeat(64).as_str()).await?;
            let slots = Arc::new(tokio::sync::Semaphore::new(args.jobs.max(1)));
            // Hash every file first (bounded), so that copies of the same bytes
            // in the catalog are uploaded once and share the outcome.
            let mut hashing = Vec::new();
            for path in &inputs {
                let (path, slots) = (path.clone(), slots.clone());
                hashing.push(tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let file = path.clone();
                    let sha = tokio::task::spawn_blocking(move || {
                        std::fs::read(&file).map(|b| strata_server::pipeline::core::stream::sha256_hex(&b))
                    })
                    .await;
                    (path, sha)
                }));
            }
            let mut hashed = Vec::new();
            for h in hashing {
                if let Ok((path, sha)) = h.await {
                    hashed.push((
                        path,
                        sha.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())),
                    ));
                }
            }
            let mut first_of: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
            for (path, sha) in &hashed {
                if let Ok(sha) = sha {
                    first_of.entry(sha.clone()).or_insert_with(|| path.clone());
                }
            }
            bar.set_length(first_of.len() as u64);
            let mut tasks = Vec::new();
            for (sha, path) in &first_of {
                let (client, slots, bar) = (client.clone(), slots.clone(), bar.clone());
                let (sha, path) = (sha.clone(), path.clone());
                tasks.push(tokio::spawn(async move {
                    let Ok(slot) = slots.acquire_owned().await else {
                        return (sha.clone(), failed(&path, Some(sha), "cancelled"), 0);
                    };
                    // The slot bounds the uploads in flight; following a
                    // model to its end holds none, so the next upload
                    // starts while the server processes this one.
                    let (report, sent) = one(&client, &path, &sha, slot).await;
                    bar.inc(1);
                    bar.set_message(report.status.clone());
                    (sha, report, sent)
                }));
            }
            let mut outcomes: std::collections::HashMap<String, FileReport> =
                std::collections::HashMap::new();
            let mut bytes = 0;
            for t in tasks {
                if let Ok((sha, report, sent)) = t.await {
                    bytes += sent;
                    outcomes.insert(sha, report);
                }
            }
            let mut files = Vec::new();
            for (path, sha) in hashed {
                let file = path.display().to_string();
                files.push(match sha {
                    Err(e) => failed(&path, None, &e),
                    Ok(sha) => match outcomes.get(&sha) {
                        // A copy shares the first file's model; only the first was sent.
                        Some(o) if first_of.get(&sha) == Some(&path) => o.clone(),
                        Some(o) => FileReport { file, uploaded: false, ..o.clone() },
                        None => failed(&path, Some(sha), "not uploaded"),
                    },
                });
            }
            Ok((files, bytes))
        })
        .unwrap_or_else(|e: String| {
            bar.abandon();
            eprintln!("error: {e}");
            std::process::exit(1);
        });
    bar.finish_and_clear();
    let mut summary = Summary { total: files.len(), bytes_uploaded: bytes, ..Summary::default() };
    for f in &files {
        if f.uploaded {
            summary.uploaded += 1;
        } else if f.model.is_some() {
            summary.already_there += 1;
        }
        match f.status.as_str() {
            "processed" => summary.processed += 1,
            "error" => summary.error += 1,
            _ => summary.failed += 1,
        }
    }
    summary.wall_seconds = started.elapsed().as_secs_f64();
    println!(
        "{} files: {} uploaded, {} already there; {} processed, {} error, {} failed ({:.1} files/s, {:.1} MB/s)",
        summary.total,
        summary.uploaded,
        summary.already_there,
        summary.processed,
        summary.error,
        summary.failed,
        summary.total as f64 / summary.wall_seconds.max(1e-9),
        summary.bytes_uploaded as f64 / 1e6 / summary.wall_seconds.max(1e-9),
    );
    let failed_any = summary.failed > 0;
    let report = Report { summary, files };
    if let Some(path) = &args.report {
        let bytes = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(e) = crate::files::write_atomically(path, &bytes) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if failed_any { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn failed(path: &Path, sha256: Option<String>, error: &str) -> FileReport {
    FileReport {
        file: path.display().to_string(),
        sha256,
        status: "failed".into(),
        uploaded: false,
        model: None,
        error: Some(error.to_string()),
    }
}

/// One distinct file (bytes hashing to `sha`): find or upload, follow to
/// its end; and the bytes sent.
async fn one(
    client: &Client,
    path: &Path,
    sha: &str,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> (FileReport, u64) {
    let sha = sha.to_string();
    let found = match client.find(&sha).await {
        Ok(found) => found,
        Err(e) => return (failed(path, Some(sha), &e), 0),
    };
    let (uri, uploaded, sent) = match found {
        Some(uri) => (uri, false, 0),
        None => {
            let bytes = match tokio::fs::read(path).await {
                Ok(b) if strata_server::pipeline::core::stream::sha256_hex(&b) == sha => b,
                Ok(_) => return (failed(path, Some(sha), "the file changed while it was uploaded"), 0),
                Err(e) => return (failed(path, Some(sha), &e.to_string()), 0),
            };
            match client.upload(path, &bytes, &sha).await {
                Ok(uri) => (uri, true, bytes.len() as u64),
                Err(e) => return (failed(path, Some(sha), &e), 0),
            }
        }
    };
    drop(slot);
    match client.follow(&uri).await {
        Ok((status, error)) => (
            FileReport {
                file: path.display().to_string(),
                sha256: Some(sha),
                status,
                uploaded,
                model: Some(uri),
                error,
            },
            sent,
        ),
        Err(e) => (FileReport { model: Some(uri), uploaded, ..failed(path, Some(sha), &e) }, sent),
    }
}

impl Client {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url).header("x-api-key", &self.key).timeout(Duration::from_secs(60))
    }

    /// The URI of this partner's newest model with these bytes, if any
    /// (one that failed to upload is not counted).
    async fn find(&self, sha: &str) -> Result<Option<String>, String> {
        let url = format!("{}/model/?sha256={sha}&sort=-created&per_page=5", self.base);
        let r = self.get(&url).send().await.map_err(|e| format!("{}: {e}", self.base))?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("the server answered {status}: {}", body["message"].as_str().unwrap_or("")));
        }
        Ok(body["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["status"] != "not-uploaded")
            .and_then(|m| m["uri"].as_str())
            .map(str::to_string))
    }

    /// Creates a model named after the file and uploads its bytes, waiting
    /// out a full queue; the model's URI.
    async fn upload(&self, path: &Path, bytes: &[u8], sha: &str) -> Result<String, String> {
        let name =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let r = self
            .http
            .post(format!("{}/model/", self.base))
            .header("x-api-key", &self.key)
            .json(&serde_json::json!({"name": name}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != reqwest::StatusCode::CREATED {
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            return Err(format!("creating the model: {status}: {}", body["message"].as_str().unwrap_or("")));
        }
        let uri = header(&r, "location")?;
        let upload = header(&r, "x-upload-location")?;
        // The same model (and its upload URL) while the queue is full.
        for attempt in 0..600u32 {
            let r = self
                .http
                .put(&upload)
                .header("content-type", "application/octet-stream")
                .header("x-content-sha256", sha)
                .body(bytes.to_vec())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match r.status() {
                reqwest::StatusCode::NO_CONTENT | reqwest::StatusCode::OK => return Ok(uri),
                reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1)
                        .clamp(1, 60);
                    let jitter = Duration::from_millis(u64::from(attempt % 7) * 50);
                    tokio::time::sleep(Duration::from_secs(wait) + jitter).await;
                }
                status => {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    return Err(format!("uploading: {status}: {}", body["message"].as_str().unwrap_or("")));
                }
            }
        }
        Err("the server's queue stayed full; run again later".into())
    }

    /// Polls a model until it is `processed` or `error`.
    async fn follow(&self, uri: &str) -> Result<(String, Option<String>), String> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let r = self.get(uri).send().await.map_err(|e| e.to_string())?;
            let m: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            match m["status"].as_str() {
                Some("processed") => return Ok(("processed".into(), None)),
                Some("error") => {
                    let e = &m["error"];
                    let message = format!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("error"),
                        e["message"].as_str().unwrap_or("")
                    );
                    return Ok(("error".into(), Some(message)));
                }
                Some(_) => {}
                None => return Err(format!("{uri}: {}", m["message"].as_str().unwrap_or("no status"))),
            }
            if started.elapsed() > self.wait {
                return Err(format!("still processing after {} s", self.wait.as_secs()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

fn header(r: &reqwest::Response, name: &str) -> Result<String, String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| format!("the server sent no {name} header"))
}
