//! `db local`: a whole cluster on this machine for trying distro-db.
//!
//! Starts `nodes - 1` peer processes (`db slave PORT`, this same binary, logs
//! in the temp directory) and runs the last node in this process as the
//! master with its REPL. When the REPL ends (QUIT stops every node; EXIT or
//! end of input leaves the peers running), the peers still running are sent
//! SIGTERM and, if they do not stop within a few seconds, killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// What `db local` starts.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    /// Number of nodes, master included.
    pub nodes: u16,
    /// Port of the first node; the others follow.
    pub base_port: u16,
    /// Extra flags passed to every node (N, R, W, ...).
    pub node_flags: Vec<String>,
}

/// The peer processes of a local cluster; stopped when dropped.
pub struct Peers {
    children: Vec<(u16, Child)>,
}

impl LocalCluster {
    /// Ports of every node, master last.
    pub fn ports(&self) -> Vec<u16> {
        (0..self.nodes).map(|i| self.base_port + i).collect()
    }

    /// Seeds every node gets: all the cluster's addresses.
    pub fn seeds(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Log file of the node on `port`.
    pub fn log_path(port: u16) -> PathBuf {
        std::env::temp_dir().join(format!("distro-db-node-{port}.log"))
    }

    /// Starts the peer processes (every node but the last).
    pub fn start_peers(&self) -> anyhow::Result<Peers> {
        let exe = std::env::current_exe().context("cannot find the db binary")?;
        let mut peers = Peers {
            children: Vec::new(),
        };
        let ports = self.ports();
        for &port in &ports[..ports.len().saturating_sub(1)] {
            let log = LocalCluster::log_path(port);
            let file = std::fs::File::create(&log)
                .with_context(|| format!("cannot create {}", log.display()))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("slave").arg(port.to_string());
            for s in self.seeds() {
                cmd.arg("--seed").arg(s);
            }
            cmd.args(&self.node_flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(file));
            let child = cmd.spawn().context("cannot start a peer process")?;
            peers.children.push((port, child));
        }
        // A peer that cannot bind its port exits at once: report it.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            for (port, child) in &mut peers.children {
                if let Ok(Some(status)) = child.try_wait() {
                    anyhow::bail!(
                        "the node on port {port} exited at start ({status}); is the port in use? see {}",
                        LocalCluster::log_path(*port).display()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(peers)
    }
}

impl Peers {
    /// Asks the peers still running to stop (SIGTERM, a graceful stop),
    /// waits for them (bounded), then kills those still running.
    pub fn stop(mut self, grace: Duration) {
        for (_, child) in &mut self.children {
            if let Ok(None) = child.try_wait()
                && let Ok(pid) = i32::try_from(child.id())
            {
                // SAFETY: kill(2) on the PID of a child we spawned and have
                // not reaped; no memory is involved.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        for (_, child) in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Drop kills whatever is left.
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The master's address in a local cluster.
pub fn master_addr(cluster: &LocalCluster) -> SocketAddr {
    let port = *cluster.ports().last().unwrap_or(&cluster.base_port);
    SocketAddr::from(([127, 0, 0, 1], port))
}
