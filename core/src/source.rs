//! Getting a model's bytes: a memory map for files, or a borrowed slice.
//!
//! The parser borrows from these bytes (binary STL facets are never copied),
//! so a [`ModelBytes`] must outlive everything parsed from it.

use std::fs::File;
use std::path::Path;

use crate::Error;

/// The bytes of one model file, either memory-mapped or read into memory.
#[derive(Debug)]
pub struct ModelBytes {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl ModelBytes {
    /// Maps `path` into memory.
    ///
    /// This is the crate's only `unsafe` entry point: it exists because a
    /// binary STL is parsed in place, and a map is what makes that free.
    ///
    /// # Safety
    /// The file must not be truncated or modified, by this process or any
    /// other, while the returned value (or anything borrowed from it) is
    /// alive: the operating system reflects such writes into the mapping,
    /// which Rust treats as immutable (a truncation raises SIGBUS). Map only
    /// files you own, such as an upload spooled to the service's own
    /// directory, or accept that risk explicitly, as a command-line tool
    /// reading the user's own files does (ripgrep makes the same choice).
    pub unsafe fn map(path: &Path) -> Result<ModelBytes, Error> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the caller upholds this function's contract: nobody
        // modifies or truncates the file while the map is alive.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(io)?;
        // The parser makes one forward pass; tell the kernel so it reads ahead.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(ModelBytes { inner: Inner::Mapped(map) })
    }

    /// Reads `path` into memory: the safe choice for files another process
    /// may rewrite while we parse them.
    pub fn read(path: &Path) -> Result<ModelBytes, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Ok(ModelBytes { inner: Inner::Owned(bytes) })
    }

    /// Wraps bytes that are already in memory (an upload, a test fixture).
    pub fn from_vec(bytes: Vec<u8>) -> ModelBytes {
        ModelBytes { inner: Inner::Owned(bytes) }
    }

    /// The model's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Mapped(map) => map,
            Inner::Owned(bytes) => bytes,
        }
    }
}
