//! How every file a node writes reaches the disk so that a power cut leaves
//! either the old or the new version of it, never an empty or partial one.
//!
//! The rules (docs/storage.md, "What is fsynced when"):
//! - a file that is replaced as a whole (node id, member list, epoch,
//!   clean-stop marker, format file, index hints, compaction output) is
//!   written to a temporary file beside it, fsynced, renamed over the
//!   target, and then its directory is fsynced, so the rename itself
//!   survives ([`write_atomic`]);
//! - a file created empty to be appended to (a new log segment) is created
//!   and its directory fsynced before anything is written to it
//!   ([`create_new`]);
//! - deleted files are gone for good only once their directory is fsynced
//!   ([`remove`], or [`sync_dir`] after a batch of removals);
//! - a directory created for the node is made durable in its parent
//!   ([`create_dir_all`]).
//!
//! Every function here does its fsyncs before it returns; a caller that got
//! `Ok` may rely on the change surviving a power cut.

use std::path::{Path, PathBuf};

use crate::storage::log::vfs::{Fs, FsFile, RealFs};

/// Extension of the temporary file [`write_atomic`] writes before renaming.
/// Leftovers of it (a crash before the rename) are ignored by readers and
/// may be deleted at start.
pub const TMP_SUFFIX: &str = "tmp";

/// Fsyncs a directory so that creations, renames and deletions of its
/// entries are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    RealFs.sync_dir(dir)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temporary file [`write_atomic`] uses for `path`: the same name with
/// `.tmp` appended, in the same directory (a rename across directories or
/// file systems would not be atomic).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically and durably: write a temporary
/// file, fsync it, rename it over `path`, fsync the directory. After a power
/// cut `path` holds either its old content or `bytes`, never a mix and
/// never nothing (if it existed before).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_in(&RealFs, path, bytes)
}

/// [`write_atomic`] through the file system `fs`.
pub fn write_atomic_in<F: Fs>(fs: &F, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let f = fs.create(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()?;
        drop(f);
        fs.rename(&tmp, path)?;
        fs.sync_dir(&parent_of(path))
    })();
    if result.is_err() {
        let _ = fs.remove_file(&tmp);
    }
    result
}

/// Creates `path`, which must not exist, for reading and appending, and
/// makes its directory entry durable before returning it.
pub fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    create_new_in(&RealFs, path)
}

/// [`create_new`] through the file system `fs`.
pub fn create_new_in<F: Fs>(fs: &F, path: &Path) -> std::io::Result<F::File> {
    let file = fs.create_new(path)?;
    fs.sync_dir(&parent_of(path))?;
    Ok(file)
}

/// Deletes `path` durably; a file that is already gone is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    remove_in(&RealFs, path)
}

/// [`remove`] through the file system `fs`.
pub fn remove_in<F: Fs>(fs: &F, path: &Path) -> std::io::Result<()> {
    match fs.remove_file(path) {
        Ok(()) => fs.sync_dir(&parent_of(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and any missing parents, fsyncing the parent of each
/// directory it creates, so the whole path survives a power cut.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    create_dir_all_in(&RealFs, dir)
}

/// [`create_dir_all`] through the file system `fs`.
pub fn create_dir_all_in<F: Fs>(fs: &F, dir: &Path) -> std::io::Result<()> {
    if fs.is_dir(dir) {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || fs.is_dir(d) {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    for d in missing.iter().rev() {
        match fs.create_dir(d) {
            Ok(()) => {}
            // Made meanwhile by another process: its creator syncs it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && fs.is_dir(d) => continue,
            Err(e) => return Err(e),
        }
        fs.sync_dir(&parent_of(d))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-id");
        write_atomic(&path, b"a\n").unwrap();
        write_atomic(&path, b"bb\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"bb\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node-id")]);
        assert_eq!(tmp_path(&path), dir.path().join("node-id.tmp"));
    }

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old").unwrap();
        // The rename fails: the target is now a non-empty directory.
        let blocked = dir.path().join("d");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert!(!tmp_path(&blocked).exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn create_new_refuses_an_existing_file_and_remove_tolerates_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        create_new(&path).unwrap();
        assert!(create_new(&path).is_err());
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }

    #[test]
    fn create_dir_all_makes_every_missing_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a").join("b").join("c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(create_dir_all(&file.join("below")).is_err());
    }
}
