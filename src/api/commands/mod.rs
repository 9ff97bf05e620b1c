//! The command table: every client command is declared once, in the module
//! of its family, as a [`Spec`] that holds everything about it: what
//! `COMMAND` publishes (arity, flags, key positions and key specs, ACL
//! categories, documentation), the right it needs ([`Access`]), how it
//! orders itself in a pipeline ([`Order`]), what the session does with it,
//! and its parser, whose [`Action`] carries the executor. The catalog
//! (`COMMAND ...`), the dispatcher ([`parse`]) and access checks all read
//! this one table, so they cannot disagree.
//!
//! A family is one module that declares a [`Family`]: its commands and the
//! names it refuses with a reason. Adding a family is writing that module
//! and naming it in [`FAMILIES`]; nothing else changes.
//!
//! Dispatch looks the name up in an index (the word in lower case on the
//! stack, then a hash look-up: no allocation), checks the declared arity
//! (with Redis's error), resolves a sub-command, and calls the declared
//! parser.
//!
//! Redis's syntax is followed exactly, with distro-db's extensions where they
//! cannot be mistaken for Redis arguments: `GET key R=n`, `SET key value ...
//! W=n CTX=token` (per-request quorums and a causal context, after every
//! Redis argument), and commands of its own (`VGET`, `VDEL`, `NODES`,
//! `OWNERS`, `REPLICAS`, `STATUS`, `KILL`, `FAULT`, `SHUTDOWN CLUSTER`).
//! `DEL`, `UNLINK`, `MGET` and the like take keys only: `DEL a W=2` deletes
//! the keys `a` and `W=2`.

pub mod acl;
pub mod admin;
pub mod args;
pub mod cluster;
pub mod connection;
pub mod counters;
pub mod data;
pub mod expiry;
pub mod keys;
pub mod server;
pub mod spec;
pub mod strings;
pub mod transactions;
pub mod versioned;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use hashbrown::HashTable;

use super::resp::Frame;
use super::session::Conn;
use super::{After, Api};
pub use spec::Spec;

/// Every family, in the order `COMMAND` lists their commands. Adding a
/// family is adding its module and one line here.
pub static FAMILIES: &[&Family] = &[
    &connection::FAMILY,
    &strings::FAMILY,
    &keys::FAMILY,
    &expiry::FAMILY,
    &counters::FAMILY,
    &server::FAMILY,
    &acl::FAMILY,
    &transactions::FAMILY,
    &cluster::FAMILY,
    &versioned::FAMILY,
    &admin::FAMILY,
    &data::FAMILY,
];

/// One family of commands, declared by its module.
#[derive(Debug)]
pub struct Family {
    /// What the family is (for tests and docs).
    pub name: &'static str,
    /// Its commands, with their sub-commands.
    pub commands: &'static [Spec],
    /// Redis commands of the family that distro-db knows and refuses.
    pub refused: &'static [Refusal],
}

/// Redis commands distro-db knows and will not run: each answers an error
/// with the reason. They are not in `COMMAND`'s table.
#[derive(Debug)]
pub struct Refusal {
    /// The names, in lower case.
    pub names: &'static [&'static str],
    /// The text after the upper-case name: `" is not supported ..."`.
    pub reason: &'static str,
}

/// The right a user needs to run a command (for ACL users: read-only,
/// read-write, admin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// About the connection itself, or harmless to anyone (PING, AUTH,
    /// HELLO, QUIT, CLIENT SETNAME, MULTI, COMMAND ...): always allowed.
    Connection,
    /// Reads keys or reports on the node and cluster.
    Read,
    /// Changes keys.
    Write,
    /// Changes or stops nodes, or reads their configuration (KILL,
    /// SHUTDOWN, FAULT, LEAVE, REMOVE, CONFIG, CLIENT KILL ...).
    Admin,
}

/// What a command waits for among the earlier commands of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Earlier commands on any of its keys (found at the declared key
    /// positions).
    Keys,
    /// Nothing: runs alongside anything.
    Free,
    /// Everything: runs alone, after every earlier command and before any
    /// later one (administration, connection state).
    Alone,
}

/// A parser: the words of one call to what to do, or the error text after
/// `ERR ` in Redis's reply.
pub type Parser = fn(&Call) -> Result<Action, String>;

/// One call of a command, as its parser sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The command or sub-command called.
    pub spec: &'static Spec,
    /// The words after its name (after the sub-command's name, for one).
    pub args: &'a [Vec<u8>],
}

impl Call<'_> {
    /// Redis's arity error for this command.
    pub fn arity_error(&self) -> String {
        args::arity(self.spec.name)
    }

    /// Exactly `n` words after the name, or Redis's arity error.
    pub fn exactly(&self, n: usize) -> Result<(), String> {
        if self.args.len() == n {
            Ok(())
        } else {
            Err(self.arity_error())
        }
    }
}

/// A command that runs on the node (data, reports, administration).
pub trait NodeCommand: Any + fmt::Debug + Send {
    /// Runs it.
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply;
}

/// The reply of a [`NodeCommand`], and what the session does next.
pub type Reply = BoxFuture<'static, (Frame, After)>;

/// A reply known at once.
pub fn reply(frame: Frame) -> Reply {
    futures::future::ready((frame, After::Continue)).boxed()
}

/// The reply `frame` will be, after which the session goes on.
pub fn answer(frame: impl Future<Output = Frame> + Send + 'static) -> Reply {
    frame.map(|f| (f, After::Continue)).boxed()
}

/// A command about the connection itself, run by the session with its
/// state, alone.
pub trait ConnectionCommand: Any + fmt::Debug + Send {
    /// Runs it.
    fn run(self: Box<Self>, conn: &mut Conn) -> ConnReply;
}

/// What a connection command answers.
pub enum ConnReply {
    /// This reply, then this.
    Now(Frame, After),
    /// The commands an `EXEC` releases, to run in order.
    Exec(Vec<Command>),
}

impl From<Frame> for ConnReply {
    fn from(frame: Frame) -> ConnReply {
        ConnReply::Now(frame, After::Continue)
    }
}

/// What a parsed command does.
pub enum Action {
    /// Runs on the node.
    Node(Box<dyn NodeCommand>),
    /// Runs on the session.
    Connection(Box<dyn ConnectionCommand>),
    /// Refused outright with this reason (aborts an open `MULTI`).
    Refuse(String),
}

impl Action {
    /// A node command.
    pub fn node(cmd: impl NodeCommand) -> Action {
        Action::Node(Box::new(cmd))
    }

    /// A connection command.
    pub fn connection(cmd: impl ConnectionCommand) -> Action {
        Action::Connection(Box::new(cmd))
    }

    /// A command that answers `frame` (computed from its words alone).
    pub fn reply(frame: Frame) -> Action {
        Action::node(Fixed(frame))
    }

    /// A node command that answers from the node's state, at once.
    pub fn report(name: &'static str, f: fn(&Arc<Api>) -> Frame) -> Action {
        Action::node(Report { name, f })
    }

    /// The node command of this type, if it is one (for tests).
    pub fn as_node<T: NodeCommand>(&self) -> Option<&T> {
        match self {
            Action::Node(c) => (&**c as &dyn Any).downcast_ref(),
            _ => None,
        }
    }

    /// The connection command of this type, if it is one (for tests).
    pub fn as_connection<T: ConnectionCommand>(&self) -> Option<&T> {
        match self {
            Action::Connection(c) => (&**c as &dyn Any).downcast_ref(),
            _ => None,
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Node(c) => c.fmt(f),
            Action::Connection(c) => c.fmt(f),
            Action::Refuse(why) => write!(f, "Refuse({why:?})"),
        }
    }
}

/// A reply fixed when the command was parsed.
#[derive(Debug, PartialEq)]
pub struct Fixed(pub Frame);

impl NodeCommand for Fixed {
    fn run(self: Box<Self>, _api: Arc<Api>) -> Reply {
        reply(self.0)
    }
}

/// A reply read from the node's state at once (NODES, STATUS, TIME, ...).
pub struct Report {
    name: &'static str,
    f: fn(&Arc<Api>) -> Frame,
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Report({})", self.name)
    }
}

impl NodeCommand for Report {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        reply((self.f)(&api))
    }
}

/// A parsed command: what the table declares about it, and what to do.
pub struct Command {
    /// The command or sub-command (`None` for a name refused outright).
    pub spec: Option<&'static Spec>,
    /// What it does.
    pub action: Action,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.action.fmt(f)
    }
}

impl Command {
    /// The right it needs (a refused name needs none: it only answers an
    /// error).
    pub fn access(&self) -> Access {
        self.spec.map_or(Access::Connection, |s| s.access)
    }

    /// True for a command about the connection, run by the session.
    pub fn is_connection_command(&self) -> bool {
        matches!(self.action, Action::Connection(_))
    }

    /// The table's name of the command (`get`, `client|id`), if it has one.
    pub fn name(&self) -> Option<&'static str> {
        self.spec.map(|s| s.name)
    }
}

// ---------------------------------------------------------------------------
// The index.

/// What a name finds.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Command(&'static Spec),
    Refused(&'static Refusal),
}

/// The longest name looked up; a longer word is no command.
const MAX_NAME: usize = 32;

/// A cheap hash of a lower-case name: its first 8 bytes and its length,
/// mixed (names are short; a collision only costs a comparison).
fn name_hash(name: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    for (to, from) in first.iter_mut().zip(name) {
        *to = *from;
    }
    let x = (u64::from_le_bytes(first) ^ ((name.len() as u64) << 59))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

/// Every name (lower case), in a hash table keyed by [`name_hash`].
static INDEX: LazyLock<HashTable<(&'static str, Entry)>> = LazyLock::new(|| {
    let mut index = HashTable::new();
    let mut add = |name: &'static str, entry: Entry| {
        assert!(name.len() <= MAX_NAME, "{name}: longer than MAX_NAME");
        index.insert_unique(name_hash(name.as_bytes()), (name, entry), |(n, _)| {
            name_hash(n.as_bytes())
        });
    };
    for family in FAMILIES {
        for spec in family.commands {
            add(spec.name, Entry::Command(spec));
        }
        for r in family.refused {
            for name in r.names {
                add(name, Entry::Refused(r));
            }
        }
    }
    index
});

/// The entry named `name`, in any case: the word is put in lower case on
/// the stack, then found by its hash (no allocation).
fn find(name: &[u8]) -> Option<Entry> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    for (to, from) in buf.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    let lower = &buf[..name.len()];
    INDEX
        .find(name_hash(lower), |(n, _)| n.as_bytes() == lower)
        .map(|(_, entry)| *entry)
}

/// Every command of every family, in `COMMAND`'s order.
pub fn commands() -> impl Iterator<Item = &'static Spec> {
    FAMILIES.iter().flat_map(|f| f.commands.iter())
}

/// The command named `name` (any case), without sub-commands resolved.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    match find(name)? {
        Entry::Command(spec) => Some(spec),
        Entry::Refused(_) => None,
    }
}

/// The sub-command `sub` (any case) of `spec`.
pub fn sub_of(spec: &'static Spec, sub: &[u8]) -> Option<&'static Spec> {
    spec.subcommands
        .iter()
        .find(|s| s.short_name().as_bytes().eq_ignore_ascii_case(sub))
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

/// Parses one command from its RESP arguments: finds it in the table,
/// checks its arity, resolves a sub-command, and calls the declared
/// parser. The error is the text after `ERR ` in Redis's reply.
pub fn parse(words: &[Vec<u8>]) -> Result<Command, String> {
    let Some(first) = words.first() else {
        return Err("empty command".into());
    };
    let spec = match find(first) {
        Some(Entry::Command(spec)) => spec,
        Some(Entry::Refused(r)) => {
            return Ok(Command {
                spec: None,
                action: Action::Refuse(format!("{}{}", args::upper(first), r.reason)),
            });
        }
        None => return Err(args::unknown_command(words)),
    };
    if !spec.parser_checks_arity && !arity_ok(spec, words.len()) {
        return Err(args::arity(spec.name));
    }
    if let Some(sub) = words
        .get(1)
        .filter(|_| !spec.subcommands.is_empty())
        .and_then(|w| sub_of(spec, w))
    {
        if !sub.parser_checks_arity && !arity_ok(sub, words.len()) {
            return Err(args::arity(sub.name));
        }
        return run_parser(sub, &words[2..]);
    }
    run_parser(spec, &words[1..])
}

fn run_parser(spec: &'static Spec, args: &[Vec<u8>]) -> Result<Command, String> {
    let action = (spec.parse)(&Call { spec, args })?;
    Ok(Command {
        spec: Some(spec),
        action,
    })
}

/// The indexes in `words` of the keys of a call of `spec`, from its legacy
/// positions (first key, last key, step), never past the last word.
pub fn key_indexes(spec: &Spec, argc: usize) -> impl Iterator<Item = usize> {
    let (first, step) = (spec.first_key, spec.step);
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let last = if spec.last_key < 0 {
        argc.saturating_add(spec.last_key)
    } else {
        spec.last_key
    };
    let last = last.min(argc.saturating_sub(1));
    let (first, last, step) = if first <= 0 || step <= 0 {
        (1, 0, 1)
    } else {
        (first, last, step)
    };
    (first..=last)
        .step_by(usize::try_from(step).unwrap_or(1))
        .filter_map(|i| usize::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn words(line: &[&str]) -> Vec<Vec<u8>> {
        line.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// Every spec of the table: commands and sub-commands.
    fn all_specs() -> Vec<&'static Spec> {
        commands()
            .flat_map(|s| std::iter::once(s).chain(s.subcommands.iter()))
            .collect()
    }

    #[test]
    fn names_are_unique_across_families_and_refusals() {
        let mut seen = HashSet::new();
        for family in FAMILIES {
            assert!(!family.commands.is_empty() || !family.refused.is_empty());
            for spec in family.commands {
                assert!(seen.insert(spec.name), "{} declared twice", spec.name);
            }
            for r in family.refused {
                assert!(r.reason.starts_with(' '), "{:?}", r.names);
                for n in r.names {
                    assert_eq!(*n, n.to_ascii_lowercase());
                    assert!(seen.insert(n), "{n} declared twice");
                }
            }
        }
        assert_eq!(INDEX.len(), seen.len());
        // Every name finds its own entry, in any case.
        for (name, _) in INDEX.iter() {
            assert!(name.len() <= MAX_NAME);
            let upper = name.to_ascii_uppercase();
            assert!(find(upper.as_bytes()).is_some(), "{name}");
        }
        assert!(find(b"").is_none() && find(b"nope").is_none());
        assert!(find(b"client|id").is_none(), "only top-level names");
    }

    /// Every command has a right, and it agrees with what Redis's flags and
    /// ACL categories say of it.
    #[test]
    fn every_command_has_an_access_that_agrees_with_its_flags() {
        let mut seen = [0usize; 4];
        for spec in all_specs() {
            let n = spec.name;
            seen[spec.access as usize] += 1;
            let has = |f: &str| spec.flags.contains(&f);
            if spec.subcommands.is_empty() {
                // A container has no flags: its sub-commands have them.
                assert_eq!(has("admin"), spec.access == Access::Admin, "{n}");
            }
            if has("write") {
                assert_eq!(spec.access, Access::Write, "{n}");
            }
            if has("readonly") {
                assert_eq!(spec.access, Access::Read, "{n}");
            }
            if spec.access == Access::Write {
                assert!(has("write"), "{n}: a write without the write flag");
            }
            if spec.before_auth || spec.not_queued || spec.ends_input {
                assert_eq!(spec.access, Access::Connection, "{n}");
            }
        }
        assert!(seen.iter().all(|&k| k > 0), "{seen:?}");
    }

    /// Administration needs the admin right; connection commands are open to
    /// every user.
    #[test]
    fn admin_and_connection_commands() {
        let access = |line: &[&str]| {
            parse(&words(line))
                .unwrap_or_else(|e| panic!("{line:?}: {e}"))
                .access()
        };
        for line in [
            &["KILL", "n1"][..],
            &["SHUTDOWN"],
            &["SHUTDOWN", "CLUSTER"],
            &["FAULT", "HEAL"],
            &["FAULT", "SHOW"],
            &["FAULT", "PARTITION", "n2"],
            &["FAULT", "DELAY", "n2", "5"],
            &["FAULT", "LOSS", "n2", "5"],
            &["LEAVE"],
            &["REMOVE", "n2"],
            &["CONFIG", "SET", "maxmemory", "1"],
            &["CONFIG", "GET", "maxmemory"],
            &["CONFIG", "RESETSTAT"],
            &["CLIENT", "KILL", "ID", "1"],
            &["CLIENT", "LIST"],
            &["CLIENT", "NO-EVICT", "on"],
            &["SHUTDOWN", "ABORT"],
            &["CONFIG", "REWRITE"],
            &["ACL", "LIST"],
            &["ACL", "USERS"],
            &["ACL", "DRYRUN", "alice", "GET", "k"],
        ] {
            assert_eq!(access(line), Access::Admin, "{line:?}");
        }
        for line in [
            &["AUTH", "pw"][..],
            &["HELLO", "3"],
            &["PING"],
            &["QUIT"],
            &["ECHO", "x"],
            &["RESET"],
            &["SELECT", "0"],
            &["CLIENT", "SETNAME", "x"],
            &["CLIENT", "ID"],
            &["MULTI"],
            &["EXEC"],
            &["COMMAND"],
            &["COMMAND", "DOCS", "get"],
            &["READONLY"],
            &["ACL", "WHOAMI"],
            &["ACL", "CAT"],
            &["CLIENT", "INFO"],
            &["CONFIG", "HELP"],
        ] {
            assert_eq!(access(line), Access::Connection, "{line:?}");
        }
        for line in [
            &["GET", "k"][..],
            &["VGET", "k"],
            &["SCAN", "0"],
            &["INFO"],
            &["NODES"],
            &["RING"],
            &["STATUS"],
            &["CLUSTER", "SLOTS"],
        ] {
            assert_eq!(access(line), Access::Read, "{line:?}");
        }
        for line in [
            &["SET", "k", "v"][..],
            &["DEL", "k"],
            &["INCR", "k"],
            &["EXPIRE", "k", "1"],
            &["VDEL", "k"],
        ] {
            assert_eq!(access(line), Access::Write, "{line:?}");
        }
        // Every table name of an admin command, by name.
        for name in [
            "kill",
            "shutdown",
            "leave",
            "remove",
            "fault|partition",
            "fault|delay",
            "fault|loss",
            "fault|heal",
            "fault|show",
            "config|set",
            "config|get",
            "config|resetstat",
        ] {
            let spec = all_specs()
                .into_iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{name} not declared"));
            assert_eq!(spec.access, Access::Admin, "{name}");
        }
    }

    #[test]
    fn lookups_ignore_case_and_sub_commands_resolve() {
        for name in ["get", "GET", "GeT"] {
            assert_eq!(lookup(name.as_bytes()).map(|s| s.name), Some("get"));
        }
        let client = lookup(b"CLIENT").expect("client");
        assert_eq!(sub_of(client, b"iD").map(|s| s.name), Some("client|id"));
        assert!(lookup(b"msetnx").is_none(), "refused names are not listed");
        let cmd = parse(&words(&["client", "Id"])).expect("parses");
        assert_eq!(cmd.name(), Some("client|id"));
        assert!(cmd.is_connection_command());
        let cmd = parse(&words(&["MSETNX", "a", "1"])).expect("refused");
        assert!(cmd.spec.is_none());
        assert!(matches!(cmd.action, Action::Refuse(ref m) if m.starts_with("MSETNX is not")));
    }

    #[test]
    fn key_indexes_follow_the_legacy_positions() {
        let idx = |name: &str, argc| {
            key_indexes(lookup(name.as_bytes()).unwrap(), argc).collect::<Vec<_>>()
        };
        assert_eq!(idx("get", 2), [1]);
        assert_eq!(idx("get", 3), [1], "R=n is not a key");
        assert_eq!(idx("mset", 5), [1, 3]);
        assert_eq!(idx("mset", 4), [1, 3]);
        assert_eq!(idx("del", 4), [1, 2, 3]);
        assert_eq!(idx("vdel", 4), [1]);
        assert!(idx("ping", 3).is_empty());
    }
}

/// The parsers, through the dispatcher (moved from the old `command.rs`).
#[cfg(test)]
mod parsing {
    use super::admin::{FaultCmd, Kill};
    use super::args::When;
    use super::cluster::ClusterCmd;
    use super::connection::{ClientCmd, Hello, KillFilter, Quit};
    use super::counters::Incr;
    use super::expiry::Expire;
    use super::keys::{Del, Scan};
    use super::server::Shutdown;
    use super::strings::{Get, MSet, Set, SetReply, SetTtl};
    use super::*;
    use crate::token::Token;
    use crate::write::{Condition, ExpireIf};

    fn p(line: &[&str]) -> Result<Command, String> {
        let args: Vec<Vec<u8>> = line.iter().map(|s| s.as_bytes().to_vec()).collect();
        parse(&args)
    }

    /// Checks the node command of type `T` that `line` parses to.
    fn node<T: NodeCommand>(line: &[&str], check: impl FnOnce(&T)) {
        let cmd = p(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        match cmd.action.as_node::<T>() {
            Some(parsed) => check(parsed),
            None => panic!("{line:?} parsed to {cmd:?}"),
        }
    }

    /// `line` parses to the node command `want`.
    fn is<T: NodeCommand + PartialEq>(line: &[&str], want: T) {
        node(line, |got: &T| assert!(*got == want, "{line:?}: {got:?}"));
    }

    fn conn<T: ConnectionCommand>(line: &[&str], check: impl FnOnce(&T)) {
        let cmd = p(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        match cmd.action.as_connection::<T>() {
            Some(parsed) => check(parsed),
            None => panic!("{line:?} parsed to {cmd:?}"),
        }
    }

    #[test]
    fn parses_commands_and_options() {
        let get = |r| Get {
            key: b"k".to_vec(),
            r,
        };
        is(&["get", "k"], get(None));
        is(&["GET", "k", "r=1"], get(Some(1)));
        // The parser keeps the token as sent: it is checked when the
        // command runs, against its key and the cluster key.
        let ctx_arg = "CTX=tok3n";
        node(
            &["SET", "k", "v", "EX", "10", "NX", "GET", "W=3", ctx_arg],
            |s: &Set| {
                assert_eq!(s.ttl, SetTtl::When(When::In(10_000)));
                assert_eq!(s.cond, Condition::Absent);
                assert_eq!(s.reply, SetReply::Old);
                assert_eq!(s.w, Some(3));
                assert_eq!(s.ctx, Some(Token::new("tok3n")));
            },
        );
        // A value that looks like an option is a value.
        node(&["SET", "k", "W=2"], |s: &Set| {
            assert_eq!((&s.value[..], s.w), (&b"W=2"[..], None));
        });
        // DEL takes keys only: W=2 is a second key.
        is(
            &["DEL", "a", "W=2"],
            Del {
                keys: vec![b"a".to_vec(), b"W=2".to_vec()],
                w: None,
                ctx: None,
            },
        );
        is(&["SHUTDOWN", "cluster"], Shutdown::Cluster);
        is(&["SHUTDOWN", "nosave"], Shutdown::Node);
        is(&["KILL", "node-1"], Kill("node-1".into()));
        is(
            &["MSET", "a", "1", "b", "2"],
            MSet(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ]),
        );
        node(&["INCRBY", "k", "5"], |i: &Incr| assert_eq!(i.by, 5));
        node(&["DECRBY", "k", "5"], |i: &Incr| assert_eq!(i.by, -5));
        node(&["EXPIRE", "k", "10", "GT"], |e: &Expire| {
            assert_eq!(e.when, Some(When::In(10_000)));
            assert_eq!(e.cond, ExpireIf::Later);
        });
        node(
            &["SCAN", "0", "MATCH", "a*", "COUNT", "100", "TYPE", "string"],
            |s: &Scan| assert_eq!(s.count, 100),
        );
        conn(
            &["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me"],
            |h: &Hello| {
                assert_eq!(h.proto, Some(3));
                assert!(h.auth.is_some() && h.setname.is_some());
            },
        );
        conn(
            &["CLIENT", "KILL", "ID", "7", "SKIPME", "no"],
            |c: &ClientCmd| {
                assert!(matches!(
                    c,
                    ClientCmd::Kill(KillFilter {
                        id: Some(7),
                        skipme: false,
                        ..
                    })
                ));
            },
        );
        is(
            &["CLUSTER", "KEYSLOT", "foo"],
            ClusterCmd::KeySlot(b"foo".to_vec()),
        );
        conn(&["quit", "ignored"], |_: &Quit| {});
    }

    #[test]
    fn errors_read_like_redis() {
        let err = |line: &[&str]| p(line).map(|c| format!("{c:?}")).unwrap_err();
        assert_eq!(err(&["GET"]), "wrong number of arguments for 'get' command");
        assert_eq!(
            err(&["GET", "a", "b"]),
            "wrong number of arguments for 'get' command"
        );
        assert_eq!(err(&["SET", "k", "v", "EX"]), "syntax error");
        assert_eq!(
            err(&["SET", "k", "v", "EX", "0"]),
            "invalid expire time in 'set' command"
        );
        assert_eq!(err(&["SET", "k", "v", "NX", "XX"]), "syntax error");
        assert_eq!(
            err(&["INCRBY", "k", "x"]),
            "value is not an integer or out of range"
        );
        assert_eq!(
            err(&["FROB"]),
            "unknown command 'FROB', with args beginning with: "
        );
        assert_eq!(
            err(&["frob", "a", "b c"]),
            "unknown command 'frob', with args beginning with: 'a' 'b c' "
        );
        assert_eq!(
            err(&["CLIENT", "FROB"]),
            "unknown subcommand 'FROB'. Try CLIENT HELP."
        );
        assert_eq!(
            err(&["client", "setname"]),
            "wrong number of arguments for 'client|setname' command"
        );
        assert_eq!(
            err(&["CLIENT"]),
            "wrong number of arguments for 'client' command"
        );
        assert_eq!(
            err(&["CONFIG", "GET"]),
            "wrong number of arguments for 'config|get' command"
        );
        assert_eq!(
            err(&["MSET", "a", "1", "b"]),
            "wrong number of arguments for 'mset' command"
        );
        assert!(p(&["GET", "k", "W=2"]).is_err());
        assert!(err(&["SET", "k", "v", "CTX=a", "CTX=b"]).contains("given twice"));
        assert!(p(&["SHUTDOWN", "now please"]).is_err());
        assert!(err(&["FAULT"]).starts_with("usage: FAULT"));
        assert!(err(&["FAULT", "NOPE"]).starts_with("usage: FAULT"));
        assert!(err(&["FAULT", "DELAY", "n"]).starts_with("usage: FAULT"));
        assert!(err(&["FAULT", "LOSS", "n", "101"]).contains("0-100"));
        is(
            &["fault", "partition", "a", "b"],
            FaultCmd::Partition(vec!["a".into(), "b".into()]),
        );
        assert!(matches!(
            p(&["MSETNX", "a", "1"]).map(|c| c.action),
            Ok(Action::Refuse(_))
        ));
        assert!(matches!(
            p(&["config", "rewrite"]).map(|c| c.action),
            Ok(Action::Refuse(m)) if m.starts_with("CONFIG REWRITE is not supported")
        ));
        assert!(matches!(
            p(&["config", "set", "a"]).map(|c| c.action),
            Ok(Action::Refuse(m)) if m.starts_with("CONFIG SET is not supported")
        ));
        assert!(p(&[]).is_err());
    }

    /// A refused command says why, and what to do instead, in the error
    /// itself: "is not supported: <reason>; <alternative>".
    #[test]
    fn every_refusal_names_its_reason_and_an_alternative() {
        let refuse = |line: &[&str]| match p(line).map(|c| c.action) {
            Ok(Action::Refuse(m)) => m,
            other => panic!("{line:?} is not refused: {other:?}"),
        };
        for family in FAMILIES {
            for r in family.refused {
                for name in r.names {
                    let m = refuse(&[name, "x"]);
                    let why = m
                        .strip_prefix(&format!("{} is not supported: ", name.to_ascii_uppercase()))
                        .unwrap_or_else(|| panic!("{name}: {m}"));
                    let (reason, instead) = why.split_once(';').unwrap_or_else(|| panic!("{m}"));
                    assert!(reason.len() > 20 && instead.len() > 10, "{m}");
                }
            }
        }
        assert!(refuse(&["HSET", "h", "f", "v"]).contains("strings only"));
        assert!(refuse(&["rename", "a", "b"]).contains("GET the value, SET the new key"));
        let m = refuse(&["CLUSTER", "addslots", "1"]);
        assert!(m.starts_with("CLUSTER ADDSLOTS is not supported: "), "{m}");
        assert!(m.contains("every node serves every key"), "{m}");
        assert!(matches!(
            p(&["CLUSTER", "NOPE"]),
            Err(e) if e.starts_with("unknown subcommand 'NOPE'")
        ));
    }

    /// Every command and sub-command of the table is reached by the
    /// dispatcher: a call with as many words as its arity asks for finds
    /// that very declaration (its own parser may still refuse the words).
    #[test]
    fn the_dispatcher_reaches_every_declaration() {
        for spec in commands().flat_map(|s| std::iter::once(s).chain(s.subcommands.iter())) {
            let mut words: Vec<Vec<u8>> = spec
                .name
                .split('|')
                .map(|w| w.to_ascii_uppercase().into_bytes())
                .collect();
            let n = usize::try_from(spec.arity.unsigned_abs()).unwrap_or(1);
            while words.len() < n {
                words.push(b"1".to_vec());
            }
            match parse(&words) {
                Ok(cmd) => assert_eq!(cmd.name(), Some(spec.name)),
                Err(e) => assert!(
                    !e.starts_with("unknown command")
                        && !e.starts_with("wrong number of arguments"),
                    "{}: {e}",
                    spec.name
                ),
            }
        }
    }
}
