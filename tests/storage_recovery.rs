//! Storage-level recovery tests for `LogStore`: damage the files on disk the
//! way crashes and bad disks do, reopen, and check what is served.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_db::storage::{FsyncPolicy, LogOptions, LogStore, Store, StoreError};

fn opts() -> LogOptions {
    LogOptions {
        segment_size: 1 << 20,
        fsync: FsyncPolicy::Always,
        compaction_threshold: 0.5,
        compaction_interval: Duration::from_secs(3600),
        ..LogOptions::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i:05}-{}", "v".repeat(50)).into_bytes()
}

/// Writes `n` keys into a fresh store and returns the directory.
fn populated(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path(), opts()).unwrap();
    for i in 0..n {
        s.put(&key(i), &value(i)).unwrap();
    }
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn record_len() -> u64 {
    24 + key(0).len() as u64 + value(0).len() as u64
}

#[test]
fn truncated_tail_is_cut_and_complete_records_survive() {
    let dir = populated(100);
    let seg = &segments(dir.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    // Cut the last record in half.
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(len - record_len() / 2)
        .unwrap();
    let s = LogStore::open(dir.path(), opts()).unwrap();
    for i in 0..99 {
        assert_eq!(s.get(&key(i)).unwrap(), Some(value(i)));
    }
    assert_eq!(s.get(&key(99)).unwrap(), None);
    assert_eq!(fs::metadata(seg).unwrap().len(), len - record_len());
    // New writes land after the truncation point and survive a reopen.
    s.put(&key(99), b"again").unwrap();
    drop(s);
    let s = LogStore::open(dir.path(), opts()).unwrap();
    assert_eq!(s.get(&key(99)).unwrap(), Some(b"again".to_vec()));
    assert_eq!(s.status().corrupt_records, 0);
}

#[test]
fn flipped_byte_mid_file_loses_only_that_record() {
    let dir = populated(100);
    let seg = &segments(dir.path())[0];
    let mut bytes = fs::read(seg).unwrap();
    let victim = 40u32;
    let at = (record_len() * u64::from(victim) + 30) as usize;
    bytes[at] ^= 0x55;
    fs::write(seg, &bytes).unwrap();
    let s = LogStore::open(dir.path(), opts()).unwrap();
    for i in 0..100 {
        let want = (i != victim).then(|| value(i));
        assert_eq!(s.get(&key(i)).unwrap(), want, "key {i}");
    }
    let st = s.status();
    assert_eq!(st.corrupt_records, 1);
    assert_eq!(st.keys, 99);
}

#[test]
fn junk_appended_is_truncated() {
    let dir = populated(10);
    let seg = &segments(dir.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(seg)
        .unwrap()
        .write_all(&[0xAB; 333])
        .unwrap();
    let s = LogStore::open(dir.path(), opts()).unwrap();
    for i in 0..10 {
        assert_eq!(s.get(&key(i)).unwrap(), Some(value(i)));
    }
    assert_eq!(fs::metadata(seg).unwrap().len(), len);
    assert_eq!(s.status().corrupt_records, 0);
}

#[test]
fn reopen_several_times_with_rollover_and_hints() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.segment_size = 4096;
    for round in 0..5u32 {
        let s = LogStore::open(dir.path(), o.clone()).unwrap();
        for i in 0..200 {
            if round > 0 {
                let want = format!("{}-{}", round - 1, i).into_bytes();
                assert_eq!(s.get(&key(i)).unwrap(), Some(want));
            }
            s.put(&key(i), format!("{round}-{i}").as_bytes()).unwrap();
        }
        // Let the background thread write the hints of closed segments, then
        // check the next open can use them (bounded poll, no fixed sleep).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let want = s.status().segments as usize - 1;
        while hint_count(dir.path()) < want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(hint_count(dir.path()) >= want);
    }
}

fn hint_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "hint")
        })
        .count()
}

#[test]
fn bad_hint_falls_back_to_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.segment_size = 2048;
    {
        let s = LogStore::open(dir.path(), o.clone()).unwrap();
        for i in 0..100 {
            s.put(&key(i), &value(i)).unwrap();
        }
        s.compact_now().unwrap(); // writes the hints of closed segments
    }
    let hints: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hint"))
        .collect();
    assert!(!hints.is_empty());
    for h in &hints {
        let mut b = fs::read(h).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        fs::write(h, b).unwrap();
    }
    let s = LogStore::open(dir.path(), o).unwrap();
    for i in 0..100 {
        assert_eq!(s.get(&key(i)).unwrap(), Some(value(i)));
    }
}

#[test]
fn second_opener_gets_locked() {
    let dir = populated(1);
    let s = LogStore::open(dir.path(), opts()).unwrap();
    match LogStore::open(dir.path(), opts()) {
        Err(StoreError::Locked(d)) => assert!(d.contains(&dir.path().display().to_string())),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(s);
    LogStore::open(dir.path(), opts()).unwrap();
}

#[test]
fn unknown_record_version_is_refused() {
    let dir = populated(3);
    let seg = &segments(dir.path())[0];
    let mut b = fs::read(seg).unwrap();
    // Re-stamp the second record as version 9 with a valid CRC.
    let at = record_len() as usize;
    let end = at + record_len() as usize;
    b[at + 8] = 9;
    let mut h = crc32fast::Hasher::new();
    h.update(&b[at..at + 4]);
    h.update(&b[at + 8..end]);
    let crc = h.finalize();
    b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(seg, b).unwrap();
    let e = LogStore::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(e, StoreError::UnsupportedFormat(_)), "{e}");
    assert!(e.to_string().contains("version 9"), "{e}");
}

#[test]
fn segments_without_format_file_are_refused() {
    let dir = populated(3);
    fs::remove_file(dir.path().join("FORMAT")).unwrap();
    let e = LogStore::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(e, StoreError::UnsupportedFormat(_)), "{e}");
}
