//! An [`Object`]'s stored form, written and read by hand: the same
//! MessagePack bytes `rmp_serde` makes of the derived `Serialize` (structs
//! as arrays, integers in their shortest form), at a fraction of the cost.
//!
//! Every write reads the key's stored object and writes the merged one on
//! each of its replicas, and every read decodes one: through serde's
//! visitors this was ~1.4k instructions per decode and ~0.9k per encode of
//! a one-sibling object (callgrind, docs/benchmarks.md). The derived impls
//! stay what the peer protocol uses and what defines the format;
//! [`encode`] writes byte for byte what they write (a property test holds
//! it to that), and [`decode`] reads the form they write and answers
//! `None` for anything else (a signed integer marker, a struct written as
//! a map, a short sibling of an older build, bad UTF-8), so
//! that [`Object::from_bytes`] hands those to `rmp_serde` and accepts and
//! refuses exactly what it did.

use std::collections::BTreeMap;

use super::{Counter, Object, Sibling};
use crate::vclock::{Actor, Dot, VClock};

/// Appends the stored form of `object` to `out`.
pub(super) fn encode(object: &Object, out: &mut Vec<u8>) {
    put_array_len(out, 2);
    put_map_len(out, object.clock.len());
    for (actor, counter) in object.clock.iter() {
        put_str(out, actor);
        put_uint(out, counter);
    }
    put_array_len(out, object.siblings.len());
    for s in &object.siblings {
        put_array_len(out, 5);
        put_array_len(out, 2);
        put_str(out, &s.dot.actor);
        put_uint(out, s.dot.counter);
        match &s.value {
            Some(v) => put_bin(out, v),
            None => out.push(NIL),
        }
        put_uint(out, s.written_ms);
        match s.expires_ms {
            Some(at) => put_uint(out, at),
            None => out.push(NIL),
        }
        match &s.counter {
            Some(c) => {
                put_map_len(out, c.0.len());
                for (actor, (inc, dec)) in &c.0 {
                    put_str(out, actor);
                    put_array_len(out, 2);
                    put_uint(out, *inc);
                    put_uint(out, *dec);
                }
            }
            None => out.push(NIL),
        }
    }
}

/// The object `bytes` hold, when they are in the form [`encode`] writes;
/// `None` for any other form, valid or not (see the module's documentation).
pub(super) fn decode(bytes: &[u8]) -> Option<Object> {
    let mut r = Reader { buf: bytes, pos: 0 };
    if r.array_len()? != 2 {
        return None;
    }
    let entries = r.map_len()?;
    let mut clock = BTreeMap::new();
    for _ in 0..entries {
        let actor = r.str()?;
        let counter = r.uint()?;
        clock.insert(actor, counter);
    }
    let count = r.array_len()?;
    // Each sibling takes at least a few bytes: a corrupt count cannot
    // reserve more than the input could hold.
    let mut siblings = Vec::with_capacity(count.min(r.left()));
    for _ in 0..count {
        siblings.push(r.sibling()?);
    }
    // Bytes after the object are ignored, as rmp_serde ignores them.
    Some(Object {
        clock: VClock::from_map(clock),
        siblings,
    })
}

const NIL: u8 = 0xc0;

fn put_uint(out: &mut Vec<u8>, n: u64) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= u64::from(u8::MAX) {
        out.extend_from_slice(&[0xcc, n as u8]);
    } else if n <= u64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(0xce);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// The markers of one MessagePack family whose items carry a length: its
/// fixed form (first marker, how many lengths it spans), then its 8-bit
/// (when it has one), 16-bit and 32-bit forms. Written and read from these
/// one table, so that writer and reader cannot disagree on a marker.
struct Family {
    fix: Option<(u8, usize)>,
    m8: Option<u8>,
    m16: u8,
    m32: u8,
}

const ARRAY: Family = Family {
    fix: Some((0x90, 16)),
    m8: None,
    m16: 0xdc,
    m32: 0xdd,
};
const MAP: Family = Family {
    fix: Some((0x80, 16)),
    m8: None,
    m16: 0xde,
    m32: 0xdf,
};
const STR: Family = Family {
    fix: Some((0xa0, 32)),
    m8: Some(0xd9),
    m16: 0xda,
    m32: 0xdb,
};
const BIN: Family = Family {
    fix: None,
    m8: Some(0xc4),
    m16: 0xc5,
    m32: 0xc6,
};

/// Writes the shortest marker of `family` for length `n`.
fn put_len(out: &mut Vec<u8>, n: usize, family: &Family) {
    match (family.fix, family.m8) {
        (Some((first, count)), _) if n < count => out.push(first + n as u8),
        (_, Some(m8)) if n <= usize::from(u8::MAX) => out.extend_from_slice(&[m8, n as u8]),
        _ if n <= usize::from(u16::MAX) => {
            out.push(family.m16);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            // Lengths past u32 cannot be stored (records are far smaller).
            out.push(family.m32);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn put_array_len(out: &mut Vec<u8>, n: usize) {
    put_len(out, n, &ARRAY);
}

fn put_map_len(out: &mut Vec<u8>, n: usize) {
    put_len(out, n, &MAP);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len(), &STR);
    out.extend_from_slice(s.as_bytes());
}

fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len(), &BIN);
    out.extend_from_slice(b);
}

/// A cursor over stored bytes; every read answers `None` past the end or
/// on a marker other than the ones [`encode`] writes there.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn be(&mut self, width: usize) -> Option<u64> {
        Some(
            self.take(width)?
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b)),
        )
    }

    /// Takes a nil if one is next.
    fn nil(&mut self) -> bool {
        if self.buf.get(self.pos) == Some(&NIL) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// A length in one of `family`'s markers.
    fn length(&mut self, family: &Family) -> Option<usize> {
        let b = self.byte()?;
        let n = match family.fix {
            Some((first, count)) if b >= first && usize::from(b - first) < count => {
                u64::from(b - first)
            }
            _ if Some(b) == family.m8 => self.be(1)?,
            _ if b == family.m16 => self.be(2)?,
            _ if b == family.m32 => self.be(4)?,
            _ => return None,
        };
        usize::try_from(n).ok()
    }

    fn array_len(&mut self) -> Option<usize> {
        self.length(&ARRAY)
    }

    fn map_len(&mut self) -> Option<usize> {
        self.length(&MAP)
    }

    fn str(&mut self) -> Option<Actor> {
        let n = self.length(&STR)?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    fn bin(&mut self) -> Option<Vec<u8>> {
        let n = self.length(&BIN)?;
        Some(self.take(n)?.to_vec())
    }

    fn sibling(&mut self) -> Option<Sibling> {
        // Five fields, as `encode` writes them; an older build's shorter
        // form goes to rmp_serde, which fills in the defaults.
        if self.array_len()? != 5 || self.array_len()? != 2 {
            return None;
        }
        let actor = self.str()?;
        let counter = self.uint()?;
        let value = if self.nil() { None } else { Some(self.bin()?) };
        let written_ms = self.uint()?;
        let expires_ms = if self.nil() { None } else { Some(self.uint()?) };
        let counter_state = if self.nil() {
            None
        } else {
            let n = self.map_len()?;
            let mut entries = BTreeMap::new();
            for _ in 0..n {
                let actor = self.str()?;
                if self.array_len()? != 2 {
                    return None;
                }
                let inc = self.uint()?;
                let dec = self.uint()?;
                entries.insert(actor, (inc, dec));
            }
            Some(Counter(entries))
        };
        Some(Sibling {
            dot: Dot { actor, counter },
            value,
            written_ms,
            expires_ms,
            counter: counter_state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Numbers at every width's edges.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..300,
            Just(127u64),
            Just(128u64),
            Just(255u64),
            Just(256u64),
            Just(65_535u64),
            Just(65_536u64),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            any::<u64>(),
        ]
    }

    /// Actor names of every string width (fixstr, str8, str16), non-ASCII too.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9/]{0,40}",
            "é{0,20}",
            proptest::collection::vec("[a-z]", 250..300).prop_map(|v| v.concat()),
        ]
    }

    /// Byte strings of every bin width.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 65_530..65_545),
        ]
    }

    fn sibling() -> impl Strategy<Value = Sibling> {
        (
            name(),
            number(),
            proptest::option::of(bytes()),
            number(),
            proptest::option::of(number()),
            proptest::option::of(proptest::collection::btree_map(
                name(),
                (number(), number()),
                0..4,
            )),
        )
            .prop_map(
                |(actor, counter, value, written_ms, expires_ms, c)| Sibling {
                    dot: Dot { actor, counter },
                    value,
                    written_ms,
                    expires_ms,
                    counter: c.map(Counter),
                },
            )
    }

    fn object() -> impl Strategy<Value = Object> {
        (
            proptest::collection::btree_map(name(), number(), 0..20),
            proptest::collection::vec(sibling(), 0..20),
        )
            .prop_map(|(clock, siblings)| Object {
                clock: VClock::from_map(clock),
                siblings,
            })
    }

    /// What `Object::from_bytes` answered before this codec: rmp_serde alone.
    fn serde_decode(bytes: &[u8]) -> Option<Object> {
        rmp_serde::from_slice(bytes).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The hand-written form is the derived one, byte for byte, and
        /// reads back as the object.
        #[test]
        fn encodes_as_serde_does_and_decodes_back(o in object()) {
            let mut ours = Vec::new();
            encode(&o, &mut ours);
            prop_assert_eq!(&ours, &rmp_serde::to_vec(&o).unwrap());
            prop_assert_eq!(decode(&ours), Some(o.clone()));
            prop_assert_eq!(Object::from_bytes(&ours).unwrap(), o);
        }

        /// Damaged bytes (a byte changed, some cut off or added) are read
        /// exactly as rmp_serde reads them: the same object, or refused.
        #[test]
        fn damaged_bytes_read_as_serde_reads_them(
            o in object(),
            at in any::<prop::sample::Index>(),
            with in any::<u8>(),
            how in 0u8..3,
        ) {
            let mut bytes = o.to_bytes();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = with,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, with),
                }
            }
            if let Some(fast) = decode(&bytes) {
                prop_assert_eq!(Some(fast), serde_decode(&bytes));
            }
            prop_assert_eq!(Object::from_bytes(&bytes).ok(), serde_decode(&bytes));
        }

        /// Arbitrary bytes never panic, and decode as rmp_serde decodes them.
        #[test]
        fn arbitrary_bytes_read_as_serde_reads_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assert_eq!(Object::from_bytes(&bytes).ok(), serde_decode(&bytes));
        }
    }

    /// Forms the derived impls accept and the fast reader leaves to them:
    /// an older build's three-field sibling, a struct written as a map, a
    /// signed integer marker.
    #[test]
    fn other_valid_forms_still_decode() {
        #[derive(serde::Serialize)]
        struct Old {
            dot: Dot,
            #[serde(with = "serde_bytes")]
            value: Option<Vec<u8>>,
            written_ms: u64,
        }
        #[derive(serde::Serialize)]
        struct OldObject {
            clock: VClock,
            siblings: Vec<Old>,
        }
        let dot = Dot {
            actor: "n1/1".into(),
            counter: 3,
        };
        let old = OldObject {
            clock: VClock::from_map([("n1/1".to_string(), 3)].into()),
            siblings: vec![Old {
                dot: dot.clone(),
                value: Some(b"v".to_vec()),
                written_ms: 9,
            }],
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        assert_eq!(decode(&bytes), None);
        let o = Object::from_bytes(&bytes).unwrap();
        assert_eq!(o.siblings[0].dot, dot);
        assert_eq!(o.siblings[0].expires_ms, None);

        let named = rmp_serde::to_vec_named(&o).unwrap();
        assert_eq!(decode(&named), None);
        assert_eq!(Object::from_bytes(&named).unwrap(), o);

        // written_ms 9 as a uint16 (0xcd 0x00 0x09) instead of a fixint:
        // read by both; a signed int8 (0xd0 0x09) only by rmp_serde.
        let mut wide = o.to_bytes();
        let at = wide.len() - 3; // ... written_ms, expires nil, counter nil
        assert_eq!(&wide[at..], &[9, NIL, NIL]);
        let mut signed = wide.clone();
        wide.splice(at..at + 1, [0xcd, 0x00, 0x09]);
        assert_eq!(decode(&wide), Some(o.clone()));
        assert_eq!(serde_decode(&wide), Some(o.clone()));
        signed.splice(at..at + 1, [0xd0, 0x09]);
        assert_eq!(decode(&signed), None);
        assert_eq!(Object::from_bytes(&signed).unwrap(), o);
    }
}
