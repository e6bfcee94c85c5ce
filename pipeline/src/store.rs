//! The data directory's owner: one process at a time.
//!
//! [`Store::open`] is the one way a process that writes the store opens
//! it: it takes the [`DataLock`], opens the blob store (clearing its
//! temporary files, which are now this process's alone), the metadata
//! database (migrating it) and the upload spool, and recovers what a
//! killed process left: running jobs are due again, spools of
//! acknowledged uploads are kept until their jobs finish, other spools
//! (never acknowledged) go, and partners made before callbacks were signed
//! get a secret. No other code clears files in the data directory.
//!
//! A process that writes blobs or clears temporary files (`strata serve`,
//! `strata ingest`) takes an exclusive lock on `DATA/lock` first and holds
//! it for its life, so a second such process on the same directory is
//! refused with the holder's PID instead of clearing the first one's
//! staged blobs under it (which made the first commit rows pointing at
//! blobs that did not exist). The lock is an OS file lock (`flock`), so it
//! goes with the process, however that ends: nothing stale is left to
//! clean by hand. Processes that only read or write rows (`models`,
//! `admin`) do not take it; SQLite's own locking covers them.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::PipelineError;
use crate::blob::Blobs;
use crate::db::{DatabaseLocation, Db, Migrations, SchemaStatus, now_ms};
use crate::objstore::BlobLocation;

/// What the on-demand snapshot cache (`DATA/cache`) may hold.
pub const SNAPSHOT_CACHE_BYTES: u64 = 256 << 20;

/// A data directory, opened for writing: its blobs, a few database
/// connections and the upload spool, held under the [`DataLock`].
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    blobs: Blobs,
    uploads: PathBuf,
    cache: crate::cache::DiskCache,
    dbs: Vec<Mutex<Db>>,
    next_db: std::sync::atomic::AtomicUsize,
    shared: bool,
    _lock: DataLock,
}

/// How [`Store::open_with`] opens a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Whether missing migrations are applied or refused.
    pub migrations: Migrations,
    /// Where the blobs are (`--blobs`).
    pub blobs: BlobLocation,
    /// Where the metadata is (`--database`).
    pub database: DatabaseLocation,
}

/// What [`Store::open`] found and recovered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs a killed process was running, due again.
    pub requeued: usize,
    /// Spools of acknowledged uploads kept for their jobs.
    pub spools_kept: usize,
    /// Spools no job names (never acknowledged), removed.
    pub spools_removed: usize,
    /// Partners given a callback secret (made before callbacks were
    /// signed), by username.
    pub secrets_backfilled: Vec<String>,
}

impl Store {
    /// Opens (creating) the store under `dir` with `connections` database
    /// connections (SQLite in WAL mode reads concurrently; writes take
    /// turns under the busy timeout). Fails with [`PipelineError::Locked`]
    /// when another process holds it, before anything is touched.
    pub fn open(dir: &Path, connections: usize) -> Result<(Store, Recovered), PipelineError> {
        Store::open_with(dir, connections, &StoreOptions::default())
    }

    /// [`Store::open`] with its options: the database migrated or required
    /// migrated ([`Migrations::Require`]: refused before anything is
    /// touched), and blobs in the data directory or in a bucket.
    pub fn open_with(
        dir: &Path,
        connections: usize,
        options: &StoreOptions,
    ) -> Result<(Store, Recovered), PipelineError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PipelineError::Io { path, source }
        };
        // Before anything is cleared: a second process on the same data
        // directory is refused here, naming the first.
        let lock = DataLock::acquire(dir)?;
        let db = Db::open_location(&options.database, dir, options.migrations)?;
        let blobs = Blobs::open(dir, &options.blobs)?;
        let uploads = dir.join("uploads");
        std::fs::create_dir_all(&uploads).map_err(io(&uploads))?;
        // A shared database's running jobs belong to live workers elsewhere
        // as well: their leases, not a restart here, say when one is lost.
        let shared = options.database.is_shared();
        let requeued = if shared { 0 } else { db.requeue_running_jobs(now_ms())? };
        let mut recovered = Recovered { requeued, ..Recovered::default() };
        let keep: std::collections::HashSet<String> =
            db.pending_jobs()?.iter().filter_map(crate::lifecycle::spool_of).collect();
        for entry in std::fs::read_dir(&uploads).map_err(io(&uploads))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                recovered.spools_kept += 1;
            } else if std::fs::remove_file(entry.path()).is_ok() {
                recovered.spools_removed += 1;
            }
        }
        recovered.secrets_backfilled = db.backfill_callback_secrets(crate::ids::callback_secret)?;
        let cache_dir = dir.join("cache");
        let cache =
            crate::cache::DiskCache::open(&cache_dir, SNAPSHOT_CACHE_BYTES).map_err(io(&cache_dir))?;
        let mut dbs = vec![Mutex::new(db)];
        for _ in 1..connections.max(1) {
            dbs.push(Mutex::new(Db::open_location(&options.database, dir, Migrations::Apply)?));
        }
        let store = Store {
            dir: dir.to_path_buf(),
            blobs,
            uploads,
            cache,
            dbs,
            next_db: std::sync::atomic::AtomicUsize::new(0),
            shared,
            _lock: lock,
        };
        Ok((store, recovered))
    }

    /// Whether other processes share the metadata (and, through it, the
    /// work): then an upload's bytes go to the blob store before it is
    /// acknowledged, so any worker can process it.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blobs.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Snapshots rendered on demand, bounded.
    pub fn cache(&self) -> &crate::cache::DiskCache {
        &self.cache
    }

    /// Where acknowledged uploads are spooled until their jobs finish.
    pub fn uploads(&self) -> &Path {
        &self.uploads
    }

    /// A new spool file's path for an upload to `model_id` (a random name,
    /// so concurrent uploads never share one), with that name.
    pub fn new_spool(&self, model_id: &str) -> (String, PathBuf) {
        let name = format!("{model_id}-{}", crate::ids::random_hex(8));
        let path = self.uploads.join(&name);
        (name, path)
    }

    /// A free database connection, if one is free now.
    pub fn try_db(&self) -> Option<MutexGuard<'_, Db>> {
        let n = self.dbs.len();
        let start = self.next_db.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        (0..n).find_map(|i| match self.dbs[(start + i) % n].try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        })
    }

    /// A database connection (for short calls): the first free one, or
    /// the next in turn when all are busy. Blocks while it waits, so
    /// async callers take it on a blocking thread.
    pub fn db(&self) -> MutexGuard<'_, Db> {
        if let Some(free) = self.try_db() {
            return free;
        }
        let n = self.dbs.len();
        let start = self.next_db.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        self.dbs[start].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `strata migrate`: applies the migrations the store under `dir` lacks,
/// holding the data directory's lock (so never under a running server);
/// where the schema stood before and after. With `check_only`, nothing is
/// changed and both are the current state.
pub fn migrate(
    dir: &Path,
    database: &DatabaseLocation,
    check_only: bool,
) -> Result<(SchemaStatus, SchemaStatus), PipelineError> {
    if check_only {
        let now = Db::schema_status_at(database, dir)?;
        return Ok((now, now));
    }
    // A shared database is migrated under its own lock (see Db::migrate);
    // the data directory is only this machine's scratch then.
    let _lock = if database.is_shared() { None } else { Some(DataLock::acquire(dir)?) };
    Db::migrate_at(database, dir)
}

/// The exclusive hold on a data directory; released when dropped.
#[derive(Debug)]
pub struct DataLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl DataLock {
    /// Takes the lock on `dir` (creating the directory), or fails at once
    /// with [`PipelineError::Locked`] naming the process holding it.
    pub fn acquire(dir: &Path) -> Result<DataLock, PipelineError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PipelineError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(PipelineError::Locked {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        format!("process {holder}")
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        // Ours now: say who holds it, for the next one to name.
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        write!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(DataLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataLock::acquire(dir.path()).expect("first");
        let second = DataLock::acquire(dir.path());
        match second {
            Err(PipelineError::Locked { holder, .. }) => {
                assert_eq!(holder, format!("process {}", std::process::id()))
            }
            other => panic!("a second lock was not refused: {other:?}"),
        }
        drop(first);
        DataLock::acquire(dir.path()).expect("free again once dropped");
    }
}
