//! The file operations whose order decides what survives a crash: writing a file (and
//! fsyncing it), renaming, creating and removing folders and files, fsyncing a folder.
//! The sample store and the model registry make every change through [`Fs`], so that a
//! test can record them and replay each crash state a real file system allows
//! (`durable::crash`, test-only); in production [`StdFs`] does them with `std::fs`.
//!
//! Reads (`read`, `read_dir`, `exists`) are not here: they have nothing to persist, and the
//! crash explorer writes each crash state out as a real folder that the unchanged read
//! paths (the store's scan, the package loader and tract) open.
//!
//! The helpers say what makes a change durable on a POSIX file system without relying on
//! ext4's ordering: a file's data by its fsync, a name in a folder (created, renamed or
//! removed) by the folder's fsync.

use std::fmt::Debug;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The mutating file operations of the sample store and the registry.
///
/// Held as `Arc<dyn Fs>` by the sample store (`samples::SampleStore`) and the version
/// store (`registry::versions::Versions`) rather than as a type parameter: both are
/// cloned into several threads and named in many signatures, and a virtual call costs
/// nothing next to the fsync that follows it.
pub trait Fs: Debug + Send + Sync {
    /// Create (or truncate) `path` and write `bytes`; fsync the file when `sync`.
    fn write(&self, path: &Path, bytes: &[u8], sync: bool) -> io::Result<()>;
    /// `rename(2)`: replaces `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Create `path` and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// fsync a folder: the names created, renamed or removed in it so far persist.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// [`Fs`] on `std::fs`: what the daemon and the commands use.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl Fs for StdFs {
    fn write(&self, path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
}

/// The folder holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create `dir` and its missing parents so that they survive a crash: the folder above
/// each new one is fsynced (a new folder's name is only durable once its parent is).
pub fn create_dir_all(fs: &dyn Fs, dir: &Path) -> io::Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| !a.exists())
        .map(Path::to_path_buf)
        .collect();
    fs.create_dir_all(dir)?;
    for created in missing.iter().rev() {
        fs.sync_dir(parent_of(created))?;
    }
    Ok(())
}

/// Replace `path` with `bytes` atomically: written to `tmp` in the same folder, fsynced,
/// renamed over `path`. The new name is durable only after the caller fsyncs the folder
/// (done once for several files).
pub fn write_atomic(fs: &dyn Fs, path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    fs.write(tmp, bytes, true)?;
    fs.rename(tmp, path)
}

#[cfg(test)]
pub mod crash;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_nested_folders_and_writes_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        create_dir_all(&StdFs, &deep).expect("create");
        assert!(deep.is_dir());
        create_dir_all(&StdFs, &deep).expect("again: nothing to create");
        let target = deep.join("x.json");
        write_atomic(&StdFs, &target, &deep.join("x.json.tmp"), b"{}").expect("write");
        assert_eq!(std::fs::read(&target).expect("read"), b"{}");
        assert!(!deep.join("x.json.tmp").exists());
        assert_eq!(parent_of(Path::new("x")), Path::new("."));
    }
}
