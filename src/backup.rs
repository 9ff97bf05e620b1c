//! Backup and restore of one node's store: the `BACKUP` sessions a node
//! serves, the `db backup` client that copies a snapshot into a directory
//! with a checksummed manifest, and `db restore`, which verifies a backup
//! and prepares a data directory from it.
//!
//! A backup is a point-in-time snapshot of the log segments
//! ([`crate::storage::log::Snapshot`]: the closed segments and the active one
//! up to a recorded length, pinned against compaction while they are
//! copied) plus the metadata files a node needs to start as the same node:
//! `store/FORMAT`, `store/EPOCH`, both copies of `node-id`, `store/node-binding`
//! and `layout`. Hints (copies kept for other nodes) are not backed up:
//! restored, they would be old state handed off as if current. The backup
//! directory holds those files under their data-directory paths and a
//! `MANIFEST` (written last) giving each file's length, CRC32 and SHA-256,
//! and a CRC32 of the manifest itself.
//!
//! A restored store is an old state: [`restore`] leaves `store/RESTORED`.
//! While it exists each start takes a new vector-clock epoch
//! ([`crate::epoch::resolve`]), so the node never makes a dot it made after
//! the backup again, and the node answers no read from its copies until
//! anti-entropy has compared each partition with a peer
//! ([`crate::replica::CatchUp`], which then removes the marker). Merges with
//! the cluster's newer copies supersede what the backup holds; see
//! docs/operations.md, "Backup and restore", for the limits.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::Digest as _;

use crate::storage::log::Snapshot;

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "MANIFEST";
/// The first line of a manifest.
const HEADER: &str = "distro-db backup, format 1";
/// The marker `db restore` leaves in `store/`: the next start takes a new epoch.
pub const RESTORED_MARKER: &str = "RESTORED";
/// Largest chunk one `BACKUP READ` returns.
pub const MAX_CHUNK: usize = 4 << 20;
/// Chunk size the client asks for.
const CHUNK: usize = 1 << 20;
/// A session nobody read from for this long is dropped (its pins released).
const IDLE: Duration = Duration::from_secs(120);
/// Sessions a node keeps at once.
const MAX_SESSIONS: usize = 4;

/// Files of the data directory (outside `store/`) a backup carries.
const DATA_FILES: &[&str] = &[
    crate::identity::ID_FILE,
    crate::cluster::steward::LAYOUT_FILE,
];

/// One backup being taken from this node.
struct Session {
    snap: Arc<Snapshot>,
    /// Data-directory files read at the start: name and content.
    extra: Arc<Vec<(String, Vec<u8>)>>,
    used: Instant,
}

/// The backup sessions of a node (`BACKUP START/READ/END`).
#[derive(Default)]
pub struct Backups {
    sessions: Mutex<HashMap<u64, Session>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups").finish_non_exhaustive()
    }
}

/// What `BACKUP START` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The session id.
    pub id: u64,
    /// The files and their lengths.
    pub files: Vec<(String, u64)>,
}

impl Backups {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session over `snap`, with the data-directory files of `data_dir`.
    pub fn start(&self, snap: Snapshot, data_dir: &Path) -> Result<Started, String> {
        let mut extra = Vec::new();
        for name in DATA_FILES {
            match std::fs::read(data_dir.join(name)) {
                Ok(bytes) => extra.push((name.to_string(), bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot read {name}: {e}")),
            }
        }
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.used.elapsed() < IDLE);
        if sessions.len() >= MAX_SESSIONS {
            return Err(format!(
                "{MAX_SESSIONS} backups are already being taken from this node; try again later"
            ));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let files = extra
            .iter()
            .map(|(n, b)| (n.clone(), b.len() as u64))
            .chain(
                snap.files()
                    .into_iter()
                    .map(|(n, len)| (format!("store/{n}"), len)),
            )
            .collect();
        sessions.insert(
            id,
            Session {
                snap: Arc::new(snap),
                extra: Arc::new(extra),
                used: Instant::now(),
            },
        );
        Ok(Started { id, files })
    }

    /// Reads up to `max` bytes (at most [`MAX_CHUNK`]) of `name` from `offset`.
    pub async fn read(
        &self,
        id: u64,
        name: &str,
        offset: u64,
        max: usize,
    ) -> Result<Vec<u8>, String> {
        let (snap, extra) = {
            let mut sessions = self.sessions();
            let s = sessions.get_mut(&id).ok_or_else(|| {
                format!("no backup session {id} (it ended or was idle for {IDLE:?})")
            })?;
            s.used = Instant::now();
            (s.snap.clone(), s.extra.clone())
        };
        let max = max.min(MAX_CHUNK);
        if let Some((_, bytes)) = extra.iter().find(|(n, _)| n == name) {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            return Ok(bytes[start..start.saturating_add(max).min(bytes.len())].to_vec());
        }
        let Some(inner) = name.strip_prefix("store/") else {
            return Err(format!("{name} is not a file of this backup"));
        };
        let inner = inner.to_string();
        tokio::task::spawn_blocking(move || snap.read(&inner, offset, max))
            .await
            .map_err(|e| format!("read task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// Ends a session (its segments are unpinned).
    pub fn end(&self, id: u64) -> bool {
        self.sessions().remove(&id).is_some()
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.sessions().len()
    }
}

/// The text `BACKUP START` answers.
pub fn started_text(s: &Started, node: &str, epoch: u64, now_ms: u64) -> String {
    let mut out = format!(
        "id {}\nnode {node}\nepoch {epoch:016x}\ntaken-ms {now_ms}\n",
        s.id
    );
    for (name, len) in &s.files {
        out.push_str(&format!("file {name} {len}\n"));
    }
    out
}

/// A file name a backup may hold: `NAME` or `store/NAME`, where NAME is
/// letters, digits, `.`, `-` and `_` and not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    let base = name.strip_prefix("store/").unwrap_or(name);
    !base.is_empty()
        && base != "."
        && base != ".."
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the backup (and data) directory.
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// CRC32 (IEEE) of the content.
    pub crc32: u32,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
}

/// A backup's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The node backed up.
    pub node: String,
    /// Its epoch when the backup was taken.
    pub epoch: u64,
    /// When the snapshot was taken (ms since the Unix epoch, node clock).
    pub taken_ms: u64,
    /// The files.
    pub files: Vec<Entry>,
}

impl Manifest {
    /// The manifest as text, ending in its own checksum line.
    pub fn to_text(&self) -> String {
        let mut body = format!(
            "{HEADER}\nnode {}\nepoch {:016x}\ntaken-ms {}\n",
            self.node, self.epoch, self.taken_ms
        );
        for f in &self.files {
            body.push_str(&format!(
                "file {} {} {:08x} {}\n",
                f.name, f.len, f.crc32, f.sha256
            ));
        }
        let crc = crc32fast::hash(body.as_bytes());
        body.push_str(&format!("check {crc:08x}\n"));
        body
    }

    /// Parses a manifest; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let Some(check_at) = text.rfind("check ") else {
            return Err("it has no check line (cut short?)".into());
        };
        let (body, check) = text.split_at(check_at);
        let want = check
            .trim_end()
            .strip_prefix("check ")
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .ok_or("its check line is damaged")?;
        if crc32fast::hash(body.as_bytes()) != want {
            return Err("its checksum does not match its content (damaged or edited)".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("it does not start with '{HEADER}'"));
        }
        let mut m = Manifest {
            node: String::new(),
            epoch: 0,
            taken_ms: 0,
            files: Vec::new(),
        };
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            let bad = || format!("bad line '{line}'");
            match words.as_slice() {
                ["node", id] => m.node = id.to_string(),
                ["epoch", e] => m.epoch = u64::from_str_radix(e, 16).map_err(|_| bad())?,
                ["taken-ms", t] => m.taken_ms = t.parse().map_err(|_| bad())?,
                ["file", name, len, crc, sha] => {
                    if !valid_name(name) {
                        return Err(format!("file name '{name}' is not allowed"));
                    }
                    m.files.push(Entry {
                        name: name.to_string(),
                        len: len.parse().map_err(|_| bad())?,
                        crc32: u32::from_str_radix(crc, 16).map_err(|_| bad())?,
                        sha256: sha.to_string(),
                    });
                }
                _ => return Err(bad()),
            }
        }
        if m.node.is_empty() {
            return Err("it names no node".into());
        }
        Ok(m)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A directory that does not exist or is empty (else an error naming it).
fn empty_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{what} {} is not empty; give a new or empty directory (nothing was changed)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", dir.display()))),
    }
}

/// A connection to `addr` for a tool, authenticated with the credentials
/// of the environment (`DISTRO_DB_PASSWORD`, `--user` or `DISTRO_DB_USER`).
pub fn connect(addr: &str, user: Option<&str>) -> anyhow::Result<crate::client::Client> {
    let mut client = crate::client::Client::connect(addr)
        .with_context(|| format!("cannot connect to {addr}"))?;
    if let Some(creds) = crate::client::credentials_from_env(user).map_err(anyhow::Error::msg)? {
        client.auth_as(&creds).context("AUTH failed")?;
    }
    Ok(client)
}

/// What a backup or restore did, for the tool's summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The node backed up.
    pub node: String,
    /// Files copied.
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl Summary {
    /// What `db backup` prints.
    pub fn backed_up(&self, addr: &str, out: &Path) -> String {
        format!(
            "backed up {} from {addr}: {} files, {} bytes in {:.1} s, into {}",
            self.node,
            self.files,
            self.bytes,
            self.elapsed.as_secs_f64(),
            out.display()
        )
    }

    /// What `db restore` prints.
    pub fn restored(&self, data_dir: &Path) -> String {
        let d = data_dir.display();
        format!(
            "verified and restored the backup of {} ({} files, {} bytes) into {d}; start it with \
             `db node --data-dir {d} --listen ADDR --seed PEER ...` (it takes a new vector-clock epoch)",
            self.node, self.files, self.bytes
        )
    }
}

/// `db backup`: copies a snapshot of the node at `addr` into `out` (which
/// must be new or empty), then writes the manifest.
pub fn backup(addr: &str, out: &Path, user: Option<&str>) -> anyhow::Result<Summary> {
    use crate::resp::Frame;
    let started = Instant::now();
    empty_dir(out, "backup directory")?;
    let mut client = connect(addr, user)?;
    let text = match client.call(&["BACKUP", "START"]).context("BACKUP START")? {
        Frame::Bulk(b) => String::from_utf8(b).context("BACKUP START answered non-UTF-8")?,
        Frame::Error(e) => bail!("{addr} refused the backup: {e}"),
        other => bail!("unexpected answer to BACKUP START: {other:?}"),
    };
    let mut id = None;
    let mut manifest = Manifest {
        node: String::new(),
        epoch: 0,
        taken_ms: 0,
        files: Vec::new(),
    };
    let mut listed = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["id", i] => id = i.parse::<u64>().ok(),
            ["node", n] => manifest.node = n.to_string(),
            ["epoch", e] => manifest.epoch = u64::from_str_radix(e, 16).unwrap_or(0),
            ["taken-ms", t] => manifest.taken_ms = t.parse().unwrap_or(0),
            ["file", name, len] if valid_name(name) => {
                listed.push((
                    name.to_string(),
                    len.parse::<u64>().context("bad file length")?,
                ));
            }
            _ => bail!("unexpected line in the answer to BACKUP START: '{line}'"),
        }
    }
    let id = id.context("BACKUP START gave no session id")?.to_string();
    crate::durable::create_dir_all(&out.join("store"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let copied = (|| -> anyhow::Result<u64> {
        let mut total = 0;
        for (name, len) in &listed {
            let path = out.join(name);
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let (mut crc, mut sha) = (crc32fast::Hasher::new(), sha2::Sha256::new());
            let mut at = 0u64;
            while at < *len {
                let want = (*len - at).min(CHUNK as u64).to_string();
                let chunk = match client
                    .call(&["BACKUP", "READ", &id, name, &at.to_string(), &want])
                    .with_context(|| format!("reading {name}"))?
                {
                    Frame::Bulk(b) if !b.is_empty() => b,
                    Frame::Bulk(_) => bail!("{name} ended at {at} bytes, before its {len}"),
                    Frame::Error(e) => bail!("reading {name}: {e}"),
                    other => bail!("unexpected answer reading {name}: {other:?}"),
                };
                file.write_all(&chunk)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                crc.update(&chunk);
                sha.update(&chunk);
                at += chunk.len() as u64;
            }
            file.sync_all()
                .with_context(|| format!("cannot sync {}", path.display()))?;
            manifest.files.push(Entry {
                name: name.clone(),
                len: *len,
                crc32: crc.finalize(),
                sha256: hex(&sha.finalize()),
            });
            total += len;
        }
        Ok(total)
    })();
    // End the session whatever happened (an idle one expires anyway).
    let _ = client.call(&["BACKUP", "END", &id]);
    let bytes = copied?;
    crate::durable::sync_dir(&out.join("store"))?;
    crate::durable::write_atomic(&out.join(MANIFEST), manifest.to_text().as_bytes())
        .with_context(|| format!("cannot write the manifest in {}", out.display()))?;
    Ok(Summary {
        node: manifest.node,
        files: manifest.files.len(),
        bytes,
        elapsed: started.elapsed(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks every file of the backup in `from` against its manifest; returns
/// the manifest. The error names the file and what is wrong.
pub fn verify(from: &Path) -> anyhow::Result<Manifest> {
    let path = from.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8(b).map_err(|_| {
            anyhow::anyhow!("{} is not a backup manifest (not text)", path.display())
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} has no {MANIFEST}: not a backup directory, or the backup did not finish",
            from.display()
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())));
        }
    };
    let manifest = Manifest::parse(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid manifest: {e}", path.display()))?;
    for f in &manifest.files {
        let p = from.join(&f.name);
        let mut file = std::fs::File::open(&p)
            .with_context(|| format!("backup file {} is missing or unreadable", p.display()))?;
        let (mut crc, mut sha, mut len) = (crc32fast::Hasher::new(), sha2::Sha256::new(), 0u64);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", p.display()))?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            sha.update(&buf[..n]);
            len += n as u64;
        }
        if len != f.len {
            bail!(
                "backup file {} has {len} bytes where the manifest says {}: the backup is damaged",
                p.display(),
                f.len
            );
        }
        if crc.finalize() != f.crc32 || hex(&sha.finalize()) != f.sha256 {
            bail!(
                "backup file {} does not match its checksum in the manifest: the backup is damaged",
                p.display()
            );
        }
    }
    if !manifest.files.iter().any(|f| f.name == "store/FORMAT") {
        bail!("the manifest lists no store/FORMAT: not a backup of a durable node");
    }
    Ok(manifest)
}

/// What [`restore`] needs.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup directory.
    pub from: PathBuf,
    /// The data directory to prepare (new or empty).
    pub data_dir: PathBuf,
    /// Refuse a backup older than this (the cluster's tombstone grace
    /// period), unless `accept_old`.
    pub max_age: Duration,
    /// Restore even a backup older than `max_age`.
    pub accept_old: bool,
}

/// `db restore`: verifies the backup, then copies it into a new data
/// directory with the marker that makes the node take a new epoch.
pub fn restore(o: &RestoreOptions) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let manifest = verify(&o.from)?;
    let age = Duration::from_millis(now_ms().saturating_sub(manifest.taken_ms));
    if age > o.max_age && !o.accept_old {
        bail!(
            "the backup is {} s old, older than the tombstone grace period ({} s): deletes made since \
             may have been collected everywhere, and restoring it could bring deleted keys back. \
             Pass --accept-old to restore it anyway",
            age.as_secs(),
            o.max_age.as_secs()
        );
    }
    empty_dir(&o.data_dir, "data directory")?;
    let store = o.data_dir.join("store");
    crate::durable::create_dir_all(&store)
        .with_context(|| format!("cannot create {}", store.display()))?;
    let mut bytes = 0;
    for f in &manifest.files {
        let src = o.from.join(&f.name);
        let dst = o.data_dir.join(&f.name);
        let tmp = crate::durable::tmp_path(&dst);
        std::fs::copy(&src, &tmp)
            .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("cannot rename {}", tmp.display()))?;
        bytes += f.len;
    }
    let marker = format!(
        "restored from a backup of {} taken at {} ms (epoch {:016x})\n",
        manifest.node, manifest.taken_ms, manifest.epoch
    );
    crate::durable::write_atomic(&store.join(RESTORED_MARKER), marker.as_bytes())?;
    crate::durable::sync_dir(&store)?;
    crate::durable::sync_dir(&o.data_dir)?;
    let summary = Summary {
        node: manifest.node,
        files: manifest.files.len(),
        bytes,
        elapsed: started.elapsed(),
    };
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            node: "n1".into(),
            epoch: 0x1234,
            taken_ms: 99,
            files: vec![Entry {
                name: "store/0000000000100000.seg".into(),
                len: 3,
                crc32: crc32fast::hash(b"abc"),
                sha256: hex(&sha2::Sha256::digest(b"abc")),
            }],
        }
    }

    #[test]
    fn a_manifest_round_trips_and_any_edit_is_refused() {
        let m = sample();
        let text = m.to_text();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let edited = text.replace(" 3 ", " 4 ");
        assert!(Manifest::parse(&edited).unwrap_err().contains("checksum"));
        let cut = &text[..text.len() - 16];
        assert!(Manifest::parse(cut).is_err());
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for ok in [
            "store/FORMAT",
            "layout",
            "node-id",
            "store/0000000000100000.seg",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "../x",
            "store/../x",
            "/etc/passwd",
            "store/",
            "a/b",
            "..",
            "store/..",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn verify_names_the_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        let mut m = sample();
        m.files.push(Entry {
            name: "store/FORMAT".into(),
            len: 1,
            crc32: crc32fast::hash(b"f"),
            sha256: hex(&sha2::Sha256::digest(b"f")),
        });
        std::fs::write(dir.path().join("store/0000000000100000.seg"), b"abc").unwrap();
        std::fs::write(dir.path().join("store/FORMAT"), b"f").unwrap();
        std::fs::write(dir.path().join(MANIFEST), m.to_text()).unwrap();
        verify(dir.path()).unwrap();
        std::fs::write(dir.path().join("store/0000000000100000.seg"), b"abd").unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("0000000000100000.seg") && err.contains("checksum"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("store/0000000000100000.seg")).unwrap();
        let err = format!("{:#}", verify(dir.path()).unwrap_err());
        assert!(err.contains("missing"), "{err}");
        let err = verify(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("no MANIFEST"), "{err}");
    }
}
