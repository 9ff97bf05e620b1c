//! Client commands: parsing the arguments of a RESP command into a
//! [`Command`], with the errors Redis itself gives for wrong names, wrong
//! arity and bad options (so that clients see what they expect). Pure: no
//! I/O, unit-tested on its own.
//!
//! Redis's syntax is followed exactly, with distro-db's extensions where they
//! cannot be mistaken for Redis arguments: `GET key R=n`, `SET key value ...
//! W=n CTX=token` (per-request quorums and a causal context, after every
//! Redis argument), and commands of its own (`VGET`, `VDEL`, `NODES`,
//! `OWNERS`, `REPLICAS`, `STATUS`, `KILL`, `FAULT`, `SHUTDOWN CLUSTER`).
//! `DEL`, `UNLINK`, `MGET` and the like take keys only: `DEL a W=2` deletes
//! the keys `a` and `W=2`.

use crate::object::decode_context;
use crate::vclock::VClock;
use crate::write::{Condition, ExpireIf};

/// A deadline as the client gave it, turned into wall-clock milliseconds
/// when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This many milliseconds from now (`EX`, `PX`, `EXPIRE`, `PEXPIRE`).
    In(i64),
    /// At this Unix time in milliseconds (`EXAT`, `PXAT`, `EXPIREAT`, ...).
    At(i64),
}

impl When {
    /// The deadline in wall-clock milliseconds, from `now_ms`.
    pub fn deadline(self, now_ms: u64) -> u64 {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let at = match self {
            When::In(ms) => now.saturating_add(ms),
            When::At(ms) => ms,
        };
        u64::try_from(at.max(0)).unwrap_or(0)
    }
}

/// What a `SET`-like command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// `+OK`, or nil when a condition kept it from writing (`SET`).
    Ok,
    /// `:1` when written, `:0` when not (`SETNX`).
    Flag,
    /// The value before (`GETSET`, `SET ... GET`).
    Old,
}

/// The deadline a `SET` gives its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTtl {
    /// No deadline.
    None,
    /// A deadline.
    When(When),
    /// Keep the current one (`KEEPTTL`).
    Keep,
}

/// `CLIENT` sub-commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCmd {
    /// `CLIENT ID`
    Id,
    /// `CLIENT GETNAME`
    GetName,
    /// `CLIENT SETNAME name`
    SetName(Vec<u8>),
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`
    SetInfo(String, Vec<u8>),
    /// `CLIENT LIST [TYPE normal|...] [ID id...]`
    List {
        /// Only these ids.
        ids: Vec<u64>,
    },
    /// `CLIENT INFO`
    Info,
    /// `CLIENT KILL ip:port` or `CLIENT KILL [ID id] [ADDR a] [LADDR a] [SKIPME yes|no]`
    Kill(KillFilter),
    /// `CLIENT NO-EVICT`, `NO-TOUCH`: accepted, nothing to change.
    Accept,
    /// `CLIENT HELP`
    Help,
}

/// Which connections `CLIENT KILL` closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillFilter {
    /// This connection id.
    pub id: Option<u64>,
    /// This peer address (`ip:port`).
    pub addr: Option<String>,
    /// This local address.
    pub laddr: Option<String>,
    /// Skip the calling connection (default yes, in the new form).
    pub skipme: bool,
    /// The old form (`CLIENT KILL addr`): answers `+OK` or an error, not a count.
    pub legacy: bool,
    /// `TYPE`/`USER` named something no connection here is (`pubsub`,
    /// `replica`, a user other than `default`): nothing matches.
    pub matches_none: bool,
    /// Only connections older than this many seconds (`MAXAGE`).
    pub older_than_secs: Option<u64>,
}

/// `CLUSTER` sub-commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCmd {
    /// `CLUSTER SLOTS`
    Slots,
    /// `CLUSTER SHARDS`
    Shards,
    /// `CLUSTER NODES`
    Nodes,
    /// `CLUSTER INFO`
    Info,
    /// `CLUSTER MYID`
    MyId,
    /// `CLUSTER KEYSLOT key`
    KeySlot(Vec<u8>),
    /// `CLUSTER COUNTKEYSINSLOT slot`
    CountKeysInSlot(usize),
    /// `CLUSTER HELP`
    Help,
}

/// A fault-injection command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultCmd {
    /// `FAULT PARTITION <node>...`: drop all traffic to and from these nodes.
    Partition(Vec<String>),
    /// `FAULT DELAY <node> <ms>`: add latency to traffic with that node.
    Delay(String, u64),
    /// `FAULT LOSS <node> <percent>`: drop that share of traffic with that node.
    Loss(String, u8),
    /// `FAULT HEAL`: remove every rule.
    Heal,
    /// `FAULT SHOW`: list the rules in force.
    Show,
}

/// A parsed client command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `PING [message]`
    Ping(Option<Vec<u8>>),
    /// `ECHO message`
    Echo(Vec<u8>),
    /// `QUIT`: close this connection.
    Quit,
    /// `RESET`: the connection back to its initial state.
    Reset,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    Hello {
        /// 2 or 3.
        proto: Option<i64>,
        /// Credentials.
        auth: Option<(Vec<u8>, Vec<u8>)>,
        /// A connection name.
        setname: Option<Vec<u8>>,
    },
    /// `AUTH [user] password`
    Auth {
        /// The user (only `default` exists).
        user: Option<Vec<u8>>,
        /// The password.
        password: Vec<u8>,
    },
    /// `SELECT index`
    Select(i64),
    /// `CLIENT ...`
    Client(ClientCmd),
    /// `MULTI`
    Multi,
    /// `EXEC`
    Exec,
    /// `DISCARD`
    Discard,
    /// `WATCH key...` (refused: no optimistic locking across replicas)
    Watch,
    /// `UNWATCH`
    Unwatch,
    /// `READONLY`, `READWRITE`, `ASKING`: cluster-mode connection flags.
    ClusterFlag,
    /// `GET key [R=n]`: one value or nil.
    Get {
        /// Key.
        key: Vec<u8>,
        /// Read quorum override.
        r: Option<usize>,
    },
    /// `VGET key [R=n]`: `[context, value...]`.
    VGet {
        /// Key.
        key: Vec<u8>,
        /// Read quorum override.
        r: Option<usize>,
    },
    /// `SET`, `SETNX`, `SETEX`, `PSETEX`, `GETSET`.
    Set {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Deadline.
        ttl: SetTtl,
        /// `NX`, `XX`.
        cond: Condition,
        /// What to answer.
        reply: SetReply,
        /// Write quorum override.
        w: Option<usize>,
        /// Causal context from a read.
        ctx: Option<VClock>,
    },
    /// `GETDEL key`
    GetDel(Vec<u8>),
    /// `GETEX key [EX|PX|EXAT|PXAT t | PERSIST]`
    GetEx {
        /// Key.
        key: Vec<u8>,
        /// `None`: no change; `Some(None)`: PERSIST; `Some(Some(when))`.
        change: Option<Option<When>>,
    },
    /// `MGET key...`
    MGet(Vec<Vec<u8>>),
    /// `MSET key value...`
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// `DEL key...`, `UNLINK key...`, `VDEL key [W=n] [CTX=token]`
    Del {
        /// Keys.
        keys: Vec<Vec<u8>>,
        /// Write quorum override (VDEL).
        w: Option<usize>,
        /// Causal context (VDEL).
        ctx: Option<VClock>,
    },
    /// `EXISTS key...`
    Exists(Vec<Vec<u8>>),
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `PERSIST` (`when: None`).
    Expire {
        /// Key.
        key: Vec<u8>,
        /// The deadline (`None` removes it).
        when: Option<When>,
        /// `NX`, `XX`, `GT`, `LT`.
        cond: ExpireIf,
    },
    /// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`.
    Ttl {
        /// Key.
        key: Vec<u8>,
        /// Milliseconds rather than seconds.
        millis: bool,
        /// The deadline itself rather than the time left.
        absolute: bool,
    },
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`.
    Incr {
        /// Key.
        key: Vec<u8>,
        /// Change.
        by: i64,
    },
    /// `STRLEN key`
    StrLen(Vec<u8>),
    /// `TYPE key`
    Type(Vec<u8>),
    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`
    Scan {
        /// Where to go on (0 starts).
        cursor: u64,
        /// A glob the keys must match.
        pattern: Option<Vec<u8>>,
        /// About how many keys to return.
        count: usize,
        /// A type the keys must have.
        kind: Option<String>,
    },
    /// `KEYS pattern`
    Keys(Vec<u8>),
    /// `DBSIZE`
    DbSize,
    /// `INFO [section...]`
    Info(Vec<String>),
    /// `COMMAND [sub-command args...]`
    Command(Vec<Vec<u8>>),
    /// `CONFIG GET pattern...`
    ConfigGet(Vec<Vec<u8>>),
    /// `CONFIG SET`, `CONFIG RESETSTAT`, `CONFIG REWRITE`: refused with a reason.
    ConfigRefused(String),
    /// `CONFIG HELP`
    ConfigHelp,
    /// `TIME`
    Time,
    /// `CLUSTER ...`
    Cluster(ClusterCmd),
    /// `NODES`
    Nodes,
    /// `OWNERS key`
    Owners(Vec<u8>),
    /// `REPLICAS key`: what each replica (and stand-in) stores.
    Replicas(Vec<u8>),
    /// `STATUS`
    Status,
    /// `KILL node-id`
    Kill(String),
    /// `RING`: the layout, each node's state and share, transfers.
    Ring,
    /// `LEAVE`: this node hands its partitions over and stops.
    Leave,
    /// `REMOVE node-id [FORCE]`: drop a node that is dead for good.
    Remove(String, bool),
    /// `SHUTDOWN [NOSAVE|SAVE]`: stop this node.
    Shutdown,
    /// `SHUTDOWN CLUSTER`: stop every node.
    ShutdownCluster,
    /// `FAULT ...`: fault injection (only with `--fault-injection`).
    Fault(FaultCmd),
    /// A command distro-db knows and will not do, with the reason.
    Refused(String),
}

impl Command {
    /// The keys the command reads or writes (for ordering a pipeline).
    pub fn keys(&self) -> Option<Vec<&[u8]>> {
        Some(match self {
            Command::Get { key, .. }
            | Command::VGet { key, .. }
            | Command::Set { key, .. }
            | Command::GetDel(key)
            | Command::GetEx { key, .. }
            | Command::Expire { key, .. }
            | Command::Ttl { key, .. }
            | Command::Incr { key, .. }
            | Command::StrLen(key)
            | Command::Type(key) => vec![key.as_slice()],
            Command::MGet(keys) | Command::Del { keys, .. } | Command::Exists(keys) => {
                keys.iter().map(Vec::as_slice).collect()
            }
            Command::MSet(pairs) => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            _ => return None,
        })
    }

    /// True for a command that changes or reads the connection's own state
    /// (run by the session, in order, alone).
    pub fn is_connection_command(&self) -> bool {
        matches!(
            self,
            Command::Quit
                | Command::Reset
                | Command::Hello { .. }
                | Command::Auth { .. }
                | Command::Select(_)
                | Command::Client(_)
                | Command::Multi
                | Command::Exec
                | Command::Discard
                | Command::Watch
                | Command::Unwatch
                | Command::ClusterFlag
        )
    }

    /// True for a command that only reads (runs alongside anything).
    pub fn is_free(&self) -> bool {
        matches!(
            self,
            Command::Ping(_)
                | Command::Echo(_)
                | Command::Nodes
                | Command::Ring
                | Command::Owners(_)
                | Command::Replicas(_)
                | Command::Status
                | Command::Info(_)
                | Command::Command(_)
                | Command::ConfigGet(_)
                | Command::ConfigHelp
                | Command::ConfigRefused(_)
                | Command::Time
                | Command::Cluster(_)
                | Command::Scan { .. }
                | Command::Keys(_)
                | Command::DbSize
                | Command::Refused(_)
        )
    }
}

fn arity(name: &str) -> String {
    format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )
}

const SYNTAX: &str = "syntax error";
const NOT_INTEGER: &str = "value is not an integer or out of range";

fn text(arg: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(arg.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

fn int(arg: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| NOT_INTEGER.to_string())
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

/// distro-db's options after the Redis arguments (`R=n`, `W=n`, `CTX=token`).
#[derive(Default)]
struct Options {
    r: Option<usize>,
    w: Option<usize>,
    ctx: Option<VClock>,
}

/// True when `arg` looks like one of `allowed` options (`NAME=...`).
fn is_option(arg: &[u8], allowed: &[&str]) -> bool {
    let upper = upper(arg);
    allowed
        .iter()
        .any(|o| upper.starts_with(o) && upper.as_bytes().get(o.len()) == Some(&b'='))
}

fn parse_options(
    name: &str,
    key: &[u8],
    args: &[Vec<u8>],
    allowed: &[&str],
) -> Result<Options, String> {
    let mut opts = Options::default();
    for arg in args {
        let arg = text(arg, "option")?;
        let Some((k, v)) = arg.split_once('=') else {
            return Err(SYNTAX.into());
        };
        let k = k.to_ascii_uppercase();
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown option '{k}' for '{}'",
                name.to_ascii_lowercase()
            ));
        }
        let dup = || format!("option {k} given twice");
        match k.as_str() {
            "R" | "W" => {
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("{k} must be a positive integer, got '{v}'"))?;
                let slot = if k == "R" { &mut opts.r } else { &mut opts.w };
                if slot.replace(n).is_some() {
                    return Err(dup());
                }
            }
            "CTX" => {
                if opts.ctx.replace(decode_context(key, v)?).is_some() {
                    return Err(dup());
                }
            }
            _ => return Err(format!("unknown option '{k}'")),
        }
    }
    Ok(opts)
}

/// Redis's error for a command it does not know.
pub fn unknown_command(args: &[Vec<u8>]) -> String {
    let name: String = args
        .first()
        .map(|a| String::from_utf8_lossy(a).chars().take(128).collect())
        .unwrap_or_default();
    let mut shown = String::new();
    for a in args.iter().skip(1) {
        let a: String = String::from_utf8_lossy(a).chars().take(128).collect();
        if shown.len() + a.len() > 128 {
            break;
        }
        shown.push('\'');
        shown.push_str(&a);
        shown.push_str("' ");
    }
    format!("unknown command '{name}', with args beginning with: {shown}")
}

/// Redis's error for an unknown sub-command.
fn unknown_sub(cmd: &str, sub: &[u8]) -> String {
    format!(
        "unknown subcommand '{}'. Try {cmd} HELP.",
        String::from_utf8_lossy(sub)
            .chars()
            .take(128)
            .collect::<String>()
    )
}

/// Parses one command from its RESP arguments. The error is the text after
/// `ERR ` in Redis's reply.
pub fn parse(args: &[Vec<u8>]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Err("empty command".into());
    };
    let name = upper(first);
    let rest = &args[1..];
    let need = |min: usize| {
        if rest.len() < min {
            Err(arity(&name))
        } else {
            Ok(())
        }
    };
    let exactly = |n: usize| {
        if rest.len() != n {
            Err(arity(&name))
        } else {
            Ok(())
        }
    };
    Ok(match name.as_str() {
        "PING" => {
            if rest.len() > 1 {
                return Err(arity(&name));
            }
            Command::Ping(rest.first().cloned())
        }
        "ECHO" => {
            exactly(1)?;
            Command::Echo(rest[0].clone())
        }
        "QUIT" => Command::Quit,
        "RESET" => {
            exactly(0)?;
            Command::Reset
        }
        "HELLO" => parse_hello(rest)?,
        "AUTH" => match rest {
            [password] => Command::Auth {
                user: None,
                password: password.clone(),
            },
            [user, password] => Command::Auth {
                user: Some(user.clone()),
                password: password.clone(),
            },
            _ => return Err(arity(&name)),
        },
        "SELECT" => {
            exactly(1)?;
            Command::Select(int(&rest[0])?)
        }
        "CLIENT" => Command::Client(parse_client(rest)?),
        "MULTI" => {
            exactly(0)?;
            Command::Multi
        }
        "EXEC" => {
            exactly(0)?;
            Command::Exec
        }
        "DISCARD" => {
            exactly(0)?;
            Command::Discard
        }
        "WATCH" => {
            need(1)?;
            Command::Watch
        }
        "UNWATCH" => {
            exactly(0)?;
            Command::Unwatch
        }
        "READONLY" | "READWRITE" | "ASKING" => {
            exactly(0)?;
            Command::ClusterFlag
        }
        "GET" | "VGET" => {
            need(1)?;
            let key = rest[0].clone();
            if name == "GET" && rest.len() > 1 && !rest[1..].iter().all(|a| is_option(a, &["R"])) {
                return Err(arity(&name));
            }
            let o = parse_options(&name, &key, &rest[1..], &["R"])?;
            if name == "GET" {
                Command::Get { key, r: o.r }
            } else {
                Command::VGet { key, r: o.r }
            }
        }
        "SET" => parse_set(&name, rest)?,
        "SETNX" => {
            exactly(2)?;
            set(&rest[0], &rest[1], SetTtl::None, Condition::Absent, SetReply::Flag)
        }
        "SETEX" | "PSETEX" => {
            exactly(3)?;
            let t = int(&rest[1])?;
            if t <= 0 {
                return Err(format!(
                    "invalid expire time in '{}' command",
                    name.to_ascii_lowercase()
                ));
            }
            let ms = if name == "SETEX" { t.saturating_mul(1000) } else { t };
            set(
                &rest[0],
                &rest[2],
                SetTtl::When(When::In(ms)),
                Condition::Always,
                SetReply::Ok,
            )
        }
        "GETSET" => {
            exactly(2)?;
            set(&rest[0], &rest[1], SetTtl::None, Condition::Always, SetReply::Old)
        }
        "GETDEL" => {
            exactly(1)?;
            Command::GetDel(rest[0].clone())
        }
        "GETEX" => {
            need(1)?;
            let change = match &rest[1..] {
                [] => None,
                [p] if upper(p) == "PERSIST" => Some(None),
                [unit, t] => Some(Some(parse_when(&name, unit, t)?.ok_or(SYNTAX)?)),
                _ => return Err(SYNTAX.into()),
            };
            Command::GetEx {
                key: rest[0].clone(),
                change,
            }
        }
        "MGET" => {
            need(1)?;
            Command::MGet(rest.to_vec())
        }
        "MSET" => {
            if rest.is_empty() || rest.len() % 2 != 0 {
                return Err(arity(&name));
            }
            Command::MSet(
                rest.chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )
        }
        "DEL" | "UNLINK" => {
            need(1)?;
            Command::Del {
                keys: rest.to_vec(),
                w: None,
                ctx: None,
            }
        }
        "VDEL" => {
            need(1)?;
            let o = parse_options(&name, &rest[0], &rest[1..], &["W", "CTX"])?;
            Command::Del {
                keys: vec![rest[0].clone()],
                w: o.w,
                ctx: o.ctx,
            }
        }
        "EXISTS" => {
            need(1)?;
            Command::Exists(rest.to_vec())
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
            need(2)?;
            let t = int(&rest[1])?;
            let when = match name.as_str() {
                "EXPIRE" => When::In(t.saturating_mul(1000)),
                "PEXPIRE" => When::In(t),
                "EXPIREAT" => When::At(t.saturating_mul(1000)),
                _ => When::At(t),
            };
            let cond = match &rest[2..] {
                [] => ExpireIf::Always,
                [c] => match upper(c).as_str() {
                    "NX" => ExpireIf::NoTtl,
                    "XX" => ExpireIf::HasTtl,
                    "GT" => ExpireIf::Later,
                    "LT" => ExpireIf::Earlier,
                    other => return Err(format!("Unsupported option {other}")),
                },
                _ => {
                    return Err(
                        "NX and XX, GT or LT options at the same time are not compatible".into(),
                    );
                }
            };
            Command::Expire {
                key: rest[0].clone(),
                when: Some(when),
                cond,
            }
        }
        "PERSIST" => {
            exactly(1)?;
            Command::Expire {
                key: rest[0].clone(),
                when: None,
                cond: ExpireIf::Always,
            }
        }
        "TTL" | "PTTL" | "EXPIRETIME" | "PEXPIRETIME" => {
            exactly(1)?;
            Command::Ttl {
                key: rest[0].clone(),
                millis: name.starts_with('P'),
                absolute: name.ends_with("TIME"),
            }
        }
        "INCR" | "DECR" => {
            exactly(1)?;
            Command::Incr {
                key: rest[0].clone(),
                by: if name == "INCR" { 1 } else { -1 },
            }
        }
        "INCRBY" | "DECRBY" => {
            exactly(2)?;
            let by = int(&rest[1])?;
            let by = if name == "INCRBY" {
                by
            } else {
                by.checked_neg()
                    .ok_or("decrement would overflow".to_string())?
            };
            Command::Incr {
                key: rest[0].clone(),
                by,
            }
        }
        "STRLEN" => {
            exactly(1)?;
            Command::StrLen(rest[0].clone())
        }
        "TYPE" => {
            exactly(1)?;
            Command::Type(rest[0].clone())
        }
        "SCAN" => parse_scan(&name, rest)?,
        "KEYS" => {
            exactly(1)?;
            Command::Keys(rest[0].clone())
        }
        "DBSIZE" => {
            exactly(0)?;
            Command::DbSize
        }
        "INFO" => Command::Info(rest.iter().map(|s| upper(s).to_ascii_lowercase()).collect()),
        "COMMAND" => Command::Command(rest.to_vec()),
        "CONFIG" => {
            need(1)?;
            match upper(&rest[0]).as_str() {
                "GET" => {
                    if rest.len() < 2 {
                        return Err(arity("config|get"));
                    }
                    Command::ConfigGet(rest[1..].to_vec())
                }
                "SET" | "RESETSTAT" | "REWRITE" => Command::ConfigRefused(format!(
                    "CONFIG {} is not supported: distro-db takes its settings from the command line (restart the node with other flags)",
                    upper(&rest[0])
                )),
                "HELP" => Command::ConfigHelp,
                _ => return Err(unknown_sub("CONFIG", &rest[0])),
            }
        }
        "TIME" => {
            exactly(0)?;
            Command::Time
        }
        "CLUSTER" => Command::Cluster(parse_cluster(rest)?),
        "NODES" => {
            exactly(0)?;
            Command::Nodes
        }
        "OWNERS" => {
            exactly(1)?;
            Command::Owners(rest[0].clone())
        }
        "REPLICAS" => {
            exactly(1)?;
            Command::Replicas(rest[0].clone())
        }
        "STATUS" => Command::Status,
        "KILL" => {
            exactly(1)?;
            Command::Kill(text(&rest[0], "node id")?)
        }
        "RING" => {
            exactly(0)?;
            Command::Ring
        }
        "LEAVE" => {
            exactly(0)?;
            Command::Leave
        }
        "REMOVE" => match rest {
            [id] => Command::Remove(text(id, "node id")?, false),
            [id, force] if upper(force) == "FORCE" => Command::Remove(text(id, "node id")?, true),
            [_, other] => {
                return Err(format!(
                    "REMOVE takes a node id and optionally FORCE, not '{}'",
                    String::from_utf8_lossy(other)
                ));
            }
            _ => return Err(arity(&name)),
        },
        "SHUTDOWN" => match rest {
            [] => Command::Shutdown,
            [scope] if scope.eq_ignore_ascii_case(b"CLUSTER") => Command::ShutdownCluster,
            [flag] if upper(flag) == "ABORT" => {
                // Shutdowns here are immediate: there is none to cancel.
                Command::Refused("No shutdown in progress.".into())
            }
            [flag] if ["NOSAVE", "SAVE", "NOW", "FORCE"].contains(&upper(flag).as_str()) => {
                Command::Shutdown
            }
            [_] => {
                return Err(
                    "SHUTDOWN takes no argument (this node) or CLUSTER (every node)".into(),
                );
            }
            _ => return Err(SYNTAX.into()),
        },
        "FAULT" => Command::Fault(parse_fault(rest)?),
        "MSETNX" => Command::Refused(
            "MSETNX is not supported: setting several keys only if none exists needs them all on one node at once; use SET key value NX per key".into(),
        ),
        "APPEND" | "SETRANGE" | "GETRANGE" | "SUBSTR" | "INCRBYFLOAT" | "GETBIT" | "SETBIT" => {
            Command::Refused(format!(
                "{name} is not supported by distro-db (strings are whole values; see docs/redis.md)"
            ))
        }
        "FLUSHDB" | "FLUSHALL" | "SAVE" | "BGSAVE" | "BGREWRITEAOF" | "SWAPDB" | "MOVE"
        | "RENAME" | "RENAMENX" | "COPY" | "OBJECT" | "DUMP" | "RESTORE" | "MIGRATE"
        | "SUBSCRIBE" | "PSUBSCRIBE" | "PUBLISH" | "EVAL" | "EVALSHA" | "SCRIPT" | "FUNCTION"
        | "FCALL" | "WAIT" | "MONITOR" | "SYNC" | "PSYNC" | "REPLICAOF" | "SLAVEOF" => {
            Command::Refused(format!(
                "{name} is not supported by distro-db (see docs/redis.md for what is and why)"
            ))
        }
        _ => return Err(unknown_command(args)),
    })
}

fn set(key: &[u8], value: &[u8], ttl: SetTtl, cond: Condition, reply: SetReply) -> Command {
    Command::Set {
        key: key.to_vec(),
        value: value.to_vec(),
        ttl,
        cond,
        reply,
        w: None,
        ctx: None,
    }
}

/// `EX|PX|EXAT|PXAT t` as a deadline (`None` for another word).
fn parse_when(cmd: &str, unit: &[u8], t: &[u8]) -> Result<Option<When>, String> {
    let u = upper(unit);
    if !["EX", "PX", "EXAT", "PXAT"].contains(&u.as_str()) {
        return Ok(None);
    }
    let t = int(t)?;
    if t <= 0 {
        return Err(format!(
            "invalid expire time in '{}' command",
            cmd.to_ascii_lowercase()
        ));
    }
    Ok(Some(match u.as_str() {
        "EX" => When::In(t.checked_mul(1000).ok_or(format!(
            "invalid expire time in '{}' command",
            cmd.to_ascii_lowercase()
        ))?),
        "PX" => When::In(t),
        "EXAT" => When::At(t.checked_mul(1000).ok_or(format!(
            "invalid expire time in '{}' command",
            cmd.to_ascii_lowercase()
        ))?),
        _ => When::At(t),
    }))
}

fn parse_set(name: &str, rest: &[Vec<u8>]) -> Result<Command, String> {
    if rest.len() < 2 {
        return Err(arity(name));
    }
    let (key, value) = (&rest[0], &rest[1]);
    // distro-db's own options come last.
    let redis_end = rest
        .iter()
        .enumerate()
        .skip(2)
        .find(|(_, a)| is_option(a, &["W", "CTX"]))
        .map_or(rest.len(), |(i, _)| i);
    let o = parse_options(name, key, &rest[redis_end..], &["W", "CTX"])?;
    let mut ttl = SetTtl::None;
    let mut cond = Condition::Always;
    let mut reply = SetReply::Ok;
    let mut i = 2;
    while i < redis_end {
        let word = upper(&rest[i]);
        match word.as_str() {
            "NX" | "XX" => {
                if cond != Condition::Always {
                    return Err(SYNTAX.into());
                }
                cond = if word == "NX" {
                    Condition::Absent
                } else {
                    Condition::Present
                };
            }
            "GET" => reply = SetReply::Old,
            "KEEPTTL" => {
                if ttl != SetTtl::None {
                    return Err(SYNTAX.into());
                }
                ttl = SetTtl::Keep;
            }
            "EX" | "PX" | "EXAT" | "PXAT" => {
                if ttl != SetTtl::None || i + 1 >= redis_end {
                    return Err(SYNTAX.into());
                }
                let when = parse_when(name, &rest[i], &rest[i + 1])?.ok_or(SYNTAX)?;
                ttl = SetTtl::When(when);
                i += 1;
            }
            _ => return Err(SYNTAX.into()),
        }
        i += 1;
    }
    Ok(Command::Set {
        key: key.clone(),
        value: value.clone(),
        ttl,
        cond,
        reply,
        w: o.w,
        ctx: o.ctx,
    })
}

fn parse_hello(rest: &[Vec<u8>]) -> Result<Command, String> {
    let Some((first, mut opts)) = rest.split_first() else {
        return Ok(Command::Hello {
            proto: None,
            auth: None,
            setname: None,
        });
    };
    let proto = int(first).map_err(|_| "Protocol version is not an integer or out of range")?;
    let mut auth = None;
    let mut setname = None;
    while let Some((word, more)) = opts.split_first() {
        match upper(word).as_str() {
            "AUTH" if more.len() >= 2 => {
                auth = Some((more[0].clone(), more[1].clone()));
                opts = &more[2..];
            }
            "SETNAME" if !more.is_empty() => {
                setname = Some(more[0].clone());
                opts = &more[1..];
            }
            _ => {
                return Err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(word)
                ));
            }
        }
    }
    Ok(Command::Hello {
        proto: Some(proto),
        auth,
        setname,
    })
}

fn parse_client(rest: &[Vec<u8>]) -> Result<ClientCmd, String> {
    let Some((sub, args)) = rest.split_first() else {
        return Err(arity("client"));
    };
    let sub_name = upper(sub);
    let arity_of = |n: usize| {
        if args.len() != n {
            Err(arity(&format!("client|{}", sub_name.to_ascii_lowercase())))
        } else {
            Ok(())
        }
    };
    Ok(match sub_name.as_str() {
        "ID" => {
            arity_of(0)?;
            ClientCmd::Id
        }
        "GETNAME" => {
            arity_of(0)?;
            ClientCmd::GetName
        }
        "SETNAME" => {
            arity_of(1)?;
            if args[0].iter().any(|b| *b <= b' ' || *b > b'~') {
                return Err(
                    "Client names cannot contain spaces, newlines or special characters.".into(),
                );
            }
            ClientCmd::SetName(args[0].clone())
        }
        "SETINFO" => {
            arity_of(2)?;
            let attr = upper(&args[0]);
            if attr != "LIB-NAME" && attr != "LIB-VER" {
                return Err(format!(
                    "Unrecognized option '{}'",
                    String::from_utf8_lossy(&args[0])
                ));
            }
            ClientCmd::SetInfo(attr, args[1].clone())
        }
        "LIST" => {
            let mut ids = Vec::new();
            let mut i = 0;
            while i < args.len() {
                match upper(&args[i]).as_str() {
                    "TYPE" if i + 1 < args.len() => i += 2,
                    "ID" => {
                        i += 1;
                        while i < args.len() {
                            let id = int(&args[i]).map_err(|_| "Invalid client ID".to_string())?;
                            ids.push(u64::try_from(id).map_err(|_| "Invalid client ID")?);
                            i += 1;
                        }
                    }
                    _ => return Err(SYNTAX.into()),
                }
            }
            ClientCmd::List { ids }
        }
        "INFO" => {
            arity_of(0)?;
            ClientCmd::Info
        }
        "KILL" => ClientCmd::Kill(parse_kill(args)?),
        "NO-EVICT" | "NO-TOUCH" => {
            arity_of(1)?;
            match upper(&args[0]).as_str() {
                "ON" | "OFF" => ClientCmd::Accept,
                _ => return Err(SYNTAX.into()),
            }
        }
        "HELP" => ClientCmd::Help,
        _ => return Err(unknown_sub("CLIENT", sub)),
    })
}

fn parse_kill(args: &[Vec<u8>]) -> Result<KillFilter, String> {
    if let [addr] = args {
        return Ok(KillFilter {
            addr: Some(text(addr, "address")?),
            legacy: true,
            ..KillFilter::default()
        });
    }
    if args.is_empty() || args.len() % 2 != 0 {
        return Err(SYNTAX.into());
    }
    let mut f = KillFilter {
        skipme: true,
        ..KillFilter::default()
    };
    for pair in args.chunks(2) {
        match upper(&pair[0]).as_str() {
            "ID" => {
                let id = int(&pair[1]).map_err(|_| "client-id should be greater than 0")?;
                f.id = Some(u64::try_from(id).map_err(|_| "client-id should be greater than 0")?);
            }
            "ADDR" => f.addr = Some(text(&pair[1], "address")?),
            "LADDR" => f.laddr = Some(text(&pair[1], "address")?),
            "SKIPME" => {
                f.skipme = match upper(&pair[1]).as_str() {
                    "YES" => true,
                    "NO" => false,
                    _ => return Err(SYNTAX.into()),
                }
            }
            // Every connection here is a normal client of user `default`.
            "TYPE" => match upper(&pair[1]).as_str() {
                "NORMAL" => {}
                "MASTER" | "REPLICA" | "SLAVE" | "PUBSUB" => f.matches_none = true,
                other => {
                    return Err(format!(
                        "Unknown client type '{}'",
                        other.to_ascii_lowercase()
                    ));
                }
            },
            "USER" => f.matches_none |= pair[1] != b"default",
            "MAXAGE" => {
                let age = int(&pair[1])?;
                f.older_than_secs = Some(u64::try_from(age).unwrap_or(0));
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    Ok(f)
}

fn parse_cluster(rest: &[Vec<u8>]) -> Result<ClusterCmd, String> {
    let Some((sub, args)) = rest.split_first() else {
        return Err(arity("cluster"));
    };
    Ok(match upper(sub).as_str() {
        "SLOTS" => ClusterCmd::Slots,
        "SHARDS" => ClusterCmd::Shards,
        "NODES" => ClusterCmd::Nodes,
        "INFO" => ClusterCmd::Info,
        "MYID" => ClusterCmd::MyId,
        "KEYSLOT" => match args {
            [key] => ClusterCmd::KeySlot(key.clone()),
            _ => return Err(arity("cluster|keyslot")),
        },
        "COUNTKEYSINSLOT" => match args {
            [slot] => {
                let s = int(slot).map_err(|_| "Invalid slot")?;
                let s = usize::try_from(s)
                    .ok()
                    .filter(|s| *s < crate::keyspace::SLOTS)
                    .ok_or("Invalid slot")?;
                ClusterCmd::CountKeysInSlot(s)
            }
            _ => return Err(arity("cluster|countkeysinslot")),
        },
        "HELP" => ClusterCmd::Help,
        _ => return Err(unknown_sub("CLUSTER", sub)),
    })
}

fn parse_scan(name: &str, rest: &[Vec<u8>]) -> Result<Command, String> {
    if rest.is_empty() {
        return Err(arity(name));
    }
    let cursor: u64 = std::str::from_utf8(&rest[0])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("invalid cursor")?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut kind = None;
    let mut opts = &rest[1..];
    while let Some((word, more)) = opts.split_first() {
        let Some((value, after)) = more.split_first() else {
            return Err(SYNTAX.into());
        };
        match upper(word).as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => {
                let n = int(value)?;
                if n < 1 {
                    return Err(SYNTAX.into());
                }
                count = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "TYPE" => kind = Some(String::from_utf8_lossy(value).to_ascii_lowercase()),
            _ => return Err(SYNTAX.into()),
        }
        opts = after;
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
        kind,
    })
}

fn parse_fault(rest: &[Vec<u8>]) -> Result<FaultCmd, String> {
    let usage = "usage: FAULT PARTITION <node>... | FAULT DELAY <node> <ms> | FAULT LOSS <node> <percent> | FAULT HEAL | FAULT SHOW";
    let Some((sub, args)) = rest.split_first() else {
        return Err(usage.into());
    };
    let args: Vec<String> = args
        .iter()
        .map(|a| text(a, "node id"))
        .collect::<Result<_, _>>()?;
    Ok(match (upper(sub).as_str(), args.as_slice()) {
        ("PARTITION", nodes) if !nodes.is_empty() => FaultCmd::Partition(nodes.to_vec()),
        ("DELAY", [node, ms]) => FaultCmd::Delay(
            node.clone(),
            ms.parse()
                .map_err(|_| format!("delay must be milliseconds, got '{ms}'"))?,
        ),
        ("LOSS", [node, pct]) => FaultCmd::Loss(
            node.clone(),
            pct.parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("loss must be a percentage 0-100, got '{pct}'"))?,
        ),
        ("HEAL", []) => FaultCmd::Heal,
        ("SHOW", []) => FaultCmd::Show,
        _ => return Err(usage.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::encode_context;

    fn p(line: &[&str]) -> Result<Command, String> {
        let args: Vec<Vec<u8>> = line.iter().map(|s| s.as_bytes().to_vec()).collect();
        parse(&args)
    }

    #[test]
    fn parses_commands_and_options() {
        assert_eq!(
            p(&["get", "k"]),
            Ok(Command::Get {
                key: b"k".to_vec(),
                r: None
            })
        );
        assert_eq!(
            p(&["GET", "k", "r=1"]),
            Ok(Command::Get {
                key: b"k".to_vec(),
                r: Some(1)
            })
        );
        let token = encode_context(b"k", &VClock::new());
        let ctx_arg = format!("CTX={token}");
        match p(&["SET", "k", "v", "EX", "10", "NX", "GET", "W=3", &ctx_arg]).unwrap() {
            Command::Set {
                ttl,
                cond,
                reply,
                w,
                ctx,
                ..
            } => {
                assert_eq!(ttl, SetTtl::When(When::In(10_000)));
                assert_eq!(cond, Condition::Absent);
                assert_eq!(reply, SetReply::Old);
                assert_eq!(w, Some(3));
                assert_eq!(ctx, Some(VClock::new()));
            }
            other => panic!("{other:?}"),
        }
        // A value that looks like an option is a value.
        match p(&["SET", "k", "W=2"]).unwrap() {
            Command::Set { value, w, .. } => assert_eq!((value, w), (b"W=2".to_vec(), None)),
            other => panic!("{other:?}"),
        }
        // DEL takes keys only: W=2 is a second key.
        assert_eq!(
            p(&["DEL", "a", "W=2"]),
            Ok(Command::Del {
                keys: vec![b"a".to_vec(), b"W=2".to_vec()],
                w: None,
                ctx: None
            })
        );
        assert_eq!(p(&["SHUTDOWN", "cluster"]), Ok(Command::ShutdownCluster));
        assert_eq!(p(&["SHUTDOWN", "nosave"]), Ok(Command::Shutdown));
        assert_eq!(p(&["KILL", "node-1"]), Ok(Command::Kill("node-1".into())));
        assert_eq!(
            p(&["MSET", "a", "1", "b", "2"]),
            Ok(Command::MSet(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]))
        );
        assert!(matches!(
            p(&["INCRBY", "k", "5"]),
            Ok(Command::Incr { by: 5, .. })
        ));
        assert!(matches!(
            p(&["DECRBY", "k", "5"]),
            Ok(Command::Incr { by: -5, .. })
        ));
        assert!(matches!(
            p(&["EXPIRE", "k", "10", "GT"]),
            Ok(Command::Expire {
                when: Some(When::In(10_000)),
                cond: ExpireIf::Later,
                ..
            })
        ));
        assert!(matches!(
            p(&["SCAN", "0", "MATCH", "a*", "COUNT", "100", "TYPE", "string"]),
            Ok(Command::Scan { count: 100, .. })
        ));
        assert!(matches!(
            p(&["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me"]),
            Ok(Command::Hello {
                proto: Some(3),
                auth: Some(_),
                setname: Some(_)
            })
        ));
        assert!(matches!(
            p(&["CLIENT", "KILL", "ID", "7", "SKIPME", "no"]),
            Ok(Command::Client(ClientCmd::Kill(KillFilter {
                id: Some(7),
                skipme: false,
                ..
            })))
        ));
        assert_eq!(
            p(&["CLUSTER", "KEYSLOT", "foo"]),
            Ok(Command::Cluster(ClusterCmd::KeySlot(b"foo".to_vec())))
        );
    }

    #[test]
    fn errors_read_like_redis() {
        assert_eq!(
            p(&["GET"]).unwrap_err(),
            "wrong number of arguments for 'get' command"
        );
        assert_eq!(
            p(&["GET", "a", "b"]).unwrap_err(),
            "wrong number of arguments for 'get' command"
        );
        assert_eq!(p(&["SET", "k", "v", "EX"]).unwrap_err(), "syntax error");
        assert_eq!(
            p(&["SET", "k", "v", "EX", "0"]).unwrap_err(),
            "invalid expire time in 'set' command"
        );
        assert_eq!(
            p(&["SET", "k", "v", "NX", "XX"]).unwrap_err(),
            "syntax error"
        );
        assert_eq!(
            p(&["INCRBY", "k", "x"]).unwrap_err(),
            "value is not an integer or out of range"
        );
        assert_eq!(
            p(&["FROB"]).unwrap_err(),
            "unknown command 'FROB', with args beginning with: "
        );
        assert_eq!(
            p(&["frob", "a", "b c"]).unwrap_err(),
            "unknown command 'frob', with args beginning with: 'a' 'b c' "
        );
        assert_eq!(
            p(&["CLIENT", "FROB"]).unwrap_err(),
            "unknown subcommand 'FROB'. Try CLIENT HELP."
        );
        assert!(p(&["GET", "k", "W=2"]).is_err());
        assert!(
            p(&["SET", "k", "v", "CTX=!!"])
                .unwrap_err()
                .contains("context token")
        );
        assert!(p(&["SHUTDOWN", "now please"]).is_err());
        assert!(p(&["FAULT"]).unwrap_err().starts_with("usage: FAULT"));
        assert!(
            p(&["FAULT", "LOSS", "n", "101"])
                .unwrap_err()
                .contains("0-100")
        );
        assert_eq!(
            p(&["fault", "partition", "a", "b"]),
            Ok(Command::Fault(FaultCmd::Partition(vec![
                "a".into(),
                "b".into()
            ])))
        );
        assert!(matches!(p(&["MSETNX", "a", "1"]), Ok(Command::Refused(_))));
        assert!(p(&[]).is_err());
    }
}

#[cfg(test)]
mod catalog_agreement {
    use super::*;
    use crate::api::catalog::COMMANDS;

    /// Every command the catalog lists (what `COMMAND` tells clients) is
    /// one the parser knows, and the other way round for the common ones.
    #[test]
    fn the_catalog_and_the_parser_know_the_same_commands() {
        for spec in COMMANDS {
            let n = usize::try_from(spec.arity.unsigned_abs())
                .unwrap_or(1)
                .max(1);
            let mut args = vec![spec.name.as_bytes().to_vec()];
            args.extend((1..n).map(|_| b"1".to_vec()));
            if let Err(e) = parse(&args) {
                assert!(
                    !e.starts_with("unknown command"),
                    "{} is in the catalog but not parsed: {e}",
                    spec.name
                );
            }
        }
        for name in [
            "get",
            "set",
            "del",
            "unlink",
            "mget",
            "mset",
            "exists",
            "expire",
            "pexpire",
            "expireat",
            "pexpireat",
            "persist",
            "ttl",
            "pttl",
            "incr",
            "decr",
            "incrby",
            "decrby",
            "scan",
            "keys",
            "dbsize",
            "type",
            "strlen",
            "getdel",
            "getex",
            "setnx",
            "setex",
            "psetex",
            "getset",
            "info",
            "command",
            "config",
            "client",
            "cluster",
            "hello",
            "auth",
            "select",
            "multi",
            "exec",
            "discard",
            "watch",
            "unwatch",
            "readonly",
            "readwrite",
            "asking",
            "reset",
            "ping",
            "echo",
            "quit",
            "time",
            "vget",
            "vdel",
        ] {
            assert!(
                crate::api::catalog::lookup(name.as_bytes()).is_some(),
                "{name} is parsed but missing from COMMAND"
            );
        }
    }
}
