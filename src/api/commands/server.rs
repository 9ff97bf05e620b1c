//! The server family: INFO, the COMMAND introspection commands (answered
//! from the command table by [`crate::api::catalog`]), CONFIG, TIME,
//! SHUTDOWN, and the server commands distro-db refuses (persistence,
//! replication, scripting, pub/sub).

use std::sync::Arc;

use futures::FutureExt;
use tracing::info;

use super::args::{SYNTAX, unknown_sub, upper};
use super::spec::*;
use super::{Access, Action, Family, NodeCommand, Refusal, Reply, reply};
use crate::api::catalog;
use crate::api::resp::Frame;
use crate::api::{After, Api, admin, info};

/// The server family.
pub const FAMILY: Family = Family {
    name: "server",
    commands: COMMANDS,
    refused: &[
        Refusal {
            names: &["save", "bgsave", "bgrewriteaof"],
            reason: " is not supported: every write is already in the node's append-only store (--data-dir, --fsync), so there is nothing to trigger; --fsync chooses how often writes reach the disk",
        },
        Refusal {
            names: &["subscribe", "psubscribe", "publish"],
            reason: " is not supported: distro-db has no pub/sub; use a message broker next to it",
        },
        Refusal {
            names: &["eval", "evalsha", "script", "function", "fcall"],
            reason: " is not supported: distro-db has no scripting (a script needs atomic multi-key execution); send the commands from the client, with VGET and SET ... CTX= for a read-modify-write",
        },
        Refusal {
            names: &["wait"],
            reason: " is not supported: a write is acknowledged by its own quorum, not by a later WAIT; ask for more acknowledgements per write with W=n (SET key value W=3)",
        },
        Refusal {
            names: &["monitor"],
            reason: " is not supported: distro-db has no command feed; STATUS and INFO stats show what a node does",
        },
        Refusal {
            names: &["sync", "psync", "replicaof", "slaveof"],
            reason: " is not supported: distro-db has no master/replica replication; every node is equal and copies each key to its N owners by itself (OWNERS key names them)",
        },
    ],
};

const COMMANDS: &[Spec] = &[
    cmd("info", -1, SERVER, "1.0.0", Access::Read, |c| {
        let sections = c
            .args
            .iter()
            .map(|s| upper(s).to_ascii_lowercase())
            .collect();
        Ok(Action::node(Info(sections)))
    })
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
    .args(&[string("section").opt().multi()])
    .free(),
    cmd("command", -1, SERVER, "2.8.13", Access::Connection, |c| {
        Ok(Action::reply(match c.args.first() {
            None => catalog::command_all(),
            Some(sub) => Frame::err(format!(
                "unknown subcommand '{}'. Try COMMAND HELP.",
                String::from_utf8_lossy(sub)
            )),
        }))
    })
    .doc(
        "Returns details about every command the server answers.",
        "O(N) where N is the number of commands",
    )
    .flags(F_LOADING_STALE)
    .acl(A_CONN_SLOW)
    .tips(T_ANY_ORDER)
    .subs(COMMAND_SUBS)
    .free(),
    cmd("config", -2, SERVER, "2.0.0", Access::Admin, |c| {
        let sub = c.args.first().map_or(&[][..], |s| s);
        if upper(sub) == "REWRITE" {
            return Ok(config_refused(sub));
        }
        Err(unknown_sub("CONFIG", sub))
    })
    .doc(
        "A container for commands about the server's configuration.",
        "Depends on the sub-command",
    )
    .subs(CONFIG_SUBS),
    cmd("time", 1, SERVER, "2.6.0", Access::Read, |_| {
        Ok(Action::report("time", |_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Frame::Array(vec![
                Frame::bulk(now.as_secs().to_string()),
                Frame::bulk(now.subsec_micros().to_string()),
            ])
        }))
    })
    .doc(
        "Returns the server's clock, as Unix seconds and microseconds.",
        "O(1)",
    )
    .flags(&["loading", "stale", "fast"])
    .acl(&["@fast"])
    .tips(T_NONDETERMINISTIC)
    .free(),
    cmd("shutdown", -1, SERVER, "1.0.0", Access::Admin, |c| {
        Ok(match c.args {
            [] => Action::node(Shutdown::Node),
            [scope] if scope.eq_ignore_ascii_case(b"CLUSTER") => Action::node(Shutdown::Cluster),
            // Shutdowns here are immediate: there is none to cancel.
            [flag] if upper(flag) == "ABORT" => Action::Refuse("No shutdown in progress.".into()),
            [flag] if ["NOSAVE", "SAVE", "NOW", "FORCE"].contains(&upper(flag).as_str()) => {
                Action::node(Shutdown::Node)
            }
            [_] => {
                return Err(
                    "SHUTDOWN takes no argument (this node) or CLUSTER (every node)".into(),
                );
            }
            _ => return Err(SYNTAX.into()),
        })
    })
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
];

/// Redis's arity error for a `COMMAND` sub-command, as a reply (these
/// errors are answered when the command runs, not when it is read).
fn command_arity(name: &str) -> Frame {
    Frame::err(super::args::arity(name))
}

const COMMAND_SUBS: &[Spec] = &[
    cmd(
        "command|count",
        2,
        SERVER,
        "2.8.13",
        Access::Connection,
        |c| {
            Ok(Action::reply(if c.args.is_empty() {
                catalog::command_count()
            } else {
                command_arity(c.spec.name)
            }))
        },
    )
    .doc("Returns the number of commands.", "O(1)")
    .flags(F_LOADING_STALE)
    .acl(A_CONN_SLOW)
    .free()
    .parser_checks_arity(),
    cmd(
        "command|docs",
        -2,
        SERVER,
        "7.0.0",
        Access::Connection,
        |c| Ok(Action::reply(catalog::command_docs(c.args))),
    )
    .doc(
        "Returns the documentation of the given commands, or of every command.",
        "O(N) where N is the number of commands looked up",
    )
    .flags(F_LOADING_STALE)
    .acl(A_CONN_SLOW)
    .tips(T_ANY_ORDER)
    .args(&[string("command-name").opt().multi()])
    .free(),
    cmd(
        "command|getkeys",
        -3,
        SERVER,
        "2.8.13",
        Access::Connection,
        |c| Ok(Action::reply(catalog::command_getkeys(c.args))),
    )
    .doc(
        "Returns which words of a complete command are keys.",
        "O(N) where N is the number of arguments to the command",
    )
    .flags(F_LOADING_STALE)
    .acl(A_CONN_SLOW)
    .args(&[string("command"), string("arg").opt().multi()])
    .free()
    .parser_checks_arity(),
    cmd(
        "command|info",
        -2,
        SERVER,
        "2.8.13",
        Access::Connection,
        |c| Ok(Action::reply(catalog::command_info(c.args))),
    )
    .doc(
        "Returns details about the given commands, or about every command.",
        "O(N) where N is the number of commands looked up",
    )
    .flags(F_LOADING_STALE)
    .acl(A_CONN_SLOW)
    .tips(T_ANY_ORDER)
    .args(&[string("command-name").opt().multi()])
    .free(),
    cmd(
        "command|list",
        -2,
        SERVER,
        "7.0.0",
        Access::Connection,
        |c| {
            Ok(Action::reply(if c.args.is_empty() {
                catalog::command_list()
            } else {
                Frame::err(
                    "COMMAND LIST FILTERBY is not supported: COMMAND LIST (without it) names every command; filter in the client, with COMMAND INFO for a command's flags and ACL categories",
                )
            }))
        },
    )
    .doc(
        "Returns the names of every command and sub-command.",
        "O(N) where N is the number of commands",
    )
    .flags(F_LOADING_STALE)
    .acl(A_CONN_SLOW)
    .tips(T_ANY_ORDER)
    .free(),
    help(
        "command|help",
        SERVER,
        Access::Connection,
        A_CONN_SLOW,
        |c| {
            Ok(Action::reply(if c.args.is_empty() {
                catalog::command_help()
            } else {
                command_arity(c.spec.name)
            }))
        },
    )
    .parser_checks_arity(),
];

/// `CONFIG SET`, `RESETSTAT`, `REWRITE`: refused with the reason.
fn config_refused(sub: &[u8]) -> Action {
    Action::Refuse(format!(
        "CONFIG {} is not supported: distro-db takes its settings from the command line (restart the node with other flags)",
        upper(sub)
    ))
}

const CONFIG_SUBS: &[Spec] = &[
    cmd("config|get", -3, SERVER, "2.0.0", Access::Admin, |c| {
        Ok(Action::node(ConfigGet(c.args.to_vec())))
    })
    .doc(
        "Returns the configuration parameters that match the given names or patterns, with their values.",
        "O(N) where N is the number of parameters asked for",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[string("parameter").multi()])
    .free(),
    cmd("config|set", -4, SERVER, "2.0.0", Access::Admin, |_| {
        Ok(config_refused(b"SET"))
    })
    .doc(
        "Changes configuration parameters at run time; distro-db refuses, as its settings are fixed when a node starts.",
        "O(N) where N is the number of parameters given",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .tips(T_ALL_NODES)
    .args(&[block("data", &[string("parameter"), string("value")]).multi()])
    // Refused whatever follows.
    .parser_checks_arity(),
    cmd("config|resetstat", 2, SERVER, "2.0.0", Access::Admin, |_| {
        Ok(config_refused(b"RESETSTAT"))
    })
    .doc(
        "Resets the statistics the server reports; distro-db refuses, as its counters only grow.",
        "O(1)",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .tips(T_ALL_NODES)
    .parser_checks_arity(),
    help("config|help", SERVER, Access::Connection, A_SLOW, |_| {
        Ok(Action::reply(Frame::Array(
            [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern> -- the node's settings matching a glob-style pattern",
                "(distro-db takes its settings from the command line: CONFIG SET is refused)",
            ]
            .into_iter()
            .map(|l| Frame::Simple(l.into()))
            .collect(),
        )))
    })
    // Words after HELP are ignored.
    .parser_checks_arity(),
];

/// `INFO [section...]`
#[derive(Debug, PartialEq, Eq)]
pub struct Info(pub Vec<String>);

impl NodeCommand for Info {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        reply(Frame::Verbatim(
            "txt".into(),
            info::info(&api, &self.0).into_bytes(),
        ))
    }
}

/// `CONFIG GET pattern...`
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigGet(pub Vec<Vec<u8>>);

impl NodeCommand for ConfigGet {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        reply(info::config_get(&api, &self.0))
    }
}

/// `SHUTDOWN [NOSAVE|SAVE|NOW|FORCE]` and `SHUTDOWN CLUSTER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop this node.
    Node,
    /// Stop every node.
    Cluster,
}

impl NodeCommand for Shutdown {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        async move {
            if *self == Shutdown::Node {
                return (Frame::ok(), After::StopNode);
            }
            // Stop the others first, so the answer says what happened.
            let (stopped, total) = admin::stop_others(&api).await;
            info!(stopped, total, "cluster shutdown requested");
            let reply = if stopped == total {
                Frame::ok()
            } else {
                Frame::Simple(format!(
                    "OK ({stopped} of {total} other nodes stopped; the others did not answer and may be down already)"
                ))
            };
            (reply, After::StopNode)
        }
        .boxed()
    }
}
