//! The TCP server of a node: one port for both protocols.
//!
//! Each accepted connection is sniffed by its first byte: the peer preamble
//! (`0xD7`, see [`crate::rpc::frame`]) starts a peer session, anything else a
//! RESP session (Redis clients, `db repl`, `redis-cli`). Bad input closes only
//! that connection, with an error reply where the protocol allows one; the
//! node keeps serving. Every read and write has a timeout; the number of
//! connections is bounded.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::command::{self, Command, FaultCmd};
use crate::coordinator::CoordError;
use crate::fault::Fate;
use crate::limits::{BudgetError, ByteBudget, Held, Slots};
use crate::node::Node;
use crate::object::encode_context;
use crate::resp::{self, DecodeError, Frame};
use crate::rpc::frame::{self as pframe, PREAMBLE};
use crate::rpc::{Request, Response};

/// A connection that sends nothing for this long is closed (clients
/// reconnect; the peer pool drops idle connections long before).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Time allowed to finish reading a frame once it has started, and to write a reply.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Input buffer a connection keeps without drawing on the node's request
/// budget: enough for ordinary commands, tiny for an idle connection.
const BASE_BUFFER: usize = 4 * 1024;
/// Largest single read.
const READ_CHUNK: usize = 64 * 1024;

/// What a session does after answering.
enum After {
    Continue,
    Close,
    StopNode,
}

/// The port's shared admission state.
#[derive(Clone)]
struct Port {
    slots: Slots,
    budget: ByteBudget,
    first_byte: Duration,
}

/// Accepts connections until the node stops. Accepting never waits for a
/// slot: a connection that finds none is closed at once, so a flood of
/// silent sockets delays no one for longer than the first-byte timeout.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let limits = node.config.limits;
    let port = Port {
        slots: Slots::new(&limits),
        budget: ByteBudget::new(limits.request_bytes),
        first_byte: limits.first_byte_timeout,
    };
    info!(
        max_clients = limits.max_clients,
        peer_connections = limits.peer_connections,
        request_bytes = limits.request_bytes,
        "accepting connections"
    );
    loop {
        let accepted = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(pending) = Slots::take(&port.slots.pending) else {
                    debug!(%peer, "too many connections waiting for their first byte; closing");
                    continue;
                };
                let (node, port) = (node.clone(), port.clone());
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = session(node, stream, port, pending).await {
                        debug!(%peer, cause = %e, "connection closed");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                warn!(cause = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    debug!("listener stopped");
}

async fn session(
    node: Arc<Node>,
    mut stream: TcpStream,
    port: Port,
    pending: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    let n = tokio::select! {
        _ = node.shutdown.cancelled() => return Ok(()),
        r = tokio::time::timeout(port.first_byte, stream.read(&mut first)) => {
            r.map_err(|_| timeout("first byte"))??
        }
    };
    drop(pending);
    if n == 0 {
        return Ok(());
    }
    if first[0] == PREAMBLE[0] {
        let Some(_slot) = Slots::take(&port.slots.peers) else {
            warn!("too many peer connections; closing one");
            return Ok(());
        };
        return peer_session(node, stream, port.budget).await;
    }
    let Some(_slot) = Slots::take(&port.slots.clients) else {
        let reply = Frame::err("max number of clients reached");
        let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&reply.to_bytes())).await;
        return Ok(());
    };
    resp_session(node, stream, first[0], port.budget).await
}

fn timeout(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timeout"))
}

fn out_of_budget(e: BudgetError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string())
}

/// Reads a peer frame's payload of `len` bytes, buffering only what has
/// arrived and taking every byte beyond the base buffer from `held`.
async fn read_payload(
    stream: &mut TcpStream,
    len: usize,
    held: &mut Held,
) -> std::io::Result<Vec<u8>> {
    let mut payload: Vec<u8> = Vec::with_capacity(len.min(BASE_BUFFER));
    let read = async {
        while payload.len() < len {
            if payload.capacity() == payload.len() {
                let more = (len - payload.len()).min(payload.capacity().max(READ_CHUNK));
                held.grow(more, IO_TIMEOUT).await.map_err(out_of_budget)?;
                payload.reserve_exact(more);
            }
            let room = (len - payload.len()).min(payload.capacity() - payload.len());
            let n = (&mut *stream)
                .take(room as u64)
                .read_buf(&mut payload)
                .await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer closed mid-frame",
                ));
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(IO_TIMEOUT, read)
        .await
        .map_err(|_| timeout("read"))??;
    Ok(payload)
}

async fn peer_session(
    node: Arc<Node>,
    mut stream: TcpStream,
    budget: ByteBudget,
) -> std::io::Result<()> {
    let mut rest = [0u8; 3];
    tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut rest))
        .await
        .map_err(|_| timeout("preamble"))??;
    if rest != PREAMBLE[1..] {
        warn!(got = ?rest, "peer preamble mismatch (another protocol version?); closing");
        return Ok(());
    }
    loop {
        let mut head = [0u8; 4];
        tokio::select! {
            _ = node.shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(&mut head)) => { r.map_err(|_| timeout("idle"))??; }
        }
        let len = match pframe::frame_len(&head) {
            Ok(l) => l,
            Err(e) => {
                warn!(cause = %e, "bad peer frame; closing");
                return Ok(());
            }
        };
        let mut held = budget.empty();
        let payload = read_payload(&mut stream, len, &mut held).await?;
        let env = match pframe::decode_payload::<Request>(&payload) {
            Ok(env) => env,
            Err(e) => {
                warn!(cause = %e, "undecodable peer frame; closing");
                return Ok(());
            }
        };
        drop(payload);
        if let Some(from) = env.from {
            match node.faults.fate(&from) {
                // Across a partition a request goes unanswered: hold the
                // connection open (bounded) so the caller times out, as it
                // would on a real network, instead of seeing it closed.
                Fate::Drop => {
                    // Callers give up after at most twice the request timeout.
                    tokio::select! {
                        _ = node.shutdown.cancelled() => {}
                        _ = tokio::time::sleep(node.config.request_timeout * 2) => {}
                    }
                    return Ok(());
                }
                Fate::Delay(d) => tokio::time::sleep(d).await,
                Fate::Pass => {}
            }
        }
        let stop = matches!(env.body, Request::Shutdown);
        let response = node.handle_peer(env.body).await;
        drop(held);
        let bytes = pframe::encode(None, env.id, &response).unwrap_or_else(|e| {
            pframe::encode(
                None,
                env.id,
                &Response::Error {
                    message: e.to_string(),
                    unknown: false,
                },
            )
            .unwrap_or_default()
        });
        let written = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&bytes)).await;
        if stop {
            // Stop whether or not the answer got through.
            info!("stop requested by a peer");
            stop_node(&node);
            return Ok(());
        }
        written.map_err(|_| timeout("write"))??;
    }
}

async fn resp_session(
    node: Arc<Node>,
    mut stream: TcpStream,
    first: u8,
    budget: ByteBudget,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    buf.push(first);
    // Bytes of `buf`'s capacity beyond the base, taken from the budget.
    let mut held = budget.empty();
    loop {
        // Answer every complete command in the buffer (pipelining).
        let mut used_total = 0;
        loop {
            let (frame, used) = match resp::decode(&buf[used_total..]) {
                Ok(x) => x,
                Err(DecodeError::Incomplete) => break,
                Err(DecodeError::Invalid(msg)) => {
                    let reply = Frame::Error(format!("ERR Protocol error: {msg}"));
                    let _ =
                        tokio::time::timeout(IO_TIMEOUT, stream.write_all(&reply.to_bytes())).await;
                    return Ok(());
                }
            };
            used_total += used;
            let (reply, after) = match frame_args(frame) {
                Some(args) if args.is_empty() => continue,
                Some(args) => execute(&node, &args).await,
                None => (
                    Frame::err("Protocol error: expected an array of bulk strings"),
                    After::Close,
                ),
            };
            tokio::time::timeout(IO_TIMEOUT, stream.write_all(&reply.to_bytes()))
                .await
                .map_err(|_| timeout("write"))??;
            match after {
                After::Continue => {}
                After::Close => return Ok(()),
                After::StopNode => {
                    stop_node(&node);
                    return Ok(());
                }
            }
        }
        buf.drain(..used_total);
        if buf.is_empty() && buf.capacity() > BASE_BUFFER {
            // A large command is done: give its memory back.
            buf = Vec::with_capacity(512);
            held.shrink_to(0);
        }
        // Between commands a client may idle; inside one it must keep sending.
        let wait = if buf.is_empty() {
            IDLE_TIMEOUT
        } else {
            IO_TIMEOUT
        };
        if buf.capacity() == buf.len() {
            let grow = buf.capacity().clamp(512, READ_CHUNK);
            let beyond = (buf.capacity() + grow).saturating_sub(BASE_BUFFER);
            if beyond > held.bytes() {
                held.grow(beyond - held.bytes(), IO_TIMEOUT)
                    .await
                    .map_err(out_of_budget)?;
            }
            buf.reserve_exact(grow);
        }
        let n = tokio::select! {
            _ = node.shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => r.map_err(|_| timeout("read"))??,
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Starts the node's stop sequence without waiting for it.
fn stop_node(node: &Arc<Node>) {
    let node = node.clone();
    tokio::spawn(async move { crate::node::stop(&node).await });
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

fn coord_err(e: CoordError) -> Frame {
    Frame::err(e)
}

/// Runs one client command.
async fn execute(node: &Arc<Node>, args: &[Vec<u8>]) -> (Frame, After) {
    let cmd = match command::parse(args) {
        Ok(c) => c,
        Err(e) => return (Frame::err(e), After::Continue),
    };
    let reply = match cmd {
        Command::Ping(None) => Frame::Simple("PONG".into()),
        Command::Ping(Some(m)) | Command::Echo(m) => Frame::Bulk(m),
        Command::Get { key, r } => match node.get(&key, r).await {
            Ok(obj) => {
                let obj = obj.filter(|o| !o.is_deleted());
                match obj {
                    None => Frame::Null,
                    Some(o) if o.siblings.len() == 1 => {
                        o.siblings[0].value.clone().map_or(Frame::Null, Frame::Bulk)
                    }
                    Some(o) => Frame::Array(
                        o.siblings
                            .iter()
                            .map(|s| s.value.clone().map_or(Frame::Null, Frame::Bulk))
                            .collect(),
                    ),
                }
            }
            Err(e) => coord_err(e),
        },
        Command::VGet { key, r } => match node.get(&key, r).await {
            Ok(obj) => {
                let obj = obj.unwrap_or_default();
                let mut items = vec![Frame::bulk(encode_context(&key, &obj.clock))];
                if !obj.is_deleted() {
                    items.extend(
                        obj.siblings
                            .iter()
                            .map(|s| s.value.clone().map_or(Frame::Null, Frame::Bulk)),
                    );
                }
                Frame::Array(items)
            }
            Err(e) => coord_err(e),
        },
        Command::Set { key, value, w, ctx } => match node.put(&key, Some(value), ctx, w).await {
            Ok(_) => Frame::ok(),
            Err(e) => coord_err(e),
        },
        Command::Del { key, w, ctx } => match node.put(&key, None, ctx, w).await {
            Ok(existed) => Frame::Integer(i64::from(existed)),
            Err(e) => coord_err(e),
        },
        Command::Nodes => Frame::Bulk(nodes_report(node).into_bytes()),
        Command::Owners(key) => {
            let mut out = String::new();
            for (i, (id, addr, live)) in node.owners(&key).into_iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{}) {id} {addr} {}",
                    i + 1,
                    if live { "live" } else { "down" }
                );
            }
            Frame::Bulk(out.into_bytes())
        }
        Command::Status => Frame::Bulk(status_report(node).into_bytes()),
        Command::Replicas(key) => Frame::Bulk(node.replicas_report(&key).await.into_bytes()),
        Command::Kill(target) => {
            if target == node.id() {
                return (Frame::ok(), After::StopNode);
            }
            match node.kill(&target).await {
                Ok(()) => Frame::ok(),
                Err(e) => coord_err(e),
            }
        }
        Command::Shutdown => return (Frame::ok(), After::StopNode),
        Command::ShutdownCluster => {
            // Stop the others first, so the answer says what happened.
            let (stopped, total) = node.stop_others().await;
            info!(stopped, total, "cluster shutdown requested");
            let reply = if stopped == total {
                Frame::ok()
            } else {
                Frame::Simple(format!(
                    "OK ({stopped} of {total} other nodes stopped; the others did not answer and may be down already)"
                ))
            };
            return (reply, After::StopNode);
        }
        Command::Quit => return (Frame::ok(), After::Close),
        Command::Fault(f) => fault_command(node, f),
        Command::CommandDocs => Frame::Array(Vec::new()),
        Command::Noop => Frame::ok(),
    };
    (reply, After::Continue)
}

fn fault_command(node: &Node, cmd: FaultCmd) -> Frame {
    if !node.faults.enabled() {
        return Frame::err("fault injection is disabled; start the node with --fault-injection");
    }
    let view = node.membership.view();
    let resolve = |id: &str| {
        view.addr(id)
            .ok_or_else(|| format!("unknown node '{id}' (see NODES)"))
    };
    let result: Result<(), String> = match cmd {
        FaultCmd::Partition(nodes) => nodes.iter().try_for_each(|n| {
            let a = resolve(n)?;
            node.faults.update(a, |r| r.partitioned = true);
            Ok(())
        }),
        FaultCmd::Delay(n, ms) => resolve(&n).map(|a| {
            node.faults
                .update(a, |r| r.delay = Duration::from_millis(ms));
        }),
        FaultCmd::Loss(n, pct) => resolve(&n).map(|a| node.faults.update(a, |r| r.loss_pct = pct)),
        FaultCmd::Heal => {
            node.faults.heal();
            Ok(())
        }
        FaultCmd::Show => {
            let mut out = String::new();
            for (addr, rule) in node.faults.rules() {
                let _ = writeln!(
                    out,
                    "{addr} partitioned={} delay_ms={} loss_pct={}",
                    rule.partitioned,
                    rule.delay.as_millis(),
                    rule.loss_pct
                );
            }
            return Frame::Bulk(out.into_bytes());
        }
    };
    match result {
        Ok(()) => {
            info!(rules = ?node.faults.rules(), "fault rules changed");
            Frame::ok()
        }
        Err(e) => Frame::err(e),
    }
}

/// One line per ring member: id, address, live/down (and which one is this node).
fn nodes_report(node: &Node) -> String {
    let view = node.membership.view();
    let pending = node.hints.pending();
    let mut out = String::new();
    for (id, addr) in &view.members {
        let state = if view.is_live(id) { "live" } else { "down" };
        let me = if id == node.id() { " (this node)" } else { "" };
        let hints = match pending.get(id) {
            Some(n) => format!(" ({n} hints pending here)"),
            None => String::new(),
        };
        let _ = writeln!(out, "{id} {addr} {state}{me}{hints}");
    }
    out
}

fn status_report(node: &Node) -> String {
    let view = node.membership.view();
    let c = &node.config;
    let n = node.effective_n(&view);
    let store = node.replica.store().status();
    let mut out = String::new();
    let _ = writeln!(out, "node: {} at {}", node.id(), c.advertise);
    let _ = writeln!(out, "actor: {}", node.actor.get());
    let _ = writeln!(out, "dot conflicts: {}", node.replica.conflicts());
    let _ = writeln!(out, "cluster: {}", c.cluster_id);
    let _ = writeln!(
        out,
        "members: {} ({} live)",
        view.members.len(),
        view.live.len()
    );
    if n < c.n {
        let _ = writeln!(
            out,
            "replication: N={} R={} W={} (N shrunk to {n}: the ring has only {} members)",
            c.n,
            c.r.min(n),
            c.w.min(n),
            view.members.len()
        );
    } else {
        let _ = writeln!(out, "replication: N={} R={} W={}", c.n, c.r, c.w);
    }
    let _ = writeln!(out, "vnodes: {}", c.vnodes);
    let t = &node.trees;
    let _ = writeln!(
        out,
        "anti-entropy: every {} ms, {} exchanges, {} key digests compared, {} keys repaired",
        c.aae_interval.as_millis(),
        t.rounds.load(std::sync::atomic::Ordering::Relaxed),
        t.keys_compared.load(std::sync::atomic::Ordering::Relaxed),
        t.keys_repaired.load(std::sync::atomic::Ordering::Relaxed)
    );
    let pending = node.hints.pending();
    let total: usize = pending.values().sum();
    let per: Vec<String> = pending.iter().map(|(o, n)| format!("{o}={n}")).collect();
    if per.is_empty() {
        let _ = writeln!(out, "hints pending: {total}");
    } else {
        let _ = writeln!(out, "hints pending: {total} ({})", per.join(", "));
    }
    let _ = writeln!(
        out,
        "storage: {} ({} keys, {} bytes)",
        store.backend, store.keys, store.bytes
    );
    for (k, v) in &store.details {
        let _ = writeln!(out, "storage.{k}: {v}");
    }
    out
}
