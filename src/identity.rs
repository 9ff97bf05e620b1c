//! The node's identity on disk: which node id a data directory belongs to.
//!
//! The id is kept in two copies, `DIR/node-id` and `DIR/store/node-id`, each
//! written atomically and durably ([`crate::durable::write_atomic`]) and
//! checked at every start: one line, the id (1 to 64 characters, no spaces
//! or control characters), then a newline. A copy that is empty, cut short
//! or malformed is never used. When the other copy is intact the damaged
//! one is rewritten from it and the repair is logged; when neither is, the
//! node refuses to start and says which files are wrong and what to do.
//! Nothing else may decide the id of a directory that holds data: running
//! a store under another id would make the cluster take it for a new node.
//!
//! The id is also *bound* to the directory: `DIR/store/node-binding` holds
//! 16 random bytes made at the directory's first start, and the node's
//! binding is a MAC of its id and those bytes under the cluster key
//! ([`crate::rpc::auth::PeerKey::binding`]). The layout records each
//! member's binding; only a process that gossips it speaks for the node, so
//! a second process started under a live node's id (another data
//! directory, or another cluster's secret) is refused and never routed to
//! (docs/security.md, "Node identity").

use std::path::{Path, PathBuf};

use anyhow::bail;
use tracing::{info, warn};

/// Name of the id file, in the data directory and in its store directory.
pub const ID_FILE: &str = "node-id";

/// Name of the binding nonce file, in the store directory.
pub const BINDING_FILE: &str = "node-binding";

/// The random bytes that bind a node id to the data directory whose store
/// is `store_dir`: read, or made (durably) at the directory's first start.
/// A damaged file is replaced (logged): the node then counts as a new disk
/// under its id, which the cluster accepts only while the old one is not
/// live.
pub fn binding_nonce(store_dir: &Path) -> anyhow::Result<[u8; 16]> {
    let path = store_dir.join(BINDING_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let parsed = std::str::from_utf8(&bytes)
                .ok()
                .map(str::trim_end)
                .filter(|t| t.len() == 32)
                .and_then(|t| u128::from_str_radix(t, 16).ok());
            if let Some(n) = parsed {
                return Ok(n.to_be_bytes());
            }
            warn!(file = %path.display(), "node binding file damaged; making a new one (the cluster takes this directory for a new disk)");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())));
        }
    }
    let n: u128 = rand::random();
    crate::durable::write_atomic(&path, format!("{n:032x}\n").as_bytes())
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot write {}", path.display())))?;
    Ok(n.to_be_bytes())
}

/// What one copy of the id file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Copy {
    Missing,
    Valid(String),
    /// Present but unusable, with what is wrong with it.
    Damaged(String),
}

/// Checks a node id as the configuration does: 1 to 64 characters, no
/// whitespace, no control characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses the bytes of an id file.
fn parse(bytes: &[u8]) -> Result<String, String> {
    if bytes.is_empty() {
        return Err("it is empty".into());
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err("it is not UTF-8 text".into());
    };
    let Some(id) = text.strip_suffix('\n') else {
        return Err(format!(
            "it does not end with a newline (cut short?): {:?}",
            truncate(text)
        ));
    };
    if !valid_id(id) {
        return Err(format!(
            "{:?} is not a node id (1 to 64 characters, no spaces)",
            truncate(id)
        ));
    }
    Ok(id.to_string())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn read(path: &Path) -> anyhow::Result<Copy> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(match parse(&bytes) {
            Ok(id) => Copy::Valid(id),
            Err(why) => Copy::Damaged(why),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Copy::Missing),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

fn write(path: &Path, id: &str) -> anyhow::Result<()> {
    crate::durable::write_atomic(path, format!("{id}\n").as_bytes())
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot write {}", path.display())))
}

/// Decides the node id of the data directory `data_dir` (whose store lives
/// in `store_dir`) and makes sure both copies of it are on disk.
///
/// - Both copies intact and equal: that id. They differ: refused.
/// - One intact: that id; the other copy is rewritten from it (logged).
/// - None on disk and the store holds no record: a new directory, which
///   takes `configured`.
/// - Otherwise (damaged copies, or a store with data and no id): refused,
///   unless the id was given explicitly (`given`), which then restores both.
///
/// A stored id wins over a default `configured` one (a node restarted on
/// another address keeps its id); an explicit one that differs is refused.
pub fn resolve(
    data_dir: &Path,
    store_dir: &Path,
    configured: &str,
    given: bool,
    store_has_data: bool,
) -> anyhow::Result<String> {
    let paths: [PathBuf; 2] = [data_dir.join(ID_FILE), store_dir.join(ID_FILE)];
    let copies = [read(&paths[0])?, read(&paths[1])?];
    let stored = match (&copies[0], &copies[1]) {
        (Copy::Valid(a), Copy::Valid(b)) if a != b => bail!(
            "{} says this data directory belongs to node {a}, but {} says {b}: \
             the directory was tampered with or mixed up. Start it with --node-id \
             set to the right one (NODES on another node lists the ids), or use \
             another --data-dir",
            paths[0].display(),
            paths[1].display()
        ),
        (Copy::Valid(a), _) | (_, Copy::Valid(a)) => Some(a.clone()),
        _ => None,
    };
    let Some(stored) = stored else {
        let damaged: Vec<String> = copies
            .iter()
            .zip(&paths)
            .filter_map(|(c, p)| match c {
                Copy::Damaged(why) => Some(format!("{} is damaged: {why}", p.display())),
                _ => None,
            })
            .collect();
        if given {
            if !damaged.is_empty() || store_has_data {
                warn!(node = %configured, damaged = %damaged.join("; "),
                      "no intact node-id file; restoring it from --node-id");
            }
            for p in &paths {
                write(p, configured)?;
            }
            return Ok(configured.to_string());
        }
        if !damaged.is_empty() {
            bail!(
                "{}; there is no intact copy, so this node's id is unknown and will not \
                 be guessed. If you know it (NODES on another node lists the ids), start \
                 with --node-id ID to restore it; to start this directory as a new node, \
                 move it away",
                damaged.join("; ")
            );
        }
        if store_has_data {
            bail!(
                "the data directory {} holds a store with data but no {ID_FILE} file, so \
                 its node id is unknown and will not be guessed: start it with --node-id \
                 ID (NODES on another node lists the ids), or use another --data-dir",
                data_dir.display()
            );
        }
        for p in &paths {
            write(p, configured)?;
        }
        return Ok(configured.to_string());
    };
    if stored != configured {
        if given {
            bail!(
                "the data directory {} belongs to node {stored}, not {configured}: \
                 start it with --node-id {stored}, or use another --data-dir",
                data_dir.display()
            );
        }
        info!(stored = %stored, configured = %configured,
              "data directory belongs to {stored}; keeping that node id");
    }
    for (copy, path) in copies.iter().zip(&paths) {
        if *copy != Copy::Valid(stored.clone()) {
            match copy {
                Copy::Damaged(why) => warn!(file = %path.display(), problem = %why,
                                            "node-id file damaged; rewritten from the intact copy"),
                _ => {
                    info!(file = %path.display(), "node-id file missing; written from the intact copy")
                }
            }
            write(path, &stored)?;
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dirs {
        _tmp: tempfile::TempDir,
        data: PathBuf,
        store: PathBuf,
    }

    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().to_path_buf();
        let store = data.join("store");
        std::fs::create_dir(&store).unwrap();
        Dirs {
            _tmp: tmp,
            data,
            store,
        }
    }

    fn copies(d: &Dirs) -> (String, String) {
        (
            std::fs::read_to_string(d.data.join(ID_FILE)).unwrap(),
            std::fs::read_to_string(d.store.join(ID_FILE)).unwrap(),
        )
    }

    #[test]
    fn a_data_directory_keeps_its_binding_and_a_damaged_one_is_replaced() {
        let d = dirs();
        std::fs::create_dir_all(&d.store).unwrap();
        let first = binding_nonce(&d.store).unwrap();
        assert_eq!(binding_nonce(&d.store).unwrap(), first);
        std::fs::write(d.store.join(BINDING_FILE), b"0123").unwrap();
        let second = binding_nonce(&d.store).unwrap();
        assert_ne!(second, first);
        assert_eq!(binding_nonce(&d.store).unwrap(), second);
        let other = dirs();
        std::fs::create_dir_all(&other.store).unwrap();
        assert_ne!(binding_nonce(&other.store).unwrap(), second);
    }

    #[test]
    fn a_data_directory_keeps_its_node_id() {
        let d = dirs();
        assert_eq!(resolve(&d.data, &d.store, "a", false, false).unwrap(), "a");
        assert_eq!(copies(&d), ("a\n".into(), "a\n".into()));
        // A default id gives way to the stored one; an explicit one is refused.
        assert_eq!(resolve(&d.data, &d.store, "b", false, true).unwrap(), "a");
        let err = resolve(&d.data, &d.store, "b", true, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to node a"), "{err}");
        assert_eq!(resolve(&d.data, &d.store, "a", true, true).unwrap(), "a");
    }

    #[test]
    fn a_damaged_copy_is_rewritten_from_the_intact_one() {
        for damage in [&b""[..], b"nod", b"node-1", b"\xff\xfe\n", b"a b\n"] {
            for which in [ID_FILE, "store/node-id"] {
                let d = dirs();
                resolve(&d.data, &d.store, "node-1", false, false).unwrap();
                std::fs::write(d.data.join(which), damage).unwrap();
                assert_eq!(
                    resolve(&d.data, &d.store, "node-9", false, true).unwrap(),
                    "node-1",
                    "{damage:?} in {which}"
                );
                assert_eq!(copies(&d), ("node-1\n".into(), "node-1\n".into()));
            }
        }
        // An old directory with only the first copy gains the second.
        let d = dirs();
        std::fs::write(d.data.join(ID_FILE), b"old\n").unwrap();
        assert_eq!(resolve(&d.data, &d.store, "x", false, true).unwrap(), "old");
        assert_eq!(copies(&d), ("old\n".into(), "old\n".into()));
    }

    #[test]
    fn without_an_intact_copy_the_id_is_never_guessed() {
        let d = dirs();
        std::fs::write(d.data.join(ID_FILE), b"").unwrap();
        let err = resolve(&d.data, &d.store, "node-2", false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("node-id is damaged: it is empty"), "{err}");
        assert!(err.contains("--node-id ID"), "{err}");
        std::fs::write(d.store.join(ID_FILE), b"node-").unwrap();
        let err = resolve(&d.data, &d.store, "node-2", false, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not end with a newline"), "{err}");
        // Nothing was rewritten by the refusals.
        assert_eq!(std::fs::read(d.data.join(ID_FILE)).unwrap(), b"");
        // --node-id restores both copies.
        assert_eq!(
            resolve(&d.data, &d.store, "node-2", true, true).unwrap(),
            "node-2"
        );
        assert_eq!(copies(&d), ("node-2\n".into(), "node-2\n".into()));
        // A store with data and no id at all is refused too.
        let d = dirs();
        let err = resolve(&d.data, &d.store, "node-3", false, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds a store with data"), "{err}");
    }

    #[test]
    fn two_intact_copies_that_disagree_are_refused() {
        let d = dirs();
        std::fs::write(d.data.join(ID_FILE), b"a\n").unwrap();
        std::fs::write(d.store.join(ID_FILE), b"b\n").unwrap();
        let err = resolve(&d.data, &d.store, "a", false, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("node a") && err.contains("says b"), "{err}");
    }
}
