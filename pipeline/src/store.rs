//! The data directory's owner: one process at a time.
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

use crate::PipelineError;

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
