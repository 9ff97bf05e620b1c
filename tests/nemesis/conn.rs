//! Client connections for the nemesis: the library's `Client` with a short
//! reply timeout (its default 30 s would stall a client thread for a whole
//! SIGSTOP), reopened after errors, and with errors that say whether the
//! command may have been executed.

use std::io;
use std::time::Duration;

use distro_db::client::Client;
use distro_db::resp::Frame;

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

/// A lazily opened, reopened-after-error connection to one address.
pub struct Slot {
    addr: String,
    conn: Option<Client>,
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
            let conn = Client::connect_with(&self.addr, REPLY_TIMEOUT)
                .map_err(|e| (CallError::NotSent(e), false))?;
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
        Ok(f) => f.text().ok_or_else(|| format!("unexpected reply {f:?}")),
        Err(e) => Err(e.to_string()),
    }
}
