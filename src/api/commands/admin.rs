//! The administration family, distro-db's own: the reports (NODES, OWNERS,
//! REPLICAS, STATUS, RING), stopping a node (KILL), layout changes (LEAVE,
//! REMOVE) and fault injection (FAULT). The reports and actions themselves
//! are in [`crate::api::admin`].

use std::sync::Arc;

use futures::FutureExt;

use super::args::{text, upper};
use super::spec::*;
use super::{Access, Action, Call, Family, NodeCommand, Reply, answer, reply};
use crate::api::resp::Frame;
use crate::api::{After, Api, admin};
use crate::cluster::layout::Change;

/// The administration family.
pub const FAMILY: Family = Family {
    name: "admin",
    commands: COMMANDS,
    refused: &[],
};

const COMMANDS: &[Spec] = &[
    cmd("nodes", 1, DISTRO, DISTRO_SINCE, Access::Read, |_| {
        Ok(Action::report("nodes", |api| {
            Frame::Text(admin::nodes_report(api))
        }))
    })
    .doc(
        "Reports every node of the cluster: address, liveness and the hints held for it.",
        "O(N) where N is the number of nodes",
    )
    .flags(F_LOADING_STALE)
    .tips(T_NONDETERMINISTIC)
    .free(),
    cmd("owners", 2, DISTRO, DISTRO_SINCE, Access::Read, |c| {
        Ok(Action::node(Owners(c.args[0].clone())))
    })
    .doc(
        "Reports the partition of a key and the nodes that replicate it, in preference order.",
        "O(N) where N is the replication factor",
    )
    .flags(F_LOADING_STALE)
    .keys(1, 1, 1, &[range(&["not_key"], 1, 0, 1)])
    .args(ARGS_KEY)
    .free(),
    cmd("replicas", 2, DISTRO, DISTRO_SINCE, Access::Read, |c| {
        Ok(Action::node(Replicas(c.args[0].clone())))
    })
    .doc(
        "Reports what each replica of a key (and each stand-in) stores: versions, clocks and values.",
        "O(N) where N is the replication factor",
    )
    .flags(&["readonly"])
    .acl(&["@read", "@slow"])
    .tips(T_NONDETERMINISTIC)
    .keys(1, 1, 1, K_READ)
    .args(ARGS_KEY)
    .free(),
    cmd("status", 1, DISTRO, DISTRO_SINCE, Access::Read, |_| {
        Ok(Action::report("status", |api| {
            Frame::Text(admin::status_report(api))
        }))
    })
    .doc(
        "Reports this node's state: storage, hints, anti-entropy and background workers.",
        "O(1)",
    )
    .flags(F_LOADING_STALE)
    .tips(T_NONDETERMINISTIC)
    .free()
    // Words after STATUS are ignored.
    .parser_checks_arity(),
    cmd("kill", 2, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        Ok(Action::node(Kill(text(&c.args[0], "node id")?)))
    })
    .doc(
        "Stops a node of the cluster, named by its ID (this node included).",
        "O(1)",
    )
    .flags(&["admin", "noscript"])
    .acl(A_ADMIN)
    .args(&[string("node-id")]),
    cmd("ring", 1, DISTRO, DISTRO_SINCE, Access::Read, |_| {
        Ok(Action::report("ring", |api| {
            Frame::Text(admin::ring_report(api))
        }))
    })
    .doc(
        "Reports the layout: its version, each node's state and share of the partitions, and transfers.",
        "O(N) where N is the number of nodes",
    )
    .flags(F_LOADING_STALE)
    .tips(T_NONDETERMINISTIC)
    .free(),
    cmd("leave", 1, DISTRO, DISTRO_SINCE, Access::Admin, |_| {
        Ok(Action::node(Leave))
    })
    .doc(
        "This node hands every partition it owns to the nodes that take them over, then stops.",
        "O(1)",
    )
    .flags(&["admin", "noscript"])
    .acl(A_ADMIN),
    cmd("remove", -2, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        let (id, force) = match c.args {
            [id] => (id, false),
            [id, force] if upper(force) == "FORCE" => (id, true),
            [_, other] => {
                return Err(format!(
                    "REMOVE takes a node id and optionally FORCE, not '{}'",
                    String::from_utf8_lossy(other)
                ));
            }
            _ => return Err(c.arity_error()),
        };
        Ok(Action::node(Remove {
            id: text(id, "node id")?,
            force,
        }))
    })
    .doc(
        "Drops a node that is dead for good; the others re-create its copies.",
        "O(1)",
    )
    .flags(&["admin", "noscript"])
    .acl(A_ADMIN)
    .args(&[string("node-id"), token("force", "FORCE").opt()]),
    cmd("fault", -2, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        // No known sub-command.
        if let Some((_, rest)) = c.args.split_first() {
            node_ids(rest)?;
        }
        Err(FAULT_USAGE.into())
    })
    .doc(
        "A container for fault injection: partitions, delays and message loss between nodes.",
        "Depends on the sub-command",
    )
    .subs(FAULT_SUBS)
    .parser_checks_arity(),
];

const FAULT_USAGE: &str = "usage: FAULT PARTITION <node>... | FAULT DELAY <node> <ms> | FAULT LOSS <node> <percent> | FAULT HEAL | FAULT SHOW";

/// The words of a FAULT sub-command as node ids (and numbers).
fn node_ids(args: &[Vec<u8>]) -> Result<Vec<String>, String> {
    args.iter().map(|a| text(a, "node id")).collect()
}

/// A FAULT sub-command: `read` turns its words into the rule change, or
/// `None` for the usage error.
fn fault(
    c: &Call,
    read: fn(&[String]) -> Option<Result<FaultCmd, String>>,
) -> Result<Action, String> {
    let args = node_ids(c.args)?;
    let cmd = read(&args).unwrap_or_else(|| Err(FAULT_USAGE.into()))?;
    Ok(Action::node(cmd))
}

const FAULT_SUBS: &[Spec] = &[
    cmd(
        "fault|partition",
        -3,
        DISTRO,
        DISTRO_SINCE,
        Access::Admin,
        |c| {
            fault(c, |nodes| {
                (!nodes.is_empty()).then(|| Ok(FaultCmd::Partition(nodes.to_vec())))
            })
        },
    )
    .doc(
        "Cuts this node off from the given nodes, in both directions.",
        "O(N) where N is the number of nodes given",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[string("node-id").multi()])
    .parser_checks_arity(),
    cmd("fault|delay", 4, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        fault(c, |args| match args {
            [node, ms] => Some(
                ms.parse()
                    .map(|ms| FaultCmd::Delay(node.clone(), ms))
                    .map_err(|_| format!("delay must be milliseconds, got '{ms}'")),
            ),
            _ => None,
        })
    })
    .doc(
        "Delays every message between this node and another by the given milliseconds.",
        "O(1)",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[string("node-id"), integer("milliseconds")])
    .parser_checks_arity(),
    cmd("fault|loss", 4, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        fault(c, |args| match args {
            [node, pct] => Some(
                pct.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .map(|p| FaultCmd::Loss(node.clone(), p))
                    .ok_or_else(|| format!("loss must be a percentage 0-100, got '{pct}'")),
            ),
            _ => None,
        })
    })
    .doc(
        "Drops the given percentage (0-100) of messages between this node and another.",
        "O(1)",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[string("node-id"), integer("percent")])
    .parser_checks_arity(),
    cmd("fault|heal", 2, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        fault(c, |args| args.is_empty().then_some(Ok(FaultCmd::Heal)))
    })
    .doc(
        "Removes every fault rule of this node.",
        "O(N) where N is the number of rules",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .parser_checks_arity(),
    cmd("fault|show", 2, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        fault(c, |args| args.is_empty().then_some(Ok(FaultCmd::Show)))
    })
    .doc(
        "Lists the fault rules in force on this node.",
        "O(N) where N is the number of rules",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .parser_checks_arity(),
];

/// `OWNERS key`
#[derive(Debug, PartialEq, Eq)]
pub struct Owners(pub Vec<u8>);

impl NodeCommand for Owners {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        reply(Frame::Text(admin::owners_report(&api, &self.0)))
    }
}

/// `REPLICAS key`: what each replica (and stand-in) stores.
#[derive(Debug, PartialEq, Eq)]
pub struct Replicas(pub Vec<u8>);

impl NodeCommand for Replicas {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move { Frame::Text(admin::replicas_report(&api, &self.0).await) })
    }
}

/// `KILL node-id`
#[derive(Debug, PartialEq, Eq)]
pub struct Kill(pub String);

impl NodeCommand for Kill {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        async move {
            if *self.0 == **api.coordinator.me() {
                return (Frame::ok(), After::StopNode);
            }
            let frame = match admin::kill(&api, &self.0).await {
                Ok(()) => Frame::ok(),
                Err(e) => Frame::err(e),
            };
            (frame, After::Continue)
        }
        .boxed()
    }
}

/// `LEAVE`: this node hands its partitions over and stops.
#[derive(Debug, PartialEq, Eq)]
pub struct Leave;

impl NodeCommand for Leave {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let me = api.coordinator.me().to_string();
            let change = vec![Change::Leave { id: me.clone() }];
            match admin::layout_change(&api, change, false).await {
                Ok(()) => Frame::Simple(format!(
                    "OK {me} is leaving: it hands its partitions over, then stops (see RING)"
                )),
                Err(e) => Frame::err(e),
            }
        })
    }
}

/// `REMOVE node-id [FORCE]`: drop a node that is dead for good.
#[derive(Debug, PartialEq, Eq)]
pub struct Remove {
    /// The node.
    pub id: String,
    /// Even if it looks live.
    pub force: bool,
}

impl NodeCommand for Remove {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let Remove { id, force } = *self;
            let change = vec![Change::Remove { id: id.clone() }];
            match admin::layout_change(&api, change, force).await {
                Ok(()) => Frame::Simple(format!(
                    "OK {id} will be removed; the others re-create its copies (see RING)"
                )),
                Err(e) => Frame::err(e),
            }
        })
    }
}

/// A fault-injection command (only with `--fault-injection`).
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

impl NodeCommand for FaultCmd {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        reply(admin::fault_command(&api, *self))
    }
}
