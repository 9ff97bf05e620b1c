//! Pipelined clients and multiplexed peers, over real sockets.
//!
//! - Commands a client sends together run concurrently, yet their replies
//!   come back in the order sent, and a command sees the effect of an earlier
//!   one on the same key.
//! - A peer connection carries many requests at once and matches answers to
//!   requests by id, whatever order the answers arrive in.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use distro_db::resp::{self, Frame};
use distro_db::rpc::frame::{self, PREAMBLE};
use distro_db::rpc::{Request, Response, TcpTransport, Transport};

/// Reads `n` replies from a raw connection (bounded by a deadline).
fn read_replies(s: &mut TcpStream, n: usize) -> Vec<Frame> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut chunk = vec![0u8; 64 * 1024];
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} replies",
            out.len()
        );
        loop {
            match resp::decode(&buf) {
                Ok((f, used)) => {
                    buf.drain(..used);
                    out.push(f);
                }
                Err(resp::DecodeError::Incomplete) => break,
                Err(e) => panic!("bad reply: {e}"),
            }
        }
        if out.len() >= n {
            break;
        }
        let got = s.read(&mut chunk).expect("read");
        assert!(got > 0, "connection closed after {} replies", out.len());
        buf.extend_from_slice(&chunk[..got]);
    }
    out
}

#[test]
fn pipelined_replies_come_back_in_order_and_see_earlier_writes() {
    let c = Cluster::start_with(3, &["--fault-injection"]);
    let mut s = TcpStream::connect(c.nodes[0].addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Replies to the other nodes' requests come back 150 ms late, so a
    // GET with R=3 is slow while everything else is fast.
    for peer in &c.nodes[1..] {
        assert_eq!(c.cmd(0, &["FAULT", "DELAY", &peer.id, "150"]), Frame::ok());
    }
    let mut batch = Vec::new();
    let mut expect = Vec::new();
    for i in 0..100 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        batch.extend(Frame::command(["SET", &k, &v, "W=1"]).to_bytes());
        expect.push(Frame::ok());
        batch.extend(Frame::command(["GET", &k, "R=1"]).to_bytes());
        expect.push(Frame::Bulk(v.clone().into_bytes()));
        if i % 25 == 0 {
            // A slow read between fast commands keeps its place.
            batch.extend(Frame::command(["GET", &k, "R=3"]).to_bytes());
            expect.push(Frame::Bulk(v.into_bytes()));
            batch.extend(Frame::command(["ECHO", &format!("after-{i}")]).to_bytes());
            expect.push(Frame::Bulk(format!("after-{i}").into_bytes()));
        }
    }
    batch.extend(Frame::command(["PING"]).to_bytes());
    expect.push(Frame::Simple("PONG".into()));
    let started = Instant::now();
    s.write_all(&batch).unwrap();
    let replies = read_replies(&mut s, expect.len());
    assert_eq!(replies, expect);
    // The four slow reads overlapped (one at a time would take 4 x 150 ms
    // each way at least); the whole pipeline ran concurrently.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_pipeline_with_a_bad_command_answers_each_in_turn() {
    let c = Cluster::start(1);
    let mut s = TcpStream::connect(c.nodes[0].addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"SET a 1\r\nFROB x\r\nGET a\r\nQUIT\r\nPING\r\n")
        .unwrap();
    let replies = read_replies(&mut s, 4);
    assert_eq!(replies[0], Frame::ok());
    assert!(matches!(&replies[1], Frame::Error(e) if e.starts_with("ERR unknown command")));
    assert_eq!(replies[2], Frame::Bulk(b"1".to_vec()));
    assert_eq!(replies[3], Frame::ok());
    // QUIT closed the connection: the PING after it is never answered.
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest).unwrap_or(0), 0);
}

fn key() -> distro_db::rpc::auth::PeerKey {
    distro_db::rpc::auth::PeerKey::derive(b"test secret", "pipeline")
}

/// A fake peer connection: collects requests until none has arrived for a
/// while, then answers all of them at once, in reverse order.
async fn reversing_connection(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pre = [0u8; 4];
    s.read_exact(&mut pre).await.unwrap();
    assert_eq!(pre, PREAMBLE);
    distro_db::rpc::auth::server(&mut s, &key())
        .await
        .expect("the transport authenticates");
    let mut buf = Vec::new();
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Err(_) if !got.is_empty() => break,
            Err(_) => continue,
        }
        while let Ok((env, used)) = frame::decode::<Request>(&buf) {
            buf.drain(..used);
            let Request::Get { key } = env.body else {
                panic!("expected a Get")
            };
            got.push((env.id, key));
        }
    }
    let mut out = Vec::new();
    for (id, key) in got.into_iter().rev() {
        let answer = Response::Pong {
            node_id: String::from_utf8(key).unwrap(),
        };
        frame::encode_into(&mut out, None, id, &answer).unwrap();
    }
    s.write_all(&out).await.unwrap();
    // Keep the connection open until the client is done.
    let _ = s.read(&mut [0u8; 1]).await;
}

#[tokio::test]
async fn multiplexed_calls_get_their_own_answers_in_any_order() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(reversing_connection(s));
        }
    });
    let transport = Arc::new(TcpTransport::new("127.0.0.1:1".parse().unwrap(), key()));
    let n = 64;
    let mut calls = Vec::new();
    for i in 0..n {
        let t = transport.clone();
        calls.push(tokio::spawn(async move {
            let req = Request::Get {
                key: format!("req-{i}").into_bytes(),
            };
            (i, t.call(addr, &req, Duration::from_secs(10)).await)
        }));
    }
    for call in calls {
        let (i, r) = call.await.unwrap();
        match r {
            Ok(Response::Pong { node_id }) => assert_eq!(node_id, format!("req-{i}")),
            other => panic!("call {i} got {other:?}"),
        }
    }
    peer.abort();
}
