//! No single client or peer can starve a node: frames that announce huge
//! lengths hold no memory they have not received, silent and idle
//! connections cannot lock new clients out, peers keep a share clients
//! cannot take, and every field of a peer request is checked.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, wait_until};
use distro_db::object::{Object, Sibling};
use distro_db::resp::Frame;
use distro_db::rpc::frame;
use distro_db::rpc::{Request, Response};
use distro_db::vclock::{Dot, VClock};

/// A memory figure of a process from /proc (`VmRSS`, `VmSize`), in KiB.
fn mem_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The heap of a process in KiB: resident anonymous memory of its mappings
/// that are neither a file's (the binary's relocated data) nor a stack,
/// from /proc/PID/smaps (mimalloc's arena is a nameless mapping; glibc's
/// heap is `[heap]`).
fn heap_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut counted = false;
    let mut total = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: "start-end perms offset dev inode [name]".
        if fields.first().is_some_and(|f| f.contains('-')) && fields.len() >= 5 {
            counted = matches!(fields.get(5), None | Some(&"[heap]"));
        } else if counted && fields.first() == Some(&"Anonymous:") {
            total += fields
                .get(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends one peer request on a fresh (authenticated) connection and reads
/// the answer.
fn peer_call(c: &Cluster, req: &Request) -> Response {
    let mut s = common::peer_connect(&c.nodes[0].addr(), &c.cluster_id);
    s.write_all(&frame::encode(None, 7, req).unwrap()).unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let len = frame::frame_len(&head).unwrap();
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    frame::decode_payload::<Response>(&payload).unwrap().body
}

#[test]
fn announced_lengths_hold_no_memory_until_the_bytes_arrive() {
    let c = Cluster::start(1);
    let addr = c.nodes[0].addr();
    let pid = c.nodes[0].child.id();
    assert_eq!(c.cmd(0, &["PING"]), Frame::Simple("PONG".into()));
    // Reserved (virtual) memory, not only touched pages: a buffer of the
    // announced length would show here even before it is filled.
    let before = mem_kib(pid, "VmSize:");
    let mut held = Vec::new();
    // Five peers announcing 95 MB frames, five clients announcing 60 MB bulks,
    // each followed by a few bytes and then silence.
    for _ in 0..5 {
        let mut s = common::peer_connect(&addr, &c.cluster_id);
        s.write_all(&(95u32 << 20).to_be_bytes()).unwrap();
        s.write_all(&[0u8; 1000]).unwrap();
        held.push(s);
        let mut s = connect(&addr);
        s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$62914560\r\n")
            .unwrap();
        s.write_all(&[b'x'; 1000]).unwrap();
        held.push(s);
    }
    // The node keeps serving, and holds nothing like 5 x 95 + 5 x 60 MB.
    wait_until(Duration::from_secs(10), "the node to answer", || {
        c.client(0).call(&["PING"]).is_ok()
    });
    let after = mem_kib(pid, "VmSize:");
    assert!(
        after < before + 128 * 1024,
        "reserved memory grew from {before} KiB to {after} KiB"
    );
    drop(held);
}

#[test]
fn the_request_memory_budget_bounds_the_node() {
    // A 16 MiB budget: eight clients each sending 8 MB of a 16 MB value
    // cannot make the node hold more than the budget.
    let c = Cluster::start_with(1, &["--request-memory-mb", "16"]);
    let addr = c.nodes[0].addr();
    let pid = c.nodes[0].child.id();
    let before = mem_kib(pid, "VmRSS:");
    let chunk = vec![b'x'; 8 << 20];
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = connect(&addr);
        s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777216\r\n")
            .unwrap();
        // The node stops reading once the budget is spent; don't block on it.
        s.set_nonblocking(true).unwrap();
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        while sent < chunk.len() && Instant::now() < deadline {
            match s.write(&chunk[sent..]) {
                Ok(n) => sent += n,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = mem_kib(pid, "VmRSS:");
    assert!(
        after < before + (16 + 24) * 1024,
        "RSS grew from {before} KiB to {after} KiB past the 16 MiB budget"
    );
    drop(held);
    wait_until(Duration::from_secs(40), "the node to serve again", || {
        c.client(0).call(&["SET", "small", "v"]).ok() == Some(Frame::ok())
    });
}

#[test]
fn an_idle_in_memory_node_holds_a_small_heap() {
    // Issue 13 wants 100 nodes at <= 10 MB each. An idle node's heap was
    // about 0.8 MiB, then grew to 2 MiB when both in-memory stores' content
    // summaries (512 KiB of zeros each) became resident; they are now
    // allocated per partition on first write (docs/operations.md, "Scale").
    // This (unoptimised) test build measures about 1,030 KiB, 2 MiB with
    // eager summaries; the bound leaves room for variation, not for
    // another half-MiB table per store.
    const BOUND_KIB: u64 = 1536;
    let c = Cluster::start_with(1, &["--threads", "1"]);
    let pid = c.nodes[0].child.id();
    assert_eq!(c.cmd(0, &["PING"]), Frame::Simple("PONG".into()));
    let heap = heap_kib(pid);
    assert!(heap > 0, "no anonymous mapping in /proc/{pid}/smaps");
    assert!(
        heap < BOUND_KIB,
        "an idle node's heap holds {heap} KiB (bound {BOUND_KIB} KiB)"
    );
}

#[test]
fn silent_and_idle_connections_do_not_lock_clients_out() {
    let c = Cluster::start(1);
    let addr = c.nodes[0].addr();
    // 4,200 sockets that never send a byte.
    let silent: Vec<TcpStream> = (0..4200).map(|_| connect(&addr)).collect();
    // 1,100 idle clients that sent one command.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        let mut cl = c.client(0);
        assert_eq!(cl.call(&["PING"]).unwrap(), Frame::Simple("PONG".into()));
        idle.push(cl);
    }
    // A fresh client is served at once.
    let started = Instant::now();
    assert_eq!(c.cmd(0, &["PING"]), Frame::Simple("PONG".into()));
    assert!(started.elapsed() < Duration::from_secs(2));
    // Silent sockets are closed after the first-byte timeout.
    let mut probe = silent.into_iter().next().unwrap();
    let mut byte = [0u8; 1];
    probe
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let closed_after = Instant::now();
    assert_eq!(probe.read(&mut byte).unwrap_or(0), 0);
    assert!(closed_after.elapsed() < Duration::from_secs(15));
    // Idle clients are still connected and served.
    assert_eq!(
        idle[0].call(&["PING"]).unwrap(),
        Frame::Simple("PONG".into())
    );
}

#[test]
fn peers_keep_a_share_that_clients_cannot_take() {
    let c = Cluster::start_with(3, &["--max-clients", "20"]);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut cl = c.client(0);
        if cl.call(&["PING"]).ok() == Some(Frame::Simple("PONG".into())) {
            clients.push(cl);
        }
    }
    assert_eq!(clients.len(), 20);
    // The 21st client is refused with a clear error.
    let refused = c.client(0).call(&["PING"]);
    assert!(
        matches!(&refused, Ok(Frame::Error(e)) if e.contains("max number of clients")),
        "{refused:?}"
    );
    // Peers still reach node 0: writes through the others need it (W=3).
    assert_eq!(c.cmd(1, &["SET", "k", "v", "W=3"]), Frame::ok());
    assert_eq!(c.cmd(2, &["GET", "k", "R=3"]), common::bulk("v"));
}

#[test]
fn peer_requests_are_checked_field_by_field() {
    let c = Cluster::start(1);
    let put = Request::Write {
        key: b"k".to_vec(),
        write: distro_db::write::Write::value(Some(b"v".to_vec())),
        context: None,
        w: 0,
    };
    match peer_call(&c, &put) {
        Response::Error(e) => assert!(e.to_string().contains("W=0"), "{e}"),
        other => panic!("a write with w=0 was accepted: {other:?}"),
    }
    // One Replicate carrying 40,000 siblings is refused, and reads stay fast.
    let mut object = Object::default();
    for i in 0..40_000u32 {
        let dot = Dot {
            actor: format!("a{i}"),
            counter: 1,
        };
        object.clock.add(&dot);
        object.siblings.push(Sibling {
            dot,
            value: Some(vec![b'v']),
            written_ms: 0,
            expires_ms: None,
            counter: None,
        });
    }
    object.siblings.sort_by(|a, b| a.dot.cmp(&b.dot));
    let replicate = Request::Replicate {
        key: b"big".to_vec(),
        object,
        hint: None,
    };
    match peer_call(&c, &replicate) {
        Response::Error(e) => assert!(e.to_string().contains("siblings"), "{e}"),
        other => panic!("40,000 siblings were accepted: {other:?}"),
    }
    let started = Instant::now();
    assert_eq!(c.cmd(0, &["GET", "big"]), Frame::Null);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        c.nodes[0].log_text().contains("refusing"),
        "the refusal is logged"
    );
    let _ = VClock::new();
}

#[test]
fn a_client_that_never_reads_its_replies_is_bounded() {
    // A 64 MiB budget and a 4 MiB value: a client that pipelines 200 reads
    // of it and reads nothing back would make the node hold 800 MiB of
    // replies; it holds at most its connection's quarter of the budget.
    let c = Cluster::start_with(1, &["--request-memory-mb", "64"]);
    let addr = c.nodes[0].addr();
    let pid = c.nodes[0].child.id();
    let value = "v".repeat(4 << 20);
    assert_eq!(c.cmd(0, &["SET", "big", &value]), Frame::ok());
    assert_eq!(
        c.cmd(0, &["GET", "big"]),
        Frame::Bulk(value.clone().into_bytes())
    );
    let before = mem_kib(pid, "VmRSS:");
    let mut stuck = connect(&addr);
    let pipeline = "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(200);
    stuck.write_all(pipeline.as_bytes()).unwrap();
    // Meanwhile another client is served, large reads included: the stuck
    // connection cannot take the whole budget.
    for _ in 0..3 {
        assert_eq!(
            c.client(0).call(&["GET", "big"]).unwrap(),
            Frame::Bulk(value.clone().into_bytes())
        );
    }
    let after = mem_kib(pid, "VmRSS:");
    assert!(
        after < before + 96 * 1024,
        "RSS grew from {before} KiB to {after} KiB while a client did not read 800 MiB of replies"
    );
    // When the client reads at last, every command has its answer in order
    // (the value, or an error that says why it was not kept), and the
    // connection still serves.
    let mut replies = Vec::new();
    let mut rest: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    while replies.len() < 200 {
        let n = stuck.read(&mut chunk).expect("read the replies");
        assert!(
            n > 0,
            "the node closed the connection after {} replies",
            replies.len()
        );
        rest.extend_from_slice(&chunk[..n]);
        while let Ok((f, used)) = distro_db::resp::decode(&rest) {
            rest.drain(..used);
            replies.push(f);
        }
    }
    let values = replies
        .iter()
        .filter(|f| matches!(f, Frame::Bulk(b) if b.len() == 4 << 20))
        .count();
    let refused: Vec<&Frame> = replies
        .iter()
        .filter(|f| matches!(f, Frame::Error(e) if e.contains("has not read")))
        .collect();
    // (Whether any is refused depends on how many finished together: the
    // connection starts nothing new while it holds 1 MiB of unread replies.)
    assert!(
        values >= 1,
        "no reply carried the value: {:?}",
        &replies[..3]
    );
    assert_eq!(values + refused.len(), 200, "other replies: {replies:?}");
    stuck.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let n = stuck.read(&mut chunk).unwrap();
    assert_eq!(&chunk[..n], b"+PONG\r\n");
}
