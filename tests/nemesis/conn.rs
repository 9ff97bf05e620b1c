//! A RESP connection with a short reply timeout. The library's `Client`
//! waits 30 s for a reply; against a SIGSTOPped node that would stall a
//! client thread for the whole pause, so the nemesis clients use this one.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use distro_db::resp::{self, DecodeError, Frame};

/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for a reply. A node answers within 2× its request timeout
/// (4 s by default, for a forwarded write), so a longer wait means the node
/// is stopped or gone.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The connection could not be opened: the command was never sent.
    NotSent(io::Error),
    /// The connection broke or timed out after (or while) the command was
    /// sent: it may have been executed.
    MaybeSent(io::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(e) => write!(f, "not sent: {e}"),
            CallError::MaybeSent(e) => write!(f, "connection error after sending: {e}"),
        }
    }
}

/// One connection to one node.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: &str) -> io::Result<Conn> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let stream = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> io::Result<Frame> {
        let frame = Frame::command(args.iter().map(|a| a.as_bytes()));
        self.stream.write_all(&frame.to_bytes())?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match resp::decode(&self.buf) {
                Ok((frame, used)) => {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                Err(DecodeError::Incomplete) => {}
                Err(DecodeError::Invalid(msg)) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the node",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A lazily opened, reopened-after-error connection to one address.
pub struct Slot {
    addr: String,
    conn: Option<Conn>,
}

impl Slot {
    pub fn new(addr: String) -> Slot {
        Slot { addr, conn: None }
    }

    /// Calls `args`; on any connection error the connection is dropped (the
    /// next call reconnects).
    pub fn call(&mut self, args: &[&str]) -> Result<Frame, CallError> {
        self.call_reporting(args).map_err(|(e, _)| e)
    }

    /// Like [`Slot::call`] for a command that is safe to repeat (a read): if
    /// it fails on a connection opened before this call (say, to a node
    /// that was restarted since), it is retried once on a new connection, as
    /// client libraries do with pooled connections.
    pub fn call_retrying_stale(&mut self, args: &[&str]) -> Result<Frame, CallError> {
        match self.call_reporting(args) {
            Err((CallError::MaybeSent(_), true)) => self.call(args),
            other => other.map_err(|(e, _)| e),
        }
    }

    /// The error says whether the connection was a reused one.
    fn call_reporting(&mut self, args: &[&str]) -> Result<Frame, (CallError, bool)> {
        let reused = self.conn.is_some();
        if self.conn.is_none() {
            let conn = Conn::connect(&self.addr).map_err(|e| (CallError::NotSent(e), false))?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connection opened just above")
        };
        conn.call(args).map_err(|e| {
            self.conn = None;
            (CallError::MaybeSent(e), reused)
        })
    }
}

/// One command on a fresh connection to `addr`.
pub fn call_once(addr: &str, args: &[&str]) -> Result<Frame, CallError> {
    Slot::new(addr.to_string()).call(args)
}

/// The text of a bulk reply, or a description of what came instead.
pub fn bulk_text(reply: Result<Frame, CallError>) -> Result<String, String> {
    match reply {
        Ok(Frame::Bulk(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
