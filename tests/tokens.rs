//! Multi-process: context tokens are authenticated. A token a node of a
//! cluster hands out is accepted by any node of that cluster; a token of
//! another key or another cluster (another secret), an old unauthenticated
//! one, or a forged one with counters near 2^64 (even under a valid tag)
//! is refused with the error that says to read the key again, and the key
//! stays writable and readable with plain SET and GET afterwards.

mod common;

use base64::Engine as _;
use common::{Cluster, bulk};
use distro_db::resp::Frame;
use distro_db::token::{ContextKey, Token};
use distro_db::vclock::VClock;

const SECRET_A: &str = "correct horse battery staple";
const SECRET_B: &str = "another secret entirely";

fn secret_file(dir: &std::path::Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.display().to_string()
}

/// The context token and the values of `VGET key R=n` (every replica)
/// through node `i`.
fn vget(c: &Cluster, i: usize, key: &str) -> (String, Vec<Frame>) {
    let r = format!("R={}", c.nodes.len());
    match c.cmd(i, &["VGET", key, &r]) {
        Frame::Array(items) => match items.split_first() {
            Some((Frame::Bulk(t), values)) => (String::from_utf8_lossy(t).into(), values.to_vec()),
            _ => panic!("VGET {key}: no token in {items:?}"),
        },
        other => panic!("VGET {key}: {other:?}"),
    }
}

/// Asserts `reply` is the refusal that tells the client to read again.
fn refused(reply: Frame, what: &str) {
    match reply {
        Frame::Error(e) => assert!(
            e.starts_with("BADCTX ") && e.contains("read the key again"),
            "{what}: {e}"
        ),
        other => panic!("{what}: accepted ({other:?})"),
    }
}

#[test]
fn tokens_are_accepted_across_a_cluster_and_refused_from_outside_or_forged() {
    let keys = tempfile::tempdir().unwrap();
    let a_secret = secret_file(keys.path(), "a", SECRET_A);
    let b_secret = secret_file(keys.path(), "b", SECRET_B);
    let a = Cluster::start_with(3, &["--cluster-secret-file", &a_secret]);
    let b = Cluster::start_with(
        1,
        &[
            "--n",
            "1",
            "--r",
            "1",
            "--w",
            "1",
            "--cluster-secret-file",
            &b_secret,
        ],
    );

    // Node 0 hands out a token; node 1 accepts it and supersedes v1.
    assert_eq!(a.cmd(0, &["SET", "cart", "v1"]), Frame::ok());
    let (token, values) = vget(&a, 0, "cart");
    assert_eq!(values, vec![bulk("v1")]);
    let ctx = format!("CTX={token}");
    assert_eq!(a.cmd(1, &["SET", "cart", "v2", &ctx]), Frame::ok());
    assert_eq!(vget(&a, 2, "cart").1, vec![bulk("v2")]);

    // The same token on another key, on another cluster, altered or cut.
    refused(a.cmd(1, &["SET", "other", "x", &ctx]), "another key");
    assert_eq!(b.cmd(0, &["SET", "cart", "b1"]), Frame::ok());
    refused(b.cmd(0, &["SET", "cart", "x", &ctx]), "another cluster");
    refused(b.cmd(0, &["VDEL", "cart", &ctx]), "another cluster (VDEL)");
    assert_eq!(b.cmd(0, &["GET", "cart"]), bulk("b1"));
    let (b_token, _) = vget(&b, 0, "cart");
    refused(
        a.cmd(0, &["SET", "cart", "x", &format!("CTX={b_token}")]),
        "B's token on A",
    );
    let mut altered = token.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    refused(
        a.cmd(2, &["SET", "cart", "x", &format!("CTX={altered}")]),
        "altered",
    );
    refused(
        a.cmd(
            2,
            &[
                "SET",
                "cart",
                "x",
                &format!("CTX={}", &token[..token.len() / 2]),
            ],
        ),
        "cut",
    );

    // Forged clocks with counters near 2^64 for the actors that wrote the
    // key: as an old unauthenticated token, and under a valid tag made with
    // the cluster's own key (only the counter bound stops that one).
    let key_a = ContextKey::derive(SECRET_A.as_bytes(), &a.cluster_id);
    let clock = key_a
        .verify(b"cart", &Token::new(&vget(&a, 0, "cart").0))
        .expect("the cluster's own token verifies");
    assert!(!clock.is_empty());
    let forged: VClock = clock
        .iter()
        .map(|(actor, _)| (actor.to_string(), u64::MAX - 1))
        .collect();
    let old_tag = (distro_db::keyspace::key_hash(b"cart") >> 32) as u32;
    let old = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(rmp_serde::to_vec(&(old_tag, &forged)).unwrap());
    let signed = key_a.encode(b"cart", &forged);
    for (what, t) in [("old format", &old), ("valid tag", &signed)] {
        for i in 0..3 {
            let ctx = format!("CTX={t}");
            refused(a.cmd(i, &["SET", "cart", "poison", &ctx]), what);
            refused(a.cmd(i, &["VDEL", "cart", &ctx]), what);
        }
    }
    // Nothing was written, and the key takes plain writes, then writes with
    // a fresh token, as before.
    assert_eq!(vget(&a, 1, "cart").1, vec![bulk("v2")]);
    assert_eq!(a.cmd(1, &["SET", "cart", "v3"]), Frame::ok());
    assert_eq!(a.cmd(2, &["GET", "cart", "R=3"]), bulk("v3"));
    let (fresh, _) = vget(&a, 2, "cart");
    assert_eq!(
        a.cmd(0, &["SET", "cart", "v4", &format!("CTX={fresh}")]),
        Frame::ok()
    );
    assert_eq!(vget(&a, 1, "cart").1, vec![bulk("v4")]);
    let after = key_a
        .verify(b"cart", &Token::new(&vget(&a, 0, "cart").0))
        .unwrap();
    assert!(after.iter().all(|(_, c)| c < 100), "{after}");
}
