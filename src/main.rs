//! The `db` binary: command-line parsing, logging set-up, and dispatch to
//! the library (a node, a master with its REPL, a REPL client, a local cluster).

/// mimalloc: the node allocates many small, short-lived buffers per request
/// (frames, objects, replies); glibc malloc spent ~12% of a node's CPU on
/// them under load. Called through [`distro_db::heap::Heap`], which keeps
/// ordinary allocations off mimalloc's aligned path.
#[global_allocator]
static GLOBAL: distro_db::heap::Heap = distro_db::heap::Heap;

use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use distro_db::config::Config;
use distro_db::logs::LogTo;
use distro_db::{node, repl};

/// distro-db: a leaderless, Dynamo-style distributed key-value store.
///
/// Every node is equal. Start a few (`db slave 55551 & db slave 55552 & db master 55553`),
/// or a whole local cluster with `db local`, then type HELP at the prompt.
#[derive(Parser, Debug)]
#[command(name = "db", version, about, long_about, after_help = ENVIRONMENT)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The environment variables `db` reads, shown under `db --help`.
const ENVIRONMENT: &str = "\
Configuration: `db node`, `db slave` and `db master` take `--config FILE`, a TOML file whose keys are
their long flags (docs/distro-db.example.toml). A flag on the command line wins over its environment
variable, which wins over the file, which wins over the default.

Environment:
  DISTRO_DB_PASSWORD        a node's --password; for `db repl`, `db leave` and `db local`, the
                            password to AUTH with (`db bench` takes --password)
  DISTRO_DB_USER            the user `db repl`, `db leave` and `db local` AUTH as
  DISTRO_DB_USERS           a node's client users (NAME:PASSWORD:RIGHTS separated by white space)
  DISTRO_DB_CLUSTER_SECRET  a node's --cluster-secret
  RUST_LOG                  a node's --log filter (and the log filter of every other command)
  TMPDIR                    where `db local` and nodes without --data-dir write their log files";

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
        /// Write logs here; `-` for standard error. Default: standard error,
        /// unless it is a terminal (then <data-dir>/node.log or a file in the
        /// temp directory, named on start).
        #[arg(long, value_name = "FILE")]
        log_file: Option<String>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Run a node on 127.0.0.1:PORT (or --host) without a prompt.
    Slave {
        /// Port to listen on (1-65535).
        #[arg(value_parser = port_arg)]
        port: u16,
        /// Host to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Address peers and clients reach this node at (needed with --host 0.0.0.0).
        #[arg(long, value_name = "ADDR")]
        advertise: Option<String>,
        /// Write logs here; `-` for standard error. Default: standard error,
        /// unless it is a terminal (then <data-dir>/node.log or a file in the
        /// temp directory, named on start).
        #[arg(long, value_name = "FILE")]
        log_file: Option<String>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Run a node on 127.0.0.1:PORT (or --host) with the REPL on this
    /// terminal (EXIT there stops this node).
    Master {
        /// Port to listen on (1-65535).
        #[arg(value_parser = port_arg)]
        port: u16,
        /// Host to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Address peers and clients reach this node at (needed with --host 0.0.0.0).
        #[arg(long, value_name = "ADDR")]
        advertise: Option<String>,
        /// Write logs here (default: <data-dir>/node.log, or a file in the temp directory).
        #[arg(long, value_name = "FILE")]
        log_file: Option<String>,
        #[command(flatten)]
        opts: NodeOpts,
    },
    /// Open the REPL against a running node. With piped input, one answer a
    /// line, and a non-zero exit status if a command got an error answer.
    #[command(after_help = CLIENT_ENVIRONMENT)]
    Repl {
        /// The node to talk to.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:55551")]
        connect: String,
        #[command(flatten)]
        tls: distro_db::tls::ClientArgs,
        /// Authenticate as this user, with the password in DISTRO_DB_PASSWORD
        /// (default: DISTRO_DB_USER, else the default user).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Ask a running node to leave the cluster: it hands every partition it
    /// owns to the nodes that take them over, then stops. Waits until it has.
    #[command(after_help = CLIENT_ENVIRONMENT)]
    Leave {
        /// The node that leaves.
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        /// Give up waiting after this many seconds (the node still leaves).
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
        #[command(flatten)]
        tls: distro_db::tls::ClientArgs,
        /// Authenticate as this user (it needs the admin right), with the
        /// password in DISTRO_DB_PASSWORD (default: DISTRO_DB_USER, else the
        /// default user).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Copy a point-in-time snapshot of one running node's store into a new
    /// directory, with a checksummed MANIFEST (needs the admin right).
    Backup {
        /// The node to back up.
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        /// The backup directory (must be new or empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        tls: distro_db::tls::ClientArgs,
        /// Authenticate as this user (it needs the admin right), with the
        /// password in DISTRO_DB_PASSWORD.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Verify a backup and prepare a data directory from it; start a node
    /// on that directory afterwards (it takes a new vector-clock epoch).
    Restore {
        /// The backup directory (made by db backup).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The data directory to prepare (must be new or empty).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Refuse a backup older than this (the cluster's --tombstone-grace-s).
        #[arg(long, default_value_t = 86_400)]
        tombstone_grace_s: u64,
        /// Restore a backup older than the grace period anyway (deleted keys
        /// may come back).
        #[arg(long)]
        accept_old: bool,
    },
    /// Export every live key of a cluster, with its clock and siblings, into
    /// FILE; run again with the same FILE to resume (needs the admin right).
    Dump {
        /// A node of the cluster.
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        /// The dump file (created, or resumed).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        tls: distro_db::tls::ClientArgs,
        /// Authenticate as this user (admin right), password in DISTRO_DB_PASSWORD.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Merge every object of a dump file into a cluster by clock (needs the
    /// admin right).
    Load {
        /// A node of the cluster.
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        /// The dump file (made by db dump).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Write quorum of each object (default: the node's W).
        #[arg(long)]
        w: Option<usize>,
        #[command(flatten)]
        tls: distro_db::tls::ClientArgs,
        /// Authenticate as this user (admin right), password in DISTRO_DB_PASSWORD.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Start a local cluster (every node a background process) and open the
    /// REPL against it; EXIT leaves the cluster running, QUIT stops it.
    #[command(after_help = LOCAL_ENVIRONMENT)]
    Local {
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=10))]
        nodes: u16,
        /// Port of the first node; the others follow [default: 55551, or the
        /// next free block of ports if that one is taken].
        #[arg(long, value_parser = port_arg)]
        base_port: Option<u16>,
        #[command(flatten)]
        replication: Replication,
        /// Keep each node's data in DIR/node-PORT (default: in memory), so
        /// that a node restarted on it comes back with its data.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// TLS only, for clients and peers: makes a throwaway CA and a node
        /// certificate (in <data-dir>/tls, or $TMPDIR/distro-db-local-PORT-tls),
        /// starts every node with them, connects the REPL over TLS, and
        /// prints the `redis-cli --tls --cacert` line that reaches the cluster.
        #[arg(long)]
        tls: bool,
        /// Flags passed to every node, after `--` (`db local -- --fsync never
        /// --sibling-reads error`); see `db slave --help`. `db local` sets
        /// --seed, --node-id, --log-file, --threads, --n, --r, --w,
        /// --data-dir and (with --tls) --tls-cert, --tls-key, --tls-ca itself.
        #[arg(last = true, value_name = "NODE FLAGS")]
        node_flags: Vec<String>,
        /// Serve each node's metrics and status page: node i on this port
        /// plus i (the URLs are printed at start).
        #[arg(long, value_parser = port_arg, value_name = "PORT")]
        metrics_port: Option<u16>,
    },
    /// Load a running cluster (or Redis, or etcd): runs the `db-bench` load
    /// generator with these arguments (`db bench --help` shows its options).
    ///
    /// `db-bench` is built next to `db` (`cargo build --release` builds both);
    /// `db bench` runs the one in this binary's directory, else the one on PATH.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Bench {
        /// Arguments passed to `db-bench` unchanged.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

/// A port argument: 1-65535. Port 0 would make the node listen on a random
/// port that no peer or client knows.
fn port_arg(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 is not allowed: the node would listen on a random port that peers and clients cannot know; give a port from 1 to 65535".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("'{s}' is not a port (1-65535)")),
    }
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
    /// Seconds a delete's tombstone is kept before it may be collected (it
    /// is collected only when every node is live and holds it, and no hint
    /// for the key is left; see docs/failures.md). Also how long a retired
    /// epoch's vector-clock entries are kept beyond the 3 most recent of a
    /// node (at most 8; docs/storage.md, "Bounded clocks").
    #[arg(long, default_value_t = 86_400, value_name = "SECS")]
    tombstone_grace_s: u64,
    /// Pace of partition transfers when the layout changes, in MB/s per
    /// node (0: as fast as the network and disk allow).
    #[arg(long, default_value_t = 50, value_name = "MB")]
    transfer_mb_per_s: u64,
    /// With --data-dir: size at which the log's active segment is closed
    /// and a new one started (1K to 1G; K, M and G are powers of 1024).
    /// Smaller segments are compacted sooner and in smaller steps.
    #[arg(long, default_value = "64MiB", value_parser = distro_db::config::parse_size, value_name = "SIZE")]
    segment_size: u64,
    /// With --data-dir: milliseconds between checks for closed segments to
    /// compact (those at most half live) and index files to write.
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    compaction_interval_ms: u64,
    /// Share of reads sent to every replica rather than R (0..1), so that
    /// read repair also reaches replicas a quorum read would not ask.
    #[arg(long, default_value_t = 0.1)]
    read_repair_chance: f64,
    /// Seed for the node's random choices (for reproducible runs).
    #[arg(long)]
    rng_seed: Option<u64>,
    /// With --fsync always: under concurrent writes, start a sync at most
    /// every this many microseconds, so that each covers more writes (a lone
    /// writer never waits; 0: sync as soon as asked).
    #[arg(long, default_value_t = 1000, value_name = "US")]
    group_commit_us: u64,
    /// Worker threads of the node's runtime (0: one per core). 1 runs the
    /// node on one thread, which suits several nodes sharing a machine.
    /// Default: one per core for `db node`, which is meant to have a
    /// machine of its own; 1 for `db slave` and `db master`, which start
    /// several nodes on one machine (as `db local` does).
    #[arg(long)]
    threads: Option<usize>,
    /// Client connections accepted at once (peers have a reserved share on top).
    #[arg(long, default_value_t = distro_db::limits::defaults::MAX_CLIENTS)]
    max_clients: usize,
    /// Password clients must give (AUTH, or HELLO ... AUTH) before any other
    /// command. Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        env = "DISTRO_DB_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    password: Option<String>,
    /// A client user with its rights, NAME:PASSWORD:RIGHTS, where RIGHTS is
    /// `read`, `readwrite` or `admin` (repeatable). Prefer --users-file or
    /// the environment variable DISTRO_DB_USERS (specs separated by white
    /// space): a flag shows in `ps`. With users and no --password, clients
    /// must AUTH as one of them.
    #[arg(long = "user", value_name = "NAME:PASSWORD:RIGHTS")]
    users: Vec<String>,
    /// Read client users from this file: one NAME:PASSWORD:RIGHTS per line
    /// (blank lines and # comments skipped).
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
    /// The secret every node of the cluster holds: peer connections
    /// authenticate both ways with it (HMAC challenge-response; it never
    /// crosses the wire). Prefer the environment variable or the file: a flag
    /// shows in `ps`. Without one a node serves peers only on loopback.
    #[arg(
        long,
        env = "DISTRO_DB_CLUSTER_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        conflicts_with = "cluster_secret_file"
    )]
    cluster_secret: Option<String>,
    /// Read the cluster secret from this file (its first line).
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Serve peers on a non-loopback address without a cluster secret
    /// (anyone who reaches the port can then join, read, write or stop the
    /// cluster).
    #[arg(long)]
    insecure_peers: bool,
    /// What a plain GET answers for a key holding concurrent values:
    /// `pick` (the most recently written one; VGET shows them all) or
    /// `error` (a CONFLICT error pointing to VGET).
    #[arg(long, default_value = "pick", value_name = "pick|error")]
    sibling_reads: distro_db::config::SiblingReads,
    /// Memory (MiB) that requests being read or served may hold, node-wide;
    /// past it, readers wait instead of the node growing.
    #[arg(long, default_value_t = distro_db::limits::defaults::REQUEST_BYTES >> 20)]
    request_memory_mb: usize,
    /// Hinted keys this node holds for any one other node; past it, new
    /// hints for that node are refused (counted in STATUS) and anti-entropy
    /// brings it what they would have carried.
    #[arg(long, default_value_t = distro_db::hints::DEFAULT_MAX_HINTS_PER_NODE, value_name = "N")]
    max_hints_per_node: usize,
    /// Bytes of hints this node holds in total, for all other nodes (K, M
    /// and G are powers of 1024); past it, new hints are refused.
    #[arg(long, default_value_t = distro_db::hints::DEFAULT_MAX_HINT_BYTES, value_parser = distro_db::config::parse_size, value_name = "SIZE")]
    max_hint_bytes: u64,
    /// Serve Prometheus metrics (/metrics), /health, /ready and a status
    /// page (/) over HTTP on this address, e.g. 127.0.0.1:9100 (port 0:
    /// any free port, named in the log). Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    tls: distro_db::tls::ServerArgs,
    #[command(flatten)]
    log: distro_db::logs::LogArgs,
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("invalid address '{addr}'"))?
        .next()
        .with_context(|| format!("'{addr}' resolves to no address"))
}

fn build_config(
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    o: &NodeOpts,
) -> anyhow::Result<Config> {
    let mut c = Config::new(listen);
    if let Some(a) = advertise {
        c.advertise = a;
        c.node_id = distro_db::config::default_node_id(a);
    }
    if let Some(id) = &o.node_id {
        c.node_id = id.clone();
        c.node_id_given = true;
    }
    if !o.seeds.is_empty() {
        c.seeds = o.seeds.clone();
    }
    c.data_dir = o.data_dir.clone();
    c.cluster_id = o.cluster_id.clone();
    c.n = o.replication.n;
    c.r = o.replication.r;
    c.w = o.replication.w;
    c.request_timeout = Duration::from_millis(o.timeout_ms.max(1));
    c.gossip_interval = Duration::from_millis(o.gossip_interval_ms.max(10));
    c.phi_threshold = o.phi;
    c.fault_injection = o.fault_injection;
    c.fsync = o.fsync;
    c.aae_interval = Duration::from_millis(o.aae_interval_ms);
    c.segment_size = o.segment_size;
    c.transfer_mb_per_s = o.transfer_mb_per_s;
    c.tombstone_grace = Duration::from_secs(o.tombstone_grace_s);
    c.compaction_interval = Duration::from_millis(o.compaction_interval_ms.max(10));
    c.read_repair_chance = o.read_repair_chance.clamp(0.0, 1.0);
    c.threads = o.threads.unwrap_or(0);
    c.group_commit_window = Duration::from_micros(o.group_commit_us);
    c.rng_seed = o.rng_seed;
    c.limits.max_clients = o.max_clients.max(1);
    c.limits.request_bytes = o.request_memory_mb.max(1) << 20;
    c.password = o
        .password
        .as_ref()
        .filter(|p| !p.is_empty())
        .map(distro_db::config::Secret::new);
    // DISTRO_DB_PASSWORD is both the tools' password and a node's
    // --password: set beside DISTRO_DB_USER it is some user's password, and
    // would make it the default user's, with every right.
    if c.password.is_some()
        && std::env::var_os(distro_db::client::USER_ENV).is_some_and(|u| !u.is_empty())
        && std::env::var(distro_db::client::PASSWORD_ENV).ok() == o.password
    {
        anyhow::bail!(
            "DISTRO_DB_PASSWORD is set together with DISTRO_DB_USER (a client's credentials): \
             for a node it would be the default user's password, with every right. Unset \
             DISTRO_DB_USER to mean that, or start the node without these variables"
        );
    }
    c.users = distro_db::acl::gather_users(
        &o.users,
        o.users_file.as_deref(),
        std::env::var(distro_db::acl::USERS_ENV).ok().as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    c.insecure_peers = o.insecure_peers;
    c.cluster_secret = match (&o.cluster_secret, &o.cluster_secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the cluster secret file {}", f.display()))?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    }
    .map(|s| {
        if s.is_empty() {
            anyhow::bail!("the cluster secret is empty");
        }
        Ok(distro_db::config::Secret::new(s))
    })
    .transpose()?;
    c.sibling_reads = o.sibling_reads;
    c.hint_limits.per_node = o.max_hints_per_node;
    c.hint_limits.bytes = o.max_hint_bytes;
    c.tls = o.tls.config();
    c.metrics = o.metrics.as_deref().map(resolve).transpose()?;
    Ok(c)
}

/// The default log file of a node: `<data-dir>/node.log`, or
/// `$TMPDIR/distro-db-node-<port>.log`.
fn default_log(config: &Config) -> PathBuf {
    match &config.data_dir {
        Some(d) => d.join("node.log"),
        None => {
            std::env::temp_dir().join(format!("distro-db-node-{}.log", config.advertise.port()))
        }
    }
}

/// Where `db node` and `db slave` log: `--log-file` if given (`-` is
/// standard error); else standard error, unless it is a terminal, where the
/// logs would garble the prompt of whatever runs in the foreground.
fn node_log(log_file: Option<&str>, config: &Config) -> LogTo {
    match log_file {
        Some("-") => LogTo::Stderr,
        Some(f) => LogTo::File(PathBuf::from(f)),
        None if std::io::stderr().is_terminal() => LogTo::File(default_log(config)),
        None => LogTo::Stderr,
    }
}

/// Checks a node's configuration before anything starts; prints warnings
/// on standard error (they matter to whoever starts the node) and names the
/// flag to fix for an unspecified address.
fn check_config(config: &Config, bind_flag: &str) -> anyhow::Result<()> {
    if config.listen.port() == 0 {
        anyhow::bail!(
            "port 0 is not allowed: the node would listen on a random port that peers and clients cannot know"
        );
    }
    if config.advertise.port() == 0 {
        anyhow::bail!("--advertise needs a real port, not 0");
    }
    if config.advertise.ip().is_unspecified() {
        anyhow::bail!(
            "{bind_flag} {} listens on every interface, but peers and clients need one address to reach this node: pass --advertise IP:{} with an address of this machine they can reach",
            config.listen.ip(),
            config.listen.port()
        );
    }
    for w in config.validate().map_err(anyhow::Error::msg)? {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn main() {
    let cli: Cli = distro_db::config_file::parse(&["node", "slave", "master"]);
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            distro_db::repl::lineedit::restore_terminal();
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runtime threads of a node started by `db slave` or `db master` when
/// `--threads` is not given: those commands start several nodes on one
/// machine, and a multi-thread runtime per node then has more workers than
/// the machine has cores. Measured on 2 cores, three nodes, 50 clients,
/// durable SET: one thread each gave 15.8k/s at p99 6.7 ms, one per core
/// 11.7k/s at p99 20 ms (docs/benchmarks.md).
const SHARED_MACHINE_THREADS: usize = 1;

/// The async runtime a node runs on: one thread (tokio's current-thread
/// scheduler: no work stealing, no cross-thread wake-ups) when `threads` is
/// 1, else a multi-thread scheduler with `threads` workers (0: one per core).
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a command; returns the exit status.
fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Cmd::Node {
            listen,
            advertise,
            log_file,
            opts,
        } => {
            let listen = resolve(&listen)?;
            let advertise = advertise.map(|a| resolve(&a)).transpose()?;
            let config = build_config(listen, advertise, &opts)?;
            check_config(&config, "--listen")?;
            start_logs(&node_log(log_file.as_deref(), &config), &config, &opts.log)?;
            run_node(config)
        }
        Cmd::Slave {
            port,
            host,
            advertise,
            log_file,
            opts,
        } => {
            let listen = resolve(&format!("{host}:{port}"))?;
            let advertise = advertise.map(|a| resolve(&a)).transpose()?;
            let mut config = build_config(listen, advertise, &opts)?;
            config.threads = opts.threads.unwrap_or(SHARED_MACHINE_THREADS);
            check_config(&config, "--host")?;
            start_logs(&node_log(log_file.as_deref(), &config), &config, &opts.log)?;
            run_node(config)
        }
        Cmd::Master {
            port,
            host,
            advertise,
            log_file,
            opts,
        } => {
            let listen = resolve(&format!("{host}:{port}"))?;
            let advertise = advertise.map(|a| resolve(&a)).transpose()?;
            let mut config = build_config(listen, advertise, &opts)?;
            config.threads = opts.threads.unwrap_or(SHARED_MACHINE_THREADS);
            check_config(&config, "--host")?;
            // The REPL owns this terminal: logs go to a file unless asked.
            let to = match log_file.as_deref() {
                Some("-") => LogTo::Stderr,
                Some(f) => LogTo::File(PathBuf::from(f)),
                None => LogTo::File(default_log(&config)),
            };
            start_logs(&to, &config, &opts.log)?;
            run_master(config)
        }
        Cmd::Repl { connect, tls, user } => {
            use_tls(&tls)?;
            let (_, failed) = repl::run_client(&connect, user.as_deref())?;
            // A script that pipes commands in learns that one failed.
            if failed > 0 && !std::io::stdin().is_terminal() {
                eprintln!(
                    "db repl: {} got an error answer",
                    distro_db::text::count(failed as u64, "command")
                );
                return Ok(1);
            }
            Ok(0)
        }
        Cmd::Bench { args } => run_bench(&args),
        Cmd::Leave {
            connect,
            wait_secs,
            tls,
            user,
        } => {
            use_tls(&tls)?;
            leave(&connect, Duration::from_secs(wait_secs), user.as_deref())
        }
        Cmd::Backup {
            connect,
            out,
            tls,
            user,
        } => {
            use_tls(&tls)?;
            let s = distro_db::backup::backup(&connect, &out, user.as_deref())?;
            eprintln!("{}", s.backed_up(&connect, &out));
            Ok(0)
        }
        Cmd::Restore {
            from,
            data_dir,
            tombstone_grace_s,
            accept_old,
        } => {
            let s = distro_db::backup::restore(&distro_db::backup::RestoreOptions {
                from,
                data_dir: data_dir.clone(),
                max_age: Duration::from_secs(tombstone_grace_s),
                accept_old,
            })?;
            eprintln!("{}", s.restored(&data_dir));
            Ok(0)
        }
        Cmd::Dump {
            connect,
            out,
            tls,
            user,
        } => {
            use_tls(&tls)?;
            let r = distro_db::dump::dump(&connect, &out, user.as_deref())?;
            eprintln!("{}", r.dumped(&out));
            Ok(0)
        }
        Cmd::Load {
            connect,
            from,
            w,
            tls,
            user,
        } => {
            use_tls(&tls)?;
            let r = distro_db::dump::load(&connect, &from, user.as_deref(), w)?;
            eprintln!("{}", r.loaded(&connect));
            Ok(0)
        }
        Cmd::Local {
            nodes,
            base_port,
            replication: Replication { n, r, w },
            data_dir,
            tls,
            node_flags,
            metrics_port,
        } => {
            check_node_flags(&node_flags)?;
            distro_db::local::run(&distro_db::local::Options {
                nodes,
                base_port,
                n,
                r,
                w,
                data_dir,
                node_flags,
                metrics_port,
                tls,
            })
        }
    }
}

/// The environment `db local` reads, shown under `db local --help`.
const LOCAL_ENVIRONMENT: &str = "\
Environment:
  DISTRO_DB_PASSWORD        the password the REPL AUTHs with; the nodes, which inherit the
                            environment, take it as their --password (with DISTRO_DB_USER unset)
  DISTRO_DB_USER            the user the REPL AUTHs as
  DISTRO_DB_USERS           the nodes' client users (NAME:PASSWORD:RIGHTS separated by white space)
  DISTRO_DB_CLUSTER_SECRET  the nodes' cluster secret
  RUST_LOG                  the nodes' log filter
  TMPDIR                    where the nodes' log files go (distro-db-node-PORT.log)";

/// The environment `db repl` and `db leave` read, shown under their `--help`.
const CLIENT_ENVIRONMENT: &str = "\
Environment:
  DISTRO_DB_USER      the user to AUTH as (when --user is not given)
  DISTRO_DB_PASSWORD  the password to AUTH with (of that user, or of the default user)";

/// Checks the node flags `db local` passes on, before anything starts:
/// they must parse as `db slave`'s, and not be ones `db local` sets.
fn check_node_flags(flags: &[String]) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    const SET_BY_LOCAL: [&str; 13] = [
        "seeds",
        "node_id",
        "log_file",
        "threads",
        "n",
        "r",
        "w",
        "data_dir",
        "host",
        "advertise",
        "tls_cert",
        "tls_key",
        "tls_ca",
    ];
    if flags
        .iter()
        .any(|f| f == "--config" || f.starts_with("--config="))
    {
        anyhow::bail!("--config is not for db local's nodes: pass their flags after --");
    }
    let argv = ["db", "slave", "1"]
        .into_iter()
        .map(String::from)
        .chain(flags.iter().cloned());
    let matches = Cli::command().try_get_matches_from(argv).map_err(|e| {
        anyhow::anyhow!(
            "node flags after --: {}",
            e.render()
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
        )
    })?;
    if let Some((_, m)) = matches.subcommand() {
        for id in SET_BY_LOCAL {
            if m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                anyhow::bail!(
                    "node flags after --: db local sets --{} itself{}",
                    id.replace('_', "-").replace("seeds", "seed"),
                    match id {
                        "n" | "r" | "w" | "data_dir" => " (give it before the --)",
                        "tls_cert" | "tls_key" | "tls_ca" => " (with --tls, before the --)",
                        _ => "",
                    }
                );
            }
        }
    }
    Ok(())
}

/// Makes this process's client connections use TLS if `--tls` says so.
fn use_tls(args: &distro_db::tls::ClientArgs) -> anyhow::Result<()> {
    if let Some(tls) = args.load()? {
        distro_db::client::use_tls(tls);
    }
    Ok(())
}

/// Sets up logging; when logs go to a file, says where in one line.
fn start_logs(to: &LogTo, config: &Config, log: &distro_db::logs::LogArgs) -> anyhow::Result<()> {
    distro_db::logs::init(to, log)?;
    if let LogTo::File(path) = to {
        // One write, so the lines of nodes started together in one terminal
        // (`db slave 55551 & db slave 55552 & ...`) do not interleave.
        let line = format!(
            "{} on {}, logs: {}\n",
            config.node_id,
            config.advertise,
            path.display()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    Ok(())
}

/// Runs `db bench ARGS`: replaces this process with `db-bench ARGS` (from
/// this binary's directory, else PATH), so its output, signals and exit
/// status are the load generator's own. Returns only on failure.
fn run_bench(args: &[std::ffi::OsString]) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt as _;
    let sibling = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("db-bench"))
        .filter(|p| p.is_file());
    let program = sibling
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("db-bench"));
    let err = std::process::Command::new(&program).args(args).exec();
    if err.kind() == std::io::ErrorKind::NotFound && sibling.is_none() {
        anyhow::bail!(
            "db bench runs the load generator db-bench, which is neither next to this binary nor on PATH: \
             build it with `cargo build --release` (it builds both; `-p distro-db-bench` for it alone) \
             or install it with `cargo install --path benches/loadgen`"
        );
    }
    Err(anyhow::Error::new(err).context(format!("cannot run {}", program.display())))
}

/// Starts a node; if that fails because its port is taken, says by what.
async fn start_node(config: Config) -> anyhow::Result<Arc<node::Node>> {
    let listen = config.listen;
    node::start(config).await.map_err(|e| {
        let in_use = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
                || c.to_string().contains("in use")
        });
        match listen.ip() {
            std::net::IpAddr::V4(ip) if in_use => {
                match distro_db::local::ports::check(ip, listen.port()) {
                    Err(busy) => e.context(busy.explained().to_string()),
                    Ok(()) => e,
                }
            }
            _ => e,
        }
    })
}

fn run_node(config: Config) -> anyhow::Result<i32> {
    runtime(config.threads)?.block_on(async {
        let node = start_node(config).await?;
        node::run_until_stopped(node).await;
        Ok(0)
    })
}

/// Runs a node with the REPL on this terminal. The REPL ending (QUIT, EXIT,
/// end of input, KILL of this node) stops the node; so does the node being
/// stopped from elsewhere, and SIGTERM/SIGHUP/SIGINT sent to the process
/// (which also restores the terminal and exits non-zero).
fn run_master(config: Config) -> anyhow::Result<i32> {
    if let Some(tls) = &config.tls {
        // The REPL connects to this node as a client would.
        distro_db::client::use_tls(distro_db::tls::NodeTls::load(tls)?.own_client());
    }
    let rt = runtime(config.threads)?;
    let node = rt.block_on(start_node(config))?;
    let (sig_tx, mut sig_rx) = tokio::sync::mpsc::unbounded_channel();
    distro_db::local::signals::on_termination(move |sig| {
        let _ = sig_tx.send(sig);
    })
    .context("cannot install signal handlers")?;
    distro_db::local::signals::ignore_terminal_interrupt(true);
    let addr = node.config.advertise.to_string();
    let repl_thread =
        std::thread::spawn(move || repl::run_with_prompt(&addr, "db> ", repl::Mode::Master));
    let stopped = node.stopped.clone();
    let code = rt.block_on(async {
        // The REPL ends (QUIT, EXIT, end of input) or the node is stopped from elsewhere.
        let repl_done = async {
            while !repl_thread.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            repl_thread.join()
        };
        let code = tokio::select! {
            r = repl_done => {
                match r {
                    Ok(Err(e)) => eprintln!("repl: {e:#}"),
                    Ok(Ok(repl::Outcome::Exit)) => eprintln!(
                        "EXIT: stopping {} (this REPL is its terminal); the other nodes keep running",
                        node.id()
                    ),
                    Ok(Ok(repl::Outcome::Quit)) => {
                        eprintln!("QUIT: every node was told to stop, {} too", node.id())
                    }
                    _ => {}
                }
                0
            }
            _ = stopped.cancelled() => {
                repl::lineedit::restore_terminal();
                eprintln!("{} was stopped (KILL, SHUTDOWN or QUIT from a client); exiting", node.id());
                0
            }
            Some(sig) = sig_rx.recv() => {
                repl::lineedit::restore_terminal();
                eprintln!("{} received; stopping {}", distro_db::local::signals::name(sig), node.id());
                128 + sig
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), node::stop(&node))
            .await
            .is_err()
        {
            eprintln!("{} did not stop within 10 s", node.id());
        } else {
            eprintln!("{} stopped", node.id());
        }
        code
    });
    // The REPL thread may still be blocked reading the terminal; returning
    // from main ends the process without it.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(code)
}

/// `db leave --connect ADDR`: sends LEAVE, then waits (bounded) until the
/// node has handed its partitions over and stopped.
fn leave(addr: &str, wait: Duration, user: Option<&str>) -> anyhow::Result<i32> {
    use distro_db::resp::Frame;
    let mut client = distro_db::client::Client::connect(addr)
        .with_context(|| format!("cannot connect to {addr}"))?;
    if let Some(creds) =
        distro_db::client::credentials_from_env(user).map_err(anyhow::Error::msg)?
    {
        client.auth_as(&creds).context("AUTH failed")?;
    }
    match client.call(&["LEAVE"]).context("LEAVE")? {
        Frame::Simple(s) => eprintln!("{s}"),
        Frame::Error(e) => anyhow::bail!("{e}"),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if distro_db::client::Client::connect(addr).is_err() {
            eprintln!("{addr} has left the cluster and stopped");
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{addr} is still handing its partitions over after {wait:?} (see RING on it)");
    Ok(1)
}
