//! Storage benchmark (hand-written harness, prints a table): put throughput
//! per fsync policy with 1 and 64 writers, the machine's fdatasync rate, get
//! throughput and recovery time with 1M keys, key-directory bytes per key,
//! and (with `--features bench-reference`) the same puts/gets on redb.
//!
//! Run: `cargo bench --bench storage --features bench-reference`
//! (`BENCH_KEYS` overrides the 1M key count, `BENCH_RUNS` the 3 repetitions).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_db::storage::{FsyncPolicy, LogOptions, LogStore, Store};

const VALUE_LEN: usize = 100;

fn key(i: u64) -> [u8; 16] {
    // 16-byte keys: "k" + 15 digits.
    let mut k = [0u8; 16];
    k.copy_from_slice(format!("k{i:015}").as_bytes());
    k
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn opts(fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        fsync,
        compaction_interval: Duration::from_secs(3600),
        ..LogOptions::default()
    }
}

/// fdatasync calls per second on a file in `dir`, each after a 128-byte append.
fn fdatasync_rate(dir: &Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        f.write_all(&[7u8; 128]).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

/// Runs `writers` threads that together perform `total` puts via `put`;
/// returns puts per second.
fn run_writers(writers: u64, total: u64, put: Arc<dyn Fn(u64) + Send + Sync>) -> f64 {
    let per = total / writers;
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let put = put.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    put(t * per + i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (per * writers) as f64 / start.elapsed().as_secs_f64()
}

fn ours_put(policy: FsyncPolicy, writers: u64, total: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(LogStore::open(dir.path(), opts(policy)).unwrap());
    let v = [42u8; VALUE_LEN];
    let s2 = s.clone();
    run_writers(
        writers,
        total,
        Arc::new(move |i| s2.put(&key(i), &v).unwrap()),
    )
}

/// Random-order gets over `n` keys from `threads` threads; returns gets/s.
fn run_gets(n: u64, threads: u64, get: Arc<dyn Fn(u64) + Send + Sync>) -> f64 {
    let per = n.min(1_000_000) / threads;
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let get = get.clone();
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                for _ in 0..per {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    get(x % n);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    (per * threads) as f64 / start.elapsed().as_secs_f64()
}

fn fill(s: &LogStore, n: u64) {
    let v = [42u8; VALUE_LEN];
    for i in 0..n {
        s.put(&key(i), &v).unwrap();
    }
    s.sync().unwrap();
}

fn remove_hints(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[cfg(feature = "bench-reference")]
mod reference {
    use super::*;
    use redb::{Database, Durability, TableDefinition};

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

    pub fn open(dir: &Path) -> Arc<Database> {
        Arc::new(Database::create(dir.join("redb")).unwrap())
    }

    pub fn put(db: &Database, durability: Durability, k: &[u8], v: &[u8]) {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(durability);
        tx.open_table(T).unwrap().insert(k, v).unwrap();
        tx.commit().unwrap();
    }

    pub fn put_bench(durability: Durability, writers: u64, total: u64) -> f64 {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let v = [42u8; VALUE_LEN];
        run_writers(
            writers,
            total,
            Arc::new(move |i| put(&db, durability, &key(i), &v)),
        )
    }

    pub fn fill(db: &Database, n: u64) {
        let v = [42u8; VALUE_LEN];
        let mut i = 0;
        while i < n {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(T).unwrap();
                for j in i..(i + 10_000).min(n) {
                    t.insert(&key(j)[..], &v[..]).unwrap();
                }
            }
            tx.commit().unwrap();
            i += 10_000;
        }
    }

    pub fn get(db: &Database, k: &[u8]) -> Option<Vec<u8>> {
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        t.get(k).unwrap().map(|g| g.value().to_vec())
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too. Only
    // run when invoked as a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env("BENCH_KEYS", 1_000_000);
    let runs = env("BENCH_RUNS", 3) as usize;
    let tmp = tempfile::tempdir().unwrap();
    let fsync_rate = median((0..runs).map(|_| fdatasync_rate(tmp.path())).collect());
    println!("## distro-db storage benchmark ({runs} runs each, medians)");
    println!();
    println!("fdatasync rate on this disk: {fsync_rate:.0} /s");
    println!();
    println!("| workload | ours (ops/s) | reference (ops/s) | ours / reference |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, ours: f64, theirs: Option<f64>| match theirs {
        Some(t) => println!("| {name} | {ours:.0} | {t:.0} | {:.2}x |", ours / t),
        None => println!("| {name} | {ours:.0} | n/a | |"),
    };

    // Put throughput per policy. Op counts are sized for ~1 s per run.
    let always1 = (fsync_rate * 1.0).max(200.0) as u64;
    let cases: [(&str, FsyncPolicy, u64, u64); 6] = [
        ("put, always, 1 writer", FsyncPolicy::Always, 1, always1),
        ("put, always, 64 writers", FsyncPolicy::Always, 64, 64 * 500),
        (
            "put, interval:10, 1 writer",
            FsyncPolicy::Interval(Duration::from_millis(10)),
            1,
            200_000,
        ),
        (
            "put, interval:10, 64 writers",
            FsyncPolicy::Interval(Duration::from_millis(10)),
            64,
            200_000,
        ),
        ("put, never, 1 writer", FsyncPolicy::Never, 1, 200_000),
        ("put, never, 64 writers", FsyncPolicy::Never, 64, 200_000),
    ];
    let mut always64 = 0.0;
    for (name, policy, writers, total) in cases {
        let ours = median(
            (0..runs)
                .map(|_| ours_put(policy, writers, total))
                .collect(),
        );
        if name == "put, always, 64 writers" {
            always64 = ours;
        }
        #[cfg(feature = "bench-reference")]
        let theirs = {
            use redb::Durability;
            let d = match policy {
                FsyncPolicy::Always => Some(Durability::Immediate),
                FsyncPolicy::Never => Some(Durability::None),
                FsyncPolicy::Interval(_) => None,
            };
            d.map(|d| {
                // redb serialises write transactions, so a quarter of the ops keeps runs short.
                let total = total / 4;
                median(
                    (0..runs)
                        .map(|_| reference::put_bench(d, writers, total.max(writers)))
                        .collect(),
                )
            })
        };
        #[cfg(not(feature = "bench-reference"))]
        let theirs = None;
        row(name, ours, theirs);
    }

    // Gets with n keys.
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(LogStore::open(dir.path(), opts(FsyncPolicy::Never)).unwrap());
    let t = Instant::now();
    fill(&s, n);
    let load_s = t.elapsed().as_secs_f64();
    for threads in [1u64, 2] {
        let s2 = s.clone();
        let ours = median(
            (0..runs)
                .map(|_| {
                    let s2 = s2.clone();
                    run_gets(
                        n,
                        threads,
                        Arc::new(move |i| {
                            s2.get(&key(i)).unwrap().unwrap();
                        }),
                    )
                })
                .collect(),
        );
        #[cfg(feature = "bench-reference")]
        let theirs = {
            let rdir = tempfile::tempdir().unwrap();
            let db = reference::open(rdir.path());
            reference::fill(&db, n);
            Some(median(
                (0..runs)
                    .map(|_| {
                        let db = db.clone();
                        run_gets(
                            n,
                            threads,
                            Arc::new(move |i| {
                                reference::get(&db, &key(i)).unwrap();
                            }),
                        )
                    })
                    .collect(),
            ))
        };
        #[cfg(not(feature = "bench-reference"))]
        let theirs = None;
        row(&format!("get, {n} keys, {threads} thread(s)"), ours, theirs);
    }
    let heap = s.keydir_heap_bytes() as f64;
    let per_key = heap / n as f64 - 16.0;
    println!();
    println!("load of {n} keys (fsync never): {load_s:.2} s");
    println!(
        "key directory: {:.1} MiB heap for {n} keys = {per_key:.1} bytes/key beyond the 16-byte key",
        heap / (1 << 20) as f64
    );
    println!(
        "group commit: `always` with 64 writers = {:.1}x the fdatasync rate",
        always64 / fsync_rate
    );

    // Recovery.
    s.compact_now().unwrap(); // writes hints for every closed segment
    drop(s);
    let with_hints = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let s = LogStore::open(dir.path(), opts(FsyncPolicy::Never)).unwrap();
                let e = t.elapsed().as_secs_f64();
                assert_eq!(s.status().keys, n);
                s.compact_now().unwrap();
                e
            })
            .collect(),
    );
    let without = median(
        (0..runs)
            .map(|_| {
                remove_hints(dir.path());
                let t = Instant::now();
                let s = LogStore::open(dir.path(), opts(FsyncPolicy::Never)).unwrap();
                let e = t.elapsed().as_secs_f64();
                assert_eq!(s.status().keys, n);
                e
            })
            .collect(),
    );
    println!(
        "recovery of {n} keys: {with_hints:.3} s with hints, {without:.3} s without (warm page cache)"
    );
}
