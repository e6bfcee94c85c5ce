//! Writing outputs so that a crash, a full disk or a bad input never
//! leaves a partial file under its final name or destroys what was there.

use std::io::Write;
use std::path::{Path, PathBuf};

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    let file_name = path.file_name().ok_or_else(|| std::io::Error::other("not a file path"))?;
    let tmp = dir.join(format!(".{}.strata-tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a directory of files (`name`, `bytes`) in a temporary directory
/// beside `dir`, syncs them, then swaps it in place of `dir`. An existing
/// `dir` is replaced only if `replaceable` says it may be (so a typo never
/// deletes unrelated data); until the swap, the old contents stay whole.
pub(crate) fn write_dir_atomically<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    replaceable: impl Fn(&Path) -> bool,
) -> std::io::Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(std::io::Error::other("exists and is not a directory"));
        }
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !replaceable(dir) {
            return Err(std::io::Error::other(
                "exists and is not a Strata stream directory; refusing to replace it",
            ));
        }
    }
    let parent = parent_of(dir);
    let name = dir.file_name().ok_or_else(|| std::io::Error::other("not a directory path"))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.strata-tmp-", name.to_string_lossy()))
        .tempdir_in(&parent)?;
    for (file, bytes) in files {
        let mut f = std::fs::File::create(tmp.path().join(file))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let old = parent.join(format!(".{}.strata-old-{}", name.to_string_lossy(), std::process::id()));
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &old)?;
    }
    if let Err(e) = std::fs::rename(tmp.path(), dir) {
        if had_old {
            // Put the old directory back; the new one is dropped.
            let _ = std::fs::rename(&old, dir);
        }
        return Err(e);
    }
    let _ = tmp.keep();
    if had_old {
        std::fs::remove_dir_all(&old)?;
    }
    // Make the renames durable.
    if let Ok(d) = std::fs::File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(())
}
