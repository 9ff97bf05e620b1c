//! Concurrent clients: each thread does read-modify-writes (`VGET`, then
//! `SET k v CTX=<token>`) on keys shared by all clients, writing unique
//! values `c<client>-<seq>` through a rotating coordinator, and records
//! every operation in the history.
//!
//! Coordinator rule: client `c`'s op number `seq` goes to node
//! `(seq + c) % nodes`; a node the nemesis has marked faulty (killed or
//! stopped) is skipped for the next one, as a real client fails over. An op
//! that still reaches a faulty coordinator (the nemesis struck while it was
//! in flight) is recorded with its real outcome and flagged `coord_faulty`:
//! it is checked for loss like any other, but left out of availability.
//!
//! A read that fails on a pooled connection opened before a node restarted
//! is retried once on a new connection (reads are safe to repeat); a write
//! never is: its outcome is recorded as unknown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use distro_db::resp::Frame;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::conn::{CallError, Slot};
use super::history::{Op, Outcome};

/// The nodes the nemesis has currently killed or stopped (a bit per node).
#[derive(Default)]
pub struct Faulty(AtomicU32);

impl Faulty {
    pub fn mark(&self, i: usize) {
        self.0.fetch_or(1 << i, Ordering::SeqCst);
    }
    pub fn clear(&self, i: usize) {
        self.0.fetch_and(!(1 << i), Ordering::SeqCst);
    }
    pub fn clear_all(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
    pub fn contains(&self, i: usize) -> bool {
        self.0.load(Ordering::SeqCst) & (1 << i) != 0
    }
}

/// Pause between two operations of one client (keeps the 2-core test
/// machine responsive; about 4 × 40 ops/s in total).
const PACE: Duration = Duration::from_millis(20);

/// Running client threads.
pub struct Workload {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Vec<Op>>>,
}

impl Workload {
    /// Starts `clients` threads against `addrs` (one address per node).
    pub fn start(
        addrs: &[String],
        keys: &[String],
        clients: usize,
        seed: u64,
        faulty: Arc<Faulty>,
        t0: Instant,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..clients)
            .map(|client| {
                let ctx = ClientCtx {
                    client,
                    addrs: addrs.to_vec(),
                    keys: keys.to_vec(),
                    rng: StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(client as u64)),
                    faulty: faulty.clone(),
                    stop: stop.clone(),
                    t0,
                };
                std::thread::Builder::new()
                    .name(format!("client-{client}"))
                    .spawn(move || ctx.run())
                    .expect("spawn a client thread")
            })
            .collect();
        Workload { stop, handles }
    }

    /// Stops the clients (each finishes its operation in flight, bounded by
    /// the reply timeout) and returns the whole history.
    pub fn stop(mut self) -> Vec<Op> {
        self.stop.store(true, Ordering::SeqCst);
        let mut ops = Vec::new();
        for h in std::mem::take(&mut self.handles) {
            match h.join() {
                Ok(mut v) => ops.append(&mut v),
                Err(_) => panic!("a client thread panicked"),
            }
        }
        ops.sort_by_key(|o| (o.invoke_ms, o.client));
        ops
    }
}

impl Drop for Workload {
    /// A run that panics drops its clients unstopped: tell them to stop, so
    /// they do not keep writing while the next test runs.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct ClientCtx {
    client: usize,
    addrs: Vec<String>,
    keys: Vec<String>,
    rng: StdRng,
    faulty: Arc<Faulty>,
    stop: Arc<AtomicBool>,
    t0: Instant,
}

impl ClientCtx {
    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn run(mut self) -> Vec<Op> {
        let n = self.addrs.len();
        let mut slots: Vec<Slot> = self.addrs.iter().cloned().map(Slot::new).collect();
        let mut ops = Vec::new();
        let mut seq = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            seq += 1;
            let key = self.keys[self.rng.random_range(0..self.keys.len())].clone();
            let first = (seq as usize + self.client) % n;
            let coord = (0..n)
                .map(|d| (first + d) % n)
                .find(|&i| !self.faulty.contains(i))
                .unwrap_or(first);
            let mut op = Op {
                client: self.client,
                seq,
                key,
                coord,
                value: None,
                seen: Vec::new(),
                outcome: Outcome::Ok,
                coord_faulty: self.faulty.contains(coord),
                invoke_ms: self.ms(),
                complete_ms: 0,
            };
            op.outcome = self.rmw(&mut slots[coord], &mut op);
            op.coord_faulty |= self.faulty.contains(coord);
            op.complete_ms = self.ms();
            ops.push(op);
            std::thread::sleep(PACE);
        }
        ops
    }

    /// One read-modify-write; fills `op.seen` and `op.value`.
    fn rmw(&self, slot: &mut Slot, op: &mut Op) -> Outcome {
        let ctx = match slot.call_retrying_stale(&["VGET", &op.key]) {
            Ok(Frame::Array(items)) => {
                let mut items = items.into_iter();
                let Some(Frame::Bulk(ctx)) = items.next() else {
                    return Outcome::Fail("read: VGET answered no context".into());
                };
                for item in items {
                    match item {
                        Frame::Bulk(v) => op.seen.push(String::from_utf8_lossy(&v).into_owned()),
                        // A deleted sibling: this workload never deletes.
                        Frame::Null => op.seen.push("(deleted)".into()),
                        other => {
                            return Outcome::Fail(format!("read: unexpected sibling {other:?}"));
                        }
                    }
                }
                String::from_utf8_lossy(&ctx).into_owned()
            }
            Ok(Frame::Error(e)) => return Outcome::Fail(format!("read: {e}")),
            Ok(other) => return Outcome::Fail(format!("read: unexpected reply {other:?}")),
            Err(e) => return Outcome::Fail(format!("read: {e}")),
        };
        let value = format!("c{}-{}", self.client, op.seq);
        op.value = Some(value.clone());
        let ctx_arg = format!("CTX={ctx}");
        match slot.call(&["SET", &op.key, &value, &ctx_arg]) {
            Ok(Frame::Simple(s)) if s == "OK" => Outcome::Ok,
            Ok(Frame::Error(e)) if e.contains("write outcome unknown") => Outcome::Unknown(e),
            Ok(Frame::Error(e)) => Outcome::Fail(e),
            Ok(other) => Outcome::Unknown(format!("unexpected reply {other:?}")),
            Err(e @ CallError::NotSent(_)) => Outcome::Fail(e.to_string()),
            Err(e @ CallError::MaybeSent(_)) => Outcome::Unknown(e.to_string()),
        }
    }
}
