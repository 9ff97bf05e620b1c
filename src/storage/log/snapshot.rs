//! Point-in-time snapshots of a [`LogStore`], for backups taken while the
//! node serves.
//!
//! Segments are append-only, so a snapshot is the list of segments at one
//! instant with a length for each: a closed segment's size, and the active
//! segment's length up to the last record appended (the writer's buffer is
//! written out first). Taking it holds the writer lock only for that list,
//! and waits for a compaction pass in progress (so it never sees a pass half
//! done). Every segment listed is *pinned* until the snapshot is dropped:
//! compaction leaves it alone, so its file stays in the directory while a
//! backup copies it. Reads go through the segment's open file handle, never
//! past the recorded length, so appends made after the snapshot are not in
//! it. The small metadata files of the store (format, epoch, node id,
//! binding) are read into memory when the snapshot is taken.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::segment::seg_path;
use super::vfs::{Fs, FsFile};
use super::{Inner, LogStore, Segment};
use crate::storage::StoreError;

/// What a snapshot needs of its store, whatever its file system: to read a
/// pinned segment and to unpin it.
trait Pinned: Send + Sync {
    fn read_segment(&self, seg: u64, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    fn unpin(&self, seg: u64);
}

impl<F: Fs> Pinned for Inner<F> {
    fn read_segment(&self, seg: u64, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        // A pinned segment is never removed from the map (compaction
        // leaves it alone).
        match self.segment(seg) {
            Some(s) => s.file.read_exact_at(buf, offset),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("segment {seg:016x} is gone"),
            )),
        }
    }
    fn unpin(&self, seg: u64) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pins.get_mut(&seg) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&seg);
            }
        }
    }
}

/// The store's metadata files a backup carries besides the segments.
const METADATA: &[&str] = &[
    super::fsutil::FORMAT_FILE,
    crate::epoch::EPOCH_FILE,
    crate::identity::ID_FILE,
    crate::identity::BINDING_FILE,
];

/// A point-in-time copy of a log store's files, pinned until dropped.
pub struct Snapshot {
    inner: Arc<dyn Pinned>,
    /// Each segment (name, id) with the length that belongs to the snapshot.
    segments: Vec<(String, u64, u64)>,
    /// Metadata files: name and content.
    small: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("files", &self.files())
            .finish()
    }
}

impl<F: Fs> Inner<F> {
    /// The ids of the segments some snapshot pins.
    pub(crate) fn pinned(&self) -> HashSet<u64> {
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        pins.keys().copied().collect()
    }
}

impl<F: Fs> LogStore<F> {
    /// Takes a snapshot (see the module doc). Fails when the store is
    /// closed or its writer buffer cannot be written out.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let inner = &self.inner;
        let segments = {
            let _maint = inner.maint.lock().unwrap_or_else(|e| e.into_inner());
            let mut w = inner.writer();
            if inner.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            inner.flush_pending(&mut w)?;
            let active = w.active.id;
            let mut list: Vec<(String, Arc<Segment<F>>, u64)> = inner
                .segments_snapshot()
                .into_iter()
                .map(|s| {
                    let len = if s.id == active {
                        s.flushed.load(Ordering::Acquire)
                    } else {
                        s.size.load(Ordering::Acquire)
                    };
                    let name = seg_path(&inner.dir, s.id)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (name, s, len)
                })
                .collect();
            list.sort_by_key(|(_, s, _)| s.id);
            let mut pins = inner.pins.lock().unwrap_or_else(|e| e.into_inner());
            for (_, s, _) in &list {
                *pins.entry(s.id).or_insert(0) += 1;
            }
            list.into_iter().map(|(n, s, len)| (n, s.id, len)).collect()
        };
        let mut snap = Snapshot {
            inner: inner.clone(),
            segments,
            small: Vec::new(),
        };
        for name in METADATA {
            match inner.fs.read(&inner.dir.join(name)) {
                Ok(bytes) => snap.small.push((name.to_string(), bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(snap)
    }
}

impl Snapshot {
    /// Every file of the snapshot (names relative to the store directory)
    /// with its length: metadata files first, then segments oldest first.
    pub fn files(&self) -> Vec<(String, u64)> {
        self.small
            .iter()
            .map(|(n, b)| (n.clone(), b.len() as u64))
            .chain(self.segments.iter().map(|(n, _, len)| (n.clone(), *len)))
            .collect()
    }

    /// Up to `max` bytes of file `name` from `offset` (fewer at its end;
    /// none past it). An error for a name not in the snapshot.
    pub fn read(&self, name: &str, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        if let Some((_, bytes)) = self.small.iter().find(|(n, _)| n == name) {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(max).min(bytes.len());
            return Ok(bytes[start..end].to_vec());
        }
        let Some(&(_, seg, len)) = self.segments.iter().find(|(n, _, _)| n == name) else {
            return Err(StoreError::InvalidConfig(format!(
                "{name} is not a file of this snapshot"
            )));
        };
        let want = len.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = vec![0u8; want];
        self.inner.read_segment(seg, &mut buf, offset)?;
        Ok(buf)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for &(_, seg, _) in &self.segments {
            self.inner.unpin(seg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LogOptions, Store};

    fn opts() -> LogOptions {
        LogOptions {
            segment_size: 4096,
            compaction_interval: std::time::Duration::from_secs(3600),
            ..LogOptions::default()
        }
    }

    #[test]
    fn a_snapshot_is_point_in_time_pins_its_segments_and_reopens_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), opts()).unwrap();
        for i in 0..200 {
            store.put(format!("k{i}").as_bytes(), &[b'x'; 64]).unwrap();
        }
        let snap = store.snapshot().unwrap();
        let files = snap.files();
        assert!(files.iter().filter(|(n, _)| n.ends_with(".seg")).count() > 2);
        // Later writes are not in the snapshot; overwriting every key makes
        // the old segments dead, but pinned ones are not compacted.
        for i in 0..200 {
            store.put(format!("k{i}").as_bytes(), &[b'y'; 64]).unwrap();
        }
        store.put(b"after", b"1").unwrap();
        store.compact_now().unwrap();
        for (name, len) in &files {
            if name.ends_with(".seg") {
                assert!(
                    dir.path().join(name).exists(),
                    "{name} was deleted while pinned"
                );
                assert_eq!(snap.read(name, 0, usize::MAX).unwrap().len() as u64, *len);
            }
        }
        // Copy the snapshot out and open the copy: the state at the snapshot.
        let copy = tempfile::tempdir().unwrap();
        for (name, _) in &files {
            let bytes = snap.read(name, 0, usize::MAX).unwrap();
            std::fs::write(copy.path().join(name), bytes).unwrap();
        }
        assert!(snap.read("nope.seg", 0, 10).is_err());
        drop(snap);
        // Unpinned: the next pass reclaims the dead segments.
        assert!(store.compact_now().unwrap() > 0);
        let restored = LogStore::open(copy.path(), opts()).unwrap();
        assert_eq!(restored.get(b"k7").unwrap(), Some(vec![b'x'; 64]));
        assert_eq!(restored.get(b"after").unwrap(), None);
        assert_eq!(restored.keys().unwrap().len(), 200);
    }
}
