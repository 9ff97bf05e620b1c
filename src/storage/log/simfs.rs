//! A simulated file system for power-cut tests (test builds only). It
//! implements [`Fs`] in memory and keeps, per file, the bytes a disk holds
//! for certain (`durable`: as of the last completed `fdatasync`/`fsync`)
//! besides what reads see, and, per directory, the durable entries besides
//! the current ones. It follows the rules written down in [`super::vfs`]:
//! data is durable only after a sync of that file, an entry change only
//! after a sync of its directory.
//!
//! [`SimFs::cut_power_after`] arms a cut at the n-th state-changing
//! operation (writes, truncations, syncs, creations, renames, removals,
//! `mkdir`): that operation and every later one fail with `EIO`, as on a
//! machine that lost power. [`SimFs::power_cut`] then builds what the disk
//! holds after the reboot, in one of the [`Cut`] modes, and returns a new
//! handle for the next "boot"; handles and files of the old one keep
//! failing, so the threads of the dead store cannot touch the new state.
//! Cross-directory renames are refused (the store never makes one).

use std::collections::{BTreeMap, HashMap};
use std::io::{Error, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use super::vfs::{Fs, FsFile};
use crate::storage::StoreError;

/// What survives of the changes not covered by a completed sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Nothing unsynced survives.
    Clean,
    /// Per file, a random prefix of its unsynced writes survives in order,
    /// the last one torn (a random prefix of its bytes); per directory, a
    /// random prefix of its unsynced entry changes.
    Torn,
    /// Like `Torn`, and a file that grew without a sync may also come back
    /// longer, with zeros or garbage where the lost bytes were.
    TornJunk,
}

#[derive(Debug, Clone)]
enum WriteOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl WriteOp {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            WriteOp::Write { offset, bytes } => {
                let (o, end) = (*offset as usize, *offset as usize + bytes.len());
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[o..end].copy_from_slice(bytes);
            }
            WriteOp::SetLen(n) => data.resize(*n as usize, 0),
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What the disk holds for certain.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<WriteOp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, Entry),
    Unlink(String),
    Rename(String, String),
}

impl DirOp {
    fn apply(&self, map: &mut BTreeMap<String, Entry>) {
        match self {
            DirOp::Link(n, e) => {
                map.insert(n.clone(), *e);
            }
            DirOp::Unlink(n) => {
                map.remove(n);
            }
            DirOp::Rename(a, b) => {
                if let Some(e) = map.remove(a) {
                    map.insert(b.clone(), e);
                }
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Dir {
    now: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
    pending: Vec<DirOp>,
}

/// Counters of what the store asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SimStats {
    /// `fdatasync`/`fsync` calls on files that completed.
    pub file_syncs: u64,
    /// Directory fsyncs that completed.
    pub dir_syncs: u64,
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Bumped by every power cut; older handles fail.
    generation: u64,
    /// State-changing operations this generation.
    ops: u64,
    cut_at: Option<u64>,
    dead: bool,
    locks: Vec<PathBuf>,
    stats: SimStats,
    /// While true, file syncs wait (a test holds the syncer mid-sync).
    hold_syncs: bool,
    syncs_held: usize,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    released: Condvar,
}

/// The simulated file system (a cheap handle; clones share the disk).
#[derive(Debug, Clone)]
pub(crate) struct SimFs {
    shared: Arc<Shared>,
    generation: u64,
}

fn eio(what: &str) -> Error {
    Error::other(format!("simulated power loss: {what}"))
}

fn split(path: &Path) -> std::io::Result<(PathBuf, String)> {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no file name"))?;
    Ok((parent, name.to_string()))
}

impl State {
    /// Fails a call of a stale handle or after the cut; counts a
    /// state-changing call and cuts the power when its turn comes.
    fn check(&mut self, generation: u64, mutates: bool) -> std::io::Result<()> {
        if generation != self.generation {
            return Err(eio("handle from before the power cut"));
        }
        if self.dead {
            return Err(eio("the power is off"));
        }
        if mutates {
            self.ops += 1;
            if self.cut_at.is_some_and(|c| self.ops >= c) {
                self.dead = true;
                return Err(eio("the power went off during this call"));
            }
        }
        Ok(())
    }

    fn dir(&mut self, path: &Path) -> std::io::Result<&mut Dir> {
        self.dirs.get_mut(path).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no directory {}", path.display()),
            )
        })
    }

    fn lookup(&self, path: &Path) -> std::io::Result<u64> {
        let (parent, name) = split(path)?;
        match self.dirs.get(&parent).and_then(|d| d.now.get(&name)) {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(Error::new(ErrorKind::IsADirectory, "is a directory")),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("no file {}", path.display()),
            )),
        }
    }

    fn link_new(&mut self, path: &Path) -> std::io::Result<u64> {
        let (parent, name) = split(path)?;
        let ino = self.next_ino;
        let dir = self.dir(&parent)?;
        if dir.now.contains_key(&name) {
            return Err(Error::new(ErrorKind::AlreadyExists, "exists"));
        }
        dir.now.insert(name.clone(), Entry::File(ino));
        dir.pending.push(DirOp::Link(name, Entry::File(ino)));
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        Ok(ino)
    }

    fn inode(&mut self, ino: u64) -> std::io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "no inode"))
    }
}

impl SimFs {
    /// An empty disk with just the root directory.
    pub(crate) fn new() -> SimFs {
        let fs = SimFs {
            shared: Arc::default(),
            generation: 0,
        };
        fs.lock().dirs.insert(PathBuf::from("/"), Dir::default());
        fs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power at the `n`-th state-changing operation from now
    /// (1 = the next one).
    pub(crate) fn cut_power_after(&self, n: u64) {
        let mut st = self.lock();
        st.cut_at = Some(st.ops + n.max(1));
    }

    /// State-changing operations made since the last boot.
    pub(crate) fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// True once an armed cut has happened.
    pub(crate) fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// What the store asked for so far (across boots).
    pub(crate) fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// Bytes of `path` that a power cut now would certainly keep, and its
    /// current length.
    pub(crate) fn durable_len(&self, path: &Path) -> Option<(u64, u64)> {
        let mut st = self.lock();
        let ino = st.lookup(path).ok()?;
        let i = st.inode(ino).ok()?;
        Some((i.durable.len() as u64, i.data.len() as u64))
    }

    /// While `hold` is true, file syncs wait before they start (at most
    /// 30 s each); [`SimFs::syncs_held`] tells how many wait.
    pub(crate) fn hold_syncs(&self, hold: bool) {
        self.lock().hold_syncs = hold;
        self.shared.released.notify_all();
    }

    /// File syncs waiting because of [`SimFs::hold_syncs`].
    pub(crate) fn syncs_held(&self) -> usize {
        self.lock().syncs_held
    }

    /// The power goes off now (if it has not already) and comes back: the
    /// disk keeps what `cut` says of the unsynced changes, chosen with `rng`.
    /// Returns the handle to boot from.
    pub(crate) fn power_cut(&self, rng: &mut impl Rng, cut: Cut) -> SimFs {
        let mut st = self.lock();
        let partial = cut != Cut::Clean;
        // Directories: the durable entries plus a prefix of the pending.
        let mut dirs: BTreeMap<PathBuf, Dir> = BTreeMap::new();
        for (path, d) in &st.dirs {
            let mut entries = d.durable.clone();
            let keep = if partial {
                rng.random_range(0..=d.pending.len())
            } else {
                0
            };
            for op in &d.pending[..keep] {
                op.apply(&mut entries);
            }
            dirs.insert(
                path.clone(),
                Dir {
                    now: entries.clone(),
                    durable: entries,
                    pending: Vec::new(),
                },
            );
        }
        // A directory whose own entry did not survive is gone, with all in it.
        let paths: Vec<PathBuf> = dirs.keys().cloned().collect();
        for p in paths {
            let Some(parent) = p.parent() else { continue };
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let kept = dirs
                .get(parent)
                .is_some_and(|d| d.now.get(name) == Some(&Entry::Dir));
            if !kept {
                dirs.remove(&p);
            }
        }
        // Files: the durable bytes plus a prefix of the pending writes.
        for inode in st.inodes.values_mut() {
            let mut data = std::mem::take(&mut inode.durable);
            if partial && !inode.pending.is_empty() {
                let keep = rng.random_range(0..=inode.pending.len());
                for (i, op) in inode.pending[..keep].iter().enumerate() {
                    match op {
                        WriteOp::Write { offset, bytes } if i + 1 == keep => {
                            let torn = rng.random_range(0..=bytes.len());
                            WriteOp::Write {
                                offset: *offset,
                                bytes: bytes[..torn].to_vec(),
                            }
                            .apply(&mut data);
                        }
                        op => op.apply(&mut data),
                    }
                }
                if cut == Cut::TornJunk && inode.data.len() > data.len() && rng.random_bool(0.5) {
                    let extra = rng.random_range(1..=(inode.data.len() - data.len()).min(64));
                    let zeros = rng.random_bool(0.5);
                    for _ in 0..extra {
                        data.push(if zeros { 0 } else { rng.random() });
                    }
                }
            }
            inode.data = data.clone();
            inode.durable = data;
            inode.pending.clear();
        }
        st.dirs = dirs;
        st.generation += 1;
        st.ops = 0;
        st.cut_at = None;
        st.dead = false;
        st.locks.clear();
        SimFs {
            shared: self.shared.clone(),
            generation: st.generation,
        }
    }
}

/// An open file of a [`SimFs`].
#[derive(Debug)]
pub(crate) struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl SimFile {
    fn with<T>(
        &self,
        mutates: bool,
        f: impl FnOnce(&mut Inode) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut st = self.fs.lock();
        st.check(self.fs.generation, mutates)?;
        f(st.inode(self.ino)?)
    }

    fn sync(&self) -> std::io::Result<()> {
        let mut st = self.fs.lock();
        st.check(self.fs.generation, false)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while st.hold_syncs && Instant::now() < deadline {
            st.syncs_held += 1;
            st = self
                .fs
                .shared
                .released
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            st.syncs_held -= 1;
        }
        st.check(self.fs.generation, true)?;
        let inode = st.inode(self.ino)?;
        inode.durable.clone_from(&inode.data);
        inode.pending.clear();
        st.stats.file_syncs += 1;
        Ok(())
    }
}

impl FsFile for SimFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.with(true, |i| {
            let op = WriteOp::Write {
                offset,
                bytes: buf.to_vec(),
            };
            op.apply(&mut i.data);
            i.pending.push(op);
            Ok(())
        })
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.with(false, |i| {
            let src = usize::try_from(offset)
                .ok()
                .and_then(|o| i.data.get(o..o.checked_add(buf.len())?))
                .ok_or_else(|| Error::new(ErrorKind::UnexpectedEof, "read past the end"))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }
    fn size(&self) -> std::io::Result<u64> {
        self.with(false, |i| Ok(i.data.len() as u64))
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.with(true, |i| {
            let op = WriteOp::SetLen(len);
            op.apply(&mut i.data);
            i.pending.push(op);
            Ok(())
        })
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.sync()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.sync()
    }
}

/// The directory lock of a [`SimFs`] (void after a power cut).
#[derive(Debug)]
pub(crate) struct SimLock {
    fs: SimFs,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.generation == self.fs.generation {
            st.locks.retain(|d| d != &self.dir);
        }
    }
}

impl Fs for SimFs {
    type File = SimFile;
    type Lock = SimLock;
    fn create_new(&self, path: &Path) -> std::io::Result<SimFile> {
        let mut st = self.lock();
        st.check(self.generation, true)?;
        let ino = st.link_new(path)?;
        Ok(SimFile {
            fs: self.clone(),
            ino,
        })
    }
    fn create(&self, path: &Path) -> std::io::Result<SimFile> {
        let mut st = self.lock();
        st.check(self.generation, true)?;
        let ino = match st.lookup(path) {
            Ok(ino) => {
                let i = st.inode(ino)?;
                i.data.clear();
                i.pending.push(WriteOp::SetLen(0));
                ino
            }
            Err(e) if e.kind() == ErrorKind::NotFound => st.link_new(path)?,
            Err(e) => return Err(e),
        };
        Ok(SimFile {
            fs: self.clone(),
            ino,
        })
    }
    fn open(&self, path: &Path) -> std::io::Result<SimFile> {
        let mut st = self.lock();
        st.check(self.generation, false)?;
        let ino = st.lookup(path)?;
        Ok(SimFile {
            fs: self.clone(),
            ino,
        })
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut st = self.lock();
        st.check(self.generation, false)?;
        let ino = st.lookup(path)?;
        Ok(st.inode(ino)?.data.clone())
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let (pa, a) = split(from)?;
        let (pb, b) = split(to)?;
        if pa != pb {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the simulation renames within one directory only",
            ));
        }
        let mut st = self.lock();
        st.check(self.generation, true)?;
        let dir = st.dir(&pa)?;
        let e = dir
            .now
            .remove(&a)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such file"))?;
        dir.now.insert(b.clone(), e);
        dir.pending.push(DirOp::Rename(a, b));
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        let (parent, name) = split(path)?;
        let mut st = self.lock();
        st.check(self.generation, true)?;
        let dir = st.dir(&parent)?;
        match dir.now.get(&name) {
            Some(Entry::File(_)) => {
                dir.now.remove(&name);
                dir.pending.push(DirOp::Unlink(name));
                Ok(())
            }
            Some(Entry::Dir) => Err(Error::new(ErrorKind::IsADirectory, "is a directory")),
            None => Err(Error::new(ErrorKind::NotFound, "no such file")),
        }
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut st = self.lock();
        st.check(self.generation, true)?;
        let d = st.dir(dir)?;
        d.durable = d.now.clone();
        d.pending.clear();
        st.stats.dir_syncs += 1;
        Ok(())
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut st = self.lock();
        st.check(self.generation, false)?;
        Ok(st.dir(dir)?.now.keys().cloned().collect())
    }
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        let (parent, name) = split(dir)?;
        let mut st = self.lock();
        st.check(self.generation, true)?;
        let p = st.dir(&parent)?;
        if p.now.contains_key(&name) {
            return Err(Error::new(ErrorKind::AlreadyExists, "exists"));
        }
        p.now.insert(name.clone(), Entry::Dir);
        p.pending.push(DirOp::Link(name, Entry::Dir));
        st.dirs.insert(dir.to_path_buf(), Dir::default());
        Ok(())
    }
    fn is_dir(&self, dir: &Path) -> bool {
        let st = self.lock();
        st.generation == self.generation && st.dirs.contains_key(dir)
    }
    fn lock_dir(&self, dir: &Path) -> Result<SimLock, StoreError> {
        let mut st = self.lock();
        st.check(self.generation, false)?;
        if st.locks.iter().any(|d| d == dir) {
            return Err(StoreError::Locked(dir.display().to_string()));
        }
        st.locks.push(dir.to_path_buf());
        Ok(SimLock {
            fs: self.clone(),
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn only_synced_data_and_synced_entries_survive_a_clean_cut() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        fs.create_dir(d).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        let f = fs.create_new(&d.join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b" world", 5).unwrap();
        // The entry of `a` was never made durable: the file is gone.
        let after = fs.power_cut(&mut rng(), Cut::Clean);
        assert!(after.open(&d.join("a")).is_err());
        assert!(f.size().is_err(), "old handles fail after the cut");

        let f = after.create_new(&d.join("b")).unwrap();
        after.sync_dir(d).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b" world", 5).unwrap();
        after.rename(&d.join("b"), &d.join("c")).unwrap();
        after.remove_file(&d.join("c")).unwrap();
        let again = after.power_cut(&mut rng(), Cut::Clean);
        assert_eq!(again.read(&d.join("b")).unwrap(), b"hello");
        assert!(again.read(&d.join("c")).is_err());
    }

    #[test]
    fn an_armed_cut_fails_that_operation_and_every_later_one() {
        let fs = SimFs::new();
        let f = fs.create_new(Path::new("/x")).unwrap();
        fs.cut_power_after(2);
        f.write_all_at(b"1", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(f.write_all_at(b"2", 1).is_err());
        assert!(fs.is_dead());
        let fs = fs.power_cut(&mut rng(), Cut::Clean);
        assert!(!fs.is_dead());
        // The file's entry was never synced.
        assert!(fs.open(Path::new("/x")).is_err());
    }

    #[test]
    fn a_torn_cut_keeps_a_prefix_of_the_unsynced_writes() {
        for seed in 0..200 {
            let fs = SimFs::new();
            let f = fs.create_new(Path::new("/x")).unwrap();
            fs.sync_dir(Path::new("/")).unwrap();
            f.write_all_at(b"abc", 0).unwrap();
            f.sync_data().unwrap();
            f.write_all_at(b"defg", 3).unwrap();
            f.write_all_at(b"hij", 7).unwrap();
            let mut r = rand::rngs::StdRng::seed_from_u64(seed);
            let fs = fs.power_cut(&mut r, Cut::Torn);
            let got = fs.read(Path::new("/x")).unwrap();
            assert!(b"abcdefghij".starts_with(&got), "{got:?}");
            assert!(got.len() >= 3);
        }
    }
}
