//! Segment files: naming, ordering, and the scanner that walks a segment's
//! bytes record by record, skipping damaged records and finding a torn tail.
//!
//! A segment is named `<id as 16 hex digits>.seg`. Ids order segments from
//! oldest to newest. The writer allocates ids whose low [`MINOR_BITS`] bits
//! are zero; compaction output takes the ids just above the newest segment it
//! compacted (same high bits), so it sorts after its inputs and before every
//! segment written later.

use std::path::{Path, PathBuf};

use super::record::{self, DecodeError, MAGIC, RecordRef};

/// Low bits of a segment id reserved for compaction output.
pub const MINOR_BITS: u32 = 20;
/// Extension of segment files.
pub const SEG_EXT: &str = "seg";
/// Extension of hint files.
pub const HINT_EXT: &str = "hint";
/// Extension of files being written (deleted at start-up).
pub const TMP_EXT: &str = crate::durable::TMP_SUFFIX;

/// Path of segment `id` in `dir`.
pub fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.{SEG_EXT}"))
}

/// Path of the hint file of segment `id` in `dir`.
pub fn hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.{HINT_EXT}"))
}

/// Parses `<16 hex>.<ext>` file names; returns the id and extension.
pub fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 16 {
        return None;
    }
    let id = u64::from_str_radix(stem, 16).ok()?;
    Some((id, ext))
}

/// The first id of the writer generation after `id`.
pub fn next_major(id: u64) -> u64 {
    ((id >> MINOR_BITS) + 1) << MINOR_BITS
}

/// A stretch of bytes the scanner skipped because no valid record starts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Offset of the first skipped byte.
    pub offset: u64,
    /// Number of bytes skipped.
    pub len: u64,
    /// Why the record at `offset` was rejected.
    pub reason: String,
}

/// What a scan found besides the valid records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Valid records seen.
    pub records: u64,
    /// Damaged stretches in the middle of the data (a valid record follows each).
    pub corrupt: Vec<Skipped>,
    /// Trailing bytes after which no valid record follows (a torn write or
    /// junk): the offset where they start. `None` if the data ends cleanly.
    pub torn_tail: Option<Skipped>,
    /// End of the last valid record (the length to truncate a torn tail to).
    pub valid_end: u64,
    /// Bytes of zeros after the last valid record, up to the end: space
    /// zero-filled ahead of the records ([`super::PREALLOCATE`]), not
    /// damage. The segment's data ends at `valid_end`.
    pub zero_tail: u64,
}

/// Offset of the first valid record at or after `from`, if any.
fn resync(buf: &[u8], from: usize) -> Result<Option<usize>, DecodeError> {
    let mut at = from;
    while at + MAGIC.len() <= buf.len() {
        let Some(rel) = buf[at..].windows(MAGIC.len()).position(|w| w == MAGIC) else {
            return Ok(None);
        };
        let cand = at + rel;
        match record::decode(&buf[cand..]) {
            Ok(_) => return Ok(Some(cand)),
            Err(e @ DecodeError::UnknownVersion(_)) => return Err(e),
            Err(_) => at = cand + 1,
        }
    }
    Ok(None)
}

/// Walks `buf` (a whole segment) and calls `visit(offset, len, record)` for
/// every valid record in order. Where a record fails to decode and only
/// zeros follow, the data ends there (a zero-filled tail, reported in
/// `zero_tail`). Otherwise a record that fails to decode is skipped by
/// searching for the next magic marker that starts a valid record; if none
/// follows, the rest is reported as a torn tail. An intact record of an
/// unknown format version stops the scan with that error (never misread).
pub fn scan(
    buf: &[u8],
    mut visit: impl FnMut(u64, u32, &RecordRef<'_>),
) -> Result<ScanSummary, DecodeError> {
    let mut sum = ScanSummary::default();
    let mut pos = 0usize;
    while pos < buf.len() {
        match record::decode(&buf[pos..]) {
            Ok((rec, n)) => {
                // A segment never exceeds u32::MAX bytes, so n fits.
                visit(pos as u64, n as u32, &rec);
                sum.records += 1;
                pos += n;
                sum.valid_end = pos as u64;
            }
            Err(e @ DecodeError::UnknownVersion(_)) => return Err(e),
            Err(_) if buf[pos..].iter().all(|&b| b == 0) => {
                sum.zero_tail = (buf.len() - pos) as u64;
                break;
            }
            Err(e) => match resync(buf, pos + 1)? {
                Some(next) => {
                    sum.corrupt.push(Skipped {
                        offset: pos as u64,
                        len: (next - pos) as u64,
                        reason: e.to_string(),
                    });
                    pos = next;
                }
                None => {
                    sum.torn_tail = Some(Skipped {
                        offset: pos as u64,
                        len: (buf.len() - pos) as u64,
                        reason: e.to_string(),
                    });
                    break;
                }
            },
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Rec = (Vec<u8>, Vec<u8>);

    fn build(recs: &[Rec]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for (i, (k, v)) in recs.iter().enumerate() {
            starts.push(buf.len());
            record::encode(&mut buf, i as u64, 0, k, v);
        }
        (buf, starts)
    }

    fn collect(buf: &[u8]) -> (Vec<Rec>, ScanSummary) {
        let mut out = Vec::new();
        let sum = scan(buf, |_, _, r| out.push((r.key.to_vec(), r.value.to_vec()))).unwrap();
        (out, sum)
    }

    fn recs() -> impl Strategy<Value = Vec<Rec>> {
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..24),
                proptest::collection::vec(any::<u8>(), 0..120),
            ),
            1..12,
        )
    }

    #[test]
    fn names_round_trip() {
        let p = seg_path(Path::new("/d"), 0x1234);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_name(name), Some((0x1234, "seg")));
        assert_eq!(parse_name("LOCK"), None);
        assert_eq!(next_major(5), 1 << MINOR_BITS);
    }

    proptest! {
        #[test]
        fn truncation_keeps_exactly_the_complete_records(rs in recs(), cut in any::<prop::sample::Index>()) {
            let (buf, starts) = build(&rs);
            let cut = cut.index(buf.len() + 1);
            let complete = starts.iter().zip(&rs).filter(|&(&s, (k, v))| s + record::encoded_len(k.len(), v.len()) <= cut).count();
            let (got, sum) = collect(&buf[..cut]);
            prop_assert_eq!(&got[..], &rs[..complete]);
            prop_assert!(sum.corrupt.is_empty());
            let end = if complete == 0 { 0 } else { starts.get(complete).copied().unwrap_or(buf.len()) };
            prop_assert_eq!(sum.valid_end as usize, end);
            prop_assert_eq!(sum.torn_tail.is_some(), cut != end);
        }

        #[test]
        fn a_zero_filled_tail_ends_the_data_and_a_torn_record_before_it_is_torn(
            rs in recs(), cut in any::<prop::sample::Index>(), extra in 0usize..5000,
        ) {
            // A file zero-filled ahead of its records (`PREALLOCATE`), in
            // which a power cut kept the writes before `cut` only.
            let (buf, starts) = build(&rs);
            let cut = cut.index(buf.len() + 1);
            let mut file = buf[..cut].to_vec();
            file.resize(buf.len() + extra, 0);
            let complete = starts.iter().zip(&rs).filter(|&(&s, (k, v))| s + record::encoded_len(k.len(), v.len()) <= cut).count();
            let end = if complete == 0 { 0 } else { starts.get(complete).copied().unwrap_or(buf.len()) };
            let (got, sum) = collect(&file);
            prop_assert_eq!(&got[..], &rs[..complete]);
            prop_assert!(sum.corrupt.is_empty());
            prop_assert_eq!(sum.valid_end as usize, end);
            if cut == end {
                prop_assert!(sum.torn_tail.is_none());
                prop_assert_eq!(sum.zero_tail as usize, file.len() - end);
            } else {
                // The torn record's first bytes (its magic) are not zeros.
                prop_assert!(sum.torn_tail.is_some());
                prop_assert_eq!(sum.zero_tail, 0);
            }
        }

        #[test]
        fn flipped_byte_loses_only_its_record(rs in recs(), at in any::<prop::sample::Index>(), xor in 1u8..) {
            let (mut buf, starts) = build(&rs);
            let i = at.index(buf.len());
            buf[i] ^= xor;
            let victim = starts.iter().rposition(|&s| s <= i).unwrap();
            let (got, sum) = collect(&buf);
            let mut want = rs.clone();
            want.remove(victim);
            prop_assert_eq!(got, want);
            prop_assert_eq!(sum.corrupt.len() + usize::from(sum.torn_tail.is_some()), 1);
        }
    }
}
