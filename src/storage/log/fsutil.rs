//! File-system helpers of the log store: the data-directory lock (flock on a
//! `LOCK` file) and the format-version file. Durable writes, creations and
//! deletions go through [`crate::durable`].

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::storage::StoreError;

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the format-version file inside a data directory.
pub const FORMAT_FILE: &str = "FORMAT";
/// Content of the format file this build writes and accepts.
pub const FORMAT_LINE: &str = "distro-db log-structured store, format 1\n";

/// Takes an exclusive, non-blocking `flock` on `dir/LOCK`. The lock lasts as
/// long as the returned file is open (and is released by the kernel if the
/// process dies).
pub fn lock_dir(dir: &Path) -> Result<File, StoreError> {
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

/// Checks the format file of `dir`, creating it (durably) in a new directory.
/// A directory with data but no format file, or another format, is refused.
pub fn check_format(dir: &Path, has_data: bool) -> Result<(), StoreError> {
    let path = dir.join(FORMAT_FILE);
    match fs::read(&path) {
        Ok(b) if b == FORMAT_LINE.as_bytes() => Ok(()),
        Ok(b) => Err(StoreError::UnsupportedFormat(format!(
            "{} says {:?}; this build reads {:?}",
            path.display(),
            String::from_utf8_lossy(&b[..b.len().min(200)]),
            FORMAT_LINE.trim_end()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if has_data {
                return Err(StoreError::UnsupportedFormat(format!(
                    "{} holds segment files but no {FORMAT_FILE} file",
                    dir.display()
                )));
            }
            crate::durable::write_atomic(&path, FORMAT_LINE.as_bytes())?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
