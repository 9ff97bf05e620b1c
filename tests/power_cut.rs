//! Power cuts of a whole cluster, simulated faithfully (issue 17).
//!
//! Three durable nodes each keep their data directory on an ext4 file
//! system of its own: an image file on a loop device. Clients write. A cut
//! kills every node with SIGKILL, reaps them, and copies each image file
//! at once: the copy holds what the file system had handed to the device,
//! so what was fsynced is there and dirty pages that never reached the
//! device are gone, as after a real power loss. The nodes then restart on
//! the copies (ext4 replays its journal when mounted) and the test asserts
//! that every acknowledged write reads back, every acknowledged delete
//! stays deleted, every node keeps its id and the cluster is all live.
//!
//! The cuts land at seeded random moments of six phases, in this order on
//! the same three file systems: within the first seconds after the nodes'
//! first start, during writes with 16 KiB segments (a roll every few dozen
//! writes), during compaction of overwritten keys, while hints are written
//! for a stopped node, while they are delivered after it resumes, and
//! during a clean stop (SIGTERM). The seed is printed; `DDB_POWER_SEED=S`
//! replays it.
//!
//! The file systems are mounted with `commit=60`: the journal is then
//! committed only when the node syncs (or after a minute), so nothing the
//! node did not fsync reaches the device by luck of the 5 s default, and
//! the kernel's own background writes, the one thing that could change an
//! image while it is copied, are rare.
//!
//! It needs root, `losetup`, `mkfs.ext4` and `mount`. Where they are
//! missing the test says so plainly on standard error and does nothing;
//! with `DDB_REQUIRE_LOOP=1` (set by `.ci/run` where loop devices work) it
//! fails instead.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{NodeProc, db_bin, free_port, live_nodes, wait_until};
use distro_db::client::Client;
use distro_db::resp::Frame;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Size of each node's ext4 image.
const IMAGE_MB: u64 = 64;

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One node's disk: an ext4 image file on a loop device, mounted.
struct Disk {
    img: PathBuf,
    mnt: PathBuf,
    dev: Option<String>,
}

impl Disk {
    fn create(dir: &Path, name: &str) -> Result<Disk, String> {
        let img = dir.join(format!("{name}.img"));
        let mnt = dir.join(name);
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
        f.set_len(IMAGE_MB << 20).map_err(|e| e.to_string())?;
        drop(f);
        run("mkfs.ext4", &["-q", "-F", &img.to_string_lossy()])?;
        let mut disk = Disk {
            img,
            mnt,
            dev: None,
        };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&mut self) -> Result<(), String> {
        let dev = run("losetup", &["-f", "--show", &self.img.to_string_lossy()])?;
        self.dev = Some(dev.clone());
        run(
            "mount",
            &["-o", "commit=60", &dev, &self.mnt.to_string_lossy()],
        )?;
        Ok(())
    }

    fn detach(&mut self) {
        if let Some(dev) = self.dev.take() {
            let mnt = self.mnt.to_string_lossy().to_string();
            if run("umount", &[&mnt]).is_err() {
                let _ = run("umount", &["-l", &mnt]);
            }
            let _ = run("losetup", &["-d", &dev]);
        }
    }

    /// The power cut of this disk: a copy of the device as it is now.
    /// Every process writing to it must have been reaped first.
    fn snapshot(&self) -> PathBuf {
        let copy = self.img.with_extension("cut");
        std::fs::copy(&self.img, &copy).expect("copy the image");
        copy
    }

    /// Swaps the device for the snapshot: what a machine has after the
    /// power comes back.
    fn power_on(&mut self, snapshot: &Path) {
        self.detach();
        std::fs::rename(snapshot, &self.img).expect("replace the image");
        self.attach().expect("mount the image after the cut");
    }

    fn data_dir(&self) -> PathBuf {
        self.mnt.join("data")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Says whether loop-mounted ext4 images can be used here, and if not why.
fn loop_devices_usable(dir: &Path) -> Result<(), String> {
    let uid = run("id", &["-u"])?;
    if uid != "0" {
        return Err(format!("not running as root (uid {uid})"));
    }
    for tool in ["losetup", "mkfs.ext4", "mount", "umount"] {
        run("sh", &["-c", &format!("command -v {tool}")])
            .map_err(|_| format!("{tool} is not installed"))?;
    }
    let mut probe = Disk::create(dir, "probe")?;
    std::fs::write(probe.mnt.join("x"), b"x").map_err(|e| e.to_string())?;
    probe.detach();
    let _ = std::fs::remove_file(&probe.img);
    Ok(())
}

/// What the clients were told, and what they may have done without being told.
#[derive(Default)]
struct Ledger {
    /// Unique keys whose SET was acknowledged, with the value.
    written: BTreeMap<String, String>,
    /// Keys whose DEL was acknowledged (and never written again).
    deleted: Vec<String>,
    /// Keys whose DEL got no acknowledgement: either state is right.
    unsure: Vec<String>,
    /// Overwritten keys: (last acknowledged value, highest value sent).
    hot: HashMap<String, (u64, u64)>,
}

/// One key to read back: its key, the value it must hold (`None`: deleted)
/// or, for an overwritten key, the range its number must fall in.
type Check = (String, Option<String>, Option<(u64, u64)>);

/// The nodes of the cluster, each on its disk.
struct Rig {
    dir: tempfile::TempDir,
    cluster_id: String,
    ports: Vec<u16>,
    nodes: Vec<Option<NodeProc>>,
    disks: Vec<Disk>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Rig {
    fn ids(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("node-{p}")).collect()
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// Starts node `i` without waiting for it.
    fn spawn(&mut self, i: usize) {
        let port = self.ports[i];
        let log = self.dir.path().join(format!("node-{port}.log"));
        let mut cmd = Command::new(db_bin());
        cmd.arg("node")
            .arg("--listen")
            .arg(self.addr(i))
            .arg("--cluster-id")
            .arg(&self.cluster_id)
            .arg("--data-dir")
            .arg(self.disks[i].data_dir())
            .args(["--segment-size", "16K", "--compaction-interval-ms", "100"])
            .args(["--threads", "1", "--timeout-ms", "1000"])
            .arg("--log-file")
            .arg(&log);
        for p in &self.ports {
            cmd.arg("--seed").arg(format!("127.0.0.1:{p}"));
        }
        let child = common::checked(&mut cmd)
            .env("RUST_LOG", "info,chitchat=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join(format!("node-{port}.err")))
                    .expect("stderr file"),
            ))
            .spawn()
            .expect("db starts");
        self.nodes[i] = Some(NodeProc {
            port,
            id: format!("node-{port}"),
            child,
            log,
        });
    }

    fn start_all(&mut self) {
        for i in 0..self.ports.len() {
            self.spawn(i);
        }
    }

    /// Waits until every node accepts connections and lists all three
    /// ids, and only those, as live.
    fn wait_all_live(&mut self, why: &str) {
        let ids = self.ids();
        for i in 0..self.ports.len() {
            let addr = self.addr(i);
            let node = self.nodes[i].as_mut().expect("node started");
            let mut exited = None;
            wait_until(Duration::from_secs(60), why, || {
                if let Ok(Some(status)) = node.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                let live = live_nodes(&addr);
                ids.iter().all(|id| live.contains(id))
            });
            if let Some(status) = exited {
                let err =
                    common::read(&self.dir.path().join(format!("node-{}.err", self.ports[i])));
                panic!("{} exited ({status}) {why}: {err}", node.id);
            }
            let Some(text) = Client::connect(&addr)
                .and_then(|mut c| c.call(&["NODES"]))
                .ok()
                .and_then(|f| f.text())
            else {
                panic!("NODES on {addr}");
            };
            let listed: Vec<String> = text
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect();
            let mut want = ids.clone();
            want.sort();
            let mut got = listed.clone();
            got.sort();
            assert_eq!(got, want, "{addr} lists other members {why}");
        }
    }

    /// The cut: every node killed and reaped, then every disk copied.
    fn cut(&mut self) -> Vec<PathBuf> {
        for n in self.nodes.iter_mut().flatten() {
            // SIGKILL works on a stopped process too.
            n.sigkill();
        }
        let copies: Vec<PathBuf> = self.disks.iter().map(Disk::snapshot).collect();
        for n in &mut self.nodes {
            *n = None;
        }
        copies
    }

    fn power_on(&mut self, copies: Vec<PathBuf>) {
        for (d, c) in self.disks.iter_mut().zip(copies) {
            d.power_on(&c);
        }
    }

    /// A STATUS figure summed over `nodes`.
    fn figure_sum(&self, nodes: &[usize], prefix: &str) -> u64 {
        nodes.iter().map(|&i| self.status_figure(i, prefix)).sum()
    }

    fn status_figure(&self, i: usize, prefix: &str) -> u64 {
        let Some(text) = Client::connect(&self.addr(i))
            .and_then(|mut c| c.call(&["STATUS"]))
            .ok()
            .and_then(|f| f.text())
        else {
            return 0;
        };
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn signal(&self, i: usize, sig: &str) {
        self.nodes[i].as_ref().expect("running").signal(sig);
    }

    /// Reads back everything the ledger promises, through every node in turn.
    fn verify(&self, label: &str) {
        let ledger = self.ledger.lock().unwrap();
        let mut checks: Vec<Check> = Vec::new();
        for (k, v) in &ledger.written {
            checks.push((k.clone(), Some(v.clone()), None));
        }
        for k in &ledger.deleted {
            checks.push((k.clone(), None, None));
        }
        for (k, range) in &ledger.hot {
            if range.0 > 0 {
                checks.push((k.clone(), None, Some(*range)));
            }
        }
        let mut lost = Vec::new();
        for (n, chunk) in checks.chunks(200).enumerate() {
            let mut args = vec!["MGET".to_string()];
            args.extend(chunk.iter().map(|c| c.0.clone()));
            let addr = self.addr(n % self.ports.len());
            let reply = Client::connect(&addr)
                .and_then(|mut c| c.call(&args))
                .unwrap_or_else(|e| panic!("{label}: MGET through {addr}: {e}"));
            let Frame::Array(values) = reply else {
                panic!("{label}: MGET through {addr}: {reply:?}");
            };
            for ((key, want, hot), got) in chunk.iter().zip(values) {
                let got = match got {
                    Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).to_string()),
                    Frame::Null => None,
                    other => panic!("{label}: {key}: {other:?}"),
                };
                let ok = match hot {
                    Some((acked, sent)) => got
                        .as_deref()
                        .and_then(|g| g.split(':').next()?.parse::<u64>().ok())
                        .is_some_and(|v| *acked <= v && v <= *sent),
                    None => got == *want,
                };
                if !ok {
                    lost.push(format!("{key}: want {want:?} {hot:?}, read {got:?}"));
                }
            }
        }
        if let Some(first) = lost.first() {
            let key = first.split(':').next().unwrap_or_default();
            if let Some(t) = Client::connect(&self.addr(0))
                .and_then(|mut c| c.call(&["REPLICAS", key]))
                .ok()
                .and_then(|f| f.text())
            {
                eprintln!("{label}: REPLICAS {key}:\n{t}");
            }
        }
        assert!(
            lost.is_empty(),
            "{label}: {} of {} acknowledged operations lost, e.g. {:?}",
            lost.len(),
            checks.len(),
            &lost[..lost.len().min(10)]
        );
        eprintln!(
            "{label}: all {} acknowledged writes read back ({} unique, {} deleted, {} overwritten keys; {} unacknowledged deletes not checked)",
            checks.len(),
            ledger.written.len(),
            ledger.deleted.len(),
            ledger.hot.len(),
            ledger.unsure.len()
        );
        drop(ledger);
        for (i, d) in self.disks.iter().enumerate() {
            let want = format!("node-{}\n", self.ports[i]);
            for f in [
                d.data_dir().join("node-id"),
                d.data_dir().join("store/node-id"),
            ] {
                assert_eq!(common::read(&f), want, "{label}: {}", f.display());
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().flatten() {
            n.sigkill();
        }
        if std::thread::panicking() {
            for p in &self.ports {
                let log = common::read(&self.dir.path().join(format!("node-{p}.log")));
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("---- node-{p} (last lines) ----");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
                eprintln!(
                    "{}",
                    common::read(&self.dir.path().join(format!("node-{p}.err")))
                );
            }
        }
        for d in &mut self.disks {
            d.detach();
        }
    }
}

/// Client threads writing until told to stop: unique keys, overwrites of a
/// few hot keys (so compaction finds garbage) and deletes of keys they wrote.
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(rig: &Rig, phase: &str, nodes: &[usize], hot_share: f64, seed: u64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..3)
            .map(|w| {
                let addr = rig.addr(nodes[w % nodes.len()]);
                let ledger = rig.ledger.clone();
                let stop = stop.clone();
                let phase = phase.to_string();
                let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1));
                std::thread::spawn(move || {
                    let mut client: Option<Client> = None;
                    let mut mine: Vec<String> = Vec::new();
                    for seq in 0..20_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let c = match client.as_mut() {
                            Some(c) => c,
                            None => match Client::connect_with(&addr, Duration::from_secs(5)) {
                                Ok(c) => client.insert(c),
                                Err(_) => {
                                    std::thread::sleep(Duration::from_millis(20));
                                    continue;
                                }
                            },
                        };
                        let roll: f64 = rng.random();
                        if roll < hot_share {
                            let key = format!("hot-{w}-{}", rng.random_range(0..8));
                            let value = {
                                let mut l = ledger.lock().unwrap();
                                let e = l.hot.entry(key.clone()).or_insert((0, 0));
                                e.1 += 1;
                                e.1
                            };
                            // Padded so that overwrites leave garbage for compaction.
                            let text = format!("{value}:{}", "x".repeat(200));
                            match c.call(&["SET", &key, &text]) {
                                Ok(f) if f == Frame::ok() => {
                                    let mut l = ledger.lock().unwrap();
                                    let e = l.hot.get_mut(&key).expect("entry");
                                    e.0 = e.0.max(value);
                                }
                                Ok(_) => {}
                                Err(_) => client = None,
                            }
                        } else if roll < hot_share + 0.1 && !mine.is_empty() {
                            let key = mine.swap_remove(rng.random_range(0..mine.len()));
                            match c.call(&["DEL", &key]) {
                                Ok(Frame::Integer(_)) => {
                                    let mut l = ledger.lock().unwrap();
                                    l.written.remove(&key);
                                    l.deleted.push(key);
                                }
                                other => {
                                    let mut l = ledger.lock().unwrap();
                                    l.written.remove(&key);
                                    l.unsure.push(key);
                                    if other.is_err() {
                                        client = None;
                                    }
                                }
                            }
                        } else {
                            let key = format!("{phase}-{w}-{seq}");
                            let value = format!("{key}-{}", "v".repeat(100));
                            match c.call(&["SET", &key, &value]) {
                                Ok(f) if f == Frame::ok() => {
                                    ledger.lock().unwrap().written.insert(key.clone(), value);
                                    mine.push(key);
                                }
                                Ok(_) => {}
                                Err(_) => client = None,
                            }
                        }
                    }
                })
            })
            .collect();
        Writers { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..hi))
}

#[test]
fn a_cluster_survives_power_cuts() {
    let dir = tempfile::tempdir().expect("temp dir");
    if let Err(why) = loop_devices_usable(dir.path()) {
        if std::env::var_os("DDB_REQUIRE_LOOP").is_some() {
            panic!("DDB_REQUIRE_LOOP is set but loop-mounted ext4 images cannot be used: {why}");
        }
        eprintln!("SKIPPED: the power-cut test needs loop-mounted ext4 images: {why}");
        return;
    }
    let seed: u64 = std::env::var("DDB_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("power-cut seed {seed} (replay: DDB_POWER_SEED={seed} cargo test --test power_cut)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ports = Vec::new();
    while ports.len() < 3 {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let disks = (0..3)
        .map(|i| Disk::create(dir.path(), &format!("disk{i}")).expect("disk"))
        .collect();
    let mut rig = Rig {
        cluster_id: format!("power-{}", rand::random::<u32>()),
        dir,
        ports,
        nodes: vec![None, None, None],
        disks,
        ledger: Arc::new(Mutex::new(Ledger::default())),
    };
    let started = Instant::now();

    // 1. Within the first seconds of the first start: node ids, member
    // lists, format and epoch files are being written.
    // Clients write once the nodes see each other: a node that has not yet
    // heard from its seeds is a cluster of one and acknowledges writes
    // alone (N shrinks to the members it knows), which a power cut does not
    // lose but a later R=2 read may not find until anti-entropy copies it.
    rig.start_all();
    let cut_at = Instant::now() + ms(&mut rng, 0, 1200);
    let ids = rig.ids();
    let mut writers = None;
    while Instant::now() < cut_at {
        if writers.is_none()
            && (0..3).all(|i| {
                let live = live_nodes(&rig.addr(i));
                ids.iter().all(|id| live.contains(id))
            })
        {
            writers = Some(Writers::start(&rig, "first", &[0, 1, 2], 0.0, rng.random()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let copies = rig.cut();
    eprintln!(
        "cut 1: {} the cluster had formed",
        if writers.is_some() { "after" } else { "before" }
    );
    if let Some(w) = writers {
        w.stop();
    }
    finish(&mut rig, copies, "cut 1 (first start)");

    // 2. During writes with 16 KiB segments: a roll every few dozen writes.
    let w = Writers::start(&rig, "roll", &[0, 1, 2], 0.1, rng.random());
    std::thread::sleep(ms(&mut rng, 500, 2500));
    let segments = rig.figure_sum(&[0, 1, 2], "storage.segments: ");
    cut_during(
        &mut rig,
        w,
        "cut 2 (segment rolls)",
        format!("{segments} segments"),
    );

    // 3. During compaction: mostly overwrites, checked every 100 ms.
    let w = Writers::start(&rig, "compact", &[0, 1, 2], 0.8, rng.random());
    wait_until(Duration::from_secs(60), "a compaction to run", || {
        rig.figure_sum(&[0, 1, 2], "storage.compactions: ") > 0
    });
    std::thread::sleep(ms(&mut rng, 0, 1500));
    let compactions = rig.figure_sum(&[0, 1, 2], "storage.compactions: ");
    cut_during(
        &mut rig,
        w,
        "cut 3 (compaction)",
        format!("{compactions} compactions had run"),
    );

    // 4. While hints are written: node 2 is stopped, the others keep hints
    // for it.
    rig.signal(2, "STOP");
    let w = Writers::start(&rig, "hinted", &[0, 1], 0.1, rng.random());
    wait_until(Duration::from_secs(60), "hints to be stored", || {
        rig.figure_sum(&[0, 1], "hints pending: ") > 0
    });
    std::thread::sleep(ms(&mut rng, 0, 1500));
    let hints = rig.figure_sum(&[0, 1], "hints pending: ");
    cut_during(
        &mut rig,
        w,
        "cut 4 (hints written)",
        format!("{hints} hints pending"),
    );

    // 5. While hints are delivered: node 2 resumes after hints piled up.
    rig.signal(2, "STOP");
    let w = Writers::start(&rig, "handoff", &[0, 1], 0.1, rng.random());
    wait_until(Duration::from_secs(60), "hints to be stored", || {
        rig.figure_sum(&[0, 1], "hints pending: ") > 50
    });
    rig.signal(2, "CONT");
    std::thread::sleep(ms(&mut rng, 0, 1500));
    let hints = rig.figure_sum(&[0, 1], "hints pending: ");
    cut_during(
        &mut rig,
        w,
        "cut 5 (hints delivered)",
        format!("{hints} hints still pending"),
    );

    // 6. During a clean stop: SIGTERM to every node while clients write.
    let w = Writers::start(&rig, "stop", &[0, 1, 2], 0.1, rng.random());
    std::thread::sleep(ms(&mut rng, 300, 1000));
    for i in 0..3 {
        rig.signal(i, "TERM");
    }
    // A stop takes a few hundred milliseconds: drain, flush, the clean marker.
    std::thread::sleep(ms(&mut rng, 0, 400));
    let running = (0..3)
        .filter(|&i| {
            rig.nodes[i]
                .as_mut()
                .is_some_and(|n| matches!(n.child.try_wait(), Ok(None)))
        })
        .count();
    cut_during(
        &mut rig,
        w,
        "cut 6 (clean stop)",
        format!("{running} of 3 nodes still stopping"),
    );

    eprintln!(
        "six power cuts survived in {:.1} s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
}

/// Cuts the power while `writers` write, stops them, then powers on and
/// verifies; `state` says what the cut interrupted.
fn cut_during(rig: &mut Rig, writers: Writers, label: &str, state: String) {
    let copies = rig.cut();
    writers.stop();
    eprintln!("{label}: {state} at the cut");
    finish(rig, copies, label);
}

/// Power comes back: restart on the copies, wait for the cluster, verify.
fn finish(rig: &mut Rig, copies: Vec<PathBuf>, label: &str) {
    rig.power_on(copies);
    rig.start_all();
    rig.wait_all_live(&format!("after {label}"));
    rig.verify(label);
}
