//! What every request shares: the store, the CPU pool, the secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use strata_pipeline::blob::{BlobId, Blobs};
use strata_pipeline::db::{Db, now_ms};
use strata_pipeline::lifecycle::{Lifecycle, LifecycleConfig};

use crate::{Config, ServerError};

/// The server's shared state.
#[derive(Debug)]
pub struct AppState {
    /// Settings.
    pub config: Config,
    /// The model lifecycle over the store (the data directory, this
    /// process's alone while it runs).
    pub life: Lifecycle,
    /// CPU work: processing uploads and rendering snapshots.
    pub pool: rayon::ThreadPool,
    /// Issues and checks scoped JWTs (`DATA/jwt-keys.json`).
    pub jwt: crate::jwt::Keyring,
    /// Signs upload URLs; kept in the data directory so URLs survive a
    /// restart.
    pub secret: Vec<u8>,
    /// Scheme, host and port of this server, for links.
    pub public_url: String,
    chunk_digests: Mutex<hashlink::LruCache<BlobId, Arc<[String]>>>,
    chunk_bytes: Mutex<ChunkCache>,
    login_failures: Mutex<HashMap<[u8; 16], (std::time::Instant, u32)>>,
    /// Password hashing: a few at once, a short queue, the rest refused.
    pub hashing: crate::auth::HashPool,
    signups: Mutex<HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
    /// Requests per partner per minute on partner routes.
    pub per_key: crate::limits::Buckets,
    /// Requests per client address per minute on partner routes.
    pub per_ip: crate::limits::Buckets,
    /// Embedding sessions per model per client address per hour.
    pub sessions_per_model: crate::limits::Buckets,
    /// Wakes the callback sender when a delivery is queued.
    pub callbacks_due: tokio::sync::Notify,
    /// The one client callbacks are sent with (its resolver checks every
    /// address; see [`crate::callbacks`]).
    pub callback_http: reqwest::Client,
    /// Wakes the job runner when a job is queued.
    pub jobs_due: tokio::sync::Notify,
    /// Wakes the provider sender when a provider job is queued.
    pub providers_due: tokio::sync::Notify,
    /// This process's name on the job leases it holds.
    pub worker_id: String,
}

/// Wrong passwords an account may get per minute (`LOGIN_WINDOW`) before logins
/// to it are refused with 429 until the window ends.
pub const LOGIN_FAILURES_PER_MINUTE: u32 = 20;
const LOGIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Password attempts one client address may make per minute without
/// success, over all names.
pub const LOGIN_FAILURES_PER_IP_PER_MINUTE: u32 = 60;
/// The most entries the login-failure table holds.
const LOGIN_TABLE_ENTRIES: usize = 100_000;

/// The failure table's key for a user name or a client address: 16 bytes
/// of the SHA-256 of `kind:value`.
fn table_key(kind: &str, value: impl std::fmt::Display) -> [u8; 16] {
    let digest = crate::auth::sha256(format!("{kind}:{value}").as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn login_key(username: &str) -> [u8; 16] {
    table_key("name", username)
}

fn ip_key(ip: std::net::IpAddr) -> [u8; 16] {
    table_key("ip", ip)
}

/// Database connections per server.
const DB_CONNECTIONS: usize = 4;

/// Manifests whose chunk digests are kept in memory (a few KB each).
const CHUNK_DIGEST_CACHE: usize = 4096;

impl AppState {
    /// Opens the store under `config.data` (creating it).
    pub fn open(config: Config, addr: SocketAddr) -> Result<AppState, ServerError> {
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
        let life_config = LifecycleConfig {
            public_url: public_url.clone(),
            callback_give_up: config.callback_give_up,
            queue_per_partner: config.queue_per_partner,
            // The same estimate `strata ingest` budgets with.
            memory_budget: strata_pipeline::ingest::default_memory_budget(),
            process: strata_pipeline::process::ProcessOptions {
                limits: config.model_limits,
                ..strata_pipeline::process::ProcessOptions::default()
            },
        };
        let (life, recovered, interrupted) = Lifecycle::open_with(
            &config.data,
            DB_CONNECTIONS,
            life_config,
            &strata_pipeline::store::StoreOptions {
                migrations: config.migrations,
                blobs: config.blobs.clone(),
                database: config.database.clone(),
            },
        )?;
        if recovered.requeued + recovered.spools_kept + interrupted > 0 {
            tracing::info!(
                requeued = recovered.requeued,
                spools_kept = recovered.spools_kept,
                interrupted,
                "resuming the work of an interrupted run"
            );
        }
        match life.sweep_tus_uploads() {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, "removed the files of expired or unrecorded resumable uploads")
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep resumable uploads"),
        }
        for username in &recovered.secrets_backfilled {
            tracing::warn!(
                partner = %username,
                "callbacks are now signed; `strata admin callback-secret {username}` prints the secret"
            );
        }
        let secrets = config.secrets.clone().unwrap_or_else(|| config.data.clone());
        let secret = load_secret(&secrets.join("secret.key"))?;
        let jwt = crate::jwt::Keyring::load_or_create(&secrets.join(crate::jwt::KEY_FILE), &public_url)?;
        let callback_http = crate::callbacks::client(config.allow_private_callbacks)
            .map_err(|e| ServerError::Pool(format!("cannot build the callback client: {e}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("strata-cpu-{i}"))
            .build()
            .map_err(|e| ServerError::Pool(e.to_string()))?;
        let minute = std::time::Duration::from_secs(60);
        let per_key = crate::limits::Buckets::new(config.requests_per_key_per_minute, minute);
        let per_ip = crate::limits::Buckets::new(config.requests_per_ip_per_minute, minute);
        let sessions_per_model =
            crate::limits::Buckets::new(config.sessions_per_model_per_ip_per_hour, 60 * minute);
        Ok(AppState {
            per_key,
            per_ip,
            sessions_per_model,
            config,
            life,
            pool,
            jwt,
            secret,
            public_url,
            chunk_digests: Mutex::new(hashlink::LruCache::new(CHUNK_DIGEST_CACHE)),
            chunk_bytes: Mutex::new(ChunkCache::default()),
            login_failures: Mutex::new(HashMap::new()),
            hashing: crate::auth::HashPool::new(
                std::thread::available_parallelism().map(usize::from).unwrap_or(2),
                crate::auth::HASH_QUEUE,
            ),
            signups: Mutex::new(HashMap::new()),
            callbacks_due: tokio::sync::Notify::new(),
            callback_http,
            jobs_due: tokio::sync::Notify::new(),
            providers_due: tokio::sync::Notify::new(),
            worker_id: format!("{}-{}-{}", hostname(), std::process::id(), crate::auth::random_hex(4)),
        })
    }

    /// The chunk digests of `manifest`, if cached.
    pub fn cached_chunk_digests(&self, manifest: &BlobId) -> Option<Arc<[String]>> {
        self.chunk_digests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(manifest).cloned()
    }

    /// Caches the chunk digests of `manifest`; the least recently used
    /// manifest goes when `CHUNK_DIGEST_CACHE` are kept.
    pub fn cache_chunk_digests(&self, manifest: &BlobId, digests: Arc<[String]>) {
        self.chunk_digests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(manifest.clone(), digests);
    }

    /// A chunk's bytes: from memory when a printer pulled it recently,
    /// else read once from the blob store. Chunks are immutable and many
    /// printers pull the same stream, so serving them from memory skips
    /// one blocking file read per request (the reason a chunk request
    /// was four times slower than nginx's sendfile).
    pub async fn chunk_bytes(&self, id: &BlobId) -> std::io::Result<bytes::Bytes> {
        if let Some(b) = self.chunk_bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id) {
            return Ok(b);
        }
        let bytes = self.blobs().read(id).await.map_err(std::io::Error::other)?;
        let budget = self.config.chunk_cache_bytes;
        self.chunk_bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(
            id,
            bytes.clone(),
            budget,
        );
        Ok(bytes)
    }

    /// Takes a password attempt for `username` from `ip`, before any hash
    /// is computed: `Err(seconds)` to wait when the name has had
    /// [`LOGIN_FAILURES_PER_MINUTE`] attempts that did not succeed within
    /// the current minute, or the address [`LOGIN_FAILURES_PER_IP_PER_MINUTE`].
    /// Every attempt counts as a failure until [`AppState::login_succeeded`]
    /// clears it, so a hundred concurrent guesses run at most the limit's
    /// number of hashes. Names are counted by a hash of the name, known or
    /// not, so the table's size is bounded whatever names are sent and
    /// nothing tells which accounts exist.
    pub fn login_attempt(&self, username: &str, ip: Option<std::net::IpAddr>) -> Result<(), u64> {
        if self.is_shared() {
            return self.shared_login_attempt(username, ip);
        }
        let mut failures = self.login_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let name = login_key(username);
        let keys = [
            Some((name, LOGIN_FAILURES_PER_MINUTE)),
            ip.map(|ip| (ip_key(ip), LOGIN_FAILURES_PER_IP_PER_MINUTE)),
        ];
        for (key, limit) in keys.iter().flatten() {
            if let Some((since, n)) = failures.get(key)
                && *n >= *limit
                && since.elapsed() < LOGIN_WINDOW
            {
                return Err((LOGIN_WINDOW - since.elapsed()).as_secs() + 1);
            }
        }
        if failures.len() >= LOGIN_TABLE_ENTRIES {
            // Bounded memory under a spray of names: old windows go first,
            // then, if the spray is within one window, the table starts over
            // (each entry is 16 bytes of key and a count).
            failures.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
            if failures.len() >= LOGIN_TABLE_ENTRIES {
                failures.clear();
            }
        }
        for (key, _) in keys.into_iter().flatten() {
            let entry = failures.entry(key).or_insert((now, 0));
            if entry.0.elapsed() >= LOGIN_WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
        Ok(())
    }

    /// After a good password: clears the name's count and takes this
    /// attempt back from the address's (its other failures stay).
    pub fn login_succeeded(&self, username: &str, ip: Option<std::net::IpAddr>) {
        if self.is_shared() {
            let now = now_ms();
            let result = self.db_call(|db| {
                db.forget_count(&shared_key("login", login_key(username)))?;
                match ip {
                    Some(ip) => db.count_back(&shared_key("login", ip_key(ip)), window_ms(LOGIN_WINDOW), now),
                    None => Ok(()),
                }
            });
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot clear a login failure count");
            }
            return;
        }
        let mut failures = self.login_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(&login_key(username));
        if let Some(entry) = ip.and_then(|ip| failures.get_mut(&ip_key(ip))) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    /// Entries in the login-failure table now (for tests and metrics).
    pub fn login_table_len(&self) -> usize {
        self.login_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Counts a sign-up from `ip`: `Err(seconds)` to wait when the address
    /// has created `Config::signups_per_hour` accounts within the hour.
    pub fn signup_allowed(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
        if self.is_shared() {
            let key = shared_key("signup", table_key("ip", ip));
            let limit = i64::from(self.config.signups_per_hour);
            let now = now_ms();
            // One upsert, so servers signing up at once cannot both pass
            // the last place.
            return match self.db_call(|db| db.count_hit(&key, window_ms(HOUR), now)) {
                Ok(c) if c.n > limit => Err(secs_until(c.resets_in_ms)),
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the sign-up count");
                    Ok(())
                }
            };
        }
        let mut signups = self.signups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if signups.len() >= 100_000 {
            signups.retain(|_, (since, _)| since.elapsed() < HOUR);
        }
        let entry = signups.entry(ip).or_insert((std::time::Instant::now(), 0));
        if entry.0.elapsed() >= HOUR {
            *entry = (std::time::Instant::now(), 0);
        }
        if entry.1 >= self.config.signups_per_hour {
            return Err((HOUR.saturating_sub(entry.0.elapsed())).as_secs() + 1);
        }
        entry.1 += 1;
        Ok(())
    }

    /// Whether other servers share this one's database: then limits and
    /// counts are kept in it (see [`strata_pipeline::db::WindowCount`]),
    /// so a client spread over several servers meets one limit.
    pub fn is_shared(&self) -> bool {
        self.life.store().is_shared()
    }

    /// Takes one request of `key` from `family`'s limit: the in-memory
    /// bucket on a server alone, a count in the shared database when
    /// several serve (fixed windows of the family's length). A database
    /// that cannot count lets the request through (logged): limits shed
    /// load, they do not decide access.
    pub fn rate_limit(
        &self,
        family: &crate::limits::Buckets,
        prefix: &str,
        key: &str,
    ) -> Result<(), crate::limits::Limited> {
        if !self.is_shared() {
            return family.take(key);
        }
        if family.limit() == 0 {
            return Ok(());
        }
        let shared = format!("{prefix}:{key}");
        match self.db_call(|db| db.count_hit(&shared, window_ms(family.window()), now_ms())) {
            Ok(c) if c.n > i64::from(family.limit()) => Err(crate::limits::Limited {
                limit: family.limit(),
                window_secs: family.window().as_secs(),
                retry_after: secs_until(c.resets_in_ms),
            }),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a request against its limit");
                Ok(())
            }
        }
    }

    /// [`AppState::login_attempt`] over the shared database's counts.
    fn shared_login_attempt(&self, username: &str, ip: Option<std::net::IpAddr>) -> Result<(), u64> {
        let now = now_ms();
        let window = window_ms(LOGIN_WINDOW);
        let keys: Vec<(String, u32)> = [
            Some((shared_key("login", login_key(username)), LOGIN_FAILURES_PER_MINUTE)),
            ip.map(|ip| (shared_key("login", ip_key(ip)), LOGIN_FAILURES_PER_IP_PER_MINUTE)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let result = self.db_call(|db| -> Result<Result<(), u64>, strata_pipeline::PipelineError> {
            for (key, limit) in &keys {
                let c = db.count_of(key, window, now)?;
                if c.n >= i64::from(*limit) {
                    return Ok(Err(secs_until(c.resets_in_ms)));
                }
            }
            for (key, _) in &keys {
                db.count_hit(key, window, now)?;
            }
            Ok(Ok(()))
        });
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot count a login attempt");
            Ok(())
        })
    }

    /// A database connection (short calls only; see
    /// [`strata_pipeline::store::Store::db`]). Async code calls it through
    /// [`AppState::db_call`] or [`AppState::with_life`], off the runtime's threads.
    pub fn db(&self) -> MutexGuard<'_, Db> {
        self.life.db()
    }

    /// Runs `f` with a database connection from async code without
    /// stalling the runtime: on a multi-threaded runtime's worker, tokio
    /// first hands the worker's other tasks to another thread
    /// (`block_in_place`), so a slow call (the busy timeout, a checkpoint,
    /// every connection taken) delays only its own request. Elsewhere (a
    /// blocking or CPU-pool thread) it just runs.
    pub fn db_call<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        blocking(|| f(&self.db()))
    }

    /// [`AppState::db_call`] for reads, which in WAL mode never wait for a
    /// writer: run at once when a connection is free (a thread hand-off
    /// per chunk request cost a third of the chunk rate), else as
    /// [`AppState::db_call`].
    pub fn db_read<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        match self.life.store().try_db() {
            Some(db) => f(&db),
            None => self.db_call(f),
        }
    }

    /// [`AppState::db_call`] for the lifecycle's calls.
    pub fn life_call<T>(&self, f: impl FnOnce(&Lifecycle) -> T) -> T {
        blocking(|| f(&self.life))
    }

    /// Runs `f` with the lifecycle on a blocking thread (its calls take
    /// database connections).
    pub async fn with_life<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Lifecycle) -> T + Send + 'static,
    ) -> Result<T, ServerError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state.life))
            .await
            .map_err(|e| ServerError::Pool(format!("a database task failed: {e}")))
    }

    /// The blobs (originals, snapshots, manifests, chunks).
    pub fn blobs(&self) -> &Blobs {
        self.life.store().blobs()
    }
}

/// Runs blocking `f` from async code without stalling the runtime (see
/// [`AppState::db_call`]).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker { tokio::task::block_in_place(f) } else { f() }
}

/// Recently served chunks, bounded by their total size; the least
/// recently used go first (hashlink's LRU, already built for rusqlite,
/// keeps the order: O(1) on hits and on evictions).
#[derive(Debug)]
struct ChunkCache {
    entries: hashlink::LruCache<BlobId, bytes::Bytes>,
    total: u64,
}

impl Default for ChunkCache {
    fn default() -> ChunkCache {
        ChunkCache { entries: hashlink::LruCache::new_unbounded(), total: 0 }
    }
}

impl ChunkCache {
    fn get(&mut self, id: &BlobId) -> Option<bytes::Bytes> {
        self.entries.get(id).cloned()
    }

    fn insert(&mut self, id: &BlobId, bytes: bytes::Bytes, budget: u64) {
        let len = bytes.len() as u64;
        // A chunk bigger than an eighth of the budget would push out too
        // much; it is served from the file each time.
        if len > budget / 8 || self.entries.contains_key(id) {
            return;
        }
        while self.total + len > budget {
            let Some((_, oldest)) = self.entries.remove_lru() else { break };
            self.total -= oldest.len() as u64;
        }
        self.total += len;
        self.entries.insert(id.clone(), bytes);
    }
}

/// Reads the server secret, creating a random one (mode 0600) at first
/// start. Only a missing file is created, atomically (written whole and
/// synced under a temporary name, then linked in place unless another
/// start got there first); any other read error, or a file too short to
/// be a secret, stops the server, since a new secret would break every
/// upload URL in circulation.
fn load_secret(path: &Path) -> Result<Vec<u8>, ServerError> {
    let io = |source| ServerError::Io { path: path.to_path_buf(), source };
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the server secret is shorter than 32 bytes; restore it from a backup",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let secret = crate::auth::random_hex(32).into_bytes();
    let mut tmp = tempfile::Builder::new().prefix(".secret").tempfile_in(dir).map_err(io)?;
    #[cfg(unix)]
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &secret).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(secret),
        // Another start made one meanwhile: that one is the secret.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path).map_err(io),
        Err(e) => Err(io(e.error)),
    }
}

/// A shared counter's key: the family and the hex of a table key.
fn shared_key(family: &str, key: [u8; 16]) -> String {
    format!("{family}:{}", hex::encode(key))
}

/// A window in milliseconds.
fn window_ms(window: std::time::Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// Whole seconds until `ms` have passed, at least 1 (for `Retry-After`).
fn secs_until(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1)
}

/// This machine's name, for the leases its processes hold (so an operator
/// reading the jobs table sees where a job runs).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        .unwrap_or_else(|| "strata".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId::parse(&format!("{n:02x}").repeat(32)).expect("id")
    }

    #[test]
    fn the_chunk_cache_keeps_to_its_budget_and_drops_the_least_recently_used() {
        let mut cache = ChunkCache::default();
        let chunk = || bytes::Bytes::from(vec![0u8; 100]);
        for n in 0..8 {
            cache.insert(&id(n), chunk(), 800);
        }
        assert_eq!(cache.total, 800);
        // Touch chunk 0, so chunk 1 is now the least recently used.
        assert!(cache.get(&id(0)).is_some());
        cache.insert(&id(8), chunk(), 800);
        assert_eq!(cache.total, 800);
        assert!(cache.get(&id(1)).is_none(), "the least recently used was not evicted");
        assert!(cache.get(&id(0)).is_some() && cache.get(&id(8)).is_some());
        // Too big for the budget: not cached at all.
        cache.insert(&id(9), bytes::Bytes::from(vec![0u8; 101]), 800);
        assert!(cache.get(&id(9)).is_none());
    }
}
