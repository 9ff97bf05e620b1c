//! Test harness: real `db` processes on loopback, started from the built
//! binary on free ports, killed by PID when the test ends. Every wait polls a
//! condition with a generous bound; nothing sleeps for a fixed time to let
//! something happen.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use distro_db::client::Client;
use distro_db::resp::Frame;

/// The built binary.
pub fn db_bin() -> &'static str {
    env!("CARGO_BIN_EXE_db")
}

/// Polls `cond` every 50 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// A port free for both TCP and UDP, outside the ephemeral range so that
/// outgoing connections of other tests cannot take it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 20000 + (rand::random::<u16>() % 12000);
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// One node process.
pub struct NodeProc {
    pub port: u16,
    pub id: String,
    pub child: Child,
    pub log: PathBuf,
}

impl NodeProc {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reap.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a POSIX signal to the process by PID.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if self.running() {
            self.sigkill();
        }
    }
}

/// A cluster of node processes.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub cluster_id: String,
    pub dir: tempfile::TempDir,
    pub extra: Vec<String>,
    /// When set, each node keeps its data in `dir/data-PORT`.
    pub durable: bool,
}

impl Cluster {
    /// Starts `n` nodes that seed from each other and waits until every node
    /// sees every other as live.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra flags for every node.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_opts(n, extra, false)
    }

    /// A cluster whose nodes keep their data in data directories.
    pub fn start_durable(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_opts(n, extra, true)
    }

    fn start_opts(n: usize, extra: &[&str], durable: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster_id = format!("test-{}", rand::random::<u64>());
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < n {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut cluster = Cluster {
            nodes: Vec::new(),
            cluster_id,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            durable,
        };
        for &port in &ports {
            let node = cluster.spawn_node(port, &ports);
            cluster.nodes.push(node);
        }
        cluster.wait_converged();
        cluster
    }

    /// Starts one node process on `port` seeded with `ports`.
    pub fn spawn_node(&self, port: u16, ports: &[u16]) -> NodeProc {
        let log = self.dir.path().join(format!("node-{port}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(db_bin());
        cmd.arg("node")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cluster-id")
            .arg(&self.cluster_id);
        for p in ports {
            cmd.arg("--seed").arg(format!("127.0.0.1:{p}"));
        }
        if self.durable {
            cmd.arg("--data-dir").arg(self.data_dir(port));
        }
        cmd.args(&self.extra)
            .env("RUST_LOG", "info,chitchat=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        let child = cmd.spawn().expect("db starts");
        let node = NodeProc {
            port,
            id: format!("node-{port}"),
            child,
            log,
        };
        let addr = node.addr();
        wait_until(
            Duration::from_secs(20),
            "node to accept connections",
            || Client::connect(&addr).is_ok(),
        );
        node
    }

    /// The data directory of the node on `port` (durable clusters).
    pub fn data_dir(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("data-{port}"))
    }

    /// Restarts node `i` (after it stopped) on the same port.
    pub fn restart(&mut self, i: usize) {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        let node = self.spawn_node(ports[i], &ports);
        self.nodes[i] = node;
    }

    /// Waits until every running node sees every running node live.
    pub fn wait_converged(&mut self) {
        let running: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|n| {
                if n.running() {
                    Some(n.id.clone())
                } else {
                    None
                }
            })
            .collect();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].running() {
                continue;
            }
            let addr = self.nodes[i].addr();
            wait_until(Duration::from_secs(30), "the cluster to converge", || {
                let live = live_nodes(&addr);
                running.iter().all(|id| live.contains(id))
            });
        }
    }

    pub fn client(&self, i: usize) -> Client {
        Client::connect(&self.nodes[i].addr()).expect("connect")
    }

    /// Runs one command on node `i`.
    pub fn cmd(&self, i: usize, args: &[&str]) -> Frame {
        self.client(i).call(args).expect("call")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                let text = n.log_text();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("---- log of {} (last lines) ----", n.id);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Node ids `addr` reports as live in NODES (empty if unreachable).
pub fn live_nodes(addr: &str) -> Vec<String> {
    let Ok(mut c) = Client::connect(addr) else {
        return Vec::new();
    };
    match c.call(&["NODES"]) {
        Ok(Frame::Bulk(text)) => String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("live"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

pub fn bulk(s: &str) -> Frame {
    Frame::Bulk(s.as_bytes().to_vec())
}

/// A REPL process (`db repl --connect` or `db master`) driven through pipes.
pub struct ReplProc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ReplProc {
    pub fn spawn(mut cmd: Command) -> ReplProc {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("repl starts");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ReplProc {
            child,
            stdin,
            lines,
        }
    }

    /// Types one line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to repl");
        stdin.flush().expect("flush");
    }

    /// Reads the next output line (bounded wait).
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the REPL answered within 20 s")
    }

    /// Types a line and returns the first line of its answer.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "REPL did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ReplProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a file if it exists.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn sock(addr: &str) -> SocketAddr {
    addr.parse().expect("socket address")
}
