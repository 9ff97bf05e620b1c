//! Active anti-entropy: Merkle trees over fixed ranges of the hash space,
//! exchanged between replicas so keys nobody reads still converge, and a node
//! whose data directory was wiped is refilled.
//!
//! The hash space is cut into [`PARTITIONS`] fixed ranges (the top 8 bits of
//! a key's hash), each into [`BUCKETS`] buckets (the next 6 bits), independent
//! of ring tokens (DESIGN: "anti-entropy units are fixed ranges"). For every
//! peer, a node keeps one two-level tree over the keys both of them replicate:
//! a bucket's hash is the XOR of `h(key, digest of the stored object)` over
//! its keys, so a write updates it in O(1); a partition's root is the hash of
//! its buckets. An exchange compares roots, then the buckets of differing
//! partitions, then the key digests of differing buckets, and syncs only the
//! keys that differ: both sides end with the merge of both copies.
//!
//! Trees are only a guide to where to look. A wrong tree costs a useless
//! comparison, never data: every sync is a merge. Trees are rebuilt from a
//! scan of the store when the ring changes. Each round is bounded
//! ([`MAX_PARTITIONS_PER_ROUND`], [`MAX_KEYS_PER_ROUND`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{debug, info, warn};
use xxhash_rust::xxh3::xxh3_64;

use crate::node::Node;
use crate::object::Object;
use crate::ring::{Ring, key_hash};
use crate::rpc::{Request, Response};

/// Fixed ranges of the hash space.
pub const PARTITIONS: usize = 256;
/// Buckets per partition.
pub const BUCKETS: usize = 64;
/// Partitions whose buckets are compared in one round with one peer.
const MAX_PARTITIONS_PER_ROUND: usize = 32;
/// Keys synced in one round with one peer (bandwidth bound).
const MAX_KEYS_PER_ROUND: usize = 2000;

fn partition_of(key: &[u8]) -> usize {
    (key_hash(key) >> 56) as usize
}

fn bucket_of(key: &[u8]) -> usize {
    ((key_hash(key) >> 50) & (BUCKETS as u64 - 1)) as usize
}

fn contribution(key: &[u8], digest: u64) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 8);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&digest.to_le_bytes());
    xxh3_64(&buf)
}

/// The digest of a stored object's bytes.
pub fn digest(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// One peer's tree: `PARTITIONS` x `BUCKETS` bucket hashes.
type Tree = Vec<[u64; BUCKETS]>;

struct State {
    ring: Arc<Ring>,
    n: usize,
    /// Digest of every locally stored key.
    digests: HashMap<Vec<u8>, u64>,
    /// Keys per partition.
    keys: Vec<BTreeSet<Vec<u8>>>,
    /// Peer id -> its tree.
    trees: HashMap<String, Tree>,
    /// While a rebuild scans the store: the digests recorded meanwhile,
    /// which override what the scan read.
    touched: Option<HashMap<Vec<u8>, u64>>,
}

/// A node's anti-entropy trees and figures.
pub struct Trees {
    self_id: String,
    state: Mutex<State>,
    /// Exchanges completed.
    pub rounds: AtomicU64,
    /// Keys found different and synced.
    pub keys_repaired: AtomicU64,
    /// Keys whose digests were compared with a peer.
    pub keys_compared: AtomicU64,
}

impl Trees {
    /// Empty trees for the node `self_id`.
    pub fn new(self_id: &str) -> Trees {
        Trees {
            self_id: self_id.to_string(),
            state: Mutex::new(State {
                ring: Arc::new(Ring::default()),
                n: 0,
                digests: HashMap::new(),
                keys: vec![BTreeSet::new(); PARTITIONS],
                trees: HashMap::new(),
                touched: None,
            }),
            rounds: AtomicU64::new(0),
            keys_repaired: AtomicU64::new(0),
            keys_compared: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peers that replicate `key` with this node (none if it is not an owner).
    fn peers_of<'a>(self_id: &str, ring: &'a Ring, n: usize, key: &[u8]) -> Vec<&'a str> {
        let owners = ring.preference_list(key, n);
        if !owners.contains(&self_id) {
            return Vec::new();
        }
        owners.into_iter().filter(|o| *o != self_id).collect()
    }

    /// Records that `key` is now stored as `bytes`.
    pub fn record(&self, key: &[u8], bytes: &[u8]) {
        self.record_digest(key, digest(bytes));
    }

    /// Records that `key` is now stored with this [`digest`].
    pub fn record_digest(&self, key: &[u8], new: u64) {
        let mut st = self.lock();
        if let Some(touched) = st.touched.as_mut() {
            touched.insert(key.to_vec(), new);
        }
        let old = st.digests.insert(key.to_vec(), new);
        if old == Some(new) {
            return;
        }
        let (p, b) = (partition_of(key), bucket_of(key));
        st.keys[p].insert(key.to_vec());
        let change = old.map_or(0, |d| contribution(key, d)) ^ contribution(key, new);
        let ring = st.ring.clone();
        for peer in Trees::peers_of(&self.self_id, &ring, st.n, key) {
            let tree = st
                .trees
                .entry(peer.to_string())
                .or_insert_with(|| vec![[0u64; BUCKETS]; PARTITIONS]);
            tree[p][b] ^= change;
        }
    }

    /// True when the trees were built for another ring or N.
    fn stale(&self, ring: &Arc<Ring>, n: usize) -> bool {
        let st = self.lock();
        !Arc::ptr_eq(&st.ring, ring) || st.n != n
    }

    /// Starts recording changes for a rebuild whose scan begins now.
    fn begin_rebuild(&self) {
        self.lock().touched = Some(HashMap::new());
    }

    /// Rebuilds every tree for `ring` from `(key, digest)` of the whole store,
    /// read by a scan that began with [`Trees::begin_rebuild`]; changes
    /// recorded since then override what the scan read.
    fn rebuild(&self, ring: Arc<Ring>, n: usize, entries: Vec<(Vec<u8>, u64)>) {
        let mut st = self.lock();
        let mut digests: HashMap<Vec<u8>, u64> = entries.into_iter().collect();
        if let Some(touched) = st.touched.take() {
            digests.extend(touched);
        }
        let mut trees: HashMap<String, Tree> = HashMap::new();
        let mut keys = vec![BTreeSet::new(); PARTITIONS];
        for (key, d) in &digests {
            let (p, b) = (partition_of(key), bucket_of(key));
            for peer in Trees::peers_of(&self.self_id, &ring, n, key) {
                trees
                    .entry(peer.to_string())
                    .or_insert_with(|| vec![[0u64; BUCKETS]; PARTITIONS])[p][b] ^=
                    contribution(key, *d);
            }
            keys[p].insert(key.clone());
        }
        *st = State {
            ring,
            n,
            digests,
            keys,
            trees,
            touched: None,
        };
    }

    /// Partition roots of the tree shared with `peer`.
    pub fn roots(&self, peer: &str) -> Vec<u64> {
        let st = self.lock();
        match st.trees.get(peer) {
            None => vec![0; PARTITIONS],
            Some(t) => t.iter().map(root).collect(),
        }
    }

    /// Bucket hashes of one partition of the tree shared with `peer`.
    pub fn leaves(&self, peer: &str, partition: usize) -> Vec<u64> {
        let st = self.lock();
        st.trees
            .get(peer)
            .and_then(|t| t.get(partition))
            .map_or_else(|| vec![0; BUCKETS], |l| l.to_vec())
    }

    /// `(key, digest)` of the keys shared with `peer` in these buckets.
    pub fn key_digests(&self, peer: &str, partition: usize, buckets: &[u8]) -> Vec<(Vec<u8>, u64)> {
        let st = self.lock();
        let Some(keys) = st.keys.get(partition) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|k| buckets.contains(&(bucket_of(k) as u8)))
            .filter(|k| Trees::peers_of(&self.self_id, &st.ring, st.n, k).contains(&peer))
            .filter_map(|k| st.digests.get(k).map(|d| (k.clone(), *d)))
            .collect()
    }
}

fn root(leaves: &[u64; BUCKETS]) -> u64 {
    if leaves.iter().all(|l| *l == 0) {
        return 0;
    }
    let mut buf = Vec::with_capacity(BUCKETS * 8);
    for l in leaves {
        buf.extend_from_slice(&l.to_le_bytes());
    }
    xxh3_64(&buf)
}

/// Runs exchanges with one peer after another until the node stops.
pub async fn run_forever(node: Arc<Node>) {
    let interval = node.config.aae_interval;
    if interval.is_zero() {
        info!("active anti-entropy is off");
        return;
    }
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let view = node.membership.view();
        let n = node.effective_n(&view);
        if node.trees.stale(&view.ring, n) {
            node.trees.begin_rebuild();
            match scan(&node).await {
                Ok(entries) => {
                    debug!(keys = entries.len(), "rebuilding anti-entropy trees");
                    node.trees.rebuild(view.ring.clone(), n, entries);
                }
                Err(e) => {
                    warn!(cause = %e, "cannot scan the store for anti-entropy");
                    continue;
                }
            }
        }
        let peers: Vec<String> = view
            .members
            .keys()
            .filter(|p| p.as_str() != node.id() && view.is_live(p))
            .cloned()
            .collect();
        if peers.is_empty() {
            continue;
        }
        let peer = peers[turn % peers.len()].clone();
        turn = turn.wrapping_add(1);
        match exchange(&node, &peer).await {
            Ok(synced) => {
                node.trees.rounds.fetch_add(1, Ordering::Relaxed);
                if synced > 0 {
                    info!(peer = %peer, keys = synced, "anti-entropy repaired keys");
                }
            }
            Err(e) => debug!(peer = %peer, cause = %e, "anti-entropy exchange failed"),
        }
    }
}

/// `(key, digest)` of every key in the local store.
async fn scan(node: &Arc<Node>) -> Result<Vec<(Vec<u8>, u64)>, String> {
    let store = node.replica.store().clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for key in store.keys().map_err(|e| e.to_string())? {
            match store.get(&key) {
                Ok(Some(bytes)) => out.push((key, digest(&bytes))),
                Ok(None) => {}
                // A record that no longer reads back is left out: the key
                // then differs from its peers', which repairs it.
                Err(e) => warn!(key = %String::from_utf8_lossy(&key), cause = %e, "skipping an unreadable key"),
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn ask(node: &Node, peer: &str, req: Request) -> Result<Response, String> {
    let addr = node
        .membership
        .view()
        .addr(peer)
        .ok_or_else(|| format!("unknown peer {peer}"))?;
    node.call_peer(addr, req, node.config.request_timeout).await
}

/// One exchange with `peer`; returns the number of keys synced.
async fn exchange(node: &Arc<Node>, peer: &str) -> Result<usize, String> {
    let me = node.id().to_string();
    let Response::Hashes(theirs) = ask(node, peer, Request::AaeRoots { peer: me.clone() }).await?
    else {
        return Err("unexpected answer to AaeRoots".into());
    };
    let ours = node.trees.roots(peer);
    // Start at a random partition, so keys that stay different cannot keep
    // the rest of the ranges from ever being compared.
    let start = rand::random::<u8>() as usize;
    let differing: Vec<usize> = (0..PARTITIONS)
        .map(|i| (start + i) % PARTITIONS)
        .filter(|&p| theirs.get(p) != ours.get(p))
        .take(MAX_PARTITIONS_PER_ROUND)
        .collect();
    let mut to_sync: BTreeSet<Vec<u8>> = BTreeSet::new();
    for p in differing {
        let req = Request::AaeLeaves {
            peer: me.clone(),
            partition: p as u8,
        };
        let Response::Hashes(their_leaves) = ask(node, peer, req).await? else {
            return Err("unexpected answer to AaeLeaves".into());
        };
        let our_leaves = node.trees.leaves(peer, p);
        let buckets: Vec<u8> = (0..BUCKETS)
            .filter(|&b| their_leaves.get(b) != our_leaves.get(b))
            .map(|b| b as u8)
            .collect();
        if buckets.is_empty() {
            continue;
        }
        let req = Request::AaeKeys {
            peer: me.clone(),
            partition: p as u8,
            buckets: buckets.clone(),
        };
        let Response::KeyDigests(their_keys) = ask(node, peer, req).await? else {
            return Err("unexpected answer to AaeKeys".into());
        };
        let their_keys: HashMap<Vec<u8>, u64> = their_keys
            .into_iter()
            .map(|(k, d)| (k.into_vec(), d))
            .collect();
        let our_keys: HashMap<Vec<u8>, u64> = node
            .trees
            .key_digests(peer, p, &buckets)
            .into_iter()
            .collect();
        node.trees.keys_compared.fetch_add(
            (their_keys.len() + our_keys.len()) as u64,
            Ordering::Relaxed,
        );
        for (k, d) in &their_keys {
            if our_keys.get(k) != Some(d) {
                to_sync.insert(k.clone());
            }
        }
        for k in our_keys.keys() {
            if !their_keys.contains_key(k) {
                to_sync.insert(k.clone());
            }
        }
        if to_sync.len() >= MAX_KEYS_PER_ROUND {
            break;
        }
    }
    let mut synced = 0;
    for key in to_sync.into_iter().take(MAX_KEYS_PER_ROUND) {
        sync_key(node, peer, &key).await?;
        synced += 1;
    }
    node.trees
        .keys_repaired
        .fetch_add(synced as u64, Ordering::Relaxed);
    Ok(synced)
}

/// Leaves both this node and `peer` with the merge of their copies of `key`.
async fn sync_key(node: &Arc<Node>, peer: &str, key: &[u8]) -> Result<(), String> {
    // The peer's replica copy, without the hints it may hold: that is what
    // its tree describes.
    let theirs = match ask(node, peer, Request::Inspect { key: key.to_vec() }).await? {
        Response::Inspected { own, .. } => own,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    if let Some(o) = &theirs {
        o.validate()
            .map_err(|e| format!("{peer} holds an invalid copy: {e}"))?;
    }
    let ours = node.replica.get(key).await.map_err(|e| e.to_string())?;
    let Some(merged) = Object::merge_opt(ours.as_ref(), theirs.as_ref()) else {
        return Ok(());
    };
    if ours.as_ref() != Some(&merged) {
        node.replica
            .merge(key, &merged)
            .await
            .map_err(|e| e.to_string())?;
    } else {
        // Nothing to store, but the tree may hold a stale digest: fix it.
        node.trees.record(key, &merged.to_bytes());
    }
    if theirs.as_ref() != Some(&merged) {
        let req = Request::Replicate {
            key: key.to_vec(),
            object: merged,
            hint: None,
        };
        match ask(node, peer, req).await? {
            Response::Ack => {}
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_agree_when_contents_agree_and_point_at_differences() {
        let ring = Arc::new(Ring::new(["a", "b", "c"], 64));
        let (ta, tb) = (Trees::new("a"), Trees::new("b"));
        ta.rebuild(ring.clone(), 3, Vec::new());
        tb.rebuild(ring.clone(), 3, Vec::new());
        for i in 0..500 {
            let k = format!("k{i}");
            ta.record(k.as_bytes(), k.as_bytes());
            tb.record(k.as_bytes(), k.as_bytes());
        }
        assert_eq!(ta.roots("b"), tb.roots("a"));
        // Order of writes does not matter; rewriting the same bytes is a no-op.
        tb.record(b"k7", b"k7");
        assert_eq!(ta.roots("b"), tb.roots("a"));
        // One differing key shows in exactly one partition and one bucket.
        ta.record(b"k42", b"changed");
        let (ra, rb) = (ta.roots("b"), tb.roots("a"));
        let diff: Vec<usize> = (0..PARTITIONS).filter(|&p| ra[p] != rb[p]).collect();
        assert_eq!(diff, vec![partition_of(b"k42")]);
        let p = diff[0];
        let (la, lb) = (ta.leaves("b", p), tb.leaves("a", p));
        let buckets: Vec<u8> = (0..BUCKETS)
            .filter(|&b| la[b] != lb[b])
            .map(|b| b as u8)
            .collect();
        assert_eq!(buckets, vec![bucket_of(b"k42") as u8]);
        let ka = ta.key_digests("b", p, &buckets);
        assert!(ka.iter().any(|(k, _)| k == b"k42"));
        // A rebuild from a scan gives the same trees as incremental updates.
        let tc = Trees::new("a");
        let entries: Vec<(Vec<u8>, u64)> = (0..500)
            .map(|i| {
                let k = format!("k{i}");
                let v = if i == 42 {
                    b"changed".to_vec()
                } else {
                    k.clone().into_bytes()
                };
                (k.into_bytes(), digest(&v))
            })
            .collect();
        tc.rebuild(ring, 3, entries);
        assert_eq!(tc.roots("b"), ta.roots("b"));
    }

    #[test]
    fn writes_during_a_rebuild_scan_are_not_lost_from_the_tree() {
        let ring = Arc::new(Ring::new(["a", "b", "c"], 64));
        let (ta, tb) = (Trees::new("a"), Trees::new("b"));
        tb.rebuild(ring.clone(), 3, Vec::new());
        tb.record(b"k", b"new");
        // a's scan read the old version, then a write landed before the swap.
        ta.begin_rebuild();
        ta.record(b"k", b"new");
        ta.rebuild(ring, 3, vec![(b"k".to_vec(), digest(b"old"))]);
        assert_eq!(ta.roots("b"), tb.roots("a"));
        let p = partition_of(b"k");
        assert_eq!(
            ta.key_digests("b", p, &[bucket_of(b"k") as u8]),
            vec![(b"k".to_vec(), digest(b"new"))]
        );
    }

    #[test]
    fn keys_a_peer_does_not_replicate_stay_out_of_its_tree() {
        let ring = Arc::new(Ring::new(["a", "b", "c", "d", "e"], 64));
        let t = Trees::new("a");
        t.rebuild(ring.clone(), 3, Vec::new());
        for i in 0..300 {
            let k = format!("k{i}");
            t.record(k.as_bytes(), b"v");
        }
        for p in 0..PARTITIONS {
            for (k, _) in t.key_digests("b", p, &(0..BUCKETS as u8).collect::<Vec<_>>()) {
                let owners = ring.preference_list(&k, 3);
                assert!(owners.contains(&"a") && owners.contains(&"b"));
            }
        }
    }
}
