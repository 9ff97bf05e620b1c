//! RESP, the Redis serialization protocol: frames, an incremental decoder that
//! never panics on arbitrary bytes, and an encoder.
//!
//! Clients (`db repl`, `redis-cli`, any Redis library) speak RESP to a node's
//! TCP port. The decoder accepts RESP2 and the RESP3 null (`_`), and "inline"
//! commands (a plain text line such as `PING`, as typed into telnet). It
//! enforces limits on bulk length, element count and nesting depth, so a
//! hostile peer cannot make a node allocate without bound or overflow its stack.

use std::fmt;

/// Largest bulk string accepted (a value plus headroom).
pub const MAX_BULK_LEN: usize = 64 * 1024 * 1024;
/// Largest number of elements in one array: far more than any command or
/// reply of distro-db has (at most 100 siblings), small enough that
/// re-decoding a partial frame after each read stays cheap.
pub const MAX_ARRAY_LEN: usize = 4096;
/// Deepest nesting of arrays.
pub const MAX_DEPTH: usize = 16;
/// Longest inline command or simple-string line.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// One RESP value.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+OK`
    Simple(String),
    /// `-ERR message`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or `_`
    Null,
    /// `*2\r\n...`
    Array(Vec<Frame>),
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Simple(s) => write!(f, "+{s}"),
            Frame::Error(s) => write!(f, "-{s}"),
            Frame::Integer(i) => write!(f, ":{i}"),
            Frame::Bulk(b) => write!(f, "${:?}", String::from_utf8_lossy(b)),
            Frame::Null => write!(f, "nil"),
            Frame::Array(a) => f.debug_list().entries(a).finish(),
        }
    }
}

impl Frame {
    /// `-ERR <msg>`.
    pub fn err(msg: impl fmt::Display) -> Frame {
        Frame::Error(format!("ERR {msg}"))
    }

    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple("OK".into())
    }

    /// A bulk string from text.
    pub fn bulk(s: impl Into<Vec<u8>>) -> Frame {
        Frame::Bulk(s.into())
    }

    /// Appends the wire form of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(s) => line(out, b'-', s.as_bytes()),
            Frame::Integer(i) => line(out, b':', i.to_string().as_bytes()),
            Frame::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// The wire form of `self`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// A command as clients send it: an array of bulk strings.
    pub fn command<I, A>(args: I) -> Frame
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        Frame::Array(
            args.into_iter()
                .map(|a| Frame::Bulk(a.as_ref().to_vec()))
                .collect(),
        )
    }
}

/// Simple strings and errors must not contain CR or LF: they are replaced.
fn line(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend(
        body.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Why a buffer did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More bytes are needed; not an error, the normal state between reads.
    #[error("incomplete frame")]
    Incomplete,
    /// The bytes are not RESP (or break a limit); the connection must close.
    #[error("protocol error: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

/// Decodes one frame from the front of `buf`; returns it and the number of
/// bytes it used.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    let first = *buf.first().ok_or(DecodeError::Incomplete)?;
    if matches!(first, b'*' | b'$' | b'+' | b'-' | b':' | b'_') {
        let mut pos = 0;
        let frame = decode_at(buf, &mut pos, 0)?;
        Ok((frame, pos))
    } else {
        decode_inline(buf)
    }
}

/// An inline command: one line, arguments split on spaces, with double or
/// single quotes grouping words (as redis-server accepts).
fn decode_inline(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE_LEN {
            return Err(invalid("inline command too long"));
        }
        return Err(DecodeError::Incomplete);
    };
    if nl > MAX_LINE_LEN {
        return Err(invalid("inline command too long"));
    }
    let text = &buf[..nl];
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let text = std::str::from_utf8(text).map_err(|_| invalid("inline command is not UTF-8"))?;
    let args = crate::text::tokenize(text).map_err(invalid)?;
    let frame = Frame::Array(args.into_iter().map(|a| Frame::Bulk(a.text)).collect());
    Ok((frame, nl + 1))
}

/// Reads a CRLF-terminated line starting at `*pos`.
fn read_line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], DecodeError> {
    let rest = buf.get(*pos..).ok_or(DecodeError::Incomplete)?;
    let window = &rest[..rest.len().min(MAX_LINE_LEN + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            *pos += i + 2;
            Ok(&rest[..i])
        }
        None if rest.len() > MAX_LINE_LEN + 1 => Err(invalid("line too long")),
        None => Err(DecodeError::Incomplete),
    }
}

fn read_int(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    let l = read_line(buf, pos)?;
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| invalid("invalid integer"))
}

fn decode_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Frame, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(invalid("arrays nested too deeply"));
    }
    let tag = *buf.get(*pos).ok_or(DecodeError::Incomplete)?;
    *pos += 1;
    match tag {
        b'+' | b'-' => {
            let l = read_line(buf, pos)?;
            let s = String::from_utf8_lossy(l).into_owned();
            Ok(if tag == b'+' {
                Frame::Simple(s)
            } else {
                Frame::Error(s)
            })
        }
        b':' => Ok(Frame::Integer(read_int(buf, pos)?)),
        b'_' => {
            let l = read_line(buf, pos)?;
            if !l.is_empty() {
                return Err(invalid("invalid null"));
            }
            Ok(Frame::Null)
        }
        b'$' => {
            let len = read_int(buf, pos)?;
            if len == -1 {
                return Ok(Frame::Null);
            }
            let len = usize::try_from(len).map_err(|_| invalid("invalid bulk length"))?;
            if len > MAX_BULK_LEN {
                return Err(invalid(format!(
                    "bulk string of {len} bytes exceeds the limit of {MAX_BULK_LEN}"
                )));
            }
            let end = pos
                .checked_add(len)
                .ok_or_else(|| invalid("invalid bulk length"))?;
            if buf.len() < end + 2 {
                return Err(DecodeError::Incomplete);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(invalid("bulk string not terminated by CRLF"));
            }
            let data = buf[*pos..end].to_vec();
            *pos = end + 2;
            Ok(Frame::Bulk(data))
        }
        b'*' => {
            let len = read_int(buf, pos)?;
            if len == -1 {
                return Ok(Frame::Null);
            }
            let len = usize::try_from(len).map_err(|_| invalid("invalid array length"))?;
            if len > MAX_ARRAY_LEN {
                return Err(invalid(format!(
                    "array of {len} elements exceeds the limit of {MAX_ARRAY_LEN}"
                )));
            }
            // Each element takes at least 3 bytes: don't reserve more than
            // the buffer could hold.
            let mut items = Vec::with_capacity(len.min(buf.len() / 3 + 1));
            for _ in 0..len {
                items.push(decode_at(buf, pos, depth + 1)?);
            }
            Ok(Frame::Array(items))
        }
        other => Err(invalid(format!("unexpected byte 0x{other:02x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(Frame::Simple),
            "[a-zA-Z0-9 ]{0,20}".prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Bulk),
            Just(Frame::Null),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Frame::Array)
        })
    }

    #[test]
    fn decodes_examples() {
        let (f, n) = decode(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nextra").unwrap();
        assert_eq!(f, Frame::command(["GET", "k"]));
        assert_eq!(n, 20);
        assert_eq!(decode(b"$-1\r\n").unwrap().0, Frame::Null);
        assert_eq!(decode(b"_\r\n").unwrap().0, Frame::Null);
        assert_eq!(decode(b":-5\r\n").unwrap().0, Frame::Integer(-5));
        assert_eq!(
            decode(b"*1\r\n$3\r\nab").unwrap_err(),
            DecodeError::Incomplete
        );
        assert!(matches!(
            decode(b"$3\r\nabcd\r\n"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(b"$99999999999\r\n"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(decode(b"*-7\r\n"), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn decodes_inline_commands() {
        let (f, n) = decode(b"SET k \"a b\"\r\nPING\r\n").unwrap();
        assert_eq!(f, Frame::command(["SET", "k", "a b"]));
        assert_eq!(n, 13);
        assert_eq!(decode(b"PING\n").unwrap().0, Frame::command(["PING"]));
        assert_eq!(decode(b"PING").unwrap_err(), DecodeError::Incomplete);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let bytes = b"*1\r\n".repeat(100_000);
        assert!(matches!(decode(&bytes), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn error_lines_cannot_break_framing() {
        let f = Frame::err("bad\r\nthing");
        let (g, _) = decode(&f.to_bytes()).unwrap();
        assert_eq!(g, Frame::Error("ERR bad  thing".into()));
    }

    proptest! {
        #[test]
        fn round_trip(f in frame()) {
            let bytes = f.to_bytes();
            let (g, n) = decode(&bytes).unwrap();
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(g, f);
        }

        #[test]
        fn every_prefix_is_incomplete(f in frame()) {
            let bytes = f.to_bytes();
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut]).unwrap_err(), DecodeError::Incomplete);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_resp_like_bytes_never_panic(
            parts in proptest::collection::vec(prop_oneof![
                Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
                Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"abc".to_vec()),
                Just(b":".to_vec()), Just(b"_".to_vec()), Just(b"+".to_vec()),
            ], 0..40)
        ) {
            let _ = decode(&parts.concat());
        }
    }
}
