//! The data family, distro-db's own: what `db backup` (BACKUP START, READ,
//! END: a point-in-time copy of this node's store) and `db dump` / `db load`
//! (EXPORT KEYS, EXPORT OBJECTS, IMPORT: live keys with their clocks,
//! cluster-wide) send. Every command needs the admin right. The sessions
//! are in [`crate::backup`], the file formats in [`crate::backup`] and
//! [`crate::dump`].

use std::sync::Arc;

use super::args::{int, text};
use super::spec::*;
use super::{Access, Action, Family, NodeCommand, Reply, answer};
use crate::api::Api;
use crate::api::resp::Frame;
use crate::object::Object;

/// The data family.
pub const FAMILY: Family = Family {
    name: "data",
    commands: COMMANDS,
    refused: &[],
};

/// Keys one `EXPORT OBJECTS` takes at most.
pub const MAX_EXPORT_KEYS: usize = 1000;

const BACKUP_USAGE: &str =
    "usage: BACKUP START | BACKUP READ <id> <file> <offset> <count> | BACKUP END <id>";
const EXPORT_USAGE: &str = "usage: EXPORT KEYS <partition> | EXPORT OBJECTS <key>...";

fn number(arg: &[u8], what: &str) -> Result<u64, String> {
    int(arg)
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("{what} must be a non-negative integer"))
}

const COMMANDS: &[Spec] = &[
    cmd("backup", -2, DISTRO, DISTRO_SINCE, Access::Admin, |_| {
        Err(BACKUP_USAGE.into())
    })
    .doc(
        "A container for taking a point-in-time copy of this node's store (db backup).",
        "Depends on the sub-command",
    )
    .subs(BACKUP_SUBS)
    .parser_checks_arity(),
    cmd("export", -2, DISTRO, DISTRO_SINCE, Access::Admin, |_| {
        Err(EXPORT_USAGE.into())
    })
    .doc(
        "A container for exporting live keys with their clocks (db dump).",
        "Depends on the sub-command",
    )
    .subs(EXPORT_SUBS)
    .parser_checks_arity(),
    cmd("import", -3, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        let (key, bytes, rest) = match c.args {
            [k, b, rest @ ..] => (k, b, rest),
            _ => return Err(c.arity_error()),
        };
        let w = match rest {
            [] => None,
            [opt] => {
                let t = text(opt, "option")?;
                match t.strip_prefix("W=").or_else(|| t.strip_prefix("w=")) {
                    Some(n) => Some(
                        n.parse::<usize>()
                            .map_err(|_| format!("W must be a number, got '{n}'"))?,
                    ),
                    None => return Err(format!("IMPORT takes W=n after the object, not '{t}'")),
                }
            }
            _ => return Err("usage: IMPORT <key> <object> [W=n]".into()),
        };
        let object =
            Object::from_bytes(bytes).map_err(|e| format!("the object does not decode: {e}"))?;
        object
            .validate()
            .and_then(|()| object.check_counters())
            .map_err(|e| format!("the object is not valid: {e}"))?;
        Ok(Action::node(Import {
            key: key.clone(),
            object,
            w,
        }))
    })
    .doc(
        "Merges an exported object (value, siblings and clock) into a key's replicas (db load).",
        "O(N) where N is the replication factor",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[string("key"), string("object"), string("w").opt()])
    .parser_checks_arity(),
];

const BACKUP_SUBS: &[Spec] = &[
    cmd(
        "backup|start",
        2,
        DISTRO,
        DISTRO_SINCE,
        Access::Admin,
        |_| Ok(Action::node(BackupCmd::Start)),
    )
    .doc(
        "Takes a snapshot of this node's store, pins its segments, and lists its files.",
        "O(N) where N is the number of segments",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN),
    cmd("backup|read", 6, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        Ok(Action::node(BackupCmd::Read {
            id: number(&c.args[0], "the session id")?,
            file: text(&c.args[1], "file name")?,
            offset: number(&c.args[2], "the offset")?,
            count: number(&c.args[3], "the count")?,
        }))
    })
    .doc(
        "Reads up to COUNT bytes (at most 4 MiB) of a file of a backup session.",
        "O(N) where N is the count",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[
        integer("id"),
        string("file"),
        integer("offset"),
        integer("count"),
    ]),
    cmd("backup|end", 3, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        Ok(Action::node(BackupCmd::End(number(
            &c.args[0],
            "the session id",
        )?)))
    })
    .doc(
        "Ends a backup session: its segments are no longer pinned.",
        "O(1)",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[integer("id")]),
];

const EXPORT_SUBS: &[Spec] = &[
    cmd("export|keys", 3, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        let p = number(&c.args[0], "the partition")?;
        if p >= crate::keyspace::PARTITIONS as u64 {
            return Err(format!(
                "the partition must be below {}",
                crate::keyspace::PARTITIONS
            ));
        }
        Ok(Action::node(ExportKeys(p as usize)))
    })
    .doc(
        "Lists the live keys of a partition, as the union of what its live owners hold.",
        "O(N) where N is the number of keys in the partition",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[integer("partition")]),
    cmd("export|objects", -3, DISTRO, DISTRO_SINCE, Access::Admin, |c| {
        if c.args.len() > MAX_EXPORT_KEYS {
            return Err(format!(
                "EXPORT OBJECTS takes at most {MAX_EXPORT_KEYS} keys"
            ));
        }
        Ok(Action::node(ExportObjects(c.args.to_vec())))
    })
    .doc(
        "Reads keys at the read quorum and answers each as its encoded object (siblings and clock), or nil.",
        "O(N) where N is the number of keys",
    )
    .flags(F_ADMIN)
    .acl(A_ADMIN)
    .args(&[string("key").multi()])
    .parser_checks_arity(),
];

/// `BACKUP START | READ | END`.
#[derive(Debug, PartialEq, Eq)]
pub enum BackupCmd {
    /// Take a snapshot and open a session.
    Start,
    /// Read a chunk of a file.
    Read {
        /// The session.
        id: u64,
        /// The file, as START listed it.
        file: String,
        /// Where to start.
        offset: u64,
        /// Bytes wanted.
        count: u64,
    },
    /// End a session.
    End(u64),
}

impl NodeCommand for BackupCmd {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match *self {
                BackupCmd::Start => match start_backup(&api).await {
                    Ok(text) => Frame::Bulk(text.into_bytes()),
                    Err(e) => Frame::err(e),
                },
                BackupCmd::Read {
                    id,
                    file,
                    offset,
                    count,
                } => {
                    let count = usize::try_from(count).unwrap_or(usize::MAX);
                    match api.backups.read(id, &file, offset, count).await {
                        Ok(bytes) => Frame::Bulk(bytes),
                        Err(e) => Frame::err(e),
                    }
                }
                BackupCmd::End(id) => {
                    if api.backups.end(id) {
                        Frame::ok()
                    } else {
                        Frame::err(format!("no backup session {id}"))
                    }
                }
            }
        })
    }
}

async fn start_backup(api: &Arc<Api>) -> Result<String, String> {
    let Some(data_dir) = api.info.config.data_dir.clone() else {
        return Err(
            "this node keeps its data in memory (no --data-dir): nothing to back up".into(),
        );
    };
    let store = api.replica.store().clone();
    let snap = tokio::task::spawn_blocking(move || store.backup_snapshot())
        .await
        .map_err(|e| format!("snapshot task failed: {e}"))?
        .map_err(|e| format!("cannot take a snapshot: {e}"))?
        .ok_or("this node's store has no files to back up")?;
    let started = api.backups.start(snap, &data_dir)?;
    tracing::info!(
        session = started.id,
        files = started.files.len(),
        bytes = started.files.iter().map(|(_, l)| l).sum::<u64>(),
        "backup snapshot taken"
    );
    Ok(crate::backup::started_text(
        &started,
        api.coordinator.me(),
        api.replica.actor().epoch(),
        api.replica.now_ms(),
    ))
}

/// `EXPORT KEYS partition`
#[derive(Debug, PartialEq, Eq)]
pub struct ExportKeys(pub usize);

impl NodeCommand for ExportKeys {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api.coordinator.scan_partition(self.0).await {
                Ok(keys) => Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
                Err(e) => Frame::err(e.to_string()),
            }
        })
    }
}

/// `EXPORT OBJECTS key...`
#[derive(Debug, PartialEq, Eq)]
pub struct ExportObjects(pub Vec<Vec<u8>>);

impl NodeCommand for ExportObjects {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            let reads = self.0.iter().map(|k| api.coordinator.get(k, None));
            let mut out = Vec::with_capacity(self.0.len());
            for (key, r) in self.0.iter().zip(futures::future::join_all(reads).await) {
                match r {
                    Ok(Some(o)) if !o.is_deleted_at(api.replica.now_ms()) => {
                        out.push(Frame::Bulk(o.to_bytes()))
                    }
                    Ok(_) => out.push(Frame::Null),
                    Err(e) => {
                        return Frame::err(format!(
                            "reading '{}': {e}",
                            String::from_utf8_lossy(key)
                        ));
                    }
                }
            }
            Frame::Array(out)
        })
    }
}

/// `IMPORT key object [W=n]`
#[derive(Debug)]
pub struct Import {
    key: Vec<u8>,
    object: Object,
    w: Option<usize>,
}

impl NodeCommand for Import {
    fn run(self: Box<Self>, api: Arc<Api>) -> Reply {
        answer(async move {
            match api
                .coordinator
                .merge_in(&self.key, &self.object, self.w)
                .await
            {
                Ok(()) => Frame::ok(),
                Err(e) => Frame::err(e.to_string()),
            }
        })
    }
}
