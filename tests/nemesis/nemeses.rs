//! The nemeses: each breaks the running cluster in one way, holds the fault
//! for a while, heals it and waits until the cluster sees every node live
//! again. Faults are real (SIGKILL, SIGSTOP) or injected with `FAULT`
//! commands (`--fault-injection`). Every wait is bounded; the only sleeps
//! pace the schedule ("keep the node stopped for 2 s").
//!
//! [`Env::random_step`] draws one nemesis with random victims and durations
//! from the run's seeded RNG: the soak test chains them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_db::resp::Frame;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::common::{Cluster, live_nodes, wait_until};
use super::conn::call_once;
use super::history::Op;
use super::workload::{Faulty, Workload};

/// How long the failure detector may take to mark a silent node down (or
/// see a healed one live) before the run is declared broken.
const DETECT_BOUND: Duration = Duration::from_secs(20);

/// A running cluster, its nemesis state and the schedule's RNG.
pub struct Env {
    pub cluster: Cluster,
    pub faulty: Arc<Faulty>,
    pub rng: StdRng,
    pub t0: Instant,
    /// What the nemesis did, with times: printed with the summary.
    pub events: Vec<String>,
    /// Nodes currently SIGSTOPped.
    stopped: BTreeSet<usize>,
    /// The clients, while they run.
    workload: Option<Workload>,
    /// Their history, once stopped.
    ops: Vec<Op>,
    /// Stop the clients just before the next heal (see
    /// [`Env::stop_clients_before_next_heal`]).
    stop_before_heal: bool,
    /// When the fault was undone after the clients stopped: the start of
    /// the time to converge.
    pub healed_at: Option<Instant>,
}

impl Env {
    pub fn new(
        cluster: Cluster,
        workload: Workload,
        faulty: Arc<Faulty>,
        rng: StdRng,
        t0: Instant,
    ) -> Env {
        Env {
            cluster,
            faulty,
            rng,
            t0,
            events: Vec::new(),
            stopped: BTreeSet::new(),
            workload: Some(workload),
            ops: Vec::new(),
            stop_before_heal: false,
            healed_at: None,
        }
    }

    /// Makes the next heal stop the clients first, while the fault is still
    /// in force: convergence after healing is then the work of hinted
    /// handoff and anti-entropy alone, not of the clients' reads (which
    /// repair what they read).
    pub fn stop_clients_before_next_heal(&mut self) {
        self.stop_before_heal = true;
    }

    /// Called by every nemesis right before it undoes its fault.
    fn before_heal(&mut self) {
        if self.stop_before_heal && self.workload.is_some() {
            self.stop_clients();
            self.healed_at = Some(Instant::now());
        }
        self.stop_before_heal = false;
    }

    /// Stops the clients if they still run (the time to converge then
    /// starts now) and returns the history.
    pub fn stop_clients(&mut self) -> Vec<Op> {
        if let Some(w) = self.workload.take() {
            self.ops = w.stop();
            self.event(format!(
                "clients stopped after {} operations",
                self.ops.len()
            ));
            self.healed_at.get_or_insert_with(Instant::now);
        }
        self.ops.clone()
    }

    pub fn n(&self) -> usize {
        self.cluster.nodes.len()
    }

    pub fn addr(&self, i: usize) -> String {
        self.cluster.nodes[i].addr()
    }

    pub fn id(&self, i: usize) -> String {
        self.cluster.nodes[i].id.clone()
    }

    /// Records one event of the schedule.
    pub fn event(&mut self, what: impl Into<String>) {
        let line = format!("[{:>6} ms] {}", self.t0.elapsed().as_millis(), what.into());
        eprintln!("nemesis: {line}");
        self.events.push(line);
    }

    /// Sends `FAULT <args>` to node `i`; the node must accept it.
    fn fault(&self, i: usize, args: &[&str]) {
        let mut cmd = vec!["FAULT"];
        cmd.extend_from_slice(args);
        match call_once(&self.addr(i), &cmd) {
            Ok(Frame::Simple(s)) if s == "OK" => {}
            other => panic!("node{i} refused {cmd:?}: {other:?}"),
        }
    }

    /// Waits until every node of `observers` sees none of `targets` live.
    fn wait_seen_down(&self, observers: &[usize], targets: &[usize]) -> Duration {
        let start = Instant::now();
        let ids: Vec<String> = targets.iter().map(|&t| self.id(t)).collect();
        for &o in observers {
            let addr = self.addr(o);
            wait_until(
                DETECT_BOUND,
                "the failure detector to see the fault",
                || {
                    let live = live_nodes(&addr);
                    ids.iter().all(|id| !live.contains(id))
                },
            );
        }
        start.elapsed()
    }

    /// Waits until every running node sees every running node live.
    fn wait_all_live(&mut self) -> Duration {
        let start = Instant::now();
        self.cluster.wait_converged();
        start.elapsed()
    }

    fn others(&self, of: &[usize]) -> Vec<usize> {
        (0..self.n()).filter(|i| !of.contains(i)).collect()
    }

    /// SIGKILL node `victim`, keep it down for `down`, restart it on its data
    /// directory and wait until the cluster sees it live.
    pub fn kill_restart(&mut self, victim: usize, down: Duration) {
        self.faulty.mark(victim);
        self.cluster.nodes[victim].sigkill();
        self.event(format!("kill -9 node{victim} ({})", self.id(victim)));
        std::thread::sleep(down);
        self.before_heal();
        self.cluster.restart(victim);
        self.event(format!("restarted node{victim}"));
        let t = self.wait_all_live();
        self.event(format!("node{victim} seen live by all after {t:?}"));
        self.faulty.clear(victim);
    }

    /// SIGSTOP node `victim` until every other node marked it down, then
    /// `extra` longer; SIGCONT, and wait until it is seen live again.
    pub fn pause(&mut self, victim: usize, extra: Duration) {
        self.faulty.mark(victim);
        self.cluster.nodes[victim].signal("STOP");
        self.stopped.insert(victim);
        self.event(format!("SIGSTOP node{victim}"));
        let others = self.others(&[victim]);
        let t = self.wait_seen_down(&others, &[victim]);
        self.event(format!(
            "node{victim} marked down by all others after {t:?}"
        ));
        std::thread::sleep(extra);
        self.before_heal();
        self.cluster.nodes[victim].signal("CONT");
        self.stopped.remove(&victim);
        self.event(format!("SIGCONT node{victim}"));
        let t = self.wait_all_live();
        self.event(format!("node{victim} seen live by all after {t:?}"));
        self.faulty.clear(victim);
    }

    /// Cuts every node of `a` from every node of `b` (rules on the `a` side
    /// cut both directions), waits until each side sees the other down,
    /// holds for `hold`, heals.
    pub fn partition(&mut self, a: &[usize], b: &[usize], hold: Duration) {
        let b_ids: Vec<String> = b.iter().map(|&i| self.id(i)).collect();
        for &i in a {
            let mut args = vec!["PARTITION"];
            args.extend(b_ids.iter().map(String::as_str));
            self.fault(i, &args);
        }
        self.event(format!("partition {a:?} | {b:?}"));
        let t1 = self.wait_seen_down(a, b);
        let t2 = self.wait_seen_down(b, a);
        self.event(format!(
            "each side sees the other down after {:?}",
            t1.max(t2)
        ));
        std::thread::sleep(hold);
        self.heal_faults();
    }

    /// A bridge partition: `left` and `right` cannot talk to each other, but
    /// both talk to `bridge`. Gossip is transitive, so nobody is marked down;
    /// RPC across the cut times out. Holds for `hold`, heals.
    pub fn bridge(&mut self, left: &[usize], bridge: usize, right: &[usize], hold: Duration) {
        let right_ids: Vec<String> = right.iter().map(|&i| self.id(i)).collect();
        for &i in left {
            let mut args = vec!["PARTITION"];
            args.extend(right_ids.iter().map(String::as_str));
            self.fault(i, &args);
        }
        self.event(format!(
            "bridge partition {left:?} | node{bridge} | {right:?}"
        ));
        std::thread::sleep(hold);
        self.heal_faults();
    }

    /// Packet loss and delay: on each node of `on`, every message to or from
    /// each node of `peers` is dropped with `loss_pct` % and delayed by
    /// `delay_ms`. Holds for `hold`, heals.
    pub fn lossy(
        &mut self,
        on: &[usize],
        peers: &[usize],
        loss_pct: u8,
        delay_ms: u64,
        hold: Duration,
    ) {
        let (loss, delay) = (loss_pct.to_string(), delay_ms.to_string());
        for &i in on {
            for &p in peers {
                if p == i {
                    continue;
                }
                let id = self.id(p);
                self.fault(i, &["LOSS", &id, &loss]);
                self.fault(i, &["DELAY", &id, &delay]);
            }
        }
        self.event(format!(
            "loss {loss_pct}% + delay {delay_ms} ms on {on:?} towards {peers:?}"
        ));
        std::thread::sleep(hold);
        self.heal_faults();
    }

    /// `FAULT HEAL` on every node, then waits until all see all live.
    pub fn heal_faults(&mut self) {
        self.before_heal();
        for i in 0..self.n() {
            if !self.stopped.contains(&i) && self.cluster.nodes[i].running() {
                self.fault(i, &["HEAL"]);
            }
        }
        self.event("heal");
        let t = self.wait_all_live();
        self.event(format!("all nodes see all live after {t:?}"));
    }

    /// Undoes whatever is still broken: continues stopped nodes, restarts
    /// dead ones, heals injected faults.
    pub fn heal_all(&mut self) {
        self.before_heal();
        self.event("final heal (safety net: CONT, restart, FAULT HEAL everywhere)");
        for i in std::mem::take(&mut self.stopped) {
            self.cluster.nodes[i].signal("CONT");
        }
        for i in 0..self.n() {
            if !self.cluster.nodes[i].running() {
                self.cluster.restart(i);
            }
        }
        self.heal_faults();
        self.faulty.clear_all();
    }

    /// A gap between two faults, 1–3 s.
    pub fn gap(&mut self) {
        let ms = self.rng.random_range(1000..3000);
        std::thread::sleep(Duration::from_millis(ms));
    }

    /// One random nemesis step (the soak's schedule), drawn from the seeded
    /// RNG: which fault, which nodes, how long.
    pub fn random_step(&mut self) {
        let n = self.n();
        let mut nodes: Vec<usize> = (0..n).collect();
        nodes.shuffle(&mut self.rng);
        let hold = Duration::from_millis(self.rng.random_range(2000..8000));
        match self.rng.random_range(0..5) {
            0 => self.kill_restart(nodes[0], hold),
            1 => self.pause(nodes[0], hold / 2),
            2 => {
                let k = self.rng.random_range(1..=(n - 1) / 2);
                let (a, b) = nodes.split_at(k);
                self.partition(a, b, hold);
            }
            3 => {
                let half = (n - 1) / 2;
                let (left, rest) = nodes.split_at(half);
                let (bridge, right) = rest.split_first().expect("at least 3 nodes");
                self.bridge(left, *bridge, right, hold);
            }
            _ => {
                let loss = self.rng.random_range(5..40u8);
                let delay = self.rng.random_range(10..200u64);
                if self.rng.random_bool(0.5) {
                    self.lossy(&nodes[..1], &nodes, loss, delay, hold);
                } else {
                    self.lossy(&nodes, &nodes, loss / 4, delay / 4, hold);
                }
            }
        }
        self.gap();
    }
}
