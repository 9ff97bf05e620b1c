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
//!
//! Replies are bounded in bytes too: a finished reply of 1 KiB or more holds
//! its size of the same budget until it is written, a connection holds at
//! most a quarter of the budget in replies its client has not read, and a
//! connection holding 1 MiB of them starts nothing new and reads no more
//! input. A reply that does not fit is replaced by an error saying why, so a
//! client that never reads its replies holds a bounded share of memory (and
//! is closed when a write does not finish within 30 s), and commands keep
//! finishing while a write waits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::Instant;

use futures::future::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::clients::ClientHandle;
use super::commands::{self, Action, Command, ConnReply, Order, Reply};
use super::resp::{self, DecodeError, Frame, Proto};
use super::{After, Api};
use crate::acl::User;
use crate::limits::{ByteBudget, Held, consume, read_budgeted};
use crate::quiet::Quiet;

/// Commands of one connection running at once.
pub const MAX_RUNNING: usize = 1024;
/// Commands one `MULTI` may queue before `EXEC`.
pub const MAX_QUEUED: usize = 10_000;
/// Input buffer a connection keeps without drawing on the node's budget.
const BASE_BUFFER: usize = 4096;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Time allowed to finish sending a started command, and to write replies.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// When the node stops, how long the commands a connection is running get
/// to finish and be answered (a write waits at most about one request
/// timeout, 2 s by default, for its replicas).
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// Replies smaller than this are not charged to the budget (a connection
/// holds at most [`MAX_RUNNING`] of them).
const UNCHARGED_REPLY: usize = 1024;
/// A connection holding this many bytes of unwritten replies starts no new
/// command and reads no more input until they are written.
const REPLIES_PAUSE: usize = 1 << 20;

/// The bytes of finished replies one connection holds until they are
/// written, charged to the node's request budget.
struct ReplyMeter {
    budget: ByteBudget,
    held: AtomicUsize,
    /// Most one connection may hold (one reply alone may hold more, within
    /// the budget).
    cap: usize,
}

impl ReplyMeter {
    fn new(budget: ByteBudget) -> ReplyMeter {
        let cap = (budget.total() / 4).max(REPLIES_PAUSE);
        ReplyMeter {
            budget,
            held: AtomicUsize::new(0),
            cap,
        }
    }

    /// Bytes of finished replies held now.
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Charges a finished reply: the reply with the bytes it holds, or an
    /// error saying why in its place.
    fn charge(&self, frame: Frame, proto: Proto) -> (Frame, Option<Held>) {
        let n = frame.encoded_len(proto);
        if n < UNCHARGED_REPLY {
            return (frame, None);
        }
        let held = self.held();
        if held > 0 && held + n > self.cap {
            let msg = format!(
                "reply of {n} bytes not sent: this connection already holds {held} bytes of \
                 replies its client has not read (limit {}); read replies before sending more, \
                 or ask for less at once",
                self.cap
            );
            return (Frame::err(msg), None);
        }
        match self.budget.try_take(n) {
            Some(bytes) => {
                self.held.fetch_add(n, Ordering::Relaxed);
                (frame, Some(bytes))
            }
            None => {
                let msg = format!(
                    "reply of {n} bytes not sent: the node is out of request memory (budget {} \
                     bytes); try again",
                    self.budget.total()
                );
                (Frame::err(msg), None)
            }
        }
    }

    /// Gives back what written replies held.
    fn release(&self, bytes: Held) {
        self.held.fetch_sub(bytes.bytes(), Ordering::Relaxed);
    }
}

/// Encoded replies of one connection: those being written and those
/// waiting for the next write, with the budget bytes they hold.
struct Outbox {
    /// Encoded after the write in progress started.
    next: Vec<u8>,
    next_held: Held,
    /// Being written; `sent` bytes of it are.
    sending: Vec<u8>,
    sent: usize,
    sending_held: Held,
    /// When the write in progress must be done.
    deadline: Instant,
}

impl Outbox {
    fn new(budget: &ByteBudget) -> Outbox {
        Outbox {
            next: Vec::new(),
            next_held: budget.empty(),
            sending: Vec::new(),
            sent: 0,
            sending_held: budget.empty(),
            deadline: Instant::now(),
        }
    }

    fn is_empty(&self) -> bool {
        self.next.is_empty() && self.sending.is_empty()
    }

    fn push(&mut self, frame: &Frame, proto: Proto, held: Option<Held>) {
        frame.encode_as(&mut self.next, proto);
        if let Some(h) = held {
            self.next_held.merge(h);
        }
    }

    /// Starts writing what is encoded when no write is in progress, and
    /// writes at once what the socket takes.
    fn start(&mut self, w: &mut crate::tls::WriteHalf, meter: &ReplyMeter) -> std::io::Result<()> {
        if !self.sending.is_empty() || self.next.is_empty() {
            return Ok(());
        }
        std::mem::swap(&mut self.sending, &mut self.next);
        std::mem::swap(&mut self.sending_held, &mut self.next_held);
        self.sent = 0;
        self.deadline = Instant::now() + IO_TIMEOUT;
        match futures::future::poll_fn(|cx| self.poll_send(cx, w)).now_or_never() {
            Some(r) => self.written(r, meter),
            None => Ok(()),
        }
    }

    /// Writes the rest of `sending` and flushes it.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut crate::tls::WriteHalf,
    ) -> Poll<std::io::Result<()>> {
        while self.sent < self.sending.len() {
            let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.sending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Pin::new(w).poll_flush(cx)
    }

    /// A write finished: gives back what its replies held.
    fn written(&mut self, r: std::io::Result<()>, meter: &ReplyMeter) -> std::io::Result<()> {
        r?;
        self.sending.clear();
        meter.release(self.sending_held.take());
        Ok(())
    }
}

/// What a command orders itself against. Keys are known by their hash
/// ([`crate::keyspace::key_hash`]): two keys that share one only make their
/// commands wait for each other, which orders nothing wrongly, and no key is
/// copied for the bookkeeping (three allocations of every SET were).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// Nothing: runs alongside anything.
    Free,
    /// One key (most commands): waits for earlier commands on it.
    Key(u64),
    /// Several keys: waits for earlier commands on any of them.
    Keys(Vec<u64>),
    /// Everything: runs alone.
    Barrier,
}

impl Scope {
    /// The key hashes in scope.
    fn keys(&self) -> &[u64] {
        match self {
            Scope::Key(k) => std::slice::from_ref(k),
            Scope::Keys(keys) => keys,
            Scope::Free | Scope::Barrier => &[],
        }
    }
}

/// What `cmd`, read from the words `args`, orders itself against: its
/// declared [`Order`], with its keys at the declared key positions;
/// connection commands run alone, refusals alongside anything.
fn scope(cmd: &Command, args: &[Vec<u8>]) -> Scope {
    match (&cmd.action, cmd.spec) {
        (Action::Connection(_), _) => Scope::Barrier,
        (Action::Node(_), Some(spec)) => match spec.order {
            Order::Keys => {
                let mut keys = commands::key_indexes(spec, args.len())
                    .filter_map(|i| args.get(i))
                    .map(|k| crate::keyspace::key_hash(k));
                match (keys.next(), keys.next()) {
                    (None, _) => Scope::Keys(Vec::new()),
                    (Some(k), None) => Scope::Key(k),
                    (Some(a), Some(b)) => Scope::Keys([a, b].into_iter().chain(keys).collect()),
                }
            }
            Order::Free => Scope::Free,
            Order::Alone => Scope::Barrier,
        },
        (Action::Refuse(_), _) | (Action::Node(_), None) => Scope::Free,
    }
}

/// A request read from the connection, not started yet.
enum Pending {
    /// A command to run.
    Run(Command),
    /// A command that did not parse: its error, known at once.
    Invalid(Frame),
    /// The input cannot go on (a protocol error): answer and close.
    Fatal(Frame),
}

/// The scopes of the commands running on one connection.
#[derive(Default)]
struct InFlight {
    /// Commands running per key hash. hashbrown's hasher: std's SipHash
    /// was ~2% of a GET's instructions.
    keys: hashbrown::HashMap<u64, usize>,
    running: usize,
    barrier: bool,
}

impl InFlight {
    fn can_start(&self, s: &Scope) -> bool {
        match s {
            _ if self.barrier => false,
            Scope::Free => true,
            Scope::Key(_) | Scope::Keys(_) => s.keys().iter().all(|k| !self.keys.contains_key(k)),
            Scope::Barrier => self.running == 0,
        }
    }

    fn start(&mut self, s: &Scope) {
        self.running += 1;
        match s {
            Scope::Free => {}
            Scope::Key(_) | Scope::Keys(_) => {
                for &k in s.keys() {
                    *self.keys.entry(k).or_insert(0) += 1;
                }
            }
            Scope::Barrier => self.barrier = true,
        }
    }

    fn finish(&mut self, s: &Scope) {
        self.running -= 1;
        match s {
            Scope::Free => {}
            Scope::Key(_) | Scope::Keys(_) => {
                for k in s.keys() {
                    if let Some(n) = self.keys.get_mut(k) {
                        *n -= 1;
                        if *n == 0 {
                            self.keys.remove(k);
                        }
                    }
                }
            }
            Scope::Barrier => self.barrier = false,
        }
    }
}

/// The state of one connection that commands can change (the connection
/// family's executors read and change it).
pub struct Conn {
    /// The node's API.
    pub(crate) api: Arc<Api>,
    /// This connection in the registry of clients.
    pub(crate) client: Arc<ClientHandle>,
    /// The protocol replies are encoded in.
    pub(crate) proto: Proto,
    /// The user the connection runs commands as: none until AUTH succeeds
    /// when the default user has a password or is disabled.
    pub(crate) user: Option<Arc<User>>,
    /// Commands queued since `MULTI`, if one is open.
    pub(crate) multi: Option<Vec<Command>>,
    /// A command queued in `MULTI` was refused: `EXEC` aborts.
    pub(crate) multi_failed: bool,
    /// The replies this connection holds.
    meter: Arc<ReplyMeter>,
}

/// A reply that is ready or on its way, with how to encode it.
struct Running {
    reply: Reply,
    scope: Option<Scope>,
    proto: Proto,
    meter: Arc<ReplyMeter>,
    /// The command answered (for the request counters; `None` for a
    /// request that named no command of the table).
    spec: Option<&'static commands::Spec>,
}

/// A finished reply: the frame, what follows it, the scope it held, the
/// protocol to encode it in, the budget bytes it holds, its command.
type Finished = (
    Frame,
    After,
    Scope,
    Proto,
    Option<Held>,
    Option<&'static commands::Spec>,
);

impl Future for Running {
    type Output = Finished;

    /// The finished reply is charged at once, not when its turn to be
    /// written comes: replies that finish out of order hold memory too.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (frame, after) = ready!(self.reply.poll_unpin(cx));
        let scope = self.scope.take().unwrap_or(Scope::Free);
        let (frame, held) = self.meter.charge(frame, self.proto);
        Poll::Ready((frame, after, scope, self.proto, held, self.spec))
    }
}

impl Conn {
    fn running(&self, reply: Reply, s: Scope, spec: Option<&'static commands::Spec>) -> Running {
        Running {
            reply,
            scope: Some(s),
            proto: self.proto,
            meter: self.meter.clone(),
            spec,
        }
    }

    fn ready(
        &self,
        frame: Frame,
        after: After,
        s: Scope,
        spec: Option<&'static commands::Spec>,
    ) -> Running {
        self.running(futures::future::ready((frame, after)).boxed(), s, spec)
    }

    /// Starts one request: answers connection commands at once (the
    /// barrier guarantees nothing else of this connection is running) and
    /// hands the others to the API.
    fn start(&mut self, s: Scope, p: Pending) -> Running {
        let cmd = match p {
            Pending::Run(cmd) => cmd,
            Pending::Invalid(err) => {
                if self.multi.is_some() {
                    self.multi_failed = true;
                }
                return self.ready(err, After::Continue, s, None);
            }
            Pending::Fatal(err) => return self.ready(err, After::Close, s, None),
        };
        let spec = cmd.spec;
        // The one check of rights: every command of every client comes
        // through here, before it is queued in a MULTI or run. A command
        // refused here does nothing.
        match &self.user {
            None if !cmd.spec.is_some_and(|spec| spec.before_auth) => {
                return self.ready(
                    Frame::Error("NOAUTH Authentication required.".into()),
                    After::Continue,
                    s,
                    spec,
                );
            }
            Some(user) if !user.may(cmd.access()) => {
                let err = no_permission(user, &cmd);
                drop(cmd);
                // As Redis: a refused command aborts an open transaction.
                if self.multi.is_some() {
                    self.multi_failed = true;
                }
                return self.ready(err, After::Continue, s, spec);
            }
            _ => {}
        }
        if let Some(queue) = &mut self.multi
            && !cmd.spec.is_some_and(|spec| spec.not_queued)
        {
            if queue.len() >= MAX_QUEUED {
                drop(cmd);
                self.multi_failed = true;
                return self.ready(
                    Frame::err(format!("MULTI holds at most {MAX_QUEUED} commands")),
                    After::Continue,
                    s,
                    spec,
                );
            }
            // A command refused outright is refused now, and aborts the
            // transaction, as Redis does with commands it rejects while
            // queuing: nothing of it will be applied.
            if let Action::Refuse(msg) = cmd.action {
                self.multi_failed = true;
                return self.ready(Frame::err(msg), After::Continue, s, spec);
            }
            queue.push(cmd);
            return self.ready(Frame::Simple("QUEUED".into()), After::Continue, s, spec);
        }
        let Action::Connection(c) = cmd.action else {
            return self.running(self.api.execute(cmd), s, spec);
        };
        match c.run(self) {
            ConnReply::Now(frame, after) => self.ready(frame, after, s, spec),
            ConnReply::Exec(queue) => {
                let user = self.user.clone();
                self.running(run_exec(self.api.clone(), user, queue).boxed(), s, spec)
            }
        }
    }
}

/// Redis's `NOPERM` error for `user` running `cmd`, with the table's name
/// of the command (`set`, `config|set`), as Redis 7.2 words it.
fn no_permission(user: &User, cmd: &Command) -> Frame {
    Frame::Error(format!(
        "NOPERM User {} has no permissions to run the '{}' command",
        user.name,
        cmd.name().unwrap_or("")
    ))
}

/// Runs the commands an `EXEC` releases, one after another, in order; the
/// reply is the array of their replies. Each is its own quorum operation:
/// the queue is not isolated from other clients (docs/redis.md). The rights
/// were checked as each was queued; they are checked again here, as Redis
/// does (a user cannot change inside a transaction, so this refuses nothing
/// that was queued).
async fn run_exec(api: Arc<Api>, user: Option<Arc<User>>, queue: Vec<Command>) -> (Frame, After) {
    let mut replies = Vec::with_capacity(queue.len());
    let mut last = After::Continue;
    for cmd in queue {
        match &user {
            Some(u) if u.may(cmd.access()) => {}
            Some(u) => {
                replies.push(no_permission(u, &cmd));
                continue;
            }
            None => {
                replies.push(Frame::Error("NOAUTH Authentication required.".into()));
                continue;
            }
        }
        if cmd.is_connection_command() {
            replies.push(Frame::err(
                "connection commands (HELLO, AUTH, CLIENT, SELECT, ...) cannot run inside MULTI",
            ));
            continue;
        }
        let (frame, after) = api.execute(cmd).await;
        replies.push(frame);
        if after != After::Continue {
            last = after;
        }
    }
    (Frame::Array(replies), last)
}

/// Serves one client connection whose first byte was `first`. Returns when
/// the client closes, after QUIT or a protocol error, on `CLIENT KILL`, or
/// on `shutdown` (after answering the commands already running, for at
/// most [`SHUTDOWN_DRAIN`]).
pub async fn serve(
    api: Arc<Api>,
    stream: crate::tls::Stream,
    first: u8,
    budget: ByteBudget,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let laddr = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let registration = api.clients.register(addr, laddr);
    let client = registration.handle.clone();
    let meter = Arc::new(ReplyMeter::new(budget.clone()));
    let mut conn = Conn {
        user: api.acl.initial(),
        api: api.clone(),
        client: client.clone(),
        proto: Proto::V2,
        multi: None,
        multi_failed: false,
        meter: meter.clone(),
    };
    let (mut reader, mut writer) = stream.into_split();
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    buf.push(first);
    let mut held = budget.empty();
    let mut pending: VecDeque<(Scope, Pending)> = VecDeque::new();
    let mut in_flight = InFlight::default();
    let mut running: FuturesOrdered<Running> = FuturesOrdered::new();
    let mut outbox = Outbox::new(&budget);
    // Set once the input is finished (closed, QUIT read, protocol error).
    let mut input_done = false;
    // Set by a reply after which the connection closes or the node stops:
    // nothing more starts, and it takes effect once the replies are written.
    let mut closing: Option<After> = None;
    // Set when the node began to stop: until then, the commands already
    // running are finished and answered.
    let mut drain_until: Option<Instant> = None;
    let mut read_timer = ReadTimer::new(IDLE_TIMEOUT);
    // Made once (a cancellation future made at every wake-up registers and
    // removes a waiter each time: ~5% of a request's instructions), and
    // polled only when woken (see `crate::quiet`).
    let mut stopping = Quiet::new(Box::pin(shutdown.cancelled()));
    let mut killed = Quiet::new(Box::pin(client.kill.cancelled()));
    loop {
        outbox.start(&mut writer, &meter)?;
        if let Some(after) = closing
            && outbox.is_empty()
        {
            if after == After::StopNode {
                (api.stop)();
            }
            return Ok(());
        }
        let paused = closing.is_some() || meter.held() >= REPLIES_PAUSE;
        if !input_done && !paused {
            input_done = parse_buffered(&mut buf, &mut pending, &mut held, &client);
        }
        // Start every command whose turn it is.
        while let Some((s, _)) = pending.front() {
            if paused || !in_flight.can_start(s) || in_flight.running >= MAX_RUNNING {
                break;
            }
            let Some((s, p)) = pending.pop_front() else {
                break;
            };
            in_flight.start(&s);
            running.push_back(conn.start(s, p));
        }
        if input_done && running.is_empty() && pending.is_empty() && outbox.is_empty() {
            return Ok(());
        }
        let can_read =
            !input_done && !paused && pending.is_empty() && in_flight.running < MAX_RUNNING;
        let writing = !outbox.sending.is_empty();
        let deadline = outbox.deadline;
        let wait = if buf.is_empty() && running.is_empty() {
            IDLE_TIMEOUT
        } else {
            IO_TIMEOUT
        };
        read_timer.restart(wait);
        tokio::select! {
            biased;
            () = &mut stopping, if drain_until.is_none() => {
                // The node is stopping: read nothing more, run nothing not
                // yet started (the client sees the connection close after
                // the answers of what ran), finish what runs, within a bound.
                input_done = true;
                pending.clear();
                drain_until = Some(Instant::now() + SHUTDOWN_DRAIN);
            }
            _ = async { tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now)).await }, if drain_until.is_some() => {
                return Ok(());
            }
            () = &mut killed => return Ok(()),
            r = futures::future::poll_fn(|cx| outbox.poll_send(cx, &mut writer)), if writing => {
                outbox.written(r, &meter)?;
            }
            _ = async { tokio::time::sleep_until(deadline).await }, if writing => {
                return Err(timed_out("write"));
            }
            // Replies keep finishing while a write waits: each is charged
            // (or refused) as it finishes, so none waits unaccounted.
            Some(first_done) = running.next(), if closing.is_none() && !running.is_empty() => {
                let mut done = Some(first_done);
                while let Some((frame, after, s, proto, bytes, spec)) = done.take() {
                    api.stats.requests.record(spec, !matches!(frame, Frame::Error(_)));
                    outbox.push(&frame, proto, bytes);
                    drop(frame);
                    in_flight.finish(&s);
                    if after != After::Continue {
                        closing = Some(after);
                        break;
                    }
                    if let Some(Some(more)) = running.next().now_or_never() {
                        done = Some(more);
                    }
                }
            }
            r = read_budgeted(&mut reader, &mut buf, &mut held, BASE_BUFFER), if can_read => {
                match r {
                    // The client finished sending: answer what it sent, then close.
                    Ok(0) => input_done = true,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            () = read_timer.expired(), if can_read => return Err(timed_out("read")),
        }
    }
}

/// The wait for a client's bytes: it ends when nothing at all happened on
/// the connection for its time. One timer per connection, moved only when
/// the deadline must come sooner or when it fires after activity pushed the
/// deadline back: a timer made and dropped at every wake-up cost ~3% of a
/// request's instructions.
struct ReadTimer {
    /// Fires at or before `due`; polled only when it fired or moved.
    sleep: Quiet<Pin<Box<tokio::time::Sleep>>>,
    /// When the wait ends.
    due: Instant,
}

impl ReadTimer {
    fn new(wait: Duration) -> Self {
        let due = Instant::now() + wait;
        ReadTimer {
            sleep: Quiet::new(Box::pin(tokio::time::sleep_until(due))),
            due,
        }
    }

    /// Something happened: the wait starts again, for `wait`.
    fn restart(&mut self, wait: Duration) {
        self.due = Instant::now() + wait;
        if self.due < self.sleep.get_ref().deadline() {
            self.sleep.get_mut().as_mut().reset(self.due);
        }
    }

    /// Completes when the wait is over.
    async fn expired(&mut self) {
        loop {
            (&mut self.sleep).await;
            if Instant::now() >= self.due {
                return;
            }
            self.sleep.get_mut().as_mut().reset(self.due);
        }
    }
}

/// Parses every complete command in `buf` into `pending`; returns true when
/// the input must stop (a protocol error, or QUIT).
fn parse_buffered(
    buf: &mut Vec<u8>,
    pending: &mut VecDeque<(Scope, Pending)>,
    held: &mut crate::limits::Held,
    client: &ClientHandle,
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
                pending.push_back((Scope::Barrier, Pending::Fatal(reply)));
                stop = true;
                break;
            }
        };
        match frame_args(frame) {
            Some(args) if args.is_empty() => {}
            Some(args) => match commands::parse(&args) {
                Ok(cmd) => {
                    client.touch(&args[0]);
                    let quit = cmd.spec.is_some_and(|spec| spec.ends_input);
                    pending.push_back((scope(&cmd, &args), Pending::Run(cmd)));
                    if quit {
                        stop = true;
                        break;
                    }
                }
                Err(e) => pending.push_back((Scope::Free, Pending::Invalid(Frame::err(e)))),
            },
            None => {
                let reply = Frame::err("Protocol error: expected an array of bulk strings");
                pending.push_back((Scope::Barrier, Pending::Fatal(reply)));
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
    fn replies_are_charged_to_the_budget_and_refused_past_the_connections_share() {
        let budget = ByteBudget::new(8 << 20);
        let meter = ReplyMeter::new(budget.clone());
        assert_eq!(meter.cap, 2 << 20);
        // Small replies are not charged.
        let (f, held) = meter.charge(Frame::ok(), Proto::V2);
        assert_eq!((f, held.is_none(), meter.held()), (Frame::ok(), true, 0));
        // One large reply may exceed the share alone; the next is refused
        // with a reason, and holds nothing.
        let big = Frame::Bulk(vec![b'x'; 3 << 20]);
        let (f, first) = meter.charge(big.clone(), Proto::V2);
        assert_eq!(f, big);
        let first = first.expect("charged");
        assert_eq!(meter.held(), big.encoded_len(Proto::V2));
        assert_eq!(budget.available(), (8 << 20) - meter.held());
        let (f, none) = meter.charge(Frame::Bulk(vec![b'y'; 4096]), Proto::V2);
        assert!(none.is_none());
        assert!(
            matches!(&f, Frame::Error(e) if e.contains("has not read")),
            "{f:?}"
        );
        // Written: given back.
        meter.release(first);
        assert_eq!((meter.held(), budget.available()), (0, 8 << 20));
        // A reply the whole budget cannot cover is refused as out of memory.
        let (f, none) = meter.charge(Frame::Bulk(vec![b'z'; 9 << 20]), Proto::V2);
        assert!(none.is_none());
        assert!(
            matches!(&f, Frame::Error(e) if e.contains("out of request memory")),
            "{f:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_read_wait_ends_only_after_its_time_without_activity() {
        let start = Instant::now();
        let mut t = ReadTimer::new(Duration::from_secs(600));
        // A shorter wait takes effect at once.
        t.restart(Duration::from_secs(30));
        t.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // Activity pushes the end back; the timer set before fires and
        // waits on.
        let start = Instant::now();
        t.restart(Duration::from_secs(30));
        assert!(
            tokio::time::timeout(Duration::from_secs(20), t.expired())
                .await
                .is_err()
        );
        t.restart(Duration::from_secs(30));
        t.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(50));
        // A longer wait after a shorter one is not cut short.
        let start = Instant::now();
        t.restart(Duration::from_secs(30));
        t.restart(Duration::from_secs(600));
        t.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(600));
    }

    #[test]
    fn commands_on_one_key_wait_and_barriers_run_alone() {
        let mut f = InFlight::default();
        let h = |k: &[u8]| crate::keyspace::key_hash(k);
        let k = Scope::Key(h(b"k"));
        assert!(f.can_start(&k));
        f.start(&k);
        assert!(!f.can_start(&k));
        assert!(f.can_start(&Scope::Key(h(b"j"))));
        assert!(!f.can_start(&Scope::Keys(vec![h(b"j"), h(b"k")])));
        // A command naming a key twice holds it until it finishes.
        let twice = Scope::Keys(vec![h(b"m"), h(b"m")]);
        f.start(&twice);
        assert!(!f.can_start(&Scope::Key(h(b"m"))));
        f.finish(&twice);
        assert!(f.can_start(&Scope::Key(h(b"m"))));
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
        let clients = super::super::clients::Clients::new();
        let reg = clients.register(String::new(), String::new());
        assert!(parse_buffered(
            &mut buf,
            &mut pending,
            &mut held,
            &reg.handle
        ));
        let kinds: Vec<String> = pending
            .iter()
            .map(|(s, p)| match p {
                Pending::Run(c) => format!("{c:?}/{s:?}"),
                Pending::Invalid(f) | Pending::Fatal(f) => format!("answer {f:?}"),
            })
            .collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(kinds[0].starts_with("Get"));
        assert!(kinds[2].starts_with("answer -ERR unknown command"));
        assert!(kinds[3].starts_with("Quit"));
        // What follows QUIT stays unread.
        assert_eq!(buf, b"PING\r\n");
    }

    #[test]
    fn a_command_is_scoped_by_the_hashes_of_its_keys() {
        let scope_of = |words: &[&str]| {
            let args: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
            scope(&commands::parse(&args).unwrap(), &args)
        };
        let h = |k: &str| crate::keyspace::key_hash(k.as_bytes());
        assert_eq!(scope_of(&["SET", "k", "v"]), Scope::Key(h("k")));
        assert_eq!(scope_of(&["get", "k"]), Scope::Key(h("k")));
        assert_eq!(
            scope_of(&["MSET", "a", "1", "b", "2"]),
            Scope::Keys(vec![h("a"), h("b")])
        );
        assert_eq!(
            scope_of(&["DEL", "a", "b", "c"]),
            Scope::Keys(vec![h("a"), h("b"), h("c")])
        );
        assert_eq!(scope_of(&["PING"]), Scope::Free);
        assert_eq!(scope_of(&["QUIT"]), Scope::Barrier);
    }
}
