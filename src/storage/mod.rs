//! Local storage: the [`Store`] trait every backend implements, and the backends.
//!
//! A store maps opaque byte keys to opaque byte values. It knows nothing about
//! vector clocks or siblings: the replica layer ([`crate::replica`]) encodes a
//! versioned object into the value bytes. Every call is blocking (a durable
//! backend may wait for an fsync), so async code calls it from
//! `tokio::task::spawn_blocking`. Calls from many threads at once must be safe;
//! a durable backend uses that concurrency for group commit.

pub mod log;
pub mod memory;

pub use log::{FsyncPolicy, LogOptions, LogStore, ParseFsyncPolicyError};
pub use memory::MemoryStore;

/// Errors a storage backend can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused a read, write or sync.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A record failed its checksum or could not be decoded.
    #[error("corrupt record in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file holding the record.
        file: String,
        /// Byte offset of the record in that file.
        offset: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// A key or value exceeds what the backend accepts.
    #[error("{what} too large: {len} bytes (the limit is {limit})")]
    TooLarge {
        /// "key" or "value".
        what: &'static str,
        /// The offending length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The data directory is already used by another process.
    #[error("data directory {0} is locked by another process")]
    Locked(String),
    /// The data directory was written by an unknown format version.
    #[error("unsupported on-disk format: {0}")]
    UnsupportedFormat(String),
    /// A previous sync failed; the store refuses writes until reopened, because
    /// the kernel may have dropped the dirty pages that failed to sync.
    #[error("store is poisoned after a failed sync; restart the node")]
    Poisoned,
    /// An option passed to the backend is out of range.
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    /// The store was closed (the node is stopping).
    #[error("store is closed")]
    Closed,
}

/// The files of a durable store as they stood at a point: every segment's
/// id and size. A graceful stop records it; the next start compares it with
/// what recovery found, which detects a log cut short even at a record
/// boundary, or a missing file, while the node was stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `(segment id, size in bytes)`, ascending by id.
    pub segments: Vec<(u64, u64)>,
}

impl Manifest {
    /// One `segment <id hex> <size>` line per segment.
    pub fn to_text(&self) -> String {
        self.segments
            .iter()
            .map(|(id, size)| format!("segment {id:016x} {size}\n"))
            .collect()
    }

    /// Parses the `segment` lines of `text` (other lines are ignored).
    pub fn parse(text: &str) -> Option<Manifest> {
        let mut segments = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("segment") {
                continue;
            }
            let id = u64::from_str_radix(words.next()?, 16).ok()?;
            let size = words.next()?.parse().ok()?;
            segments.push((id, size));
        }
        segments.sort_unstable();
        Some(Manifest { segments })
    }

    /// Why `found` (what recovery found) is not exactly `self` (what was
    /// recorded), or `None` when they match.
    pub fn difference(&self, found: &Manifest) -> Option<String> {
        for (id, size) in &self.segments {
            match found.segments.iter().find(|(f, _)| f == id) {
                None => return Some(format!("segment {id:016x} is missing")),
                Some((_, got)) if got != size => {
                    return Some(format!(
                        "segment {id:016x} has {got} bytes where the clean stop recorded {size}"
                    ));
                }
                Some(_) => {}
            }
        }
        found
            .segments
            .iter()
            .find(|(f, size)| *size > 0 && !self.segments.iter().any(|(id, _)| id == f))
            .map(|(f, _)| format!("segment {f:016x} was not there at the clean stop"))
    }
}

/// What a durable store's recovery found at open: anything it had to skip
/// or cut, and the files it opened (before any new write).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Damaged records skipped.
    pub corrupt_records: u64,
    /// Bytes of a torn tail truncated from the last segment.
    pub torn_bytes: u64,
    /// The segments as opened.
    pub manifest: Manifest,
}

impl RecoveryReport {
    /// True when recovery dropped nothing.
    pub fn is_clean(&self) -> bool {
        self.corrupt_records == 0 && self.torn_bytes == 0
    }
}

/// Figures a backend reports for `STATUS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// Backend name, e.g. "memory" or "log".
    pub backend: String,
    /// Number of live keys.
    pub keys: u64,
    /// Bytes held (in memory or on disk).
    pub bytes: u64,
    /// Segment files on disk (0 for in-memory backends).
    pub segments: u64,
    /// Bytes on disk held by superseded or deleted records and tombstones.
    pub dead_bytes: u64,
    /// Bytes freed by compaction since the store was opened.
    pub reclaimed_bytes: u64,
    /// Corrupt records skipped (never served) during the last recovery.
    pub corrupt_records: u64,
    /// Free-form extra lines (segments, reclaimed bytes, ...).
    pub details: Vec<(String, String)>,
}

/// A local key-value store. See the module doc for the threading contract.
pub trait Store: Send + Sync + 'static {
    /// Reads the value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key`, replacing any earlier value. When this
    /// returns `Ok`, the write is as durable as the backend's policy promises.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` physically. (Logical deletes are tombstone objects
    /// written with `put`; this is for garbage collection.)
    fn delete(&self, key: &[u8]) -> Result<(), StoreError>;
    /// A snapshot of every key currently stored, in no particular order.
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Figures for `STATUS`.
    fn status(&self) -> StoreStatus;
    /// Makes every write so far durable (a graceful stop calls it).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// What recovery found at open (`None` for a store without files).
    fn recovery(&self) -> Option<RecoveryReport> {
        None
    }
    /// Stops background work, makes every write durable and refuses writes
    /// from now on; returns the files as they stand (`None` for a store
    /// without files). A graceful stop calls it last.
    fn close(&self) -> Result<Option<Manifest>, StoreError> {
        self.flush().map(|()| None)
    }
}
