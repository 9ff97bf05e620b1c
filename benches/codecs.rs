//! Codec micro-benchmarks (criterion): the CPU cost of putting messages on
//! and taking them off the wire. Measures the peer protocol's
//! `rpc::frame::encode_into` and `rpc::frame::decode` of a
//! `Request::Replicate` carrying an object with one 100-byte value and of a
//! `Response::Ack`; and RESP: `api::resp::decode` of one
//! `SET key:000000001234 <100 bytes>` command and of a buffer of 16
//! pipelined SETs (decoded one frame after another, as a connection does),
//! and `api::resp::Frame::encode` of a 100-byte bulk reply and of an array
//! of 10 such bulk strings; and command dispatch, `api::commands::parse` (the
//! name looked up in the command table, arity checked, arguments parsed) of
//! `GET key`, `SET key <100 bytes>` and `set key <100 bytes> EX 10`.
//!
//! Run: `cargo bench --bench codecs`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distro_db::api::resp::{self, Frame};
use distro_db::object::Object;
use distro_db::rpc::frame;
use distro_db::rpc::{Request, Response};
use distro_db::vclock::VClock;

// The allocator of the `db` binary, so allocation-heavy paths cost here what
// they cost in a node.
#[global_allocator]
static GLOBAL: distro_db::heap::Heap = distro_db::heap::Heap;

const VALUE_LEN: usize = 100;
const KEY: &[u8] = b"key:000000001234";
/// Commands in the pipelined RESP buffer.
const PIPELINE: usize = 16;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

fn peer(c: &mut Criterion) {
    let from = Some(SocketAddr::from(([127, 0, 0, 1], 20001)));
    let object = Object::update(
        None,
        &VClock::new(),
        &"node-20001/1712345678".to_string(),
        Some(vec![b'v'; VALUE_LEN]),
        1_712_345_678_000,
    )
    .unwrap();
    let replicate = Request::Replicate {
        key: KEY.to_vec(),
        object,
        hint: None,
    };
    let ack = Response::ack();

    let mut g = c.benchmark_group("peer_frame");
    let mut buf = Vec::with_capacity(1024);
    g.bench_function("encode_replicate_100B", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode_into(&mut buf, from, black_box(42), black_box(&replicate)).unwrap();
            buf.len()
        })
    });
    g.bench_function("encode_ack", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode_into(&mut buf, None, black_box(42), black_box(&ack)).unwrap();
            buf.len()
        })
    });
    let replicate_bytes = frame::encode(from, 42, &replicate).unwrap();
    let ack_bytes = frame::encode(None, 42, &ack).unwrap();
    g.bench_function("decode_replicate_100B", |b| {
        b.iter(|| frame::decode::<Request>(black_box(&replicate_bytes)).unwrap())
    });
    g.bench_function("decode_ack", |b| {
        b.iter(|| frame::decode::<Response>(black_box(&ack_bytes)).unwrap())
    });
    g.finish();
}

fn resp_decode(c: &mut Criterion) {
    let value = vec![b'v'; VALUE_LEN];
    let set = |key: &[u8]| Frame::command([&b"SET"[..], key, &value]).to_bytes();
    let one = set(KEY);
    let pipeline: Vec<u8> = (0..PIPELINE)
        .flat_map(|i| set(format!("key:{:012}", 1234 + i).as_bytes()))
        .collect();

    let mut g = c.benchmark_group("resp_decode");
    g.bench_function("set_100B", |b| {
        b.iter(|| resp::decode(black_box(&one)).unwrap())
    });
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("pipeline_16_sets", |b| {
        b.iter(|| {
            let buf = black_box(&pipeline[..]);
            let mut pos = 0;
            let mut frames = 0;
            while pos < buf.len() {
                let (f, used) = resp::decode(&buf[pos..]).unwrap();
                black_box(f);
                pos += used;
                frames += 1;
            }
            frames
        })
    });
    g.finish();
}

fn resp_encode(c: &mut Criterion) {
    let bulk = Frame::Bulk(vec![b'v'; VALUE_LEN]);
    let array = Frame::Array(vec![bulk.clone(); 10]);
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("resp_encode");
    g.bench_function("bulk_100B", |b| {
        b.iter(|| {
            out.clear();
            black_box(&bulk).encode(&mut out);
            out.len()
        })
    });
    g.throughput(Throughput::Elements(10));
    g.bench_function("array_10_bulk_100B", |b| {
        b.iter(|| {
            out.clear();
            black_box(&array).encode(&mut out);
            out.len()
        })
    });
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let words = |line: &[&[u8]]| -> Vec<Vec<u8>> { line.iter().map(|w| w.to_vec()).collect() };
    let value = vec![b'v'; VALUE_LEN];
    let get = words(&[b"GET", KEY]);
    let set = words(&[b"SET", KEY, &value]);
    let set_ex = words(&[b"set", KEY, &value, b"EX", b"10"]);
    let mut g = c.benchmark_group("dispatch");
    for (name, args) in [("get", &get), ("set_100B", &set), ("set_ex_lower", &set_ex)] {
        g.bench_function(name, |b| {
            b.iter(|| distro_db::api::commands::parse(black_box(args)).is_ok())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = peer, resp_decode, resp_encode, dispatch
}
criterion_main!(benches);
