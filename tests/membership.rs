//! Elastic membership with real processes: nodes join and leave with their
//! data while clients write, a dead node is removed, and a transfer
//! survives a crash of the node receiving it and of one sending it.
//!
//! After each change the test waits for the layout to settle (RING says
//! `settled`), then checks that every acknowledged write reads back, that
//! sampled keys have N copies on their owners (REPLICAS), that the shares
//! are balanced and that the partitions moved are at most 1.2 times the
//! minimum a change needs.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, free_port, wait_until};
use distro_db::client::Client;
use distro_db::resp::Frame;

fn text(c: &Cluster, i: usize, cmd: &[&str]) -> String {
    let reply = c.cmd(i, cmd);
    reply
        .text()
        .unwrap_or_else(|| panic!("{cmd:?} on node {i}: {reply:?}"))
}

/// The layout version node `i` follows once it has settled.
fn settled(c: &Cluster, i: usize) -> Option<u64> {
    let Ok(mut client) = Client::connect(&c.nodes[i].addr()) else {
        return None;
    };
    let ring = client.call(&["RING"]).ok()?.text()?;
    let first = ring.lines().next()?;
    if !first.contains("settled") {
        return None;
    }
    first.split_whitespace().nth(2)?.parse().ok()
}

/// Waits until every running node follows the same settled layout of at
/// least `version`; returns it.
fn wait_settled(c: &mut Cluster, version: u64) -> u64 {
    let mut got = 0;
    let running: Vec<usize> = (0..c.nodes.len())
        .filter(|&i| c.nodes[i].running())
        .collect();
    wait_until(
        Duration::from_secs(120),
        "the layout change to be carried out",
        || {
            let v: Vec<Option<u64>> = running.iter().map(|&i| settled(c, i)).collect();
            match v.first().copied().flatten() {
                Some(first) if first >= version && v.iter().all(|x| *x == Some(first)) => {
                    got = first;
                    true
                }
                _ => false,
            }
        },
    );
    got
}

/// Partitions each member replicates, from RING on node `i`.
fn shares(c: &Cluster, i: usize) -> BTreeMap<String, usize> {
    text(c, i, &["RING"])
        .lines()
        .filter(|l| l.contains(" partitions ("))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let id = w.next()?.to_string();
            let n = w.find(|x| x.parse::<usize>().is_ok())?.parse().ok()?;
            Some((id, n))
        })
        .collect()
}

/// Partitions node `i` pulled since it started (STATUS, transfer worker).
fn pulled(c: &Cluster, i: usize) -> usize {
    text(c, i, &["STATUS"])
        .lines()
        .find_map(|l| l.strip_prefix("worker.transfer: idle; "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Clients writing unique keys through the given nodes until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Vec<String>, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = addrs
            .into_iter()
            .enumerate()
            .map(|(w, addr)| {
                let (stop, acked, tag) = (stop.clone(), acked.clone(), tag.to_string());
                std::thread::spawn(move || {
                    let mut client: Option<Client> = None;
                    for seq in 0..100_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let c = match client.as_mut() {
                            Some(c) => c,
                            None => match Client::connect_with(&addr, Duration::from_secs(5)) {
                                Ok(c) => client.insert(c),
                                Err(_) => {
                                    std::thread::sleep(Duration::from_millis(50));
                                    continue;
                                }
                            },
                        };
                        let key = format!("{tag}-{w}-{seq}");
                        let value = format!("v-{key}");
                        match c.call(&["SET", &key, &value]) {
                            Ok(f) if f == Frame::ok() => acked.lock().unwrap().push((key, value)),
                            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                            Err(_) => client = None,
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            threads,
        }
    }

    fn finish(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// Every acknowledged write reads back (MGET, R=2) through node `via`.
fn check_reads(c: &Cluster, via: usize, acked: &[(String, String)], label: &str) {
    let mut lost = Vec::new();
    for chunk in acked.chunks(200) {
        let mut args = vec!["MGET".to_string()];
        args.extend(chunk.iter().map(|(k, _)| k.clone()));
        let Frame::Array(values) = c.client(via).call(&args).expect("MGET") else {
            panic!("{label}: MGET answered no array");
        };
        for ((k, v), got) in chunk.iter().zip(values) {
            if got != Frame::Bulk(v.as_bytes().to_vec()) {
                lost.push(format!("{k}: {got:?}"));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{label}: {} of {} acknowledged writes unreadable, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// Sampled keys have a copy on each of their N owners.
fn check_copies(c: &Cluster, via: usize, acked: &[(String, String)], label: &str) {
    for (k, v) in acked.iter().step_by((acked.len() / 25).max(1)) {
        let report = text(c, via, &["REPLICAS", k]);
        let owners: Vec<&str> = report.lines().filter(|l| l.contains("(owner ")).collect();
        assert_eq!(owners.len(), 3, "{label}: {k}: {report}");
        for o in owners {
            assert!(
                o.contains(v.as_str()),
                "{label}: {k} missing on an owner: {report}"
            );
        }
    }
}

fn check_balance(c: &Cluster, via: usize, label: &str) -> BTreeMap<String, usize> {
    let s = shares(c, via);
    let mean = s.values().sum::<usize>() as f64 / s.len() as f64;
    for (id, n) in &s {
        assert!(
            (*n as f64 - mean).abs() <= mean * 0.1,
            "{label}: {id} holds {n} partitions, mean {mean}"
        );
    }
    s
}

#[test]
fn nodes_join_leave_and_are_removed_under_load_without_losing_a_write() {
    let mut c = Cluster::start(3);
    wait_settled(&mut c, 1);
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.port).collect();
    let load = Load::start(c.nodes.iter().map(|n| n.addr()).collect(), "grow");
    // Grow 3 -> 5: two nodes started together join in one change.
    let mut all_ports = ports.clone();
    let new: Vec<u16> = (0..2).map(|_| free_port()).collect();
    all_ports.extend(&new);
    for &p in &new {
        let node = c.spawn_node(p, &all_ports);
        c.nodes.push(node);
    }
    let v = wait_settled(&mut c, 2);
    let acked = load.finish();
    assert!(!acked.is_empty());
    check_reads(&c, 3, &acked, "after growing to 5");
    check_copies(&c, 4, &acked, "after growing to 5");
    let s = check_balance(&c, 0, "after growing to 5");
    assert_eq!(s.len(), 5);
    // The minimum: the newcomers' shares. Moved: what every node pulled.
    let minimum: usize = new.iter().map(|p| s[&format!("node-{p}")]).sum();
    let moved: usize = (0..5).map(|i| pulled(&c, i)).sum();
    eprintln!("grow 3 -> 5 (layout {v}): {moved} partition copies moved, minimum {minimum}");
    assert!(
        moved as f64 <= minimum as f64 * 1.2,
        "moved {moved}, minimum {minimum}"
    );

    // Shrink 5 -> 4 by LEAVE while clients write through the others.
    let load = Load::start((0..4).map(|i| c.nodes[i].addr()).collect(), "leave");
    let answer = c.cmd(4, &["LEAVE"]);
    assert!(
        matches!(&answer, Frame::Simple(s) if s.contains("is leaving")),
        "{answer:?}"
    );
    wait_until(Duration::from_secs(120), "the leaving node to stop", || {
        !c.nodes[4].running()
    });
    wait_settled(&mut c, v + 1);
    let mut acked2 = load.finish();
    acked2.extend(acked);
    check_reads(&c, 0, &acked2, "after a LEAVE");
    check_copies(&c, 1, &acked2, "after a LEAVE");
    let s = check_balance(&c, 2, "after a LEAVE");
    assert_eq!(s.len(), 4);

    // A node dies for good: REMOVE is refused while it is live, then
    // re-creates its copies on the others.
    let refused = c.cmd(0, &["REMOVE", &c.nodes[3].id.clone()]);
    assert!(
        matches!(&refused, Frame::Error(e) if e.contains("is live")),
        "{refused:?}"
    );
    assert!(
        matches!(c.cmd(0, &["REMOVE", "nobody"]), Frame::Error(e) if e.contains("unknown node"))
    );
    c.nodes[3].sigkill();
    let dead = c.nodes[3].id.clone();
    wait_until(
        Duration::from_secs(30),
        "the dead node to be seen down",
        || (0..3).all(|i| !common::live_nodes(&c.nodes[i].addr()).contains(&dead)),
    );
    let load = Load::start((0..3).map(|i| c.nodes[i].addr()).collect(), "remove");
    let answer = c.cmd(1, &["REMOVE", &dead]);
    assert!(
        matches!(&answer, Frame::Simple(s) if s.contains("will be removed")),
        "{answer:?}"
    );
    wait_settled(&mut c, v + 2);
    let mut acked3 = load.finish();
    acked3.extend(acked2);
    check_reads(&c, 2, &acked3, "after a REMOVE");
    check_copies(&c, 0, &acked3, "after a REMOVE");
    assert_eq!(check_balance(&c, 1, "after a REMOVE").len(), 3);
    // Fewer members than N is refused.
    let too_few = c.cmd(0, &["LEAVE"]);
    assert!(
        matches!(&too_few, Frame::Error(e) if e.contains("fewer than N")),
        "{too_few:?}"
    );
}

/// Node `i`'s transfer progress: (partitions held, partitions to pull),
/// while it pulls.
fn progress(c: &Cluster, i: usize) -> Option<(usize, usize)> {
    let mut client = Client::connect(&c.nodes[i].addr()).ok()?;
    let status = client.call(&["STATUS"]).ok()?.text()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("worker.transfer: layout "))?;
    let mut w = line.split_whitespace().skip(1);
    let held = w.next()?.parse().ok()?;
    let total = w.nth(1)?.parse().ok()?;
    Some((held, total))
}

#[test]
fn a_transfer_resumes_after_a_crash_of_the_receiver_and_of_a_sender() {
    // Paced at 1 MB/s so the crashes land in the middle of the transfer.
    let mut c = Cluster::start_durable(3, &["--transfer-mb-per-s", "1"]);
    let v1 = wait_settled(&mut c, 1);
    let value = "x".repeat(1000);
    let mut acked = Vec::new();
    let mut client = c.client(0);
    for i in 0..2500 {
        let key = format!("big-{i}");
        assert_eq!(client.call(&["SET", &key, &value]).unwrap(), Frame::ok());
        acked.push((key, value.clone()));
    }
    let mut ports: Vec<u16> = c.nodes.iter().map(|n| n.port).collect();
    ports.push(free_port());
    let node = c.spawn_node(ports[3], &ports);
    c.nodes.push(node);
    // The receiver crashes part-way and resumes from what it recorded.
    let mut seen = (0, 0);
    wait_until(
        Duration::from_secs(60),
        "the new node to be pulling",
        || {
            progress(&c, 3).is_some_and(|(held, total)| {
                seen = (held, total);
                held > 0 && held < total / 2
            })
        },
    );
    c.nodes[3].sigkill();
    c.restart(3);
    wait_until(
        Duration::from_secs(60),
        "the restarted node to resume",
        || {
            c.nodes[3].log_text().contains("resumed=")
                && progress(&c, 3).is_some_and(|(held, _)| held > 0)
        },
    );
    let resumed: usize = c.nodes[3]
        .log_text()
        .lines()
        .rev()
        .filter_map(|l| {
            l.split("resumed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next()
        .unwrap_or(0);
    eprintln!(
        "receiver crashed at {}/{} partitions; resumed with {resumed} held",
        seen.0, seen.1
    );
    assert!(
        resumed > 0,
        "the restarted receiver pulled everything again"
    );
    // A sender crashes too: the others serve its partitions, and the
    // change waits for it to come back.
    c.nodes[0].sigkill();
    wait_until(
        Duration::from_secs(60),
        "the transfer to go on without the sender",
        || {
            progress(&c, 3).is_some_and(|(held, total)| held > seen.0 && held < total)
                || settled(&c, 3).is_some()
        },
    );
    c.restart(0);
    let v2 = wait_settled(&mut c, v1 + 1);
    assert!(v2 > v1);
    check_reads(&c, 3, &acked, "after the crashes");
    check_copies(&c, 1, &acked, "after the crashes");
}

#[test]
fn a_member_restarted_at_another_address_is_followed_there() {
    let mut c = Cluster::start_durable(3, &[]);
    let v1 = wait_settled(&mut c, 1);
    assert_eq!(c.cmd(0, &["SET", "k", "v", "W=3"]), Frame::ok());
    let old_port = c.nodes[2].port;
    let id = c.nodes[2].id.clone();
    c.nodes[2].sigkill();
    let new_port = free_port();
    let ports: Vec<u16> = vec![c.nodes[0].port, c.nodes[1].port, new_port];
    let log = c.dir.path().join(format!("node-{new_port}.log"));
    let mut cmd = std::process::Command::new(common::db_bin());
    cmd.args(["node", "--listen", &format!("127.0.0.1:{new_port}")])
        .args(["--cluster-id", &c.cluster_id])
        .arg("--data-dir")
        .arg(c.data_dir(old_port));
    for p in &ports {
        cmd.arg("--seed").arg(format!("127.0.0.1:{p}"));
    }
    let child = common::checked(&mut cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("db starts");
    c.nodes[2] = common::NodeProc {
        port: new_port,
        id: id.clone(),
        child,
        log,
    };
    // The layout follows it to its new address; it keeps its id and data.
    wait_settled(&mut c, v1 + 1);
    let ring = text(&c, 0, &["RING"]);
    assert!(
        ring.contains(&format!("{id} 127.0.0.1:{new_port} member live")),
        "{ring}"
    );
    assert_eq!(c.cmd(2, &["GET", "k", "R=3"]), Frame::Bulk(b"v".to_vec()));
    assert_eq!(c.cmd(0, &["GET", "k", "R=3"]), Frame::Bulk(b"v".to_vec()));
}
