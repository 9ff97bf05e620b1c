//! Background maintenance: writes hint files for closed segments, and
//! compacts closed segments whose live fraction fell below the threshold.
//!
//! Compaction copies the live records of the chosen segments (byte for byte,
//! so their CRCs stay valid) into new segments whose ids sort just after the
//! newest input and before every later segment, writes their hints, then
//! re-points the key directory with compare-and-swap (a concurrent write
//! always wins), and finally deletes the inputs, oldest first. Readers and
//! writers are never blocked for longer than one key-directory update. A
//! tombstone is dropped only when every segment older than it is among the
//! inputs (so no older value it hides can survive); otherwise it is copied.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::hint::{self, HintEntry};
use super::keydir::Location;
use super::recovery::read_all;
use super::segment::{self, MINOR_BITS};
use super::vfs::{Fs, FsFile};
use super::{Inner, Segment};
use crate::storage::StoreError;

/// The maintenance thread: runs until the store is dropped.
pub(crate) fn maintenance_loop<F: Fs>(inner: &Inner<F>) {
    tracing::debug!(dir = %inner.dir.display(), "storage maintenance thread started");
    let mut last_compaction = std::time::Instant::now();
    loop {
        {
            let mut stop = inner.stop.lock().unwrap_or_else(|e| e.into_inner());
            if !inner.kick.swap(false, Ordering::AcqRel) && !*stop {
                let wait = inner
                    .opts
                    .compaction_interval
                    .saturating_sub(last_compaction.elapsed());
                stop = inner
                    .wake
                    .wait_timeout(stop, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if *stop {
                return;
            }
        }
        let _guard = inner.maint.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = inner.prepare_spare() {
            tracing::warn!(error = %e, "creating the next segment ahead of time failed");
        }
        // A rollover only asks for the closed segment's hint; compaction
        // runs once per interval.
        if let Err(e) = write_missing_hints(inner) {
            tracing::warn!(error = %e, "writing hint files failed");
        }
        if last_compaction.elapsed() >= inner.opts.compaction_interval {
            last_compaction = std::time::Instant::now();
            if let Err(e) = compact(inner) {
                tracing::warn!(error = %e, "compaction failed");
            }
        }
    }
}

fn active_id<F: Fs>(inner: &Inner<F>) -> u64 {
    inner.writer().active.id
}

/// Scans a closed segment and writes its hint file.
fn write_hint<F: Fs>(inner: &Inner<F>, seg: &Segment<F>) -> Result<(), StoreError> {
    let len = seg.size.load(Ordering::Acquire);
    // A closed segment keeps the zeros filled ahead of its records
    // (`PREALLOCATE`) until here: the hint names the file's length, so cut
    // them first (the sync below makes the new length durable with it).
    if seg.file.size()? > len {
        seg.file.set_len(len)?;
    }
    // The hint must never describe bytes a power cut could still take from
    // the segment (its fsync may be pending in the syncer).
    seg.file.sync_data()?;
    let buf = read_all(&seg.file, len)?;
    let mut entries = Vec::new();
    segment::scan(&buf, |off, rlen, rec| {
        entries.push(HintEntry {
            flags: rec.flags,
            offset: off as u32,
            len: rlen,
            digest: if rec.is_tombstone() {
                0
            } else {
                crate::keyspace::digest(rec.value)
            },
            key: rec.key.to_vec(),
        })
    })
    .map_err(|e| StoreError::UnsupportedFormat(e.to_string()))?;
    hint::write(
        &inner.fs,
        &segment::hint_path(&inner.dir, seg.id),
        len,
        &entries,
    )?;
    seg.has_hint.store(true, Ordering::Release);
    Ok(())
}

/// Writes hints for every closed segment that lacks one.
pub(crate) fn write_missing_hints<F: Fs>(inner: &Inner<F>) -> Result<(), StoreError> {
    let active = active_id(inner);
    for seg in inner.segments_snapshot() {
        if seg.id != active && !seg.has_hint.load(Ordering::Acquire) {
            if inner.stopping() {
                return Ok(());
            }
            write_hint(inner, &seg)?;
            tracing::debug!(segment = seg.id, "hint file written");
        }
    }
    Ok(())
}

/// A compaction output file being filled.
struct Output {
    id: u64,
    data: Vec<u8>,
    len: u64,
    /// (key, old location, new location, is tombstone)
    moved: Vec<(Vec<u8>, Location, Location, u8)>,
}

/// Makes an output durable and visible, then re-points the keys it holds.
fn publish<F: Fs>(inner: &Inner<F>, out: Output) -> Result<(), StoreError> {
    let Output {
        id,
        data,
        len,
        moved,
    } = out;
    let path = segment::seg_path(&inner.dir, id);
    crate::durable::write_atomic_in(&inner.fs, &path, &data)?;
    let entries: Vec<HintEntry> = moved
        .iter()
        .map(|(k, _, to, flags)| HintEntry {
            flags: *flags,
            offset: to.offset,
            len: to.len,
            digest: to.digest,
            key: k.clone(),
        })
        .collect();
    hint::write(
        &inner.fs,
        &segment::hint_path(&inner.dir, id),
        len,
        &entries,
    )?;
    let file = inner.fs.open(&path)?;
    let seg = Arc::new(Segment::new(id, file, len, 0, true, len));
    inner
        .segments
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, seg.clone());
    for (key, from, to, flags) in moved {
        if flags & super::record::FLAG_TOMBSTONE != 0 {
            seg.dead.fetch_add(u64::from(to.len), Ordering::Relaxed);
        } else if inner.keydir.replace_if(&key, from, to) {
            inner.add_dead(from.seg, from.len);
        } else {
            // Overwritten or deleted while we copied: the copy is dead.
            seg.dead.fetch_add(u64::from(to.len), Ordering::Relaxed);
        }
    }
    Ok(())
}

/// One compaction pass; returns the bytes reclaimed.
pub(crate) fn compact<F: Fs>(inner: &Inner<F>) -> Result<u64, StoreError> {
    let threshold = inner.opts.compaction_threshold;
    if threshold <= 0.0 {
        return Ok(0);
    }
    let active = active_id(inner);
    let all = inner.segments_snapshot();
    // A segment a backup is copying stays as it is until the backup ends.
    let pinned = inner.pinned();
    let chosen: Vec<Arc<Segment<F>>> = all
        .iter()
        .filter(|s| {
            let size = s.size.load(Ordering::Acquire);
            let dead = s.dead.load(Ordering::Relaxed).min(size);
            s.id != active
                && !pinned.contains(&s.id)
                && (size == 0 || ((size - dead) as f64) < threshold * size as f64)
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Ok(0);
    }
    let chosen_ids: Vec<u64> = chosen.iter().map(|s| s.id).collect();
    let oldest_kept = all
        .iter()
        .map(|s| s.id)
        .find(|id| !chosen_ids.contains(id))
        .unwrap_or(u64::MAX);
    let newest_in = *chosen_ids.iter().max().unwrap_or(&0);
    let major = newest_in >> MINOR_BITS;
    let mut next_id = all
        .iter()
        .map(|s| s.id)
        .filter(|id| id >> MINOR_BITS == major)
        .max()
        .unwrap_or(newest_in)
        + 1;
    let before: u64 = chosen.iter().map(|s| s.size.load(Ordering::Acquire)).sum();
    let mut after = 0u64;
    let mut out: Option<Output> = None;
    for seg in &chosen {
        if inner.stopping() {
            return Ok(0);
        }
        let len = seg.size.load(Ordering::Acquire);
        let buf = read_all(&seg.file, len)?;
        let mut live: Vec<(u64, u32, Vec<u8>, u8, u64)> = Vec::new();
        segment::scan(&buf, |off, rlen, rec| {
            let (keep, digest) = if rec.is_tombstone() {
                (
                    seg.id > oldest_kept && inner.keydir.get(rec.key).is_none(),
                    0,
                )
            } else {
                let current = inner.keydir.get(rec.key);
                let here = current.is_some_and(|l| l.seg == seg.id && l.offset == off as u32);
                (here, current.map_or(0, |l| l.digest))
            };
            if keep {
                live.push((off, rlen, rec.key.to_vec(), rec.flags, digest));
            }
        })
        .map_err(|e| StoreError::UnsupportedFormat(e.to_string()))?;
        for (off, rlen, key, flags, digest) in live {
            if out
                .as_ref()
                .is_some_and(|o| o.len > 0 && o.len + u64::from(rlen) > inner.opts.segment_size)
            {
                if let Some(o) = out.take() {
                    after += o.len;
                    publish(inner, o)?;
                }
            }
            if out.is_none() {
                if next_id >> MINOR_BITS != major {
                    tracing::warn!("compaction output ids exhausted for this generation");
                    return Ok(0);
                }
                out = Some(Output {
                    id: next_id,
                    data: Vec::new(),
                    len: 0,
                    moved: Vec::new(),
                });
                next_id += 1;
            }
            if let Some(o) = out.as_mut() {
                let bytes = &buf[off as usize..off as usize + rlen as usize];
                o.data.extend_from_slice(bytes);
                let from = Location {
                    seg: seg.id,
                    offset: off as u32,
                    len: rlen,
                    digest,
                };
                let to = Location {
                    seg: o.id,
                    offset: o.len as u32,
                    len: rlen,
                    digest,
                };
                o.moved.push((key, from, to, flags));
                o.len += u64::from(rlen);
            }
        }
    }
    if let Some(o) = out.take() {
        after += o.len;
        publish(inner, o)?;
    }
    // A record was left out as dead because a newer one of its key exists;
    // that newer one may not be durable yet (buffered, or written and not
    // synced). Sync the log before the inputs go, or a power cut could
    // take both versions.
    match inner.sync_active() {
        Ok(lsn) => inner.commit.mark_synced(lsn),
        Err(e) => {
            inner.commit.poison();
            return Err(e.into());
        }
    }
    {
        let mut segs = inner.segments.write().unwrap_or_else(|e| e.into_inner());
        for id in &chosen_ids {
            segs.remove(id);
        }
    }
    // Oldest first, so a crash midway never leaves a tombstone deleted while
    // the older value it hides survives.
    // Each removal is made durable before the next one: the file system may
    // otherwise persist a later removal without an earlier one.
    for id in &chosen_ids {
        crate::durable::remove_in(&inner.fs, &segment::seg_path(&inner.dir, *id))?;
        crate::durable::remove_in(&inner.fs, &segment::hint_path(&inner.dir, *id))?;
    }
    let reclaimed = before.saturating_sub(after);
    inner
        .stats
        .reclaimed
        .fetch_add(reclaimed, Ordering::Relaxed);
    inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        inputs = chosen_ids.len(),
        bytes_before = before,
        bytes_after = after,
        reclaimed,
        "compaction finished"
    );
    Ok(reclaimed)
}
