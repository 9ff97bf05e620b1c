//! Node configuration: one [`Config`] with every tunable and its default in
//! one place, and the rules that derive defaults (node id, seeds).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default replication factor.
pub const DEFAULT_N: usize = 3;
/// Default read quorum.
pub const DEFAULT_R: usize = 2;
/// Default write quorum.
pub const DEFAULT_W: usize = 2;
/// The local port range a loopback node seeds itself from when given no seed.
pub const DEFAULT_LOCAL_PORTS: std::ops::RangeInclusive<u16> = 55551..=55560;
/// Default cluster name; nodes only gossip with nodes of the same cluster.
pub const DEFAULT_CLUSTER_ID: &str = "distro-db";
/// Largest key accepted.
pub const MAX_KEY_LEN: usize = 16 * 1024;
/// Largest value accepted.
pub const MAX_VALUE_LEN: usize = 8 * 1024 * 1024;
/// Largest total of sibling values under one key (keeps replication frames bounded).
pub const MAX_OBJECT_VALUE_BYTES: usize = 32 * 1024 * 1024;

/// What a plain `GET` answers when a key holds concurrent values (siblings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SiblingReads {
    /// The most recently written one (then the highest dot): every reader
    /// gets the same single value, and the siblings stay stored until a
    /// write resolves them.
    #[default]
    Pick,
    /// An error naming the count and pointing to `VGET`.
    Error,
}

impl std::fmt::Display for SiblingReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SiblingReads::Pick => "pick",
            SiblingReads::Error => "error",
        })
    }
}

impl std::str::FromStr for SiblingReads {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pick" => Ok(SiblingReads::Pick),
            "error" => Ok(SiblingReads::Error),
            other => Err(format!("expected `pick` or `error`, got `{other}`")),
        }
    }
}

/// A password: compared, never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret's bytes (to derive keys from; never logged).
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// True when `given` is the password (compared in constant time).
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        let mut diff = want.len() ^ given.len();
        for (i, b) in given.iter().enumerate() {
            diff |= usize::from(b ^ want.get(i % want.len().max(1)).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The caps on hint storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintLimits {
    /// Hinted keys held for one owner (`--max-hints-per-node`).
    pub per_node: usize,
    /// Bytes of hinted objects (as encoded in the store) held in total,
    /// whatever their owner (`--max-hint-bytes`).
    pub bytes: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            per_node: DEFAULT_MAX_HINTS_PER_NODE,
            bytes: DEFAULT_MAX_HINT_BYTES,
        }
    }
}

/// Default cap on the hinted keys a node holds for one other node
/// (`--max-hints-per-node`).
pub const DEFAULT_MAX_HINTS_PER_NODE: usize = 1_000_000;
/// Default cap on the bytes of hints a node holds in total (`--max-hint-bytes`).
pub const DEFAULT_MAX_HINT_BYTES: u64 = 1 << 30;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (unique in the cluster; the ring derives tokens from it).
    pub node_id: String,
    /// True when the id was given explicitly (`--node-id`): a data directory
    /// made for another id is then refused instead of winning.
    pub node_id_given: bool,
    /// TCP (clients and peers) and UDP (gossip) address to bind.
    pub listen: SocketAddr,
    /// Address peers and clients use to reach this node.
    pub advertise: SocketAddr,
    /// Gossip addresses of seed nodes.
    pub seeds: Vec<String>,
    /// Name shared by the cluster's nodes.
    pub cluster_id: String,
    /// Where the node keeps its data; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Replicas per key.
    pub n: usize,
    /// Default read quorum.
    pub r: usize,
    /// Default write quorum.
    pub w: usize,
    /// Time a coordinator waits for replicas.
    pub request_timeout: Duration,
    /// A read that has not heard from R replicas after this asks the others too.
    pub read_hedge: Duration,
    /// Share of reads sent to every replica (not only R), so that read repair
    /// also reaches replicas a plain quorum read would not ask.
    pub read_repair_chance: f64,
    /// Seed for the node's random choices (none: a fresh one per run).
    pub rng_seed: Option<u64>,
    /// Worker threads of the node's runtime (0: one per core; 1: a
    /// single-threaded runtime).
    pub threads: usize,
    /// Gossip round period.
    pub gossip_interval: Duration,
    /// Phi-accrual threshold above which a peer is considered down.
    pub phi_threshold: f64,
    /// Accept FAULT commands (tests only).
    pub fault_injection: bool,
    /// When the durable store syncs writes to disk (with a data directory).
    pub fsync: crate::storage::FsyncPolicy,
    /// With `--fsync always`: under concurrent writes, syncs start at most
    /// this often (a lone writer never waits).
    pub group_commit_window: Duration,
    /// Pause between anti-entropy exchanges (zero turns them off).
    pub aae_interval: Duration,
    /// How old a tombstone must be before it may be collected.
    pub tombstone_grace: Duration,
    /// Pace of partition transfers after a layout change (MB/s; 0: unpaced).
    pub transfer_mb_per_s: u64,
    /// Size at which the durable store's active log segment rolls over.
    pub segment_size: u64,
    /// How often the durable store looks for segments to compact.
    pub compaction_interval: Duration,
    /// Connection and request-memory limits of the node's port.
    pub limits: crate::limits::ServerLimits,
    /// The password clients must give (`AUTH`, `HELLO ... AUTH`); none: no
    /// authentication.
    pub password: Option<Secret>,
    /// Client users with their rights (`--user`, `--users-file`,
    /// `DISTRO_DB_USERS`; see [`crate::acl`]).
    pub users: Vec<crate::acl::UserSpec>,
    /// The cluster secret peers prove they hold (`--cluster-secret`); none:
    /// peers authenticate nothing, and the node must listen on loopback
    /// unless `insecure_peers`.
    pub cluster_secret: Option<Secret>,
    /// Serve peers without a cluster secret on a non-loopback address.
    pub insecure_peers: bool,
    /// What a plain `GET` answers for a key with siblings.
    pub sibling_reads: SiblingReads,
    /// Caps on the hints this node holds for others.
    pub hint_limits: HintLimits,
    /// TLS for clients and peers (none: plain text).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Where to serve `/metrics`, `/health`, `/ready` and the status page
    /// (`--metrics`; none: not served). Once the node runs, the bound address.
    pub metrics: Option<SocketAddr>,
}

impl Config {
    /// A configuration for a node on `listen` with every default.
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            node_id: default_node_id(listen),
            node_id_given: false,
            listen,
            advertise: listen,
            seeds: default_seeds(listen),
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            data_dir: None,
            n: DEFAULT_N,
            r: DEFAULT_R,
            w: DEFAULT_W,
            request_timeout: Duration::from_secs(2),
            read_hedge: Duration::from_millis(50),
            read_repair_chance: 0.1,
            rng_seed: None,
            threads: 0,
            gossip_interval: Duration::from_millis(200),
            phi_threshold: 10.0,
            fault_injection: false,
            fsync: crate::storage::FsyncPolicy::Always,
            group_commit_window: Duration::from_millis(1),
            aae_interval: Duration::from_secs(10),
            transfer_mb_per_s: 50,
            tombstone_grace: Duration::from_secs(86_400),
            segment_size: crate::storage::LogOptions::default().segment_size,
            compaction_interval: crate::storage::LogOptions::default().compaction_interval,
            limits: crate::limits::ServerLimits::default(),
            password: None,
            users: Vec::new(),
            cluster_secret: None,
            insecure_peers: false,
            sibling_reads: SiblingReads::Pick,
            hint_limits: HintLimits::default(),
            tls: None,
            metrics: None,
        }
    }

    /// The key peers prove they hold: from the cluster secret (or the
    /// empty one) and the cluster id.
    pub fn peer_key(&self) -> crate::rpc::auth::PeerKey {
        let secret = self.cluster_secret.as_ref().map_or(&[][..], Secret::expose);
        crate::rpc::auth::PeerKey::derive(secret, &self.cluster_id)
    }

    /// The key context tokens are authenticated with: from the cluster
    /// secret (or the empty one) and the cluster id, as the peer key.
    pub fn context_key(&self) -> crate::token::ContextKey {
        let secret = self.cluster_secret.as_ref().map_or(&[][..], Secret::expose);
        crate::token::ContextKey::derive(secret, &self.cluster_id)
    }

    /// Checks the values make sense together; returns warnings worth logging.
    pub fn validate(&self) -> Result<Vec<String>, String> {
        if self.n == 0 || self.r == 0 || self.w == 0 {
            return Err("N, R and W must be at least 1".into());
        }
        if self.r > self.n || self.w > self.n {
            return Err(format!(
                "R ({}) and W ({}) cannot exceed N ({})",
                self.r, self.w, self.n
            ));
        }
        if !crate::identity::valid_id(&self.node_id) {
            return Err("node id must be 1 to 64 characters without spaces".into());
        }
        if self.advertise.ip().is_unspecified() {
            return Err(format!(
                "cannot advertise {}: peers and clients need one address to reach this node; pass --advertise IP:PORT",
                self.advertise
            ));
        }
        crate::acl::Acl::new(self.password.as_ref(), &self.users)?;
        if self.cluster_secret.is_none()
            && !self.insecure_peers
            && !(self.listen.ip().is_loopback() && self.advertise.ip().is_loopback())
        {
            return Err(format!(
                "refusing to serve peers on {} without a cluster secret: anyone who reaches the \
                 port could join, read, write or stop the cluster. Give every node the same \
                 --cluster-secret-file FILE (or DISTRO_DB_CLUSTER_SECRET), or pass \
                 --insecure-peers on a network you trust",
                self.listen
            ));
        }
        let mut warnings = Vec::new();
        if self.cluster_secret.is_none() && self.insecure_peers {
            warnings
                .push("--insecure-peers: peer connections and gossip are not authenticated".into());
        }
        if self.r + self.w <= self.n {
            warnings.push(format!(
                "R + W <= N ({} + {} <= {}): a read may miss the latest acknowledged write",
                self.r, self.w, self.n
            ));
        }
        Ok(warnings)
    }
}

/// Parses a byte size: a number with an optional unit, `K`/`KiB`, `M`/`MiB`
/// or `G`/`GiB` (powers of 1024; case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 64MiB, 512K, 1048576)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (use K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// `node-PORT` on loopback, `node-IP-PORT` elsewhere.
pub fn default_node_id(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("node-{}", addr.port())
    } else {
        format!("node-{}-{}", addr.ip(), addr.port())
    }
}

/// With no `--seed`, a loopback node seeds itself from the default local
/// port range (so `db slave 55551 & db slave 55552 & db master 55553` finds
/// each other); elsewhere there is no default seed.
pub fn default_seeds(listen: SocketAddr) -> Vec<String> {
    if listen.ip().is_loopback() {
        DEFAULT_LOCAL_PORTS
            .filter(|&p| p != listen.port())
            .map(|p| SocketAddr::new(listen.ip(), p).to_string())
            .collect()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_size("99999999999G")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn defaults() {
        let c = Config::new("127.0.0.1:55552".parse().unwrap());
        assert_eq!(c.node_id, "node-55552");
        assert_eq!(c.seeds.len(), 9);
        assert!(!c.seeds.contains(&"127.0.0.1:55552".to_string()));
        assert!(c.validate().unwrap().is_empty());
        let far = Config::new("10.1.2.3:7000".parse().unwrap());
        assert_eq!(far.node_id, "node-10.1.2.3-7000");
        assert!(far.seeds.is_empty());
        let mut bad = c.clone();
        bad.r = 4;
        assert!(bad.validate().is_err());
        bad.r = 1;
        bad.w = 1;
        assert_eq!(bad.validate().unwrap().len(), 1);
        let mut any = c.clone();
        any.advertise = "0.0.0.0:7000".parse().unwrap();
        assert!(
            any.validate()
                .unwrap_err()
                .contains("pass --advertise IP:PORT")
        );
    }
}
