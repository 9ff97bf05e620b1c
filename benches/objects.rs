//! Versioned-object micro-benchmarks (criterion): what a replica spends on
//! vector clocks and sibling sets for each write, merge and storage round
//! trip. Measures `VClock::merged` (and `clone`, its first half) and
//! `VClock::compare` on clocks of 3 and 30 actors; `Object::update` on a
//! fresh key and on keys holding 1 and 10 siblings (a write without context
//! that adds a sibling, and one with the full context that replaces them
//! all); `Object::merge` of equal objects, of a 1-sibling and a 2-sibling
//! copy, of two disjoint copies of 100, 250 and 500 siblings each and of
//! identical copies of 100 and 500 siblings (throughput in siblings, to show
//! the merge is linear); `Object::to_bytes` / `Object::from_bytes` of an
//! object holding one 100-byte value; and context tokens on clocks of 3 and
//! 30 actors: `ContextKey::encode` (what each `VGET` reply pays),
//! `ContextKey::verify` (what each write with `CTX=` pays), and, for scale,
//! the unauthenticated encoding and decoding of earlier versions (msgpack
//! and base64 without the MAC).
//!
//! Run: `cargo bench --bench objects`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distro_db::object::{Object, Sibling};
use distro_db::token::{ContextKey, Token};
use distro_db::vclock::{Actor, Causality, Dot, VClock};

// The allocator of the `db` binary, so allocation-heavy paths cost here what
// they cost in a node.
#[global_allocator]
static GLOBAL: distro_db::heap::Heap = distro_db::heap::Heap;

const VALUE_LEN: usize = 100;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// A server actor as the node names them: `node-id/epoch`.
fn actor(i: usize) -> Actor {
    format!("node-{}/1712345678", 20000 + i)
}

fn value(tag: usize) -> Vec<u8> {
    let mut v = vec![b'v'; VALUE_LEN];
    v[..8].copy_from_slice(&(tag as u64).to_le_bytes());
    v
}

/// A clock of `actors` actors with counters derived from `seed`.
fn clock(actors: usize, seed: u64) -> VClock {
    (0..actors)
        .map(|i| (actor(i), 1 + (i as u64 * 7 + seed) % 13))
        .collect()
}

fn vclock(c: &mut Criterion) {
    let mut g = c.benchmark_group("vclock");
    for actors in [3usize, 30] {
        // Concurrent clocks: each is ahead on some actors.
        let (a, b) = (clock(actors, 0), clock(actors, 7));
        assert_eq!(a.compare(&b), Causality::Concurrent);
        // `merged` is a clone plus an in-place merge: the clone alone, for scale.
        g.bench_with_input(BenchmarkId::new("clone", actors), &a, |bch, a| {
            bch.iter(|| black_box(a).clone())
        });
        g.bench_with_input(
            BenchmarkId::new("merged", actors),
            &(&a, &b),
            |bch, (a, b)| bch.iter(|| black_box(*a).merged(black_box(*b))),
        );
        g.bench_with_input(
            BenchmarkId::new("compare_concurrent", actors),
            &(&a, &b),
            |bch, (a, b)| bch.iter(|| black_box(*a).compare(black_box(*b))),
        );
        // Equal clocks: the worst case, both directions scan every actor.
        let a2 = a.clone();
        g.bench_with_input(
            BenchmarkId::new("compare_equal", actors),
            &(&a, &a2),
            |bch, (a, b)| bch.iter(|| black_box(*a).compare(black_box(*b))),
        );
    }
    g.finish();
}

/// An object holding `n` concurrent siblings, all written by `actor(a)`
/// without context (counters 1..=n), as `Object::update` builds it.
fn with_siblings(n: usize, a: usize) -> Option<Object> {
    let me = actor(a);
    let mut o = None;
    for i in 0..n {
        o = Some(Object::update(o.as_ref(), &VClock::new(), &me, Some(value(i)), 0).unwrap());
    }
    o
}

fn update(c: &mut Criterion) {
    let mut g = c.benchmark_group("object/update");
    let me = actor(0);
    let v = value(7);
    for siblings in [0usize, 1, 10] {
        let local = with_siblings(siblings, 0);
        let empty = VClock::new();
        // No context: the new value joins the siblings (a fresh key when 0).
        g.bench_with_input(
            BenchmarkId::new("add_sibling", siblings),
            &local,
            |b, local| {
                b.iter(|| {
                    Object::update(black_box(local.as_ref()), &empty, &me, Some(v.clone()), 1)
                })
            },
        );
        if siblings > 0 {
            // The context of a read: the new value replaces every sibling
            // (what a SET without CTX does, with the local clock).
            let ctx = local.as_ref().unwrap().clock.clone();
            g.bench_with_input(BenchmarkId::new("replace", siblings), &local, |b, local| {
                b.iter(|| Object::update(black_box(local.as_ref()), &ctx, &me, Some(v.clone()), 1))
            });
        }
    }
    g.finish();
}

/// An object of `n` siblings written by `actor(a)` (counters 1..=n), none
/// of which supersedes another.
fn disjoint(n: usize, a: usize) -> Object {
    let me = actor(a);
    let mut o = Object::default();
    for counter in 1..=n as u64 {
        let dot = Dot {
            actor: me.clone(),
            counter,
        };
        o.clock.add(&dot);
        o.siblings.push(Sibling {
            dot,
            value: Some(value(counter as usize)),
            written_ms: 0,
            expires_ms: None,
            counter: None,
        });
    }
    o
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("object/merge");
    // Equal copies: what most replication and read repair merges are.
    let one = with_siblings(1, 0).unwrap();
    g.bench_function("equal_1", |b| {
        b.iter(|| black_box(&one).merge(black_box(&one)))
    });
    // One replica saw a concurrent write the other did not.
    let two = Object::merge(&one, &with_siblings(1, 1).unwrap());
    assert_eq!(two.siblings.len(), 2);
    g.bench_function("1_vs_2", |b| {
        b.iter(|| black_box(&one).merge(black_box(&two)))
    });
    g.finish();

    // Two replicas that each took n writes the other never saw: the result
    // holds 2n siblings. Linear means the time per sibling stays flat.
    let mut g = c.benchmark_group("object/merge_disjoint");
    for n in [100usize, 250, 500] {
        let (a, b) = (disjoint(n, 0), disjoint(n, 1));
        assert_eq!(a.merge(&b).siblings.len(), 2 * n);
        g.throughput(Throughput::Elements(2 * n as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}+{n}")),
            &(&a, &b),
            |bch, (a, b)| bch.iter(|| black_box(*a).merge(black_box(*b))),
        );
    }
    // The same sizes merged with an identical copy (every dot on both sides).
    for n in [100usize, 500] {
        let a = disjoint(n, 0);
        let a2 = a.clone();
        g.throughput(Throughput::Elements(2 * n as u64));
        g.bench_with_input(BenchmarkId::new("equal", n), &(&a, &a2), |bch, (a, b)| {
            bch.iter(|| black_box(*a).merge(black_box(*b)))
        });
    }
    g.finish();
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("object/codec_100B");
    let o = with_siblings(1, 0).unwrap();
    let bytes = o.to_bytes();
    g.bench_function("to_bytes", |b| b.iter(|| black_box(&o).to_bytes()));
    g.bench_function("from_bytes", |b| {
        b.iter(|| Object::from_bytes(black_box(&bytes)).unwrap())
    });
    g.finish();
}

fn token(c: &mut Criterion) {
    use base64::Engine as _;
    let mut g = c.benchmark_group("token");
    let key = ContextKey::derive(b"a cluster secret", "bench");
    const KEY: &[u8] = b"key:000000001234";
    for actors in [3usize, 30] {
        let clock = clock(actors, 0);
        let text = key.encode(KEY, &clock);
        let token = Token::new(&text);
        assert_eq!(key.verify(KEY, &token).as_ref(), Ok(&clock));
        g.bench_with_input(BenchmarkId::new("encode", actors), &clock, |b, c| {
            b.iter(|| key.encode(black_box(KEY), black_box(c)))
        });
        g.bench_with_input(BenchmarkId::new("verify", actors), &token, |b, t| {
            b.iter(|| key.verify(black_box(KEY), black_box(t)).unwrap())
        });
        // For scale: the unauthenticated format of earlier versions,
        // base64url of msgpack `(key tag, clock)`, both ways.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        g.bench_with_input(BenchmarkId::new("plain_encode", actors), &clock, |b, c| {
            b.iter(|| b64.encode(rmp_serde::to_vec(&(7u32, black_box(c))).unwrap_or_default()))
        });
        let plain = b64.encode(rmp_serde::to_vec(&(7u32, &clock)).unwrap());
        g.bench_with_input(BenchmarkId::new("plain_decode", actors), &plain, |b, t| {
            b.iter(|| {
                let bytes = b64.decode(black_box(t)).unwrap();
                rmp_serde::from_slice::<(u32, VClock)>(&bytes).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = vclock, update, merge, codec, token
}
criterion_main!(benches);
