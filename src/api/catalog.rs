//! The replies of the `COMMAND` family, rendered from the command table
//! ([`crate::api::commands`]): `COMMAND`, `COMMAND INFO`, `DOCS`, `COUNT`,
//! `LIST`, `GETKEYS`, `HELP`, and the help lines of the other containers
//! (`CLIENT HELP`, ...). Pure: no I/O, no panic on any input.
//!
//! Real clients depend on it. redis-py's `RedisCluster` and go-redis read
//! `COMMAND` when they start, to learn each command's key positions, and
//! refuse on the client side a command that is missing there. redis-cli shows
//! argument hints from `COMMAND DOCS`, and prints `HELP <command>` from it.
//! redis-py asks `COMMAND GETKEYS` for commands whose keys it cannot place.
//!
//! The replies are [`Frame`]s with maps and sets, so the encoder writes them
//! natively in RESP3 and as flat arrays in RESP2, as Redis does.

use super::commands::spec::{Arg, ArgKind, KeySpec, Spec};
use super::commands::{arity_ok, commands, key_indexes, sub_of};
use super::resp::Frame;

// ---------------------------------------------------------------------------
// Lookups.

/// The command named `name` (any case), without sub-commands resolved.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    super::commands::lookup(name)
}

/// The sub-command `sub` of the command `name` (any case): `lookup_sub(b"client", b"id")`.
pub fn lookup_sub(name: &[u8], sub: &[u8]) -> Option<&'static Spec> {
    sub_of(lookup(name)?, sub)
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
    key_indexes(spec, argc).collect()
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
    Frame::Array(commands().map(info_entry).collect())
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
    Frame::Integer(i64::try_from(commands().count()).unwrap_or(i64::MAX))
}

/// The `COMMAND LIST` reply: every command's name, each followed by its
/// sub-commands' full names, as Redis lists them.
pub fn command_list() -> Frame {
    let mut names = Vec::new();
    for spec in commands() {
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
        commands().collect()
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
        commands()
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
        for spec in commands() {
            assert!(!spec.name.contains('|'));
            for sub in spec.subcommands {
                let (parent, short) = sub.name.split_once('|').expect("full name");
                assert_eq!(parent, spec.name);
                assert!(!short.is_empty() && !short.contains('|'));
                assert!(sub.subcommands.is_empty(), "one level only");
                assert_eq!(sub.group, spec.group, "{}", sub.name);
            }
        }
        assert_eq!(commands().count(), 68);
        assert_eq!(all_specs().len() - commands().count(), 44);
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
        ("ACL WHOAMI", NO_KEYS),
        ("ACL DRYRUN alice GET k", NO_KEYS),
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
        ("BACKUP START", NO_KEYS),
        ("EXPORT KEYS 0", NO_KEYS),
        ("IMPORT k obj", NO_KEYS),
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
        for spec in commands() {
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
        for spec in commands() {
            if let Some(help) = subcommand_help(spec.name.as_bytes()) {
                round_trips(&help);
            }
        }
        assert_eq!(command_count(), Frame::Integer(68));
        let Frame::Array(names) = command_list() else {
            panic!("an array");
        };
        assert_eq!(names.len(), 68 + 44);
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
