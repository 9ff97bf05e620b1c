//! `db dump` and `db load`: a cluster-wide export of live keys with their
//! clocks and siblings, into one file, and its import into a cluster.
//!
//! `db dump` walks the 1024 partitions in order: `EXPORT KEYS p` (the union
//! of the live keys its owners hold), then `EXPORT OBJECTS` in batches (each
//! key read at the read quorum, answered as the encoded object: every
//! sibling with its dot, the clock, expiry). The file is a header and a
//! stream of frames, each with a CRC32: one per object, and one closing each
//! partition (with its object count); the file is fsynced at the end. A dump that stopped (crash,
//! Ctrl-C, a node gone) resumes when run again with the same file: the file
//! is cut back to the end of its last complete partition and the walk goes
//! on from the next one.
//!
//! `db load` checks the whole file first (every CRC, every partition's
//! count, all 1024 partitions present), so a damaged or unfinished dump
//! loads nothing; then it sends each object with `IMPORT` (on 8
//! connections at once), which merges it into the key's replicas by clock. See docs/operations.md ("Backup and
//! restore") for what merging by clock guarantees.
//!
//! Format (little-endian): `DDBDUMP1\n`, then frames. An object: `K`, key
//! length u32, key, object length u32, object (the replica encoding), CRC32
//! of everything before it in the frame. A partition's end: `P`, partition
//! u16, object count u32, CRC32.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::backup::connect;
use crate::keyspace::PARTITIONS;
use crate::resp::Frame;

const MAGIC: &[u8] = b"DDBDUMP1\n";
/// Keys per `EXPORT OBJECTS`.
const BATCH: usize = 100;
/// Connections `db load` sends `IMPORT`s on at once.
const LOADERS: usize = 8;
/// Longest key or object a frame may hold (a larger length is damage).
const MAX_FIELD: u32 = 64 << 20;

/// One frame of a dump file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A key and its encoded object.
    Object(Vec<u8>, Vec<u8>),
    /// The end of a partition, with the objects it held.
    End(u16, u32),
}

impl Item {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Item::Object(k, o) => {
                b.push(b'K');
                b.extend_from_slice(&(k.len() as u32).to_le_bytes());
                b.extend_from_slice(k);
                b.extend_from_slice(&(o.len() as u32).to_le_bytes());
                b.extend_from_slice(o);
            }
            Item::End(p, n) => {
                b.push(b'P');
                b.extend_from_slice(&p.to_le_bytes());
                b.extend_from_slice(&n.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }
}

/// Reads the next frame: `Ok(None)` at a clean end of file, `Err` for a
/// frame cut short or damaged (with what is wrong).
fn next(r: &mut impl Read) -> Result<Option<(Item, u64)>, String> {
    let mut tag = [0u8; 1];
    match r.read(&mut tag) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    let mut frame = vec![tag[0]];
    let mut take = |n: usize, frame: &mut Vec<u8>| -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf)
            .map_err(|_| "a frame is cut short".to_string())?;
        frame.extend_from_slice(&buf);
        Ok(buf)
    };
    let field = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let item = match tag[0] {
        b'K' => {
            let kl = field(&take(4, &mut frame)?);
            if kl > MAX_FIELD {
                return Err(format!("a key length of {kl} bytes"));
            }
            let key = take(kl as usize, &mut frame)?;
            let ol = field(&take(4, &mut frame)?);
            if ol > MAX_FIELD {
                return Err(format!("an object length of {ol} bytes"));
            }
            Item::Object(key, take(ol as usize, &mut frame)?)
        }
        b'P' => {
            let p = take(2, &mut frame)?;
            let n = take(4, &mut frame)?;
            Item::End(u16::from_le_bytes([p[0], p[1]]), field(&n))
        }
        other => return Err(format!("an unknown frame type {other:#04x}")),
    };
    let crc = {
        let mut c = [0u8; 4];
        r.read_exact(&mut c)
            .map_err(|_| "a frame is cut short".to_string())?;
        u32::from_le_bytes(c)
    };
    if crc32fast::hash(&frame) != crc {
        return Err("a frame fails its checksum".into());
    }
    Ok(Some((item, frame.len() as u64 + 4)))
}

/// What a scan of a dump file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Partitions complete, from 0.
    pub partitions: usize,
    /// Objects in them.
    pub objects: u64,
    /// Offset just past the last complete partition.
    pub complete_end: u64,
    /// What stopped the scan before the end of the file, if anything.
    pub damage: Option<String>,
}

/// Scans a dump file (after its header) and checks its frames.
pub fn scan(r: &mut impl Read) -> Result<Scan, String> {
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic)
        .map_err(|_| "it is not a dump file (too short)".to_string())?;
    if magic != MAGIC {
        return Err("it is not a dump file made by db dump (wrong header)".into());
    }
    let mut s = Scan {
        complete_end: MAGIC.len() as u64,
        ..Scan::default()
    };
    let (mut at, mut pending) = (s.complete_end, 0u64);
    loop {
        match next(r) {
            Ok(None) => break,
            Ok(Some((Item::Object(..), len))) => {
                pending += 1;
                at += len;
            }
            Ok(Some((Item::End(p, n), len))) => {
                at += len;
                if usize::from(p) != s.partitions || u64::from(n) != pending {
                    s.damage = Some(format!(
                        "partition {p} ends with {n} objects at byte {at}, where partition {} with {pending} was expected",
                        s.partitions
                    ));
                    break;
                }
                s.partitions += 1;
                s.objects += pending;
                s.complete_end = at;
                pending = 0;
            }
            Err(e) => {
                s.damage = Some(format!("{e} at byte {at}"));
                break;
            }
        }
    }
    if s.damage.is_none() && at != s.complete_end {
        s.damage = Some(format!(
            "partition {} is unfinished ({pending} objects after byte {})",
            s.partitions, s.complete_end
        ));
    }
    Ok(s)
}

/// What a dump or load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Partitions done by this run.
    pub partitions: usize,
    /// Partitions already in the file when the dump started (a resume).
    pub resumed_at: usize,
    /// Objects written or loaded by this run.
    pub objects: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl Report {
    /// What `db dump` prints.
    pub fn dumped(&self, out: &Path) -> String {
        format!(
            "dumped {} objects from {} partitions (resumed at partition {}) in {:.1} s into {}",
            self.objects,
            self.partitions,
            self.resumed_at,
            self.elapsed.as_secs_f64(),
            out.display()
        )
    }

    /// What `db load` prints.
    pub fn loaded(&self, addr: &str) -> String {
        format!(
            "loaded {} objects into the cluster at {addr} in {:.1} s",
            self.objects,
            self.elapsed.as_secs_f64()
        )
    }
}

/// `db dump`: exports every live key of the cluster reached at `addr` into
/// `path`, resuming a dump already in it.
pub fn dump(addr: &str, path: &Path, user: Option<&str>) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut client = connect(addr, user)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    let resumed_at = if len == 0 {
        file.write_all(MAGIC)?;
        0
    } else {
        let s = scan(&mut BufReader::new(&mut file)).map_err(|e| {
            anyhow::anyhow!(
                "{} exists and {e}; refusing to overwrite it",
                path.display()
            )
        })?;
        if let Some(d) = &s.damage {
            tracing::info!(file = %path.display(), at = s.complete_end, cause = %d, "resuming: cutting the unfinished tail");
        }
        file.set_len(s.complete_end)?;
        s.partitions
    };
    file.seek(SeekFrom::End(0))?;
    let mut out = BufWriter::new(file);
    let mut objects = 0u64;
    for p in resumed_at..PARTITIONS {
        let keys = match client
            .call(&["EXPORT", "KEYS", &p.to_string()])
            .with_context(|| format!("EXPORT KEYS {p}"))?
        {
            Frame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    Frame::Bulk(k) => Ok(k),
                    other => Err(anyhow::anyhow!("EXPORT KEYS {p}: unexpected {other:?}")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            Frame::Error(e) => bail!("partition {p}: {e} (run the same command again to resume)"),
            other => bail!("EXPORT KEYS {p}: unexpected answer {other:?}"),
        };
        let mut count = 0u32;
        for batch in keys.chunks(BATCH) {
            let mut args: Vec<Vec<u8>> = vec![b"EXPORT".to_vec(), b"OBJECTS".to_vec()];
            args.extend(batch.iter().cloned());
            let objs = match client.call(&args).context("EXPORT OBJECTS")? {
                Frame::Array(items) if items.len() == batch.len() => items,
                Frame::Error(e) => {
                    bail!("partition {p}: {e} (run the same command again to resume)")
                }
                other => bail!("EXPORT OBJECTS: unexpected answer {other:?}"),
            };
            for (key, obj) in batch.iter().zip(objs) {
                match obj {
                    Frame::Bulk(o) => {
                        out.write_all(&Item::Object(key.clone(), o).encode())?;
                        count += 1;
                    }
                    // Deleted since the key list was read.
                    Frame::Null => {}
                    other => bail!("EXPORT OBJECTS: unexpected item {other:?}"),
                }
            }
        }
        // Handed to the kernel at each partition's end (a crash of this
        // process loses nothing complete); fsynced once at the end (after a
        // power cut, the resume finds the last complete partition anyway).
        out.write_all(&Item::End(p as u16, count).encode())?;
        out.flush()?;
        objects += u64::from(count);
    }
    out.get_ref().sync_all()?;
    Ok(Report {
        partitions: PARTITIONS - resumed_at,
        resumed_at,
        objects,
        elapsed: started.elapsed(),
    })
}

/// `db load`: checks the dump in `path`, then merges every object in it
/// into the cluster reached at `addr` (`w`: the write quorum of each).
pub fn load(
    addr: &str,
    path: &Path,
    user: Option<&str>,
    w: Option<usize>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let s = scan(&mut BufReader::new(open()?))
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was loaded", path.display()))?;
    if let Some(d) = s.damage {
        bail!(
            "{}: {d}; nothing was loaded (an unfinished dump is finished by running db dump with the same file)",
            path.display()
        );
    }
    if s.partitions != PARTITIONS {
        bail!(
            "{} holds {} of {PARTITIONS} partitions: the dump did not finish (run db dump with the same file to finish it); nothing was loaded",
            path.display(),
            s.partitions
        );
    }
    // LOADERS connections, each sending one IMPORT at a time, fed through
    // a bounded channel (memory stays bounded whatever the file's size).
    let clients = (0..LOADERS)
        .map(|_| connect(addr, user))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<u8>)>(LOADERS * 16);
    let rx = Arc::new(Mutex::new(rx));
    let loaded = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(None::<String>));
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (rx, loaded, failed) = (rx.clone(), loaded.clone(), failed.clone());
            let w_arg = w.map(|w| format!("W={w}").into_bytes());
            std::thread::spawn(move || {
                loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((key, obj)) = next else { return };
                    let mut args = vec![b"IMPORT".to_vec(), key.clone(), obj];
                    args.extend(w_arg.clone());
                    let error = match client.call(&args) {
                        Ok(Frame::Simple(_)) => {
                            loaded.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Ok(Frame::Error(e)) => e,
                        Ok(other) => format!("unexpected answer {other:?}"),
                        Err(e) => e.to_string(),
                    };
                    let key = String::from_utf8_lossy(&key).into_owned();
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(format!("'{key}': {error}"));
                    return;
                }
            })
        })
        .collect();
    let mut r = BufReader::new(open()?);
    r.seek(SeekFrom::Start(MAGIC.len() as u64))?;
    let read = (|| -> anyhow::Result<()> {
        while let Some((item, _)) =
            next(&mut r).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        {
            // A send fails only once every loader stopped on an error.
            if let Item::Object(key, obj) = item
                && tx.send((key, obj)).is_err()
            {
                break;
            }
        }
        Ok(())
    })();
    drop(tx);
    for t in workers {
        let _ = t.join();
    }
    read?;
    let objects = loaded.load(Ordering::Relaxed);
    if let Some(e) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        bail!(
            "loading failed after {objects} objects: {e} (loading again is safe: every object is merged)"
        );
    }
    Ok(Report {
        partitions: s.partitions,
        resumed_at: 0,
        objects,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(items: &[Item]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        for i in items {
            b.extend(i.encode());
        }
        b
    }

    #[test]
    fn a_scan_finds_the_last_complete_partition_and_any_damage() {
        let items = [
            Item::Object(b"a".to_vec(), b"obj-a".to_vec()),
            Item::End(0, 1),
            Item::End(1, 0),
            Item::Object(b"b".to_vec(), b"obj-b".to_vec()),
        ];
        let bytes = file(&items);
        let s = scan(&mut &bytes[..]).unwrap();
        assert_eq!((s.partitions, s.objects), (2, 1));
        let two = file(&items[..3]).len() as u64;
        assert_eq!(s.complete_end, two);
        assert!(s.damage.unwrap().contains("unfinished"));
        // Cut inside a frame.
        let cut = &bytes[..bytes.len() - 3];
        let s = scan(&mut &cut[..]).unwrap();
        assert_eq!((s.partitions, s.complete_end), (2, two));
        assert!(s.damage.unwrap().contains("cut short"));
        // A flipped byte in the first object.
        let mut bad = bytes.clone();
        bad[MAGIC.len() + 6] ^= 1;
        let s = scan(&mut &bad[..]).unwrap();
        assert_eq!(s.partitions, 0);
        assert!(s.damage.unwrap().contains("checksum"));
        // A count that does not match.
        let wrong = file(&[Item::Object(b"a".to_vec(), b"x".to_vec()), Item::End(0, 2)]);
        assert!(scan(&mut &wrong[..]).unwrap().damage.is_some());
        assert!(
            scan(&mut &b"NOTADUMP\nxx"[..])
                .unwrap_err()
                .contains("header")
        );
        // A clean file.
        let s = scan(&mut &file(&items[..3])[..]).unwrap();
        assert_eq!((s.partitions, s.damage), (2, None));
    }
}
