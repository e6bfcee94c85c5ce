//! Content-addressed blob storage: every blob is named by the SHA-256 of
//! its bytes, so identical uploads, renders or chunks are stored once and a
//! name always means the same bytes.
//!
//! [`BlobStore`] is the seam: [`FsBlobStore`] keeps blobs in the data
//! directory, [`crate::objstore::ObjectBlobStore`] in an S3-compatible
//! bucket, and [`Blobs`] is whichever the store was opened with.
//! [`FsBlobStore`] writes each blob atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash never leaves a partial blob under its final name.
//!
//! A catalog run stores thousands of small blobs, and one fsync each made
//! the disk's flush latency the run's bottleneck (36% of a 1,000-model
//! ingest, not shrinking with more threads). So blobs can also be
//! [`staged`](BlobStore::stage) (written in full, not yet durable or
//! visible) and [`published`](BlobStore::publish) in groups: one flush of
//! the file system makes a whole group durable, then the renames make it
//! visible, then a second flush makes the names durable; the same
//! guarantee for two flushes per group instead of two per blob.
//!
//! Large blobs (the originals, mostly: 98% of a catalog's bytes) are written
//! with `O_DIRECT` on Linux, from a reused aligned buffer straight to the
//! disk, not through the page cache. Buffered, a 1 GB catalog's originals
//! cost the workers 1 to 2 s of CPU copying into freshly allocated cache
//! pages, plus the kernel's writeback after them (21% of a one-core
//! ingest's time, measured with perf), and they pushed out of the cache the
//! chunks the server is about to send, for files that are rarely read
//! again. A file system that refuses `O_DIRECT` (tmpfs) gets buffered
//! writes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_core::stream::sha256_hex;

use crate::PipelineError;

/// A blob's name: the lower-case hex SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(String);

impl BlobId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobId {
        BlobId(sha256_hex(bytes))
    }

    /// The id of `bytes` when their digest `hex` was computed already (the
    /// pipeline's input hash): no second pass over the bytes unless `hex`
    /// is not a well-formed id. Debug builds check that it is the digest.
    pub fn of_known(hex: &str, bytes: &[u8]) -> BlobId {
        match BlobId::parse(hex) {
            Some(id) => {
                debug_assert_eq!(id, BlobId::of(bytes), "of_known: {hex} is not the bytes' digest");
                id
            }
            None => BlobId::of(bytes),
        }
    }

    /// Parses a hex id; `None` unless it is 64 lower-case hex digits (so an
    /// id can never name a path outside the store).
    pub fn parse(s: &str) -> Option<BlobId> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| BlobId(s.to_string()))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where blobs live. Implementations must make `put` atomic (a blob is
/// either wholly there under its id or absent) and idempotent.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` (a no-op when a blob with the same id exists).
    fn put(&self, bytes: &[u8]) -> Result<BlobId, PipelineError>;
    /// The blob's bytes.
    fn get(&self, id: &BlobId) -> Result<Vec<u8>, PipelineError>;
    /// Whether the blob is stored.
    fn contains(&self, id: &BlobId) -> Result<bool, PipelineError>;

    /// Writes `bytes` so that [`publish`](BlobStore::publish) can make them
    /// visible; until then the blob may be absent. The default stores it
    /// at once (an object store's upload is durable when it returns).
    fn stage(&self, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        self.put(bytes)
    }

    /// [`stage`](BlobStore::stage) for bytes whose digest the caller has
    /// already computed: the pipeline hashes every input to identify it and
    /// the stream format hashes every chunk, and hashing a 1 GB catalog's
    /// originals a second time cost 0.6 s of an 8 s run. `id` must be
    /// `BlobId::of(bytes)` (debug builds check it); a wrong one would name
    /// a blob by bytes it does not hold. The default ignores `id` and
    /// hashes again, which is always safe.
    fn stage_hashed(&self, id: BlobId, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        debug_assert_eq!(id, BlobId::of(bytes), "stage_hashed: id is not the bytes' digest");
        self.stage(bytes)
    }

    /// Makes staged blobs durable and visible under their ids; when it
    /// returns `Ok`, every id in `ids` is stored.
    fn publish(&self, _ids: &[BlobId]) -> Result<(), PipelineError> {
        Ok(())
    }
}

/// Blobs as files under `ROOT/blobs/ab/abcdef...`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    /// Whether large blobs are still written with `O_DIRECT`: cleared for
    /// good the first time the file system refuses it.
    direct: Arc<AtomicBool>,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store under `root`, and clears
    /// temporary files a crashed writer left.
    pub fn open(root: &Path) -> Result<FsBlobStore, PipelineError> {
        let io = |e| PipelineError::Io { path: root.to_path_buf(), source: e };
        std::fs::create_dir_all(root.join("blobs")).map_err(io)?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io)?;
        }
        std::fs::create_dir_all(&tmp).map_err(io)?;
        Ok(FsBlobStore {
            root: root.to_path_buf(),
            direct: Arc::new(AtomicBool::new(cfg!(target_os = "linux"))),
        })
    }

    /// The file a blob lives in.
    pub fn path_of(&self, id: &BlobId) -> PathBuf {
        self.root.join("blobs").join(&id.0[..2]).join(&id.0)
    }

    /// Writes `bytes` in full to a new temporary file under `ROOT/tmp`
    /// (removed if anything fails), directly to the disk when they are
    /// large (see the module documentation).
    fn write_temp(&self, bytes: &[u8]) -> Result<tempfile::NamedTempFile, PipelineError> {
        let tmp_dir = self.root.join("tmp");
        if bytes.len() >= direct::MIN_LEN && self.direct.load(Ordering::Relaxed) {
            match direct::write_temp(&tmp_dir, bytes) {
                Ok(tmp) => return Ok(tmp),
                // EINVAL: this file system (or device) does not take direct
                // writes; buffered ones it does.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    self.direct.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(PipelineError::Io { path: tmp_dir, source: e }),
            }
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| PipelineError::Io { path: tmp_dir.clone(), source: e })?;
        tmp.write_all(bytes).map_err(|e| PipelineError::Io { path: tmp.path().to_path_buf(), source: e })?;
        Ok(tmp)
    }

    /// Whether large blobs are written with `O_DIRECT` (false once the file
    /// system refused it, and on other systems than Linux).
    pub fn writes_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }
}

/// Direct (`O_DIRECT`) writes: the buffer, offset and length of each write
/// must be multiples of the device's block size, so the whole blocks go
/// straight from the caller's bytes when they are page-aligned (a
/// [`crate::buffers::ModelBuf`]), otherwise through a per-thread aligned
/// buffer (reused: a fresh one would cost the page faults that direct
/// writes are there to avoid), and the last partial
/// block is written through the page cache once `O_DIRECT` is cleared.
/// Writing it padded and cutting the file to length instead made ext4 read
/// that block back from the disk, synchronously, for every blob (the
/// truncation zeroes the block's tail): one wait and one wake-up each.
mod direct {
    use std::io;
    use std::path::Path;

    /// Blobs smaller than this are written through the page cache: for
    /// them a direct write's latency costs more than the copy it saves.
    pub(super) const MIN_LEN: usize = 128 * 1024;

    #[cfg(target_os = "linux")]
    pub(super) fn write_temp(dir: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
        use std::cell::RefCell;
        use std::os::unix::fs::{FileExt, OpenOptionsExt};

        use crate::buffers::{ALIGN, Block};

        /// The most copied into the aligned buffer at once, so that a huge
        /// model does not leave every worker holding a huge buffer.
        const PIECE: usize = 8 << 20;

        thread_local! {
            static SCRATCH: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
        }

        let tmp = tempfile::Builder::new().make_in(dir, |path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(path)
        })?;
        let (whole, tail) = bytes.split_at(bytes.len() / ALIGN * ALIGN);
        if (whole.as_ptr() as usize).is_multiple_of(ALIGN) {
            // Aligned already (a `ModelBuf`): no copy.
            tmp.as_file().write_all_at(whole, 0)?;
        } else {
            SCRATCH.with_borrow_mut(|scratch| -> io::Result<()> {
                let mut offset = 0u64;
                for piece in whole.chunks(PIECE) {
                    let blocks = piece.len() / ALIGN;
                    if scratch.len() < blocks {
                        scratch.resize(blocks, Block([0; ALIGN]));
                    }
                    let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut scratch[..blocks]);
                    buf.copy_from_slice(piece);
                    tmp.as_file().write_all_at(buf, offset)?;
                    offset += buf.len() as u64;
                }
                Ok(())
            })?;
        }
        if !tail.is_empty() {
            let flags = rustix::fs::fcntl_getfl(tmp.as_file())?;
            rustix::fs::fcntl_setfl(tmp.as_file(), flags - rustix::fs::OFlags::DIRECT)?;
            tmp.as_file().write_all_at(tail, whole.len() as u64)?;
        }
        Ok(tmp)
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn write_temp(_: &Path, _: &[u8]) -> io::Result<tempfile::NamedTempFile> {
        Err(io::Error::from(io::ErrorKind::InvalidInput))
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        let id = BlobId::of(bytes);
        let path = self.path_of(&id);
        if path.exists() {
            return Ok(id);
        }
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| PipelineError::Io { path: p, source: e }
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = self.write_temp(bytes)?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(&path).map_err(|e| PipelineError::Io { path: path.clone(), source: e.error })?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(id)
    }

    fn stage(&self, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        self.stage_hashed(BlobId::of(bytes), bytes)
    }

    fn stage_hashed(&self, id: BlobId, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        debug_assert_eq!(id, BlobId::of(bytes), "stage_hashed: id is not the bytes' digest");
        let staged = self.root.join("tmp").join(&id.0);
        if self.path_of(&id).exists() || staged.exists() {
            return Ok(id);
        }
        // A unique file first, renamed to the id's name only when whole:
        // two workers staging the same bytes never see a half-written one.
        let tmp = self.write_temp(bytes)?;
        tmp.persist(&staged).map_err(|e| PipelineError::Io { path: staged.clone(), source: e.error })?;
        Ok(id)
    }

    fn publish(&self, ids: &[BlobId]) -> Result<(), PipelineError> {
        let tmp = self.root.join("tmp");
        let (pending, done): (Vec<&BlobId>, Vec<&BlobId>) =
            ids.iter().partition(|id| tmp.join(&id.0).exists());
        // "Ok means every id is stored", checked: a blob neither staged nor
        // stored (its staged file removed under us) fails the group.
        if let Some(lost) = done.iter().find(|id| !self.path_of(id).is_file()) {
            return Err(PipelineError::MissingBlob(lost.0.clone()));
        }
        if pending.is_empty() {
            return Ok(());
        }
        flush_file_system(&tmp, &pending.iter().map(|id| tmp.join(&id.0)).collect::<Vec<_>>())?;
        let mut dirs = std::collections::BTreeSet::new();
        for id in pending {
            let path = self.path_of(id);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Io { path: dir.clone(), source: e })?;
            match std::fs::rename(tmp.join(&id.0), &path) {
                Ok(()) => {}
                // Published meanwhile by another group with the same blob.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.exists() => {}
                Err(e) => return Err(PipelineError::Io { path, source: e }),
            }
            dirs.insert(dir);
        }
        flush_file_system(&tmp, &dirs.into_iter().collect::<Vec<_>>())
    }

    fn get(&self, id: &BlobId) -> Result<Vec<u8>, PipelineError> {
        let path = self.path_of(id);
        std::fs::read(&path).map_err(|e| PipelineError::Io { path, source: e })
    }

    fn contains(&self, id: &BlobId) -> Result<bool, PipelineError> {
        Ok(self.path_of(id).is_file())
    }
}

/// The store's blobs: in the data directory (the embedded default) or in
/// an S3-compatible bucket ([`crate::objstore`]). Synchronous code uses
/// the [`BlobStore`] methods; async code reads with [`Blobs::read`], and
/// streams by matching on the variant.
#[derive(Debug)]
pub enum Blobs {
    /// Files under `DATA/blobs`.
    Local(FsBlobStore),
    /// Objects under `PREFIX/blobs` in a bucket.
    Object(crate::objstore::ObjectBlobStore),
}

impl Blobs {
    /// Opens the blobs of the data directory `root` where `location` says.
    pub fn open(root: &Path, location: &crate::objstore::BlobLocation) -> Result<Blobs, PipelineError> {
        match location {
            crate::objstore::BlobLocation::Local => FsBlobStore::open(root).map(Blobs::Local),
            s3 => crate::objstore::ObjectBlobStore::open(s3).map(Blobs::Object),
        }
    }

    /// The object store, when blobs are in a bucket.
    pub fn object(&self) -> Option<&crate::objstore::ObjectBlobStore> {
        match self {
            Blobs::Local(_) => None,
            Blobs::Object(o) => Some(o),
        }
    }

    /// A blob's bytes, read from async code without blocking its thread.
    pub async fn read(&self, id: &BlobId) -> Result<bytes::Bytes, PipelineError> {
        match self {
            Blobs::Local(fs) => {
                let path = fs.path_of(id);
                tokio::fs::read(&path)
                    .await
                    .map(bytes::Bytes::from)
                    .map_err(|source| PipelineError::Io { path, source })
            }
            Blobs::Object(o) => o.read(id).await,
        }
    }
}

impl BlobStore for Blobs {
    fn put(&self, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        match self {
            Blobs::Local(b) => b.put(bytes),
            Blobs::Object(b) => b.put(bytes),
        }
    }

    fn get(&self, id: &BlobId) -> Result<Vec<u8>, PipelineError> {
        match self {
            Blobs::Local(b) => b.get(id),
            Blobs::Object(b) => b.get(id),
        }
    }

    fn contains(&self, id: &BlobId) -> Result<bool, PipelineError> {
        match self {
            Blobs::Local(b) => b.contains(id),
            Blobs::Object(b) => b.contains(id),
        }
    }

    fn stage(&self, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        match self {
            Blobs::Local(b) => b.stage(bytes),
            Blobs::Object(b) => b.stage(bytes),
        }
    }

    fn stage_hashed(&self, id: BlobId, bytes: &[u8]) -> Result<BlobId, PipelineError> {
        match self {
            Blobs::Local(b) => b.stage_hashed(id, bytes),
            Blobs::Object(b) => b.stage_hashed(id, bytes),
        }
    }

    fn publish(&self, ids: &[BlobId]) -> Result<(), PipelineError> {
        match self {
            Blobs::Local(b) => b.publish(ids),
            Blobs::Object(b) => b.publish(ids),
        }
    }
}

/// Makes everything written so far under `anchor`'s file system durable:
/// one `syncfs` on Linux (a single journal commit, however many files),
/// one fsync per path in `paths` elsewhere.
fn flush_file_system(anchor: &Path, paths: &[PathBuf]) -> Result<(), PipelineError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| PipelineError::Io { path: p, source: e }
    };
    #[cfg(target_os = "linux")]
    {
        let _ = paths;
        let dir = std::fs::File::open(anchor).map_err(io(anchor))?;
        rustix::fs::syncfs(&dir).map_err(|e| io(anchor)(e.into()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = anchor;
        for p in paths {
            std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(io(p))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_idempotent_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("opens");
        let a = store.put(b"hello").expect("put");
        assert_eq!(a.as_str(), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(store.put(b"hello").expect("again"), a);
        assert_eq!(store.get(&a).expect("get"), b"hello");
        assert!(store.contains(&a).expect("contains"));
        assert!(!store.contains(&BlobId::of(b"other")).expect("contains"));
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
    }

    #[test]
    fn publishing_a_staged_blob_that_vanished_fails_instead_of_claiming_it_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("opens");
        let a = store.stage(b"kept").expect("stage");
        let b = store.stage(b"lost").expect("stage");
        // What a second process clearing tmp/ did to the first one.
        std::fs::remove_file(dir.path().join("tmp").join(b.as_str())).expect("remove");
        match store.publish(&[a.clone(), b.clone()]) {
            Err(PipelineError::MissingBlob(id)) => assert_eq!(id, b.as_str()),
            other => panic!("publish claimed a missing blob stored: {other:?}"),
        }
    }

    #[test]
    fn staged_blobs_appear_only_when_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("opens");
        let a = store.stage(b"first").expect("stage");
        let b = store.stage(b"second").expect("stage");
        assert_eq!(store.stage(b"first").expect("again"), a);
        assert!(!store.contains(&a).expect("contains"), "not visible before publish");
        store.publish(&[a.clone(), b.clone()]).expect("publish");
        assert_eq!(store.get(&a).expect("get"), b"first");
        assert_eq!(store.get(&b).expect("get"), b"second");
        // Publishing again, or a blob that is already stored, is a no-op.
        store.publish(std::slice::from_ref(&a)).expect("again");
        assert_eq!(store.stage(b"first").expect("stored"), a);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
        // A staged blob left by a crash is cleared on open, never published.
        let c = store.stage(b"orphan").expect("stage");
        let store = FsBlobStore::open(dir.path()).expect("reopens");
        assert!(!store.contains(&c).expect("contains"));
    }

    #[test]
    fn a_blob_staged_with_its_known_digest_is_the_same_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("opens");
        let id = BlobId::of(b"known");
        assert_eq!(store.stage_hashed(id.clone(), b"known").expect("stage"), id);
        assert_eq!(store.stage(b"known").expect("again"), id, "the same staged file");
        store.publish(std::slice::from_ref(&id)).expect("publish");
        assert_eq!(store.get(&id).expect("get"), b"known");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not the bytes' digest")]
    fn a_wrong_known_digest_is_caught_in_debug_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("opens");
        let _ = store.stage_hashed(BlobId::of(b"other"), b"known");
    }

    /// Bytes that are no multiple of the 4 KiB block and span more than one
    /// 8 MiB piece of the aligned buffer, and a small blob.
    fn awkward_blobs() -> Vec<Vec<u8>> {
        let big: Vec<u8> =
            (0..(8 << 20) + 4097u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        vec![big, vec![7u8; direct::MIN_LEN + 1], vec![1u8; direct::MIN_LEN - 1], b"tiny".to_vec()]
    }

    #[test]
    fn large_blobs_are_written_whole_and_exact_whether_direct_or_buffered() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = FsBlobStore::open(dir.path()).expect("opens");
            store.direct.store(direct && store.writes_direct(), Ordering::Relaxed);
            let mut staged = Vec::new();
            for (i, bytes) in awkward_blobs().iter().enumerate() {
                // Half through put (fsync per blob), half staged.
                let id = if i % 2 == 0 {
                    store.put(bytes).expect("put")
                } else {
                    let id = store.stage(bytes).expect("stage");
                    staged.push(id.clone());
                    id
                };
                assert_eq!(id, BlobId::of(bytes));
            }
            store.publish(&staged).expect("publish");
            for bytes in awkward_blobs() {
                let id = BlobId::of(&bytes);
                let meta = std::fs::metadata(store.path_of(&id)).expect("stored");
                assert_eq!(meta.len(), bytes.len() as u64, "cut to its length, not the padded one");
                assert!(store.get(&id).expect("get") == bytes, "direct={direct}: bytes differ");
            }
            assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
        }
    }

    #[test]
    fn blobs_staged_from_aligned_model_buffers_are_exact() {
        // The direct path that writes whole blocks straight from the
        // reader's page-aligned buffer, then the tail through the cache.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("opens");
        let pool = crate::buffers::BufferPool::new(2, 64 << 20);
        let mut staged = Vec::new();
        for (i, bytes) in awkward_blobs().iter().enumerate() {
            let path = dir.path().join(format!("input-{i}"));
            std::fs::write(&path, bytes).expect("write input");
            let buf = pool.read(crate::buffers::ModelFile::open(&path).expect("open")).expect("read");
            assert_eq!(buf.as_ptr() as usize % crate::buffers::ALIGN, 0);
            staged.push(store.stage(&buf).expect("stage"));
        }
        store.publish(&staged).expect("publish");
        for (bytes, id) in awkward_blobs().iter().zip(&staged) {
            assert_eq!(id, &BlobId::of(bytes));
            assert!(&store.get(id).expect("get") == bytes, "{} bytes differ", bytes.len());
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn direct_writes_stay_on_where_the_file_system_takes_them() {
        // The test's temporary directory is on a file system that takes
        // O_DIRECT (ext4 and tmpfs both do on current kernels); if this
        // fails on another, the fallback is what runs there. (That the
        // page cache is bypassed was checked with fincore: 0 B cached.)
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("opens");
        store.put(&vec![3u8; direct::MIN_LEN * 2]).expect("put");
        assert!(store.writes_direct(), "direct writes were refused on {}", dir.path().display());
    }

    #[test]
    fn ids_are_only_hex_and_leftover_temporaries_are_cleared() {
        assert!(BlobId::parse("../../etc/passwd").is_none());
        assert!(BlobId::parse(&"A".repeat(64)).is_none());
        assert!(BlobId::parse(&"a".repeat(64)).is_some());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
        std::fs::write(dir.path().join("tmp/.half-written"), b"partial").expect("write");
        FsBlobStore::open(dir.path()).expect("opens");
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
    }
}
