//! Peer RPC over TCP, multiplexed.
//!
//! **Client side** ([`TcpTransport`]): a small fixed number of long-lived
//! connections per peer ([`CONNECTIONS_PER_PEER`]), each carrying many
//! requests at once; the second one is used only while many requests are
//! in flight to the peer ([`SECOND_CONNECTION_AT`]), and a connection that
//! carries no request for [`IDLE_CLOSE`] (checked every [`IDLE_CLOSE`])
//! closes. A request gets an id, its
//! frame goes to the connection's writer task, and its answer is matched by id when the
//! reader task decodes it, in whatever order answers come. The writer
//! coalesces every frame that is ready into one `write`; the reader decodes
//! every frame of one `read`. Requests in flight per peer are bounded
//! ([`MAX_IN_FLIGHT_PER_PEER`]): past it a call waits (within its timeout)
//! rather than piling up. A broken connection fails its requests at once and
//! is replaced on the next call. No connection is opened per request, so
//! peer traffic leaves no TIME-WAIT sockets behind.
//!
//! Both sides authenticate each other ([`super::auth`]) before any request
//! crosses a new connection; with TLS ([`crate::tls`]) that handshake runs
//! inside the TLS session and is bound to it.
//!
//! **Server side** ([`serve`]): one task per connection reads frames into a
//! buffer taken from the node's request budget, starts every request it
//! decodes, and writes the answers as they complete, coalesced.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::auth::{self, PeerKey};
use super::frame::{self, FrameError, PREAMBLE};
use super::transport::{RpcError, Shared as SharedRequest, Transport};
use super::{Request, Response};
use crate::fault::{Fate, Faults};
use crate::limits::{ByteBudget, Held, consume, read_budgeted};
use crate::tls::{ClientTls, ReadHalf, Stream, WriteHalf};

/// Long-lived connections per peer.
pub const CONNECTIONS_PER_PEER: usize = 2;
/// Requests in flight to one peer before callers wait.
pub const MAX_IN_FLIGHT_PER_PEER: usize = 4096;
/// Requests in flight to one peer past which calls spread over all its
/// connections; below it they share the first, so a peer this node talks to
/// only now and then costs one connection, not [`CONNECTIONS_PER_PEER`].
pub const SECOND_CONNECTION_AT: usize = 16;
/// A connection that carried no request for this long closes (it is
/// checked every this long, so it closes between one and two of them after
/// its last request); the next request to the peer opens a new one. A node of a large cluster talks to
/// most peers only now and then (anti-entropy visits one peer a round, the
/// layout steward a few): without it every node would keep, for good, a
/// connection to every peer it ever called (three tasks and their buffers
/// here, a task and a buffer there, a socket on each side). Measured at 100
/// nodes: docs/operations.md, "Scale".
pub const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// Most bytes one coalesced write carries.
const MAX_WRITE: usize = 1 << 20;
/// Bytes of frames one connection may hold queued for its writer: past
/// it a request fails at once as [`RpcError::Overloaded`] (a stopped peer
/// blocks the writer for up to [`IO_TIMEOUT`], and the queue must not grow
/// meanwhile). One frame larger than the bound still goes when the queue
/// is empty.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;
/// Largest single read.
const READ_CHUNK: usize = 64 * 1024;
/// Time allowed to write a batch.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A frame that has begun arriving must be complete within this, plus
/// its length at [`FRAME_MIN_BYTES_PER_S`]: a peer that trickles a large
/// frame cannot hold the request budget for ever.
const FRAME_GRACE: Duration = Duration::from_secs(10);
/// The slowest a frame may arrive, after [`FRAME_GRACE`].
const FRAME_MIN_BYTES_PER_S: u64 = 1 << 20;

/// When the frame at the head of `buf` must be complete (`None` when no
/// frame has begun).
fn frame_deadline(buf: &[u8], begun: tokio::time::Instant) -> Option<tokio::time::Instant> {
    if buf.is_empty() {
        return None;
    }
    let len = buf.get(..4).map_or(0, |b| {
        u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    });
    Some(begun + FRAME_GRACE + Duration::from_secs(len / FRAME_MIN_BYTES_PER_S))
}

/// A request waiting for its answer: where to send it, and when to give up.
struct Waiting {
    tx: oneshot::Sender<Result<Response, RpcError>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

/// Keyed by request id (hashbrown's hasher: std's SipHash showed in
/// profiles of the request path).
type Pending = Mutex<hashbrown::HashMap<u64, Waiting>>;

/// A lock of this module (the pending and peer maps): a poisoned one is
/// still usable, since every change leaves its map whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often a connection looks for requests whose time ran out. Calls carry
/// no timer of their own (one timer per request costs more than the request
/// on a busy node); a timeout fires within this of its deadline.
const SWEEP: Duration = Duration::from_millis(20);
/// How long a sweeper with nothing to watch sleeps before it looks again
/// whether its connection closed (a new request wakes it at once). Idle
/// connections would otherwise wake 50 times a second each.
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// One multiplexed connection to a peer.
struct Conn {
    out: mpsc::UnboundedSender<Outgoing>,
    /// Bytes sent to `out` and not yet written (bounded by
    /// [`MAX_QUEUED_BYTES`]).
    queued: Arc<AtomicUsize>,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    /// Set when the connection closes for being idle: it takes no new
    /// request (one that finds it so goes to a new connection), and answers
    /// those already sent.
    closing: Arc<AtomicBool>,
    /// Wakes the sweeper when a request starts waiting.
    wake: Arc<Notify>,
}

impl Conn {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Whether a new request may use this connection.
    fn is_open(&self) -> bool {
        self.is_alive() && !self.closing.load(Ordering::Acquire)
    }
}

/// Fails every request waiting on a connection that broke.
fn fail_all(pending: &Pending, alive: &AtomicBool, why: &str) {
    alive.store(false, Ordering::Release);
    let waiting: Vec<_> = lock(pending).drain().collect();
    for (_, w) in waiting {
        let _ = w.tx.send(Err(RpcError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            why.to_string(),
        ))));
    }
}

/// The connections to one peer.
struct Peer {
    addr: SocketAddr,
    key: PeerKey,
    tls: Option<ClientTls>,
    /// When the last connection attempt failed (ms since the transport
    /// started; 0: the last attempt succeeded or none failed).
    failed_at: AtomicU64,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
    in_flight: Semaphore,
}

impl Peer {
    fn new(addr: SocketAddr, key: PeerKey, tls: Option<ClientTls>) -> Peer {
        Peer {
            addr,
            key,
            tls,
            failed_at: AtomicU64::new(0),
            slots: (0..CONNECTIONS_PER_PEER)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            in_flight: Semaphore::new(MAX_IN_FLIGHT_PER_PEER),
        }
    }

    /// Requests in flight to this peer.
    fn in_flight(&self) -> usize {
        MAX_IN_FLIGHT_PER_PEER.saturating_sub(self.in_flight.available_permits())
    }

    /// The slot a call uses: the first, or any while the peer is busy
    /// ([`SECOND_CONNECTION_AT`]).
    fn slot(&self) -> usize {
        if self.in_flight() > SECOND_CONNECTION_AT {
            self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()
        } else {
            0
        }
    }

    /// The slot's connection when it is open and its slot is not being
    /// filled (the common case: no wait, no timer); `None` otherwise, and
    /// the caller waits in [`Peer::conn`].
    fn open_conn(&self, i: usize) -> Option<Arc<Conn>> {
        let slot = self.slots[i].try_lock().ok()?;
        slot.as_ref().filter(|c| c.is_open()).cloned()
    }

    /// Slot `i`'s open connection (opening one if it has none).
    async fn conn(&self, i: usize, idle_close: Duration) -> Result<Arc<Conn>, RpcError> {
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref()
            && c.is_open()
        {
            return Ok(c.clone());
        }
        match open(self.addr, &self.key, self.tls.as_ref(), idle_close).await {
            Ok(conn) => {
                self.failed_at.store(0, Ordering::Relaxed);
                let conn = Arc::new(conn);
                *slot = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                self.failed_at
                    .store(since_start_ms().max(1), Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Opens a connection (with TLS if `tls`), authenticates both ways, and
/// starts its reader and writer tasks; it closes after `idle_close` without
/// a request.
async fn open(
    addr: SocketAddr,
    key: &PeerKey,
    tls: Option<&ClientTls>,
    idle_close: Duration,
) -> Result<Conn, RpcError> {
    let tcp = tokio::time::timeout(auth::HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| RpcError::Connect(timed_out("connect")))?
        .map_err(RpcError::Connect)?;
    tcp.set_nodelay(true).map_err(RpcError::Connect)?;
    let mut stream = match tls {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let name = tls.server_name("", addr).map_err(RpcError::Connect)?;
            tls.connect(tcp, name).await.map_err(|e| {
                warn!(peer = %addr, cause = %e, "cannot open a TLS connection to a peer");
                RpcError::Connect(e)
            })?
        }
    };
    crate::tls::send(&mut stream, &PREAMBLE, auth::HANDSHAKE_TIMEOUT)
        .await
        .map_err(RpcError::Connect)?;
    let binding = stream.binding();
    if let Err(e) = auth::client_bound(&mut stream, key, &binding).await {
        warn!(peer = %addr, cause = %e, "cannot open a peer connection");
        let kind = match e {
            auth::AuthError::BadTag => std::io::ErrorKind::PermissionDenied,
            auth::AuthError::Io(ref io) => io.kind(),
        };
        return Err(RpcError::Connect(std::io::Error::new(kind, e.to_string())));
    }
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let pending: Arc<Pending> = Arc::default();
    let alive = Arc::new(AtomicBool::new(true));
    let closing = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    tokio::spawn(write_loop(
        writer,
        rx,
        Shared {
            pending: pending.clone(),
            alive: alive.clone(),
            closing: closing.clone(),
            queued: queued.clone(),
            done: done.clone(),
        },
        idle_close,
    ));
    tokio::spawn(read_loop(reader, pending.clone(), alive.clone(), done));
    let wake = Arc::new(Notify::new());
    tokio::spawn(sweep_loop(pending.clone(), alive.clone(), wake.clone()));
    Ok(Conn {
        out: tx,
        queued,
        pending,
        alive,
        closing,
        wake,
    })
}

/// What a connection's writer shares with its callers.
struct Shared {
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    /// Tells the reader the writer ended (its stream half goes with it).
    done: Arc<Notify>,
}

impl Shared {
    /// No request waits for an answer.
    fn idle(&self) -> bool {
        lock(&self.pending).is_empty()
    }
}

/// Writes every frame that is ready in one `write`. A connection that
/// wrote nothing and had no request waiting for a whole `idle_close` (checked
/// every `idle_close`, so it closes between one and two of them after its
/// last request) closes: it stops taking frames, writes those that raced in,
/// waits (bounded by their timeouts, which the sweeper enforces) for their
/// answers, and shuts the connection down. One timer serves the whole
/// connection, not one per write.
async fn write_loop(
    mut writer: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Shared,
    idle_close: Duration,
) {
    let mut buf: Vec<u8> = Vec::new();
    let check = tokio::time::sleep(idle_close);
    tokio::pin!(check);
    let (mut writes, mut writes_at_check) = (0u64, 0u64);
    let why = loop {
        let first = tokio::select! {
            biased;
            first = rx.recv() => match first {
                Some(first) => first,
                None if shared.closing.load(Ordering::Acquire) => {
                    // Each waiting request ends by its answer or its deadline.
                    let mut tick = tokio::time::interval(SWEEP);
                    while !shared.idle() && shared.alive.load(Ordering::Acquire) {
                        tick.tick().await;
                    }
                    let _ = tokio::time::timeout(
                        auth::HANDSHAKE_TIMEOUT,
                        tokio::io::AsyncWriteExt::shutdown(&mut writer),
                    )
                    .await;
                    debug!("closed an idle peer connection");
                    break "closed for being idle";
                }
                None => break "connection closed",
            },
            () = &mut check => {
                check.as_mut().reset(tokio::time::Instant::now() + idle_close);
                if writes == writes_at_check && shared.idle() {
                    // Frames sent before this are still received (and
                    // written) above; later sends fail, and their calls
                    // take a new connection.
                    shared.closing.store(true, Ordering::Release);
                    rx.close();
                }
                writes_at_check = writes;
                continue;
            }
        };
        buf.clear();
        first.write_to(&mut buf);
        while buf.len() < MAX_WRITE {
            match rx.try_recv() {
                Ok(more) => more.write_to(&mut buf),
                Err(_) => break,
            }
        }
        if let Err(e) = crate::tls::send(&mut writer, &buf, IO_TIMEOUT).await {
            debug!(cause = %e, "peer connection write failed");
            break "write failed";
        }
        writes += 1;
        shared.queued.fetch_sub(buf.len(), Ordering::AcqRel);
        if !shared.alive.load(Ordering::Acquire) {
            break "connection closed";
        }
    };
    fail_all(&shared.pending, &shared.alive, why);
    shared.done.notify_one();
}

/// Fails the requests whose time ran out, until the connection closes.
/// With nothing waiting it sleeps until a request is sent.
async fn sweep_loop(pending: Arc<Pending>, alive: Arc<AtomicBool>, wake: Arc<Notify>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while alive.load(Ordering::Acquire) {
        if lock(&pending).is_empty() {
            // A request sent meanwhile left a permit: no wake-up is lost.
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_SWEEP) => {}
            }
            tick.reset();
            continue;
        }
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let expired: Vec<Waiting> = {
            let mut p = lock(&pending);
            let ids: Vec<u64> = p
                .iter()
                .filter(|(_, w)| w.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| p.remove(&id)).collect()
        };
        for w in expired {
            let _ = w.tx.send(Err(RpcError::Timeout(w.timeout)));
        }
    }
}

/// Decodes answers and hands each to the request with its id, until the
/// peer closes or the writer ends (`done`: every request was answered or
/// failed by then).
async fn read_loop(
    mut reader: ReadHalf,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    done: Arc<Notify>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let writer_ended = done.notified();
    tokio::pin!(writer_ended);
    let why = loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            r = reader.read_buf(&mut buf) => r,
            () = &mut writer_ended => break "the writer ended",
        };
        match read {
            Ok(0) => break "closed by the peer",
            Ok(_) => {}
            Err(e) => {
                debug!(cause = %e, "peer connection read failed");
                break "read failed";
            }
        }
        let mut used = 0;
        loop {
            match frame::decode::<Response>(&buf[used..]) {
                Ok((env, n)) => {
                    used += n;
                    let tx = lock(&pending).remove(&env.id);
                    if let Some(w) = tx {
                        let _ = w.tx.send(Ok(env.body));
                    }
                }
                Err(FrameError::Incomplete) => break,
                Err(e) => {
                    warn!(cause = %e, "bad frame from a peer; closing the connection");
                    fail_all(&pending, &alive, "bad frame");
                    return;
                }
            }
        }
        buf.drain(..used);
    };
    fail_all(&pending, &alive, why);
}

/// Peer RPC over TCP; see the module doc.
pub struct TcpTransport {
    /// This node's advertised address, sent with every request (encoded
    /// once).
    sender: frame::Sender,
    /// What this node proves to its peers, and checks they prove.
    key: PeerKey,
    /// TLS to peers (none: plain text).
    tls: Option<ClientTls>,
    peers: Mutex<hashbrown::HashMap<SocketAddr, Arc<Peer>>>,
    next_id: AtomicU64,
    /// See [`IDLE_CLOSE`].
    idle_close: Duration,
}

impl TcpTransport {
    /// A transport for the node at `from`, authenticating with `key`.
    pub fn new(from: SocketAddr, key: PeerKey) -> Self {
        TcpTransport {
            sender: frame::Sender::new(Some(from)),
            key,
            tls: None,
            peers: Mutex::default(),
            next_id: AtomicU64::new(1),
            idle_close: IDLE_CLOSE,
        }
    }

    /// The same transport, closing connections idle for `idle` instead of
    /// [`IDLE_CLOSE`] (tests).
    pub fn with_idle_close(mut self, idle: Duration) -> Self {
        self.idle_close = idle;
        self
    }

    /// The same transport, connecting with TLS when `tls` is given.
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        lock(&self.peers)
            .entry(addr)
            .or_insert_with(|| Arc::new(Peer::new(addr, self.key.clone(), self.tls.clone())))
            .clone()
    }

    async fn call_inner(
        &self,
        to: SocketAddr,
        req: Body<'_>,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let peer = self.peer(to);
        // Past the in-flight bound, wait (within the call's time) for room.
        // The waits below are boxed, off the common path: a timer inline
        // would make every call's future larger and over-aligned (mimalloc's
        // slower aligned allocation, ~1% of a coordinator's CPU).
        let _permit = match peer.in_flight.try_acquire() {
            Ok(p) => p,
            Err(_) => Box::pin(tokio::time::timeout_at(deadline, peer.in_flight.acquire()))
                .await
                .map_err(|_| RpcError::Timeout(timeout))?
                .map_err(|_| RpcError::Overloaded)?,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut bytes = match req {
            Body::Request(req) => {
                let mut bytes = Vec::with_capacity(req.encoded_size_hint());
                frame::encode_from_into(&mut bytes, &self.sender, id, req)?;
                Outgoing::Frame(bytes)
            }
            Body::Encoded(body) => Outgoing::Shared {
                head: frame::Head::new(&self.sender, id, body.len())?,
                body: body.clone(),
            },
        };
        let (tx, rx) = oneshot::channel();
        let mut waiting = Waiting {
            tx,
            deadline,
            timeout,
        };
        // A connection that began closing for being idle as this call took
        // it refuses the frame unsent: the call then takes a new one, once.
        let mut retried = false;
        let conn = loop {
            let i = peer.slot();
            let conn = match peer.open_conn(i) {
                Some(c) => c,
                None => Box::pin(tokio::time::timeout_at(
                    deadline,
                    peer.conn(i, self.idle_close),
                ))
                .await
                .map_err(|_| RpcError::Timeout(timeout))??,
            };
            lock(&conn.pending).insert(id, waiting);
            conn.wake.notify_one();
            // The writer's queue is bounded in bytes: past the bound, fail
            // now rather than queue behind a peer that does not read.
            let len = bytes.len();
            let before = conn.queued.fetch_add(len, Ordering::AcqRel);
            if before > 0 && before + len > MAX_QUEUED_BYTES {
                conn.queued.fetch_sub(len, Ordering::AcqRel);
                lock(&conn.pending).remove(&id);
                return Err(RpcError::Overloaded);
            }
            match conn.out.send(bytes) {
                Ok(()) => break conn,
                Err(mpsc::error::SendError(unsent)) => {
                    conn.queued.fetch_sub(len, Ordering::AcqRel);
                    let back = lock(&conn.pending).remove(&id);
                    match back {
                        Some(w) if !retried && conn.closing.load(Ordering::Acquire) => {
                            (waiting, bytes, retried) = (w, unsent, true);
                        }
                        _ => {
                            return Err(RpcError::Connect(std::io::Error::new(
                                std::io::ErrorKind::BrokenPipe,
                                "connection closed",
                            )));
                        }
                    }
                }
            }
        };
        // Removes the entry however this call ends (answer, timeout, drop).
        let _guard = RemoveOnDrop {
            pending: &conn.pending,
            id,
        };
        if !conn.is_alive() {
            return Err(RpcError::Connect(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "connection closed",
            )));
        }
        // The connection's sweeper answers with a timeout when time runs out.
        rx.await.unwrap_or_else(|_| {
            Err(RpcError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed",
            )))
        })
    }
}

/// What a call sends: a request to encode, or one encoded beforehand.
#[derive(Clone, Copy)]
enum Body<'a> {
    Request(&'a Request),
    Encoded(&'a Arc<frame::Encoded>),
}

/// A frame queued for a connection's writer.
enum Outgoing {
    /// Encoded whole.
    Frame(Vec<u8>),
    /// Its head, then a body other calls share (no copy per call).
    Shared {
        head: frame::Head,
        body: Arc<frame::Encoded>,
    },
}

impl Outgoing {
    /// Its length in bytes.
    fn len(&self) -> usize {
        match self {
            Outgoing::Frame(bytes) => bytes.len(),
            Outgoing::Shared { head, body } => head.as_bytes().len() + body.len(),
        }
    }

    /// Appends it to `buf`.
    fn write_to(&self, buf: &mut Vec<u8>) {
        match self {
            Outgoing::Frame(bytes) => buf.extend_from_slice(bytes),
            Outgoing::Shared { head, body } => {
                buf.extend_from_slice(head.as_bytes());
                buf.extend_from_slice(body.as_bytes());
            }
        }
    }
}

struct RemoveOnDrop<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

/// Milliseconds since the first call (a monotonic clock for `failed_at`).
fn since_start_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// How long a failed connection attempt keeps a peer "unreachable".
const UNREACHABLE_FOR_MS: u64 = 10_000;

#[async_trait]
impl Transport for TcpTransport {
    async fn call(
        &self,
        to: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        self.call_inner(to, Body::Request(req), timeout).await
    }

    async fn call_shared(
        &self,
        to: SocketAddr,
        req: &SharedRequest,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        let body = match req.encoded() {
            Some(encoded) => Body::Encoded(encoded),
            // It does not encode: the plain path says why.
            None => Body::Request(req.request()),
        };
        self.call_inner(to, body, timeout).await
    }

    fn unreachable(&self, to: SocketAddr) -> bool {
        let Some(peer) = lock(&self.peers).get(&to).cloned() else {
            return false;
        };
        let at = peer.failed_at.load(Ordering::Relaxed);
        at != 0 && since_start_ms().saturating_sub(at) < UNREACHABLE_FOR_MS
    }
}

/// Input buffer a server connection keeps without drawing on the budget.
const BASE_BUFFER: usize = 4096;
/// Requests one server connection works on at once; past it, it stops
/// reading until some complete.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 4096;

/// What serves the peer side of a connection.
pub struct PeerDoor {
    /// Answers requests.
    pub service: Arc<dyn super::Handler>,
    /// What a peer must prove before any request is read.
    pub key: PeerKey,
}

/// Serves one peer connection whose first byte (the preamble's) was read:
/// checks the rest of the preamble, authenticates both ways, then serves
/// requests. Returns when the peer closes, on a protocol or authentication
/// error, or on `shutdown`.
pub async fn serve(
    mut stream: Stream,
    door: &PeerDoor,
    budget: ByteBudget,
    faults: Arc<Faults>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut rest = [0u8; 3];
    tokio::time::timeout(auth::HANDSHAKE_TIMEOUT, stream.read_exact(&mut rest))
        .await
        .map_err(|_| timed_out("preamble"))??;
    if rest != PREAMBLE[1..] {
        warn!(got = ?rest, "peer preamble mismatch (another protocol version?); closing");
        return Ok(());
    }
    let binding = stream.binding();
    if let Err(e) = auth::server_bound(&mut stream, &door.key, &binding).await {
        let from = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        warn!(%from, cause = %e, "refusing a peer connection");
        return Ok(());
    }
    let service = door.service.clone();
    let (mut reader, mut writer) = stream.into_split();
    let mut buf: Vec<u8> = Vec::with_capacity(BASE_BUFFER);
    // Input buffer beyond its first 4 KiB comes from the node's budget.
    let mut held: Held = budget.empty();
    let mut running = FuturesUnordered::new();
    let mut out: Vec<u8> = Vec::new();
    let mut stop_after_flush = false;
    // When the frame now at the head of the buffer began arriving.
    let mut begun = tokio::time::Instant::now();
    // Made once (a cancellation future made at every wake-up registers and
    // removes a waiter each time: ~5% of a request's instructions), and
    // polled only when woken (see `crate::quiet`).
    let mut stopping = crate::quiet::Quiet::new(Box::pin(shutdown.cancelled()));
    loop {
        let deadline = frame_deadline(&buf, begun);
        tokio::select! {
            biased;
            () = &mut stopping => return Ok(()),
            // (Not while reading waits for running requests: then the
            // delay is this node's.)
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                if deadline.is_some() && running.len() < MAX_IN_FLIGHT_PER_CONNECTION => {
                warn!(buffered = buf.len(), "a peer frame did not arrive in time; closing the connection");
                return Ok(());
            }
            Some(done) = running.next(), if !running.is_empty() => {
                let mut done = Some(done);
                while let Some(answers) = done.take() {
                    match answers {
                        Answers::One(id, response, stop) => {
                            encode_answer(&mut out, id, &response);
                            stop_after_flush |= stop;
                        }
                        Answers::Many(answers) => {
                            for (id, response) in answers {
                                encode_answer(&mut out, id, &response);
                            }
                        }
                    }
                    // Every other answer that is ready goes in the same write.
                    if let Some(Some(more)) = futures::FutureExt::now_or_never(running.next()) {
                        done = Some(more);
                    }
                }
                crate::tls::send(&mut writer, &out, IO_TIMEOUT).await?;
                out.clear();
                if stop_after_flush {
                    return Ok(());
                }
            }
            r = read_budgeted(&mut reader, &mut buf, &mut held, BASE_BUFFER), if running.len() < MAX_IN_FLIGHT_PER_CONNECTION => {
                let was_empty = buf.len() == r.as_ref().map_or(0, |n| *n);
                if r? == 0 {
                    return Ok(());
                }
                if was_empty {
                    begun = tokio::time::Instant::now();
                }
                let mut used = 0;
                // Replica writes read together are answered together.
                let mut batch: Vec<(u64, Request)> = Vec::new();
                loop {
                    match frame::decode::<Request>(&buf[used..]) {
                        Ok((env, n)) => {
                            used += n;
                            let fate = env.from.map_or(Fate::Pass, |f| faults.fate(&f));
                            if fate == Fate::Drop {
                                // Across a partition a request goes unanswered.
                                continue;
                            }
                            if fate == Fate::Pass && env.body.batchable() {
                                batch.push((env.id, env.body));
                                continue;
                            }
                            running.push(work(service.clone(), Work::One(env.id, env.body, fate)));
                        }
                        Err(FrameError::Incomplete) => break,
                        Err(e) => {
                            warn!(cause = %e, "bad peer frame; closing");
                            return Ok(());
                        }
                    }
                }
                match batch.len() {
                    0 => {}
                    1 => {
                        let (id, req) = batch.pop().expect("one request");
                        running.push(work(service.clone(), Work::One(id, req, Fate::Pass)));
                    }
                    _ => running.push(work(service.clone(), Work::Many(batch))),
                }
                if used > 0 {
                    // The next frame (if any has begun) began now at the latest.
                    begun = tokio::time::Instant::now();
                }
                consume(&mut buf, used, &mut held, BASE_BUFFER);
            }
        }
    }
}

/// Requests a server connection works on as one unit.
enum Work {
    /// One request, with what fault injection decided for it.
    One(u64, Request, Fate),
    /// Batchable requests read together ([`Request::batchable`]).
    Many(Vec<(u64, Request)>),
}

/// What a [`Work`] comes to: each request's id and answer (and, for one
/// request, whether the node stops once it is sent).
enum Answers {
    One(u64, Response, bool),
    Many(Vec<(u64, Response)>),
}

/// Answers a [`Work`].
async fn work(service: Arc<dyn super::Handler>, work: Work) -> Answers {
    match work {
        Work::One(id, req, fate) => {
            if let Fate::Delay(d) = fate {
                tokio::time::sleep(d).await;
            }
            let stop = matches!(req, Request::Shutdown);
            Answers::One(id, service.handle(req).await, stop)
        }
        Work::Many(batch) => {
            let (ids, reqs): (Vec<u64>, Vec<Request>) = batch.into_iter().unzip();
            let answers = service.handle_batch(reqs).await;
            Answers::Many(ids.into_iter().zip(answers).collect())
        }
    }
}

fn encode_answer(out: &mut Vec<u8>, id: u64, response: &Response) {
    if let Err(e) = frame::encode_into(out, None, id, response) {
        let fallback = Response::Error(super::message::RemoteError::Invalid(format!(
            "answer could not be encoded: {e}"
        )));
        let _ = frame::encode_into(out, None, id, &fallback);
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timeout"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Object;
    use crate::rpc::Transport;
    use crate::vclock::VClock;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_peer_that_stops_reading_gets_a_bounded_queue_and_fast_refusals() {
        let key = PeerKey::derive(b"secret", "cluster");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A peer that completes the handshake, then never reads again.
        let server_key = key.clone();
        let held = tokio::spawn(async move {
            let mut socks = Vec::new();
            for _ in 0..CONNECTIONS_PER_PEER {
                let Ok(Ok((mut sock, _))) =
                    tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
                else {
                    break;
                };
                let mut pre = [0u8; 4];
                sock.read_exact(&mut pre).await.unwrap();
                auth::server(&mut sock, &server_key).await.unwrap();
                socks.push(sock);
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socks);
        });
        let t = Arc::new(TcpTransport::new("127.0.0.1:9".parse().unwrap(), key));
        let object = Object::update(
            None,
            &VClock::new(),
            &"n1/0000018f00000000".to_string(),
            Some(vec![7u8; 1 << 20]),
            1,
        )
        .unwrap();
        let req = Arc::new(Request::Replicate {
            key: b"k".to_vec(),
            object,
            hint: None,
        });
        // 200 MiB of requests against a bound of 2 x 32 MiB (plus what
        // the kernel's socket buffers take).
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..200)
            .map(|_| {
                let (t, req) = (t.clone(), req.clone());
                tokio::spawn(async move {
                    let at = std::time::Instant::now();
                    let r = t.call(addr, &req, Duration::from_secs(3)).await;
                    (r, at.elapsed())
                })
            })
            .collect();
        let mut overloaded = 0;
        for c in calls {
            let (r, took) = c.await.unwrap();
            match r {
                Err(RpcError::Overloaded) => {
                    overloaded += 1;
                    assert!(took < Duration::from_secs(2), "a refusal waited {took:?}");
                }
                Err(RpcError::Timeout(_)) => {}
                other => panic!("expected a refusal or a timeout, got {other:?}"),
            }
        }
        assert!(
            overloaded >= 100,
            "only {overloaded} of 200 refused at once"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        held.abort();
    }

    /// Answers every request with a pong.
    struct Pongs;

    #[async_trait]
    impl crate::rpc::Handler for Pongs {
        async fn handle(&self, _req: Request) -> Response {
            Response::Pong {
                node_id: "peer".into(),
            }
        }
    }

    /// A peer server on loopback: its address, and the number of
    /// connections it accepted and finished serving.
    async fn pong_server(key: PeerKey) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let door = Arc::new(PeerDoor {
            service: Arc::new(Pongs),
            key,
        });
        let counts = (accepted.clone(), finished.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counts.0.fetch_add(1, Ordering::SeqCst);
                let (door, finished) = (door.clone(), counts.1.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    if sock.read_exact(&mut first).await.is_ok() {
                        let _ = serve(
                            Stream::Plain(sock),
                            &door,
                            ByteBudget::new(1 << 20),
                            Faults::new(false),
                            CancellationToken::new(),
                        )
                        .await;
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted, finished)
    }

    /// Polls `cond` every 20 ms for up to 10 s.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("never happened: {what}");
    }

    #[tokio::test]
    async fn an_idle_connection_closes_and_the_next_call_opens_a_new_one() {
        let key = PeerKey::derive(b"secret", "cluster");
        let (addr, accepted, finished) = pong_server(key.clone()).await;
        let t = TcpTransport::new("127.0.0.1:9".parse().unwrap(), key)
            .with_idle_close(Duration::from_millis(300));
        let ping = || t.call(addr, &Request::Ping, Duration::from_secs(5));
        // Light traffic uses one connection, however many calls it makes.
        for _ in 0..5 {
            assert!(matches!(ping().await, Ok(Response::Pong { .. })));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Idle, it closes: the peer sees it end.
        eventually("the idle connection closed", || {
            finished.load(Ordering::SeqCst) == 1
        })
        .await;
        // The next call opens a new one and is answered.
        assert!(matches!(ping().await, Ok(Response::Pong { .. })));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Many calls at once spread over every connection of the peer.
        let calls: Vec<_> = (0..64)
            .map(|_| t.call(addr, &Request::Ping, Duration::from_secs(5)))
            .collect();
        for r in futures::future::join_all(calls).await {
            assert!(matches!(r, Ok(Response::Pong { .. })), "got {r:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1 + CONNECTIONS_PER_PEER);
        eventually("every idle connection closed", || {
            finished.load(Ordering::SeqCst) == 1 + CONNECTIONS_PER_PEER
        })
        .await;
    }
}
