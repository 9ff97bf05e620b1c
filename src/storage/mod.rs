//! Local storage: the [`Store`] trait every backend implements, and the backends.
//!
//! A store maps opaque byte keys to opaque byte values. It knows nothing about
//! vector clocks or siblings: the replica layer ([`crate::replica`]) encodes a
//! versioned object into the value bytes. Reads and appends never wait for
//! a sync (they touch the key directory and the page cache only), so async
//! code calls them directly; durability is waited for separately, through
//! [`Durable`], so one group commit covers every write that arrived
//! meanwhile and a coordinator can replicate while its own sync runs. Calls
//! from many threads at once are safe. Stores also keep a [`Summary`] of
//! their contents for anti-entropy.

pub mod log;
pub mod memory;
pub mod relay;
pub mod summary;

pub use log::{FsyncPolicy, LogOptions, LogStore, ParseFsyncPolicyError};
pub use memory::MemoryStore;
pub use summary::Summary;

/// A log sequence number: the position of a write in its store's log.
/// `0` means "nothing to wait for".
pub type Lsn = u64;

/// What a store tells a writer to wait for before the write counts as
/// durable under the store's policy: nothing, or a group commit covering
/// its [`Lsn`].
#[derive(Debug)]
pub struct Durable(Option<Pending>);

/// A write not yet known durable: the LSN to wait for, the channel that
/// says how far the log is synced, and (when that channel is a
/// [`relay::SyncRelay`]'s) the syncer's own channel in case the relay goes
/// away meanwhile.
#[derive(Debug)]
struct Pending {
    rx: tokio::sync::watch::Receiver<SyncState>,
    lsn: Lsn,
    source: Option<tokio::sync::watch::Receiver<SyncState>>,
}

/// How far a store's log is synced, as published by its group commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Every write up to this LSN is on disk.
    pub synced: Lsn,
    /// A sync failed: no later write will ever be durable.
    pub poisoned: bool,
}

impl Durable {
    /// Already durable (or the policy promises nothing more).
    pub fn ready() -> Durable {
        Durable(None)
    }

    /// Durable once `rx` reports `lsn` synced.
    pub fn after(rx: tokio::sync::watch::Receiver<SyncState>, lsn: Lsn) -> Durable {
        Durable(Some(Pending {
            rx,
            lsn,
            source: None,
        }))
    }

    /// Durable once `local` (a [`relay::SyncRelay`]'s channel) reports `lsn`
    /// synced; `source` (the syncer's own channel) answers if the relay
    /// ends first.
    pub fn relayed(
        local: tokio::sync::watch::Receiver<SyncState>,
        source: tokio::sync::watch::Receiver<SyncState>,
        lsn: Lsn,
    ) -> Durable {
        Durable(Some(Pending {
            rx: local,
            lsn,
            source: Some(source),
        }))
    }

    /// True when there is nothing to wait for.
    pub fn is_ready(&self) -> bool {
        match &self.0 {
            None => true,
            Some(p) => p.rx.borrow().synced >= p.lsn,
        }
    }

    /// Waits until the write is durable; an error when the store failed a sync.
    pub async fn wait(self) -> Result<(), StoreError> {
        let Some(Pending {
            mut rx,
            lsn,
            source,
        }) = self.0
        else {
            return Ok(());
        };
        let relayed = rx
            .wait_for(|s| s.synced >= lsn || s.poisoned)
            .await
            .map(|s| *s);
        let state = match (relayed, source) {
            (Ok(state), _) => state,
            (Err(_), Some(mut source)) => source
                .wait_for(|s| s.synced >= lsn || s.poisoned)
                .await
                .map(|s| *s)
                .map_err(|_| StoreError::Closed)?,
            (Err(_), None) => return Err(StoreError::Closed),
        };
        if state.synced >= lsn {
            Ok(())
        } else {
            Err(StoreError::Poisoned)
        }
    }
}

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

/// What a store's group commit measured (`--metrics`).
#[derive(Debug, Clone)]
pub struct SyncHistograms {
    /// Seconds each fsync of the syncer took.
    pub fsync_seconds: crate::observe::histogram::Snapshot,
    /// Writes each of those fsyncs served.
    pub batch: crate::observe::histogram::Snapshot,
}

impl StoreStatus {
    /// The detail named `name`, if the backend gives it.
    pub fn detail(&self, name: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True once the store failed a sync and refuses writes.
    pub fn poisoned(&self) -> bool {
        self.detail("poisoned") == Some("true")
    }
}

/// A local key-value store. See the module doc for the threading contract.
pub trait Store: Send + Sync + 'static {
    /// Reads the value stored under `key`. Never waits for a sync: a
    /// key-directory look-up and a read from the page cache.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// [`crate::keyspace::digest`] of the value stored under `key`, without
    /// reading the value where the backend keeps digests (a digest read).
    fn digest(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.get(key)?.map(|v| crate::keyspace::digest(&v)))
    }
    /// Appends `value` under `key`: visible to [`Store::get`] when this
    /// returns, durable once [`Store::durable`] of the returned LSN resolves.
    /// Never waits for a sync.
    fn append(&self, key: &[u8], value: &[u8]) -> Result<Lsn, StoreError>;
    /// Removes `key` physically, like [`Store::append`]. (Logical deletes are
    /// tombstone objects; this is for garbage collection and hints.)
    fn append_delete(&self, key: &[u8]) -> Result<Lsn, StoreError>;
    /// What to wait for before a write at `lsn` is durable.
    fn durable(&self, lsn: Lsn) -> Durable;
    /// Blocks until a write at `lsn` is durable (threads, tools and tests;
    /// async code awaits [`Store::durable`]).
    fn wait_durable(&self, lsn: Lsn) -> Result<(), StoreError>;
    /// Stores `value` under `key` and waits until it is durable.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let lsn = self.append(key, value)?;
        self.wait_durable(lsn)
    }
    /// Removes `key` and waits until that is durable.
    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        let lsn = self.append_delete(key)?;
        self.wait_durable(lsn)
    }
    /// A snapshot of every key currently stored, in no particular order.
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The content summary (per-partition bucket hashes).
    fn summary(&self) -> &Summary;
    /// `(key, digest)` of the keys of partition `p` in `buckets`.
    fn partition_digests(&self, p: usize, buckets: &[u8]) -> Vec<(Vec<u8>, u64)>;
    /// Every key of partition `p` (tombstoned objects included).
    fn partition_keys(&self, p: usize) -> Vec<Vec<u8>>;
    /// How many keys partition `p` holds (tombstoned objects included).
    fn partition_len(&self, p: usize) -> usize;
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
    /// A point-in-time snapshot of the store's files, pinned against
    /// compaction until dropped, for a backup (`None` for a store without
    /// files).
    fn backup_snapshot(&self) -> Result<Option<log::Snapshot>, StoreError> {
        Ok(None)
    }
    /// The group commit's fsync durations and batch sizes (`None` for a
    /// store that does not sync).
    fn sync_histograms(&self) -> Option<SyncHistograms> {
        None
    }
    /// Stops background work, makes every write durable and refuses writes
    /// from now on; returns the files as they stand (`None` for a store
    /// without files). A graceful stop calls it last.
    fn close(&self) -> Result<Option<Manifest>, StoreError> {
        self.flush().map(|()| None)
    }
}
