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

/// The ports the README's own start uses (`db slave 55551 & ...`, `db
/// local`, the default seeds of a loopback node given none): no test may
/// bind them or gossip towards them.
pub const RESERVED_PORTS: std::ops::RangeInclusive<u16> = 55551..=55560;

/// Panics unless `cmd`, if it runs `db` (directly or after a wrapper such as
/// `ip netns exec NS`), stays off [`RESERVED_PORTS`]: a node (`node`,
/// `slave`, `master`) must be told where to gossip, with `--seed` or a
/// `--config` file holding `seed` (else a loopback node seeds itself from
/// 55551-55560), `db local` needs `--base-port` and `db repl`/`db leave`
/// `--connect`, and no argument may name a reserved port. A node on port 0
/// is exempt: `db` refuses it before anything starts. Returns `cmd`, so
/// that `checked(&mut cmd).spawn()` reads as one step.
pub fn checked(cmd: &mut Command) -> &mut Command {
    let mut argv: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(at) = argv.iter().position(|a| a == db_bin()) else {
        return cmd;
    };
    argv.drain(..=at);
    let shown = argv.join(" ");
    for a in &argv {
        let port = a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        assert!(
            !port.is_some_and(|p| RESERVED_PORTS.contains(&p)),
            "`db {shown}` names a port of {RESERVED_PORTS:?}, reserved for the README's start"
        );
    }
    let has = |flag: &str| {
        argv.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let value = |flag: &str| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let sub = argv.first().map(String::as_str).unwrap_or_default();
    if has("--help") || has("-h") {
        return cmd;
    }
    match sub {
        "node" | "slave" | "master" => {
            let port_zero = argv.get(1).is_some_and(|p| p == "0")
                || value("--listen").is_some_and(|l| l.ends_with(":0"));
            let file_seeds = value("--config").is_some_and(|f| {
                std::fs::read_to_string(f).is_ok_and(|t| {
                    t.lines()
                        .any(|l| l.split('=').next().is_some_and(|k| k.trim() == "seed"))
                })
            });
            assert!(
                port_zero || has("--seed") || file_seeds,
                "`db {shown}` starts a node without --seed: it would gossip towards \
                 {RESERVED_PORTS:?}, reserved for the README's start"
            );
        }
        "local" => assert!(
            has("--base-port"),
            "`db {shown}` without --base-port starts on {RESERVED_PORTS:?}"
        ),
        "repl" | "leave" => assert!(
            has("--connect"),
            "`db {shown}` without --connect talks to 127.0.0.1:55551"
        ),
        _ => {}
    }
    cmd
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

/// `n` distinct ports from [`free_port`].
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < n {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports
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
    /// The user and password the harness authenticates with (nodes started
    /// with ACL users), if any.
    pub auth: Option<(String, String)>,
}

impl Cluster {
    /// Starts `n` nodes that seed from each other and waits until every node
    /// sees every other as live.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra flags for every node.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_opts(n, extra, false, None)
    }

    /// A cluster whose nodes keep their data in data directories.
    pub fn start_durable(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_opts(n, extra, true, None)
    }

    /// [`Cluster::start_with`] for nodes whose clients must authenticate:
    /// the harness (and [`Cluster::client`]) authenticates as `user` with
    /// `password`.
    pub fn start_as(n: usize, extra: &[&str], user: &str, password: &str) -> Cluster {
        Cluster::start_opts(n, extra, false, Some((user.into(), password.into())))
    }

    fn start_opts(
        n: usize,
        extra: &[&str],
        durable: bool,
        auth: Option<(String, String)>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster_id = format!("test-{}", rand::random::<u64>());
        let ports = free_ports(n);
        let mut cluster = Cluster {
            nodes: Vec::new(),
            cluster_id,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            durable,
            auth,
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
        let child = checked(&mut cmd).spawn().expect("db starts");
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
            let auth = self.auth.as_ref();
            wait_until(Duration::from_secs(60), "the cluster to converge", || {
                let live = live_nodes_as(&addr, auth);
                running.iter().all(|id| live.contains(id)) && layout_settled_as(&addr, auth)
            });
        }
    }

    /// A connection to node `i` (authenticated, for a cluster with users).
    pub fn client(&self, i: usize) -> Client {
        connect_as(&self.nodes[i].addr(), self.auth.as_ref()).expect("connect")
    }

    /// Runs one command on node `i`.
    pub fn cmd(&self, i: usize, args: &[&str]) -> Frame {
        self.client(i).call(args).expect("call")
    }

    /// Every value `key` holds (its siblings), sorted, read through node
    /// `i` with `VGET key R=r`.
    pub fn siblings(&self, i: usize, key: &str, r: usize) -> Vec<Frame> {
        match self.cmd(i, &["VGET", key, &format!("R={r}")]) {
            Frame::Array(items) if !items.is_empty() => {
                let mut values: Vec<Frame> = items.into_iter().skip(1).collect();
                values.sort_by_key(|f| format!("{f:?}"));
                values
            }
            other => panic!("VGET {key}: {other:?}"),
        }
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

/// True when the node at `addr` follows a layout whose change, if any, is
/// carried out (RING says `settled`): a test that starts by stopping a node
/// must not catch the cluster in the middle of a join.
pub fn layout_settled(addr: &str) -> bool {
    layout_settled_as(addr, None)
}

/// A connection to `addr`, authenticated as `auth` (user, password) if given.
pub fn connect_as(addr: &str, auth: Option<&(String, String)>) -> std::io::Result<Client> {
    let mut c = Client::connect(addr)?;
    if let Some((user, password)) = auth {
        let reply = c.call(&["AUTH", user, password])?;
        if reply != Frame::ok() {
            return Err(std::io::Error::other(format!("AUTH {user}: {reply:?}")));
        }
    }
    Ok(c)
}

/// [`layout_settled`], authenticated as `auth`.
pub fn layout_settled_as(addr: &str, auth: Option<&(String, String)>) -> bool {
    let Ok(mut c) = connect_as(addr, auth) else {
        return false;
    };
    match c.call(&["RING"]).ok().and_then(|f| f.text()) {
        Some(text) => text.lines().next().is_some_and(|l| l.contains("settled")),
        None => false,
    }
}

/// Node ids `addr` reports as live in NODES (empty if unreachable).
pub fn live_nodes(addr: &str) -> Vec<String> {
    live_nodes_as(addr, None)
}

/// [`live_nodes`], authenticated as `auth`.
pub fn live_nodes_as(addr: &str, auth: Option<&(String, String)>) -> Vec<String> {
    let Ok(mut c) = connect_as(addr, auth) else {
        return Vec::new();
    };
    match c.call(&["NODES"]).ok().and_then(|f| f.text()) {
        Some(text) => text
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
        checked(&mut cmd);
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

/// Waits for `child` to exit, killing it after `within`, and collects its
/// output (what a short-lived tool writes fits in the pipe meanwhile).
pub fn output_within(mut child: Child, within: Duration) -> std::process::Output {
    let deadline = Instant::now() + within;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child
        .wait_with_output()
        .expect("the output of a child process")
}

/// Reads a file if it exists.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn sock(addr: &str) -> SocketAddr {
    addr.parse().expect("socket address")
}

/// `n` consecutive ports free for a node (TCP as a node binds it, and UDP),
/// below the ephemeral range.
pub fn free_block(n: u16) -> u16 {
    for _ in 0..1000 {
        let base = 20000 + (rand::random::<u16>() % (12000 - n));
        if (base..base + n)
            .all(|p| distro_db::local::ports::check(std::net::Ipv4Addr::LOCALHOST, p).is_ok())
        {
            return base;
        }
    }
    panic!("no block of {n} free ports found");
}

/// True while something accepts TCP connections on `port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// Stops the nodes on `ports` (those still running) by sending SHUTDOWN
/// when dropped: for nodes a test did not start itself (`db local`'s
/// children), so a failing test leaves nothing running.
pub struct ShutdownOnDrop(pub Vec<u16>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        for &p in &self.0 {
            if let Ok(mut c) =
                Client::connect_with(&format!("127.0.0.1:{p}"), Duration::from_secs(5))
            {
                let _ = c.call(&["SHUTDOWN"]);
            }
        }
    }
}

/// A process on a pseudo-terminal: the test holds the master side, the
/// process has the slave side as its controlling terminal (stdin, stdout,
/// stderr), as when a user runs it in a terminal window.
pub struct PtyProc {
    pub child: Child,
    master: std::fs::File,
    /// A descriptor of the terminal itself, to read its settings.
    slave: std::os::fd::OwnedFd,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl PtyProc {
    pub fn spawn(mut cmd: Command) -> PtyProc {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty fills two descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both descriptors were just opened and are owned here only.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we pass.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().expect("dup pty"));
        cmd.stdin(fd(&slave)).stdout(fd(&slave)).stderr(fd(&slave));
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe; they make
        // the pty the child's controlling terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = checked(&mut cmd).spawn().expect("process starts on a pty");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (out, mut reader) = (output.clone(), master.try_clone().expect("dup"));
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            // Ends when the last process holding the terminal exits (EIO).
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        PtyProc {
            child,
            master,
            slave,
            output,
        }
    }

    /// Everything the process wrote so far, as text.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the output contains `text` `times` times.
    pub fn wait_for(&self, text: &str, times: usize) {
        wait_until(
            Duration::from_secs(30),
            &format!("{text:?} on the terminal"),
            || self.screen().matches(text).count() >= times,
        );
    }

    /// Types bytes at the terminal.
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to pty");
        self.master.flush().expect("flush pty");
    }

    /// The terminal's ECHO and ICANON flags (true, true when it is usable
    /// by a shell again).
    pub fn echo_and_canonical(&self) -> (bool, bool) {
        use std::os::fd::AsRawFd;
        // SAFETY: a zeroed termios is valid; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr on a pty descriptor we own.
        let rc = unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) };
        assert_eq!(rc, 0, "tcgetattr");
        (t.c_lflag & libc::ECHO != 0, t.c_lflag & libc::ICANON != 0)
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
                "process did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PtyProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A peer connection to `addr`, past the preamble and the handshake, as a
/// node of cluster `cluster_id` without a secret would open it.
pub fn peer_connect(addr: &str, cluster_id: &str) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nonblocking(true).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut t = tokio::net::TcpStream::from_std(s).unwrap();
        t.write_all(&distro_db::rpc::frame::PREAMBLE).await.unwrap();
        let key = distro_db::rpc::auth::PeerKey::derive(b"", cluster_id);
        distro_db::rpc::auth::client(&mut t, &key)
            .await
            .expect("the peer handshake");
        t.into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// True when `program` runs; on CI a missing tool is a failure, elsewhere
/// the test says it skipped.
pub fn have(program: &str, arg: &str) -> bool {
    let ok = Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing on CI (.ci/run installs it)"
        );
        eprintln!("{program} not installed: skipped");
    }
    ok
}

/// A Python with redis-py (installed under target/ if the system has none).
pub fn python_with_redis() -> Option<(String, Option<PathBuf>)> {
    if !have("python3", "--version") {
        return None;
    }
    let imports = |path: Option<&PathBuf>| {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import redis, sys; sys.exit(int(redis.__version__.split('.')[0]) < 5)",
        ]);
        if let Some(p) = path {
            cmd.env("PYTHONPATH", p);
        }
        cmd.stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports(None) {
        return Some(("python3".into(), None));
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pydeps");
    if !imports(Some(&target)) {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&target)
            .arg("redis>=5")
            .status();
        assert!(
            status.is_ok_and(|s| s.success()) && imports(Some(&target)),
            "redis-py is missing and `pip install redis` failed (.ci/run installs it)"
        );
    }
    Some(("python3".into(), Some(target)))
}
