//! What a command declaration is made of: [`Spec`] (one command or
//! sub-command: Redis 7's metadata, its [`Access`], [`Order`], session
//! rules and parser), the argument docs ([`Arg`]) and key specs
//! ([`KeySpec`]) `COMMAND DOCS`/`COMMAND INFO` publish, the `const`
//! builders the family modules declare with, and the pieces they share
//! (flag sets, ACL category sets, key specs, groups).
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
//! written in our own words). distro-db's own commands (group `distro-db`)
//! carry invented metadata in the same shape.

use super::{Access, Order, Parser};

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

/// One command or sub-command, declared once: what `COMMAND` publishes
/// about it (Redis 7's metadata and documentation), who may run it
/// ([`Access`]), how it orders itself in a pipeline ([`Order`]), what the
/// session does with it, and the parser that turns its words into an
/// [`Action`] (which carries the executor).
#[derive(Debug, Clone, Copy)]
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
    /// The right a user needs to run it.
    pub access: Access,
    /// What it waits for among the commands of its connection.
    pub order: Order,
    /// Turns the words after the name into what to do. A container's
    /// parser gets the words when no known sub-command is named.
    pub parse: Parser,
    /// The parser checks the number of words itself (distro-db accepts
    /// more than `arity` says, or answers another error than Redis's arity
    /// error); otherwise the dispatcher checks `arity` before parsing.
    pub parser_checks_arity: bool,
    /// May run before the connection has authenticated.
    pub before_auth: bool,
    /// Runs at once inside `MULTI` instead of being queued.
    pub not_queued: bool,
    /// The last command the connection reads (`QUIT`).
    pub ends_input: bool,
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

pub(crate) const fn arg(name: &'static str, kind: ArgKind) -> Arg {
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

pub(crate) const fn key(name: &'static str) -> Arg {
    arg(name, ArgKind::Key)
}

pub(crate) const fn string(name: &'static str) -> Arg {
    arg(name, ArgKind::String)
}

pub(crate) const fn integer(name: &'static str) -> Arg {
    arg(name, ArgKind::Integer)
}

pub(crate) const fn pattern(name: &'static str) -> Arg {
    arg(name, ArgKind::Pattern)
}

pub(crate) const fn unix_time(name: &'static str) -> Arg {
    arg(name, ArgKind::UnixTime)
}

pub(crate) const fn token(name: &'static str, word: &'static str) -> Arg {
    arg(name, ArgKind::PureToken).tok(word)
}

pub(crate) const fn oneof(name: &'static str, args: &'static [Arg]) -> Arg {
    Arg {
        args,
        ..arg(name, ArgKind::OneOf)
    }
}

pub(crate) const fn block(name: &'static str, args: &'static [Arg]) -> Arg {
    Arg {
        args,
        ..arg(name, ArgKind::Block)
    }
}

impl Arg {
    pub(crate) const fn opt(self) -> Arg {
        Arg {
            optional: true,
            ..self
        }
    }

    pub(crate) const fn multi(self) -> Arg {
        Arg {
            multiple: true,
            ..self
        }
    }

    pub(crate) const fn tok(self, word: &'static str) -> Arg {
        Arg {
            token: Some(word),
            ..self
        }
    }

    pub(crate) const fn since(self, version: &'static str) -> Arg {
        Arg {
            since: Some(version),
            ..self
        }
    }

    pub(crate) const fn display(self, text: &'static str) -> Arg {
        Arg {
            display: Some(text),
            ..self
        }
    }

    pub(crate) const fn about(self, text: &'static str) -> Arg {
        Arg {
            summary: Some(text),
            ..self
        }
    }

    pub(crate) const fn deprecated(self, version: &'static str) -> Arg {
        Arg {
            deprecated_since: Some(version),
            ..self
        }
    }
}

/// A command declared with its right and its parser; the rest of the
/// declaration is added with the builders below.
pub(crate) const fn cmd(
    name: &'static str,
    arity: i64,
    group: &'static str,
    since: &'static str,
    access: Access,
    parse: Parser,
) -> Spec {
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
        access,
        order: Order::Alone,
        parse,
        parser_checks_arity: false,
        before_auth: false,
        not_queued: false,
        ends_input: false,
    }
}

/// A key spec starting at `index` and ending at `last_key`, `key_step` apart.
pub(crate) const fn range(
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
    pub(crate) const fn notes(self, text: &'static str) -> KeySpec {
        KeySpec {
            notes: Some(text),
            ..self
        }
    }
}

impl Spec {
    pub(crate) const fn doc(self, summary: &'static str, complexity: &'static str) -> Spec {
        Spec {
            summary,
            complexity,
            ..self
        }
    }

    pub(crate) const fn flags(self, flags: &'static [&'static str]) -> Spec {
        Spec { flags, ..self }
    }

    pub(crate) const fn acl(self, acl: &'static [&'static str]) -> Spec {
        Spec { acl, ..self }
    }

    pub(crate) const fn tips(self, tips: &'static [&'static str]) -> Spec {
        Spec { tips, ..self }
    }

    /// The legacy key positions and the key specs they come from; the
    /// command then waits for earlier commands on the same keys
    /// ([`Order::Keys`]).
    pub(crate) const fn keys(
        self,
        first: i64,
        last: i64,
        step: i64,
        specs: &'static [KeySpec],
    ) -> Spec {
        Spec {
            first_key: first,
            last_key: last,
            step,
            key_specs: specs,
            order: Order::Keys,
            ..self
        }
    }

    /// Runs alongside anything ([`Order::Free`]).
    pub(crate) const fn free(self) -> Spec {
        Spec {
            order: Order::Free,
            ..self
        }
    }

    /// The parser checks the number of words itself.
    pub(crate) const fn parser_checks_arity(self) -> Spec {
        Spec {
            parser_checks_arity: true,
            ..self
        }
    }

    /// May run before authentication.
    pub(crate) const fn before_auth(self) -> Spec {
        Spec {
            before_auth: true,
            ..self
        }
    }

    /// Runs at once inside `MULTI`.
    pub(crate) const fn not_queued(self) -> Spec {
        Spec {
            not_queued: true,
            ..self
        }
    }

    /// Nothing after it is read from the connection.
    pub(crate) const fn ends_input(self) -> Spec {
        Spec {
            ends_input: true,
            ..self
        }
    }

    pub(crate) const fn args(self, args: &'static [Arg]) -> Spec {
        Spec { args, ..self }
    }

    pub(crate) const fn subs(self, subcommands: &'static [Spec]) -> Spec {
        Spec {
            subcommands,
            ..self
        }
    }

    pub(crate) const fn deprecated(self, since: &'static str, replaced_by: &'static str) -> Spec {
        Spec {
            deprecated: Some(Deprecated { since, replaced_by }),
            ..self
        }
    }
}

// ---------------------------------------------------------------------------
// Shared pieces of the table.

pub(crate) const GENERIC: &str = "generic";
pub(crate) const STRING: &str = "string";
pub(crate) const CONNECTION: &str = "connection";
pub(crate) const SERVER: &str = "server";
pub(crate) const TRANSACTIONS: &str = "transactions";
pub(crate) const CLUSTER: &str = "cluster";
pub(crate) const DISTRO: &str = "distro-db";
/// The version of distro-db that has its own commands.
pub(crate) const DISTRO_SINCE: &str = "0.1.0";

pub(crate) const F_FAST: &[&str] = &["fast"];
pub(crate) const F_READ_FAST: &[&str] = &["readonly", "fast"];
pub(crate) const F_WRITE_FAST: &[&str] = &["write", "fast"];
pub(crate) const F_WRITE_DENYOOM: &[&str] = &["write", "denyoom"];
pub(crate) const F_WRITE_DENYOOM_FAST: &[&str] = &["write", "denyoom", "fast"];
/// Connection commands that work at any time, even before authentication.
pub(crate) const F_ANYTIME: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];
pub(crate) const F_LOADING_STALE: &[&str] = &["loading", "stale"];
pub(crate) const F_NOSCRIPT: &[&str] = &["noscript", "loading", "stale"];
pub(crate) const F_ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];
pub(crate) const F_TRANSACTION: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

pub(crate) const A_CONN_FAST: &[&str] = &["@fast", "@connection"];
pub(crate) const A_CONN_SLOW: &[&str] = &["@slow", "@connection"];
pub(crate) const A_CONN_ADMIN: &[&str] = &["@admin", "@slow", "@dangerous", "@connection"];
pub(crate) const A_READ_STRING_FAST: &[&str] = &["@read", "@string", "@fast"];
pub(crate) const A_WRITE_STRING_FAST: &[&str] = &["@write", "@string", "@fast"];
pub(crate) const A_WRITE_STRING_SLOW: &[&str] = &["@write", "@string", "@slow"];
pub(crate) const A_KEYS_READ_FAST: &[&str] = &["@keyspace", "@read", "@fast"];
pub(crate) const A_KEYS_READ_SLOW: &[&str] = &["@keyspace", "@read", "@slow"];
pub(crate) const A_KEYS_WRITE_FAST: &[&str] = &["@keyspace", "@write", "@fast"];
pub(crate) const A_KEYS_WRITE_SLOW: &[&str] = &["@keyspace", "@write", "@slow"];
pub(crate) const A_SLOW: &[&str] = &["@slow"];
pub(crate) const A_ADMIN: &[&str] = &["@admin", "@slow", "@dangerous"];
pub(crate) const A_TRANSACTION_FAST: &[&str] = &["@fast", "@transaction"];

pub(crate) const T_NONDETERMINISTIC: &[&str] = &["nondeterministic_output"];
pub(crate) const T_ANY_ORDER: &[&str] = &["nondeterministic_output_order"];
pub(crate) const T_SUM_OVER_SHARDS: &[&str] =
    &["request_policy:multi_shard", "response_policy:agg_sum"];
pub(crate) const T_ALL_NODES: &[&str] =
    &["request_policy:all_nodes", "response_policy:all_succeeded"];

pub(crate) const K_READ: &[KeySpec] = &[range(&["RO", "access"], 1, 0, 1)];
pub(crate) const K_READ_META: &[KeySpec] = &[range(&["RO"], 1, 0, 1)];
pub(crate) const K_UPDATE: &[KeySpec] = &[range(&["RW", "update"], 1, 0, 1)];
pub(crate) const K_READ_UPDATE: &[KeySpec] = &[range(&["RW", "access", "update"], 1, 0, 1)];
pub(crate) const K_OVERWRITE: &[KeySpec] = &[range(&["OW", "update"], 1, 0, 1)];
pub(crate) const K_DELETE_ONE: &[KeySpec] = &[range(&["RM", "delete"], 1, 0, 1)];
pub(crate) const K_READ_ALL: &[KeySpec] = &[range(&["RO", "access"], 1, -1, 1)];
pub(crate) const K_META_ALL: &[KeySpec] = &[range(&["RO"], 1, -1, 1)];
pub(crate) const K_DELETE_ALL: &[KeySpec] = &[range(&["RM", "delete"], 1, -1, 1)];

pub(crate) const ARGS_KEY: &[Arg] = &[key("key")];
/// A container's `HELP` sub-command, answered from the container's table.
pub(crate) const fn help(
    name: &'static str,
    group: &'static str,
    access: Access,
    acl: &'static [&'static str],
    parse: Parser,
) -> Spec {
    cmd(name, 2, group, "5.0.0", access, parse)
        .doc("Describes the sub-commands, one per line.", "O(1)")
        .flags(F_LOADING_STALE)
        .acl(acl)
        .free()
}
