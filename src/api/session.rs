//! One client connection, pipelined: every command read together runs
//! concurrently, and the replies go out in order, every ready one in the
//! same `write`.
//!
//! Concurrency never changes what a client sees: a command that touches a
//! key an earlier command of the same connection is still working on waits
//! for it (so `SET k v` then `GET k` in one pipeline reads `v`), and an
//! administrative command (KILL, SHUTDOWN, FAULT, QUIT, ...) runs alone, after
//! everything before it and before everything after it.
//!
//! Input is buffered as it arrives, from the node's request budget beyond a
//! small base; at most [`MAX_RUNNING`] commands run at once per connection,
//! after which the session stops reading until some finish.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::command::{self, Command};
use super::resp::{self, DecodeError, Frame};
use super::{After, Api};
use crate::limits::{ByteBudget, consume, read_budgeted};

/// Commands of one connection running at once.
pub const MAX_RUNNING: usize = 1024;
/// Input buffer a connection keeps without drawing on the node's budget.
const BASE_BUFFER: usize = 4096;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Time allowed to finish sending a started command, and to write replies.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a command orders itself against.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// Nothing: runs alongside anything.
    Free,
    /// One key: waits for earlier commands on it.
    Key(Vec<u8>),
    /// Everything: runs alone.
    Barrier,
}

fn scope(cmd: &Command) -> Scope {
    match cmd {
        Command::Get { key, .. }
        | Command::VGet { key, .. }
        | Command::Set { key, .. }
        | Command::Del { key, .. } => Scope::Key(key.clone()),
        Command::Ping(_)
        | Command::Echo(_)
        | Command::Nodes
        | Command::Owners(_)
        | Command::Replicas(_)
        | Command::Status
        | Command::CommandDocs
        | Command::Noop => Scope::Free,
        Command::Kill(_)
        | Command::Shutdown
        | Command::ShutdownCluster
        | Command::Quit
        | Command::Fault(_) => Scope::Barrier,
    }
}

/// A request read from the connection, not started yet.
enum Pending {
    /// A command to run.
    Run(Command),
    /// An answer known at once (a command that did not parse).
    Answer(Frame, After),
}

/// The scopes of the commands running on one connection.
#[derive(Default)]
struct InFlight {
    keys: HashMap<Vec<u8>, usize>,
    running: usize,
    barrier: bool,
}

impl InFlight {
    fn can_start(&self, s: &Scope) -> bool {
        match s {
            _ if self.barrier => false,
            Scope::Free => true,
            Scope::Key(k) => !self.keys.contains_key(k),
            Scope::Barrier => self.running == 0,
        }
    }

    fn start(&mut self, s: &Scope) {
        self.running += 1;
        match s {
            Scope::Free => {}
            Scope::Key(k) => *self.keys.entry(k.clone()).or_insert(0) += 1,
            Scope::Barrier => self.barrier = true,
        }
    }

    fn finish(&mut self, s: &Scope) {
        self.running -= 1;
        match s {
            Scope::Free => {}
            Scope::Key(k) => {
                if let Some(n) = self.keys.get_mut(k) {
                    *n -= 1;
                    if *n == 0 {
                        self.keys.remove(k);
                    }
                }
            }
            Scope::Barrier => self.barrier = false,
        }
    }
}

/// Serves one client connection whose first byte was `first`. Returns when
/// the client closes, after QUIT or a protocol error, or on `shutdown`.
pub async fn serve(
    api: Arc<Api>,
    stream: TcpStream,
    first: u8,
    budget: ByteBudget,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (mut reader, mut writer) = stream.into_split();
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    buf.push(first);
    let mut held = budget.empty();
    let mut pending: VecDeque<(Scope, Pending)> = VecDeque::new();
    let mut in_flight = InFlight::default();
    let mut running = FuturesOrdered::new();
    let mut out: Vec<u8> = Vec::new();
    // Set once the input is finished (closed, QUIT read, protocol error).
    let mut input_done = false;
    loop {
        if !input_done {
            input_done = parse_buffered(&mut buf, &mut pending, &mut held);
        }
        // Start every command whose turn it is.
        while let Some((s, _)) = pending.front() {
            if !in_flight.can_start(s) || in_flight.running >= MAX_RUNNING {
                break;
            }
            let Some((s, p)) = pending.pop_front() else {
                break;
            };
            in_flight.start(&s);
            let api = api.clone();
            running.push_back(async move {
                let (frame, after) = match p {
                    Pending::Run(cmd) => api.execute(cmd).await,
                    Pending::Answer(frame, after) => (frame, after),
                };
                (frame, after, s)
            });
        }
        if input_done && running.is_empty() && pending.is_empty() {
            return Ok(());
        }
        let can_read = !input_done && pending.is_empty() && in_flight.running < MAX_RUNNING;
        let wait = if buf.is_empty() && running.is_empty() {
            IDLE_TIMEOUT
        } else {
            IO_TIMEOUT
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            Some(first_done) = running.next(), if !running.is_empty() => {
                let mut done = Some(first_done);
                let mut last = After::Continue;
                while let Some((frame, after, s)) = done.take() {
                    frame.encode(&mut out);
                    in_flight.finish(&s);
                    if after != After::Continue {
                        last = after;
                        break;
                    }
                    if let Some(Some(more)) = futures::FutureExt::now_or_never(running.next()) {
                        done = Some(more);
                    }
                }
                tokio::time::timeout(IO_TIMEOUT, writer.write_all(&out))
                    .await
                    .map_err(|_| timed_out("write"))??;
                out.clear();
                match last {
                    After::Continue => {}
                    After::Close => return Ok(()),
                    After::StopNode => {
                        (api.stop)();
                        return Ok(());
                    }
                }
            }
            r = tokio::time::timeout(wait, read_budgeted(&mut reader, &mut buf, &mut held, BASE_BUFFER)), if can_read => {
                match r {
                    Err(_) => return Err(timed_out("read")),
                    // The client finished sending: answer what it sent, then close.
                    Ok(Ok(0)) => input_done = true,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                }
            }
        }
    }
}

/// Parses every complete command in `buf` into `pending`; returns true when
/// the input must stop (a protocol error, or QUIT).
fn parse_buffered(
    buf: &mut Vec<u8>,
    pending: &mut VecDeque<(Scope, Pending)>,
    held: &mut crate::limits::Held,
) -> bool {
    let mut used = 0;
    let mut stop = false;
    while pending.len() < MAX_RUNNING {
        let frame = match resp::decode(&buf[used..]) {
            Ok((frame, n)) => {
                used += n;
                frame
            }
            Err(DecodeError::Incomplete) => break,
            Err(DecodeError::Invalid(msg)) => {
                let reply = Frame::Error(format!("ERR Protocol error: {msg}"));
                pending.push_back((Scope::Barrier, Pending::Answer(reply, After::Close)));
                stop = true;
                break;
            }
        };
        match frame_args(frame) {
            Some(args) if args.is_empty() => {}
            Some(args) => match command::parse(&args) {
                Ok(cmd) => {
                    let quit = matches!(cmd, Command::Quit);
                    pending.push_back((scope(&cmd), Pending::Run(cmd)));
                    if quit {
                        stop = true;
                        break;
                    }
                }
                Err(e) => pending
                    .push_back((Scope::Free, Pending::Answer(Frame::err(e), After::Continue))),
            },
            None => {
                let reply = Frame::err("Protocol error: expected an array of bulk strings");
                pending.push_back((Scope::Barrier, Pending::Answer(reply, After::Close)));
                stop = true;
                break;
            }
        }
    }
    consume(buf, used, held, BASE_BUFFER);
    stop
}

/// The arguments of a command frame (an array of bulk or simple strings).
fn frame_args(frame: Frame) -> Option<Vec<Vec<u8>>> {
    match frame {
        Frame::Array(items) => items
            .into_iter()
            .map(|f| match f {
                Frame::Bulk(b) => Some(b),
                Frame::Simple(s) => Some(s.into_bytes()),
                Frame::Integer(i) => Some(i.to_string().into_bytes()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timeout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_on_one_key_wait_and_barriers_run_alone() {
        let mut f = InFlight::default();
        let k = Scope::Key(b"k".to_vec());
        assert!(f.can_start(&k));
        f.start(&k);
        assert!(!f.can_start(&k));
        assert!(f.can_start(&Scope::Key(b"j".to_vec())));
        assert!(f.can_start(&Scope::Free));
        assert!(!f.can_start(&Scope::Barrier));
        f.finish(&k);
        assert!(f.can_start(&Scope::Barrier));
        f.start(&Scope::Barrier);
        assert!(!f.can_start(&Scope::Free));
        assert!(!f.can_start(&k));
        f.finish(&Scope::Barrier);
        assert!(f.can_start(&k));
    }

    #[test]
    fn a_pipeline_parses_in_order_and_stops_at_quit() {
        let mut buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nFROB\r\nQUIT\r\nPING\r\n".to_vec();
        let budget = ByteBudget::new(1 << 20);
        let mut held = budget.empty();
        let mut pending = VecDeque::new();
        assert!(parse_buffered(&mut buf, &mut pending, &mut held));
        let kinds: Vec<String> = pending
            .iter()
            .map(|(s, p)| match p {
                Pending::Run(c) => format!("{c:?}/{s:?}"),
                Pending::Answer(f, _) => format!("answer {f:?}"),
            })
            .collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(kinds[0].starts_with("Get"));
        assert!(kinds[2].starts_with("answer -ERR unknown command"));
        assert!(kinds[3].starts_with("Quit"));
        // What follows QUIT stays unread.
        assert_eq!(buf, b"PING\r\n");
    }
}
