//! The file-system seam of the log store: every file operation the engine
//! makes (create, open, positional write and read, mapping, `set_len`,
//! `fdatasync`/`fsync`, rename, remove, directory fsync, directory listing,
//! the directory lock) goes through an [`Fs`] and its [`FsFile`]s.
//!
//! [`RealFs`] is the real thing: each method is one `#[inline]` call into
//! `std::fs` (static dispatch; `LogStore` is generic over its `Fs` and
//! defaults to `RealFs`, so the durable-write path makes the same system
//! calls with the same buffers as before the seam existed).
//!
//! The test suite has a simulated file system (`simfs`, test builds only)
//! that keeps, per file, the bytes known to be on disk and the changes not
//! yet covered by a completed sync, so a test can cut the power at any
//! operation and reopen the store from what a disk would hold.
//!
//! # What survives a power cut (POSIX, and ext4 with `data=ordered`)
//!
//! The rules the engine relies on and the simulation enforces:
//! 1. File *contents* written with `pwrite` are durable only once an
//!    `fdatasync` or `fsync` **of that file** has returned. `fdatasync`
//!    also persists the file size (the metadata needed to read the data
//!    back), so an append followed by `fdatasync` is durable.
//! 2. Unsynced writes may reach the disk in part: any prefix of them, in
//!    order, may survive, and the last one may be *torn* (only its first
//!    bytes written). A file extended without a sync may come back with a
//!    tail of zeros or garbage where the unsynced data should be.
//! 3. A *directory entry* change (create, rename, remove) is durable only
//!    once the **directory** is fsynced; syncing the file does not make its
//!    name durable (POSIX; ext4 often does, but nothing promises it). A
//!    file created and synced but whose directory was not fsynced can
//!    vanish; a renamed file can come back under its old name; a removed
//!    file can come back.
//! 4. Unsynced directory changes may survive in part: any prefix of one
//!    directory's changes, in order (ext4 journals metadata in order).
//! 5. A directory created with `mkdir` is durable once its parent is
//!    fsynced; until then it can vanish with everything in it.
//! 6. A failed sync (EIO) means the dirty pages may already be dropped: the
//!    engine poisons the store rather than retry.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::storage::StoreError;

/// An open file of an [`Fs`].
pub trait FsFile: Send + Sync + 'static {
    /// Writes all of `buf` at `offset` (`pwrite`, not durable until a sync).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Fills `buf` from `offset` (`pread`); an error if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// The file's current length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Truncates or extends the file (not durable until a sync).
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// `fdatasync`: the contents and size written so far are durable.
    fn sync_data(&self) -> std::io::Result<()>;
    /// `fsync`: like [`FsFile::sync_data`] plus every other inode field.
    fn sync_all(&self) -> std::io::Result<()>;
    /// A read-only shared mapping of the first `len` bytes, if this file
    /// system can map (the simulation cannot; reads then use `pread`).
    fn map(&self, _len: u64) -> Option<memmap2::Mmap> {
        None
    }
}

/// The file operations of the log store. See the module doc for the
/// durability rules every implementation follows.
pub trait Fs: Send + Sync + 'static {
    /// An open file.
    type File: FsFile;
    /// Held while the store has its directory open.
    type Lock: Send + Sync + 'static;
    /// Creates `path`, which must not exist, for reading and writing.
    fn create_new(&self, path: &Path) -> std::io::Result<Self::File>;
    /// Creates or truncates `path` for writing.
    fn create(&self, path: &Path) -> std::io::Result<Self::File>;
    /// Opens the existing `path` for reading and writing.
    fn open(&self, path: &Path) -> std::io::Result<Self::File>;
    /// Reads the whole of `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Renames `from` to `to` (same directory), replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;
    /// Fsyncs the directory `dir`: its entry changes so far are durable.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// The names of the entries of `dir` (names that are not UTF-8 are left out).
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    /// Creates the directory `dir` (its parent must exist).
    fn create_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// True if `dir` is an existing directory.
    fn is_dir(&self, dir: &Path) -> bool;
    /// Takes the exclusive lock of the store directory `dir`; fails with
    /// [`StoreError::Locked`] while another holder has it.
    fn lock_dir(&self, dir: &Path) -> Result<Self::Lock, StoreError>;
}

/// The real file system (`std::fs`, `pwrite`, `fdatasync`, `flock`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

impl FsFile for File {
    #[inline]
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    #[inline]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    #[inline]
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    #[inline]
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }
    #[inline]
    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }
    #[inline]
    fn sync_all(&self) -> std::io::Result<()> {
        File::sync_all(self)
    }
    fn map(&self, len: u64) -> Option<memmap2::Mmap> {
        // SAFETY: the mapping is read-only and the store only reads bytes
        // below a segment's `flushed` offset through it; it never truncates
        // a segment below that while it is open, and the directory lock
        // keeps other stores out. A file shortened behind the store's back
        // would fault (SIGBUS) instead of failing a read; docs/storage.md
        // states this.
        unsafe { memmap2::MmapOptions::new().len(len as usize).map(self) }
            .map_err(|e| tracing::warn!(error = %e, "cannot map segment; reads use pread"))
            .ok()
    }
}

impl Fs for RealFs {
    type File = File;
    type Lock = File;
    #[inline]
    fn create_new(&self, path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }
    #[inline]
    fn create(&self, path: &Path) -> std::io::Result<File> {
        File::create(path)
    }
    #[inline]
    fn open(&self, path: &Path) -> std::io::Result<File> {
        OpenOptions::new().read(true).write(true).open(path)
    }
    #[inline]
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    #[inline]
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }
    #[inline]
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
    #[inline]
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
    #[inline]
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir(dir)
    }
    #[inline]
    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }
    /// An exclusive, non-blocking `flock` on `dir/LOCK`, released when the
    /// file is closed (and by the kernel if the process dies).
    fn lock_dir(&self, dir: &Path) -> Result<File, StoreError> {
        let path = dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        // SAFETY: flock takes a valid open descriptor (owned by `f`) and flags.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::WouldBlock {
                return Err(StoreError::Locked(dir.display().to_string()));
            }
            return Err(err.into());
        }
        // Informational only: which process holds the lock.
        let _ = f.set_len(0);
        let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
        Ok(f)
    }
}
