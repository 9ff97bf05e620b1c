//! The command catalog: a static table of every command distro-db answers,
//! with the metadata Redis 7 publishes for it, and the replies of the
//! `COMMAND` family rendered from that table. Pure: no I/O, no panic on any
//! input.
//!
//! Real clients depend on it. redis-py's `RedisCluster` and go-redis read
//! `COMMAND` when they start, to learn each command's key positions, and
//! refuse on the client side a command that is missing there. redis-cli shows
//! argument hints from `COMMAND DOCS`, and prints `HELP <command>` from it.
//! redis-py asks `COMMAND GETKEYS` for commands whose keys it cannot place.
//!
//! A [`Spec`] holds what Redis 7 stores for a command:
//! - its name, in lower case; a sub-command is named `container|sub`
//!   (`client|id`), as Redis 7 names them;
//! - its arity, in Redis's convention: positive means exactly that many
//!   words (the name included), negative means at least that many;
//! - its flags (`write`, `readonly`, `fast`, ...) and ACL categories
//!   (`@read`, `@string`, ...), both in the order Redis lists them;
//! - the legacy key positions (first key, last key, step: `GET` 1,1,1;
//!   `MSET` 1,-1,2; commands without keys 0,0,0) and the key specs that
//!   Redis 7 returns beside them;
//! - tips for cluster clients, and the documentation: group, since,
//!   complexity, summary, deprecation, arguments, sub-commands.
//!
//! The Redis commands carry Redis's facts (summaries and complexities are
//! written here in our own words). distro-db's own commands (group
//! `distro-db`) carry invented metadata in the same shape.
//!
//! The replies are [`Frame`]s with maps and sets, so the encoder writes them
//! natively in RESP3 and as flat arrays in RESP2, as Redis does.

use super::resp::Frame;

/// How an argument is written, with the names `COMMAND DOCS` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// Any string.
    String,
    /// An integer.
    Integer,
    /// A number, not necessarily whole.
    Double,
    /// A key (routed by cluster clients).
    Key,
    /// A glob-style pattern.
    Pattern,
    /// A Unix time, in seconds or milliseconds.
    UnixTime,
    /// A fixed word and nothing else (its [`Arg::token`]).
    PureToken,
    /// Exactly one of the nested arguments.
    OneOf,
    /// All of the nested arguments, in order.
    Block,
}

impl ArgKind {
    /// The name `COMMAND DOCS` gives this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ArgKind::String => "string",
            ArgKind::Integer => "integer",
            ArgKind::Double => "double",
            ArgKind::Key => "key",
            ArgKind::Pattern => "pattern",
            ArgKind::UnixTime => "unix-time",
            ArgKind::PureToken => "pure-token",
            ArgKind::OneOf => "oneof",
            ArgKind::Block => "block",
        }
    }

    /// Whether the argument nests others ([`ArgKind::OneOf`], [`ArgKind::Block`]).
    pub fn is_group(self) -> bool {
        matches!(self, ArgKind::OneOf | ArgKind::Block)
    }
}

/// One argument of a command, as `COMMAND DOCS` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// Its name, unique among its siblings.
    pub name: &'static str,
    /// How it is written.
    pub kind: ArgKind,
    /// The fixed word written before the value (`EX` in `EX seconds`), or
    /// the whole argument for a [`ArgKind::PureToken`].
    pub token: Option<&'static str>,
    /// How the value is shown in a usage line, when not by its name
    /// (`R=n`, `ip:port`).
    pub display: Option<&'static str>,
    /// A short description, for arguments whose name does not say it all.
    pub summary: Option<&'static str>,
    /// The version that added the argument, when later than the command's.
    pub since: Option<&'static str>,
    /// The version that deprecated the argument.
    pub deprecated_since: Option<&'static str>,
    /// May be left out.
    pub optional: bool,
    /// May be repeated (the token, if any, is written once).
    pub multiple: bool,
    /// The nested arguments of a [`ArgKind::OneOf`] or [`ArgKind::Block`].
    pub args: &'static [Arg],
}

/// A Redis 7 key spec of the only shape distro-db's commands need: the
/// first key at a fixed index (`begin_search` `index`), the others found by
/// a range (`find_keys` `range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Why the flags are what they are, when that is not obvious.
    pub notes: Option<&'static str>,
    /// What the command does to these keys: `RO`, `RW`, `OW` or `RM`, then
    /// `access`, `update`, `insert`, `delete`, `not_key`, `variable_flags`.
    pub flags: &'static [&'static str],
    /// The index of the first key (the command name is index 0).
    pub index: i64,
    /// The last key, relative to the first when >= 0 (0: only the first),
    /// from the end of the arguments when < 0 (-1: up to the last one).
    pub last_key: i64,
    /// The distance between keys (2 for `key value` pairs).
    pub key_step: i64,
    /// When `last_key` is -1, take only 1/limit of the arguments (0: all).
    pub limit: i64,
}

/// Why a command is deprecated, and what to use instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecated {
    /// The version that deprecated it.
    pub since: &'static str,
    /// What replaces it.
    pub replaced_by: &'static str,
}

/// Everything the catalog knows about one command or sub-command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Lower case; `container|sub` for a sub-command.
    pub name: &'static str,
    /// Positive: exactly this many words, the name included; negative: at
    /// least minus this many. A sub-command counts the container's name.
    pub arity: i64,
    /// Redis 7 command flags, in the order Redis lists them.
    pub flags: &'static [&'static str],
    /// Legacy position of the first key (0: no keys).
    pub first_key: i64,
    /// Legacy position of the last key (negative: from the end).
    pub last_key: i64,
    /// Legacy distance between keys.
    pub step: i64,
    /// ACL categories (`@read`, `@fast`, ...), in the order Redis lists them.
    pub acl: &'static [&'static str],
    /// Hints for cluster clients (`request_policy:multi_shard`, ...).
    pub tips: &'static [&'static str],
    /// Where the keys are, as Redis 7 describes it.
    pub key_specs: &'static [KeySpec],
    /// Documentation group (`string`, `generic`, ..., `distro-db`).
    pub group: &'static str,
    /// The version that added the command.
    pub since: &'static str,
    /// Time complexity.
    pub complexity: &'static str,
    /// One line on what the command does.
    pub summary: &'static str,
    /// Set when the command is deprecated.
    pub deprecated: Option<Deprecated>,
    /// The arguments after the name (after the sub-command's name, for one).
    pub args: &'static [Arg],
    /// The sub-commands of a container command (`CLIENT`, `CONFIG`, ...).
    pub subcommands: &'static [Spec],
}

impl Spec {
    /// Whether the command has `flag` (a Redis flag name such as `write`).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// Whether the command takes keys.
    pub fn has_keys(&self) -> bool {
        !self.key_specs.is_empty() || self.first_key > 0
    }

    /// The name after the container's (`id` for `client|id`), or the name.
    pub fn short_name(&self) -> &'static str {
        match self.name.split_once('|') {
            Some((_, sub)) => sub,
            None => self.name,
        }
    }
}

// ---------------------------------------------------------------------------
// Builders, so that the table below reads as a list of facts.

const fn arg(name: &'static str, kind: ArgKind) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        display: None,
        summary: None,
        since: None,
        deprecated_since: None,
        optional: false,
        multiple: false,
        args: &[],
    }
}

const fn key(name: &'static str) -> Arg {
    arg(name, ArgKind::Key)
}

const fn string(name: &'static str) -> Arg {
    arg(name, ArgKind::String)
}

const fn integer(name: &'static str) -> Arg {
    arg(name, ArgKind::Integer)
}

const fn pattern(name: &'static str) -> Arg {
    arg(name, ArgKind::Pattern)
}

const fn unix_time(name: &'static str) -> Arg {
    arg(name, ArgKind::UnixTime)
}

const fn token(name: &'static str, word: &'static str) -> Arg {
    arg(name, ArgKind::PureToken).tok(word)
}

const fn oneof(name: &'static str, args: &'static [Arg]) -> Arg {
    Arg {
        args,
        ..arg(name, ArgKind::OneOf)
    }
}

const fn block(name: &'static str, args: &'static [Arg]) -> Arg {
    Arg {
        args,
        ..arg(name, ArgKind::Block)
    }
}

impl Arg {
    const fn opt(self) -> Arg {
        Arg {
            optional: true,
            ..self
        }
    }

    const fn multi(self) -> Arg {
        Arg {
            multiple: true,
            ..self
        }
    }

    const fn tok(self, word: &'static str) -> Arg {
        Arg {
            token: Some(word),
            ..self
        }
    }

    const fn since(self, version: &'static str) -> Arg {
        Arg {
            since: Some(version),
            ..self
        }
    }

    const fn display(self, text: &'static str) -> Arg {
        Arg {
            display: Some(text),
            ..self
        }
    }

    const fn about(self, text: &'static str) -> Arg {
        Arg {
            summary: Some(text),
            ..self
        }
    }

    const fn deprecated(self, version: &'static str) -> Arg {
        Arg {
            deprecated_since: Some(version),
            ..self
        }
    }
}

const fn cmd(name: &'static str, arity: i64, group: &'static str, since: &'static str) -> Spec {
    Spec {
        name,
        arity,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl: &["@slow"],
        tips: &[],
        key_specs: &[],
        group,
        since,
        complexity: "O(1)",
        summary: "",
        deprecated: None,
        args: &[],
        subcommands: &[],
    }
}

/// A key spec starting at `index` and ending at `last_key`, `key_step` apart.
const fn range(
    flags: &'static [&'static str],
    index: i64,
    last_key: i64,
    key_step: i64,
) -> KeySpec {
    KeySpec {
        notes: None,
        flags,
        index,
        last_key,
        key_step,
        limit: 0,
    }
}

impl KeySpec {
    const fn notes(self, text: &'static str) -> KeySpec {
        KeySpec {
            notes: Some(text),
            ..self
        }
    }
}

impl Spec {
    const fn doc(self, summary: &'static str, complexity: &'static str) -> Spec {
        Spec {
            summary,
            complexity,
            ..self
        }
    }

    const fn flags(self, flags: &'static [&'static str]) -> Spec {
        Spec { flags, ..self }
    }

    const fn acl(self, acl: &'static [&'static str]) -> Spec {
        Spec { acl, ..self }
    }

    const fn tips(self, tips: &'static [&'static str]) -> Spec {
        Spec { tips, ..self }
    }

    /// The legacy key positions and the key specs they come from.
    const fn keys(self, first: i64, last: i64, step: i64, specs: &'static [KeySpec]) -> Spec {
        Spec {
            first_key: first,
            last_key: last,
            step,
            key_specs: specs,
            ..self
        }
    }

    const fn args(self, args: &'static [Arg]) -> Spec {
        Spec { args, ..self }
    }

    const fn subs(self, subcommands: &'static [Spec]) -> Spec {
        Spec {
            subcommands,
            ..self
        }
    }

    const fn deprecated(self, since: &'static str, replaced_by: &'static str) -> Spec {
        Spec {
            deprecated: Some(Deprecated { since, replaced_by }),
            ..self
        }
    }
}

// ---------------------------------------------------------------------------
// Shared pieces of the table.

const GENERIC: &str = "generic";
const STRING: &str = "string";
const CONNECTION: &str = "connection";
const SERVER: &str = "server";
const TRANSACTIONS: &str = "transactions";
const CLUSTER: &str = "cluster";
const DISTRO: &str = "distro-db";
/// The version of distro-db that has its own commands.
const DISTRO_SINCE: &str = "0.1.0";

const F_FAST: &[&str] = &["fast"];
const F_READ_FAST: &[&str] = &["readonly", "fast"];
const F_WRITE_FAST: &[&str] = &["write", "fast"];
const F_WRITE_DENYOOM: &[&str] = &["write", "denyoom"];
const F_WRITE_DENYOOM_FAST: &[&str] = &["write", "denyoom", "fast"];
/// Connection commands that work at any time, even before authentication.
const F_ANYTIME: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];
const F_LOADING_STALE: &[&str] = &["loading", "stale"];
const F_NOSCRIPT: &[&str] = &["noscript", "loading", "stale"];
const F_ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];
const F_TRANSACTION: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

const A_CONN_FAST: &[&str] = &["@fast", "@connection"];
const A_CONN_SLOW: &[&str] = &["@slow", "@connection"];
const A_CONN_ADMIN: &[&str] = &["@admin", "@slow", "@dangerous", "@connection"];
const A_READ_STRING_FAST: &[&str] = &["@read", "@string", "@fast"];
const A_WRITE_STRING_FAST: &[&str] = &["@write", "@string", "@fast"];
const A_WRITE_STRING_SLOW: &[&str] = &["@write", "@string", "@slow"];
const A_KEYS_READ_FAST: &[&str] = &["@keyspace", "@read", "@fast"];
const A_KEYS_READ_SLOW: &[&str] = &["@keyspace", "@read", "@slow"];
const A_KEYS_WRITE_FAST: &[&str] = &["@keyspace", "@write", "@fast"];
const A_KEYS_WRITE_SLOW: &[&str] = &["@keyspace", "@write", "@slow"];
const A_SLOW: &[&str] = &["@slow"];
const A_ADMIN: &[&str] = &["@admin", "@slow", "@dangerous"];
const A_TRANSACTION_FAST: &[&str] = &["@fast", "@transaction"];

const T_NONDETERMINISTIC: &[&str] = &["nondeterministic_output"];
const T_ANY_ORDER: &[&str] = &["nondeterministic_output_order"];
const T_SUM_OVER_SHARDS: &[&str] = &["request_policy:multi_shard", "response_policy:agg_sum"];
const T_ALL_NODES: &[&str] = &["request_policy:all_nodes", "response_policy:all_succeeded"];

const K_READ: &[KeySpec] = &[range(&["RO", "access"], 1, 0, 1)];
const K_READ_META: &[KeySpec] = &[range(&["RO"], 1, 0, 1)];
const K_UPDATE: &[KeySpec] = &[range(&["RW", "update"], 1, 0, 1)];
const K_READ_UPDATE: &[KeySpec] = &[range(&["RW", "access", "update"], 1, 0, 1)];
const K_OVERWRITE: &[KeySpec] = &[range(&["OW", "update"], 1, 0, 1)];
const K_DELETE_ONE: &[KeySpec] = &[range(&["RM", "delete"], 1, 0, 1)];
const K_READ_ALL: &[KeySpec] = &[range(&["RO", "access"], 1, -1, 1)];
const K_META_ALL: &[KeySpec] = &[range(&["RO"], 1, -1, 1)];
const K_DELETE_ALL: &[KeySpec] = &[range(&["RM", "delete"], 1, -1, 1)];

const ARGS_KEY: &[Arg] = &[key("key")];
const EXPIRE_CONDITION: Arg = oneof(
    "condition",
    &[
        token("nx", "NX"),
        token("xx", "XX"),
        token("gt", "GT"),
        token("lt", "LT"),
    ],
)
.opt()
.since("7.0.0");
const ON_OFF: Arg = oneof("enabled", &[token("on", "ON"), token("off", "OFF")]);
const CLIENT_TYPES: &[Arg] = &[
    token("normal", "NORMAL"),
    token("master", "MASTER"),
    token("replica", "REPLICA"),
    token("pubsub", "PUBSUB"),
];

/// `EXPIRE`-like commands: `NAME key <amount> [NX | XX | GT | LT]`.
const fn expire(
    name: &'static str,
    since: &'static str,
    summary: &'static str,
    args: &'static [Arg],
) -> Spec {
    cmd(name, -3, GENERIC, since)
        .doc(summary, "O(1)")
        .flags(F_WRITE_FAST)
        .acl(A_KEYS_WRITE_FAST)
        .keys(1, 1, 1, K_UPDATE)
        .args(args)
}

/// Commands that read one key: `NAME key`.
const fn read_key(
    name: &'static str,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
) -> Spec {
    cmd(name, 2, group, since)
        .doc(summary, "O(1)")
        .flags(F_READ_FAST)
        .keys(1, 1, 1, K_READ)
        .args(ARGS_KEY)
}

/// A container's `HELP` sub-command.
const fn help(name: &'static str, group: &'static str, acl: &'static [&'static str]) -> Spec {
    cmd(name, 2, group, "5.0.0")
        .doc("Describes the sub-commands, one per line.", "O(1)")
        .flags(F_LOADING_STALE)
        .acl(acl)
}

// ---------------------------------------------------------------------------
// The catalog.

const CLIENT_SUBS: &[Spec] = &[
    cmd("client|id", 2, CONNECTION, "5.0.0")
        .doc("Returns the unique ID of this connection.", "O(1)")
        .flags(F_NOSCRIPT)
        .acl(A_CONN_SLOW),
    cmd("client|getname", 2, CONNECTION, "2.6.9")
        .doc("Returns the name given to this connection, or nil.", "O(1)")
        .flags(F_NOSCRIPT)
        .acl(A_CONN_SLOW),
    cmd("client|setname", 3, CONNECTION, "2.6.9")
        .doc(
            "Gives this connection a name, shown by CLIENT LIST.",
            "O(1)",
        )
        .flags(F_NOSCRIPT)
        .acl(A_CONN_SLOW)
        .args(&[string("connection-name")]),
    cmd("client|list", -2, CONNECTION, "2.4.0")
        .doc(
            "Lists the open client connections, one line each.",
            "O(N) where N is the number of connections",
        )
        .flags(F_ADMIN)
        .acl(A_CONN_ADMIN)
        .tips(T_NONDETERMINISTIC)
        .args(&[
            oneof("client-type", CLIENT_TYPES)
                .tok("TYPE")
                .opt()
                .since("5.0.0"),
            integer("client-id").tok("ID").opt().multi().since("6.2.0"),
        ]),
    cmd("client|info", 2, CONNECTION, "6.2.0")
        .doc(
            "Describes this connection, in the format of a CLIENT LIST line.",
            "O(1)",
        )
        .flags(F_NOSCRIPT)
        .acl(A_CONN_SLOW)
        .tips(T_NONDETERMINISTIC),
    cmd("client|kill", -3, CONNECTION, "2.4.0")
        .doc(
            "Closes the client connections that match an address or a set of filters.",
            "O(N) where N is the number of connections",
        )
        .flags(F_ADMIN)
        .acl(A_CONN_ADMIN)
        .args(&[oneof(
            "filter",
            &[
                string("old-format").display("ip:port").deprecated("2.8.12"),
                oneof(
                    "new-format",
                    &[
                        integer("client-id").tok("ID").opt().since("2.8.12"),
                        oneof("client-type", CLIENT_TYPES)
                            .tok("TYPE")
                            .opt()
                            .since("2.8.12"),
                        string("username").tok("USER").opt(),
                        string("addr").tok("ADDR").display("ip:port").opt(),
                        string("laddr")
                            .tok("LADDR")
                            .display("ip:port")
                            .opt()
                            .since("6.2.0"),
                        oneof("skipme", &[token("yes", "YES"), token("no", "NO")])
                            .tok("SKIPME")
                            .opt(),
                    ],
                )
                .multi(),
            ],
        )]),
    cmd("client|setinfo", 4, CONNECTION, "7.2.0")
        .doc(
            "Records the name or the version of the client library on this connection.",
            "O(1)",
        )
        .flags(F_NOSCRIPT)
        .acl(A_CONN_SLOW)
        .args(&[oneof(
            "attr",
            &[
                string("libname").tok("LIB-NAME"),
                string("libver").tok("LIB-VER"),
            ],
        )]),
    cmd("client|no-evict", 3, CONNECTION, "7.0.0")
        .doc(
            "Sets whether this connection may be closed when clients use too much memory.",
            "O(1)",
        )
        .flags(F_ADMIN)
        .acl(A_CONN_ADMIN)
        .args(&[ON_OFF]),
    cmd("client|no-touch", 3, CONNECTION, "7.2.0")
        .doc(
            "Sets whether this connection's commands update the last access time of keys.",
            "O(1)",
        )
        .flags(F_NOSCRIPT)
        .acl(A_CONN_SLOW)
        .args(&[ON_OFF]),
    help("client|help", CONNECTION, A_CONN_SLOW),
];

const COMMAND_SUBS: &[Spec] = &[
    cmd("command|count", 2, SERVER, "2.8.13")
        .doc("Returns the number of commands.", "O(1)")
        .flags(F_LOADING_STALE)
        .acl(A_CONN_SLOW),
    cmd("command|docs", -2, SERVER, "7.0.0")
        .doc(
            "Returns the documentation of the given commands, or of every command.",
            "O(N) where N is the number of commands looked up",
        )
        .flags(F_LOADING_STALE)
        .acl(A_CONN_SLOW)
        .tips(T_ANY_ORDER)
        .args(&[string("command-name").opt().multi()]),
    cmd("command|getkeys", -3, SERVER, "2.8.13")
        .doc(
            "Returns which words of a complete command are keys.",
            "O(N) where N is the number of arguments to the command",
        )
        .flags(F_LOADING_STALE)
        .acl(A_CONN_SLOW)
        .args(&[string("command"), string("arg").opt().multi()]),
    cmd("command|info", -2, SERVER, "2.8.13")
        .doc(
            "Returns details about the given commands, or about every command.",
            "O(N) where N is the number of commands looked up",
        )
        .flags(F_LOADING_STALE)
        .acl(A_CONN_SLOW)
        .tips(T_ANY_ORDER)
        .args(&[string("command-name").opt().multi()]),
    cmd("command|list", -2, SERVER, "7.0.0")
        .doc(
            "Returns the names of every command and sub-command.",
            "O(N) where N is the number of commands",
        )
        .flags(F_LOADING_STALE)
        .acl(A_CONN_SLOW)
        .tips(T_ANY_ORDER),
    help("command|help", SERVER, A_CONN_SLOW),
];

const CONFIG_SUBS: &[Spec] = &[
    cmd("config|get", -3, SERVER, "2.0.0")
        .doc(
            "Returns the configuration parameters that match the given names or patterns, with their values.",
            "O(N) where N is the number of parameters asked for",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN)
        .args(&[string("parameter").multi()]),
    cmd("config|set", -4, SERVER, "2.0.0")
        .doc(
            "Changes configuration parameters at run time; distro-db refuses, as its settings are fixed when a node starts.",
            "O(N) where N is the number of parameters given",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN)
        .tips(T_ALL_NODES)
        .args(&[block("data", &[string("parameter"), string("value")]).multi()]),
    cmd("config|resetstat", 2, SERVER, "2.0.0")
        .doc(
            "Resets the statistics the server reports; distro-db refuses, as its counters only grow.",
            "O(1)",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN)
        .tips(T_ALL_NODES),
    help("config|help", SERVER, A_SLOW),
];

const CLUSTER_SUBS: &[Spec] = &[
    cmd("cluster|slots", 2, CLUSTER, "3.0.0")
        .doc(
            "Returns the ranges of hash slots, each with the nodes that serve it.",
            "O(N) where N is the number of nodes",
        )
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC)
        .deprecated("7.0.0", "`CLUSTER SHARDS`"),
    cmd("cluster|shards", 2, CLUSTER, "7.0.0")
        .doc(
            "Returns the shards of the cluster, with their hash slot ranges and nodes.",
            "O(N) where N is the number of nodes",
        )
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC),
    cmd("cluster|nodes", 2, CLUSTER, "3.0.0")
        .doc(
            "Returns the nodes of the cluster, one line each, as this node sees them.",
            "O(N) where N is the number of nodes",
        )
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC),
    cmd("cluster|info", 2, CLUSTER, "3.0.0")
        .doc(
            "Returns the state of the cluster as this node sees it.",
            "O(1)",
        )
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC),
    cmd("cluster|myid", 2, CLUSTER, "3.0.0")
        .doc("Returns the ID of this node.", "O(1)")
        .flags(F_LOADING_STALE),
    cmd("cluster|keyslot", 3, CLUSTER, "3.0.0")
        .doc(
            "Returns the hash slot of a key.",
            "O(N) where N is the length of the key",
        )
        .flags(F_LOADING_STALE)
        .args(&[string("key")]),
    cmd("cluster|countkeysinslot", 3, CLUSTER, "3.0.0")
        .doc(
            "Returns how many keys this node holds in a hash slot.",
            "O(1)",
        )
        .flags(F_LOADING_STALE)
        .args(&[integer("slot")]),
    help("cluster|help", CLUSTER, A_SLOW),
];

const FAULT_SUBS: &[Spec] = &[
    cmd("fault|partition", -3, DISTRO, DISTRO_SINCE)
        .doc(
            "Cuts this node off from the given nodes, in both directions.",
            "O(N) where N is the number of nodes given",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN)
        .args(&[string("node-id").multi()]),
    cmd("fault|delay", 4, DISTRO, DISTRO_SINCE)
        .doc(
            "Delays every message between this node and another by the given milliseconds.",
            "O(1)",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN)
        .args(&[string("node-id"), integer("milliseconds")]),
    cmd("fault|loss", 4, DISTRO, DISTRO_SINCE)
        .doc(
            "Drops the given percentage (0-100) of messages between this node and another.",
            "O(1)",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN)
        .args(&[string("node-id"), integer("percent")]),
    cmd("fault|heal", 2, DISTRO, DISTRO_SINCE)
        .doc(
            "Removes every fault rule of this node.",
            "O(N) where N is the number of rules",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN),
    cmd("fault|show", 2, DISTRO, DISTRO_SINCE)
        .doc(
            "Lists the fault rules in force on this node.",
            "O(N) where N is the number of rules",
        )
        .flags(F_ADMIN)
        .acl(A_ADMIN),
];

/// Every command distro-db answers, in the order `COMMAND` lists them.
pub static COMMANDS: &[Spec] = &[
    // --- connection
    cmd("ping", -1, CONNECTION, "1.0.0")
        .doc(
            "Checks that the server answers: replies PONG, or the message if one is given.",
            "O(1)",
        )
        .flags(F_FAST)
        .acl(A_CONN_FAST)
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .args(&[string("message").opt()]),
    cmd("echo", 2, CONNECTION, "1.0.0")
        .doc("Replies with the message it was given.", "O(1)")
        .flags(F_FAST)
        .acl(A_CONN_FAST)
        .args(&[string("message")]),
    cmd("quit", -1, CONNECTION, "1.0.0")
        .doc(
            "Asks the server to close the connection once the reply is sent.",
            "O(1)",
        )
        .flags(F_ANYTIME)
        .acl(A_CONN_FAST)
        .deprecated("7.2.0", "just closing the connection"),
    cmd("hello", -1, CONNECTION, "6.0.0")
        .doc(
            "Chooses the protocol version (2 or 3), optionally authenticating and naming the connection; replies with facts about the server.",
            "O(1)",
        )
        .flags(F_ANYTIME)
        .acl(A_CONN_FAST)
        .args(&[block(
            "arguments",
            &[
                integer("protover"),
                block("username-password", &[string("username"), string("password")])
                    .tok("AUTH")
                    .opt(),
                string("clientname").tok("SETNAME").opt(),
            ],
        )
        .opt()]),
    cmd("auth", -2, CONNECTION, "1.0.0")
        .doc(
            "Authenticates the connection, with a password or a user name and password.",
            "O(N) where N is the number of passwords the user has",
        )
        .flags(F_ANYTIME)
        .acl(A_CONN_FAST)
        .args(&[string("username").opt().since("6.0.0"), string("password")]),
    cmd("select", 2, CONNECTION, "1.0.0")
        .doc(
            "Chooses the logical database of the connection; distro-db has only database 0.",
            "O(1)",
        )
        .flags(&["loading", "stale", "fast"])
        .acl(A_CONN_FAST)
        .args(&[integer("index")]),
    cmd("reset", 1, CONNECTION, "6.2.0")
        .doc(
            "Returns the connection to its initial state: no transaction, no watched keys, no name, RESP2.",
            "O(1)",
        )
        .flags(F_ANYTIME)
        .acl(A_CONN_FAST),
    cmd("client", -2, CONNECTION, "2.4.0")
        .doc(
            "A container for commands about client connections.",
            "Depends on the sub-command",
        )
        .subs(CLIENT_SUBS),
    // --- keys and strings
    cmd("get", 2, STRING, "1.0.0")
        .doc(
            "Returns the string stored at a key, or nil when the key does not exist.",
            "O(1)",
        )
        .flags(F_READ_FAST)
        .acl(A_READ_STRING_FAST)
        .keys(1, 1, 1, K_READ)
        .args(ARGS_KEY),
    cmd("set", -3, STRING, "1.0.0")
        .doc(
            "Stores a string at a key, with an optional condition and expiry; can return the previous value.",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM)
        .acl(A_WRITE_STRING_SLOW)
        .keys(
            1,
            1,
            1,
            &[range(&["RW", "access", "update", "variable_flags"], 1, 0, 1)
                .notes("RW and ACCESS because of the optional GET argument")],
        )
        .args(&[
            key("key"),
            string("value"),
            oneof("condition", &[token("nx", "NX"), token("xx", "XX")])
                .opt()
                .since("2.6.12"),
            token("get", "GET").opt().since("6.2.0"),
            oneof(
                "expiration",
                &[
                    integer("seconds").tok("EX").since("2.6.12"),
                    integer("milliseconds").tok("PX").since("2.6.12"),
                    unix_time("unix-time-seconds").tok("EXAT").since("6.2.0"),
                    unix_time("unix-time-milliseconds")
                        .tok("PXAT")
                        .since("6.2.0"),
                    token("keepttl", "KEEPTTL").since("6.0.0"),
                ],
            )
            .opt(),
        ]),
    cmd("setnx", 3, STRING, "1.0.0")
        .doc(
            "Stores a string at a key only if the key does not exist yet.",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, &[range(&["OW", "insert"], 1, 0, 1)])
        .args(&[key("key"), string("value")])
        .deprecated("2.6.12", "`SET` with the `NX` argument"),
    cmd("setex", 4, STRING, "2.0.0")
        .doc("Stores a string at a key with an expiry in seconds.", "O(1)")
        .flags(F_WRITE_DENYOOM)
        .acl(A_WRITE_STRING_SLOW)
        .keys(1, 1, 1, K_OVERWRITE)
        .args(&[key("key"), integer("seconds"), string("value")])
        .deprecated("2.6.12", "`SET` with the `EX` argument"),
    cmd("psetex", 4, STRING, "2.6.0")
        .doc(
            "Stores a string at a key with an expiry in milliseconds.",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM)
        .acl(A_WRITE_STRING_SLOW)
        .keys(1, 1, 1, K_OVERWRITE)
        .args(&[key("key"), integer("milliseconds"), string("value")])
        .deprecated("2.6.12", "`SET` with the `PX` argument"),
    cmd("getset", 3, STRING, "1.0.0")
        .doc(
            "Stores a string at a key and returns the value it replaced.",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, K_READ_UPDATE)
        .args(&[key("key"), string("value")])
        .deprecated("6.2.0", "`SET` with the `!GET` argument"),
    cmd("getdel", 2, STRING, "6.2.0")
        .doc("Returns the string stored at a key and deletes the key.", "O(1)")
        .flags(F_WRITE_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, &[range(&["RW", "access", "delete"], 1, 0, 1)])
        .args(ARGS_KEY),
    cmd("getex", -2, STRING, "6.2.0")
        .doc(
            "Returns the string stored at a key, optionally changing or removing its expiry.",
            "O(1)",
        )
        .flags(F_WRITE_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(
            1,
            1,
            1,
            &[range(&["RW", "access", "update"], 1, 0, 1)
                .notes("RW and UPDATE because it may change the expiry")],
        )
        .args(&[
            key("key"),
            oneof(
                "expiration",
                &[
                    integer("seconds").tok("EX"),
                    integer("milliseconds").tok("PX"),
                    unix_time("unix-time-seconds").tok("EXAT"),
                    unix_time("unix-time-milliseconds").tok("PXAT"),
                    token("persist", "PERSIST"),
                ],
            )
            .opt(),
        ]),
    cmd("mget", -2, STRING, "1.0.0")
        .doc(
            "Returns the strings stored at several keys, nil for each missing one.",
            "O(N) where N is the number of keys",
        )
        .flags(F_READ_FAST)
        .acl(A_READ_STRING_FAST)
        .tips(&["request_policy:multi_shard"])
        .keys(1, -1, 1, K_READ_ALL)
        .args(&[key("key").multi()]),
    cmd("mset", -3, STRING, "1.0.1")
        .doc(
            "Stores strings at several keys at once.",
            "O(N) where N is the number of keys",
        )
        .flags(F_WRITE_DENYOOM)
        .acl(A_WRITE_STRING_SLOW)
        .tips(&["request_policy:multi_shard", "response_policy:all_succeeded"])
        .keys(1, -1, 2, &[range(&["OW", "update"], 1, -1, 2)])
        .args(&[block("data", &[key("key"), string("value")]).multi()]),
    cmd("del", -2, GENERIC, "1.0.0")
        .doc(
            "Removes keys; replies how many of them existed.",
            "O(N) where N is the number of keys (plus the size of each value that is not a string)",
        )
        .flags(&["write"])
        .acl(A_KEYS_WRITE_SLOW)
        .tips(T_SUM_OVER_SHARDS)
        .keys(1, -1, 1, K_DELETE_ALL)
        .args(&[key("key").multi()]),
    cmd("unlink", -2, GENERIC, "4.0.0")
        .doc(
            "Removes keys, freeing their memory in the background; replies how many existed.",
            "O(1) per key; the memory is then freed in the background",
        )
        .flags(F_WRITE_FAST)
        .acl(A_KEYS_WRITE_FAST)
        .tips(T_SUM_OVER_SHARDS)
        .keys(1, -1, 1, K_DELETE_ALL)
        .args(&[key("key").multi()]),
    cmd("exists", -2, GENERIC, "1.0.0")
        .doc(
            "Counts how many of the given keys exist (a key given twice counts twice).",
            "O(N) where N is the number of keys",
        )
        .flags(F_READ_FAST)
        .acl(A_KEYS_READ_FAST)
        .tips(T_SUM_OVER_SHARDS)
        .keys(1, -1, 1, K_META_ALL)
        .args(&[key("key").multi()]),
    expire(
        "expire",
        "1.0.0",
        "Gives a key a time to live, in seconds.",
        &[key("key"), integer("seconds"), EXPIRE_CONDITION],
    ),
    expire(
        "pexpire",
        "2.6.0",
        "Gives a key a time to live, in milliseconds.",
        &[key("key"), integer("milliseconds"), EXPIRE_CONDITION],
    ),
    expire(
        "expireat",
        "1.2.0",
        "Makes a key expire at a Unix time, in seconds.",
        &[key("key"), unix_time("unix-time-seconds"), EXPIRE_CONDITION],
    ),
    expire(
        "pexpireat",
        "2.6.0",
        "Makes a key expire at a Unix time, in milliseconds.",
        &[
            key("key"),
            unix_time("unix-time-milliseconds"),
            EXPIRE_CONDITION,
        ],
    ),
    read_key(
        "ttl",
        GENERIC,
        "1.0.0",
        "Returns the seconds a key has left to live (-1: no expiry, -2: no key).",
    )
    .acl(A_KEYS_READ_FAST)
    .tips(T_NONDETERMINISTIC),
    read_key(
        "pttl",
        GENERIC,
        "2.6.0",
        "Returns the milliseconds a key has left to live (-1: no expiry, -2: no key).",
    )
    .acl(A_KEYS_READ_FAST)
    .tips(T_NONDETERMINISTIC),
    read_key(
        "expiretime",
        GENERIC,
        "7.0.0",
        "Returns the Unix time in seconds at which a key expires (-1: no expiry, -2: no key).",
    )
    .acl(A_KEYS_READ_FAST),
    read_key(
        "pexpiretime",
        GENERIC,
        "7.0.0",
        "Returns the Unix time in milliseconds at which a key expires (-1: no expiry, -2: no key).",
    )
    .acl(A_KEYS_READ_FAST),
    cmd("persist", 2, GENERIC, "2.2.0")
        .doc(
            "Removes the expiry of a key, which then lives until deleted.",
            "O(1)",
        )
        .flags(F_WRITE_FAST)
        .acl(A_KEYS_WRITE_FAST)
        .keys(1, 1, 1, K_UPDATE)
        .args(ARGS_KEY),
    cmd("incr", 2, STRING, "1.0.0")
        .doc(
            "Adds one to the integer stored at a key (a missing key counts as 0).",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, K_READ_UPDATE)
        .args(ARGS_KEY),
    cmd("decr", 2, STRING, "1.0.0")
        .doc(
            "Subtracts one from the integer stored at a key (a missing key counts as 0).",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, K_READ_UPDATE)
        .args(ARGS_KEY),
    cmd("incrby", 3, STRING, "1.0.0")
        .doc(
            "Adds an amount to the integer stored at a key (a missing key counts as 0).",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, K_READ_UPDATE)
        .args(&[key("key"), integer("increment")]),
    cmd("decrby", 3, STRING, "1.0.0")
        .doc(
            "Subtracts an amount from the integer stored at a key (a missing key counts as 0).",
            "O(1)",
        )
        .flags(F_WRITE_DENYOOM_FAST)
        .acl(A_WRITE_STRING_FAST)
        .keys(1, 1, 1, K_READ_UPDATE)
        .args(&[key("key"), integer("decrement")]),
    cmd("strlen", 2, STRING, "2.2.0")
        .doc(
            "Returns the length in bytes of the string stored at a key (0 when missing).",
            "O(1)",
        )
        .flags(F_READ_FAST)
        .acl(A_READ_STRING_FAST)
        .keys(1, 1, 1, K_READ_META)
        .args(ARGS_KEY),
    cmd("type", 2, GENERIC, "1.0.0")
        .doc(
            "Returns the type of the value stored at a key (none when missing).",
            "O(1)",
        )
        .flags(F_READ_FAST)
        .acl(A_KEYS_READ_FAST)
        .keys(1, 1, 1, K_READ_META)
        .args(ARGS_KEY),
    cmd("scan", -2, GENERIC, "2.8.0")
        .doc(
            "Walks through the key names a page at a time, from a cursor.",
            "O(1) per call; O(N) for a whole walk, where N is the number of keys",
        )
        .flags(&["readonly"])
        .acl(A_KEYS_READ_SLOW)
        .tips(&[
            "nondeterministic_output",
            "request_policy:special",
            "response_policy:special",
        ])
        .args(&[
            integer("cursor"),
            pattern("pattern").tok("MATCH").opt(),
            integer("count").tok("COUNT").opt(),
            string("type").tok("TYPE").opt().since("6.0.0"),
        ]),
    cmd("keys", 2, GENERIC, "1.0.0")
        .doc(
            "Returns every key name that matches a glob-style pattern.",
            "O(N) where N is the number of keys in the database",
        )
        .flags(&["readonly"])
        .acl(&["@keyspace", "@read", "@slow", "@dangerous"])
        .tips(&["request_policy:all_shards", "nondeterministic_output"])
        .args(&[pattern("pattern")]),
    cmd("dbsize", 1, SERVER, "1.0.0")
        .doc("Returns the number of keys in the database.", "O(1)")
        .flags(F_READ_FAST)
        .acl(A_KEYS_READ_FAST)
        .tips(&["request_policy:all_shards", "response_policy:agg_sum"]),
    // --- server
    cmd("info", -1, SERVER, "1.0.0")
        .doc(
            "Returns information and statistics about the node, in text sections.",
            "O(1)",
        )
        .flags(F_LOADING_STALE)
        .acl(&["@slow", "@dangerous"])
        .tips(&[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ])
        .args(&[string("section").opt().multi()]),
    cmd("command", -1, SERVER, "2.8.13")
        .doc(
            "Returns details about every command the server answers.",
            "O(N) where N is the number of commands",
        )
        .flags(F_LOADING_STALE)
        .acl(A_CONN_SLOW)
        .tips(T_ANY_ORDER)
        .subs(COMMAND_SUBS),
    cmd("config", -2, SERVER, "2.0.0")
        .doc(
            "A container for commands about the server's configuration.",
            "Depends on the sub-command",
        )
        .subs(CONFIG_SUBS),
    cmd("time", 1, SERVER, "2.6.0")
        .doc(
            "Returns the server's clock, as Unix seconds and microseconds.",
            "O(1)",
        )
        .flags(&["loading", "stale", "fast"])
        .acl(&["@fast"])
        .tips(T_NONDETERMINISTIC),
    cmd("shutdown", -1, SERVER, "1.0.0")
        .doc(
            "Stops this node; with CLUSTER, stops every node of the cluster.",
            "O(1), or O(N) with CLUSTER where N is the number of nodes",
        )
        .flags(&[
            "admin",
            "noscript",
            "loading",
            "stale",
            "no_multi",
            "allow_busy",
        ])
        .acl(A_ADMIN)
        .args(&[token("cluster", "CLUSTER")
            .opt()
            .about("stop every node of the cluster, not only this one")]),
    // --- transactions
    cmd("multi", 1, TRANSACTIONS, "1.2.0")
        .doc(
            "Starts a transaction: the next commands are queued until EXEC.",
            "O(1)",
        )
        .flags(F_TRANSACTION)
        .acl(A_TRANSACTION_FAST),
    cmd("exec", 1, TRANSACTIONS, "1.2.0")
        .doc(
            "Runs the commands queued since MULTI.",
            "Depends on the commands queued",
        )
        .flags(&["noscript", "loading", "stale", "skip_slowlog"])
        .acl(&["@slow", "@transaction"]),
    cmd("discard", 1, TRANSACTIONS, "2.0.0")
        .doc(
            "Drops the commands queued since MULTI.",
            "O(N) where N is the number of queued commands",
        )
        .flags(F_TRANSACTION)
        .acl(A_TRANSACTION_FAST),
    cmd("watch", -2, TRANSACTIONS, "2.2.0")
        .doc(
            "Makes the next EXEC fail if any of these keys changes before it.",
            "O(1) per key",
        )
        .flags(F_TRANSACTION)
        .acl(A_TRANSACTION_FAST)
        .keys(1, -1, 1, K_META_ALL)
        .args(&[key("key").multi()]),
    cmd("unwatch", 1, TRANSACTIONS, "2.2.0")
        .doc("Forgets every key watched by this connection.", "O(1)")
        .flags(F_TRANSACTION)
        .acl(A_TRANSACTION_FAST),
    // --- cluster
    cmd("cluster", -2, CLUSTER, "3.0.0")
        .doc(
            "A container for the commands of Redis Cluster.",
            "Depends on the sub-command",
        )
        .subs(CLUSTER_SUBS),
    cmd("readonly", 1, CLUSTER, "3.0.0")
        .doc(
            "Lets this connection read from replica nodes of a cluster.",
            "O(1)",
        )
        .flags(&["loading", "stale", "fast"])
        .acl(A_CONN_FAST),
    cmd("readwrite", 1, CLUSTER, "3.0.0")
        .doc("Ends the READONLY mode of this connection.", "O(1)")
        .flags(&["loading", "stale", "fast"])
        .acl(A_CONN_FAST),
    cmd("asking", 1, CLUSTER, "3.0.0")
        .doc(
            "Tells the node that the client follows an ASK redirection.",
            "O(1)",
        )
        .flags(F_FAST)
        .acl(A_CONN_FAST),
    // --- distro-db's own
    cmd("vget", -2, DISTRO, DISTRO_SINCE)
        .doc(
            "Returns a key's causal context token, then every concurrent value (sibling) it holds, read at quorum R.",
            "O(R) replica reads, where R is the read quorum",
        )
        .flags(&["readonly"])
        .acl(&["@read", "@string", "@slow"])
        .keys(1, 1, 1, K_READ)
        .args(&[
            key("key"),
            string("r")
                .display("R=n")
                .opt()
                .about("the read quorum for this request"),
        ]),
    cmd("vdel", -2, DISTRO, DISTRO_SINCE)
        .doc(
            "Deletes a key at quorum W, superseding the versions its context token has seen.",
            "O(W) replica writes, where W is the write quorum",
        )
        .flags(&["write"])
        .acl(A_KEYS_WRITE_SLOW)
        .keys(1, 1, 1, K_DELETE_ONE)
        .args(&[
            key("key"),
            string("w")
                .display("W=n")
                .opt()
                .about("the write quorum for this request"),
            string("ctx")
                .display("CTX=token")
                .opt()
                .about("the context token of a previous VGET of the key"),
        ]),
    cmd("nodes", 1, DISTRO, DISTRO_SINCE)
        .doc(
            "Reports every node of the cluster: address, liveness and the hints held for it.",
            "O(N) where N is the number of nodes",
        )
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC),
    cmd("owners", 2, DISTRO, DISTRO_SINCE)
        .doc(
            "Reports the partition of a key and the nodes that replicate it, in preference order.",
            "O(N) where N is the replication factor",
        )
        .flags(F_LOADING_STALE)
        .keys(1, 1, 1, &[range(&["not_key"], 1, 0, 1)])
        .args(ARGS_KEY),
    cmd("replicas", 2, DISTRO, DISTRO_SINCE)
        .doc(
            "Reports what each replica of a key (and each stand-in) stores: versions, clocks and values.",
            "O(N) where N is the replication factor",
        )
        .flags(&["readonly"])
        .acl(&["@read", "@slow"])
        .tips(T_NONDETERMINISTIC)
        .keys(1, 1, 1, K_READ)
        .args(ARGS_KEY),
    cmd("status", 1, DISTRO, DISTRO_SINCE)
        .doc(
            "Reports this node's state: storage, hints, anti-entropy and background workers.",
            "O(1)",
        )
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC),
    cmd("kill", 2, DISTRO, DISTRO_SINCE)
        .doc(
            "Stops a node of the cluster, named by its ID (this node included).",
            "O(1)",
        )
        .flags(&["admin", "noscript"])
        .acl(A_ADMIN)
        .args(&[string("node-id")]),
    cmd("ring", 1, DISTRO, DISTRO_SINCE)
        .doc(
            "Reports the layout: its version, each node's state and share of the partitions, and transfers.",
            "O(N) where N is the number of nodes",
        )
        .flags(F_LOADING_STALE)
        .tips(T_NONDETERMINISTIC),
    cmd("leave", 1, DISTRO, DISTRO_SINCE)
        .doc(
            "This node hands every partition it owns to the nodes that take them over, then stops.",
            "O(1)",
        )
        .flags(&["admin", "noscript"])
        .acl(A_ADMIN),
    cmd("remove", -2, DISTRO, DISTRO_SINCE)
        .doc(
            "Drops a node that is dead for good; the others re-create its copies.",
            "O(1)",
        )
        .flags(&["admin", "noscript"])
        .acl(A_ADMIN)
        .args(&[string("node-id"), token("force", "FORCE").opt()]),
    cmd("fault", -2, DISTRO, DISTRO_SINCE)
        .doc(
            "A container for fault injection: partitions, delays and message loss between nodes.",
            "Depends on the sub-command",
        )
        .subs(FAULT_SUBS),
];

// ---------------------------------------------------------------------------
// Lookups.

/// The command named `name` (any case), without sub-commands resolved.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The sub-command `sub` of the command `name` (any case): `lookup_sub(b"client", b"id")`.
pub fn lookup_sub(name: &[u8], sub: &[u8]) -> Option<&'static Spec> {
    lookup(name)?
        .subcommands
        .iter()
        .find(|s| s.short_name().as_bytes().eq_ignore_ascii_case(sub))
}

/// A command or a sub-command by its full name: `get` or `client|id`, as
/// `COMMAND INFO` and `COMMAND DOCS` accept them.
pub fn lookup_full(name: &[u8]) -> Option<&'static Spec> {
    match name.iter().position(|&b| b == b'|') {
        Some(bar) => lookup_sub(&name[..bar], &name[bar + 1..]),
        None => lookup(name),
    }
}

/// The spec an invocation runs, as Redis finds it: the command named by
/// `args[0]`, or, when that command has sub-commands and a second word is
/// given, the sub-command it names (`None` if it names none).
pub fn resolve(args: &[Vec<u8>]) -> Option<&'static Spec> {
    let spec = lookup(args.first()?)?;
    match args.get(1) {
        Some(sub) if !spec.subcommands.is_empty() => lookup_sub(spec.name.as_bytes(), sub),
        _ => Some(spec),
    }
}

/// Whether `argc` words (the name included; a sub-command counts the
/// container's name too) fit the spec's arity.
pub fn arity_ok(spec: &Spec, argc: usize) -> bool {
    let need = spec.arity.unsigned_abs();
    let argc = u64::try_from(argc).unwrap_or(u64::MAX);
    if spec.arity >= 0 {
        argc == need
    } else {
        argc >= need
    }
}

// ---------------------------------------------------------------------------
// Key positions.

/// Redis's error for a command it does not know.
pub const ERR_UNKNOWN: &str = "Invalid command specified";
/// Redis's error for a command without key arguments.
pub const ERR_NO_KEYS: &str = "The command has no key arguments";
/// Redis's error for a command with the wrong number of arguments.
pub const ERR_ARITY: &str = "Invalid number of arguments specified for command";
/// Redis's error when the arguments hold no key where one must be.
pub const ERR_NO_KEY_FOUND: &str = "Invalid arguments specified for command";

/// The indexes in `args` (`args[0]` is the command name) that hold keys,
/// found from the legacy first/last/step positions. The errors are Redis's
/// texts (without the `ERR ` prefix), checked in Redis's order: unknown
/// command, command without keys, wrong number of arguments.
pub fn key_positions(args: &[Vec<u8>]) -> Result<Vec<usize>, String> {
    let spec = resolve(args).ok_or(ERR_UNKNOWN)?;
    if !spec.has_keys() {
        return Err(ERR_NO_KEYS.into());
    }
    if !arity_ok(spec, args.len()) {
        return Err(ERR_ARITY.into());
    }
    let keys = legacy_keys(spec, args.len());
    if keys.is_empty() && !spec.has_flag("no_mandatory_keys") {
        return Err(ERR_NO_KEY_FOUND.into());
    }
    Ok(keys)
}

/// Positions `first_key`, `first_key + step`, ... up to `last_key` (counted
/// from the end when negative), never past the last argument.
fn legacy_keys(spec: &Spec, argc: usize) -> Vec<usize> {
    let (first, step) = (spec.first_key, spec.step);
    if first <= 0 || step <= 0 {
        return Vec::new();
    }
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let last = if spec.last_key < 0 {
        argc.saturating_add(spec.last_key)
    } else {
        spec.last_key
    };
    let last = last.min(argc.saturating_sub(1));
    let mut keys = Vec::new();
    let mut at = first;
    while at <= last {
        if let Ok(i) = usize::try_from(at) {
            keys.push(i);
        }
        match at.checked_add(step) {
            Some(next) => at = next,
            None => break,
        }
    }
    keys
}

// ---------------------------------------------------------------------------
// Replies.

fn simple_set(items: &[&str]) -> Frame {
    Frame::Set(items.iter().map(|s| Frame::Simple((*s).into())).collect())
}

/// One command's entry in `COMMAND` / `COMMAND INFO`: Redis 7's 10 elements.
pub fn info_entry(spec: &Spec) -> Frame {
    let subcommands = if spec.subcommands.is_empty() {
        Frame::Set(Vec::new())
    } else {
        Frame::Array(spec.subcommands.iter().map(info_entry).collect())
    };
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(spec.arity),
        simple_set(spec.flags),
        Frame::Integer(spec.first_key),
        Frame::Integer(spec.last_key),
        Frame::Integer(spec.step),
        simple_set(spec.acl),
        simple_set(spec.tips),
        Frame::Array(spec.key_specs.iter().map(key_spec_frame).collect()),
        subcommands,
    ])
}

fn key_spec_frame(ks: &KeySpec) -> Frame {
    let mut entries = Vec::with_capacity(4);
    if let Some(notes) = ks.notes {
        entries.push(("notes", Frame::bulk(notes)));
    }
    entries.push(("flags", simple_set(ks.flags)));
    entries.push((
        "begin_search",
        Frame::map([
            ("type", Frame::bulk("index")),
            ("spec", Frame::map([("index", Frame::Integer(ks.index))])),
        ]),
    ));
    entries.push((
        "find_keys",
        Frame::map([
            ("type", Frame::bulk("range")),
            (
                "spec",
                Frame::map([
                    ("lastkey", Frame::Integer(ks.last_key)),
                    ("keystep", Frame::Integer(ks.key_step)),
                    ("limit", Frame::Integer(ks.limit)),
                ]),
            ),
        ]),
    ));
    Frame::map(entries)
}

/// The `COMMAND` reply: one [`info_entry`] per command.
pub fn command_all() -> Frame {
    Frame::Array(COMMANDS.iter().map(info_entry).collect())
}

/// The `COMMAND INFO name...` reply: an entry per name (a full name such as
/// `client|id` finds a sub-command), Null for an unknown one, as Redis
/// does; no names means every command.
pub fn command_info(names: &[Vec<u8>]) -> Frame {
    if names.is_empty() {
        return command_all();
    }
    Frame::Array(
        names
            .iter()
            .map(|n| lookup_full(n).map_or(Frame::Null, info_entry))
            .collect(),
    )
}

/// The `COMMAND COUNT` reply: the number of commands (sub-commands not
/// counted, as in Redis).
pub fn command_count() -> Frame {
    Frame::Integer(i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX))
}

/// The `COMMAND LIST` reply: every command's name, each followed by its
/// sub-commands' full names, as Redis lists them.
pub fn command_list() -> Frame {
    let mut names = Vec::new();
    for spec in COMMANDS {
        names.push(Frame::bulk(spec.name));
        names.extend(spec.subcommands.iter().map(|s| Frame::bulk(s.name)));
    }
    Frame::Array(names)
}

/// The `COMMAND DOCS name...` reply: a map from each known command's full
/// name to its documentation (unknown names are left out, as Redis does);
/// no names means every command.
pub fn command_docs(names: &[Vec<u8>]) -> Frame {
    let specs: Vec<&Spec> = if names.is_empty() {
        COMMANDS.iter().collect()
    } else {
        names.iter().filter_map(|n| lookup_full(n)).collect()
    };
    Frame::Map(
        specs
            .into_iter()
            .map(|s| (Frame::bulk(s.name), doc_entry(s)))
            .collect(),
    )
}

/// One command's documentation map, in Redis 7's layout.
pub fn doc_entry(spec: &Spec) -> Frame {
    let mut entries = vec![
        ("summary", Frame::bulk(spec.summary)),
        ("since", Frame::bulk(spec.since)),
        ("group", Frame::bulk(spec.group)),
        ("complexity", Frame::bulk(spec.complexity)),
    ];
    if let Some(d) = spec.deprecated {
        entries.push(("doc_flags", simple_set(&["deprecated"])));
        entries.push(("deprecated_since", Frame::bulk(d.since)));
        entries.push(("replaced_by", Frame::bulk(d.replaced_by)));
    }
    if !spec.args.is_empty() {
        entries.push(("arguments", args_frame(spec.args)));
    }
    if !spec.subcommands.is_empty() {
        entries.push((
            "subcommands",
            Frame::Map(
                spec.subcommands
                    .iter()
                    .map(|s| (Frame::bulk(s.name), doc_entry(s)))
                    .collect(),
            ),
        ));
    }
    Frame::map(entries)
}

fn args_frame(args: &[Arg]) -> Frame {
    Frame::Array(args.iter().map(arg_frame).collect())
}

fn arg_frame(a: &Arg) -> Frame {
    let mut entries = vec![
        ("name", Frame::bulk(a.name)),
        ("type", Frame::bulk(a.kind.as_str())),
    ];
    if a.kind == ArgKind::Key {
        // Every keyed command here has a single key spec.
        entries.push(("key_spec_index", Frame::Integer(0)));
    }
    if let Some(t) = a.token {
        entries.push(("token", Frame::bulk(t)));
    }
    if let Some(s) = a.summary {
        entries.push(("summary", Frame::bulk(s)));
    }
    if let Some(v) = a.since {
        entries.push(("since", Frame::bulk(v)));
    }
    if let Some(v) = a.deprecated_since {
        entries.push(("deprecated_since", Frame::bulk(v)));
    }
    let mut flags = Vec::new();
    if a.optional {
        flags.push("optional");
    }
    if a.multiple {
        flags.push("multiple");
    }
    if !flags.is_empty() {
        entries.push(("flags", simple_set(&flags)));
    }
    if a.kind.is_group() {
        entries.push(("arguments", args_frame(a.args)));
    } else {
        entries.push(("display_text", Frame::bulk(a.display.unwrap_or(a.name))));
    }
    Frame::map(entries)
}

// ---------------------------------------------------------------------------
// Usage lines and help.

/// A usage line in Redis's documentation style, from the arguments:
/// `SET key value [NX | XX] [GET] [EX seconds | ...]`, `CLIENT ID`.
pub fn usage(spec: &Spec) -> String {
    let mut line = spec.name.replace('|', " ").to_ascii_uppercase();
    for a in spec.args {
        line.push(' ');
        line.push_str(&arg_usage(a));
    }
    line
}

fn arg_usage(a: &Arg) -> String {
    let value = match a.kind {
        ArgKind::PureToken => String::new(),
        ArgKind::OneOf => {
            let alternatives: Vec<String> = a.args.iter().map(arg_usage).collect();
            let joined = alternatives.join(" | ");
            if alternatives.len() > 1 && (a.token.is_some() || !a.optional) {
                format!("<{joined}>")
            } else {
                joined
            }
        }
        ArgKind::Block => a.args.iter().map(arg_usage).collect::<Vec<_>>().join(" "),
        _ => a.display.unwrap_or(a.name).to_string(),
    };
    let once = match a.token {
        Some(t) if value.is_empty() => t.to_string(),
        Some(t) => format!("{t} {value}"),
        None => value.clone(),
    };
    // The token is written once; the value repeats.
    let text = if a.multiple {
        format!("{once} [{value} ...]")
    } else {
        once
    };
    if a.optional {
        format!("[{text}]")
    } else {
        text
    }
}

/// Help lines for a container command (`CLIENT HELP`, `CONFIG HELP`, ...):
/// a usage line and a summary per sub-command. `None` when `name` is not a
/// command with sub-commands.
pub fn subcommand_help(name: &[u8]) -> Option<Frame> {
    let spec = lookup(name)?;
    if spec.subcommands.is_empty() {
        return None;
    }
    let upper = spec.name.to_ascii_uppercase();
    let mut lines = vec![format!(
        "{upper} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )];
    if arity_ok(spec, 1) {
        lines.push("(no subcommand)".into());
        lines.push(format!("    {}", spec.summary));
    }
    for sub in spec.subcommands {
        let line = usage(sub);
        let line = line.strip_prefix(&upper).unwrap_or(&line).trim_start();
        lines.push(line.to_string());
        lines.push(format!("    {}", sub.summary));
    }
    Some(Frame::Array(lines.into_iter().map(Frame::Simple).collect()))
}

/// The `COMMAND HELP` reply: an array of help lines.
pub fn command_help() -> Frame {
    subcommand_help(b"command").unwrap_or_else(|| Frame::Array(Vec::new()))
}

/// The `COMMAND GETKEYS command arg...` reply for `args`, the words after
/// `GETKEYS`: the key arguments, or Redis's error.
pub fn command_getkeys(args: &[Vec<u8>]) -> Frame {
    if args.is_empty() {
        return Frame::err("wrong number of arguments for 'command|getkeys' command");
    }
    match key_positions(args) {
        Ok(positions) => Frame::Array(
            positions
                .iter()
                .filter_map(|&i| args.get(i))
                .map(|k| Frame::Bulk(k.clone()))
                .collect(),
        ),
        Err(e) => Frame::err(e),
    }
}

/// Runs `COMMAND [subcommand ...]`; `args` are the words after `COMMAND`.
pub fn command(args: &[Vec<u8>]) -> Frame {
    let Some(sub) = args.first() else {
        return command_all();
    };
    let rest = &args[1..];
    let arity = |name: &str| {
        Frame::err(format!(
            "wrong number of arguments for 'command|{name}' command"
        ))
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" if rest.is_empty() => command_count(),
        b"COUNT" => arity("count"),
        b"LIST" if rest.is_empty() => command_list(),
        b"LIST" => Frame::err("COMMAND LIST FILTERBY is not supported by distro-db"),
        b"INFO" => command_info(rest),
        b"DOCS" => command_docs(rest),
        b"GETKEYS" => command_getkeys(rest),
        b"HELP" if rest.is_empty() => command_help(),
        b"HELP" => arity("help"),
        _ => Frame::err(format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resp::{Proto, decode};
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn words(line: &str) -> Vec<Vec<u8>> {
        line.split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect()
    }

    /// Every spec: commands and sub-commands.
    fn all_specs() -> Vec<&'static Spec> {
        COMMANDS
            .iter()
            .flat_map(|s| std::iter::once(s).chain(s.subcommands.iter()))
            .collect()
    }

    /// What a frame decodes to after a RESP2 round trip.
    fn as_v2(frame: &Frame) -> Frame {
        match frame {
            Frame::Map(entries) => Frame::Array(
                entries
                    .iter()
                    .flat_map(|(k, v)| [as_v2(k), as_v2(v)])
                    .collect(),
            ),
            Frame::Set(items) | Frame::Array(items) => {
                Frame::Array(items.iter().map(as_v2).collect())
            }
            Frame::Boolean(b) => Frame::Integer(i64::from(*b)),
            Frame::Double(d) => Frame::Bulk(d.clone().into_bytes()),
            Frame::Verbatim(_, t) => Frame::Bulk(t.clone()),
            other => other.clone(),
        }
    }

    fn round_trips(frame: &Frame) {
        for (proto, expect) in [(Proto::V3, frame.clone()), (Proto::V2, as_v2(frame))] {
            let mut buf = Vec::new();
            frame.encode_as(&mut buf, proto);
            let (decoded, used) = decode(&buf).expect("decodes");
            assert_eq!(used, buf.len(), "{proto:?}");
            assert_eq!(decoded, expect, "{proto:?}");
        }
    }

    /// Finds `key` in a map frame.
    fn get<'a>(frame: &'a Frame, key: &str) -> Option<&'a Frame> {
        match frame {
            Frame::Map(entries) => entries
                .iter()
                .find(|(k, _)| *k == Frame::bulk(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    #[test]
    fn lookups_ignore_case() {
        for name in ["get", "GET", "GeT"] {
            assert_eq!(lookup(name.as_bytes()).map(|s| s.name), Some("get"));
        }
        assert_eq!(
            lookup_sub(b"Client", b"iD").map(|s| s.name),
            Some("client|id")
        );
        assert_eq!(
            lookup_full(b"CONFIG|get").map(|s| s.name),
            Some("config|get")
        );
        assert_eq!(
            resolve(&words("cluster Slots")).map(|s| s.name),
            Some("cluster|slots")
        );
        assert_eq!(resolve(&words("client")).map(|s| s.name), Some("client"));
        assert!(resolve(&words("client nope")).is_none());
        assert!(lookup(b"nope").is_none());
        assert!(lookup(b"client|id").is_none(), "only top-level names");
        assert!(lookup_sub(b"get", b"x").is_none());
        assert!(lookup(b"").is_none());
        assert!(resolve(&[]).is_none());
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut seen = HashSet::new();
        for spec in all_specs() {
            assert!(seen.insert(spec.name), "duplicate {}", spec.name);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(!spec.summary.is_empty(), "{} has no summary", spec.name);
            assert!(!spec.since.is_empty() && !spec.group.is_empty());
        }
        for spec in COMMANDS {
            assert!(!spec.name.contains('|'));
            for sub in spec.subcommands {
                let (parent, short) = sub.name.split_once('|').expect("full name");
                assert_eq!(parent, spec.name);
                assert!(!short.is_empty() && !short.contains('|'));
                assert!(sub.subcommands.is_empty(), "one level only");
                assert_eq!(sub.group, spec.group, "{}", sub.name);
            }
        }
        assert_eq!(COMMANDS.len(), 64);
        assert_eq!(all_specs().len() - COMMANDS.len(), 33);
    }

    #[test]
    fn flags_and_categories_follow_redis() {
        const FLAGS: &[&str] = &[
            "write",
            "readonly",
            "denyoom",
            "module",
            "admin",
            "pubsub",
            "noscript",
            "blocking",
            "loading",
            "stale",
            "skip_monitor",
            "skip_slowlog",
            "asking",
            "fast",
            "no_auth",
            "may_replicate",
            "no_mandatory_keys",
            "no_async_loading",
            "no_multi",
            "movablekeys",
            "allow_busy",
        ];
        const CATEGORIES: &[&str] = &[
            "@keyspace",
            "@read",
            "@write",
            "@set",
            "@sortedset",
            "@list",
            "@hash",
            "@string",
            "@bitmap",
            "@hyperloglog",
            "@geo",
            "@stream",
            "@pubsub",
            "@admin",
            "@fast",
            "@slow",
            "@blocking",
            "@dangerous",
            "@connection",
            "@transaction",
            "@scripting",
        ];
        let in_order = |items: &[&str], known: &[&str], name: &str| {
            let idx: Vec<usize> = items
                .iter()
                .map(|i| {
                    known
                        .iter()
                        .position(|k| k == i)
                        .unwrap_or_else(|| panic!("{name}: unknown {i}"))
                })
                .collect();
            assert!(idx.windows(2).all(|w| w[0] < w[1]), "{name}: {items:?}");
        };
        for spec in all_specs() {
            let n = spec.name;
            in_order(spec.flags, FLAGS, n);
            in_order(spec.acl, CATEGORIES, n);
            let has = |c: &str| spec.acl.contains(&c);
            // Redis derives these categories from the flags.
            assert_eq!(has("@fast"), spec.has_flag("fast"), "{n}");
            assert_eq!(has("@slow"), !spec.has_flag("fast"), "{n}");
            assert!(!spec.has_flag("write") || has("@write"), "{n}");
            assert!(!spec.has_flag("readonly") || has("@read"), "{n}");
            assert!(
                !spec.has_flag("admin") || (has("@admin") && has("@dangerous")),
                "{n}"
            );
            assert!(
                !(spec.has_flag("write") && spec.has_flag("readonly")),
                "{n}"
            );
            for tip in spec.tips {
                assert!(
                    tip.starts_with("request_policy:")
                        || tip.starts_with("response_policy:")
                        || *tip == "nondeterministic_output"
                        || *tip == "nondeterministic_output_order",
                    "{n}: {tip}"
                );
            }
        }
    }

    fn visit_args(args: &[Arg], f: &mut impl FnMut(&Arg)) {
        for a in args {
            f(a);
            visit_args(a.args, f);
        }
    }

    #[test]
    fn key_specs_match_legacy_positions_and_arguments() {
        const KEY_FLAGS: &[&str] = &[
            "RO",
            "RW",
            "OW",
            "RM",
            "access",
            "update",
            "insert",
            "delete",
            "not_key",
            "incomplete",
            "variable_flags",
        ];
        for spec in all_specs() {
            let n = spec.name;
            let mut key_args = 0;
            visit_args(spec.args, &mut |a| {
                key_args += usize::from(a.kind == ArgKind::Key)
            });
            match spec.key_specs {
                [] => {
                    assert_eq!((spec.first_key, spec.last_key, spec.step), (0, 0, 0), "{n}");
                    assert_eq!(key_args, 0, "{n}");
                }
                [ks] => {
                    let last = if ks.last_key >= 0 {
                        ks.index + ks.last_key
                    } else {
                        ks.last_key
                    };
                    assert_eq!(
                        (spec.first_key, spec.last_key, spec.step),
                        (ks.index, last, ks.key_step),
                        "{n}"
                    );
                    assert!(key_args >= 1, "{n}");
                    assert!(ks.flags.iter().all(|f| KEY_FLAGS.contains(f)), "{n}");
                    let kinds = ks
                        .flags
                        .iter()
                        .filter(|f| ["RO", "RW", "OW", "RM"].contains(f))
                        .count();
                    assert!(kinds == 1 || ks.flags == ["not_key"], "{n}");
                }
                _ => panic!("{n}: key_spec_index assumes one key spec"),
            }
        }
    }

    /// Words an argument takes when present.
    fn words_of(a: &Arg) -> u64 {
        let own = match a.kind {
            ArgKind::PureToken => 0,
            ArgKind::Block => a.args.iter().map(min_words).sum(),
            ArgKind::OneOf => a.args.iter().map(words_of).min().unwrap_or(0),
            _ => 1,
        };
        own + u64::from(a.token.is_some())
    }

    fn min_words(a: &Arg) -> u64 {
        if a.optional { 0 } else { words_of(a) }
    }

    /// Whether an argument can take a varying number of words (a oneof's
    /// alternatives are one choice, not a variation, when they are alike).
    fn varies(a: &Arg) -> bool {
        a.optional
            || a.multiple
            || match a.kind {
                ArgKind::Block => a.args.iter().any(varies),
                ArgKind::OneOf => {
                    a.args
                        .iter()
                        .any(|x| x.multiple || x.args.iter().any(varies))
                        || a.args
                            .windows(2)
                            .any(|w| words_of(&w[0]) != words_of(&w[1]))
                }
                _ => false,
            }
    }

    #[test]
    fn arity_matches_arguments() {
        for spec in all_specs() {
            let n = spec.name;
            let mut names = HashSet::new();
            for a in spec.args {
                assert!(names.insert(a.name), "{n}: two arguments named {}", a.name);
            }
            visit_args(spec.args, &mut |a| {
                let m = a.name;
                assert!(
                    a.kind != ArgKind::PureToken || a.token.is_some(),
                    "{n}: {m}"
                );
                assert_eq!(a.kind.is_group(), !a.args.is_empty(), "{n}: {m}");
                let mut inner = HashSet::new();
                assert!(a.args.iter().all(|x| inner.insert(x.name)), "{n}: {m}");
            });
            if !spec.subcommands.is_empty() {
                // COMMAND alone answers too; the other containers need a
                // sub-command.
                assert!(spec.arity == -2 || spec.name == "command", "{n}");
                assert!(spec.args.is_empty(), "{n}");
                continue;
            }
            let fixed = 1 + u64::from(spec.name.contains('|'));
            let min: u64 = fixed + spec.args.iter().map(min_words).sum::<u64>();
            assert_eq!(spec.arity.unsigned_abs(), min, "{n}");
            // QUIT ignores any arguments, as in Redis; COMMAND LIST keeps
            // Redis's arity, which leaves room for a FILTERBY that distro-db
            // does not take.
            let varying =
                spec.args.iter().any(varies) || ["quit", "command|list"].contains(&spec.name);
            assert_eq!(spec.arity < 0, varying, "{n}");
        }
    }

    #[test]
    fn arity_checks() {
        let get = lookup(b"get").expect("get");
        assert!(arity_ok(get, 2));
        assert!(!arity_ok(get, 1) && !arity_ok(get, 3));
        let set = lookup(b"set").expect("set");
        assert!(!arity_ok(set, 2));
        assert!(arity_ok(set, 3) && arity_ok(set, 9));
        assert!(arity_ok(lookup(b"ping").expect("ping"), 1));
        assert!(arity_ok(get, 2) && !arity_ok(get, usize::MAX));
    }

    const NO_KEYS: Result<&[usize], &str> = Err(ERR_NO_KEYS);

    /// A sample invocation of every command, with its keys.
    const SAMPLES: &[(&str, Result<&[usize], &str>)] = &[
        ("PING", NO_KEYS),
        ("ECHO hi", NO_KEYS),
        ("QUIT", NO_KEYS),
        ("HELLO 3 AUTH u p", NO_KEYS),
        ("AUTH pw", NO_KEYS),
        ("SELECT 0", NO_KEYS),
        ("RESET", NO_KEYS),
        ("CLIENT ID", NO_KEYS),
        ("client setname x", NO_KEYS),
        ("GET k", Ok(&[1])),
        ("get k", Ok(&[1])),
        ("SET k v", Ok(&[1])),
        ("SET k v NX GET EX 10", Ok(&[1])),
        ("SETNX k v", Ok(&[1])),
        ("SETEX k 10 v", Ok(&[1])),
        ("PSETEX k 100 v", Ok(&[1])),
        ("GETSET k v", Ok(&[1])),
        ("GETDEL k", Ok(&[1])),
        ("GETEX k PERSIST", Ok(&[1])),
        ("MGET a b c", Ok(&[1, 2, 3])),
        ("MSET a 1 b 2", Ok(&[1, 3])),
        ("DEL a", Ok(&[1])),
        ("UNLINK a b", Ok(&[1, 2])),
        ("EXISTS a b a", Ok(&[1, 2, 3])),
        ("EXPIRE k 10", Ok(&[1])),
        ("PEXPIRE k 10 NX", Ok(&[1])),
        ("EXPIREAT k 1700000000", Ok(&[1])),
        ("PEXPIREAT k 1700000000000 GT", Ok(&[1])),
        ("TTL k", Ok(&[1])),
        ("PTTL k", Ok(&[1])),
        ("EXPIRETIME k", Ok(&[1])),
        ("PEXPIRETIME k", Ok(&[1])),
        ("PERSIST k", Ok(&[1])),
        ("INCR k", Ok(&[1])),
        ("DECR k", Ok(&[1])),
        ("INCRBY k 5", Ok(&[1])),
        ("DECRBY k 5", Ok(&[1])),
        ("STRLEN k", Ok(&[1])),
        ("TYPE k", Ok(&[1])),
        ("SCAN 0", NO_KEYS),
        ("SCAN 0 MATCH a* COUNT 10", NO_KEYS),
        ("KEYS *", NO_KEYS),
        ("DBSIZE", NO_KEYS),
        ("INFO", NO_KEYS),
        ("COMMAND", NO_KEYS),
        ("COMMAND GETKEYS GET k", NO_KEYS),
        ("CONFIG GET maxmemory", NO_KEYS),
        ("TIME", NO_KEYS),
        ("SHUTDOWN", NO_KEYS),
        ("MULTI", NO_KEYS),
        ("EXEC", NO_KEYS),
        ("DISCARD", NO_KEYS),
        ("WATCH a b", Ok(&[1, 2])),
        ("UNWATCH", NO_KEYS),
        ("CLUSTER SLOTS", NO_KEYS),
        ("CLUSTER KEYSLOT k", NO_KEYS),
        ("READONLY", NO_KEYS),
        ("READWRITE", NO_KEYS),
        ("ASKING", NO_KEYS),
        ("VGET k R=2", Ok(&[1])),
        ("VDEL k W=2 CTX=abc", Ok(&[1])),
        ("NODES", NO_KEYS),
        ("OWNERS k", Ok(&[1])),
        ("REPLICAS k", Ok(&[1])),
        ("STATUS", NO_KEYS),
        ("KILL node-1", NO_KEYS),
        ("RING", NO_KEYS),
        ("LEAVE", NO_KEYS),
        ("REMOVE node-1 FORCE", NO_KEYS),
        ("FAULT HEAL", NO_KEYS),
        // Errors, in Redis's order: unknown, no keys, arity.
        ("", Err(ERR_UNKNOWN)),
        ("NOPE k", Err(ERR_UNKNOWN)),
        ("CLIENT NOPE", Err(ERR_UNKNOWN)),
        ("GET", Err(ERR_ARITY)),
        ("GET a b", Err(ERR_ARITY)),
        ("MSET a", Err(ERR_ARITY)),
        ("WATCH", Err(ERR_ARITY)),
        ("PING a b c", NO_KEYS),
    ];

    #[test]
    fn key_positions_of_every_command() {
        let mut covered = HashSet::new();
        for (line, expect) in SAMPLES {
            let args = words(line);
            let got = key_positions(&args);
            let expect = expect.map(<[usize]>::to_vec).map_err(str::to_string);
            assert_eq!(got, expect, "{line}");
            if let Some(spec) = args.first().and_then(|n| lookup(n)) {
                covered.insert(spec.name);
            }
        }
        for spec in COMMANDS {
            assert!(covered.contains(spec.name), "no sample for {}", spec.name);
        }
        // MSET with an odd count still names only the pair starts.
        assert_eq!(key_positions(&words("MSET a 1 b")), Ok(vec![1, 3]));
    }

    #[test]
    fn getkeys_replies() {
        assert_eq!(
            command_getkeys(&words("MSET a 1 b 2")),
            Frame::Array(vec![Frame::bulk("a"), Frame::bulk("b")])
        );
        assert_eq!(
            command_getkeys(&words("SCAN 0")),
            Frame::Error("ERR The command has no key arguments".into())
        );
        assert_eq!(
            command_getkeys(&words("FROB x")),
            Frame::Error("ERR Invalid command specified".into())
        );
        assert_eq!(
            command_getkeys(&words("GET")),
            Frame::Error("ERR Invalid number of arguments specified for command".into())
        );
        assert!(matches!(command_getkeys(&[]), Frame::Error(e) if e.contains("command|getkeys")));
    }

    #[test]
    fn command_entry_of_get() {
        let Frame::Array(entry) = info_entry(lookup(b"get").expect("get")) else {
            panic!("an array");
        };
        assert_eq!(entry.len(), 10);
        assert_eq!(entry[0], Frame::bulk("get"));
        assert_eq!(entry[1], Frame::Integer(2));
        let Frame::Set(flags) = &entry[2] else {
            panic!("a set of flags");
        };
        assert!(flags.contains(&Frame::Simple("readonly".into())));
        assert!(flags.contains(&Frame::Simple("fast".into())));
        assert_eq!(
            entry[3..6],
            [Frame::Integer(1), Frame::Integer(1), Frame::Integer(1)]
        );
        let Frame::Array(specs) = &entry[8] else {
            panic!("key specs");
        };
        let search = get(&specs[0], "begin_search").expect("begin_search");
        assert_eq!(get(search, "type"), Some(&Frame::bulk("index")));
        assert_eq!(
            get(get(search, "spec").expect("spec"), "index"),
            Some(&Frame::Integer(1))
        );
        // COMMAND INFO: unknown names give Null, full names find sub-commands.
        let Frame::Array(infos) = command_info(&words("GET nope client|id")) else {
            panic!("an array");
        };
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[1], Frame::Null);
        assert!(matches!(&infos[2], Frame::Array(e) if e[0] == Frame::bulk("client|id")));
        // MSET's legacy positions.
        let Frame::Array(mset) = info_entry(lookup(b"mset").expect("mset")) else {
            panic!("an array");
        };
        assert_eq!(
            mset[3..6],
            [Frame::Integer(1), Frame::Integer(-1), Frame::Integer(2)]
        );
    }

    #[test]
    fn docs_of_set_show_its_tokens() {
        let docs = command_docs(&words("SET"));
        let set = get(&docs, "set").expect("set documented");
        assert_eq!(get(set, "group"), Some(&Frame::bulk("string")));
        let mut bytes = Vec::new();
        docs.encode_as(&mut bytes, Proto::V3);
        let text = String::from_utf8_lossy(&bytes);
        for token in ["NX", "XX", "EX", "PX", "EXAT", "PXAT", "KEEPTTL", "GET"] {
            assert!(text.contains(&format!("\r\n{token}\r\n")), "{token}");
        }
        assert_eq!(
            usage(lookup(b"set").expect("set")),
            "SET key value [NX | XX] [GET] [EX seconds | PX milliseconds | \
             EXAT unix-time-seconds | PXAT unix-time-milliseconds | KEEPTTL]"
        );
        assert_eq!(
            usage(lookup(b"mset").expect("mset")),
            "MSET key value [key value ...]"
        );
        assert_eq!(
            usage(lookup_sub(b"client", b"no-evict").expect("no-evict")),
            "CLIENT NO-EVICT <ON | OFF>"
        );
        assert_eq!(usage(lookup(b"vget").expect("vget")), "VGET key [R=n]");
        // Unknown names are left out; deprecation is shown.
        assert_eq!(command_docs(&words("nope")), Frame::Map(Vec::new()));
        let setnx = command_docs(&words("setnx"));
        let setnx = get(&setnx, "setnx").expect("setnx");
        assert!(get(setnx, "replaced_by").is_some());
        // Containers list their sub-commands' docs.
        let client = command_docs(&words("client"));
        let subs = get(get(&client, "client").expect("client"), "subcommands").expect("subs");
        assert!(get(subs, "client|kill").is_some());
    }

    #[test]
    fn help_lines() {
        let Frame::Array(lines) = command_help() else {
            panic!("an array");
        };
        let text: Vec<String> = lines
            .iter()
            .map(|l| match l {
                Frame::Simple(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(text[0].starts_with("COMMAND <subcommand>"));
        assert!(text.iter().any(|l| l == "GETKEYS command [arg [arg ...]]"));
        assert!(text.iter().any(|l| l == "HELP"));
        assert!(text.iter().any(|l| l == "(no subcommand)"));
        assert!(subcommand_help(b"client").is_some());
        assert!(subcommand_help(b"get").is_none());
        assert!(subcommand_help(b"nope").is_none());
    }

    #[test]
    fn every_reply_encodes_in_both_protocols() {
        let replies = [
            command_all(),
            command_info(&[]),
            command_info(&words("get NOPE client|kill set")),
            command_count(),
            command_list(),
            command_docs(&[]),
            command_docs(&words("set client nope")),
            command_help(),
            command_getkeys(&words("MSET a 1 b 2")),
            command_getkeys(&words("PING")),
        ];
        for reply in &replies {
            round_trips(reply);
        }
        for spec in COMMANDS {
            if let Some(help) = subcommand_help(spec.name.as_bytes()) {
                round_trips(&help);
            }
        }
        assert_eq!(command_count(), Frame::Integer(64));
        let Frame::Array(names) = command_list() else {
            panic!("an array");
        };
        assert_eq!(names.len(), 64 + 33);
    }

    proptest! {
        #[test]
        fn never_panics(
            name in prop_oneof![
                Just("mset".to_string()),
                Just("GET".to_string()),
                Just("client".to_string()),
                Just("watch".to_string()),
                "[a-z|]{0,8}",
            ],
            rest in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..8),
        ) {
            let mut args = vec![name.into_bytes()];
            args.extend(rest);
            if let Ok(keys) = key_positions(&args) {
                prop_assert!(keys.iter().all(|&k| k > 0 && k < args.len()));
            }
            round_trips(&command_getkeys(&args));
            round_trips(&command_info(&args));
            round_trips(&command_docs(&args));
        }
    }
}
