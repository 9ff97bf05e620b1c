//! Lifecycle and data, with real node processes on loopback: a SIGTERM
//! restart of every node in turn loses no acknowledged write and exits 0;
//! `db backup` while clients write and `db restore` into a new node; a
//! damaged backup is refused; an old backup restored into a running cluster
//! neither brings deleted keys back nor loses newer writes; `db dump` →
//! `db load` round-trips values and siblings, resumes, and merges by clock.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use distro_db::client::Client;
use distro_db::resp::Frame;

/// Runs `db ARGS` to completion (killed after `within`); its output.
fn run_db(args: &[&str], within: Duration) -> Output {
    let mut child = Command::new(db_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("db runs");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "db {args:?} did not finish within {within:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `db backup --connect ADDR --out DIR`.
fn run_backup(addr: &str, out: &str) -> Output {
    run_db(
        &["backup", "--connect", addr, "--out", out],
        Duration::from_secs(30),
    )
}

/// `db restore --from DIR --data-dir DIR`.
fn run_restore(from: &str, data_dir: &str) -> Output {
    run_db(
        &["restore", "--from", from, "--data-dir", data_dir],
        Duration::from_secs(30),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Client threads writing unique keys (W=2) round-robin over `addrs`,
/// recording what was acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(addrs: Vec<String>, clients: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..clients)
            .map(|t| {
                let (stop, acked, addrs) = (stop.clone(), acked.clone(), addrs.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<Client> = None;
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let addr = &addrs[(seq as usize + t) % addrs.len()];
                        let (key, value) = (format!("w{t}-{seq}"), format!("v{t}-{seq}"));
                        let c = match Client::connect_with(addr, Duration::from_secs(10)) {
                            Ok(c) => conn.insert(c),
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                        };
                        if let Ok(Frame::Simple(s)) = c.call(&["SET", &key, &value, "W=2"])
                            && s == "OK"
                        {
                            acked.lock().unwrap().insert(key, value);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        self.acked.lock().unwrap().clone()
    }

    fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread");
        }
        self.acked.lock().unwrap().clone()
    }
}

/// Reads every key of `expect` through `addr` (MGET, `R=r` not possible
/// there, so GET with R=r) and returns the keys whose value differs.
fn missing(addr: &str, expect: &BTreeMap<String, String>, r: usize) -> Vec<String> {
    let mut c = Client::connect(addr).expect("connect");
    let r = format!("R={r}");
    expect
        .iter()
        .filter(|(k, v)| c.call(&["GET", k.as_str(), &r]).ok() != Some(bulk(v)))
        .map(|(k, _)| k.clone())
        .collect()
}

fn wait_exit(node: &mut NodeProc, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = node.child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} did not exit within {within:?} after SIGTERM", node.id);
}

#[test]
fn sigterm_restart_of_every_node_in_turn_loses_no_acknowledged_write() {
    let mut c = Cluster::start_durable(3, &[]);
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr()).collect();
    let writers = Writers::start(addrs.clone(), 3);
    for i in 0..3 {
        let before = writers.count();
        wait_until(Duration::from_secs(20), "writes before the stop", || {
            writers.count() >= before + 30
        });
        let peer = addrs[(i + 1) % 3].clone();
        let id = c.nodes[i].id.clone();
        let sent = Instant::now();
        c.nodes[i].signal("TERM");
        // A stopping node gossips `stopping`: the peers stop counting it as
        // live long before the failure detector would.
        wait_until(Duration::from_secs(10), "a peer to see the stop", || {
            !live_nodes(&peer).contains(&id)
        });
        let noticed = sent.elapsed();
        let status = wait_exit(&mut c.nodes[i], Duration::from_secs(20));
        let exited = sent.elapsed();
        eprintln!(
            "{id}: peer saw it stop after {noticed:?}, exited after {exited:?} with {status}"
        );
        assert!(status.success(), "{id} exited with {status}");
        assert!(
            noticed < Duration::from_millis(2000),
            "the peer took {noticed:?} to see {id} stop"
        );
        c.restart(i);
        assert!(
            c.nodes[i]
                .log_text()
                .contains("clean restart: keeping the vector-clock epoch"),
            "{id} did not find its clean-stop marker"
        );
        c.wait_converged();
    }
    let acked = writers.stop();
    eprintln!("{} writes acknowledged across the restarts", acked.len());
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let lost = missing(&addrs[0], &acked, 2);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Every value `key` holds through `addr` (VGET, R=r), sorted.
fn siblings(addr: &str, key: &str, r: usize) -> Vec<Vec<u8>> {
    let mut c = Client::connect(addr).expect("connect");
    match c.call(&["VGET", key, &format!("R={r}")]).expect("VGET") {
        Frame::Array(items) => {
            let mut v: Vec<Vec<u8>> = items
                .into_iter()
                .skip(1)
                .filter_map(|f| match f {
                    Frame::Bulk(b) => Some(b),
                    _ => None,
                })
                .collect();
            v.sort();
            v
        }
        Frame::Null => Vec::new(),
        other => panic!("VGET {key}: {other:?}"),
    }
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_backup_taken_while_writing_restores_into_a_new_node_and_a_damaged_one_is_refused() {
    let mut c = Cluster::start_durable(3, &["--segment-size", "16K", "--aae-interval-ms", "300"]);
    // Every write goes through node 0: it acts for each (3 nodes, N=3), so
    // its store holds every write acknowledged before the snapshot.
    let writers = Writers::start(vec![c.nodes[0].addr()], 2);
    wait_until(Duration::from_secs(20), "writes", || writers.count() >= 200);
    let before = writers.snapshot();
    let backup = c.dir.path().join("backup");
    let out = run_backup(&c.nodes[0].addr(), backup.to_str().unwrap());
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    assert!(stderr(&out).contains("backed up node-"), "{}", stderr(&out));
    let during = writers.stop();
    assert!(
        during.len() > before.len(),
        "writes went on during the backup"
    );
    // The backup holds more than one segment (16 KiB segments).
    let segs = std::fs::read_dir(backup.join("store"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segs > 1, "{segs} segments");
    // A second backup into the same directory is refused.
    let again = run_backup(&c.nodes[0].addr(), backup.to_str().unwrap());
    assert!(
        !again.status.success() && stderr(&again).contains("not empty"),
        "{}",
        stderr(&again)
    );

    // A damaged copy is refused with the file named, and nothing is made.
    let damaged = c.dir.path().join("damaged");
    copy_dir(&backup, &damaged);
    let seg = std::fs::read_dir(damaged.join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    flip_a_byte(&seg);
    let target = c.dir.path().join("restored-bad");
    let out = run_restore(damaged.to_str().unwrap(), target.to_str().unwrap());
    let err = stderr(&out);
    assert!(!out.status.success(), "a damaged backup was restored");
    assert!(
        err.contains("checksum") && err.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(
        !target.exists(),
        "a refused restore left {}",
        target.display()
    );
    // So is a wrong path.
    let out = run_restore("/nonexistent/backup", target.to_str().unwrap());
    assert!(
        !out.status.success() && stderr(&out).contains("no MANIFEST"),
        "{}",
        stderr(&out)
    );

    // Restore into a new data directory. What it holds is the backup:
    // every write acknowledged before the backup started is in its store.
    let restored = c.dir.path().join("restored");
    let out = run_restore(backup.to_str().unwrap(), restored.to_str().unwrap());
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    {
        let store = distro_db::storage::LogStore::open(
            &restored.join("store"),
            distro_db::storage::LogOptions::default(),
        )
        .expect("the restored store opens");
        let lost: Vec<&String> = before
            .iter()
            .filter(|(k, v)| {
                let obj = distro_db::replica::load_object(&store, k.as_bytes())
                    .expect("readable")
                    .map(|(_, o)| o);
                !obj.is_some_and(|o| o.values().contains(&v.as_bytes()))
            })
            .map(|(k, _)| k)
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} writes acknowledged before the backup are not in it: {:?}",
            lost.len(),
            before.len(),
            &lost[..lost.len().min(10)]
        );
    }
    // A new node on it, in place of node 0 (same port): it takes a new
    // epoch, answers no read from its old copies until anti-entropy has
    // compared them with its peers', then has every write.
    c.nodes[0].signal("TERM");
    assert!(wait_exit(&mut c.nodes[0], Duration::from_secs(20)).success());
    let data0 = c.data_dir(c.nodes[0].port);
    std::fs::remove_dir_all(&data0).unwrap();
    std::fs::rename(&restored, &data0).unwrap();
    c.restart(0);
    assert!(
        c.nodes[0]
            .log_text()
            .contains("restored from a backup of node-"),
        "no new epoch for the restored store"
    );
    let a0 = c.nodes[0].addr();
    wait_until(
        Duration::from_secs(30),
        "the restored node to catch up",
        || !status(&a0).contains("restored:"),
    );
    assert!(!data0.join("store/RESTORED").exists());
    let lost = missing(&a0, &during, 1);
    assert!(
        lost.is_empty(),
        "{} writes missing after catching up: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

/// STATUS of the node at `addr`.
fn status(addr: &str) -> String {
    match Client::connect(addr).and_then(|mut c| c.call(&["STATUS"])) {
        Ok(f) => f.text().unwrap_or_else(|| panic!("STATUS: {f:?}")),
        Err(e) => panic!("STATUS: {e}"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

#[test]
fn an_old_backup_restored_into_a_running_cluster_brings_back_no_delete_and_loses_no_newer_write() {
    let mut c = Cluster::start_durable(3, &["--aae-interval-ms", "300"]);
    let set = |c: &Cluster, k: &str, v: &str| {
        assert_eq!(c.cmd(0, &["SET", k, v, "W=3"]), Frame::ok(), "SET {k}");
    };
    for i in 0..40 {
        set(&c, &format!("k{i}"), "old");
    }
    let backup = c.dir.path().join("backup");
    let out = run_backup(&c.nodes[1].addr(), backup.to_str().unwrap());
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    // After the backup: deletes, overwrites and new keys, on all 3 replicas.
    for i in 0..10 {
        assert_eq!(c.cmd(0, &["DEL", &format!("k{i}")]), Frame::Integer(1));
    }
    for i in 10..20 {
        set(&c, &format!("k{i}"), "new");
    }
    for i in 0..10 {
        set(&c, &format!("fresh{i}"), "new");
    }
    // Every replica has the deletes (DEL waits for W=2 only).
    for i in 0..10 {
        for n in [0, 2] {
            let addr = c.nodes[n].addr();
            wait_until(
                Duration::from_secs(10),
                "the delete on every replica",
                || siblings(&addr, &format!("k{i}"), 1).is_empty(),
            );
        }
    }
    // Node 1 stops; its disk is replaced by the old backup.
    c.nodes[1].signal("TERM");
    assert!(wait_exit(&mut c.nodes[1], Duration::from_secs(20)).success());
    let data = c.data_dir(c.nodes[1].port);
    std::fs::remove_dir_all(&data).unwrap();
    let out = run_restore(backup.to_str().unwrap(), data.to_str().unwrap());
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    // First without anti-entropy on node 1 (one exchange an hour), so it
    // stays behind its peers for the whole first phase.
    let extra = std::mem::replace(
        &mut c.extra,
        vec!["--aae-interval-ms".into(), "3600000".into()],
    );
    c.restart(1);
    c.wait_converged();
    assert!(
        c.nodes[1]
            .log_text()
            .contains("restored from a backup of node-")
    );
    let a1 = c.nodes[1].addr();
    let check = |addr: &str, r: usize| -> Vec<String> {
        let mut wrong = Vec::new();
        for i in 0..40 {
            let k = format!("k{i}");
            let want: Vec<Vec<u8>> = match i {
                0..10 => vec![],
                10..20 => vec![b"new".to_vec()],
                _ => vec![b"old".to_vec()],
            };
            let got = siblings(addr, &k, r);
            if got != want {
                wrong.push(format!(
                    "{k}: {:?}",
                    got.iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect::<Vec<_>>()
                ));
            }
        }
        for i in 0..10 {
            let k = format!("fresh{i}");
            if siblings(addr, &k, r) != vec![b"new".to_vec()] {
                wrong.push(k);
            }
        }
        wrong
    };
    // While it has not compared its partitions with its peers, it answers
    // no read from its old copies: even R=1 through it is answered by
    // another replica, so no deleted key is back and no newer write missing.
    assert!(status(&a1).contains("restored:"), "{}", status(&a1));
    for r in [1, 2] {
        let wrong = check(&a1, r);
        assert!(
            wrong.is_empty(),
            "through the restored node, R={r}: {wrong:?}"
        );
    }
    assert!(
        status(&a1).contains("restored:"),
        "the gate opened without anti-entropy"
    );
    // The gate survives a restart (the marker stays until it caught up);
    // with anti-entropy it catches up, and then its own copies (R=1) show
    // no deleted key and every newer write.
    c.nodes[1].signal("TERM");
    assert!(wait_exit(&mut c.nodes[1], Duration::from_secs(20)).success());
    c.extra = extra;
    c.restart(1);
    assert_eq!(
        c.nodes[1]
            .log_text()
            .matches("restored from a backup of node-")
            .count(),
        2,
        "the second start did not take a new epoch again"
    );
    wait_until(
        Duration::from_secs(30),
        "the restored node to catch up",
        || !status(&a1).contains("restored:"),
    );
    assert!(!data.join("store/RESTORED").exists());
    let wrong = check(&a1, 1);
    assert!(
        wrong.is_empty(),
        "the restored node's own copies: {wrong:?}"
    );
    for i in [0, 2] {
        let wrong = check(&c.nodes[i].addr(), 1);
        assert!(wrong.is_empty(), "node {i}, R=1: {wrong:?}");
    }
}

#[test]
fn dump_and_load_round_trip_values_and_siblings_resume_and_merge_by_clock() {
    let a = Cluster::start(3);
    for i in 0..50 {
        assert_eq!(
            a.cmd(i % 3, &["SET", &format!("k{i}"), &format!("v{i}")]),
            Frame::ok()
        );
    }
    // Siblings: two writes with the same earlier context.
    assert_eq!(a.cmd(0, &["SET", "cart", "base"]), Frame::ok());
    let ctx = match a.cmd(0, &["VGET", "cart"]) {
        Frame::Array(items) => match &items[0] {
            Frame::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let ctx = format!("CTX={ctx}");
    assert_eq!(
        a.cmd(0, &["SET", "cart", "apple", &ctx, "W=3"]),
        Frame::ok()
    );
    assert_eq!(a.cmd(1, &["SET", "cart", "pear", &ctx, "W=3"]), Frame::ok());
    assert_eq!(a.cmd(0, &["DEL", "k49"]), Frame::Integer(1));
    let file = a.dir.path().join("dump.ddb");
    let f = file.to_str().unwrap();
    let out = run_db(
        &["dump", "--connect", &a.nodes[0].addr(), "--out", f],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("dumped 50 objects from 1024 partitions"),
        "{}",
        stderr(&out)
    );
    let full = std::fs::read(&file).unwrap();
    // Resume: cut the file inside a frame; the next run finishes it.
    std::fs::write(&file, &full[..full.len() * 2 / 3]).unwrap();
    let out = run_db(
        &["dump", "--connect", &a.nodes[1].addr(), "--out", f],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "resumed dump failed: {}",
        stderr(&out)
    );
    let resumed = std::fs::read(&file).unwrap();
    assert!(
        stderr(&out).contains("resumed at partition")
            && !stderr(&out).contains("resumed at partition 0)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        resumed.len(),
        full.len(),
        "the resumed dump differs in length"
    );
    // An unfinished dump is refused by load, and nothing is loaded.
    let cut = a.dir.path().join("cut.ddb");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();

    let b = Cluster::start(3);
    let b0 = b.nodes[0].addr();
    let out = run_db(
        &["load", "--connect", &b0, "--from", cut.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(
        !out.status.success() && stderr(&out).contains("nothing was loaded"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.cmd(0, &["DBSIZE"]), Frame::Integer(0));
    // Cluster B already has a key of its own under one of the names.
    assert_eq!(b.cmd(0, &["SET", "k7", "b-own"]), Frame::ok());
    let out = run_db(
        &["load", "--connect", &b0, "--from", f],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "load failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("loaded 50 objects"),
        "{}",
        stderr(&out)
    );
    for i in 0..49 {
        let k = format!("k{i}");
        let want: Vec<Vec<u8>> = if i == 7 {
            vec![b"b-own".to_vec(), b"v7".to_vec()]
        } else {
            vec![format!("v{i}").into_bytes()]
        };
        assert_eq!(siblings(&b.nodes[i % 3].addr(), &k, 2), want, "{k}");
    }
    assert_eq!(
        siblings(&b0, "k49", 2),
        Vec::<Vec<u8>>::new(),
        "a deleted key was exported"
    );
    assert_eq!(
        siblings(&b0, "cart", 2),
        vec![b"apple".to_vec(), b"pear".to_vec()]
    );
    // Newer changes in B, then the same (now old) dump again: the clocks
    // say the dump's versions are older, so nothing comes back and nothing
    // newer is lost.
    assert_eq!(b.cmd(1, &["DEL", "k3"]), Frame::Integer(1));
    let ctx = match b.cmd(1, &["VGET", "k4"]) {
        Frame::Array(items) => match &items[0] {
            Frame::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(
        b.cmd(1, &["SET", "k4", "newer", &format!("CTX={ctx}"), "W=3"]),
        Frame::ok()
    );
    let out = run_db(
        &["load", "--connect", &b.nodes[2].addr(), "--from", f],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "second load failed: {}", stderr(&out));
    assert_eq!(
        siblings(&b0, "k3", 3),
        Vec::<Vec<u8>>::new(),
        "a delete newer than the dump was undone"
    );
    assert_eq!(
        siblings(&b0, "k4", 3),
        vec![b"newer".to_vec()],
        "a write newer than the dump was lost"
    );
    assert_eq!(
        siblings(&b0, "cart", 3),
        vec![b"apple".to_vec(), b"pear".to_vec()]
    );
}

#[test]
fn a_stopping_node_answers_the_commands_it_is_running() {
    let mut c = Cluster::start_durable(3, &["--fault-injection"]);
    // Node 0's messages to its peers take 700 ms: a W=3 write through it
    // is still running when SIGTERM arrives right after it was sent.
    for peer in [1, 2] {
        let id = c.nodes[peer].id.clone();
        assert_eq!(c.cmd(0, &["FAULT", "DELAY", &id, "700"]), Frame::ok());
    }
    let mut client = c.client(0);
    let sent = Instant::now();
    let writer = std::thread::spawn(move || client.call(&["SET", "inflight", "v", "W=3"]));
    c.nodes[0].signal("TERM");
    let reply = writer.join().expect("writer");
    let answered = sent.elapsed();
    assert_eq!(
        reply.ok(),
        Some(Frame::ok()),
        "the write in flight at SIGTERM was not answered"
    );
    assert!(
        answered >= Duration::from_millis(700),
        "answered after {answered:?}"
    );
    assert!(wait_exit(&mut c.nodes[0], Duration::from_secs(20)).success());
    assert_eq!(c.cmd(1, &["GET", "inflight", "R=2"]), bulk("v"));
}
