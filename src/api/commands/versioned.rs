//! The versioned family, distro-db's own: VGET (a key's causal context
//! token and every concurrent value) and VDEL (a delete that supersedes
//! what a context has seen), with per-request quorums.

use std::sync::Arc;

use super::args::parse_options;
use super::keys::Del;
use super::spec::*;
use super::{Access, Action, Family, NodeCommand, Reply, answer};
use crate::api::resp::Frame;
use crate::api::{Api, coord_err};

/// The versioned family.
pub const FAMILY: Family = Family {
    name: "versioned",
    commands: COMMANDS,
    refused: &[],
};

const COMMANDS: &[Spec] = &[
    cmd("vget", -2, DISTRO, DISTRO_SINCE, Access::Read, |c| {
        let key = &c.args[0];
        let o = parse_options(c.spec.name, &c.args[1..], &["R"])?;
        Ok(Action::node(VGet {
            key: key.clone(),
            r: o.r,
        }))
    })
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
    cmd("vdel", -2, DISTRO, DISTRO_SINCE, Access::Write, |c| {
        let key = &c.args[0];
        let o = parse_options(c.spec.name, &c.args[1..], &["W", "CTX"])?;
        Ok(Action::node(Del {
            keys: vec![key.clone()],
            w: o.w,
            ctx: o.ctx,
        }))
    })
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
];

/// `VGET key [R=n]`: `[context, value...]`.
#[derive(Debug, PartialEq, Eq)]
pub struct VGet {
    /// Key.
    pub key: Vec<u8>,
    /// Read quorum override.
    pub r: Option<usize>,
}

impl NodeCommand for VGet {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api.coordinator.get(&self.key, self.r).await {
                Ok(obj) => {
                    let obj = obj.unwrap_or_default();
                    let mut items =
                        vec![Frame::bulk(api.context_key.encode(&self.key, &obj.clock))];
                    items.extend(
                        obj.resolve(api.replica.now_ms())
                            .values
                            .into_iter()
                            .map(Frame::Bulk),
                    );
                    Frame::Array(items)
                }
                Err(e) => coord_err(e),
            }
        })
    }
}
