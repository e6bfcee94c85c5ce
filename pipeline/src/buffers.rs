//! Page-aligned, recycled buffers for the models' bytes.
//!
//! Two copies of every input were pure overhead in a catalog run: the
//! store's direct (`O_DIRECT`) writes need page-aligned memory, so each
//! original went through an aligned bounce buffer, and each input got a
//! fresh allocation that the kernel had to fault in and zero. An input read
//! into a [`ModelBuf`] is already aligned, so its whole blocks go from the
//! buffer to the disk, and the buffer goes back to a [`BufferPool`] for the
//! next input instead of back to the allocator. At 2 jobs on 2 cores that
//! was 0.1 s of CPU per 1,000 models that the workers did not get.
//! The buffers are anonymous maps, so they are page-aligned by construction
//! and go back to the system when freed.

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use memmap2::MmapMut;

/// The alignment of a buffer, which suits 512-byte and 4 KiB sector
/// devices alike.
pub const ALIGN: usize = 4096;

/// One aligned block: a `Vec` of these is page-aligned memory without any
/// `unsafe` allocation code (the store's bounce buffer).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
pub(crate) struct Block(pub(crate) [u8; ALIGN]);

/// Spare buffers, handed out by [`BufferPool::read`] and taken back when a
/// [`ModelBuf`] is dropped. It keeps at most `keep` of them and at most
/// `keep_bytes` in all, whatever the catalog's size: a buffer that would go
/// over is freed, so one huge model does not pin its size in memory for the
/// rest of the run.
#[derive(Debug)]
pub struct BufferPool {
    spare: Mutex<Vec<MmapMut>>,
    keep: usize,
    keep_bytes: usize,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Block")
    }
}

impl BufferPool {
    /// A pool that keeps up to `keep` spare buffers (about the number of
    /// models in flight is right: more are never all in use at once) of
    /// `keep_bytes` in all.
    pub fn new(keep: usize, keep_bytes: usize) -> BufferPool {
        BufferPool { spare: Mutex::new(Vec::new()), keep, keep_bytes }
    }

    /// Reads the whole of `file` into a buffer from the pool. Its size is
    /// a hint only: a file that grows or shrinks while it is read gives the
    /// bytes that were read.
    pub fn read(&self, file: ModelFile) -> std::io::Result<ModelBuf<'_>> {
        self.read_from(file.file, file.size as usize)
    }

    /// Reads `file` to its end, starting with room for `hint` bytes.
    fn read_from(&self, mut file: std::fs::File, hint: usize) -> std::io::Result<ModelBuf<'_>> {
        let mut buf = self.take(hint + 1)?;
        loop {
            if buf.len == buf.bytes_mut().len() {
                buf.grow()?;
            }
            let len = buf.len;
            match file.read(&mut buf.bytes_mut()[len..]) {
                Ok(0) => return Ok(buf),
                Ok(n) => buf.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A buffer able to hold at least `bytes` bytes: the smallest spare
    /// that fits, else a new anonymous map. A map rather than the heap, so
    /// that a freed buffer goes back to the system at once: through the
    /// allocator, freed model-sized blocks stayed in its heap and doubled
    /// the run's peak RSS.
    fn take(&self, bytes: usize) -> std::io::Result<ModelBuf<'_>> {
        let mut spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fitting = spare
            .iter()
            .enumerate()
            .filter(|(_, m)| m.len() >= bytes)
            .min_by_key(|(_, m)| m.len())
            .map(|(i, _)| i);
        let map = match fitting {
            Some(i) => spare.swap_remove(i),
            None => {
                drop(spare);
                MmapMut::map_anon(bytes.next_multiple_of(ALIGN).max(ALIGN))?
            }
        };
        Ok(ModelBuf { map: Some(map), len: 0, pool: self })
    }

    fn give_back(&self, map: MmapMut) {
        let mut spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept: usize = spare.iter().map(|m| m.len()).sum();
        if spare.len() < self.keep && kept + map.len() <= self.keep_bytes {
            spare.push(map);
        }
    }
}

/// A model file opened for reading, with its size: apart from reading it,
/// so that the reader can reserve memory by the size first, with one open
/// and one stat for both.
#[derive(Debug)]
pub struct ModelFile {
    file: std::fs::File,
    size: u64,
}

impl ModelFile {
    /// Opens `path`, which must be a regular file: a device or a pipe
    /// named like a model (`/dev/zero` behind a symlink) would be read for
    /// ever.
    pub fn open(path: &Path) -> std::io::Result<ModelFile> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(ModelFile { file, size: meta.len() })
    }

    /// The file's size when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A model's bytes in page-aligned memory; derefs to the bytes. Dropping it
/// returns its memory to the pool it came from.
#[derive(Debug)]
pub struct ModelBuf<'a> {
    /// Always `Some` until dropped.
    map: Option<MmapMut>,
    len: usize,
    pool: &'a BufferPool,
}

impl ModelBuf<'_> {
    /// Doubles the buffer (a file that grew while it was read).
    fn grow(&mut self) -> std::io::Result<()> {
        let old = self.bytes_mut();
        let mut map = MmapMut::map_anon(old.len() * 2)?;
        map[..old.len()].copy_from_slice(old);
        if let Some(old) = self.map.replace(map) {
            self.pool.give_back(old);
        }
        Ok(())
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or_default()
    }
}

impl std::ops::Deref for ModelBuf<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[..self.len])
    }
}

impl Drop for ModelBuf<'_> {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            self.pool.give_back(map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_awkward_sizes_are_read_whole_aligned_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let pool = BufferPool::new(2, 1 << 20);
        // Sizes around block boundaries, read twice so the second round
        // reuses buffers that held longer files (stale bytes must not show).
        for round in 0..2u8 {
            for len in [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 17, 200_000] {
                let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ round).collect();
                let path = dir.path().join(format!("f{len}"));
                std::fs::write(&path, &bytes).unwrap();
                let buf = pool.read(ModelFile::open(&path).unwrap()).unwrap();
                assert_eq!(&buf[..], &bytes[..], "len {len}, round {round}");
                assert_eq!(buf.as_ptr() as usize % ALIGN, 0, "len {len}");
            }
        }
        assert!(pool.spare.lock().unwrap().len() <= 2, "the pool keeps at most `keep` buffers");
    }

    #[test]
    fn a_buffer_goes_back_to_the_pool_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.stl");
        std::fs::write(&path, vec![7u8; 100_000]).unwrap();
        let pool = BufferPool::new(4, 1 << 20);
        let first = pool.read(ModelFile::open(&path).unwrap()).unwrap().as_ptr();
        let second = pool.read(ModelFile::open(&path).unwrap()).unwrap();
        assert_eq!(second.as_ptr(), first, "the dropped buffer was reused");
        assert!(pool.spare.lock().unwrap().is_empty(), "the one buffer is in use");
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (small, large) = (dir.path().join("small"), dir.path().join("large"));
        std::fs::write(&small, vec![1u8; 10_000]).unwrap();
        std::fs::write(&large, vec![2u8; 300_000]).unwrap();
        let pool = BufferPool::new(8, 64 * 1024);
        drop((
            pool.read(ModelFile::open(&small).unwrap()).unwrap(),
            pool.read(ModelFile::open(&large).unwrap()).unwrap(),
        ));
        let spare = pool.spare.lock().unwrap();
        assert_eq!(spare.len(), 1, "the large buffer was freed, the small one kept");
        assert!(spare[0].len() <= 64 * 1024);
    }

    #[test]
    fn a_file_longer_than_its_size_said_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grown.stl");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let pool = BufferPool::new(4, 1 << 20);
        // As if the file had been empty when its size was taken.
        let buf = pool.read_from(std::fs::File::open(&path).unwrap(), 0).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
        assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
    }

    #[test]
    #[cfg(unix)]
    fn a_device_is_refused_rather_than_read_for_ever() {
        let err = ModelFile::open(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not a regular file"));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = ModelFile::open(Path::new("/nonexistent/strata/model.stl")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
