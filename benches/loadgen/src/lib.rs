//! `db-bench` (also run as `db bench`): a closed-loop load generator for
//! distro-db, for Redis (both speak RESP) and for etcd (through its v3
//! HTTP/JSON gateway). A crate of its own, so that what only the generator
//! needs stays out of the server; it uses the server's RESP limits and TLS
//! client.
//!
//! This module owns the generator: its options ([`BenchArgs`], validated into
//! a [`BenchConfig`]), the connection tasks, the request encoders, a
//! non-allocating RESP reply scanner and a minimal HTTP/1.1 response parser,
//! the latency histograms and the [`Report`] (text table and JSON).
//!
//! Closed loop: each connection writes `pipeline` commands in one write,
//! reads that many replies, and repeats, so exactly `pipeline` requests are in
//! flight per connection. Every request of a batch gets the batch's round
//! trip as its latency. Requests that complete during the warm-up are not
//! counted. The run ends at `--duration` or after `--requests` counted
//! requests, whichever comes first; every socket operation has a timeout and a
//! broken connection is re-opened a bounded number of times.
//!
//! The generator tries to stay cheap (one request buffer and one reply buffer
//! per connection, reused; replies are scanned, not decoded into frames) and
//! reports its own CPU time, so a reader can see what it took from the servers.

use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tracing::{info, warn};

use distro_db::resp::{DecodeError, MAX_ARRAY_LEN, MAX_BULK_LEN, MAX_DEPTH, MAX_LINE_LEN};

/// Where the load goes when no `--target` is given: the first node of `db local`.
pub const DEFAULT_TARGET: &str = "127.0.0.1:55551";
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one batch: writing it and reading every reply. A node
/// answers within its own request timeout (2 s by default), so a batch that
/// takes longer means a stuck connection.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Times one connection may be re-opened after an error before it gives up.
const MAX_RECONNECTS: u32 = 5;
/// Most connections one run opens (distro-db itself serves 1024 clients per node).
pub const MAX_CONNECTIONS: usize = 4096;
/// Deepest pipeline accepted.
pub const MAX_PIPELINE: usize = 1024;
/// Largest value accepted: well under the servers' bulk-string limits.
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;
/// Longest run accepted (`--duration` and `--warmup`), in seconds.
const MAX_SECONDS: f64 = 24.0 * 3600.0;
/// Highest latency the histograms hold, in microseconds (higher values are
/// clamped). Well above [`BATCH_TIMEOUT`].
const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Largest HTTP response head (status line and headers).
const MAX_HTTP_HEAD: usize = 64 * 1024;
/// Largest HTTP response body.
const MAX_HTTP_BODY: usize = 64 * 1024 * 1024;
/// Error replies whose text is logged, per run (the rest are only counted).
const LOGGED_ERRORS: u64 = 5;

/// What each request does.
#[derive(clap::ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `SET key value` (etcd: put) on random keys.
    Set,
    /// `GET key` (etcd: range) on random keys.
    Get,
    /// GET with probability `--read-ratio`, SET otherwise.
    Mix,
    /// SET every key of the keyspace once, in order (`key:0` .. `key:N-1`):
    /// loads a data set. Ignores `--requests` and `--warmup`.
    Fill,
}

/// The wire protocol spoken to the targets.
#[derive(clap::ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RESP: distro-db, Redis.
    Resp,
    /// etcd v3's HTTP/JSON gateway (`POST /v3/kv/put`, `POST /v3/kv/range`), HTTP/1.1 keep-alive.
    Etcd,
}

/// The options of `db bench`, as parsed from the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to load (repeatable, or comma-separated). Connections are spread
    /// round-robin over the targets.
    #[arg(long = "target", value_name = "HOST:PORT", value_delimiter = ',', default_value = DEFAULT_TARGET)]
    pub targets: Vec<String>,
    /// Connections (clients) in total.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// Commands in flight per connection (written in one write, then all replies read).
    #[arg(short = 'P', long, default_value_t = 1, value_name = "DEPTH")]
    pub pipeline: usize,
    /// Size of each value, in bytes.
    #[arg(short = 'd', long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,
    /// Number of distinct keys: keys are `key:<n>`, n uniform in 0..N.
    #[arg(short = 'r', long, default_value_t = 100_000, value_name = "N")]
    pub keyspace: u64,
    /// Zero-pad n in `key:<n>` to this many digits (12 gives redis-benchmark's
    /// `key:000000000042`, so both tools read and write the same keys).
    #[arg(long, default_value_t = 0, value_name = "DIGITS")]
    pub key_width: usize,
    /// What each request does (fill: SET each key of the keyspace once, in order).
    #[arg(long, value_enum, default_value_t = Workload::Set)]
    pub workload: Workload,
    /// Share of GETs in the `mix` workload.
    #[arg(long, default_value_t = 0.9, value_name = "RATIO")]
    pub read_ratio: f64,
    /// Measured seconds (after the warm-up); the run ends at this or at --requests, whichever comes first.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Counted requests in total (default: no limit, --duration ends the run).
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,
    /// Seconds of load before counting starts.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub warmup: f64,
    /// Seed of the key and operation generators (default: random; printed in the report).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Send `AUTH <password>` on each connection first (RESP only).
    #[arg(long)]
    pub password: Option<String>,
    /// With --password: send `AUTH <user> <password>` (an ACL user).
    #[arg(long, value_name = "NAME", requires = "password")]
    pub user: Option<String>,
    /// No progress line on standard error.
    #[arg(long)]
    pub quiet: bool,
    /// Protocol: `resp` (SET/GET) or `etcd` (the v3 HTTP/JSON gateway: put/range; pipeline must be 1).
    #[arg(long, value_enum, default_value_t = Protocol::Resp)]
    pub protocol: Protocol,
    /// Follow each SET with `WAITAOF LOCAL REPLICAS TIMEOUT_MS` in the same
    /// write (Redis >= 7.2, Valkey): the pair is one request, acknowledged
    /// when the WAITAOF reply counts at least LOCAL local and REPLICAS replica
    /// AOF fsyncs (fewer is an error reply). TIMEOUT_MS defaults to 0: wait
    /// as long as it takes, up to the batch timeout.
    #[arg(long, value_name = "LOCAL,REPLICAS[,TIMEOUT_MS]", value_parser = parse_wait_aof)]
    pub wait_aof: Option<WaitAof>,
    /// Act as a Redis Cluster client: read the slot map (CLUSTER SLOTS) from
    /// the first target once, and send each key to the master of its slot
    /// (each connection holds one socket per master; MOVED and ASK replies
    /// count as errors).
    #[arg(long)]
    pub cluster: bool,
    /// TLS to the targets (`--tls --tls-ca FILE`).
    #[command(flatten)]
    pub tls: distro_db::tls::ClientArgs,
}

/// `--wait-aof`: what each SET's WAITAOF asks for.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitAof {
    /// Local AOF fsyncs to wait for (0 or 1).
    pub local: u64,
    /// Replicas whose AOF fsync to wait for.
    pub replicas: u64,
    /// WAITAOF's own timeout in milliseconds (0: none).
    pub timeout_ms: u64,
}

/// Parses `LOCAL,REPLICAS[,TIMEOUT_MS]`.
pub fn parse_wait_aof(text: &str) -> Result<WaitAof, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let num = |s: &str, what: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("{what} must be a whole number, got '{s}'"))
    };
    let (local, replicas, timeout_ms) = match parts.as_slice() {
        [l, r] => (num(l, "LOCAL")?, num(r, "REPLICAS")?, 0),
        [l, r, t] => (num(l, "LOCAL")?, num(r, "REPLICAS")?, num(t, "TIMEOUT_MS")?),
        _ => {
            return Err(format!(
                "expected LOCAL,REPLICAS[,TIMEOUT_MS], got '{text}'"
            ));
        }
    };
    if local > 1 {
        return Err(format!("LOCAL is 0 or 1 (WAITAOF's numlocal), got {local}"));
    }
    if replicas > 1000 {
        return Err(format!("REPLICAS must be at most 1000, got {replicas}"));
    }
    Ok(WaitAof {
        local,
        replicas,
        timeout_ms,
    })
}

/// Why options were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `--target`.
    #[error("no --target given")]
    NoTarget,
    /// A target that does not resolve.
    #[error("invalid --target '{0}': {1}")]
    BadTarget(String, String),
    /// A number outside its range.
    #[error("--{name} must be {range}, got {value}")]
    OutOfRange {
        /// The option.
        name: &'static str,
        /// What is accepted.
        range: String,
        /// What was given.
        value: String,
    },
    /// etcd's gateway is driven one request per connection at a time.
    #[error("--protocol etcd needs --pipeline 1 (HTTP/1.1 requests are not pipelined), got {0}")]
    EtcdPipeline(usize),
    /// AUTH is a RESP command.
    #[error("--password is only supported with --protocol resp")]
    EtcdPassword,
    /// WAITAOF and CLUSTER SLOTS are RESP commands.
    #[error("--{0} is only supported with --protocol resp")]
    RespOnly(&'static str),
    /// A TLS file that cannot be used.
    #[error("{0}")]
    Tls(String),
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Target addresses, resolved, in the order given.
    pub targets: Vec<SocketAddr>,
    /// The targets as given (for the report and the HTTP `Host` header).
    pub target_names: Vec<String>,
    /// Connections in total.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Number of distinct keys.
    pub keyspace: u64,
    /// Digits n is zero-padded to in `key:<n>`.
    pub key_width: usize,
    /// What each request does.
    pub workload: Workload,
    /// Share of reads in `mix`.
    pub read_ratio: f64,
    /// Measured time limit.
    pub duration: Duration,
    /// Counted requests limit.
    pub requests: Option<u64>,
    /// Uncounted load before measuring.
    pub warmup: Duration,
    /// Generator seed.
    pub seed: u64,
    /// AUTH password, if any.
    pub password: Option<String>,
    /// AUTH user, if any (with a password).
    pub user: Option<String>,
    /// Show the progress line (when standard error is a terminal).
    pub progress: bool,
    /// Wire protocol.
    pub protocol: Protocol,
    /// TLS to the targets (none: plain text).
    pub tls: Option<distro_db::tls::ClientTls>,
    /// Each SET is followed by this WAITAOF.
    pub wait_aof: Option<WaitAof>,
    /// Route keys by the slot map of the first target ([`run`] reads it).
    pub cluster: bool,
}

fn out_of_range(name: &'static str, range: &str, value: impl ToString) -> ConfigError {
    ConfigError::OutOfRange {
        name,
        range: range.to_string(),
        value: value.to_string(),
    }
}

fn seconds(name: &'static str, secs: f64, zero_ok: bool) -> Result<Duration, ConfigError> {
    let low_ok = if zero_ok { secs >= 0.0 } else { secs > 0.0 };
    if !secs.is_finite() || !low_ok || secs > MAX_SECONDS {
        let range = if zero_ok {
            "between 0 and 86400 seconds"
        } else {
            "more than 0 and at most 86400 seconds"
        };
        return Err(out_of_range(name, range, secs));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl BenchArgs {
    /// Checks every option and resolves the targets.
    pub fn validate(&self) -> Result<BenchConfig, ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::NoTarget);
        }
        let mut targets = Vec::with_capacity(self.targets.len());
        let mut names = Vec::with_capacity(self.targets.len());
        for t in &self.targets {
            let t = t.trim();
            if t.is_empty() {
                return Err(ConfigError::NoTarget);
            }
            let addr = t
                .to_socket_addrs()
                .map_err(|e| ConfigError::BadTarget(t.to_string(), e.to_string()))?
                .next()
                .ok_or_else(|| ConfigError::BadTarget(t.to_string(), "no address".into()))?;
            targets.push(addr);
            names.push(t.to_string());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(out_of_range(
                "connections",
                &format!("between 1 and {MAX_CONNECTIONS}"),
                self.connections,
            ));
        }
        if !(1..=MAX_PIPELINE).contains(&self.pipeline) {
            return Err(out_of_range(
                "pipeline",
                &format!("between 1 and {MAX_PIPELINE}"),
                self.pipeline,
            ));
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(out_of_range(
                "value-size",
                &format!("at most {MAX_VALUE_SIZE}"),
                self.value_size,
            ));
        }
        if self.keyspace == 0 {
            return Err(out_of_range("keyspace", "at least 1", self.keyspace));
        }
        if self.key_width > 20 {
            return Err(out_of_range("key-width", "at most 20", self.key_width));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(out_of_range(
                "read-ratio",
                "between 0 and 1",
                self.read_ratio,
            ));
        }
        if self.requests == Some(0) {
            return Err(out_of_range("requests", "at least 1", 0));
        }
        let duration = seconds("duration", self.duration, false)?;
        let mut warmup = seconds("warmup", self.warmup, true)?;
        let mut requests = self.requests;
        if self.workload == Workload::Fill {
            // A fill writes each key exactly once: nothing to warm up, and
            // the keyspace is the request count.
            warmup = Duration::ZERO;
            requests = Some(self.keyspace);
        }
        if self.protocol == Protocol::Etcd {
            if self.pipeline != 1 {
                return Err(ConfigError::EtcdPipeline(self.pipeline));
            }
            if self.password.is_some() {
                return Err(ConfigError::EtcdPassword);
            }
            if self.wait_aof.is_some() {
                return Err(ConfigError::RespOnly("wait-aof"));
            }
            if self.cluster {
                return Err(ConfigError::RespOnly("cluster"));
            }
        }
        Ok(BenchConfig {
            targets,
            target_names: names,
            connections: self.connections,
            pipeline: self.pipeline,
            value_size: self.value_size,
            keyspace: self.keyspace,
            key_width: self.key_width,
            workload: self.workload,
            read_ratio: self.read_ratio,
            duration,
            requests,
            warmup,
            seed: self.seed.unwrap_or_else(rand::random),
            password: self.password.clone(),
            user: self.user.clone(),
            progress: !self.quiet,
            protocol: self.protocol,
            tls: self
                .tls
                .load()
                .map_err(|e| ConfigError::Tls(format!("{e:#}")))?,
            wait_aof: self.wait_aof,
            cluster: self.cluster,
        })
    }
}

// ---------------------------------------------------------------------------
// Request generation.

/// One request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Set,
}

/// The seed of connection `conn`'s generator: distinct per connection,
/// fixed for a given run seed.
fn connection_seed(seed: u64, conn: usize) -> u64 {
    seed ^ (conn as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Picks each request's operation and key, and encodes requests into a
/// reused buffer.
struct Generator {
    rng: StdRng,
    workload: Workload,
    read_ratio: f64,
    keyspace: u64,
    key_width: usize,
    /// The value every SET writes (a fixed pattern).
    value: Vec<u8>,
    /// The value in base64 (for etcd), computed once.
    value_b64: String,
    /// Scratch: the current key.
    key: Vec<u8>,
    /// Scratch: the current key in base64.
    key_b64: String,
    /// Scratch: an HTTP body.
    body: Vec<u8>,
    /// `Host` header value (etcd).
    host: String,
    protocol: Protocol,
    /// The WAITAOF command written after each SET (empty: none).
    wait_aof: Vec<u8>,
}

impl Generator {
    fn new(config: &BenchConfig, conn: usize) -> Generator {
        let value: Vec<u8> = (0..config.value_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let value_b64 = base64::engine::general_purpose::STANDARD.encode(&value);
        let host = config.target_names[conn % config.target_names.len()].clone();
        Generator {
            rng: StdRng::seed_from_u64(connection_seed(config.seed, conn)),
            workload: config.workload,
            read_ratio: config.read_ratio,
            keyspace: config.keyspace,
            key_width: config.key_width,
            value,
            value_b64,
            key: Vec::with_capacity(32),
            key_b64: String::with_capacity(48),
            body: Vec::with_capacity(64),
            host,
            protocol: config.protocol,
            wait_aof: config.wait_aof.map(encode_wait_aof).unwrap_or_default(),
        }
    }

    /// What the reply (or replies) to `op` will be.
    fn expect(&self, op: Op) -> Expect {
        match (self.protocol, op) {
            (Protocol::Etcd, Op::Get) => Expect::Range,
            (Protocol::Resp, Op::Set) if !self.wait_aof.is_empty() => Expect::SetWaitAof,
            _ => Expect::One,
        }
    }

    /// The next random operation and key index (not used for `fill`).
    fn next_random(&mut self) -> (Op, u64) {
        let op = match self.workload {
            Workload::Get => Op::Get,
            Workload::Set | Workload::Fill => Op::Set,
            Workload::Mix => {
                if self.rng.random_bool(self.read_ratio) {
                    Op::Get
                } else {
                    Op::Set
                }
            }
        };
        (op, self.rng.random_range(0..self.keyspace))
    }

    /// Appends one request for `op` on key `key:<index>` to `out`.
    fn encode(&mut self, op: Op, index: u64, out: &mut Vec<u8>) {
        write_key(index, self.key_width, &mut self.key);
        match self.protocol {
            Protocol::Resp => {
                encode_resp(op, &self.key, &self.value, out);
                if op == Op::Set {
                    out.extend_from_slice(&self.wait_aof);
                }
            }
            Protocol::Etcd => {
                self.key_b64.clear();
                base64::engine::general_purpose::STANDARD
                    .encode_string(&self.key, &mut self.key_b64);
                self.body.clear();
                self.body.extend_from_slice(b"{\"key\":\"");
                self.body.extend_from_slice(self.key_b64.as_bytes());
                let path: &str = match op {
                    Op::Get => {
                        self.body.extend_from_slice(b"\"}");
                        "/v3/kv/range"
                    }
                    Op::Set => {
                        self.body.extend_from_slice(b"\",\"value\":\"");
                        self.body.extend_from_slice(self.value_b64.as_bytes());
                        self.body.extend_from_slice(b"\"}");
                        "/v3/kv/put"
                    }
                };
                // Writing into a Vec cannot fail.
                let _ = write!(
                    out,
                    "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    self.host,
                    self.body.len()
                );
                out.extend_from_slice(&self.body);
            }
        }
    }
}

/// Writes `key:<index>` into `key` (cleared first), `index` zero-padded to
/// `width` digits.
fn write_key(index: u64, width: usize, key: &mut Vec<u8>) {
    key.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(key, "key:{index:0width$}");
}

/// Appends a RESP bulk string.
fn push_bulk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "${}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SET key value` or `GET key` as a RESP array of bulk strings.
fn encode_resp(op: Op, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    match op {
        Op::Get => {
            out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
            push_bulk(out, key);
        }
        Op::Set => {
            out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
            push_bulk(out, key);
            push_bulk(out, value);
        }
    }
}

/// `WAITAOF numlocal numreplicas timeout` as a RESP array.
fn encode_wait_aof(w: WaitAof) -> Vec<u8> {
    let mut out = b"*4\r\n$7\r\nWAITAOF\r\n".to_vec();
    for n in [w.local, w.replicas, w.timeout_ms] {
        push_bulk(&mut out, n.to_string().as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------
// Reply parsing.

/// What one request of a batch gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// One reply (RESP, or an etcd put).
    One,
    /// One etcd range reply (no `kvs`: a nil).
    Range,
    /// The SET's reply, then the WAITAOF's.
    SetWaitAof,
}

/// Checks a WAITAOF reply (`*2 :local :replicas`) against what was asked:
/// `Ok` when both counts are reached, else the reason.
pub fn check_wait_aof(reply: &[u8], want: WaitAof) -> Result<(), String> {
    let frame = match distro_db::resp::decode(reply) {
        Ok((frame, used)) if used == reply.len() => frame,
        _ => return Err("WAITAOF: not one RESP reply".into()),
    };
    match frame {
        distro_db::resp::Frame::Array(items) => match items.as_slice() {
            [
                distro_db::resp::Frame::Integer(local),
                distro_db::resp::Frame::Integer(replicas),
            ] => {
                if *local < want.local as i64 || *replicas < want.replicas as i64 {
                    Err(format!(
                        "WAITAOF acknowledged by {local} local and {replicas} replica fsyncs, asked {} and {}",
                        want.local, want.replicas
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Err("WAITAOF: expected an array of two integers".into()),
        },
        distro_db::resp::Frame::Error(e) => Err(e),
        other => Err(format!("WAITAOF: unexpected reply {other:?}")),
    }
}

/// What one reply was, as far as the generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// A value or status (`+OK`, a bulk string, an array of siblings, HTTP 200).
    Value,
    /// No value (RESP nil; an etcd range without `kvs`). Counted as a success.
    Nil,
    /// An error reply (RESP `-ERR ...`, an HTTP status other than 200).
    Error,
}

/// Finds the end of the RESP reply at the front of `buf` without building
/// it: returns its kind and length. Accepts what [`distro_db::resp::decode`]
/// accepts (minus inline commands, which are not replies), with the same limits.
pub fn scan_reply(buf: &[u8]) -> Result<(ReplyKind, usize), DecodeError> {
    let mut pos = 0;
    let kind = scan_at(buf, &mut pos, 0)?;
    Ok((kind, pos))
}

/// The line starting at `*pos` (without its CRLF); moves `*pos` past it.
fn scan_line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], DecodeError> {
    let rest = buf.get(*pos..).ok_or(DecodeError::Incomplete)?;
    let window = &rest[..rest.len().min(MAX_LINE_LEN + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            *pos += i + 2;
            Ok(&rest[..i])
        }
        None if rest.len() > MAX_LINE_LEN + 1 => Err(DecodeError::Invalid("line too long".into())),
        None => Err(DecodeError::Incomplete),
    }
}

fn scan_int(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    let line = scan_line(buf, pos)?;
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| DecodeError::Invalid("invalid integer".into()))
}

fn scan_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<ReplyKind, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Invalid("arrays nested too deeply".into()));
    }
    let tag = *buf.get(*pos).ok_or(DecodeError::Incomplete)?;
    *pos += 1;
    match tag {
        b'+' | b':' => {
            let line = scan_line(buf, pos)?;
            if tag == b':'
                && std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_none()
            {
                return Err(DecodeError::Invalid("invalid integer".into()));
            }
            Ok(ReplyKind::Value)
        }
        b'-' => {
            scan_line(buf, pos)?;
            Ok(ReplyKind::Error)
        }
        b'_' => {
            if !scan_line(buf, pos)?.is_empty() {
                return Err(DecodeError::Invalid("invalid null".into()));
            }
            Ok(ReplyKind::Nil)
        }
        b'$' => {
            let len = scan_int(buf, pos)?;
            if len == -1 {
                return Ok(ReplyKind::Nil);
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_BULK_LEN)
                .ok_or_else(|| DecodeError::Invalid("invalid bulk length".into()))?;
            let end = *pos + len;
            let tail = buf.get(end..end + 2).ok_or(DecodeError::Incomplete)?;
            if tail != b"\r\n" {
                return Err(DecodeError::Invalid(
                    "bulk string not terminated by CRLF".into(),
                ));
            }
            *pos = end + 2;
            Ok(ReplyKind::Value)
        }
        b'*' => {
            let len = scan_int(buf, pos)?;
            if len == -1 {
                return Ok(ReplyKind::Nil);
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_ARRAY_LEN)
                .ok_or_else(|| DecodeError::Invalid("invalid array length".into()))?;
            for _ in 0..len {
                scan_at(buf, pos, depth + 1)?;
            }
            Ok(ReplyKind::Value)
        }
        other => Err(DecodeError::Invalid(format!(
            "unexpected byte 0x{other:02x}"
        ))),
    }
}

/// One parsed HTTP response (positions into the buffer it was parsed from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body's bytes as received (for a chunked body: the chunks with
    /// their size lines).
    pub body: Range<usize>,
    /// Length of the whole response.
    pub len: usize,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Why a buffer did not parse as an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// More bytes are needed.
    #[error("incomplete response")]
    Incomplete,
    /// Not an HTTP/1.x response this client understands.
    #[error("invalid HTTP response: {0}")]
    Invalid(&'static str),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses the HTTP/1.x response at the front of `buf`: status line,
/// headers, and a body framed by `Content-Length` or chunked encoding.
/// Refuses (rather than guesses) anything else: a body delimited by the end
/// of the connection, an interim 1xx response, oversized heads and bodies.
pub fn parse_http_response(buf: &[u8]) -> Result<HttpResponse, HttpError> {
    let window = &buf[..buf.len().min(MAX_HTTP_HEAD)];
    let Some(head_len) = find(window, b"\r\n\r\n") else {
        if buf.len() >= MAX_HTTP_HEAD {
            return Err(HttpError::Invalid("head too long"));
        }
        return Err(HttpError::Incomplete);
    };
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| HttpError::Invalid("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(HttpError::Invalid("not an HTTP/1.x status line")),
    };
    let code = parts.next().unwrap_or("");
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Invalid("bad status code"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| HttpError::Invalid("bad status code"))?;
    if !(200..=599).contains(&status) {
        return Err(HttpError::Invalid("unexpected status class"));
    }
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = http10;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Invalid("header without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(HttpError::Invalid("bad Content-Length"))?;
            if n > MAX_HTTP_BODY {
                return Err(HttpError::Invalid("body too large"));
            }
            if content_length.is_some_and(|c| c != n) {
                return Err(HttpError::Invalid("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value
                .to_ascii_lowercase()
                .split(',')
                .any(|t| t.trim() == "chunked")
            {
                chunked = true;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let body_start = head_len + 4;
    let no_body = status == 204 || status == 304;
    let end = if no_body {
        body_start
    } else if chunked {
        chunked_end(buf, body_start)?
    } else if let Some(n) = content_length {
        let end = body_start + n;
        if buf.len() < end {
            return Err(HttpError::Incomplete);
        }
        end
    } else {
        return Err(HttpError::Invalid(
            "body length unknown (no Content-Length, not chunked)",
        ));
    };
    Ok(HttpResponse {
        status,
        body: body_start..end,
        len: end,
        close,
    })
}

/// The end of a chunked body starting at `pos` (after the trailer section).
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<usize, HttpError> {
    let mut total = 0usize;
    // Each pass consumes at least 3 bytes of `buf`, so this ends.
    loop {
        let rest = buf.get(pos..).ok_or(HttpError::Incomplete)?;
        let Some(eol) = find(&rest[..rest.len().min(1024)], b"\r\n") else {
            if rest.len() >= 1024 {
                return Err(HttpError::Invalid("chunk size line too long"));
            }
            return Err(HttpError::Incomplete);
        };
        let line =
            std::str::from_utf8(&rest[..eol]).map_err(|_| HttpError::Invalid("bad chunk size"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HttpError::Invalid("bad chunk size"));
        }
        let size =
            usize::from_str_radix(hex, 16).map_err(|_| HttpError::Invalid("bad chunk size"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let rest = buf.get(pos..).ok_or(HttpError::Incomplete)?;
                let Some(eol) = find(&rest[..rest.len().min(MAX_HTTP_HEAD)], b"\r\n") else {
                    if rest.len() >= MAX_HTTP_HEAD {
                        return Err(HttpError::Invalid("trailer too long"));
                    }
                    return Err(HttpError::Incomplete);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(pos);
                }
            }
        }
        total += size;
        if total > MAX_HTTP_BODY {
            return Err(HttpError::Invalid("body too large"));
        }
        let data_end = pos + size;
        let crlf = buf
            .get(data_end..data_end + 2)
            .ok_or(HttpError::Incomplete)?;
        if crlf != b"\r\n" {
            return Err(HttpError::Invalid("chunk not terminated by CRLF"));
        }
        pos = data_end + 2;
    }
}

// ---------------------------------------------------------------------------
// Connections.

/// Why a batch failed (the connection is then closed).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect: timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no complete reply within {0:?}")]
    Timeout(Duration),
    #[error("connection closed by the server")]
    Closed,
    #[error("bad reply: {0}")]
    Protocol(String),
    #[error("AUTH refused: {0}")]
    Auth(String),
}

/// What one batch got back.
#[derive(Debug, Default, Clone, Copy)]
struct BatchOutcome {
    ok: u64,
    nil: u64,
    errors: u64,
    /// The server said it will close the connection (HTTP `Connection: close`).
    close: bool,
}

/// One open connection with its reused reply buffer.
struct Conn {
    stream: distro_db::tls::Stream,
    rbuf: Vec<u8>,
    protocol: Protocol,
    wait_aof: Option<WaitAof>,
}

impl Conn {
    async fn open(addr: SocketAddr, name: &str, config: &BenchConfig) -> Result<Conn, ConnError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnError::ConnectTimeout(CONNECT_TIMEOUT))?
            .map_err(ConnError::Connect)?;
        tcp.set_nodelay(true)?;
        let stream = match &config.tls {
            None => distro_db::tls::Stream::Plain(tcp),
            Some(tls) => {
                let name = tls.server_name(name, addr).map_err(ConnError::Connect)?;
                tls.connect(tcp, name).await.map_err(ConnError::Connect)?
            }
        };
        let mut conn = Conn {
            stream,
            rbuf: Vec::with_capacity(64 * 1024),
            protocol: config.protocol,
            wait_aof: config.wait_aof,
        };
        if let Some(pw) = &config.password {
            let mut out = Vec::new();
            match &config.user {
                Some(user) => {
                    out.extend_from_slice(b"*3\r\n$4\r\nAUTH\r\n");
                    push_bulk(&mut out, user.as_bytes());
                }
                None => out.extend_from_slice(b"*2\r\n$4\r\nAUTH\r\n"),
            }
            push_bulk(&mut out, pw.as_bytes());
            let outcome = conn.round_trip(&out, &[Expect::One], &mut |_| {}).await?;
            if outcome.errors > 0 {
                return Err(ConnError::Auth("the server answered an error".into()));
            }
        }
        Ok(conn)
    }

    /// Writes `request` (holding one request per entry of `expect`), reads
    /// their replies; `on_error` sees the text of each error reply.
    async fn round_trip(
        &mut self,
        request: &[u8],
        expect: &[Expect],
        on_error: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<BatchOutcome, ConnError> {
        match tokio::time::timeout(BATCH_TIMEOUT, self.exchange(request, expect, on_error)).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout(BATCH_TIMEOUT)),
        }
    }

    /// The next reply in `rest`: its kind, length and whether the server
    /// will close the connection after it; `None` when incomplete.
    fn next_reply(
        &self,
        rest: &[u8],
        range: bool,
    ) -> Result<Option<(ReplyKind, usize, bool)>, ConnError> {
        match self.protocol {
            Protocol::Resp => match scan_reply(rest) {
                Ok((kind, used)) => Ok(Some((kind, used, false))),
                Err(DecodeError::Incomplete) => Ok(None),
                Err(DecodeError::Invalid(msg)) => Err(ConnError::Protocol(msg)),
            },
            Protocol::Etcd => match parse_http_response(rest) {
                Ok(r) => {
                    let kind = if r.status != 200 {
                        ReplyKind::Error
                    } else if range && find(&rest[r.body.clone()], b"\"kvs\"").is_none() {
                        // A range that found nothing answers only its header.
                        ReplyKind::Nil
                    } else {
                        ReplyKind::Value
                    };
                    Ok(Some((kind, r.len, r.close)))
                }
                Err(HttpError::Incomplete) => Ok(None),
                Err(HttpError::Invalid(msg)) => Err(ConnError::Protocol(msg.to_string())),
            },
        }
    }

    async fn exchange(
        &mut self,
        request: &[u8],
        expect: &[Expect],
        on_error: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<BatchOutcome, ConnError> {
        self.stream.write_all(request).await?;
        // A TLS session holds what was written until flushed.
        self.stream.flush().await?;
        let mut outcome = BatchOutcome::default();
        let mut got = 0;
        let mut start = 0;
        // The SET reply of a SET+WAITAOF pair whose WAITAOF reply is still to come.
        let mut set_reply: Option<(ReplyKind, Range<usize>)> = None;
        // Bounded by the batch timeout around this call.
        while got < expect.len() {
            // Parse every complete reply in the buffer.
            while got < expect.len() {
                let e = expect[got];
                let rest = &self.rbuf[start..];
                let Some((mut kind, used, close)) = self.next_reply(rest, e == Expect::Range)?
                else {
                    break;
                };
                let mut error_text: Option<Vec<u8>> = None;
                if e == Expect::SetWaitAof {
                    match set_reply.take() {
                        None => {
                            // The SET's own reply: the request completes with the WAITAOF's.
                            set_reply = Some((kind, start..start + used));
                            start += used;
                            continue;
                        }
                        Some((set_kind, set_range)) => {
                            let want = self.wait_aof.unwrap_or(WaitAof {
                                local: 0,
                                replicas: 0,
                                timeout_ms: 0,
                            });
                            if set_kind == ReplyKind::Error {
                                kind = ReplyKind::Error;
                                error_text = Some(self.rbuf[set_range].to_vec());
                            } else if let Err(why) = check_wait_aof(&rest[..used], want) {
                                kind = ReplyKind::Error;
                                error_text = Some(why.into_bytes());
                            } else {
                                kind = ReplyKind::Value;
                            }
                        }
                    }
                }
                let rest = &self.rbuf[start..];
                match kind {
                    ReplyKind::Value => outcome.ok += 1,
                    ReplyKind::Nil => {
                        outcome.ok += 1;
                        outcome.nil += 1;
                    }
                    ReplyKind::Error => {
                        outcome.errors += 1;
                        on_error(error_text.as_deref().unwrap_or(&rest[..used]));
                    }
                }
                outcome.close |= close;
                start += used;
                got += 1;
            }
            if got == expect.len() {
                break;
            }
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                self.rbuf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
        }
        // Anything left over is the start of a reply nobody asked for.
        if start < self.rbuf.len() {
            return Err(ConnError::Protocol("more replies than requests".into()));
        }
        self.rbuf.clear();
        Ok(outcome)
    }

    /// Sends one command and decodes its whole reply (CLUSTER SLOTS).
    async fn call(&mut self, request: &[u8]) -> Result<distro_db::resp::Frame, ConnError> {
        let exchange = async {
            self.stream.write_all(request).await?;
            self.stream.flush().await?;
            self.rbuf.clear();
            // Bounded by the batch timeout around this block.
            loop {
                match distro_db::resp::decode(&self.rbuf) {
                    Ok((frame, used)) => {
                        let extra = used < self.rbuf.len();
                        self.rbuf.clear();
                        if extra {
                            return Err(ConnError::Protocol("more replies than requests".into()));
                        }
                        return Ok(frame);
                    }
                    Err(DecodeError::Incomplete) => {}
                    Err(DecodeError::Invalid(msg)) => return Err(ConnError::Protocol(msg)),
                }
                if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                    self.rbuf.reserve(64 * 1024);
                }
                if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                    return Err(ConnError::Closed);
                }
            }
        };
        match tokio::time::timeout(BATCH_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout(BATCH_TIMEOUT)),
        }
    }
}

// ---------------------------------------------------------------------------
// Cluster routing.

/// Slots of Redis Cluster.
const SLOTS: usize = 16384;

/// The masters of a Redis Cluster and which of them serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Each master's address, and its name as `host:port`.
    pub masters: Vec<(SocketAddr, String)>,
    /// For each slot, the index in `masters` of its master.
    pub owner: Vec<u16>,
}

impl SlotMap {
    /// The map of a `CLUSTER SLOTS` reply: each entry is
    /// `[first, last, [host, port, ...master], [replica]...]`. Every slot must be served.
    pub fn from_cluster_slots(reply: &distro_db::resp::Frame) -> Result<SlotMap, String> {
        use distro_db::resp::Frame;
        let Frame::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS: expected an array, got {reply:?}"));
        };
        let mut masters: Vec<(SocketAddr, String)> = Vec::new();
        let mut owner = vec![u16::MAX; SLOTS];
        for range in ranges {
            let bad = || format!("CLUSTER SLOTS: malformed entry {range:?}");
            let Frame::Array(items) = range else {
                return Err(bad());
            };
            let (Some(Frame::Integer(first)), Some(Frame::Integer(last)), Some(Frame::Array(node))) =
                (items.first(), items.get(1), items.get(2))
            else {
                return Err(bad());
            };
            let (Some(host), Some(Frame::Integer(port))) = (node.first(), node.get(1)) else {
                return Err(bad());
            };
            let host = match host {
                Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                Frame::Simple(s) => s.clone(),
                _ => return Err(bad()),
            };
            let port = u16::try_from(*port).map_err(|_| bad())?;
            let first = usize::try_from(*first).map_err(|_| bad())?;
            let last = usize::try_from(*last).map_err(|_| bad())?;
            if first > last || last >= SLOTS {
                return Err(bad());
            }
            let name = format!("{host}:{port}");
            let index = match masters.iter().position(|(_, n)| *n == name) {
                Some(i) => i,
                None => {
                    let addr = name
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| format!("CLUSTER SLOTS: master {name} does not resolve"))?;
                    masters.push((addr, name));
                    masters.len() - 1
                }
            };
            owner[first..=last].fill(index as u16);
        }
        if let Some(slot) = owner.iter().position(|&o| o == u16::MAX) {
            return Err(format!("CLUSTER SLOTS: slot {slot} has no master"));
        }
        Ok(SlotMap { masters, owner })
    }

    /// The index of the master of `key`'s slot.
    pub fn route(&self, key: &[u8]) -> usize {
        usize::from(self.owner[distro_db::keyspace::slot_of(key) % SLOTS])
    }
}

/// Reads the slot map from the first target.
async fn discover_slots(config: &BenchConfig) -> Result<SlotMap, BenchError> {
    let name = &config.target_names[0];
    let fail = |reason: String| BenchError::Target {
        target: name.clone(),
        reason,
    };
    let mut conn = Conn::open(config.targets[0], name, config)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let reply = conn
        .call(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n")
        .await
        .map_err(|e| fail(e.to_string()))?;
    SlotMap::from_cluster_slots(&reply).map_err(fail)
}

// ---------------------------------------------------------------------------
// The run.

/// Counters and the latency histogram of one connection.
struct ConnStats {
    hist: Histogram<u64>,
    ok: u64,
    nil: u64,
    errors: u64,
    /// Requests in flight when the connection broke (neither answered nor counted as errors).
    lost: u64,
    connection_errors: u64,
    reconnects: u64,
    gave_up: bool,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits; both bounds are valid constants.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

impl ConnStats {
    fn new() -> ConnStats {
        ConnStats {
            hist: new_histogram(),
            ok: 0,
            nil: 0,
            errors: 0,
            lost: 0,
            connection_errors: 0,
            reconnects: 0,
            gave_up: false,
        }
    }
}

/// State every connection task shares.
struct Shared {
    config: BenchConfig,
    measure_start: Instant,
    deadline: Instant,
    /// Counted requests still to start (`u64::MAX`: no limit). For `fill`,
    /// also the next key: key index = keyspace - remaining.
    remaining: AtomicU64,
    /// Set to end the run early (Ctrl-C).
    stop: AtomicBool,
    /// Error replies seen, for logging only the first few.
    errors_seen: AtomicU64,
    /// The first error reply's text.
    first_error: Mutex<Option<String>>,
    /// `--cluster`: the masters and the slot map.
    slots: Option<Arc<SlotMap>>,
}

impl Shared {
    /// Claims up to `want` counted requests; returns how many were granted
    /// and the value of `remaining` before the claim.
    fn claim(&self, want: u64) -> (u64, u64) {
        let mut granted = 0;
        let before = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                if r == u64::MAX {
                    granted = want;
                    Some(r)
                } else {
                    granted = want.min(r);
                    Some(r - granted)
                }
            })
            .unwrap_or(0);
        (granted, before)
    }

    fn note_error(&self, reply: &[u8]) {
        let seen = self.errors_seen.fetch_add(1, Ordering::Relaxed);
        if seen < LOGGED_ERRORS {
            let text = String::from_utf8_lossy(&reply[..reply.len().min(200)]);
            let text = text.trim_end();
            warn!(reply = %text, "error reply");
            if seen == 0 {
                if let Ok(mut first) = self.first_error.lock() {
                    *first = Some(text.to_string());
                }
            }
        }
    }
}

fn lock(stats: &Mutex<ConnStats>) -> std::sync::MutexGuard<'_, ConnStats> {
    // A task that panicked while holding the lock left plain counters behind:
    // still worth reporting.
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

/// One client's closed loop, until the deadline, the request budget or
/// too many connection errors. A client has one socket per route: its
/// target, or (`--cluster`) each master, opened when first needed.
async fn connection_task(shared: Arc<Shared>, conn_id: usize, stats: Arc<Mutex<ConnStats>>) {
    let config = &shared.config;
    let routes: Vec<(SocketAddr, String)> = match &shared.slots {
        Some(map) => map.masters.clone(),
        None => {
            let i = conn_id % config.targets.len();
            vec![(config.targets[i], config.target_names[i].clone())]
        }
    };
    let mut generator = Generator::new(config, conn_id);
    let depth = config.pipeline as u64;
    let per_request = config.value_size + 64 + if config.wait_aof.is_some() { 64 } else { 0 };
    let mut requests: Vec<Vec<u8>> = (0..routes.len())
        .map(|_| Vec::with_capacity(config.pipeline * per_request + 256))
        .collect();
    let mut expects: Vec<Vec<Expect>> = (0..routes.len())
        .map(|_| Vec::with_capacity(config.pipeline))
        .collect();
    let mut conns: Vec<Option<Conn>> = (0..routes.len()).map(|_| None).collect();
    let mut key = Vec::with_capacity(32);
    let mut failures = 0u32;
    let mut on_error = |reply: &[u8]| shared.note_error(reply);
    // Counts a connection failure; false when this client gives up.
    let fail = |failures: &mut u32, lost: u64, opened: bool, e: &ConnError, addr: SocketAddr| {
        *failures += 1;
        let give_up = *failures > MAX_RECONNECTS;
        {
            let mut s = lock(&stats);
            s.connection_errors += 1;
            s.lost += lost;
            s.gave_up = give_up;
            s.reconnects += u64::from(!give_up && opened);
        }
        match (give_up, opened) {
            (true, _) => {
                warn!(conn = conn_id, target = %addr, cause = %e, "giving up on this connection")
            }
            (false, true) => {
                warn!(conn = conn_id, target = %addr, cause = %e, "connection failed; reconnecting")
            }
            (false, false) => {
                warn!(conn = conn_id, target = %addr, cause = %e, "cannot connect; retrying")
            }
        }
        !give_up
    };
    // Bounded by the deadline, the request budget and MAX_RECONNECTS.
    'batch: loop {
        let t0 = Instant::now();
        if t0 >= shared.deadline || shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let measuring = t0 >= shared.measure_start;
        for r in requests.iter_mut() {
            r.clear();
        }
        for e in expects.iter_mut() {
            e.clear();
        }
        let mut add = |generator: &mut Generator, op: Op, index: u64| {
            let route = match &shared.slots {
                Some(map) => {
                    write_key(index, config.key_width, &mut key);
                    map.route(&key)
                }
                None => 0,
            };
            expects[route].push(generator.expect(op));
            generator.encode(op, index, &mut requests[route]);
        };
        let count = if config.workload == Workload::Fill {
            let (n, before) = shared.claim(depth);
            let first = config.keyspace - before.min(config.keyspace);
            for i in 0..n {
                add(&mut generator, Op::Set, first + i);
            }
            n
        } else {
            let n = if measuring {
                shared.claim(depth).0
            } else {
                depth
            };
            for _ in 0..n {
                let (op, index) = generator.next_random();
                add(&mut generator, op, index);
            }
            n
        };
        if count == 0 {
            return;
        }
        let mut total = BatchOutcome::default();
        let mut sent = 0u64;
        for route in 0..routes.len() {
            if expects[route].is_empty() {
                continue;
            }
            let (addr, name) = &routes[route];
            let conn = match &mut conns[route] {
                Some(c) => c,
                slot => match Conn::open(*addr, name, config).await {
                    Ok(c) => slot.insert(c),
                    Err(e) => {
                        // Nothing of this batch was answered.
                        let lost = if measuring { count - sent } else { 0 };
                        if !fail(&mut failures, lost, false, &e, *addr) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
                        continue 'batch;
                    }
                },
            };
            match conn
                .round_trip(&requests[route], &expects[route], &mut on_error)
                .await
            {
                Ok(outcome) => {
                    total.ok += outcome.ok;
                    total.nil += outcome.nil;
                    total.errors += outcome.errors;
                    sent += expects[route].len() as u64;
                    if outcome.close {
                        conns[route] = None;
                        lock(&stats).reconnects += 1;
                    }
                }
                Err(e) => {
                    conns[route] = None;
                    let lost = if measuring { count - sent } else { 0 };
                    if !fail(&mut failures, lost, true, &e, *addr) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
                    continue 'batch;
                }
            }
        }
        if measuring {
            let us = t0.elapsed().as_micros() as u64;
            let mut s = lock(&stats);
            s.hist.saturating_record_n(us, count);
            s.ok += total.ok;
            s.nil += total.nil;
            s.errors += total.errors;
        }
    }
}

/// User and system CPU time this process has used so far.
fn cpu_time() -> (Duration, Duration) {
    // SAFETY: rusage is a plain C struct of integers; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the valid, exclusively borrowed struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A target did not answer the pre-flight request.
    #[error("target {target} is not usable: {reason}")]
    Target {
        /// The target as given.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

/// Checks that every target answers one request of the chosen protocol
/// (PING, or a range on `key:0`) before any load starts.
async fn preflight(config: &BenchConfig) -> Result<(), BenchError> {
    for (i, (&addr, name)) in config.targets.iter().zip(&config.target_names).enumerate() {
        let fail = |reason: String| BenchError::Target {
            target: name.clone(),
            reason,
        };
        let mut conn = Conn::open(addr, name, config)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut request = Vec::new();
        match config.protocol {
            Protocol::Resp => request.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"),
            Protocol::Etcd => Generator::new(config, i).encode(Op::Get, 0, &mut request),
        }
        let mut error_text = String::new();
        let expect = match config.protocol {
            Protocol::Resp => Expect::One,
            Protocol::Etcd => Expect::Range,
        };
        let outcome = conn
            .round_trip(&request, &[expect], &mut |r| {
                error_text = String::from_utf8_lossy(r).into_owned()
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        if outcome.errors > 0 {
            let text = error_text.lines().next().unwrap_or("").to_string();
            return Err(fail(format!("it answered an error: {text}")));
        }
    }
    Ok(())
}

/// Runs the load and returns its report.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    let slots = if config.cluster {
        let map = discover_slots(&config).await?;
        info!(masters = ?map.masters.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), "cluster slot map read");
        Some(Arc::new(map))
    } else {
        None
    };
    match &slots {
        Some(map) => {
            let mut masters = config.clone();
            masters.targets = map.masters.iter().map(|(a, _)| *a).collect();
            masters.target_names = map.masters.iter().map(|(_, n)| n.clone()).collect();
            preflight(&masters).await?;
        }
        None => preflight(&config).await?,
    }
    info!(
        seed = config.seed,
        connections = config.connections,
        pipeline = config.pipeline,
        workload = ?config.workload,
        protocol = ?config.protocol,
        "bench starting"
    );
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let deadline = measure_start + config.duration;
    let progress = config.progress && std::io::stderr().is_terminal();
    let shared = Arc::new(Shared {
        remaining: AtomicU64::new(config.requests.unwrap_or(u64::MAX)),
        config,
        measure_start,
        deadline,
        stop: AtomicBool::new(false),
        errors_seen: AtomicU64::new(0),
        first_error: Mutex::new(None),
        slots: slots.clone(),
    });
    let stats: Vec<Arc<Mutex<ConnStats>>> = (0..shared.config.connections)
        .map(|_| Arc::new(Mutex::new(ConnStats::new())))
        .collect();
    let mut tasks = JoinSet::new();
    for (i, s) in stats.iter().enumerate() {
        tasks.spawn(connection_task(shared.clone(), i, s.clone()));
    }

    // Every task ends by the deadline plus one batch timeout plus its
    // bounded reconnect back-off; this is the hard stop past that.
    let backoff: u64 = (1..=u64::from(MAX_RECONNECTS)).map(|f| 100 * f).sum();
    let hard_stop = deadline
        + BATCH_TIMEOUT
        + CONNECT_TIMEOUT
        + Duration::from_millis(backoff)
        + Duration::from_secs(5);
    let mut cpu_start = None;
    let mut merged = new_histogram();
    // Rate since the previous tick; the first one counts from the start of measuring.
    let mut last_tick = (measure_start, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ctrl_c_done = false;
    let measure_timer = tokio::time::sleep_until(measure_start.into());
    tokio::pin!(measure_timer);
    let hard_timer = tokio::time::sleep_until(hard_stop.into());
    tokio::pin!(hard_timer);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Err(e)) => warn!(cause = %e, "a connection task failed"),
                Some(Ok(())) => {}
            },
            _ = &mut measure_timer, if cpu_start.is_none() => cpu_start = Some(cpu_time()),
            _ = ticker.tick(), if progress => {
                let now = Instant::now();
                if now >= measure_start {
                    merged.reset();
                    let mut done = 0;
                    let mut errors = 0;
                    for s in &stats {
                        let s = lock(s);
                        let _ = merged.add(&s.hist);
                        done += s.ok + s.errors;
                        errors += s.errors;
                    }
                    let rate = (done - last_tick.1) as f64 / now.duration_since(last_tick.0).as_secs_f64().max(1e-9);
                    last_tick = (now, done);
                    eprint!(
                        "\r\x1b[K[{:>6.1}s] {:>9.0} req/s  p99 {:.3} ms  requests {done}  errors {errors}",
                        now.duration_since(measure_start).as_secs_f64(),
                        rate,
                        merged.value_at_quantile(0.99) as f64 / 1000.0,
                    );
                } else {
                    eprint!("\r\x1b[Kwarming up...");
                }
            }
            r = &mut ctrl_c, if !ctrl_c_done => {
                ctrl_c_done = true;
                if r.is_ok() {
                    warn!("interrupted: stopping after the batches in flight");
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
            _ = &mut hard_timer => {
                warn!(left = tasks.len(), "connections still busy past the deadline: aborting them");
                tasks.abort_all();
                // Bounded: aborted tasks end at their next await point.
                while tokio::time::timeout(Duration::from_secs(1), tasks.join_next()).await.ok().flatten().is_some() {}
                break;
            }
        }
    }
    let end = Instant::now();
    let cpu_end = cpu_time();
    if progress {
        eprint!("\r\x1b[K");
    }
    let cpu_start = cpu_start.unwrap_or(cpu_end);

    let mut total = Totals::new();
    for s in &stats {
        let s = lock(s);
        let _ = total.hist.add(&s.hist);
        total.ok += s.ok;
        total.nil += s.nil;
        total.errors += s.errors;
        total.lost += s.lost;
        total.connection_errors += s.connection_errors;
        total.reconnects += s.reconnects;
        total.gave_up += u64::from(s.gave_up);
    }
    let elapsed = end.saturating_duration_since(measure_start);
    let first_error = shared.first_error.lock().ok().and_then(|f| f.clone());
    let mut report = Report::build(
        &shared.config,
        &total,
        elapsed,
        (
            cpu_end.0.saturating_sub(cpu_start.0),
            cpu_end.1.saturating_sub(cpu_start.1),
        ),
        first_error,
    );
    if let Some(map) = &shared.slots {
        report.params.cluster_masters = map.masters.iter().map(|(_, n)| n.clone()).collect();
    }
    Ok(report)
}

/// Sums over all connections.
struct Totals {
    hist: Histogram<u64>,
    ok: u64,
    nil: u64,
    errors: u64,
    lost: u64,
    connection_errors: u64,
    reconnects: u64,
    gave_up: u64,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            hist: new_histogram(),
            ok: 0,
            nil: 0,
            errors: 0,
            lost: 0,
            connection_errors: 0,
            reconnects: 0,
            gave_up: 0,
        }
    }
}

// ---------------------------------------------------------------------------
// The report.

/// The parameters of a run, as reported.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Params {
    /// Wire protocol.
    pub protocol: Protocol,
    /// Targets as given.
    pub targets: Vec<String>,
    /// What each request did.
    pub workload: Workload,
    /// Share of reads (meaningful for `mix`).
    pub read_ratio: f64,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Distinct keys.
    pub keyspace: u64,
    /// Digits the key number is zero-padded to (0: none).
    pub key_width: usize,
    /// Measured time limit in seconds.
    pub duration_s: f64,
    /// Counted requests limit (null: none).
    pub requests_limit: Option<u64>,
    /// Warm-up in seconds.
    pub warmup_s: f64,
    /// Generator seed.
    pub seed: u64,
    /// AUTH was sent.
    pub auth: bool,
    /// Each SET was followed by this WAITAOF (null: none).
    pub wait_aof: Option<WaitAof>,
    /// `--cluster`: the masters the slot map named (empty: no cluster routing).
    pub cluster_masters: Vec<String>,
}

/// Latency figures in milliseconds.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Highest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The generator's own CPU use while measuring.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ClientCpu {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// CPU microseconds per counted request.
    pub us_per_request: f64,
}

/// What a run measured.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Report {
    /// The tool, so JSON files from different tools can be told apart.
    pub tool: String,
    /// The parameters used.
    pub params: Params,
    /// Replies counted (successes and error replies).
    pub requests: u64,
    /// Successful replies (values, statuses, nils).
    pub ok: u64,
    /// Of the successes: nil replies (GET of a missing key).
    pub nil: u64,
    /// Error replies (RESP errors, HTTP statuses other than 200).
    pub errors: u64,
    /// Requests in flight on connections that broke.
    pub lost: u64,
    /// Connection failures (connect, I/O, timeout, bad reply).
    pub connection_errors: u64,
    /// Connections re-opened.
    pub reconnects: u64,
    /// Connections that gave up after too many failures.
    pub connections_given_up: u64,
    /// Measured seconds.
    pub elapsed_s: f64,
    /// Replies per second.
    pub throughput_rps: f64,
    /// Per-request latency (for a pipelined batch, the batch's round trip).
    pub latency_ms: Latency,
    /// The generator's own CPU time.
    pub client_cpu: ClientCpu,
    /// The first error reply, if any.
    pub first_error: Option<String>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    fn build(
        config: &BenchConfig,
        t: &Totals,
        elapsed: Duration,
        cpu: (Duration, Duration),
        first_error: Option<String>,
    ) -> Report {
        let requests = t.ok + t.errors;
        let secs = elapsed.as_secs_f64();
        let ms = |us: u64| us as f64 / 1000.0;
        let empty = t.hist.is_empty();
        let q = |quantile: f64| {
            if empty {
                0.0
            } else {
                ms(t.hist.value_at_quantile(quantile))
            }
        };
        let cpu_total = (cpu.0 + cpu.1).as_secs_f64();
        Report {
            tool: "db bench".into(),
            params: Params {
                protocol: config.protocol,
                targets: config.target_names.clone(),
                workload: config.workload,
                read_ratio: config.read_ratio,
                connections: config.connections,
                pipeline: config.pipeline,
                value_size: config.value_size,
                keyspace: config.keyspace,
                key_width: config.key_width,
                duration_s: config.duration.as_secs_f64(),
                requests_limit: config.requests,
                warmup_s: config.warmup.as_secs_f64(),
                seed: config.seed,
                auth: config.password.is_some(),
                wait_aof: config.wait_aof,
                cluster_masters: Vec::new(),
            },
            requests,
            ok: t.ok,
            nil: t.nil,
            errors: t.errors,
            lost: t.lost,
            connection_errors: t.connection_errors,
            reconnects: t.reconnects,
            connections_given_up: t.gave_up,
            elapsed_s: round3(secs),
            throughput_rps: if secs > 0.0 {
                (requests as f64 / secs).round()
            } else {
                0.0
            },
            latency_ms: Latency {
                p50: q(0.5),
                p99: q(0.99),
                p999: q(0.999),
                max: if empty { 0.0 } else { ms(t.hist.max()) },
                mean: if empty {
                    0.0
                } else {
                    round3(t.hist.mean() / 1000.0)
                },
            },
            client_cpu: ClientCpu {
                user_s: round3(cpu.0.as_secs_f64()),
                system_s: round3(cpu.1.as_secs_f64()),
                us_per_request: if requests > 0 {
                    round3(cpu_total * 1e6 / requests as f64)
                } else {
                    0.0
                },
            },
            first_error,
        }
    }

    /// The report as an aligned two-column text table.
    pub fn text(&self) -> String {
        let p = &self.params;
        let l = &self.latency_ms;
        let workload = match p.workload {
            Workload::Mix => format!("mix ({:.0}% GET)", p.read_ratio * 100.0),
            w => format!("{w:?}").to_lowercase(),
        };
        let protocol = format!("{:?}", p.protocol).to_lowercase();
        let mut rows: Vec<(&str, String)> = vec![
            ("protocol", protocol),
            ("targets", p.targets.join(",")),
            ("workload", workload),
            ("connections", p.connections.to_string()),
            ("pipeline", p.pipeline.to_string()),
            ("value size", format!("{} B", p.value_size)),
            ("keyspace", p.keyspace.to_string()),
            (
                "wait-aof",
                match p.wait_aof {
                    Some(w) => format!(
                        "WAITAOF {} {} {} after each SET",
                        w.local, w.replicas, w.timeout_ms
                    ),
                    None => "no".into(),
                },
            ),
            ("seed", p.seed.to_string()),
            ("elapsed", format!("{:.3} s", self.elapsed_s)),
            ("requests", self.requests.to_string()),
            ("throughput", format!("{:.0} req/s", self.throughput_rps)),
            ("errors", self.errors.to_string()),
            ("nil replies", self.nil.to_string()),
            ("latency p50", format!("{:.3} ms", l.p50)),
            ("latency p99", format!("{:.3} ms", l.p99)),
            ("latency p99.9", format!("{:.3} ms", l.p999)),
            ("latency max", format!("{:.3} ms", l.max)),
            ("latency mean", format!("{:.3} ms", l.mean)),
            (
                "client cpu",
                format!(
                    "{:.3} s user + {:.3} s sys = {:.2} us/request",
                    self.client_cpu.user_s,
                    self.client_cpu.system_s,
                    self.client_cpu.us_per_request
                ),
            ),
        ];
        if !p.cluster_masters.is_empty() {
            rows.push(("cluster masters", p.cluster_masters.join(",")));
        }
        if self.connection_errors > 0 || self.lost > 0 {
            rows.push(("connection errors", self.connection_errors.to_string()));
            rows.push(("lost in flight", self.lost.to_string()));
            rows.push(("reconnects", self.reconnects.to_string()));
            rows.push((
                "connections given up",
                self.connections_given_up.to_string(),
            ));
        }
        if let Some(e) = &self.first_error {
            rows.push(("first error", e.clone()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn json(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use distro_db::resp::Frame;
    use proptest::prelude::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn args(line: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(line);
        Cli::try_parse_from(argv).expect("parses").args
    }

    fn config(line: &[&str]) -> BenchConfig {
        args(line).validate().expect("valid")
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = config(&["--seed", "7"]);
        assert_eq!(c.target_names, vec![DEFAULT_TARGET.to_string()]);
        assert_eq!(c.connections, 50);
        assert_eq!(c.pipeline, 1);
        assert_eq!(c.value_size, 100);
        assert_eq!(c.keyspace, 100_000);
        assert_eq!(c.workload, Workload::Set);
        assert_eq!(c.read_ratio, 0.9);
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.warmup, Duration::from_secs(1));
        assert_eq!(c.requests, None);
        assert_eq!(c.seed, 7);
        assert_eq!(c.protocol, Protocol::Resp);
        assert!(c.progress);
    }

    #[test]
    fn targets_are_repeatable_and_comma_separated() {
        let c = config(&[
            "--target",
            "127.0.0.1:21001,127.0.0.1:21002",
            "--target",
            "127.0.0.1:21003",
        ]);
        assert_eq!(c.targets.len(), 3);
        assert_eq!(c.targets[2].port(), 21003);
        assert_eq!(c.target_names[0], "127.0.0.1:21001");
    }

    #[test]
    fn invalid_options_are_refused_with_the_option_named() {
        let bad = |line: &[&str], name: &str| {
            let err = args(line).validate().unwrap_err();
            assert!(err.to_string().contains(name), "{line:?}: {err}");
        };
        bad(&["-c", "0"], "--connections");
        bad(&["-c", "100000"], "--connections");
        bad(&["-P", "0"], "--pipeline");
        bad(&["-P", "5000"], "--pipeline");
        bad(&["-d", "999999999"], "--value-size");
        bad(&["-r", "0"], "--keyspace");
        bad(&["--key-width", "99"], "--key-width");
        bad(&["--read-ratio", "1.5"], "--read-ratio");
        bad(&["--read-ratio", "NaN"], "--read-ratio");
        bad(&["--duration", "0"], "--duration");
        bad(&["--duration", "inf"], "--duration");
        bad(&["--warmup=-1"], "--warmup");
        bad(&["-n", "0"], "--requests");
        bad(&["--target", "no-port-here"], "no-port-here");
        bad(&["--protocol", "etcd", "-P", "16"], "--pipeline 1");
        bad(&["--protocol", "etcd", "--password", "x"], "--password");
        // clap itself refuses unknown workloads and protocols.
        assert!(Cli::try_parse_from(["bench", "--workload", "scan"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--protocol", "http"]).is_err());
    }

    #[test]
    fn fill_writes_each_key_once_without_warmup() {
        let c = config(&[
            "--workload",
            "fill",
            "-r",
            "1000",
            "-n",
            "5",
            "--warmup",
            "3",
        ]);
        assert_eq!(c.requests, Some(1000));
        assert_eq!(c.warmup, Duration::ZERO);
    }

    fn keys(seed: u64, conn: usize, count: usize, line: &[&str]) -> Vec<(Op, u64)> {
        let mut c = config(line);
        c.seed = seed;
        let mut g = Generator::new(&c, conn);
        (0..count).map(|_| g.next_random()).collect()
    }

    #[test]
    fn key_sequences_are_determined_by_the_seed_and_connection() {
        let line = ["--workload", "mix", "-r", "1000"];
        let a = keys(42, 3, 500, &line);
        assert_eq!(a, keys(42, 3, 500, &line), "same seed, same connection");
        assert_ne!(a, keys(43, 3, 500, &line), "another seed");
        assert_ne!(a, keys(42, 4, 500, &line), "another connection");
        assert!(a.iter().all(|&(_, k)| k < 1000));
        let gets = a.iter().filter(|(op, _)| *op == Op::Get).count();
        assert!((400..500).contains(&gets), "about 90% GETs, got {gets}");
        assert!(
            keys(1, 0, 100, &["--workload", "get"])
                .iter()
                .all(|(op, _)| *op == Op::Get)
        );
        assert!(
            keys(1, 0, 100, &["--workload", "set"])
                .iter()
                .all(|(op, _)| *op == Op::Set)
        );
    }

    #[test]
    fn resp_requests_are_what_the_server_decodes() {
        let c = config(&["-d", "5", "--seed", "1"]);
        let mut g = Generator::new(&c, 0);
        let mut out = Vec::new();
        g.encode(Op::Set, 12, &mut out);
        g.encode(Op::Get, 7, &mut out);
        let (set, used) = distro_db::resp::decode(&out).unwrap();
        assert_eq!(set, Frame::command(["SET", "key:12", "abcde"]));
        let (get, rest) = distro_db::resp::decode(&out[used..]).unwrap();
        assert_eq!(get, Frame::command(["GET", "key:7"]));
        assert_eq!(used + rest, out.len());
        let mut key = Vec::new();
        write_key(42, 12, &mut key);
        assert_eq!(key, b"key:000000000042");
        write_key(1234567, 3, &mut key);
        assert_eq!(key, b"key:1234567");
    }

    #[test]
    fn etcd_requests_are_http_with_base64_json() {
        let c = config(&[
            "--protocol",
            "etcd",
            "--target",
            "127.0.0.1:2379",
            "-d",
            "3",
        ]);
        let mut g = Generator::new(&c, 0);
        let mut out = Vec::new();
        g.encode(Op::Set, 1, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        let body = r#"{"key":"a2V5OjE=","value":"YWJj"}"#;
        assert_eq!(
            text,
            format!(
                "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
        out.clear();
        g.encode(Op::Get, 1, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /v3/kv/range HTTP/1.1\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"key\":\"a2V5OjE=\"}"));
    }

    fn sample_report() -> Report {
        let c = config(&["--seed", "9", "-n", "1000"]);
        let mut t = Totals::new();
        for us in [100u64, 200, 300, 400, 5000] {
            t.hist.record_n(us, 200).unwrap();
        }
        t.ok = 990;
        t.nil = 3;
        t.errors = 10;
        Report::build(
            &c,
            &t,
            Duration::from_secs(2),
            (Duration::from_millis(150), Duration::from_millis(50)),
            Some("-ERR quorum not reached".into()),
        )
    }

    #[test]
    fn report_figures() {
        let r = sample_report();
        assert_eq!(r.requests, 1000);
        assert_eq!(r.throughput_rps, 500.0);
        assert!((r.latency_ms.p50 - 0.3).abs() < 0.01, "{:?}", r.latency_ms);
        assert!((r.latency_ms.p99 - 5.0).abs() < 0.01, "{:?}", r.latency_ms);
        assert!((r.latency_ms.max - 5.0).abs() < 0.01);
        assert!((r.latency_ms.mean - 1.2).abs() < 0.01);
        assert_eq!(r.client_cpu.us_per_request, 200.0);
    }

    #[test]
    fn report_text_is_an_aligned_table() {
        let text = sample_report().text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("throughput") && l.ends_with("500 req/s"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("errors") && l.ends_with(" 10"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("seed") && l.ends_with(" 9"))
        );
        // Every value starts in the same column.
        let col = |l: &str| {
            let key_end = l.find("  ").unwrap();
            key_end + l[key_end..].find(|c: char| c != ' ').unwrap()
        };
        let first = col(lines[0]);
        assert!(lines.iter().all(|l| col(l) == first), "{text}");
    }

    #[test]
    fn report_json_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample_report().json()).unwrap();
        for key in [
            "tool",
            "params",
            "requests",
            "ok",
            "nil",
            "errors",
            "lost",
            "connection_errors",
            "reconnects",
            "connections_given_up",
            "elapsed_s",
            "throughput_rps",
            "latency_ms",
            "client_cpu",
            "first_error",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p99", "p999", "max", "mean"] {
            assert!(v["latency_ms"][key].is_f64(), "latency_ms.{key}");
        }
        assert_eq!(v["params"]["workload"], "set");
        assert_eq!(v["params"]["protocol"], "resp");
        assert_eq!(v["params"]["seed"], 9);
        assert_eq!(v["params"]["requests_limit"], 1000);
        assert_eq!(v["params"]["auth"], false);
        assert_eq!(v["throughput_rps"], 500.0);
        assert!(v["client_cpu"]["us_per_request"].is_f64());
    }

    #[test]
    fn wait_aof_option_parses_and_refuses_bad_values() {
        assert_eq!(
            parse_wait_aof("1,1").unwrap(),
            WaitAof {
                local: 1,
                replicas: 1,
                timeout_ms: 0
            }
        );
        assert_eq!(parse_wait_aof("0, 2, 50").unwrap().timeout_ms, 50);
        for bad in ["", "1", "1,x", "2,1", "1,1,1,1", "1,-1"] {
            assert!(parse_wait_aof(bad).is_err(), "{bad:?} accepted");
        }
        let err = args(&["--protocol", "etcd", "--wait-aof", "1,1"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--wait-aof"), "{err}");
        let err = args(&["--protocol", "etcd", "--cluster"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--cluster"), "{err}");
    }

    #[test]
    fn a_set_with_wait_aof_is_the_set_then_the_waitaof() {
        let c = config(&["--wait-aof", "1,1", "--workload", "mix"]);
        let mut g = Generator::new(&c, 0);
        let mut out = Vec::new();
        g.encode(Op::Set, 5, &mut out);
        let (set, used) = distro_db::resp::decode(&out).unwrap();
        assert_eq!(
            set,
            Frame::Array(vec![
                Frame::Bulk(b"SET".to_vec()),
                Frame::Bulk(b"key:5".to_vec()),
                Frame::Bulk(g.value.clone()),
            ])
        );
        let (wait, rest) = distro_db::resp::decode(&out[used..]).unwrap();
        assert_eq!(
            wait,
            Frame::Array(
                ["WAITAOF", "1", "1", "0"]
                    .iter()
                    .map(|s| Frame::Bulk(s.as_bytes().to_vec()))
                    .collect()
            )
        );
        assert_eq!(used + rest, out.len());
        assert_eq!(g.expect(Op::Set), Expect::SetWaitAof);
        // A GET is sent alone.
        out.clear();
        g.encode(Op::Get, 5, &mut out);
        assert_eq!(distro_db::resp::decode(&out).unwrap().1, out.len());
        assert_eq!(g.expect(Op::Get), Expect::One);
    }

    #[test]
    fn wait_aof_replies_are_checked_against_what_was_asked() {
        let want = parse_wait_aof("1,1").unwrap();
        assert_eq!(check_wait_aof(b"*2\r\n:1\r\n:2\r\n", want), Ok(()));
        let short = check_wait_aof(b"*2\r\n:1\r\n:0\r\n", want).unwrap_err();
        assert!(short.contains("0 replica"), "{short}");
        assert!(check_wait_aof(b"*2\r\n:0\r\n:1\r\n", want).is_err());
        let err = check_wait_aof(
            b"-ERR WAITAOF cannot be used when numlocal is set but appendonly is disabled.\r\n",
            want,
        )
        .unwrap_err();
        assert!(err.contains("appendonly"), "{err}");
        for bad in [
            &b"+OK\r\n"[..],
            b"*1\r\n:1\r\n",
            b"*2\r\n:1\r\n",
            b"*2\r\n$1\r\n1\r\n:1\r\n",
        ] {
            assert!(check_wait_aof(bad, want).is_err(), "{bad:?}");
        }
    }

    fn slot_entry(first: i64, last: i64, port: i64) -> Frame {
        Frame::Array(vec![
            Frame::Integer(first),
            Frame::Integer(last),
            Frame::Array(vec![
                Frame::Bulk(b"127.0.0.1".to_vec()),
                Frame::Integer(port),
                Frame::Bulk(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn slot_maps_route_keys_to_the_master_of_their_slot() {
        // distro-db's view: one master with every slot.
        let one =
            SlotMap::from_cluster_slots(&Frame::Array(vec![slot_entry(0, 16383, 21001)])).unwrap();
        assert_eq!(one.masters.len(), 1);
        assert_eq!(one.route(b"key:1"), 0);
        // Two masters: keys go by slot (`CLUSTER KEYSLOT foo` is 12182 in
        // Redis's documentation; a hash tag routes by the tag alone).
        let two = SlotMap::from_cluster_slots(&Frame::Array(vec![
            slot_entry(0, 8191, 21001),
            slot_entry(8192, 16383, 21002),
        ]))
        .unwrap();
        assert_eq!(two.masters[1].1, "127.0.0.1:21002");
        assert_eq!(distro_db::keyspace::slot_of(b"foo"), 12182);
        assert_eq!(two.route(b"foo"), 1);
        assert_eq!(two.route(b"{foo}.other"), 1);
        assert_eq!(two.route(b"key:1"), 0);
        // Uncovered slots and malformed entries are refused.
        let gap = SlotMap::from_cluster_slots(&Frame::Array(vec![slot_entry(0, 100, 21001)]))
            .unwrap_err();
        assert!(gap.contains("slot 101"), "{gap}");
        for bad in [
            Frame::Error("ERR unknown command".into()),
            Frame::Array(vec![slot_entry(0, 16384, 21001)]),
            Frame::Array(vec![slot_entry(10, 5, 21001)]),
            Frame::Array(vec![slot_entry(0, 16383, 70000)]),
            Frame::Array(vec![Frame::Integer(1)]),
        ] {
            assert!(SlotMap::from_cluster_slots(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn budget_claims_never_exceed_the_limit() {
        let c = config(&["-n", "10"]);
        let shared = Shared {
            remaining: AtomicU64::new(10),
            config: c,
            measure_start: Instant::now(),
            deadline: Instant::now(),
            stop: AtomicBool::new(false),
            errors_seen: AtomicU64::new(0),
            first_error: Mutex::new(None),
            slots: None,
        };
        assert_eq!(shared.claim(4), (4, 10));
        assert_eq!(shared.claim(4), (4, 6));
        assert_eq!(shared.claim(4), (2, 2));
        assert_eq!(shared.claim(4), (0, 0));
        shared.remaining.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(shared.claim(16).0, 16);
    }

    #[test]
    fn scans_replies_of_every_kind() {
        assert_eq!(scan_reply(b"+OK\r\n").unwrap(), (ReplyKind::Value, 5));
        assert_eq!(
            scan_reply(b"-ERR no quorum\r\n+OK\r\n").unwrap(),
            (ReplyKind::Error, 16)
        );
        assert_eq!(scan_reply(b"$-1\r\n").unwrap(), (ReplyKind::Nil, 5));
        assert_eq!(scan_reply(b"_\r\n").unwrap(), (ReplyKind::Nil, 3));
        assert_eq!(scan_reply(b"$3\r\nabc\r\n").unwrap(), (ReplyKind::Value, 9));
        assert_eq!(
            scan_reply(b"*2\r\n$1\r\na\r\n$-1\r\n").unwrap(),
            (ReplyKind::Value, 16)
        );
        assert_eq!(
            scan_reply(b"$3\r\nab").unwrap_err(),
            DecodeError::Incomplete
        );
        assert!(matches!(
            scan_reply(b"$3\r\nabcd\r\n"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            scan_reply(b"PONG\r\n"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            scan_reply(b":x\r\n"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            scan_reply(&b"*1\r\n".repeat(1000)),
            Err(DecodeError::Invalid(_))
        ));
    }

    const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"header\":{}}";

    #[test]
    fn parses_http_responses() {
        let mut two = OK_RESPONSE.to_vec();
        two.extend_from_slice(OK_RESPONSE);
        let r = parse_http_response(&two).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.len, OK_RESPONSE.len());
        assert_eq!(&two[r.body.clone()], b"{\"header\":{}}");
        assert!(!r.close);

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: y\r\n\r\nNEXT";
        let r = parse_http_response(chunked).unwrap();
        assert_eq!(r.len, chunked.len() - 4);

        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: Close\r\ncontent-length: 2\r\n\r\nno";
        let r = parse_http_response(close).unwrap();
        assert_eq!((r.status, r.close), (503, true));

        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_http_response(old).unwrap().close);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_http_response(no_content).unwrap().len,
            no_content.len()
        );
    }

    #[test]
    fn every_prefix_of_a_response_is_incomplete() {
        let chunked: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        for full in [OK_RESPONSE, chunked] {
            for cut in 0..full.len() {
                assert_eq!(
                    parse_http_response(&full[..cut]),
                    Err(HttpError::Incomplete),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn malformed_http_is_refused_not_guessed() {
        let bad: &[&[u8]] = &[
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nbody until close",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
            b"HTTP/1.1 200 OK\r\nX: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse_http_response(b), Err(HttpError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let long_head = vec![b'a'; MAX_HTTP_HEAD + 10];
        assert!(matches!(
            parse_http_response(&long_head),
            Err(HttpError::Invalid(_))
        ));
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(Frame::Simple),
            "[a-zA-Z0-9 ]{0,20}".prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Bulk),
            Just(Frame::Null),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Frame::Array)
        })
    }

    proptest! {
        #[test]
        fn scan_agrees_with_the_decoder(f in frame()) {
            let bytes = f.to_bytes();
            let (kind, used) = scan_reply(&bytes).unwrap();
            prop_assert_eq!(used, distro_db::resp::decode(&bytes).unwrap().1);
            let expected = match f {
                Frame::Error(_) => ReplyKind::Error,
                Frame::Null => ReplyKind::Nil,
                _ => ReplyKind::Value,
            };
            prop_assert_eq!(kind, expected);
            for cut in 0..bytes.len() {
                prop_assert_eq!(scan_reply(&bytes[..cut]).unwrap_err(), DecodeError::Incomplete);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = scan_reply(&bytes);
            let _ = parse_http_response(&bytes);
            let mut with_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            with_head.extend_from_slice(&bytes);
            let _ = parse_http_response(&with_head);
        }
    }
}
