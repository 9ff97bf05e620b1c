//! The ACL family: `ACL WHOAMI`, `LIST`, `USERS`, `CAT`, `DRYRUN` and
//! `HELP`. Users are set when the node starts (`--user`, `--users-file`,
//! `DISTRO_DB_USERS`; [`crate::acl`]), so the sub-commands that change them
//! (`SETUSER`, `DELUSER`, `LOAD`, ...) are refused with that reason.

use std::sync::Arc;

use super::args::{unknown_sub, upper};
use super::spec::*;
use super::{
    Access, Action, Call, ConnReply, ConnectionCommand, Family, NodeCommand, Reply, reply,
};
use crate::api::Api;
use crate::api::resp::Frame;
use crate::api::session::Conn;

/// The ACL family.
pub const FAMILY: Family = Family {
    name: "acl",
    commands: COMMANDS,
    refused: &[],
};

/// Redis's ACL categories, in the order `ACL CAT` lists them.
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Redis's ACL sub-commands that change users or read its ACL file and log.
const REFUSED: &[&str] = &[
    "SETUSER", "DELUSER", "GETUSER", "LOAD", "SAVE", "LOG", "GENPASS",
];

const COMMANDS: &[Spec] = &[cmd("acl", -2, SERVER, "6.0.0", Access::Connection, |c| {
    let sub = c.args.first().map_or(&[][..], |s| s);
    let name = upper(sub);
    if REFUSED.contains(&name.as_str()) {
        return Ok(Action::Refuse(format!(
            "ACL {name} is not supported: distro-db's users are set when a node starts (--user, --users-file, DISTRO_DB_USERS; see docs/security.md)"
        )));
    }
    Err(unknown_sub("ACL", sub))
})
.doc(
    "A container for the commands about users and their rights.",
    "Depends on the sub-command",
)
.subs(ACL_SUBS)];

const ACL_SUBS: &[Spec] = &[
    cmd("acl|whoami", 2, SERVER, "6.0.0", Access::Connection, |_| {
        Ok(Action::connection(WhoAmI))
    })
    .doc(
        "Returns the user this connection is authenticated as.",
        "O(1)",
    )
    .flags(F_NOSCRIPT)
    .acl(A_SLOW),
    cmd("acl|list", 2, SERVER, "6.0.0", Access::Admin, |_| {
        Ok(Action::report("acl list", |api| {
            Frame::Array(api.acl.list().into_iter().map(Frame::bulk).collect())
        }))
    })
    .doc(
        "Lists every user and its rights in Redis's ACL rule format, passwords as their SHA-256.",
        "O(N) where N is the number of users",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .free(),
    cmd("acl|users", 2, SERVER, "6.0.0", Access::Admin, |_| {
        Ok(Action::report("acl users", |api| {
            Frame::Array(
                api.acl
                    .users()
                    .map(|u| Frame::bulk(u.name.as_str()))
                    .collect(),
            )
        }))
    })
    .doc(
        "Lists the names of every user.",
        "O(N) where N is the number of users",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .free(),
    cmd(
        "acl|cat",
        -2,
        SERVER,
        "6.0.0",
        Access::Connection,
        parse_cat,
    )
    .doc(
        "Lists the ACL categories, or the commands of one category.",
        "O(1)",
    )
    .flags(F_NOSCRIPT)
    .acl(A_SLOW)
    .args(&[string("category").opt()])
    .free(),
    cmd("acl|dryrun", -4, SERVER, "7.0.0", Access::Admin, |c| {
        Ok(Action::node(DryRun {
            user: c.args[0].clone(),
            words: c.args[1..].to_vec(),
        }))
    })
    .doc(
        "Says whether a user may run a command, without running it.",
        "O(1)",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[
        string("username"),
        string("command"),
        string("arg").opt().multi(),
    ])
    .free(),
    help("acl|help", SERVER, Access::Connection, A_SLOW, |_| {
        Ok(Action::reply(
            crate::api::catalog::subcommand_help(b"acl").unwrap_or(Frame::Array(Vec::new())),
        ))
    })
    // Words after HELP are ignored.
    .parser_checks_arity(),
];

/// `ACL WHOAMI`
#[derive(Debug, PartialEq, Eq)]
pub struct WhoAmI;

impl ConnectionCommand for WhoAmI {
    fn run(self: Box<Self>, conn: &mut Conn) -> ConnReply {
        // Only an authenticated connection gets here.
        conn.user
            .as_ref()
            .map_or(Frame::Null, |u| Frame::bulk(u.name.as_str()))
            .into()
    }
}

/// `ACL CAT [category]`: answered from the command table.
fn parse_cat(c: &Call) -> Result<Action, String> {
    match c.args {
        [] => Ok(Action::reply(Frame::Array(
            CATEGORIES.iter().map(|&c| Frame::bulk(c)).collect(),
        ))),
        [cat] => {
            let name = String::from_utf8_lossy(cat).to_ascii_lowercase();
            let name = name.strip_prefix('@').unwrap_or(&name);
            if !CATEGORIES.contains(&name) {
                return Err(format!(
                    "Unknown category '{}'",
                    String::from_utf8_lossy(cat)
                ));
            }
            let tag = format!("@{name}");
            let names = super::commands()
                .flat_map(|s| std::iter::once(s).chain(s.subcommands.iter()))
                .filter(|s| s.acl.contains(&tag.as_str()))
                .map(|s| Frame::bulk(s.name))
                .collect();
            Ok(Action::reply(Frame::Array(names)))
        }
        _ => Err(c.arity_error()),
    }
}

/// `ACL DRYRUN user command [arg...]`
#[derive(Debug, PartialEq, Eq)]
pub struct DryRun {
    /// The user.
    pub user: Vec<u8>,
    /// The command and its arguments.
    pub words: Vec<Vec<u8>>,
}

impl NodeCommand for DryRun {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        reply(dry_run(&api, &self.user, &self.words))
    }
}

fn dry_run(api: &Api, user: &[u8], words: &[Vec<u8>]) -> Frame {
    let Some(user) = api.acl.get(user) else {
        return Frame::err(format!(
            "User '{}' not found",
            String::from_utf8_lossy(user)
        ));
    };
    let cmd = match super::parse(words) {
        Ok(cmd) => cmd,
        Err(e) if e.starts_with("unknown command") => {
            return Frame::err(format!(
                "Command '{}' not found",
                String::from_utf8_lossy(&words[0])
            ));
        }
        Err(e) => return Frame::err(e),
    };
    if user.may(cmd.access()) {
        Frame::ok()
    } else {
        Frame::bulk(format!(
            "User {} has no permissions to run the '{}' command",
            user.name,
            cmd.name().unwrap_or("")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &[&str]) -> Result<super::super::Command, String> {
        let words: Vec<Vec<u8>> = line.iter().map(|s| s.as_bytes().to_vec()).collect();
        super::super::parse(&words)
    }

    #[test]
    fn sub_commands_parse_with_their_rights() {
        let access = |line: &[&str]| p(line).unwrap().access();
        assert_eq!(access(&["ACL", "WHOAMI"]), Access::Connection);
        assert_eq!(access(&["acl", "cat"]), Access::Connection);
        assert_eq!(access(&["ACL", "HELP"]), Access::Connection);
        assert_eq!(access(&["ACL", "LIST"]), Access::Admin);
        assert_eq!(access(&["ACL", "USERS"]), Access::Admin);
        assert_eq!(access(&["ACL", "DRYRUN", "u", "get", "k"]), Access::Admin);
        assert!(matches!(
            p(&["ACL", "SETUSER", "bob", "on"]).map(|c| c.action),
            Ok(Action::Refuse(m)) if m.starts_with("ACL SETUSER is not supported")
        ));
        assert_eq!(
            p(&["ACL", "FROB"]).unwrap_err(),
            "unknown subcommand 'FROB'. Try ACL HELP."
        );
        assert_eq!(
            p(&["ACL", "WHOAMI", "x"]).unwrap_err(),
            "wrong number of arguments for 'acl|whoami' command"
        );
    }

    #[test]
    fn cat_lists_categories_and_their_commands() {
        let reply = |line: &[&str]| match p(line).map(|c| c.action) {
            Ok(a) => a.as_node::<super::super::Fixed>().unwrap().0.clone(),
            Err(e) => Frame::err(e),
        };
        let Frame::Array(all) = reply(&["ACL", "CAT"]) else {
            panic!("an array")
        };
        assert_eq!(all.len(), 21);
        let Frame::Array(admin) = reply(&["ACL", "CAT", "admin"]) else {
            panic!("an array")
        };
        for name in ["kill", "shutdown", "config|set", "acl|list", "client|kill"] {
            assert!(admin.contains(&Frame::bulk(name)), "{name}: {admin:?}");
        }
        assert!(!admin.contains(&Frame::bulk("get")));
        assert_eq!(
            reply(&["ACL", "CAT", "nope"]),
            Frame::err("Unknown category 'nope'")
        );
    }
}
