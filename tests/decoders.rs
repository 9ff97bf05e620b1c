//! Every decoder that reads bytes from the network or a file, fed arbitrary
//! and mutated bytes (a bounded property test, run in CI): none panics, each
//! either decodes or says why not, and a valid encoding that was damaged is
//! never taken for a different valid value silently where a checksum guards
//! it. The RESP decoder, peer frames (requests and answers), the peer
//! handshake, storage records, hint files, the layout, stored objects,
//! context tokens and the REPL tokenizer.

use std::time::Duration;

use distro_db::cluster::layout::Layout;
use distro_db::object::Object;
use distro_db::resp::{self, Frame};
use distro_db::rpc::auth::{self, PeerKey};
use distro_db::rpc::frame;
use distro_db::rpc::{Request, Response};
use distro_db::storage::log::{hint, record};
use distro_db::token::{ContextKey, Token};
use distro_db::vclock::VClock;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512)
}

/// A valid encoding with a few bytes changed, cut short or extended.
fn mutate(valid: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = valid;
    for &(at, x) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] ^= x.max(1);
        }
    }
    if let Some(c) = cut
        && !b.is_empty()
    {
        b.truncate(c % b.len());
    }
    b
}

fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        proptest::option::of(any::<usize>()),
    )
}

fn sample_command() -> Vec<u8> {
    Frame::command(["SET", "user:1", "alice", "EX", "10"]).to_bytes()
}

fn sample_request() -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_into(
        &mut out,
        None,
        7,
        &Request::Get {
            key: b"user:1".to_vec(),
        },
    )
    .unwrap();
    out
}

fn sample_record() -> Vec<u8> {
    let mut out = Vec::new();
    record::encode(&mut out, 1_700_000_000, 0, b"user:1", b"alice");
    out
}

fn sample_object() -> Object {
    Object::update(
        None,
        &VClock::new(),
        &"node-1/0000018f00000000".to_string(),
        Some(b"alice".to_vec()),
        1,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn resp_decoder(b in bytes(), (e, cut) in edits()) {
        let _ = resp::decode(&b);
        let _ = resp::decode(&mutate(sample_command(), &e, cut));
        // A whole valid command decodes to what was sent, using every byte.
        let valid = sample_command();
        let (f, used) = resp::decode(&valid).unwrap();
        prop_assert_eq!(used, valid.len());
        prop_assert_eq!(f.to_bytes(), valid);
    }

    #[test]
    fn peer_frames(b in bytes(), (e, cut) in edits()) {
        let _ = frame::decode::<Request>(&b);
        let _ = frame::decode::<Response>(&b);
        let _ = frame::frame_len(&b);
        let m = mutate(sample_request(), &e, cut);
        let _ = frame::decode::<Request>(&m);
        let _ = frame::decode::<Response>(&m);
    }

    #[test]
    fn storage_records(b in bytes(), (e, cut) in edits()) {
        let _ = record::decode(&b);
        let valid = sample_record();
        let m = mutate(valid.clone(), &e, cut);
        // The CRC guards a record: a damaged one never decodes as another.
        if let Ok((r, _)) = record::decode(&m) {
            prop_assert_eq!(&m[..], &valid[..m.len()]);
            prop_assert_eq!(r.key, &b"user:1"[..]);
        }
    }

    #[test]
    fn hint_files(b in bytes(), seg in 0u64..1 << 20) {
        let _ = hint::decode(&b, seg, |_, _, _, _, _| {});
    }

    #[test]
    fn layouts_objects_and_tokens(b in bytes(), (e, cut) in edits()) {
        let _ = Layout::from_bytes(&b);
        if let Ok(o) = Object::from_bytes(&b) {
            let _ = o.validate();
        }
        let valid = sample_object().to_bytes();
        if let Ok(o) = Object::from_bytes(&mutate(valid, &e, cut)) {
            let _ = o.validate();
        }
        // Tokens: arbitrary text never verifies; a damaged token never
        // verifies to another clock (only an undamaged one verifies at all).
        let key = ContextKey::derive(b"s3cret", "prod");
        let clock = sample_object().clock;
        let token = key.encode(b"user:1", &clock);
        prop_assert!(key.verify(b"user:1", &Token::new(&String::from_utf8_lossy(&b))).is_err());
        let m = mutate(token.clone().into_bytes(), &e, cut);
        let m = String::from_utf8_lossy(&m).to_string();
        match key.verify(b"user:1", &Token::new(&m)) {
            Ok(c) => prop_assert!(c == clock && m.trim() == token, "{m}"),
            Err(_) => prop_assert!(m.trim() != token),
        }
    }

    #[test]
    fn repl_tokenizer(b in bytes()) {
        let _ = distro_db::text::tokenize(&b);
    }

    #[test]
    fn peer_handshake(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        // Whatever a stranger sends after the preamble, the server side
        // refuses it (it cannot know the key) and never panics.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let refused = rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            let (mut c, mut s) = tokio::io::duplex(4096);
            let key = PeerKey::derive(b"secret", "cluster");
            let server = tokio::spawn(async move { auth::server(&mut s, &key).await });
            let _ = c.write_all(&b).await;
            drop(c);
            tokio::time::timeout(Duration::from_secs(10), server).await
        });
        prop_assert!(matches!(refused, Ok(Ok(Err(_)))));
    }
}
