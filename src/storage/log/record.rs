//! The record format: pure functions that encode one record into bytes and
//! decode (and verify) one record from bytes. No I/O happens here.
//!
//! Layout (all integers little-endian), 24-byte header then key then value:
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 4    | magic `DB 10 67 C3` (sync marker)                  |
//! | 4      | 4    | CRC32 of every other byte of the record            |
//! | 8      | 1    | format version (currently 1)                       |
//! | 9      | 1    | flags (bit 0: tombstone; other bits must be 0)     |
//! | 10     | 2    | key length                                         |
//! | 12     | 4    | value length                                       |
//! | 16     | 8    | timestamp, microseconds since the Unix epoch       |
//! | 24     | k    | key                                                |
//! | 24 + k | v    | value                                              |
//!
//! The CRC covers bytes `0..4` and `8..end`, i.e. the whole record except
//! the CRC field itself. The checksum is verified before the version, so a
//! damaged version byte reads as corruption, while an intact record written
//! by another format version is refused ([`DecodeError::UnknownVersion`]).

/// Sync marker that starts every record; recovery searches for it to find
/// the next record after a damaged one.
pub const MAGIC: [u8; 4] = [0xDB, 0x10, 0x67, 0xC3];
/// The record format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;
/// Flag bit: the record is a tombstone (the key was deleted).
pub const FLAG_TOMBSTONE: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_TOMBSTONE;
/// Longest key accepted (it must fit the 16-bit length field).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Longest value accepted. Larger lengths in a header are treated as damage.
pub const MAX_VALUE_LEN: usize = 64 << 20;

/// A decoded, checksum-verified record borrowing from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Microseconds since the Unix epoch when the record was written.
    pub timestamp: u64,
    /// Flag bits, see [`FLAG_TOMBSTONE`].
    pub flags: u8,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for a tombstone).
    pub value: &'a [u8],
}

impl RecordRef<'_> {
    /// True if this record deletes its key.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }
}

/// Why bytes could not be decoded as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the record does (a torn write, or a damaged length).
    #[error("incomplete record: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes the header claims the record needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The first four bytes are not the sync marker.
    #[error("bad magic")]
    BadMagic,
    /// A length field exceeds the format's limits.
    #[error("impossible length: key {key_len}, value {value_len}")]
    BadLength {
        /// The key length field.
        key_len: usize,
        /// The value length field.
        value_len: usize,
    },
    /// The CRC does not match the bytes.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// CRC stored in the record.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// An intact record of a format version this build does not know.
    #[error("record format version {0} is not supported (this build reads version {VERSION})")]
    UnknownVersion(u8),
    /// An intact record with flag bits this version does not define.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
}

/// Total encoded size of a record with these key and value lengths.
pub fn encoded_len(key_len: usize, value_len: usize) -> usize {
    HEADER_LEN + key_len + value_len
}

/// Appends the encoding of one record to `out`. The caller checks the
/// length limits ([`MAX_KEY_LEN`], [`MAX_VALUE_LEN`]) first; lengths beyond
/// them are a programming error and are clamped by a debug assertion only.
pub fn encode(out: &mut Vec<u8>, timestamp: u64, flags: u8, key: &[u8], value: &[u8]) {
    debug_assert!(key.len() <= MAX_KEY_LEN && value.len() <= MAX_VALUE_LEN);
    let start = out.len();
    out.reserve(encoded_len(key.len(), value.len()));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = checksum(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32 over a whole encoded record except its CRC field (bytes 4..8).
fn checksum(record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&record[..4]);
    h.update(&record[8..]);
    h.finalize()
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the record lengths from a header without verifying anything but the
/// limits. Returns the total record length.
pub fn peek_len(header: &[u8]) -> Result<usize, DecodeError> {
    if header.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete {
            needed: HEADER_LEN,
            available: header.len(),
        });
    }
    if header[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let key_len = u16_at(header, 10);
    let value_len = u32_at(header, 12) as usize;
    if value_len > MAX_VALUE_LEN {
        return Err(DecodeError::BadLength { key_len, value_len });
    }
    Ok(encoded_len(key_len, value_len))
}

/// Decodes and verifies the record at the start of `buf`. Returns it and its
/// encoded length. Never panics, whatever the bytes.
pub fn decode(buf: &[u8]) -> Result<(RecordRef<'_>, usize), DecodeError> {
    let len = peek_len(buf)?;
    if buf.len() < len {
        return Err(DecodeError::Incomplete {
            needed: len,
            available: buf.len(),
        });
    }
    let rec = &buf[..len];
    let stored = u32_at(rec, 4);
    let computed = checksum(rec);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    let version = rec[8];
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let flags = rec[9];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let key_len = u16_at(rec, 10);
    let timestamp = u64::from_le_bytes([
        rec[16], rec[17], rec[18], rec[19], rec[20], rec[21], rec[22], rec[23],
    ]);
    let key = &rec[HEADER_LEN..HEADER_LEN + key_len];
    let value = &rec[HEADER_LEN + key_len..];
    Ok((
        RecordRef {
            timestamp,
            flags,
            key,
            value,
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_as_documented() {
        let mut b = Vec::new();
        encode(&mut b, 0x0102_0304_0506_0708, FLAG_TOMBSTONE, b"ab", b"xyz");
        assert_eq!(b.len(), 24 + 2 + 3);
        assert_eq!(&b[..4], &MAGIC);
        assert_eq!(b[8], VERSION);
        assert_eq!(b[9], FLAG_TOMBSTONE);
        assert_eq!(&b[10..12], &[2, 0]);
        assert_eq!(&b[12..16], &[3, 0, 0, 0]);
        assert_eq!(&b[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[24..], b"abxyz");
        let (r, n) = decode(&b).unwrap();
        assert_eq!(n, b.len());
        assert!(r.is_tombstone());
    }

    #[test]
    fn unknown_version_with_valid_crc_is_refused() {
        let mut b = Vec::new();
        encode(&mut b, 1, 0, b"k", b"v");
        b[8] = 2;
        let crc = checksum(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&b).unwrap_err(), DecodeError::UnknownVersion(2));
    }

    #[test]
    fn huge_length_is_rejected_without_allocation() {
        let mut b = Vec::new();
        encode(&mut b, 1, 0, b"k", b"v");
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
    }

    proptest! {
        #[test]
        fn round_trip(ts: u64, tomb: bool,
                      key in proptest::collection::vec(any::<u8>(), 0..300),
                      value in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let flags = if tomb { FLAG_TOMBSTONE } else { 0 };
            let mut b = vec![0xAA; 3]; // encoding appends after existing bytes
            encode(&mut b, ts, flags, &key, &value);
            let (r, n) = decode(&b[3..]).unwrap();
            prop_assert_eq!(n, encoded_len(key.len(), value.len()));
            prop_assert_eq!(r, RecordRef { timestamp: ts, flags, key: &key, value: &value });
        }

        #[test]
        fn any_flipped_byte_is_rejected(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            value in proptest::collection::vec(any::<u8>(), 0..200),
            at in any::<prop::sample::Index>(), xor in 1u8..) {
            let mut b = Vec::new();
            encode(&mut b, 42, 0, &key, &value);
            let i = at.index(b.len());
            b[i] ^= xor;
            prop_assert!(decode(&b).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }
    }
}
