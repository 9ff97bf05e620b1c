//! Hint files: for each closed segment, a compact list of (key, flags,
//! offset, length) so start-up can rebuild the key directory without reading
//! values. A hint is derived data: if it is missing, damaged, of another
//! version or does not match its segment's length, recovery scans the
//! segment instead.
//!
//! Layout (little-endian): magic `DDBHINT\0` (8), version u8 (2), 3 zero
//! bytes, segment length u64, entry count u64; then per entry: flags u8, key
//! length u16, record offset u32, record length u32, value digest u64, key;
//! then a CRC32 (u32) of every preceding byte of the file. (Version 1 had no
//! digest; such a hint is ignored and its segment scanned once.)

use std::path::Path;

const MAGIC: &[u8; 8] = b"DDBHINT\0";
const VERSION: u8 = 2;
const HEAD: usize = 8 + 4 + 8 + 8;

/// One hint entry: where a record of `key` sits in the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintEntry {
    /// Record flags (tombstone bit).
    pub flags: u8,
    /// Offset of the record.
    pub offset: u32,
    /// Encoded length of the record.
    pub len: u32,
    /// [`crate::keyspace::digest`] of the value (0 for a tombstone).
    pub digest: u64,
    /// The key.
    pub key: Vec<u8>,
}

/// Encodes a hint for a segment of `seg_len` bytes.
pub fn encode(seg_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    let mut b =
        Vec::with_capacity(HEAD + entries.iter().map(|e| 19 + e.key.len()).sum::<usize>() + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[VERSION, 0, 0, 0]);
    b.extend_from_slice(&seg_len.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        b.push(e.flags);
        b.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        b.extend_from_slice(&e.offset.to_le_bytes());
        b.extend_from_slice(&e.len.to_le_bytes());
        b.extend_from_slice(&e.digest.to_le_bytes());
        b.extend_from_slice(&e.key);
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("truncated".into());
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn le<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], String> {
    let s = take(b, N)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

/// Decodes a hint, calling `visit(flags, offset, len, digest, key)` per entry, if it
/// is intact and describes a segment of exactly `seg_len` bytes. Nothing is
/// visited unless the whole file checks out.
pub fn decode(
    bytes: &[u8],
    seg_len: u64,
    mut visit: impl FnMut(u8, u32, u32, u64, &[u8]),
) -> Result<u64, String> {
    if bytes.len() < HEAD + 4 {
        return Err("too short".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != stored {
        return Err("checksum mismatch".into());
    }
    let mut b = body;
    if take(&mut b, 8)? != MAGIC {
        return Err("bad magic".into());
    }
    let v = le::<4>(&mut b)?;
    if v[0] != VERSION {
        return Err(format!("unknown hint version {}", v[0]));
    }
    let len = u64::from_le_bytes(le::<8>(&mut b)?);
    if len != seg_len {
        return Err(format!("hint is for {len} bytes, segment has {seg_len}"));
    }
    let count = u64::from_le_bytes(le::<8>(&mut b)?);
    // Validate everything before visiting anything.
    let entries = b;
    let mut n = 0u64;
    while !b.is_empty() {
        let _ = le::<1>(&mut b)?;
        let klen = u16::from_le_bytes(le::<2>(&mut b)?) as usize;
        let off = u32::from_le_bytes(le::<4>(&mut b)?);
        let rlen = u32::from_le_bytes(le::<4>(&mut b)?);
        let _ = le::<8>(&mut b)?;
        take(&mut b, klen)?;
        if u64::from(off) + u64::from(rlen) > seg_len {
            return Err("entry points past the segment end".into());
        }
        n += 1;
    }
    if n != count {
        return Err(format!("{n} entries, header says {count}"));
    }
    let mut b = entries;
    while !b.is_empty() {
        let flags = le::<1>(&mut b)?[0];
        let klen = u16::from_le_bytes(le::<2>(&mut b)?) as usize;
        let off = u32::from_le_bytes(le::<4>(&mut b)?);
        let rlen = u32::from_le_bytes(le::<4>(&mut b)?);
        let digest = u64::from_le_bytes(le::<8>(&mut b)?);
        visit(flags, off, rlen, digest, take(&mut b, klen)?);
    }
    Ok(n)
}

/// Writes a hint durably: temp file, fsync, rename, fsync the directory.
pub fn write<F: super::vfs::Fs>(
    fs: &F,
    path: &Path,
    seg_len: u64,
    entries: &[HintEntry],
) -> std::io::Result<()> {
    crate::durable::write_atomic_in(fs, path, &encode(seg_len, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries() -> Vec<HintEntry> {
        vec![
            HintEntry {
                flags: 0,
                offset: 0,
                len: 30,
                digest: 77,
                key: b"a".to_vec(),
            },
            HintEntry {
                flags: 1,
                offset: 30,
                len: 26,
                digest: 0,
                key: b"bb".to_vec(),
            },
        ]
    }

    #[test]
    fn round_trip_and_length_check() {
        let b = encode(56, &entries());
        let mut got = Vec::new();
        assert_eq!(
            decode(&b, 56, |f, o, l, d, k| got.push(HintEntry {
                flags: f,
                offset: o,
                len: l,
                digest: d,
                key: k.to_vec()
            })),
            Ok(2)
        );
        assert_eq!(got, entries());
        assert!(decode(&b, 57, |_, _, _, _, _| {}).is_err());
    }

    proptest! {
        #[test]
        fn damage_is_detected(at in any::<prop::sample::Index>(), xor in 1u8.., cut in any::<prop::sample::Index>()) {
            let mut b = encode(56, &entries());
            let i = at.index(b.len());
            b[i] ^= xor;
            let res = decode(&b, 56, |_, _, _, _, _| panic!("visited damaged hint"));
            prop_assert!(res.is_err());
            let b = encode(56, &entries());
            let c = cut.index(b.len());
            let res = decode(&b[..c], 56, |_, _, _, _, _| ());
            prop_assert!(res.is_err());
        }
    }
}
