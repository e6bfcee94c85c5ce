//! `strata serve` and `strata admin create-partner`: the HTTP server over
//! the store, and the one-time set-up of a partner account.

use std::path::PathBuf;
use std::process::ExitCode;

use strata_server::{Config, Server};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The data directory (blobs and the metadata database).
    #[arg(long, env = "STRATA_DATA", default_value = crate::ingest::DEFAULT_DATA)]
    data: PathBuf,
    /// The largest upload accepted, in MiB.
    #[arg(long, default_value_t = 512)]
    upload_limit_mib: u64,
    /// Memory for recently pulled chunks, in MiB (0 reads every chunk
    /// from the blob store).
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    chunk_cache_mib: u64,
    /// The URL clients reach this server at (for links), e.g. behind a
    /// TLS proxy: `https://print.example.com`.
    #[arg(long)]
    public_url: Option<String>,
    /// Let callbacks reach loopback and private addresses (for local
    /// set-ups; off by default so a callback URL cannot probe the
    /// server's own network).
    #[arg(long)]
    allow_private_callbacks: bool,
    /// Refuse to start when the store's database lacks migrations this
    /// build has (run `strata migrate` first), instead of applying them:
    /// for deployments where schema changes are an operator's step.
    #[arg(long)]
    no_migrate: bool,
    /// Where the metadata is: `sqlite://PATH` or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (default: `DATA/meta.db`).
    #[arg(long, env = "STRATA_DATABASE", value_name = "URL", value_parser = strata_pipeline::db::DatabaseLocation::parse)]
    database: Option<strata_pipeline::db::DatabaseLocation>,
    /// Where blobs are stored: `local` (the data directory) or
    /// `s3://BUCKET[/PREFIX]`, with credentials and the endpoint from the
    /// usual AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`).
    #[arg(long, default_value = "local", value_parser = strata_pipeline::objstore::BlobLocation::parse)]
    blobs: strata_pipeline::objstore::BlobLocation,
    /// With blobs in a bucket, redirect printers' chunk requests (307) to
    /// presigned URLs valid this many seconds instead of streaming the
    /// chunks through the server; 0 streams.
    #[arg(long, default_value_t = 0, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=604_800))]
    presign_chunks_secs: u64,
    /// The ports callbacks and provider requests may go to on public
    /// hosts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "80,443")]
    callback_ports: Vec<u16>,
    /// The wait before the first callback retry, in ms (doubles each time).
    #[arg(long, default_value_t = 10_000, hide = true)]
    callback_retry_base_ms: u64,
    /// How long callbacks are retried, in seconds.
    #[arg(long, default_value_t = 24 * 3600, hide = true)]
    callback_give_up_secs: u64,
    /// Connections one client address may hold open at once (printers
    /// behind one NAT share an address, so this is generous).
    #[arg(long, default_value_t = 256)]
    max_connections_per_ip: usize,
    /// Connections open at once over all clients (0: from the open-file
    /// limit, raised to its maximum at start, less 256 for the store).
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Seconds a new connection may take to send its first request line
    /// (or HTTP/2 preface) and headers.
    #[arg(long, default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Seconds an upload may send nothing before it is dropped.
    #[arg(long, default_value_t = 30, hide = true)]
    body_idle_timeout_secs: u64,
    /// Seconds a small (JSON or form) request body may take whole.
    #[arg(long, default_value_t = 20)]
    body_deadline_secs: u64,
    /// Seconds an upload's body may take whole.
    #[arg(long, default_value_t = 4 * 3600)]
    upload_deadline_secs: u64,
    /// Seconds a body may start slowly before its rate counts.
    #[arg(long, default_value_t = 10)]
    body_grace_secs: u64,
    /// The least average rate of a request body after its grace, in bytes
    /// a second (a body dripping slower is dropped with 408).
    #[arg(long, default_value_t = 1024)]
    body_min_rate: u64,
    /// Let anyone create an account with POST /users/ (3DIAX's self
    /// sign-up; limited per client address). Off by default.
    #[arg(long)]
    allow_signup: bool,
    /// Accounts one client address may create per hour with --allow-signup.
    #[arg(long, default_value_t = 5)]
    signups_per_hour: u32,
    /// Uploads one partner may have waiting to be processed; more are
    /// answered 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue_per_partner: u64,
    /// Requests one partner may make per minute on partner routes; more
    /// get 429 with Retry-After (0: no limit).
    #[arg(long, default_value_t = 6000)]
    requests_per_key_per_minute: u32,
    /// Requests one client address may make per minute on partner routes
    /// (0: no limit).
    #[arg(long, default_value_t = 12000)]
    requests_per_ip_per_minute: u32,
    /// Embedding sessions one client address may open per model per hour
    /// (0: no limit).
    #[arg(long, default_value_t = 600)]
    sessions_per_model_per_ip_per_hour: u32,
    /// How long a service provider has to finish a job before it is
    /// timed out (and the user told), in seconds.
    #[arg(long, default_value_t = 3600)]
    provider_timeout_secs: u64,
    /// Seconds a resumable (tus) upload may take from its creation; then
    /// it answers 410 and its bytes are removed.
    #[arg(long, default_value_t = 24 * 3600)]
    tus_expiry_secs: u64,
    /// Serve without processing uploads: `strata worker` processes on this
    /// or other machines take the jobs (needs a shared `--database
    /// postgres://` and `--blobs s3://`).
    #[arg(long)]
    no_workers: bool,
    #[command(flatten)]
    shared: SharedArgs,
    /// What one model's processing may cost.
    #[command(flatten)]
    limits: LimitArgs,
    /// How log lines (to stderr) are written: text, or one JSON object per
    /// line with the request id, route and partner (STRATA_LOG filters).
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

/// What servers and workers sharing one database agree on.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SharedArgs {
    /// Where `secret.key` (signed upload and provider URLs) and
    /// `jwt-keys.json` are kept (default: the data directory); servers
    /// behind one load balancer share one, so what one signs the others
    /// accept.
    #[arg(long, env = "STRATA_SECRETS", value_name = "DIR")]
    secrets: Option<PathBuf>,
    /// Seconds a claimed job stays its worker's without a heartbeat; a
    /// worker that died loses its jobs to the others after this.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..=86_400))]
    job_lease_secs: u64,
}

/// `strata worker`: processes the shared queue's jobs, no HTTP.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// This machine's scratch directory (its lock, the snapshot cache).
    #[arg(long, env = "STRATA_DATA", default_value = crate::ingest::DEFAULT_DATA)]
    data: PathBuf,
    /// The shared metadata: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    #[arg(long, env = "STRATA_DATABASE", value_name = "URL", value_parser = strata_pipeline::db::DatabaseLocation::parse)]
    database: strata_pipeline::db::DatabaseLocation,
    /// The shared blobs: `s3://BUCKET[/PREFIX]` (credentials and endpoint
    /// from the usual AWS variables).
    #[arg(long, value_parser = strata_pipeline::objstore::BlobLocation::parse)]
    blobs: strata_pipeline::objstore::BlobLocation,
    /// The URL the servers are reached at (for the links in callbacks).
    #[arg(long)]
    public_url: String,
    /// Jobs run at once (default: the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    jobs: Option<u16>,
    /// Let callbacks reach loopback and private addresses.
    #[arg(long)]
    allow_private_callbacks: bool,
    /// The ports callbacks may go to on public hosts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "80,443")]
    callback_ports: Vec<u16>,
    /// Refuse to start on a database lacking migrations (run `strata
    /// migrate` first) instead of applying them.
    #[arg(long)]
    no_migrate: bool,
    #[command(flatten)]
    shared: SharedArgs,
    /// What one model's processing may cost.
    #[command(flatten)]
    limits: LimitArgs,
}

/// Why a scale-out set-up cannot work, before anything starts.
fn check_shared(
    what: &str,
    database: &strata_pipeline::db::DatabaseLocation,
    blobs: &strata_pipeline::objstore::BlobLocation,
) -> Result<(), String> {
    if !database.is_shared() {
        return Err(format!(
            "{what} needs a shared --database postgres://...: the workers and servers must see the same jobs"
        ));
    }
    if *blobs == strata_pipeline::objstore::BlobLocation::Local {
        return Err(format!(
            "{what} needs shared --blobs s3://BUCKET: a worker elsewhere cannot read this machine's files"
        ));
    }
    Ok(())
}

pub(crate) fn worker(args: &WorkerArgs) -> ExitCode {
    strata_server::observe::init_logging(strata_server::observe::LogFormat::Text);
    if let Err(e) = check_shared("strata worker", &args.database, &args.blobs) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut config = Config {
        data: args.data.clone(),
        public_url: Some(args.public_url.trim_end_matches('/').to_string()),
        allow_private_callbacks: args.allow_private_callbacks,
        callback_ports: args.callback_ports.clone(),
        migrations: if args.no_migrate {
            strata_pipeline::db::Migrations::Require
        } else {
            strata_pipeline::db::Migrations::Apply
        },
        blobs: args.blobs.clone(),
        database: args.database.clone(),
        secrets: args.shared.secrets.clone(),
        job_lease: std::time::Duration::from_secs(args.shared.job_lease_secs),
        model_limits: args.limits.limits(),
        ..Config::default()
    };
    if let Some(n) = args.jobs {
        config.workers = usize::from(n);
    }
    let shown = args.database.display(&args.data);
    let jobs = config.workers;
    rt.block_on(async {
        // Scripts read this line to know the worker is up (its store open).
        let ready = |id: &str| println!("strata: worker {id} on {shown}, {jobs} job(s) at once");
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match Server::work_until(config, ready, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The per-model limits, shared by `strata serve` and `strata ingest`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LimitArgs {
    /// Layers one model may be sliced into; a taller model fails with
    /// `too_many_layers` before any slicing.
    #[arg(long, default_value_t = 100_000)]
    max_layers: usize,
    /// MiB one model's stream, snapshot and repaired copy may store; more
    /// fails the model with `stored_bytes_limit`.
    #[arg(long, default_value_t = 2048)]
    max_stored_mib: u64,
    /// Seconds one model's processing may take; longer fails it with
    /// `time_limit`.
    #[arg(long, default_value_t = 600)]
    max_job_secs: u64,
    /// MiB the mesh of one 3MF may take while it is read; more fails it
    /// with `memory_limit`.
    #[arg(long, default_value_t = 2048)]
    max_model_memory_mib: u64,
    /// MiB a 3MF's model XML may inflate to; more fails it with
    /// `bad_container` (a zip bomb).
    #[arg(long, default_value_t = 1024)]
    max_3mf_xml_mib: u64,
}

impl LimitArgs {
    pub(crate) fn limits(&self) -> strata_pipeline::process::ModelLimits {
        strata_pipeline::process::ModelLimits {
            max_layers: self.max_layers.max(1),
            max_stored_bytes: self.max_stored_mib.saturating_mul(1 << 20),
            max_job_time: std::time::Duration::from_secs(self.max_job_secs.max(1)),
            max_mesh_bytes: self.max_model_memory_mib.saturating_mul(1 << 20),
            max_3mf_xml_bytes: self.max_3mf_xml_mib.saturating_mul(1 << 20),
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Create a partner account; prints its API key, username and password.
    CreatePartner {
        /// The partner's name.
        name: String,
        /// Contact e-mail.
        #[arg(long)]
        email: String,
        /// The data directory.
        #[arg(long, env = "STRATA_DATA", default_value = crate::ingest::DEFAULT_DATA)]
        data: PathBuf,
        /// One JSON object {"username", "password", "api_key", "callback_secret"}.
        #[arg(long)]
        json: bool,
        /// Where the metadata is: `sqlite://PATH` or `postgres://...`
        /// (default: `DATA/meta.db`).
        #[arg(long, env = "STRATA_DATABASE", value_name = "URL", value_parser = strata_pipeline::db::DatabaseLocation::parse)]
        database: Option<strata_pipeline::db::DatabaseLocation>,
    },
    /// Issue a scoped JWT for a partner (printed on stdout): for the
    /// partner's own servers (`--scope backend` grants the backend-only
    /// permissions) or to hand to a browser user.
    IssueJwt {
        /// The partner's username.
        #[arg(long)]
        partner: String,
        /// Permissions, e.g. `get.model`, `file.download`, `backend`.
        #[arg(long, num_args = 1.., required = true)]
        scope: Vec<String>,
        /// Limit the token to one of the partner's models.
        #[arg(long)]
        model: Option<String>,
        /// Lifetime in seconds (at most a day).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The data directory.
        #[arg(long, env = "STRATA_DATA", default_value = crate::ingest::DEFAULT_DATA)]
        data: PathBuf,
        /// Where the metadata is: `sqlite://PATH` or `postgres://...`
        /// (default: `DATA/meta.db`).
        #[arg(long, env = "STRATA_DATABASE", value_name = "URL", value_parser = strata_pipeline::db::DatabaseLocation::parse)]
        database: Option<strata_pipeline::db::DatabaseLocation>,
        /// Where `jwt-keys.json` is kept (the servers' `--secrets`;
        /// default: the data directory).
        #[arg(long, env = "STRATA_SECRETS", value_name = "DIR")]
        secrets: Option<PathBuf>,
    },
    /// Add a new JWT signing key; tokens signed with the old keys stay
    /// valid until they expire (remove old keys from DATA/jwt-keys.json to
    /// retire them).
    RotateJwtKey {
        /// The data directory.
        #[arg(long, env = "STRATA_DATA", default_value = crate::ingest::DEFAULT_DATA)]
        data: PathBuf,
        /// Where `jwt-keys.json` is kept (the servers' `--secrets`;
        /// default: the data directory).
        #[arg(long, env = "STRATA_SECRETS", value_name = "DIR")]
        secrets: Option<PathBuf>,
    },
    /// Print a partner's callback signing secret (`whsec_...`), e.g. for a
    /// partner made before callbacks were signed.
    CallbackSecret {
        /// The partner's username.
        username: String,
        /// The data directory.
        #[arg(long, env = "STRATA_DATA", default_value = crate::ingest::DEFAULT_DATA)]
        data: PathBuf,
        /// Where the metadata is: `sqlite://PATH` or `postgres://...`
        /// (default: `DATA/meta.db`).
        #[arg(long, env = "STRATA_DATABASE", value_name = "URL", value_parser = strata_pipeline::db::DatabaseLocation::parse)]
        database: Option<strata_pipeline::db::DatabaseLocation>,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

pub(crate) fn serve(args: &ServeArgs) -> ExitCode {
    let format = if args.log_format == "json" {
        strata_server::observe::LogFormat::Json
    } else {
        strata_server::observe::LogFormat::Text
    };
    strata_server::observe::init_logging(format);
    if args.no_workers
        && let Err(e) = check_shared("--no-workers", &args.database.clone().unwrap_or_default(), &args.blobs)
    {
        eprintln!("error: {e} (and `strata worker` processes to take the jobs)");
        return ExitCode::from(2);
    }
    if args.presign_chunks_secs > 0 && args.blobs == strata_pipeline::objstore::BlobLocation::Local {
        eprintln!(
            "error: --presign-chunks-secs needs --blobs s3://BUCKET: local blobs have no presigned URLs"
        );
        return ExitCode::from(2);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let config = Config {
        listen: args.listen.clone(),
        data: args.data.clone(),
        upload_limit: args.upload_limit_mib.saturating_mul(1024 * 1024),
        chunk_cache_bytes: args.chunk_cache_mib << 20,
        public_url: args.public_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
        allow_private_callbacks: args.allow_private_callbacks,
        migrations: if args.no_migrate {
            strata_pipeline::db::Migrations::Require
        } else {
            strata_pipeline::db::Migrations::Apply
        },
        blobs: args.blobs.clone(),
        database: args.database.clone().unwrap_or_default(),
        run_jobs: !args.no_workers,
        secrets: args.shared.secrets.clone(),
        job_lease: std::time::Duration::from_secs(args.shared.job_lease_secs),
        presign_chunks: (args.presign_chunks_secs > 0)
            .then(|| std::time::Duration::from_secs(args.presign_chunks_secs)),
        callback_ports: args.callback_ports.clone(),
        callback_retry_base: std::time::Duration::from_millis(args.callback_retry_base_ms),
        callback_give_up: std::time::Duration::from_secs(args.callback_give_up_secs),
        max_connections_per_ip: args.max_connections_per_ip,
        max_connections: args.max_connections,
        header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout_secs.max(1)),
        body_idle_timeout: std::time::Duration::from_secs(args.body_idle_timeout_secs),
        body_deadline: std::time::Duration::from_secs(args.body_deadline_secs),
        upload_deadline: std::time::Duration::from_secs(args.upload_deadline_secs),
        body_grace: std::time::Duration::from_secs(args.body_grace_secs),
        body_min_rate: args.body_min_rate,
        allow_signup: args.allow_signup,
        signups_per_hour: args.signups_per_hour,
        queue_per_partner: args.queue_per_partner,
        requests_per_key_per_minute: args.requests_per_key_per_minute,
        requests_per_ip_per_minute: args.requests_per_ip_per_minute,
        sessions_per_model_per_ip_per_hour: args.sessions_per_model_per_ip_per_hour,
        provider_timeout: std::time::Duration::from_secs(args.provider_timeout_secs.max(1)),
        model_limits: args.limits.limits(),
        tus_expiry: std::time::Duration::from_secs(args.tus_expiry_secs.max(1)),
        ..Config::default()
    };
    rt.block_on(async {
        let server = match Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Tests and scripts read this line to find the port.
        println!("strata: listening on http://{} (data in {})", server.addr(), args.data.display());
        server
            .run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        ExitCode::SUCCESS
    })
}

#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The data directory whose database to migrate.
    #[arg(long, env = "STRATA_DATA", default_value = crate::ingest::DEFAULT_DATA)]
    data: PathBuf,
    /// Change nothing: print the schema's version and what is pending, and
    /// exit with 1 when anything is.
    #[arg(long)]
    check: bool,
    /// Where the metadata is: `sqlite://PATH` or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (default: `DATA/meta.db`).
    #[arg(long, env = "STRATA_DATABASE", value_name = "URL", value_parser = strata_pipeline::db::DatabaseLocation::parse)]
    database: Option<strata_pipeline::db::DatabaseLocation>,
}

pub(crate) fn migrate(args: &MigrateArgs) -> ExitCode {
    let database = args.database.clone().unwrap_or_default();
    let shown = database.display(&args.data);
    let result = strata_server::pipeline::store::migrate(&args.data, &database, args.check)
        .map_err(|e| format!("{shown}: {e}"));
    crate::exit_with(result.map(|(before, after)| {
        let db = std::path::Path::new(&shown);
        if args.check {
            if before.is_newer() {
                println!(
                    "{}: schema version {} is newer than this build ({}); upgrade strata",
                    db.display(),
                    before.applied,
                    before.known
                );
                return ExitCode::FAILURE;
            }
            let pending: Vec<String> = before.pending().map(|v| v.to_string()).collect();
            if pending.is_empty() {
                println!("{}: schema version {}, up to date", db.display(), before.applied);
                return ExitCode::SUCCESS;
            }
            println!(
                "{}: schema version {}; {} pending migration(s): {}",
                db.display(),
                before.applied,
                pending.len(),
                pending.join(", ")
            );
            return ExitCode::FAILURE;
        }
        if before.applied == after.applied {
            println!("{}: schema version {}, up to date", db.display(), after.applied);
        } else {
            println!(
                "{}: schema version {} -> {} ({} migration(s) applied)",
                db.display(),
                before.applied,
                after.applied,
                after.applied - before.applied
            );
        }
        ExitCode::SUCCESS
    }))
}

pub(crate) fn admin(command: &AdminCommand) -> ExitCode {
    let (name, email, data, json, database) = match command {
        AdminCommand::CreatePartner { name, email, data, json, database } => {
            (name, email, data, json, database.clone().unwrap_or_default())
        }
        AdminCommand::CallbackSecret { username, data, database } => {
            return callback_secret(username, data, &database.clone().unwrap_or_default());
        }
        AdminCommand::IssueJwt { partner, scope, model, ttl, data, database, secrets } => {
            let database = database.clone().unwrap_or_default();
            let keys = secrets.as_ref().unwrap_or(data);
            return crate::exit_with(issue_jwt(
                partner,
                scope,
                model.as_deref(),
                *ttl,
                data,
                &database,
                keys,
            ));
        }
        AdminCommand::RotateJwtKey { data, secrets } => {
            let data = secrets.as_ref().unwrap_or(data);
            return crate::exit_with(
                strata_server::jwt::Keyring::rotate(&data.join(strata_server::jwt::KEY_FILE), JWT_ISSUER)
                    .map(|(_, kid)| {
                        println!("new signing key {kid}; restart the servers to sign with it");
                        ExitCode::SUCCESS
                    })
                    .map_err(|e| format!("{}: {e}", data.display())),
            );
        }
    };
    let result = std::fs::create_dir_all(data)
        .map_err(|e| format!("{}: {e}", data.display()))
        .and_then(|()| {
            strata_server::pipeline::db::Db::open_location(
                &database,
                data,
                strata_server::pipeline::db::Migrations::Apply,
            )
            .map_err(|e| format!("{}: {e}", database.display(data)))
        })
        .and_then(|db| {
            strata_server::accounts::provision_partner(&db, name, email).map_err(|e| e.to_string())
        })
        .map(|(made, password)| (made.partner.username, password, made.api_key, made.callback_secret));
    match result {
        Ok((username, password, api_key, callback_secret)) if *json => {
            println!(
                "{}",
                serde_json::json!({
                    "username": username,
                    "password": password,
                    "api_key": api_key,
                    "callback_secret": callback_secret,
                })
            );
            ExitCode::SUCCESS
        }
        Ok((username, password, api_key, callback_secret)) => {
            println!("partner {name:?} created (the password is shown once; only its hash is kept)");
            println!(
                "username: {username}\npassword: {password}\napi_key:  {api_key}\ncallback_secret: {callback_secret}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The issuer name a key file made by the CLI (before any server) gets.
const JWT_ISSUER: &str = "urn:strata";

fn issue_jwt(
    username: &str,
    scopes: &[String],
    model: Option<&str>,
    ttl: u64,
    data: &std::path::Path,
    database: &strata_pipeline::db::DatabaseLocation,
    keys: &std::path::Path,
) -> Result<ExitCode, String> {
    let db = strata_server::pipeline::db::Db::open_location(
        database,
        data,
        strata_server::pipeline::db::Migrations::Apply,
    )
    .map_err(|e| format!("{}: {e}", database.display(data)))?;
    let (partner, _) = db
        .partner_login(username)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no partner {username:?} in {}", data.display()))?;
    if let Some(id) = model {
        let owned = db.partner_model(id).map_err(|e| e.to_string())?.filter(|m| m.partner_id == partner.id);
        if owned.is_none() {
            return Err(format!("partner {username:?} has no model {id:?}"));
        }
    }
    let ring =
        strata_server::jwt::Keyring::load_or_create(&keys.join(strata_server::jwt::KEY_FILE), JWT_ISSUER)
            .map_err(|e| format!("{}: {e}", keys.display()))?;
    let token = ring.issue(&partner.id, scopes, model, ttl, true).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn callback_secret(
    username: &str,
    data: &std::path::Path,
    database: &strata_pipeline::db::DatabaseLocation,
) -> ExitCode {
    let opened = strata_server::pipeline::db::Db::open_location(
        database,
        data,
        strata_server::pipeline::db::Migrations::Apply,
    );
    let db = match opened {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {}: {e}", database.display(data));
            return ExitCode::FAILURE;
        }
    };
    // A partner made before callbacks were signed gets one here too.
    if let Err(e) = db.backfill_callback_secrets(strata_server::callbacks::new_secret) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match db.callback_secret_of(username) {
        Ok(Some(secret)) => {
            println!("{secret}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("error: no partner {username:?} in {}", data.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `strata provider`: the reference model-healing provider.
#[derive(Debug, clap::Args)]
pub(crate) struct ProviderArgs {
    /// Address to listen on (port 0 picks a free one); the first line on
    /// stdout is the service URL to register (`http://ADDR/repair`).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// The shared secret the Strata server gave at registration
    /// (`whsec_...`).
    #[arg(long, env = "STRATA_PROVIDER_SECRET")]
    secret: String,
    /// The Strata server's public URL (the audience of the link tokens
    /// this provider signs, when a request does not name one).
    #[arg(long)]
    server: Option<String>,
}

pub(crate) fn provider(args: &ProviderArgs) -> ExitCode {
    strata_server::observe::init_logging(strata_server::observe::LogFormat::Text);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(strata_server::provider_ref::run(
        &args.listen,
        args.secret.clone(),
        args.server.clone(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
