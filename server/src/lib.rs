//! # strata-server
//!
//! The warp/tokio HTTP service over the pipeline's store: partner sessions,
//! models (create, signed upload, background processing), print tokens,
//! printer streams and print status, the legacy `api3` calls and the
//! widget.
//!
//! - [`Server::start`] binds the listener itself (warp's `bind` panics when
//!   the port is taken) and serves every connection through hyper-util's
//!   builder with a timer and a header-read timeout: plain `warp::serve`
//!   has no timer, so a client that sends half a request would hold its
//!   connection forever.
//! - [`routes`] holds the warp filters, one module per audience
//!   (partners, printers, legacy, widget); [`api`] the JSON error
//!   envelope every route answers with.
//! - CPU work (parsing, slicing, rendering) runs on the pipeline's rayon
//!   pool, never on the async reactor; database calls are short and take
//!   one mutex (SQLite in WAL mode).
//!
//! It depends only on `strata-pipeline`, never on `strata-core` directly.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod callbacks;
mod jobs;
pub mod jwt;
pub mod limits;
pub mod observe;
pub mod provider_ref;
pub mod providers;
pub mod routes;
pub mod state;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod proptests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;

pub use strata_pipeline as pipeline;

/// Anything that stops the server from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address could not be bound (taken, not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] strata_pipeline::PipelineError),
    /// Other I/O (the data directory, the secret file).
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The worker pool could not start.
    #[error("cannot start worker threads: {0}")]
    Pool(String),
    /// The JWT keys could not be read or made.
    #[error("{0}")]
    Jwt(#[from] crate::jwt::JwtError),
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`127.0.0.1:8080` by default; port 0 picks one).
    pub listen: String,
    /// The data directory (blobs, metadata database, uploads, secret).
    pub data: PathBuf,
    /// The largest upload accepted, in bytes.
    pub upload_limit: u64,
    /// The URL partners and printers reach this server at (token links and
    /// upload URLs); by default `http://` plus the bound address.
    pub public_url: Option<String>,
    /// How long an upload URL stays valid.
    pub upload_url_ttl: Duration,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Threads for CPU work (processing uploads, rendering snapshots).
    pub workers: usize,
    /// Whether this process runs queued processing jobs (`serve
    /// --no-workers` leaves them to `strata worker` processes).
    pub run_jobs: bool,
    /// How long a claimed job stays its holder's without a heartbeat (a
    /// holder that died loses it then); heartbeats come five times a lease.
    pub job_lease: Duration,
    /// Where `secret.key` (signed URLs) and `jwt-keys.json` are read
    /// (default: the data directory). Servers behind one load balancer
    /// share one, so a URL or token one signs the others accept.
    pub secrets: Option<PathBuf>,
    /// The wait before the first callback retry; each later one doubles it.
    pub callback_retry_base: Duration,
    /// How long a callback is retried before it is given up.
    pub callback_give_up: Duration,
    /// Whether callbacks may go to loopback and private addresses (off by
    /// default: a callback URL must not reach into the server's network).
    pub allow_private_callbacks: bool,
    /// The ports callbacks and provider requests may go to (any port
    /// when private addresses are allowed).
    pub callback_ports: Vec<u16>,
    /// Memory for recently pulled chunks (0 turns the cache off).
    pub chunk_cache_bytes: u64,
    /// Whether the server applies the store's missing migrations at start
    /// (the default) or refuses to start until `strata migrate` ran.
    pub migrations: strata_pipeline::db::Migrations,
    /// Where the blobs are: the data directory, or an S3-compatible bucket.
    pub blobs: strata_pipeline::objstore::BlobLocation,
    /// Where the metadata is: `DATA/meta.db`, another SQLite file, or a
    /// PostgreSQL database shared by several servers and workers.
    pub database: strata_pipeline::db::DatabaseLocation,
    /// With blobs in a bucket: printers asking for a chunk are redirected
    /// (307) to a presigned URL valid this long, instead of the server
    /// streaming it. `None` streams.
    pub presign_chunks: Option<Duration>,
    /// How long an upload may send nothing before it is dropped (408).
    pub body_idle_timeout: Duration,
    /// The longest a small (JSON or form) request body may take whole.
    pub body_deadline: Duration,
    /// The longest an upload's body may take whole.
    pub upload_deadline: Duration,
    /// How long a body may start slowly before its rate counts.
    pub body_grace: Duration,
    /// The least average rate of a body after its grace, in bytes a second.
    pub body_min_rate: u64,
    /// Connections one client address may hold open at once; more are
    /// closed as soon as they are accepted.
    pub max_connections_per_ip: usize,
    /// Connections open at once over all clients; 0 sets it from the
    /// file-descriptor limit (raised to its hard maximum at start), leaving
    /// room for the store's files.
    pub max_connections: usize,
    /// How long the signed `content`, `snapshot` and `manifest` URLs of a
    /// model resource stay valid.
    pub capability_url_ttl: Duration,
    /// Whether anyone may create an account with `POST /users/` (off by
    /// default: accounts come from `strata admin create-partner`).
    pub allow_signup: bool,
    /// Accounts one client address may create per hour when sign-up is on.
    pub signups_per_hour: u32,
    /// Uploads one partner may have waiting to be processed; more are
    /// answered 503 with `Retry-After`.
    pub queue_per_partner: u64,
    /// Requests one partner (API key, token or session) may make per
    /// minute on partner routes (0: no limit).
    pub requests_per_key_per_minute: u32,
    /// Requests one client address may make per minute on partner routes
    /// (0: no limit).
    pub requests_per_ip_per_minute: u32,
    /// Embedding sessions one client address may open per model per hour
    /// (ShapeDiver's `session_rate_limit`; 0: no limit).
    pub sessions_per_model_per_ip_per_hour: u32,
    /// How long a provider has to finish a job before it is `timed_out`.
    pub provider_timeout: Duration,
    /// How long a provider's input and output URLs stay valid (at most
    /// until the job's deadline).
    pub provider_url_ttl: Duration,
    /// How long a resumable (tus) upload may take from its creation.
    pub tus_expiry: Duration,
    /// What processing one model may cost (layers, stored bytes, time,
    /// memory); past a limit the model fails with the limit's code.
    pub model_limits: strata_pipeline::process::ModelLimits,
}

impl Config {
    /// How a small (JSON or form) body must arrive.
    pub fn small_pace(&self) -> api::Pace {
        api::Pace {
            idle: self.body_idle_timeout,
            deadline: self.body_deadline,
            grace: self.body_grace,
            min_rate: self.body_min_rate,
        }
    }

    /// How an upload's body must arrive.
    pub fn upload_pace(&self) -> api::Pace {
        api::Pace { deadline: self.upload_deadline, ..self.small_pace() }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8080".into(),
            data: PathBuf::from("strata-data"),
            upload_limit: 512 * 1024 * 1024,
            public_url: None,
            upload_url_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(12 * 3600),
            header_read_timeout: Duration::from_secs(10),
            workers: std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            callback_retry_base: Duration::from_secs(10),
            callback_give_up: Duration::from_secs(24 * 3600),
            allow_private_callbacks: false,
            callback_ports: vec![80, 443],
            chunk_cache_bytes: 256 * 1024 * 1024,
            migrations: strata_pipeline::db::Migrations::Apply,
            blobs: strata_pipeline::objstore::BlobLocation::Local,
            database: strata_pipeline::db::DatabaseLocation::InDataDir,
            run_jobs: true,
            job_lease: Duration::from_secs(300),
            secrets: None,
            presign_chunks: None,
            body_idle_timeout: api::BODY_IDLE_TIMEOUT,
            body_deadline: Duration::from_secs(20),
            upload_deadline: Duration::from_secs(4 * 3600),
            body_grace: Duration::from_secs(10),
            body_min_rate: 1024,
            max_connections_per_ip: 256,
            max_connections: 0,
            capability_url_ttl: Duration::from_secs(3600),
            allow_signup: false,
            signups_per_hour: 5,
            queue_per_partner: 64,
            requests_per_key_per_minute: 6000,
            requests_per_ip_per_minute: 12000,
            sessions_per_model_per_ip_per_hour: 600,
            provider_timeout: Duration::from_secs(3600),
            provider_url_ttl: Duration::from_secs(15 * 60),
            model_limits: strata_pipeline::process::ModelLimits::default(),
            tus_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// Open connections per client address (reliability row L3).
#[derive(Debug, Clone)]
struct ConnectionCounts {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    cap: usize,
}

/// One open connection; leaving its count when dropped.
#[derive(Debug)]
struct ConnectionSlot {
    counts: ConnectionCounts,
    ip: std::net::IpAddr,
}

impl ConnectionCounts {
    fn new(cap: usize) -> ConnectionCounts {
        ConnectionCounts { counts: Arc::default(), cap: cap.max(1) }
    }

    fn enter(&self, ip: std::net::IpAddr) -> Option<ConnectionSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot { counts: self.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Raises the soft limit on open files to the hard one where allowed, and
/// answers the soft limit now in force.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some_and(|hard| limit.current.is_some_and(|soft| soft < hard)) {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    limit.current.unwrap_or(1 << 20)
}

/// Descriptors kept for the store, logs and outgoing requests when the
/// connection cap is set from the limit.
const RESERVED_FDS: u64 = 256;

/// The first bytes of an HTTP/2 connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, up to `deadline`, until a new connection has sent enough to be
/// served: any first byte of an HTTP/1 request (whose headers hyper's own
/// timeout then covers), or the whole HTTP/2 preface (which hyper's
/// protocol sniffing would wait for without a deadline). `false` for a
/// silent socket or a stalled preface.
async fn first_bytes(stream: &tokio::net::TcpStream, deadline: Duration) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let peeked = tokio::time::timeout_at(until, stream.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        // Not (yet) distinguishable from an HTTP/2 preface: wait for more.
        if buf[..n] != H2_PREFACE[..n] || n == H2_PREFACE.len() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts and logs a refused connection (at most one log line a second).
fn refused_connection(reason: &'static str) {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    metrics::counter!("strata_connections_refused_total", "reason" => reason).increment(1);
    let now = strata_pipeline::db::now_ms() as u64 / 1000;
    if LAST.swap(now, std::sync::atomic::Ordering::Relaxed) != now {
        tracing::warn!(reason, "connection refused");
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    callbacks: tokio::task::JoinHandle<()>,
    jobs: Option<tokio::task::JoinHandle<()>>,
    providers: tokio::task::JoinHandle<()>,
}

/// On a shared PostgreSQL database: the job runner and the callback
/// sender wake when any process queues work (`LISTEN`), not at their next
/// one-second poll (which stays, for notifications lost to a reconnect).
fn wake_on_notifications(state: &Arc<state::AppState>) -> Result<(), ServerError> {
    use strata_pipeline::db::sql;
    let strata_pipeline::db::DatabaseLocation::Postgres(url) = &state.config.database else {
        return Ok(());
    };
    let weak = Arc::downgrade(state);
    sql::listen(url, &[sql::JOBS_CHANNEL, sql::CALLBACKS_CHANNEL], move |channel| {
        let Some(state) = weak.upgrade() else { return };
        if channel == sql::JOBS_CHANNEL {
            state.jobs_due.notify_one();
        } else {
            state.callbacks_due.notify_one();
        }
    })
    .map_err(|e| ServerError::Store(e.into()))
}

impl Server {
    /// Binds `config.listen`, opens the store and starts serving on the
    /// current tokio runtime.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen.clone(), source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: config.listen.clone(), source })?;
        // The metrics recorder, before anything counts.
        observe::metrics();
        let header_timeout = config.header_read_timeout;
        let per_ip = ConnectionCounts::new(config.max_connections_per_ip);
        let fds = raise_fd_limit();
        let cap = match config.max_connections {
            0 => fds.saturating_sub(RESERVED_FDS).max(64) as usize,
            n => n,
        };
        tracing::info!(max_connections = cap, open_files = fds, "connection limits");
        let open = Arc::new(tokio::sync::Semaphore::new(cap));
        let state = Arc::new(state::AppState::open(config, addr)?);
        // Deliveries queued before a restart go out again from here.
        wake_on_notifications(&state)?;
        let callbacks = tokio::spawn(callbacks::run(state.clone()));
        // Acknowledged uploads a killed process left are processed from here.
        let jobs = state.config.run_jobs.then(|| tokio::spawn(jobs::run(state.clone())));
        // Provider requests queued before a restart go out from here.
        let providers = tokio::spawn(providers::run(state.clone()));
        let routes = routes::all(state);
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024)
                .max_headers(100);
            // HTTP/2: pings find dead peers, and one connection cannot
            // open streams or send header lists without bound.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10))
                .max_concurrent_streams(64)
                .max_header_list_size(64 * 1024)
                .max_pending_accept_reset_streams(20)
                .max_local_error_reset_streams(256);
            let builder = Arc::new(builder);
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(s) => s,
                        // Out of descriptors and the like: back off, go on.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = &mut rx => break,
                };
                // No Nagle: a response whose head and body leave in two
                // writes (streamed bodies) would otherwise wait for the
                // client's delayed ACK, 40 ms on Linux.
                let _ = stream.set_nodelay(true);
                // Over the per-address cap: closed at once, before any
                // byte is read, so one client cannot exhaust descriptors.
                let Some(slot) = per_ip.enter(peer.ip()) else {
                    drop(stream);
                    refused_connection("per_address");
                    continue;
                };
                // Over the global cap (below the descriptor limit): closed
                // at once, so the process keeps descriptors for its store.
                let Ok(open_slot) = open.clone().try_acquire_owned() else {
                    drop(stream);
                    refused_connection("global");
                    continue;
                };
                let service = api::with_request_id(peer, warp::service(routes.clone()));
                let builder = builder.clone();
                tokio::spawn(async move {
                    if first_bytes(&stream, header_timeout).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    } else {
                        metrics::counter!("strata_connections_refused_total", "reason" => "silent")
                            .increment(1);
                    }
                    drop((slot, open_slot));
                });
            }
        });
        Ok(Server { addr, shutdown: Some(tx), task, callbacks, jobs, providers })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        // An attempt cut off here is retried at the next start (its lease
        // runs out).
        self.callbacks.abort();
        // A job cut off here is run again at the next start (or by another
        // worker once its lease runs out).
        if let Some(jobs) = &self.jobs {
            jobs.abort();
        }
        // A request cut off here is sent again at the next start.
        self.providers.abort();
    }

    /// Runs as a worker (`strata worker`): no HTTP, only the shared job
    /// queue (processing uploads) and the callback sender, on the current
    /// tokio runtime, until `signal` completes. Jobs cut off then are run
    /// again once their leases run out. `ready` is called with the
    /// worker's id once the store is open and the runner about to start.
    pub async fn work_until(
        config: Config,
        ready: impl FnOnce(&str),
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        observe::metrics();
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let state = Arc::new(state::AppState::open(config, addr)?);
        tracing::info!(worker = %state.worker_id, "worker started");
        wake_on_notifications(&state)?;
        ready(&state.worker_id);
        let jobs = tokio::spawn(jobs::run(state.clone()));
        let callbacks = tokio::spawn(callbacks::run(state.clone()));
        signal.await;
        jobs.abort();
        callbacks.abort();
        Ok(())
    }

    /// Serves until `signal` completes.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.stop().await;
    }
}
