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
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::command::{self, Command, FaultCmd};
use crate::coordinator::CoordError;
use crate::fault::Fate;
use crate::node::Node;
use crate::object::encode_context;
use crate::resp::{self, DecodeError, Frame};
use crate::rpc::frame::{self as pframe, PREAMBLE};
use crate::rpc::{Request, Response};

/// Connections open at once (clients and peers); further ones wait in the
/// accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// Client (RESP) connections open at once; one more is refused with an error,
/// so clients can never take every connection and starve peer RPC.
const MAX_CLIENTS: usize = 1024;
/// Largest RESP input buffered for one connection: one maximum-size bulk
/// string plus headroom.
const MAX_CLIENT_BUFFER: usize = resp::MAX_BULK_LEN + 1024 * 1024;
/// A connection that sends nothing for this long is closed (clients
/// reconnect; the peer pool drops idle connections long before).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Time allowed to finish reading a frame once it has started, and to write a reply.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a session does after answering.
enum After {
    Continue,
    Close,
    StopNode,
}

/// Accepts connections until the node stops.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let permit = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let node = node.clone();
                let clients = clients.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = session(node, stream, clients).await {
                        debug!(%peer, cause = %e, "connection closed");
                    }
                    drop(permit);
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
    clients: Arc<Semaphore>,
) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    let n = tokio::select! {
        _ = node.shutdown.cancelled() => return Ok(()),
        r = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut first)) => r.map_err(|_| timeout("first byte"))??,
    };
    if n == 0 {
        return Ok(());
    }
    if first[0] == PREAMBLE[0] {
        return peer_session(node, stream).await;
    }
    let Ok(_permit) = clients.try_acquire_owned() else {
        let reply = Frame::err("max number of clients reached");
        let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&reply.to_bytes())).await;
        return Ok(());
    };
    resp_session(node, stream, first[0]).await
}

fn timeout(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timeout"))
}

async fn peer_session(node: Arc<Node>, mut stream: TcpStream) -> std::io::Result<()> {
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
        let mut payload = vec![0u8; len];
        tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut payload))
            .await
            .map_err(|_| timeout("read"))??;
        let env = match pframe::decode_payload::<Request>(&payload) {
            Ok(env) => env,
            Err(e) => {
                warn!(cause = %e, "undecodable peer frame; closing");
                return Ok(());
            }
        };
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

async fn resp_session(node: Arc<Node>, mut stream: TcpStream, first: u8) -> std::io::Result<()> {
    let mut buf: Vec<u8> = vec![first];
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Answer every complete command in the buffer (pipelining).
        loop {
            let (frame, used) = match resp::decode(&buf) {
                Ok(x) => x,
                Err(DecodeError::Incomplete) => break,
                Err(DecodeError::Invalid(msg)) => {
                    let reply = Frame::Error(format!("ERR Protocol error: {msg}"));
                    let _ =
                        tokio::time::timeout(IO_TIMEOUT, stream.write_all(&reply.to_bytes())).await;
                    return Ok(());
                }
            };
            buf.drain(..used);
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
        // Between commands a client may idle; inside one it must keep sending.
        let wait = if buf.is_empty() {
            IDLE_TIMEOUT
        } else {
            IO_TIMEOUT
        };
        let n = tokio::select! {
            _ = node.shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(wait, stream.read(&mut chunk)) => r.map_err(|_| timeout("read"))??,
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_CLIENT_BUFFER {
            let reply = Frame::err("Protocol error: command too large");
            let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&reply.to_bytes())).await;
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
    let _ = writeln!(out, "actor: {}", node.actor);
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
