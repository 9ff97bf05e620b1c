//! The `db` binary: command-line parsing, logging set-up, and dispatch to
//! the library (a node, a master with its REPL, a REPL client, a local cluster).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use distro_db::config::Config;
use distro_db::local::LocalCluster;
use distro_db::{node, repl};
use tracing_subscriber::EnvFilter;

/// distro-db: a leaderless, Dynamo-style distributed key-value store.
///
/// Every node is equal. Start a few (`db slave 55551 & db slave 55552 & db master 55553`),
/// or a whole local cluster with `db local`, then type HELP at the prompt.
#[derive(Parser, Debug)]
#[command(name = "db", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node on an explicit address (for real deployments).
    Node {
        /// Address to listen on (TCP for clients and peers, UDP for gossip, same port).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Address peers and clients reach this node at (default: --listen).
        #[arg(long, value_name = "ADDR")]
        advertise: Option<String>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Run a node on 127.0.0.1:PORT (or --host) without a prompt.
    Slave {
        /// Port to listen on.
        port: u16,
        /// Host to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Run a node on 127.0.0.1:PORT (or --host) with the REPL on this terminal.
    Master {
        /// Port to listen on.
        port: u16,
        /// Host to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Write logs here (default: <data-dir>/node.log, or a file in the temp directory).
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Open the REPL against a running node.
    Repl {
        /// The node to talk to.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:55551")]
        connect: String,
    },
    /// Start a local cluster (peer processes plus a master with the REPL).
    Local {
        /// Number of nodes, master included.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=10))]
        nodes: u16,
        /// Port of the first node; the others follow.
        #[arg(long, default_value_t = 55551)]
        base_port: u16,
        #[command(flatten)]
        replication: Replication,
    },
    /// Load a running cluster (or Redis, or etcd) and report throughput and latency.
    ///
    /// A closed loop: each of --connections keeps exactly --pipeline requests in
    /// flight. Prints a table on standard output (and JSON with --json FILE),
    /// a progress line on standard error while it runs (when that is a terminal).
    /// Examples: `db bench --target 127.0.0.1:55551,127.0.0.1:55552 --workload mix`;
    /// `db bench --protocol etcd --target 127.0.0.1:2379 --workload get`.
    Bench(distro_db::bench::BenchArgs),
}

/// Replication factor and quorums.
#[derive(Args, Debug, Clone, Copy)]
struct Replication {
    /// Replicas per key (N).
    #[arg(long, default_value_t = distro_db::config::DEFAULT_N)]
    n: usize,
    /// Default read quorum (R).
    #[arg(long, default_value_t = distro_db::config::DEFAULT_R)]
    r: usize,
    /// Default write quorum (W).
    #[arg(long, default_value_t = distro_db::config::DEFAULT_W)]
    w: usize,
}

/// Flags every node takes.
#[derive(Args, Debug, Clone)]
struct NodeOpts {
    /// Gossip address of a seed node (repeatable, or comma-separated). Default on loopback: the
    /// local port range 55551-55560; elsewhere none.
    #[arg(long = "seed", value_name = "ADDR", value_delimiter = ',')]
    seeds: Vec<String>,
    /// Node id (default: node-PORT on loopback, node-IP-PORT elsewhere).
    #[arg(long)]
    node_id: Option<String>,
    /// Directory for this node's files (default: none, data kept in memory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Cluster name: nodes gossip only with nodes of the same name.
    #[arg(long, default_value = distro_db::config::DEFAULT_CLUSTER_ID)]
    cluster_id: String,
    #[command(flatten)]
    replication: Replication,
    /// Virtual nodes per member on the ring.
    #[arg(long, default_value_t = distro_db::ring::DEFAULT_VNODES)]
    vnodes: usize,
    /// Milliseconds a coordinator waits for replicas.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Milliseconds between gossip rounds.
    #[arg(long, default_value_t = 200)]
    gossip_interval_ms: u64,
    /// Phi-accrual threshold above which a silent peer is marked down.
    #[arg(long, default_value_t = 10.0)]
    phi: f64,
    /// Accept FAULT commands that drop or delay this node's traffic (for tests).
    #[arg(long)]
    fault_injection: bool,
    /// When writes reach the disk (with --data-dir): `always` (acknowledge
    /// after fsync, concurrent writes share one), `interval:<ms>`, or `never`.
    #[arg(long, default_value = "always", value_name = "POLICY")]
    fsync: distro_db::storage::FsyncPolicy,
    /// Milliseconds between anti-entropy exchanges with a peer (0: off).
    #[arg(long, default_value_t = 10_000)]
    aae_interval_ms: u64,
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("invalid address '{addr}'"))?
        .next()
        .with_context(|| format!("'{addr}' resolves to no address"))
}

fn build_config(listen: SocketAddr, advertise: Option<SocketAddr>, o: &NodeOpts) -> Config {
    let mut c = Config::new(listen);
    if let Some(a) = advertise {
        c.advertise = a;
        c.node_id = distro_db::config::default_node_id(a);
    }
    if let Some(id) = &o.node_id {
        c.node_id = id.clone();
    }
    if !o.seeds.is_empty() {
        c.seeds = o.seeds.clone();
    }
    c.data_dir = o.data_dir.clone();
    c.cluster_id = o.cluster_id.clone();
    c.n = o.replication.n;
    c.r = o.replication.r;
    c.w = o.replication.w;
    c.vnodes = o.vnodes;
    c.request_timeout = Duration::from_millis(o.timeout_ms.max(1));
    c.gossip_interval = Duration::from_millis(o.gossip_interval_ms.max(10));
    c.phi_threshold = o.phi;
    c.fault_injection = o.fault_injection;
    c.fsync = o.fsync;
    c.aae_interval = Duration::from_millis(o.aae_interval_ms);
    c
}

fn init_logs(file: Option<&PathBuf>) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,chitchat=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            builder.with_ansi(false).with_writer(Arc::new(f)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Node {
            listen,
            advertise,
            opts,
        } => {
            init_logs(None)?;
            let listen = resolve(&listen)?;
            let advertise = advertise.map(|a| resolve(&a)).transpose()?;
            run_node(build_config(listen, advertise, &opts))
        }
        Cmd::Slave { port, host, opts } => {
            init_logs(None)?;
            let listen = resolve(&format!("{host}:{port}"))?;
            run_node(build_config(listen, None, &opts))
        }
        Cmd::Master {
            port,
            host,
            log_file,
            opts,
        } => {
            let listen = resolve(&format!("{host}:{port}"))?;
            let config = build_config(listen, None, &opts);
            let log = log_file.unwrap_or_else(|| match &config.data_dir {
                Some(d) => d.join("node.log"),
                None => std::env::temp_dir().join(format!("distro-db-{}.log", config.node_id)),
            });
            if let Some(parent) = log.parent() {
                std::fs::create_dir_all(parent).ok();
            }
            init_logs(Some(&log))?;
            eprintln!(
                "{} on {} (logs: {})",
                config.node_id,
                config.advertise,
                log.display()
            );
            run_master(config, None)
        }
        Cmd::Repl { connect } => repl::run(&connect),
        Cmd::Bench(args) => run_bench(&args),
        Cmd::Local {
            nodes,
            base_port,
            replication: Replication { n, r, w },
        } => {
            let cluster = LocalCluster {
                nodes,
                base_port,
                node_flags: vec![format!("--n={n}"), format!("--r={r}"), format!("--w={w}")],
            };
            let master = distro_db::local::master_addr(&cluster);
            let log = LocalCluster::log_path(master.port());
            init_logs(Some(&log))?;
            let peers = cluster.start_peers()?;
            let mut config = Config::new(master);
            config.seeds = cluster.seeds();
            config.n = n;
            config.r = r;
            config.w = w;
            eprintln!(
                "starting {nodes} nodes on 127.0.0.1:{}..{} (logs: {})",
                base_port,
                master.port(),
                std::env::temp_dir().join("distro-db-node-*.log").display()
            );
            let result = run_master(config, Some(nodes as usize));
            peers.stop(Duration::from_secs(3));
            result
        }
    }
}

/// Runs `db bench`: the report goes to standard output (it is the tool's
/// output), and to the --json file if given.
fn run_bench(args: &distro_db::bench::BenchArgs) -> anyhow::Result<()> {
    init_logs(None)?;
    let config = args.validate()?;
    let report = runtime()?.block_on(distro_db::bench::run(config))?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json() + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.ok == 0 {
        anyhow::bail!("no request succeeded");
    }
    Ok(())
}

fn run_node(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let node = node::start(config).await?;
        node::run_until_stopped(node).await;
        Ok(())
    })
}

/// Runs a node with the REPL on this terminal. With `wait_for`, waits
/// (bounded) until that many nodes are live before showing the prompt.
fn run_master(config: Config, wait_for: Option<usize>) -> anyhow::Result<()> {
    let rt = runtime()?;
    let node = rt.block_on(node::start(config))?;
    if let Some(count) = wait_for {
        let deadline = Instant::now() + Duration::from_secs(15);
        while node.membership.view().live.len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let live = node.membership.view().live.len();
        if live < count {
            eprintln!("warning: only {live} of {count} nodes are up; see the logs");
        } else {
            eprintln!("cluster of {count} nodes is up");
        }
    }
    let addr = node.config.advertise.to_string();
    let repl_thread = std::thread::spawn(move || repl::run_with_prompt(&addr, "db> "));
    let stopped = node.stopped.clone();
    rt.block_on(async {
        // The REPL ends (QUIT, EXIT, end of input) or the node is stopped from elsewhere.
        let repl_done = async {
            while !repl_thread.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            repl_thread.join()
        };
        tokio::select! {
            r = repl_done => {
                if let Ok(Err(e)) = r {
                    eprintln!("repl: {e:#}");
                }
            }
            _ = stopped.cancelled() => {}
        }
        node::stop(&node).await;
    });
    // The REPL thread may still be blocked reading the terminal; returning
    // from main ends the process without it.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
