//! File-system helpers of the log store: the format-version file. The
//! directory lock is [`super::vfs::Fs::lock_dir`]; durable writes, creations
//! and deletions go through [`crate::durable`]'s `*_in` functions.

use std::io::ErrorKind;
use std::path::Path;

use super::vfs::Fs;
use crate::storage::StoreError;

pub use super::vfs::LOCK_FILE;
/// Name of the format-version file inside a data directory.
pub const FORMAT_FILE: &str = "FORMAT";
/// Content of the format file this build writes and accepts.
pub const FORMAT_LINE: &str = "distro-db log-structured store, format 1\n";

/// Checks the format file of `dir`, creating it (durably) in a new directory.
/// A directory with data but no format file, or another format, is refused.
pub fn check_format<F: Fs>(fs: &F, dir: &Path, has_data: bool) -> Result<(), StoreError> {
    let path = dir.join(FORMAT_FILE);
    match fs.read(&path) {
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
            crate::durable::write_atomic_in(fs, &path, FORMAT_LINE.as_bytes())?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
