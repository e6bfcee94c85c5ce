//! What every request shares: the store, the CPU pool, the secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use strata_pipeline::blob::{BlobId, FsBlobStore};
use strata_pipeline::db::Db;

use crate::{Config, ServerError};

/// The server's shared state.
#[derive(Debug)]
pub struct AppState {
    /// Settings.
    pub config: Config,
    /// Blobs (originals, snapshots, manifests, chunks).
    pub blobs: FsBlobStore,
    /// A few connections (SQLite in WAL mode reads concurrently; writes
    /// take turns under the busy timeout), so requests do not queue behind
    /// one mutex.
    dbs: Vec<Mutex<Db>>,
    next_db: std::sync::atomic::AtomicUsize,
    /// CPU work: processing uploads and rendering snapshots.
    pub pool: rayon::ThreadPool,
    /// Signs upload URLs; kept in the data directory so URLs survive a
    /// restart.
    pub secret: Vec<u8>,
    /// Scheme, host and port of this server, for links.
    pub public_url: String,
    /// Where uploads are spooled before processing.
    pub uploads: PathBuf,
    chunk_digests: Mutex<hashlink::LruCache<BlobId, Arc<[String]>>>,
    chunk_bytes: Mutex<ChunkCache>,
    login_failures: Mutex<HashMap<String, (std::time::Instant, u32)>>,
    signups: Mutex<HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
    /// Wakes the callback sender when a delivery is queued.
    pub callbacks_due: tokio::sync::Notify,
    /// The one client callbacks are sent with (its resolver checks every
    /// address; see [`crate::callbacks`]).
    pub callback_http: reqwest::Client,
    /// Wakes the job runner when a job is queued.
    pub jobs_due: tokio::sync::Notify,
    /// Held across a partner's queue count and the enqueue it admits, so
    /// concurrent uploads cannot all pass the count (one process owns the
    /// data directory, so a process-wide lock is enough).
    pub admission: Mutex<()>,
    /// This process's name on the job leases it holds.
    pub worker_id: String,
    /// What the models being processed may take together (the same
    /// estimate `strata ingest` budgets with).
    pub memory: strata_pipeline::ingest::MemoryBudget,
    /// The data directory is this process's alone while it runs.
    _lock: strata_pipeline::store::DataLock,
}

/// Wrong passwords an account may get per minute (`LOGIN_WINDOW`) before logins
/// to it are refused with 429 until the window ends.
pub const LOGIN_FAILURES_PER_MINUTE: u32 = 20;
const LOGIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Database connections per server.
const DB_CONNECTIONS: usize = 4;

/// Manifests whose chunk digests are kept in memory (a few KB each).
const CHUNK_DIGEST_CACHE: usize = 4096;

impl AppState {
    /// Opens the store under `config.data` (creating it).
    pub fn open(config: Config, addr: SocketAddr) -> Result<AppState, ServerError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ServerError::Io { path: p, source }
        };
        // Before anything is cleared: a second process on the same data
        // directory is refused here, naming the first.
        let lock = strata_pipeline::store::DataLock::acquire(&config.data)?;
        let blobs = FsBlobStore::open(&config.data)?;
        let db = Db::open(&config.data.join("meta.db"))?;
        let uploads = config.data.join("uploads");
        std::fs::create_dir_all(&uploads).map_err(io(&uploads))?;
        // Jobs a killed process was running are due again, and the spools
        // of acknowledged uploads stay until their jobs finish; only
        // spools no job names (never acknowledged) are removed.
        db.requeue_running_jobs(strata_pipeline::db::now_ms())?;
        let keep: std::collections::HashSet<String> =
            db.pending_jobs()?.iter().filter_map(crate::jobs::spool_of).collect();
        for entry in std::fs::read_dir(&uploads).map_err(io(&uploads))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let secret = load_secret(&config.data.join("secret.key"))?;
        // Partners made before callbacks were signed get their secret now,
        // or every callback of theirs would fail until given up.
        for username in db.backfill_callback_secrets(crate::callbacks::new_secret)? {
            tracing::warn!(
                partner = %username,
                "callbacks are now signed; `strata admin callback-secret {username}` prints the secret"
            );
        }
        let mut dbs = vec![Mutex::new(db)];
        for _ in 1..DB_CONNECTIONS {
            dbs.push(Mutex::new(Db::open(&config.data.join("meta.db"))?));
        }
        let callback_http = crate::callbacks::client(config.allow_private_callbacks)
            .map_err(|e| ServerError::Pool(format!("cannot build the callback client: {e}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("strata-cpu-{i}"))
            .build()
            .map_err(|e| ServerError::Pool(e.to_string()))?;
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
        Ok(AppState {
            config,
            blobs,
            dbs,
            next_db: std::sync::atomic::AtomicUsize::new(0),
            pool,
            secret,
            public_url,
            uploads,
            chunk_digests: Mutex::new(hashlink::LruCache::new(CHUNK_DIGEST_CACHE)),
            chunk_bytes: Mutex::new(ChunkCache::default()),
            login_failures: Mutex::new(HashMap::new()),
            signups: Mutex::new(HashMap::new()),
            callbacks_due: tokio::sync::Notify::new(),
            callback_http,
            jobs_due: tokio::sync::Notify::new(),
            admission: Mutex::new(()),
            worker_id: format!("serve-{}-{}", std::process::id(), crate::auth::random_hex(4)),
            memory: strata_pipeline::ingest::MemoryBudget::new(
                strata_pipeline::ingest::default_memory_budget(),
            ),
            _lock: lock,
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
        let bytes = bytes::Bytes::from(tokio::fs::read(self.blobs.path_of(id)).await?);
        let budget = self.config.chunk_cache_bytes;
        self.chunk_bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(
            id,
            bytes.clone(),
            budget,
        );
        Ok(bytes)
    }

    /// Whether `username` may try a password now: `Err(seconds)` to wait
    /// when it has had [`LOGIN_FAILURES_PER_MINUTE`] wrong passwords within
    /// the current minute. Counted per account name, known or not, so
    /// guessing is slowed without telling which accounts exist.
    pub fn login_allowed(&self, username: &str) -> Result<(), u64> {
        let failures = self.login_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match failures.get(username) {
            Some((since, n)) if *n >= LOGIN_FAILURES_PER_MINUTE && since.elapsed() < LOGIN_WINDOW => {
                Err((LOGIN_WINDOW - since.elapsed()).as_secs() + 1)
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong password for `username`.
    pub fn login_failed(&self, username: &str) {
        let mut failures = self.login_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= 100_000 {
            // Bounded memory under a spray of names: old windows go first.
            failures.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
        }
        let entry = failures.entry(username.to_string()).or_insert((std::time::Instant::now(), 0));
        if entry.0.elapsed() >= LOGIN_WINDOW {
            *entry = (std::time::Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// Clears the count after a good password.
    pub fn login_succeeded(&self, username: &str) {
        self.login_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(username);
    }

    /// Counts a sign-up from `ip`: `Err(seconds)` to wait when the address
    /// has created `Config::signups_per_hour` accounts within the hour.
    pub fn signup_allowed(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
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

    /// A database connection (short calls only): the first free one of
    /// the pool, or the next in turn when all are busy.
    pub fn db(&self) -> MutexGuard<'_, Db> {
        let n = self.dbs.len();
        let start = self.next_db.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        for i in 0..n {
            match self.dbs[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.dbs[start].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
