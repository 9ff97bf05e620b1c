//! Bad input over the network: malformed RESP, malformed peer frames,
//! oversized keys and values, random bytes. Each gets a clear error or a
//! closed connection, and the node keeps serving with its data intact.
//! Also: standard Redis tooling (`redis-cli`) works against a node.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, bulk};
use distro_db::resp::Frame;

/// Sends raw bytes on a new connection; returns what the node sent back
/// before closing (or before 5 s passed).
fn raw(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn still_serving(c: &Cluster) {
    assert_eq!(c.cmd(0, &["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(c.cmd(0, &["GET", "keep"]), bulk("me"));
}

#[test]
fn malformed_resp_gets_an_error_and_the_node_keeps_serving() {
    let c = Cluster::start(1);
    assert_eq!(c.cmd(0, &["SET", "keep", "me"]), Frame::ok());
    let addr = c.nodes[0].addr();
    for bad in [
        &b"*1\r\n$x\r\n"[..],
        b"*2\r\n$3\r\nGET\r\n$99999999999\r\n",
        b"$3\r\nabcdef\r\n",
        b"*-5\r\n",
        b"*1\r\n:5\r\n",
    ] {
        let reply = String::from_utf8_lossy(&raw(&addr, bad)).to_string();
        assert!(reply.starts_with("-ERR"), "{bad:?} -> {reply}");
        still_serving(&c);
    }
    // Deep nesting is refused, not a stack overflow.
    let reply = raw(&addr, &b"*1\r\n".repeat(10_000));
    assert!(String::from_utf8_lossy(&reply).contains("nested too deeply"));
    // Inline commands work, as with telnet.
    let reply = raw(&addr, b"GET keep\r\nQUIT\r\n");
    assert_eq!(reply, b"$2\r\nme\r\n+OK\r\n");
    // RESP QUIT closes only this connection (Redis meaning).
    assert_eq!(raw(&addr, b"*1\r\n$4\r\nQUIT\r\n"), b"+OK\r\n");
    still_serving(&c);
}

#[test]
fn malformed_peer_frames_close_the_connection_and_the_node_keeps_serving() {
    let c = Cluster::start(1);
    assert_eq!(c.cmd(0, &["SET", "keep", "me"]), Frame::ok());
    let addr = c.nodes[0].addr();
    // Past the handshake (an unauthenticated connection never gets this far).
    let after_handshake = |bytes: &[u8]| -> Vec<u8> {
        let mut s = common::peer_connect(&addr, &c.cluster_id);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    // A frame length beyond the limit.
    assert!(after_handshake(&u32::MAX.to_be_bytes()).is_empty());
    // A valid length with garbage inside.
    let mut bytes = 8u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0xc1; 8]);
    assert!(after_handshake(&bytes).is_empty());
    // Another protocol version.
    assert!(raw(&addr, &[0xD7, b'D', b'B', 99, 0, 0, 0, 1, 0]).is_empty());
    // A truncated frame followed by a closed connection.
    let mut s = common::peer_connect(&addr, &c.cluster_id);
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[1, 2, 3]);
    s.write_all(&bytes).unwrap();
    drop(s);
    still_serving(&c);
}

#[test]
fn random_bytes_never_stop_a_node() {
    let c = Cluster::start(1);
    assert_eq!(c.cmd(0, &["SET", "keep", "me"]), Frame::ok());
    let addr = c.nodes[0].addr();
    let mut rng_state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..60 {
        let len = 1 + (round * 37) % 300;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state as u8
            })
            .collect();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&bytes);
    }
    still_serving(&c);
}

#[test]
fn oversized_keys_and_values_are_refused_clearly() {
    let c = Cluster::start(1);
    assert_eq!(c.cmd(0, &["SET", "keep", "me"]), Frame::ok());
    let big_value = "v".repeat(distro_db::config::MAX_VALUE_LEN + 1);
    let reply = c.cmd(0, &["SET", "k", &big_value]);
    let Frame::Error(msg) = reply else {
        panic!("expected an error")
    };
    assert!(msg.contains("value too large"), "{msg}");
    let big_key = "k".repeat(distro_db::config::MAX_KEY_LEN + 1);
    let Frame::Error(msg) = c.cmd(0, &["GET", &big_key]) else {
        panic!("expected an error")
    };
    assert!(msg.contains("key too large"), "{msg}");
    assert_eq!(c.cmd(0, &["GET", "k"]), Frame::Null);
    // The largest accepted value round-trips.
    let max_value = "m".repeat(distro_db::config::MAX_VALUE_LEN);
    assert_eq!(c.cmd(0, &["SET", "k", &max_value]), Frame::ok());
    assert_eq!(c.cmd(0, &["GET", "k"]), bulk(&max_value));
    still_serving(&c);
}

#[test]
fn redis_cli_works_against_a_node() {
    let Ok(out) = std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
    else {
        // CI installs redis-tools; a developer machine may not have it.
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-cli is missing on CI"
        );
        eprintln!("redis-cli not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let c = Cluster::start(2);
    let port = c.nodes[0].port.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "from-redis", "yes please"]), "OK");
    assert_eq!(cli(&["GET", "from-redis"]), "yes please");
    assert_eq!(c.cmd(1, &["GET", "from-redis"]), bulk("yes please"));
    assert_eq!(cli(&["DEL", "from-redis"]), "1");
    assert_eq!(cli(&["GET", "from-redis"]), "");
    assert!(cli(&["NODES"]).contains(&c.nodes[1].id));
    assert!(cli(&["FROB"]).contains("unknown command"));
}
