//! `db local`: a whole cluster on this machine for trying distro-db.
//!
//! It checks the configuration and the ports first (nothing is started if
//! either is wrong), then starts every node as a child process (`db slave
//! PORT --seed ...`, this same binary, each logging to a file it names) in a
//! session of its own, so Ctrl-C at the terminal never reaches them. Then it
//! runs the REPL, a client, against one of them.
//!
//! - `EXIT` or end of input leaves the REPL; the cluster keeps running, and
//!   `db local` says how to reconnect (`db repl --connect`, spelled with the
//!   path of this binary unless `db` on the PATH is it) and stop it (QUIT).
//! - `KILL` of the REPL's own node ends the REPL too; `db local` waits
//!   (bounded) for that node to exit before saying what still runs.
//! - Nodes that exit while the REPL runs are reaped at once (no zombies).
//! - `--data-dir DIR` gives each node DIR/node-PORT; flags after `--` go to
//!   every node as they are.
//! - `--tls` makes a throwaway CA and a node certificate ([`tls`]) in
//!   `<data-dir>/tls` or `$TMPDIR/distro-db-local-PORT-tls`, starts every
//!   node with them, connects the REPL over TLS and prints how to point
//!   `redis-cli --tls` at the cluster.
//! - `QUIT` stops every node (SHUTDOWN CLUSTER); `db local` waits (bounded)
//!   for its children to exit.
//! - SIGTERM, SIGHUP or SIGINT sent to `db local` restores the terminal, stops
//!   the nodes it started (SIGTERM, a bounded wait, then SIGKILL) and exits
//!   non-zero.

pub mod ports;
pub mod signals;
pub mod tls;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::client::Client;
use crate::config::Config;
use crate::repl::{self, Mode, Outcome};

/// Port of the first node when `--base-port` is not given.
pub const DEFAULT_BASE_PORT: u16 = 55551;
/// How long the nodes have to come up and see each other.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long nodes have to stop after QUIT or SIGTERM before being killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a node's log shown when it exits at start.
const LOG_TAIL_LINES: usize = 15;

/// What `db local` starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes.
    pub nodes: u16,
    /// Port of the first node; `None`: the default, or the next free block.
    pub base_port: Option<u16>,
    /// Replicas per key, read and write quorums.
    pub n: usize,
    /// Read quorum.
    pub r: usize,
    /// Write quorum.
    pub w: usize,
    /// Each node keeps its data in `<data_dir>/node-PORT` (none: in memory).
    pub data_dir: Option<PathBuf>,
    /// Flags passed to every node as they are (checked by the caller).
    pub node_flags: Vec<String>,
    /// With a port, node i serves its metrics and status page on this port
    /// plus i (`--metrics-port`).
    pub metrics_port: Option<u16>,
    /// Serve TLS only, with a throwaway CA made at start.
    pub tls: bool,
}

/// One node process.
struct Member {
    port: u16,
    log: PathBuf,
    child: Child,
}

/// The node processes, shared with the signal-handling thread.
#[derive(Clone)]
struct Members(Arc<Mutex<Vec<Member>>>);

impl Members {
    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ports of the nodes still running.
    fn running(&self) -> Vec<u16> {
        let mut running = Vec::new();
        for m in self.lock().iter_mut() {
            if let Ok(None) = m.child.try_wait() {
                running.push(m.port);
            }
        }
        running
    }

    /// Waits until the node on `port` has exited or `within` passes.
    fn wait_exit(&self, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && self.running().contains(&port) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reaps nodes that exit (a KILL from the REPL) while `db local` runs,
    /// so that none lingers as a zombie: a thread that looks every 200 ms
    /// until every node has exited or `done` is set.
    fn reap_in_background(&self, done: Arc<std::sync::atomic::AtomicBool>) {
        let members = self.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) && !members.running().is_empty()
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    /// Waits until every node has exited or `within` passes; true if all did.
    fn wait_all(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.running().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to every node still running, a bounded wait, then SIGKILL.
    fn stop(&self, grace: Duration) {
        for m in self.lock().iter_mut() {
            if let Ok(None) = m.child.try_wait()
                && let Ok(pid) = i32::try_from(m.child.id())
            {
                // SAFETY: kill(2) on the PID of a child we spawned and have
                // not reaped (try_wait just saw it running), so the PID is
                // still that child's.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        if self.wait_all(grace) {
            return;
        }
        for m in self.lock().iter_mut() {
            if let Ok(None) = m.child.try_wait() {
                eprintln!("node-{} did not stop within {grace:?}; killing it", m.port);
                let _ = m.child.kill();
                let _ = m.child.wait();
            }
        }
    }
}

/// Log file of the node on `port`.
pub fn log_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("distro-db-node-{port}.log"))
}

/// The last `lines` lines of a file (empty if unreadable).
pub fn log_tail(path: &std::path::Path, lines: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// How to run this binary again from a shell: `db` when that is what `db`
/// on the PATH runs, else this binary's path (after `cargo run`, `db` is
/// not on the PATH; the path is target/debug/db or target/release/db).
pub fn program() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "db".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("db"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
    });
    if on_path.as_ref() == Some(&me) {
        return "db".into();
    }
    shell_word(&me.display().to_string())
}

/// `text` as one word of a shell command line (single-quoted if needed).
pub fn shell_word(text: &str) -> String {
    if text.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
        format!("'{}'", text.replace('\'', "'\\''"))
    } else {
        text.to_string()
    }
}

/// Checks what can be checked before starting anything: the port range and
/// the replication settings.
pub fn validate(opts: &Options) -> anyhow::Result<Vec<String>> {
    let base = opts.base_port.unwrap_or(DEFAULT_BASE_PORT);
    if base == 0 {
        anyhow::bail!("--base-port 0 is not a port peers can reach: give a port from 1 to 65535");
    }
    let last = u32::from(base) + u32::from(opts.nodes) - 1;
    if last > u32::from(u16::MAX) {
        anyhow::bail!(
            "--base-port {base} with --nodes {} needs ports {base}-{last}, past the last port (65535): use a base port of at most {}",
            opts.nodes,
            u32::from(u16::MAX) + 1 - u32::from(opts.nodes)
        );
    }
    if let Some(m) = opts.metrics_port {
        let last = u32::from(m) + u32::from(opts.nodes) - 1;
        if m == 0 || last > u32::from(u16::MAX) {
            anyhow::bail!(
                "--metrics-port {m} with --nodes {} needs ports {m}-{last}: give a port from 1 to {}",
                opts.nodes,
                u32::from(u16::MAX) + 1 - u32::from(opts.nodes)
            );
        }
        let metrics = u32::from(m)..=last;
        let data = u32::from(base)..=u32::from(base) + u32::from(opts.nodes) - 1;
        if metrics.start() <= data.end() && data.start() <= metrics.end() {
            anyhow::bail!(
                "--metrics-port {m} overlaps the nodes' ports {}-{}: pick ports apart from them",
                data.start(),
                data.end()
            );
        }
    }
    let mut config = Config::new(std::net::SocketAddr::from(([127, 0, 0, 1], base)));
    config.n = opts.n;
    config.r = opts.r;
    config.w = opts.w;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}; no node was started"))
}

/// Runs `db local`; returns the process exit status.
pub fn run(opts: &Options) -> anyhow::Result<i32> {
    for w in validate(opts)? {
        eprintln!("warning: {w}");
    }
    let base = opts.base_port.unwrap_or(DEFAULT_BASE_PORT);
    let (ports, notice) = ports::choose(base, opts.nodes, opts.base_port.is_some(), |p| {
        ports::check(Ipv4Addr::LOCALHOST, p)
    })
    .map_err(anyhow::Error::msg)?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    let members = Members(Arc::new(Mutex::new(Vec::new())));
    let on_signal = members.clone();
    signals::on_termination(move |sig| {
        repl::lineedit::restore_terminal();
        eprintln!(
            "db local: {} received; stopping the nodes it started",
            signals::name(sig)
        );
        on_signal.stop(STOP_TIMEOUT);
        std::process::exit(128 + sig);
    })
    .context("cannot install signal handlers")?;

    let certs = match opts.tls {
        false => None,
        true => {
            let dir = match &opts.data_dir {
                Some(d) => d.join("tls"),
                None => std::env::temp_dir().join(format!("distro-db-local-{}-tls", ports[0])),
            };
            let certs = tls::make(&dir)?;
            crate::client::use_tls(certs.client()?);
            let ca = shell_word(&certs.ca.display().to_string());
            eprintln!(
                "TLS only (no plain text), certificates from a throwaway CA in {}\n\
                 redis-cli: redis-cli --tls --cacert {ca} -p {}",
                dir.display(),
                ports[0]
            );
            Some(certs)
        }
    };
    let exe = std::env::current_exe().context("cannot find the db binary")?;
    let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    for (i, &port) in ports.iter().enumerate() {
        let log = log_path(port);
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("slave").arg(port.to_string());
        for s in &seeds {
            cmd.arg("--seed").arg(s);
        }
        // The nodes share this machine: one runtime thread each.
        if let Some(dir) = &opts.data_dir {
            cmd.arg("--data-dir").arg(dir.join(format!("node-{port}")));
        }
        cmd.arg(format!("--n={}", opts.n))
            .arg(format!("--r={}", opts.r))
            .arg(format!("--w={}", opts.w))
            .arg("--threads=1");
        let metrics = opts
            .metrics_port
            .and_then(|m| u16::try_from(usize::from(m) + i).ok());
        if let Some(m) = metrics {
            cmd.arg("--metrics").arg(format!("127.0.0.1:{m}"));
        }
        cmd.arg("--log-file")
            .arg(&log)
            .args(certs.iter().flat_map(tls::LocalCerts::node_flags))
            .args(&opts.node_flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of
        // the parent; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                members.stop(STOP_TIMEOUT);
                return Err(e).context("cannot start a node process");
            }
        };
        let status_page = metrics
            .map(|m| format!(", status page: http://127.0.0.1:{m}/"))
            .unwrap_or_default();
        eprintln!(
            "node-{port} on 127.0.0.1:{port} (pid {}), logs: {}{status_page}",
            child.id(),
            log.display()
        );
        members.lock().push(Member { port, log, child });
    }

    let attach = *ports.last().unwrap_or(&base);
    let addr = format!("127.0.0.1:{attach}");
    if let Err(e) = wait_up(&members, &ports) {
        members.stop(STOP_TIMEOUT);
        return Err(e);
    }
    signals::ignore_terminal_interrupt(true);
    let repl_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    members.reap_in_background(repl_done.clone());
    let outcome = match repl::run_with_prompt(&addr, "db> ", Mode::Local) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("repl: {e:#}");
            Outcome::Exit
        }
    };
    repl_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::io::stdout().flush();
    if outcome == Outcome::NodeStopped {
        // The REPL's own node was told to stop: count it out once it has.
        members.wait_exit(attach, STOP_TIMEOUT);
    }
    if outcome == Outcome::Quit {
        if members.wait_all(STOP_TIMEOUT) {
            eprintln!("every node has stopped");
        } else {
            members.stop(STOP_TIMEOUT);
        }
        return Ok(0);
    }
    let mut running = members.running();
    if outcome == Outcome::NodeStopped {
        // Still stopping after the wait: not one to reconnect to.
        running.retain(|&p| p != attach);
    }
    match running.last() {
        None => eprintln!("every node has stopped"),
        Some(port) => {
            let tls = certs.as_ref().map_or(String::new(), |c| {
                format!(" --tls-ca {}", shell_word(&c.ca.display().to_string()))
            });
            eprintln!(
                "the cluster keeps running ({} of {} nodes, logs in {}).\n\
                 reconnect: {} repl --connect 127.0.0.1:{port}{tls}\n\
                 stop it:   QUIT in that REPL",
                running.len(),
                ports.len(),
                std::env::temp_dir().join("distro-db-node-*.log").display(),
                program()
            );
        }
    }
    Ok(0)
}

/// Waits (bounded) until every node answers and sees every node live. A
/// node that exits meanwhile is an error showing the end of its log.
fn wait_up(members: &Members, ports: &[u16]) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let count = ports.len();
    loop {
        for m in members.lock().iter_mut() {
            if let Ok(Some(status)) = m.child.try_wait() {
                let mut msg = format!(
                    "node-{} exited at start ({status}); the end of its log ({}):",
                    m.port,
                    m.log.display()
                );
                for line in log_tail(&m.log, LOG_TAIL_LINES) {
                    msg.push_str("\n  ");
                    msg.push_str(&line);
                }
                anyhow::bail!(msg);
            }
        }
        let live = ports
            .iter()
            .map(|p| live_count(&format!("127.0.0.1:{p}")))
            .min()
            .unwrap_or(0);
        if live >= count {
            eprintln!("cluster of {count} nodes is up");
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!(
                "warning: not every node sees all {count} nodes live after {START_TIMEOUT:?}; see the logs"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Members `addr` reports live (0 if it does not answer).
fn live_count(addr: &str) -> usize {
    let Ok(mut c) = Client::connect_with(addr, Duration::from_secs(2)) else {
        return 0;
    };
    if let Ok(Some(creds)) = crate::client::credentials_from_env(None)
        && c.auth_as(&creds).is_err()
    {
        return 0;
    }
    match c.call(&["NODES"]).ok().and_then(|f| f.text()) {
        Some(text) => text
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("live"))
            .count(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(nodes: u16, base: Option<u16>, n: usize, r: usize, w: usize) -> Options {
        Options {
            nodes,
            base_port: base,
            n,
            r,
            w,
            data_dir: None,
            node_flags: Vec::new(),
            metrics_port: None,
            tls: false,
        }
    }

    #[test]
    fn validation_happens_before_anything_starts() {
        let e = validate(&opts(3, None, 3, 4, 2)).unwrap_err().to_string();
        assert!(e.contains("cannot exceed N"), "{e}");
        assert!(e.contains("no node was started"), "{e}");
        let e = validate(&opts(2, Some(65535), 3, 2, 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("65535-65536"), "{e}");
        assert!(e.contains("at most 65534"), "{e}");
        assert!(validate(&opts(1, Some(65535), 3, 2, 2)).is_ok());
        assert!(validate(&opts(3, Some(0), 3, 2, 2)).is_err());
        assert_eq!(validate(&opts(3, None, 3, 1, 1)).unwrap().len(), 1);
    }

    #[test]
    fn a_node_that_exits_at_start_is_reported_with_its_log() {
        // A stand-in for a node that fails to start: writes a log and exits.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        std::fs::write(&log, "line 1\nERROR cannot start gossip: boom\n").unwrap();
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let members = Members(Arc::new(Mutex::new(vec![Member {
            port: 1,
            log: log.clone(),
            child,
        }])));
        // Port 1 on loopback: nothing answers there, so the wait goes on
        // until the stand-in's exit is seen.
        let err = wait_up(&members, &[1]).unwrap_err().to_string();
        assert!(
            err.starts_with("node-1 exited at start (exit status: 3); the end of its log ("),
            "{err}"
        );
        assert!(
            err.ends_with("\n  line 1\n  ERROR cannot start gossip: boom"),
            "{err}"
        );
        assert!(!err.contains("port in use"));
    }

    #[test]
    fn log_tail_shows_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&f, text).unwrap();
        let tail = log_tail(&f, 3);
        assert_eq!(tail, ["line 28", "line 29", "line 30"]);
        assert!(log_tail(&dir.path().join("none"), 3).is_empty());
    }
}
