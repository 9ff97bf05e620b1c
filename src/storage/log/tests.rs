//! Engine tests for [`LogStore`]: overwrite, delete, reopen, rollover,
//! compaction and concurrent writers with group commit.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn opts(segment_size: u64) -> LogOptions {
    LogOptions {
        segment_size,
        fsync: FsyncPolicy::Always,
        compaction_threshold: 0.5,
        // Long enough that the background thread never compacts on its own
        // during a test; tests call `compact_now`.
        compaction_interval: Duration::from_secs(3600),
        ..LogOptions::default()
    }
}

/// The store's files as a crash of its process leaves them (no close: what
/// was written is in the page cache), copied into a fresh directory while
/// the store runs. A file its background threads remove or replace
/// meanwhile (a temporary file, a compacted segment) is left out, as a
/// crash just then could have.
fn crash_image(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "LOCK" || name.to_string_lossy().ends_with(".tmp") {
            continue;
        }
        match std::fs::copy(e.path(), to.path().join(&name)) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("copying {name:?}: {err}"),
        }
    }
    to
}

/// The open segment `id` of `s`.
fn segment_of(s: &LogStore, id: u64) -> Arc<Segment<vfs::RealFs>> {
    s.inner
        .segments_snapshot()
        .into_iter()
        .find(|g| g.id == id)
        .unwrap_or_else(|| panic!("no segment {id}"))
}

fn detail(s: &StoreStatus, name: &str) -> String {
    s.details
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[test]
fn fsync_policy_parses() {
    assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
    assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
    assert_eq!(
        "interval:250".parse(),
        Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
    );
    for bad in ["", "sometimes", "interval:", "interval:0", "interval:x"] {
        let e = bad.parse::<FsyncPolicy>().unwrap_err();
        assert!(e.to_string().contains("expected `always`"), "{e}");
    }
    assert_eq!(
        FsyncPolicy::Interval(Duration::from_millis(7)).to_string(),
        "interval:7"
    );
}

#[test]
fn overwrite_delete_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStore::open(dir.path(), opts(4096)).unwrap();
        s.put(b"a", b"1").unwrap();
        s.put(b"a", b"2").unwrap();
        s.put(b"b", b"x").unwrap();
        s.delete(b"b").unwrap();
        s.delete(b"never-existed").unwrap();
        s.put(b"c", b"").unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        assert_eq!(s.get(b"c").unwrap(), Some(Vec::new()));
        assert_eq!(s.status().keys, 2);
    }
    for _ in 0..3 {
        let s = LogStore::open(dir.path(), opts(4096)).unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        assert_eq!(s.get(b"c").unwrap(), Some(Vec::new()));
        let mut keys = s.keys().unwrap();
        keys.sort();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
    }
}

#[test]
fn too_large_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        LogStore::open(dir.path(), opts(10)),
        Err(StoreError::InvalidConfig(_))
    ));
    let s = LogStore::open(dir.path(), opts(4096)).unwrap();
    let big = vec![0u8; record::MAX_KEY_LEN + 1];
    assert!(matches!(
        s.put(&big, b"v"),
        Err(StoreError::TooLarge { what: "key", .. })
    ));
}

#[test]
fn rollover_hints_and_compaction_keep_newest_and_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let value = |k: u32, round: u32| format!("value-{k}-{round}-{}", "x".repeat(60)).into_bytes();
    {
        let s = LogStore::open(dir.path(), opts(8192)).unwrap();
        for round in 0..5 {
            for k in 0..200u32 {
                s.put(format!("key-{k:04}").as_bytes(), &value(k, round))
                    .unwrap();
            }
        }
        for k in (0..200u32).step_by(3) {
            s.delete(format!("key-{k:04}").as_bytes()).unwrap();
        }
        let before = s.status();
        assert!(before.segments > 10, "{before:?}");
        assert!(before.dead_bytes > before.bytes / 2, "{before:?}");
        let reclaimed = s.compact_now().unwrap();
        let after = s.status();
        assert!(reclaimed > 0);
        assert_eq!(after.reclaimed_bytes, reclaimed);
        assert!(after.bytes < before.bytes / 2, "{before:?} -> {after:?}");
        assert_eq!(detail(&after, "compactions"), "1");
        for k in 0..200u32 {
            let got = s.get(format!("key-{k:04}").as_bytes()).unwrap();
            let want = (k % 3 != 0).then(|| value(k, 4));
            assert_eq!(got, want, "key {k}");
        }
        // Writes after compaction still win over compacted copies.
        s.put(b"key-0001", b"after").unwrap();
    }
    // Reopen: newest versions survive, deleted keys stay deleted.
    let s = LogStore::open(dir.path(), opts(8192)).unwrap();
    assert_eq!(s.get(b"key-0001").unwrap(), Some(b"after".to_vec()));
    for k in 2..200u32 {
        let got = s.get(format!("key-{k:04}").as_bytes()).unwrap();
        let want = (k % 3 != 0).then(|| value(k, 4));
        assert_eq!(got, want, "key {k}");
    }
    assert_eq!(s.status().keys, 200 - 67);
    assert_eq!(s.status().corrupt_records, 0);
}

#[test]
fn compaction_runs_concurrently_with_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(4096);
    o.fsync = FsyncPolicy::Never;
    let s = Arc::new(LogStore::open(dir.path(), o).unwrap());
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..3000u32 {
                let k = format!("k{}", i % 50);
                s.put(k.as_bytes(), format!("{i}").as_bytes()).unwrap();
            }
        })
    };
    for _ in 0..20 {
        s.compact_now().unwrap();
        for k in 0..50 {
            // Every key read during compaction is either absent (not yet
            // written) or a value that was written for it.
            if let Some(v) = s.get(format!("k{k}").as_bytes()).unwrap() {
                let i: u32 = String::from_utf8(v).unwrap().parse().unwrap();
                assert_eq!(i % 50, k);
            }
        }
    }
    writer.join().unwrap();
    s.compact_now().unwrap();
    for k in 0..50u32 {
        let want = 2950 + k;
        assert_eq!(
            s.get(format!("k{k}").as_bytes()).unwrap(),
            Some(want.to_string().into_bytes())
        );
    }
}

#[test]
fn concurrent_writers_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(LogStore::open(dir.path(), opts(1 << 20)).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.put(format!("t{t}-{i}").as_bytes(), &[t as u8; 100])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.status().keys, 800);
    drop(s);
    let s = LogStore::open(dir.path(), opts(1 << 20)).unwrap();
    for t in 0..16u8 {
        for i in 0..50 {
            assert_eq!(
                s.get(format!("t{t}-{i}").as_bytes()).unwrap(),
                Some(vec![t; 100])
            );
        }
    }
}

/// Polls `cond` every few milliseconds for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn interval_policy_syncs_in_background() {
    // On the simulated disk: the record is acknowledged before it is
    // durable, and only the interval thread can make it durable (the test
    // never syncs); a power cut after that keeps it.
    use super::simfs::{Cut, SimFs};
    use rand::SeedableRng;
    let fs = SimFs::new();
    let dir = Path::new("/data/store");
    let mut o = opts(4096);
    o.fsync = FsyncPolicy::Interval(Duration::from_millis(5));
    let s = LogStore::open_in(fs.clone(), dir, o.clone()).unwrap();
    let seg = segment::seg_path(dir, 1 << segment::MINOR_BITS);
    let syncs = fs.stats().file_syncs;
    s.put(b"k", b"v").unwrap();
    let (_, len) = fs.durable_len(&seg).unwrap();
    assert!(len > 0, "the record is written at once under `interval`");
    eventually("the interval thread syncs the active segment", || {
        fs.durable_len(&seg)
            .is_some_and(|(durable, _)| durable == len)
    });
    assert!(fs.stats().file_syncs > syncs);
    let fs = fs.power_cut(&mut rand::rngs::StdRng::seed_from_u64(1), Cut::Clean);
    drop(s);
    let s = LogStore::open_in(fs, dir, o).unwrap();
    assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn second_open_is_locked_and_unknown_format_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path(), opts(4096)).unwrap();
    let e = LogStore::open(dir.path(), opts(4096)).unwrap_err();
    assert!(matches!(e, StoreError::Locked(_)), "{e}");
    assert!(e.to_string().contains("locked by another process"));
    drop(s);
    std::fs::write(
        dir.path().join(fsutil::FORMAT_FILE),
        "distro-db format 99\n",
    )
    .unwrap();
    let e = LogStore::open(dir.path(), opts(4096)).unwrap_err();
    assert!(matches!(e, StoreError::UnsupportedFormat(_)), "{e}");
}

#[test]
fn content_summary_survives_reopen_from_hints_and_scans() {
    let dir = tempfile::tempdir().unwrap();
    let roots = {
        let s = LogStore::open(dir.path(), opts(4096)).unwrap();
        for i in 0..300u32 {
            s.put(format!("k{i}").as_bytes(), &i.to_le_bytes()).unwrap();
        }
        for i in 0..50u32 {
            s.delete(format!("k{i}").as_bytes()).unwrap();
        }
        s.put(b"k77", b"changed").unwrap();
        // Closed segments get hint files; the active one is scanned.
        s.compact_now().unwrap();
        let p = crate::keyspace::partition_of(b"k77");
        let all: Vec<u8> = (0..64).collect();
        let listed = s.partition_digests(p, &all);
        assert!(listed.contains(&(b"k77".to_vec(), crate::keyspace::digest(b"changed"))));
        assert!(!listed.iter().any(|(k, _)| k == b"k7"));
        s.summary().roots()
    };
    // The same contents in a memory store give the same summary.
    let m = crate::storage::MemoryStore::new();
    for i in 50..300u32 {
        m.put(format!("k{i}").as_bytes(), &i.to_le_bytes()).unwrap();
    }
    m.put(b"k77", b"changed").unwrap();
    assert_eq!(m.summary().roots(), roots);
    for _ in 0..2 {
        let s = LogStore::open(dir.path(), opts(4096)).unwrap();
        assert_eq!(s.summary().roots(), roots);
    }
}

#[tokio::test]
async fn async_writers_wait_for_one_shared_sync() {
    // The simulated disk counts the fdatasyncs and holds the first one
    // until 199 more writers have appended and wait: those must all be
    // served by one more sync, 2 in all for 200 writes.
    use super::simfs::SimFs;
    let fs = SimFs::new();
    let s = LogStore::open_in(fs.clone(), Path::new("/data/store"), opts(1 << 20)).unwrap();
    fs.hold_syncs(true);
    let before = fs.stats().file_syncs;
    let mut waits = Vec::new();
    for i in 0..200u32 {
        let lsn = s.append(&i.to_le_bytes(), b"v").unwrap();
        // Visible before it is durable.
        assert_eq!(s.get(&i.to_le_bytes()).unwrap(), Some(b"v".to_vec()));
        waits.push(s.durable(lsn));
        if i == 0 {
            eventually("the syncer starts the first sync", || fs.syncs_held() == 1);
        }
    }
    assert!(
        waits.iter().all(|w| !w.is_ready()),
        "acknowledged before any sync"
    );
    fs.hold_syncs(false);
    for w in waits {
        w.wait().await.unwrap();
    }
    assert_eq!(
        fs.stats().file_syncs - before,
        2,
        "200 writers, one shared sync after the first"
    );
    // Closing refuses later writes.
    assert!(s.close().unwrap().is_some());
    assert!(matches!(s.append(b"x", b"y"), Err(StoreError::Closed)));
}

#[test]
fn buffered_records_are_readable_at_once_and_reach_the_file_unasked() {
    // With `always`, an append only buffers its record; nobody asks for a
    // sync here, so the record must be readable from the buffer, across a
    // rollover, and reach the file through the syncer's idle flush.
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path(), opts(4096)).unwrap();
    let mut last = 0;
    for i in 0..100u32 {
        last = Store::append(&s, format!("k{i}").as_bytes(), &[i as u8; 60]).unwrap();
        assert_eq!(
            s.get(format!("k{i}").as_bytes()).unwrap(),
            Some(vec![i as u8; 60]),
            "record {i} unreadable right after its append"
        );
    }
    for i in 0..100u32 {
        assert_eq!(
            s.get(format!("k{i}").as_bytes()).unwrap(),
            Some(vec![i as u8; 60])
        );
    }
    // The idle flush writes the buffer out (bounded wait, no sync asked).
    let inner = &s.inner;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let w = inner.writer();
        if w.pending.is_empty() {
            let seg = w.active.clone();
            drop(w);
            let on_disk = seg.file.size().unwrap();
            let size = seg.size.load(Ordering::Acquire);
            // Every record is in the file; past them, only the zeros
            // filled ahead of the records (`PREALLOCATE`).
            assert!(on_disk >= size, "{on_disk} < {size}");
            let mut tail = vec![1u8; (on_disk - size) as usize];
            seg.file.read_exact_at(&mut tail, size).unwrap();
            assert!(tail.iter().all(|&b| b == 0));
            break;
        }
        drop(w);
        assert!(
            std::time::Instant::now() < deadline,
            "buffered records were never written out"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(inner.commit.synced() < last, "nothing asked for a sync");
    // The files as a crash would leave them now (no close, no flush) hold
    // every record: they are in the kernel's page cache.
    let dir2 = crash_image(dir.path());
    drop(s);
    let s = LogStore::open(dir2.path(), opts(4096)).unwrap();
    for i in 0..100u32 {
        assert_eq!(
            s.get(format!("k{i}").as_bytes()).unwrap(),
            Some(vec![i as u8; 60])
        );
    }
}

#[test]
fn records_overwrite_zeros_filled_ahead_and_a_restart_resumes_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let seg_size = 4 * PREALLOCATE;
    // (segment id, bytes of records, file length) of the active segment.
    let active_file = |s: &LogStore| {
        let w = s.inner.writer();
        let seg = w.active.clone();
        drop(w);
        let len = seg.file.size().unwrap();
        (seg.id, seg.size.load(Ordering::Acquire), len)
    };
    let s = LogStore::open(dir.path(), opts(seg_size)).unwrap();
    s.put(b"k0", &[0; 100]).unwrap();
    let (_, first, len) = active_file(&s);
    // The first sync zero-filled the file ahead of the record.
    assert_eq!(len, first + PREALLOCATE);
    for i in 1..200u32 {
        s.put(format!("k{i}").as_bytes(), &[i as u8; 100]).unwrap();
    }
    // Every later sync wrote within it: the length stayed.
    let (id, size, len_now) = active_file(&s);
    assert!(
        size > first && size < len && len_now == len,
        "{size} {len_now}"
    );
    // A crash and a restart: the zeros are not records (nothing reported
    // torn or corrupt) and the segment's data ends after its last record.
    // Without a spare segment made ahead of a roll, appends go on in it,
    // over the zeros; with one, in the spare.
    let image = crash_image(dir.path());
    let spare = std::fs::read_dir(image.path()).unwrap().any(|e| {
        let name = e.unwrap().file_name();
        segment::parse_name(name.to_str().unwrap())
            .is_some_and(|(i, ext)| i > id && ext == segment::SEG_EXT)
    });
    let s2 = LogStore::open(image.path(), opts(seg_size)).unwrap();
    assert!(s2.recovery().unwrap().is_clean(), "{:?}", s2.recovery());
    let old = segment_of(&s2, id);
    assert_eq!(old.size.load(Ordering::Acquire), size);
    for i in 0..200u32 {
        assert_eq!(
            s2.get(format!("k{i}").as_bytes()).unwrap(),
            Some(vec![i as u8; 100])
        );
    }
    s2.put(b"after", b"restart").unwrap();
    let (active, size2, len2) = active_file(&s2);
    if spare {
        assert!(active > id);
    } else {
        assert!(
            active == id && size2 > size && len2 == len,
            "{size2} {len2}"
        );
    }
    let image2 = crash_image(image.path());
    drop(s2);
    let s3 = LogStore::open(image2.path(), opts(seg_size)).unwrap();
    assert_eq!(s3.get(b"after").unwrap(), Some(b"restart".to_vec()));
    assert_eq!(s3.get(b"k199").unwrap(), Some(vec![199u8; 100]));
    drop(s3);
    // After a clean close too; once the segment is closed, the maintenance
    // pass that writes its hint cuts the zeros (the hint names its length).
    drop(s);
    let s = LogStore::open(dir.path(), opts(seg_size)).unwrap();
    assert!(s.recovery().unwrap().is_clean());
    assert_eq!(s.get(b"k199").unwrap(), Some(vec![199u8; 100]));
    s.compact_now().unwrap();
    let seg = segment_of(&s, id);
    assert_eq!(seg.size.load(Ordering::Acquire), size);
    if seg.has_hint.load(Ordering::Acquire) {
        assert_eq!(seg.file.size().unwrap(), size);
    }
}

#[test]
fn a_closed_segment_is_cut_to_its_records_before_its_hint() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path(), opts(4096)).unwrap();
    for i in 0..200u32 {
        s.put(format!("k{i}").as_bytes(), &[i as u8; 60]).unwrap();
    }
    s.compact_now().unwrap();
    let active = s.inner.writer().active.id;
    let mut closed = 0;
    for seg in s.inner.segments_snapshot() {
        if seg.id != active {
            assert!(seg.has_hint.load(Ordering::Acquire));
            assert_eq!(seg.file.size().unwrap(), seg.size.load(Ordering::Acquire));
            closed += 1;
        }
    }
    assert!(closed > 1);
    drop(s);
    // The hints match their segments: a restart reads them, scans nothing.
    let s = LogStore::open(dir.path(), opts(4096)).unwrap();
    for i in 0..200u32 {
        assert_eq!(
            s.get(format!("k{i}").as_bytes()).unwrap(),
            Some(vec![i as u8; 60])
        );
    }
}
