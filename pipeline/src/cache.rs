//! A bounded cache of derived files on disk (`DATA/cache`): snapshots
//! rendered on demand for views and sizes ingest did not make.
//!
//! Entries are files named by their key, written atomically (temporary
//! name, rename). The cache keeps its total size under a budget: when a
//! write takes it over, the least recently used entries (by modification
//! time, which a hit refreshes) are removed until it is at three quarters
//! of the budget. Anything in it can be made again, so losing an entry is
//! only a cost, never a loss.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory of cached files under a byte budget.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    budget: u64,
    used: AtomicU64,
    /// One eviction at a time.
    evicting: Mutex<()>,
}

impl DiskCache {
    /// The cache in `dir` (created), holding at most `budget` bytes; what
    /// is there already is counted.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let mut used = 0;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            // A temporary file a killed writer left is no entry.
            if name.to_string_lossy().contains(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if let Ok(meta) = entry.metadata() {
                used += meta.len();
            }
        }
        Ok(DiskCache { dir: dir.to_path_buf(), budget, used: AtomicU64::new(used), evicting: Mutex::new(()) })
    }

    /// The bytes kept now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let ok = !key.is_empty()
            && key.len() <= 200
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !key.starts_with('.');
        ok.then(|| self.dir.join(key))
    }

    /// The entry `key`, if cached (and marks it recently used).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key)?;
        let bytes = std::fs::read(&path).ok()?;
        if let Ok(file) = std::fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some(bytes)
    }

    /// Keeps `bytes` as `key` (an entry larger than a quarter of the
    /// budget is not kept), then evicts while over the budget.
    pub fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.path(key) else { return Ok(()) };
        let len = bytes.len() as u64;
        if len > self.budget / 4 {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{key}.{}.tmp", crate::ids::random_hex(4)));
        std::fs::write(&tmp, bytes)?;
        let replaced = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::rename(&tmp, &path)?;
        let now = self.used.fetch_add(len, Ordering::Relaxed) + len;
        self.used.fetch_sub(replaced.min(now), Ordering::Relaxed);
        if self.used() > self.budget {
            self.evict();
        }
        Ok(())
    }

    /// Removes the least recently used entries until the cache is at
    /// three quarters of its budget.
    fn evict(&self) {
        let Ok(_one) = self.evicting.try_lock() else { return };
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().contains(".tmp"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let target = self.budget / 4 * 3;
        for (_, len, path) in files {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        self.used.store(total, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_under_its_budget_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = DiskCache::open(dir.path(), 4000).expect("open");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..4 {
            cache.put(&format!("e{i}"), &[i as u8; 900]).expect("put");
            // Older entries look older, as they would after real use.
            let file =
                std::fs::File::options().write(true).open(dir.path().join(format!("e{i}"))).expect("f");
            file.set_modified(old + std::time::Duration::from_secs(i)).expect("mtime");
        }
        assert_eq!(cache.used(), 3600);
        // A hit makes e0 the most recently used.
        assert_eq!(cache.get("e0").as_deref(), Some(&[0u8; 900][..]));
        cache.put("e4", &[4; 900]).expect("put");
        assert!(cache.used() <= 3000, "over budget: {}", cache.used());
        assert!(cache.get("e1").is_none() && cache.get("e2").is_none(), "the least recently used stayed");
        assert!(cache.get("e0").is_some() && cache.get("e4").is_some(), "recent entries went");
        // Too big for the budget, or a key that is a path: not kept.
        cache.put("big", &[0; 1001]).expect("put");
        assert!(cache.get("big").is_none());
        cache.put("../escape", b"x").expect("put");
        assert!(!dir.path().join("../escape").exists());
        // Reopened, it counts what is there and drops a killed write.
        std::fs::write(dir.path().join("e9.abcd.tmp"), b"partial").expect("tmp");
        let again = DiskCache::open(dir.path(), 4000).expect("reopen");
        assert_eq!(again.used(), cache.used());
        assert!(!dir.path().join("e9.abcd.tmp").exists());
    }
}
