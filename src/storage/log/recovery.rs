//! Start-up: lock the directory, check the format, remove leftovers of
//! interrupted writes, and rebuild the key directory from hint files or, where
//! a hint is missing or bad, by scanning the segment (verifying every CRC,
//! skipping and reporting damaged records, truncating a torn tail of the last
//! segment). Segments are replayed from oldest to newest id, so the newest
//! record of each key wins.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use super::commit::GroupCommit;
use super::keydir::{KeyDir, Location};
use super::record::FLAG_TOMBSTONE;
use super::segment::{self, HINT_EXT, SEG_EXT, TMP_EXT};
use super::vfs::{Fs, FsFile};
use super::{Inner, LogOptions, Segment, Stats, Writer, fsutil, hint};
use crate::keyspace::digest;
use crate::storage::{StoreError, Summary};

/// What recovery builds: the key directory, its content summary, and the
/// dead bytes per segment.
struct Rebuild {
    keydir: KeyDir,
    summary: Summary,
    dead: HashMap<u64, u64>,
}

impl Rebuild {
    /// Applies one record (from a hint or a scan).
    fn apply(&mut self, seg: u64, offset: u32, len: u32, flags: u8, digest: u64, key: &[u8]) {
        let tomb = flags & FLAG_TOMBSTONE != 0;
        let old = if tomb {
            *self.dead.entry(seg).or_default() += u64::from(len);
            self.keydir.remove(key)
        } else {
            self.keydir.insert(
                key,
                Location {
                    seg,
                    offset,
                    len,
                    digest,
                },
            )
        };
        let new = (!tomb).then_some(digest);
        self.summary.change(key, old.map(|o| o.digest), new);
        if let Some(o) = old {
            *self.dead.entry(o.seg).or_default() += u64::from(o.len);
        }
    }
}

/// Reads a whole file region into memory.
pub(crate) fn read_all(file: &impl FsFile, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

pub(crate) fn open<F: Fs>(fs: F, dir: &Path, opts: LogOptions) -> Result<Inner<F>, StoreError> {
    let started = Instant::now();
    crate::durable::create_dir_all_in(&fs, dir)?;
    let lock = fs.lock_dir(dir)?;
    let mut seg_ids = Vec::new();
    let mut hint_ids = Vec::new();
    for name in fs.list_dir(dir)? {
        let name = name.as_str();
        if name.ends_with(&format!(".{TMP_EXT}")) {
            tracing::info!(file = name, "removing leftover temporary file");
            crate::durable::remove_in(&fs, &dir.join(name))?;
            continue;
        }
        match segment::parse_name(name) {
            Some((id, SEG_EXT)) => seg_ids.push(id),
            Some((id, HINT_EXT)) => hint_ids.push(id),
            _ => {}
        }
    }
    fsutil::check_format(&fs, dir, !seg_ids.is_empty())?;
    seg_ids.sort_unstable();
    for id in &hint_ids {
        if seg_ids.binary_search(id).is_err() {
            tracing::info!(segment = id, "removing hint file without a segment");
            crate::durable::remove_in(&fs, &segment::hint_path(dir, *id))?;
        }
    }

    let mut rb = Rebuild {
        keydir: KeyDir::new(),
        summary: Summary::new(),
        dead: HashMap::new(),
    };
    let stats = Stats::default();
    let mut segs: BTreeMap<u64, Arc<Segment<F>>> = BTreeMap::new();
    let (mut from_hints, mut scanned) = (0u32, 0u32);
    let mut last_has_hint = false;
    let mut files = Vec::with_capacity(seg_ids.len());
    for &id in &seg_ids {
        let file = fs.open(&segment::seg_path(dir, id))?;
        let len = file.size()?;
        files.push((file, len));
    }
    // The newest segment with bytes is the one a power cut can have left a
    // torn tail in (empty ones after it are spares made ahead of a roll:
    // a closed segment is synced before any record of a later one reaches
    // its file, under `fsync always`).
    let tail = files.iter().rposition(|(_, len)| *len > 0).unwrap_or(0);
    for (i, ((file, mut len), &id)) in files.into_iter().zip(&seg_ids).enumerate() {
        let is_last = i + 1 == seg_ids.len();
        let is_tail = i >= tail;
        let path = segment::seg_path(dir, id);
        if len > u64::from(u32::MAX) {
            return Err(StoreError::Corrupt {
                file: path.display().to_string(),
                offset: 0,
                reason: format!("segment of {len} bytes exceeds the 4 GiB format limit"),
            });
        }
        let hint_file = segment::hint_path(dir, id);
        let mut has_hint = false;
        match fs.read(&hint_file) {
            Ok(bytes) => {
                match hint::decode(&bytes, len, |flags, off, rlen, digest, key| {
                    rb.apply(id, off, rlen, flags, digest, key)
                }) {
                    Ok(_) => has_hint = true,
                    Err(reason) => tracing::warn!(
                        hint = %hint_file.display(), %reason,
                        "ignoring bad hint file; scanning the segment instead"
                    ),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if has_hint {
            from_hints += 1;
        } else {
            scanned += 1;
            let buf = read_all(&file, len)?;
            let sum = segment::scan(&buf, |off, rlen, rec| {
                let digest = if rec.is_tombstone() {
                    0
                } else {
                    digest(rec.value)
                };
                rb.apply(id, off as u32, rlen, rec.flags, digest, rec.key)
            })
            .map_err(|e| StoreError::UnsupportedFormat(format!("{}: {e}", path.display())))?;
            for s in &sum.corrupt {
                tracing::warn!(
                    file = %path.display(), offset = s.offset, bytes = s.len, reason = %s.reason,
                    "skipping corrupt record (other replicas and repair cover it)"
                );
                *rb.dead.entry(id).or_default() += s.len;
            }
            stats
                .corrupt_at_recovery
                .fetch_add(sum.corrupt.len() as u64, Ordering::Relaxed);
            if sum.zero_tail > 0 {
                // Zero-filled ahead of the records (`PREALLOCATE`): the
                // file stays that long, the segment's data ends here.
                len = sum.valid_end;
            }
            if let Some(t) = &sum.torn_tail {
                if is_tail {
                    tracing::warn!(
                        file = %path.display(), offset = t.offset, bytes = t.len, reason = %t.reason,
                        "truncating torn tail of the newest segment"
                    );
                    file.set_len(sum.valid_end)?;
                    file.sync_all()?;
                    len = sum.valid_end;
                    stats
                        .torn_bytes_at_recovery
                        .fetch_add(t.len, Ordering::Relaxed);
                } else {
                    tracing::warn!(
                        file = %path.display(), offset = t.offset, bytes = t.len, reason = %t.reason,
                        "skipping corrupt bytes at the end of a closed segment"
                    );
                    stats.corrupt_at_recovery.fetch_add(1, Ordering::Relaxed);
                    *rb.dead.entry(id).or_default() += t.len;
                }
            }
        }
        if is_last {
            last_has_hint = has_hint;
        }
        segs.insert(
            id,
            Arc::new(Segment::new(id, file, len, 0, has_hint, opts.segment_size)),
        );
    }
    let Rebuild {
        keydir,
        summary,
        dead,
    } = rb;
    for (id, d) in dead {
        if let Some(s) = segs.get(&id) {
            s.dead.store(d, Ordering::Relaxed);
        }
    }

    // Keep appending to the last segment unless it was closed (has a hint).
    let active = match segs.values().next_back() {
        Some(last) if !last_has_hint => last.clone(),
        last => {
            let id = last.map_or(1 << segment::MINOR_BITS, |s| segment::next_major(s.id));
            let file = crate::durable::create_new_in(&fs, &segment::seg_path(dir, id))?;
            let seg = Arc::new(Segment::new(id, file, 0, 0, false, opts.segment_size));
            segs.insert(id, seg.clone());
            seg
        }
    };
    let active_id = active.id;
    // Appends overwrite what was zero-filled ahead of them before a restart.
    let active_alloc = active.file.size()?;
    let mut opened: Vec<(u64, u64)> = segs
        .values()
        .map(|s| (s.id, s.size.load(Ordering::Relaxed)))
        .collect();
    opened.sort_unstable();
    let recovered = crate::storage::RecoveryReport {
        corrupt_records: stats.corrupt_at_recovery.load(Ordering::Relaxed),
        torn_bytes: stats.torn_bytes_at_recovery.load(Ordering::Relaxed),
        manifest: crate::storage::Manifest { segments: opened },
    };
    tracing::info!(
        dir = %dir.display(),
        keys = keydir.len(),
        segments = segs.len(),
        from_hints,
        scanned,
        corrupt_records = stats.corrupt_at_recovery.load(Ordering::Relaxed),
        torn_bytes = stats.torn_bytes_at_recovery.load(Ordering::Relaxed),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "storage recovered"
    );
    Ok(Inner {
        fs,
        dir: dir.to_path_buf(),
        opts,
        keydir,
        summary,
        segments: RwLock::new(segs),
        writer: Mutex::new(Writer {
            active,
            lsn: 0,
            pending: Vec::new(),
            closed: Vec::new(),
            alloc: active_alloc,
        }),
        commit: GroupCommit::default(),
        relay: Default::default(),
        stats,
        stop: Mutex::new(false),
        wake: Condvar::new(),
        kick: AtomicBool::new(true),
        maint: Mutex::new(()),
        pins: Mutex::new(std::collections::HashMap::new()),
        recovered,
        closed: AtomicBool::new(false),
        spare: Mutex::new(None),
        active_id: AtomicU64::new(active_id),
        _lock: lock,
    })
}
