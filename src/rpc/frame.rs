//! The peer wire format.
//!
//! A peer connection opens with the 4-byte [`PREAMBLE`] (`0xD7 'D' 'B'
//! version`); its first byte can never start a RESP frame or an inline
//! command, which is how a node's single TCP port serves both. Then each
//! message is a frame:
//!
//! ```text
//! u32 big-endian length L | L bytes of rmp-serde Envelope { version, id, body }
//! ```
//!
//! `L` is at most [`MAX_FRAME_LEN`]; a larger length closes the connection
//! before anything is allocated. Decoding never panics on arbitrary bytes.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Version of the peer protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u8 = 3;
/// First bytes of every peer connection.
pub const PREAMBLE: [u8; 4] = [0xD7, b'D', b'B', PROTOCOL_VERSION];
/// Largest frame accepted: a few maximum-size values with their siblings.
pub const MAX_FRAME_LEN: usize = 96 * 1024 * 1024;

/// A message with its request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u8,
    /// Matches a response to its request.
    pub id: u64,
    /// The sender's advertised address (requests only; fault injection
    /// drops requests from partitioned peers by it).
    pub from: Option<std::net::SocketAddr>,
    /// The message.
    pub body: T,
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed.
    #[error("incomplete frame")]
    Incomplete,
    /// A length beyond [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge(usize),
    /// The payload is not a valid envelope.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u8),
}

/// Encodes an envelope as a length-prefixed frame.
pub fn encode<T: Serialize>(
    from: Option<std::net::SocketAddr>,
    id: u64,
    body: &T,
) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(&mut out, from, id, body)?;
    Ok(out)
}

/// Appends a length-prefixed frame to `out` (so many frames can share one
/// buffer and one write). On error `out` is left as it was.
pub fn encode_into<T: Serialize>(
    out: &mut Vec<u8>,
    from: Option<std::net::SocketAddr>,
    id: u64,
    body: &T,
) -> Result<(), FrameError> {
    let env = Envelope {
        version: PROTOCOL_VERSION,
        id,
        from,
        body,
    };
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    finish(out, start, &env)
}

/// Appends `value` to the frame begun at `start` (its length prefix and
/// anything before `value`), then writes the prefix. On error `out` is cut
/// back to `start`.
fn finish<T: Serialize>(out: &mut Vec<u8>, start: usize, value: &T) -> Result<(), FrameError> {
    if let Err(e) = rmp_serde::encode::write(out, value) {
        out.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// A message body encoded once, to be framed for several peers (the same
/// copy of a write goes to every replica): a [`Head`] before its bytes
/// makes each frame, without encoding it again.
#[derive(Debug)]
pub struct Encoded(Vec<u8>);

impl Encoded {
    /// Encodes `body` as a frame's body would be, into `capacity` bytes
    /// reserved beforehand (growing a buffer from nothing copied it ~6 times).
    pub fn new<T: Serialize>(body: &T, capacity: usize) -> Result<Encoded, FrameError> {
        let mut bytes = Vec::with_capacity(capacity);
        rmp_serde::encode::write(&mut bytes, body)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        Ok(Encoded(bytes))
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for an empty encoding (never produced by [`Encoded::new`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A sender's address as an envelope carries it, encoded once per
/// transport: a `SocketAddr` through serde was ~1,200 instructions of every
/// peer call, more than most bodies.
#[derive(Debug, Clone)]
pub struct Sender(Vec<u8>);

impl Sender {
    /// `from`, encoded.
    pub fn new(from: Option<std::net::SocketAddr>) -> Sender {
        // An `Option<SocketAddr>` always encodes; nil (no sender) otherwise.
        Sender(rmp_serde::to_vec(&from).unwrap_or_else(|_| vec![0xc0]))
    }
}

/// Appends a length-prefixed request frame from `from`: the same bytes as
/// [`encode_into`], with the sender encoded beforehand. On error `out` is
/// left as it was.
pub fn encode_from_into<T: Serialize>(
    out: &mut Vec<u8>,
    from: &Sender,
    id: u64,
    body: &T,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(Head::new(from, id, 0)?.as_bytes());
    finish(out, start, body)
}

/// The bytes of a frame before its body: the length prefix and the
/// envelope up to its last field, kept inline (no allocation per frame).
/// The envelope is a 4-field msgpack array (rmp-serde's struct encoding)
/// whose body comes last, so its head can be written apart.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    bytes: [u8; HEAD_MAX],
    len: usize,
}

/// Room for a head: the prefix, the envelope's array marker, version, id
/// (at most 9 bytes) and sender (an IPv6 address with its port fits).
const HEAD_MAX: usize = 96;

impl Head {
    /// The head of a frame from `from` whose body is `body_len` bytes.
    pub fn new(from: &Sender, id: u64, body_len: usize) -> Result<Head, FrameError> {
        let mut bytes = [0u8; HEAD_MAX];
        // msgpack fixarray of the envelope's 4 fields.
        bytes[4] = 0x94;
        let mut cursor = std::io::Cursor::new(&mut bytes[5..]);
        let malformed = |e: rmp_serde::encode::Error| FrameError::Malformed(e.to_string());
        rmp_serde::encode::write(&mut cursor, &PROTOCOL_VERSION).map_err(malformed)?;
        rmp_serde::encode::write(&mut cursor, &id).map_err(malformed)?;
        let at = 5 + usize::try_from(cursor.position()).unwrap_or(HEAD_MAX);
        let end = at + from.0.len();
        if end > HEAD_MAX {
            return Err(FrameError::Malformed("sender address too long".into()));
        }
        bytes[at..end].copy_from_slice(&from.0);
        let len = end - 4 + body_len;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge(len));
        }
        bytes[..4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(Head { bytes, len: end })
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Reads the length prefix; `Ok(len)` once 4 bytes are there and `len` is allowed.
pub fn frame_len(buf: &[u8]) -> Result<usize, FrameError> {
    let head: [u8; 4] = buf
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(FrameError::Incomplete)?;
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a payload (the bytes after the length prefix).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<T>, FrameError> {
    let env: Envelope<T> =
        rmp_serde::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if env.version != PROTOCOL_VERSION {
        return Err(FrameError::Version(env.version));
    }
    Ok(env)
}

/// Decodes one whole frame from the front of `buf`; returns it and the bytes used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<(Envelope<T>, usize), FrameError> {
    let len = frame_len(buf)?;
    let payload = buf.get(4..4 + len).ok_or(FrameError::Incomplete)?;
    Ok((decode_payload(payload)?, 4 + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Object;
    use crate::rpc::{Request, Response};
    use crate::vclock::VClock;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Request> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..32);
        prop_oneof![
            Just(Request::Ping),
            Just(Request::Shutdown),
            bytes().prop_map(|key| Request::Get { key }),
            bytes().prop_map(|key| Request::Digest { key }),
            (bytes(), proptest::option::of(bytes()), 1usize..5).prop_map(|(key, value, w)| {
                Request::Write {
                    key,
                    write: crate::write::Write::value(value),
                    context: Some(VClock::new()),
                    w,
                }
            }),
            (bytes(), any::<i64>(), any::<u64>()).prop_map(|(key, by, at)| {
                Request::Write {
                    key,
                    write: if by % 2 == 0 {
                        crate::write::Write::Incr { by }
                    } else {
                        crate::write::Write::Expire {
                            deadline: Some(at),
                            cond: crate::write::ExpireIf::Later,
                        }
                    },
                    context: None,
                    w: 2,
                }
            }),
            (bytes(), bytes()).prop_map(|(key, v)| {
                let object = Object::update(None, &VClock::new(), &"n/1".to_string(), Some(v), 7)
                    .expect("one sibling");
                Request::Replicate {
                    key,
                    object,
                    hint: None,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<u64>(), req in request()) {
            let from = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 7)));
            let bytes = encode(from, id, &req).unwrap();
            let (env, used) = decode::<Request>(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(env.id, id);
            prop_assert_eq!(env.from, from);
            prop_assert_eq!(env.body, req);
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode::<Request>(&bytes[..cut]).unwrap_err(), FrameError::Incomplete);
            }
        }

        #[test]
        fn a_sender_or_body_encoded_beforehand_frames_to_the_same_bytes(
            id in any::<u64>(),
            req in request(),
            which in 0..3u8,
        ) {
            let from = match which {
                0 => None,
                1 => Some(std::net::SocketAddr::from(([10, 0, 0, 2], 7000))),
                _ => Some(std::net::SocketAddr::from(([0xfe80, 1, 2, 3, 4, 5, 6, 7], 65535))),
            };
            let sender = Sender::new(from);
            let mut direct = b"earlier frame".to_vec();
            encode_into(&mut direct, from, id, &req).unwrap();
            // As a connection's writer puts a shared body after its head.
            let body = Encoded::new(&req, 0).unwrap();
            let mut framed = b"earlier frame".to_vec();
            framed.extend_from_slice(Head::new(&sender, id, body.len()).unwrap().as_bytes());
            framed.extend_from_slice(body.as_bytes());
            prop_assert_eq!(&framed, &direct);
            let mut from_sender = b"earlier frame".to_vec();
            encode_from_into(&mut from_sender, &sender, id, &req).unwrap();
            prop_assert_eq!(&from_sender, &direct);
            let (env, _) = decode::<Request>(&framed[13..]).unwrap();
            prop_assert_eq!(env.body, req);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
            let _ = decode_payload::<Request>(&bytes);
        }
    }

    #[test]
    fn limits_and_versions() {
        assert_eq!(
            frame_len(&u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
        let env = Envelope {
            version: 9,
            id: 1,
            from: None,
            body: Request::Ping,
        };
        let payload = rmp_serde::to_vec(&env).unwrap();
        assert_eq!(
            decode_payload::<Request>(&payload).unwrap_err(),
            FrameError::Version(9)
        );
        let resp = encode(
            None,
            3,
            &Response::Error(crate::rpc::message::RemoteError::Invalid("x".into())),
        )
        .unwrap();
        assert!(decode::<Response>(&resp).is_ok());
        // Frames share a buffer: two in a row decode one after the other.
        let mut two = Vec::new();
        encode_into(&mut two, None, 1, &Request::Ping).unwrap();
        encode_into(&mut two, None, 2, &Request::Shutdown).unwrap();
        let (a, used) = decode::<Request>(&two).unwrap();
        let (b, _) = decode::<Request>(&two[used..]).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
    }
}
