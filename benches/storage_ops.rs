//! Storage micro-benchmarks (criterion): the cost of one store operation,
//! as the replica layer calls it. Measures `Store::append` (an overwrite)
//! and `Store::get` of 100-byte values with 100k keys loaded (and, for the
//! memory store, with 1k keys, which fit in the CPU caches), on the
//! `MemoryStore` and on a `LogStore` with `FsyncPolicy::Never` in a temp
//! directory (so the log figures are CPU, `pwrite` and `pread` against the
//! page cache, no disk wait); and `append` followed by `wait_durable` on a
//! `LogStore` with `FsyncPolicy::Always` and a single writer, which waits
//! for one `fdatasync` per write and so measures the disk, next to a bare
//! 128-byte write + `fdatasync` probe on the same directory for scale.
//! Throughput is reported in operations per second.
//!
//! `benches/storage.rs` measures the same engine with many writers, 1M keys
//! and recovery; this file gives per-operation figures on a smaller data set.
//!
//! Run: `cargo bench --bench storage_ops`.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use distro_db::storage::{FsyncPolicy, LogOptions, LogStore, MemoryStore, Store};

// The allocator of the `db` binary, so allocation-heavy paths cost here what
// they cost in a node.
#[global_allocator]
static GLOBAL: distro_db::heap::Heap = distro_db::heap::Heap;

const VALUE_LEN: usize = 100;
/// Keys loaded before measuring.
const KEYS: u64 = 100_000;
/// A key count whose whole store fits in the CPU caches, to show what the
/// 100k-key figures spend on cache misses (memory store only).
const FEW_KEYS: u64 = 1_000;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// Keys shaped like the ones `db bench` and `benches/compare.sh` use
/// (16 bytes).
fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

fn opts(fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        fsync,
        // No compaction or hint writing while measuring.
        compaction_interval: Duration::from_secs(3600),
        ..LogOptions::default()
    }
}

/// An endless pseudo-random walk over the loaded keys (xorshift), so gets
/// and overwrites do not run in insertion order. Each key is written into
/// one reused buffer, so the walk itself touches no memory a store would
/// not (a table of 100k keys would add cache misses of its own).
struct KeyWalk {
    buf: [u8; 16],
    x: u64,
    keys: u64,
}

impl KeyWalk {
    /// A walk over keys `0..keys`.
    fn new(keys: u64) -> KeyWalk {
        let mut buf = [0u8; 16];
        buf[..4].copy_from_slice(b"key:");
        KeyWalk {
            buf,
            x: 0x9E37_79B9_7F4A_7C15,
            keys,
        }
    }

    /// The next key: `key:` and 12 digits, as [`key`] formats it.
    fn next(&mut self) -> &[u8] {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        let mut i = self.x % self.keys;
        for d in self.buf[4..].iter_mut().rev() {
            *d = b'0' + (i % 10) as u8;
            i /= 10;
        }
        &self.buf
    }
}

fn load(store: &dyn Store, keys: u64) {
    let v = [b'v'; VALUE_LEN];
    for i in 0..keys {
        store.append(&key(i), &v).unwrap();
    }
}

/// `append` (an overwrite) and `get` of 100-byte values on a fresh store
/// from `open` with each of `key_counts` keys loaded.
fn append_and_get<S: Store>(
    c: &mut Criterion,
    name: &str,
    key_counts: &[u64],
    open: impl Fn() -> S,
) {
    let v = [b'w'; VALUE_LEN];
    let mut g = c.benchmark_group(format!("store/{name}"));
    g.throughput(Throughput::Elements(1));
    for &keys in key_counts {
        let store = open();
        load(&store, keys);
        let mut walk = KeyWalk::new(keys);
        g.bench_function(BenchmarkId::new("append_100B", keys), |b| {
            b.iter(|| store.append(walk.next(), black_box(&v)).unwrap())
        });
        g.bench_function(BenchmarkId::new("get_100B", keys), |b| {
            b.iter(|| store.get(walk.next()).unwrap().unwrap())
        });
    }
    g.finish();
}

fn memory(c: &mut Criterion) {
    append_and_get(c, "memory", &[FEW_KEYS, KEYS], MemoryStore::new);
}

fn log_never(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    append_and_get(c, "log_never", &[KEYS], || {
        LogStore::open(dir.path(), opts(FsyncPolicy::Never)).unwrap()
    });
}

fn log_always(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    let v = [b'w'; VALUE_LEN];
    let mut i = 0u64;
    let mut g = c.benchmark_group("store/log_always");
    // One fdatasync per iteration (~0.1-1 ms): few samples, flat sampling.
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat);
    g.bench_function("append_wait_durable_1_writer", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let lsn = store.append(&key(i), black_box(&v)).unwrap();
            store.wait_durable(lsn).unwrap();
        })
    });
    // The disk's own rate in the same directory, for scale: a 128-byte
    // write and an fdatasync, as a lone `always` writer's commit does.
    let probe = dir.path().join("fdatasync-probe");
    let mut file = std::fs::File::create(&probe).unwrap();
    g.bench_function("fdatasync_128B_probe", |b| {
        b.iter(|| {
            file.write_all(black_box(&[7u8; 128])).unwrap();
            file.sync_data().unwrap();
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = memory, log_never, log_always
}
criterion_main!(benches);
