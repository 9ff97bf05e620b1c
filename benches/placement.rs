//! Placement micro-benchmarks (criterion): the cost of finding a key's
//! replicas. Measures `keyspace::partition_of` (hash a key to its
//! partition), `ClusterView::owners` (partition → preference list, one
//! index into the partition table) on views of 3, 10 and 50 members with
//! 1024 vnodes each, the old-style per-key `Ring::preference_list` walk on
//! the same rings for comparison, and building a `ClusterView` (ring plus
//! partition table) for 3, 10 and 50 members: the cost paid once per
//! membership change.
//!
//! Run: `cargo bench --bench placement` (short settings are built in;
//! criterion's `--warm-up-time` / `--measurement-time` override them).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use distro_db::cluster::ring::DEFAULT_VNODES;
use distro_db::cluster::{ClusterView, Ring};
use distro_db::keyspace;

// The allocator of the `db` binary, so allocation-heavy paths cost here what
// they cost in a node.
#[global_allocator]
static GLOBAL: distro_db::heap::Heap = distro_db::heap::Heap;

/// Cluster sizes measured.
const SIZES: [usize; 3] = [3, 10, 50];
/// Replicas per key (the default N).
const N: usize = 3;
/// Distinct keys cycled through, so look-ups do not all hit one cached
/// table row (a power of two, for a cheap wrap-around).
const KEYS: usize = 4096;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// Keys shaped like the ones `db bench` and `benches/compare.sh` use.
fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("key:{:012}", i * 7919).into_bytes())
        .collect()
}

fn members(n: usize) -> Vec<(String, SocketAddr)> {
    (0..n)
        .map(|i| {
            let port = 20000 + i as u16;
            (
                format!("node-{port}"),
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
        })
        .collect()
}

fn view(n: usize) -> ClusterView {
    let m = members(n);
    ClusterView::new(m.iter().map(|(id, addr)| (id.as_str(), *addr)), |_| true, N)
}

fn partition_of(c: &mut Criterion) {
    let keys = keys();
    let mut i = 0;
    c.bench_function("placement/partition_of", |b| {
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            keyspace::partition_of(black_box(&keys[i]))
        })
    });
}

fn owners_vs_ring_walk(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("placement/owners");
    for size in SIZES {
        let v = view(size);
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("table", size), &v, |b, v| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                // Sum the indexes so the slice is read, as a request would.
                v.owners(black_box(&keys[i]))
                    .iter()
                    .map(|&m| usize::from(m))
                    .sum::<usize>()
            })
        });
        let ring = Ring::new(members(size).iter().map(|(id, _)| id), DEFAULT_VNODES);
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("ring_walk", size), &ring, |b, ring| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                ring.preference_list(black_box(&keys[i]), N)
            })
        });
    }
    g.finish();
}

fn build_view(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement/build_view");
    // Milliseconds per iteration: few samples, flat sampling.
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for size in SIZES {
        let m = members(size);
        g.bench_with_input(BenchmarkId::from_parameter(size), &m, |b, m| {
            b.iter(|| {
                ClusterView::new(
                    m.iter().map(|(id, addr)| (id.as_str(), *addr)),
                    |_| true,
                    black_box(N),
                )
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = partition_of, owners_vs_ring_walk, build_view
}
criterion_main!(benches);
