//! The whole request path in one process, deterministic: real coordinators,
//! peer services, replicas and hints, over the in-memory transport, with
//! tokio's paused time. Faults are injected by the network (cut links, nodes
//! down, slow nodes) and by the views the test hands each node (what its
//! failure detector would say).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use distro_db::clock::{Clock, ManualClock};
use distro_db::cluster::ClusterView;
use distro_db::coordinator::service::PeerService;
use distro_db::coordinator::{CoordConfig, CoordError, Coordinator};
use distro_db::epoch::ActorCell;
use distro_db::hints::Hints;
use distro_db::node::{Core, CoreConfig};
use distro_db::object::Object;
use distro_db::random::Random;
use distro_db::replica::Replica;
use distro_db::rpc::Transport;
use distro_db::rpc::memory::MemoryNetwork;
use distro_db::rpc::message::Reason;
use distro_db::storage::MemoryStore;
use distro_db::workers::Worker;
use distro_db::workers::handoff::Handoff;
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_millis(500);

struct TestNode {
    id: Arc<str>,
    addr: SocketAddr,
    replica: Arc<Replica>,
    hints: Arc<Hints>,
    coord: Arc<Coordinator>,
    service: Arc<PeerService>,
    view: watch::Sender<Arc<ClusterView>>,
    transport: Arc<dyn Transport>,
}

struct TestCluster {
    net: Arc<MemoryNetwork>,
    /// Every node's wall clock.
    clock: Arc<ManualClock>,
    nodes: Vec<TestNode>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000))
}

fn view(n: usize, live: impl Fn(&str) -> bool) -> Arc<ClusterView> {
    let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    Arc::new(ClusterView::new(
        ids.iter().enumerate().map(|(i, id)| (id.as_str(), addr(i))),
        live,
        3,
    ))
}

impl TestCluster {
    fn new(n: usize, read_repair_chance: f64) -> TestCluster {
        let net = MemoryNetwork::new();
        // A year ahead of the system clock, so a part that read the system
        // clock instead would disagree.
        let clock = ManualClock::new(distro_db::clock::SystemClock.now_ms() + 365 * 24 * 3_600_000);
        let mut nodes = Vec::new();
        for i in 0..n {
            let id: Arc<str> = format!("n{i}").into();
            let (view_tx, view_rx) = watch::channel(view(n, |_| true));
            let transport: Arc<dyn Transport> = Arc::new(net.transport(addr(i)));
            let Core {
                replica,
                hints,
                coordinator: coord,
                service,
            } = Core::build(CoreConfig {
                me: id.clone(),
                n: 3,
                store: Arc::new(MemoryStore::new()),
                hints_store: Arc::new(MemoryStore::new()),
                hint_limits: Default::default(),
                actor: Arc::new(ActorCell::new(&id, i as u64 + 1, None)),
                clock: clock.clone(),
                transport: transport.clone(),
                view: view_rx,
                coordinator: CoordConfig {
                    r: 2,
                    w: 2,
                    timeout: TIMEOUT,
                    hedge_after: Duration::from_millis(50),
                    read_repair_chance,
                },
                rng: Random::new(Some(i as u64)),
                stop: Arc::new(|| {}),
            })
            .unwrap();
            net.register(addr(i), service.clone());
            nodes.push(TestNode {
                id,
                addr: addr(i),
                replica,
                hints,
                coord,
                service,
                view: view_tx,
                transport,
            });
        }
        TestCluster { net, clock, nodes }
    }

    /// Every node's failure detector now says: live unless in `down`.
    fn detect(&self, down: &[usize]) {
        let n = self.nodes.len();
        let down: Vec<String> = down.iter().map(|i| format!("n{i}")).collect();
        for node in &self.nodes {
            let v = view(n, |id| !down.iter().any(|d| d == id));
            node.view.send_replace(v);
        }
    }

    fn values(&self, i: usize, key: &[u8]) -> Vec<Vec<u8>> {
        self.nodes[i]
            .replica
            .get(key)
            .unwrap()
            .map(|o| o.values().into_iter().map(<[u8]>::to_vec).collect())
            .unwrap_or_default()
    }

    /// Lets background work (late answers, repairs, hints) run.
    async fn settle(&self) {
        for n in &self.nodes {
            n.coord.tasks().close();
            n.coord.tasks().wait().await;
            n.coord.tasks().reopen();
        }
    }

    /// A key whose owners (in a cluster of this size) do not include `i`.
    fn key_not_owned_by(&self, i: usize) -> Vec<u8> {
        let v = view(self.nodes.len(), |_| true);
        (0..10_000)
            .map(|k| format!("key-{k}").into_bytes())
            .find(|k| !v.owners(k).contains(&(i as u16)))
            .expect("some key")
    }
}

fn value(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

#[tokio::test(start_paused = true)]
async fn quorum_write_and_read_reach_every_replica() {
    let c = TestCluster::new(3, 0.0);
    assert!(
        !c.nodes[0]
            .coord
            .put(b"k", value("v"), None, None)
            .await
            .unwrap()
    );
    c.settle().await;
    for i in 0..3 {
        assert_eq!(c.values(i, b"k"), vec![b"v".to_vec()]);
    }
    let got = c.nodes[1].coord.get(b"k", None).await.unwrap().unwrap();
    assert_eq!(got.values(), vec![b"v".as_slice()]);
    // Overwrite through another coordinator, delete through a third.
    assert!(
        c.nodes[1]
            .coord
            .put(b"k", value("w"), None, Some(3))
            .await
            .unwrap()
    );
    assert!(c.nodes[2].coord.put(b"k", None, None, None).await.unwrap());
    assert!(
        c.nodes[0]
            .coord
            .get(b"k", Some(3))
            .await
            .unwrap()
            .unwrap()
            .is_deleted()
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_replica_times_out_and_gets_a_hint_later() {
    let c = TestCluster::new(3, 0.0);
    // n2 looks live but its link to n0 is cut: its copy times out.
    c.net.cut(c.nodes[0].addr, c.nodes[2].addr);
    let started = tokio::time::Instant::now();
    c.nodes[0]
        .coord
        .put(b"k", value("v"), None, None)
        .await
        .unwrap();
    // W=2 was met by n0 and n1 without waiting for n2.
    assert!(started.elapsed() < TIMEOUT);
    c.settle().await;
    assert!(c.values(2, b"k").is_empty());
    // The write's tail left a hint for n2 on n0.
    assert_eq!(c.nodes[0].hints.pending().get("n2"), Some(&1));
    // Once the link heals, hint delivery brings n2 the write.
    c.net.heal();
    let mut handoff = Handoff::new(
        c.nodes[0].hints.clone(),
        c.nodes[0].transport.clone(),
        c.nodes[0].view.subscribe(),
        TIMEOUT,
    );
    handoff.work().await;
    assert_eq!(c.values(2, b"k"), vec![b"v".to_vec()]);
    assert!(c.nodes[0].hints.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_missed_quorum_says_who_failed_and_why() {
    let c = TestCluster::new(3, 0.0);
    c.net.cut(c.nodes[0].addr, c.nodes[1].addr);
    c.net.down(c.nodes[2].addr);
    let err = c.nodes[0]
        .coord
        .put(b"k", value("v"), None, None)
        .await
        .unwrap_err();
    let CoordError::WriteUnknown(q) = err else {
        panic!("expected an unknown outcome, got {err:?}")
    };
    assert_eq!((q.needed, q.got), (2, 1));
    let reasons: Vec<(&str, &Reason)> = q
        .failures
        .iter()
        .map(|f| (f.node.as_str(), &f.reason))
        .collect();
    assert!(reasons.contains(&("n1", &Reason::Timeout)), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|(n, r)| *n == "n2" && matches!(r, Reason::Unreachable(_))),
        "{reasons:?}"
    );
    // The same typed error reaches a coordinator that forwarded the write.
    let c4 = TestCluster::new(4, 0.0);
    let key = c4.key_not_owned_by(3);
    let owners: Vec<usize> = view(4, |_| true)
        .owners(&key)
        .iter()
        .map(|&i| usize::from(i))
        .collect();
    // The first owner can act but reaches neither of the others.
    for &o in &owners[1..] {
        c4.net.cut(c4.nodes[owners[0]].addr, c4.nodes[o].addr);
    }
    for &o in &owners[1..] {
        c4.net.cut(c4.nodes[3].addr, c4.nodes[o].addr);
    }
    let err = c4.nodes[3]
        .coord
        .put(&key, value("v"), None, Some(3))
        .await
        .unwrap_err();
    match err {
        // Both cut-off owners timed out; a stand-in (n3) was asked for one
        // of them, but with only the actor and one stand-in left W=3 could
        // no longer be met: the actor gave up (before or after the stand-in
        // answered).
        CoordError::WriteUnknown(q) => {
            assert_eq!(q.needed, 3, "{q:?}");
            assert!((1..=2).contains(&q.got), "{q:?}");
            let timeouts = q
                .failures
                .iter()
                .filter(|f| f.reason == Reason::Timeout)
                .count();
            assert_eq!(timeouts, 2, "{q:?}");
        }
        other => panic!("expected an unknown outcome across the wire, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_down_owner_is_replaced_by_a_stand_in_that_keeps_a_hint() {
    let c = TestCluster::new(4, 0.0);
    let key = c.key_not_owned_by(3);
    let v = view(4, |_| true);
    let owners: Vec<usize> = v.owners(&key).iter().map(|&i| usize::from(i)).collect();
    let (coord, victim) = (owners[0], owners[1]);
    c.net.down(c.nodes[victim].addr);
    c.detect(&[victim]);
    c.nodes[coord]
        .coord
        .put(&key, value("v"), None, Some(3))
        .await
        .unwrap();
    c.settle().await;
    // n3, not an owner, stands in for the victim and keeps a hint for it.
    let hinted = c.nodes[3]
        .hints
        .for_owner(&c.nodes[victim].id, &key)
        .unwrap();
    assert_eq!(hinted.unwrap().values(), vec![b"v".as_slice()]);
    assert!(
        c.values(3, &key).is_empty(),
        "a hint is not the stand-in's own copy"
    );
    // A read through the stand-in sees it too.
    c.net
        .register(c.nodes[victim].addr, c.nodes[victim].service.clone());
    c.detect(&[]);
    let mut handoff = Handoff::new(
        c.nodes[3].hints.clone(),
        c.nodes[3].transport.clone(),
        c.nodes[3].view.subscribe(),
        TIMEOUT,
    );
    handoff.work().await;
    assert_eq!(c.values(victim, &key), vec![b"v".to_vec()]);
    assert!(c.nodes[3].hints.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stand_in_that_holds_nothing_is_not_a_vote_in_a_read() {
    let c = TestCluster::new(4, 0.0);
    let key = c.key_not_owned_by(3);
    let v = view(4, |_| true);
    let owners: Vec<usize> = v.owners(&key).iter().map(|&i| usize::from(i)).collect();
    // A key never written with the same owners.
    let unwritten = (0..10_000)
        .map(|k| format!("never-{k}").into_bytes())
        .find(|k| v.owners(k) == v.owners(&key))
        .expect("some key");
    // The write reaches owners[0] and, for owners[1] (down), n3 as a
    // stand-in with a hint.
    c.net.down(c.nodes[owners[1]].addr);
    c.detect(&[owners[1]]);
    c.nodes[owners[0]]
        .coord
        .put(&key, value("v"), None, None)
        .await
        .unwrap();
    c.settle().await;
    // Now owners[2] is down too: owners[0] and the stand-in n3 are all a
    // read can reach.
    c.net.down(c.nodes[owners[2]].addr);
    c.detect(&[owners[1], owners[2]]);
    let coord = &c.nodes[owners[0]].coord;
    // The stand-in holds a hint for the key: its answer is a vote.
    let got = coord.get(&key, Some(2)).await.unwrap().unwrap();
    assert_eq!(got.values(), vec![b"v".as_slice()]);
    // For a key it holds nothing of, its "none" is not a vote: the read
    // fails for want of a quorum instead of answering "no such key" on the
    // word of one owner.
    match coord.get(&unwritten, Some(2)).await {
        Err(CoordError::ReadQuorum(q)) => {
            assert_eq!((q.needed, q.got), (2, 1), "{q:?}");
            assert!(
                q.failures
                    .iter()
                    .any(|f| f.node == "n3" && f.reason == Reason::StandInEmpty),
                "{q:?}"
            );
        }
        other => panic!("expected a read quorum failure, got {other:?}"),
    }
    // With R=1 the one owner's answer is enough.
    assert!(coord.get(&unwritten, Some(1)).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_fails_mid_write_is_replaced_by_a_spare() {
    let c = TestCluster::new(4, 0.0);
    let key = c.key_not_owned_by(3);
    let v = view(4, |_| true);
    let owners: Vec<usize> = v.owners(&key).iter().map(|&i| usize::from(i)).collect();
    // The detector still says live, but the connection is refused.
    c.net.down(c.nodes[owners[2]].addr);
    c.nodes[owners[0]]
        .coord
        .put(&key, value("v"), None, Some(3))
        .await
        .unwrap();
    c.settle().await;
    let hinted = c.nodes[3]
        .hints
        .for_owner(&c.nodes[owners[2]].id, &key)
        .unwrap();
    assert!(
        hinted.is_some(),
        "the spare keeps a hint for the failed owner"
    );
}

#[tokio::test(start_paused = true)]
async fn read_repair_refills_a_stale_replica_with_late_answers_included() {
    // Every read asks every replica.
    let c = TestCluster::new(3, 1.0);
    c.net.cut(c.nodes[0].addr, c.nodes[2].addr);
    c.nodes[0]
        .coord
        .put(b"k", value("v"), None, None)
        .await
        .unwrap();
    c.settle().await;
    c.nodes[0].hints.pending();
    assert!(c.values(2, b"k").is_empty());
    c.net.heal();
    // n2 is slow: the read answers from n0 and n1; n2's late empty answer
    // still gets repaired.
    c.net.slow(c.nodes[2].addr, Duration::from_millis(100));
    let got = c.nodes[0].coord.get(b"k", None).await.unwrap().unwrap();
    assert_eq!(got.values(), vec![b"v".as_slice()]);
    c.settle().await;
    assert_eq!(c.values(2, b"k"), vec![b"v".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn a_read_whose_replicas_agree_fetches_one_copy_and_digests() {
    let c = TestCluster::new(3, 0.0);
    c.nodes[0]
        .coord
        .put(b"k", value("v"), None, Some(3))
        .await
        .unwrap();
    for (i, node) in c.nodes.iter().enumerate() {
        let got = node.coord.get(b"k", None).await.unwrap().unwrap();
        assert_eq!(got.values(), vec![b"v".as_slice()], "read from n{i}");
        assert!(node.coord.get(b"absent", None).await.unwrap().is_none());
        let stats = node.coord.stats();
        assert_eq!(stats.digest_reads.load(Ordering::Relaxed), 2, "n{i}");
        assert_eq!(stats.digest_mismatches.load(Ordering::Relaxed), 0, "n{i}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_digest_read_that_disagrees_reads_full_copies_and_repairs() {
    let c = TestCluster::new(3, 0.0);
    // n0 misses the write: its copy is stale, the others' digests differ.
    c.net.cut(c.nodes[0].addr, c.nodes[1].addr);
    c.net.cut(c.nodes[0].addr, c.nodes[2].addr);
    c.nodes[1]
        .coord
        .put(b"k", value("v"), None, None)
        .await
        .unwrap();
    c.settle().await;
    assert!(c.values(0, b"k").is_empty());
    c.net.heal();
    let got = c.nodes[0].coord.get(b"k", None).await.unwrap().unwrap();
    assert_eq!(got.values(), vec![b"v".as_slice()]);
    let stats = c.nodes[0].coord.stats();
    assert_eq!(stats.digest_mismatches.load(Ordering::Relaxed), 1);
    assert_eq!(stats.digest_reads.load(Ordering::Relaxed), 0);
    c.settle().await;
    // The full read repaired n0. Once n1 has handed off the hint it kept
    // for n0 (a replica holding hints answers a digest read with its
    // merged copy), every digest agrees.
    assert_eq!(c.values(0, b"k"), vec![b"v".to_vec()]);
    let mut handoff = Handoff::new(
        c.nodes[1].hints.clone(),
        c.nodes[1].transport.clone(),
        c.nodes[1].view.subscribe(),
        TIMEOUT,
    );
    handoff.work().await;
    assert!(c.nodes[1].hints.is_empty());
    let got = c.nodes[0].coord.get(b"k", None).await.unwrap().unwrap();
    assert_eq!(got.values(), vec![b"v".as_slice()]);
    assert_eq!(stats.digest_reads.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_replica_is_hedged_around() {
    let c = TestCluster::new(3, 0.0);
    c.nodes[0]
        .coord
        .put(b"k", value("v"), None, Some(3))
        .await
        .unwrap();
    // Whichever replica the read asks besides n0 is slow except one.
    c.net.slow(c.nodes[1].addr, Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    let got = c.nodes[0].coord.get(b"k", None).await.unwrap().unwrap();
    assert_eq!(got.values(), vec![b"v".as_slice()]);
    // Answered after the hedge delay, long before the slow node or the timeout.
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_writes_through_two_coordinators_become_siblings() {
    let c = TestCluster::new(3, 0.0);
    c.nodes[0]
        .coord
        .put(b"k", value("base"), None, Some(3))
        .await
        .unwrap();
    let ctx = c.nodes[0]
        .coord
        .get(b"k", None)
        .await
        .unwrap()
        .unwrap()
        .clock;
    let (a, b) = tokio::join!(
        c.nodes[0]
            .coord
            .put(b"k", value("a"), Some(ctx.clone()), None),
        c.nodes[1]
            .coord
            .put(b"k", value("b"), Some(ctx.clone()), None),
    );
    a.unwrap();
    b.unwrap();
    c.settle().await;
    let got: Object = c.nodes[2].coord.get(b"k", Some(3)).await.unwrap().unwrap();
    let mut vals = got.values();
    vals.sort();
    assert_eq!(vals, vec![b"a".as_slice(), b"b".as_slice()]);
    // A write with the merged context resolves them.
    c.nodes[2]
        .coord
        .put(b"k", value("c"), Some(got.clock.clone()), Some(3))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(c.values(i, b"k"), vec![b"c".to_vec()]);
    }
}

#[tokio::test(start_paused = true)]
async fn background_work_drains_before_shutdown() {
    let c = TestCluster::new(3, 0.0);
    // n2 answers slowly: the write returns at W=2, its tail runs on.
    c.net.slow(c.nodes[2].addr, Duration::from_millis(200));
    c.nodes[0]
        .coord
        .put(b"k", value("v"), None, None)
        .await
        .unwrap();
    assert!(c.values(2, b"k").is_empty());
    // Shutdown closes the tracker and waits: the tail completes first.
    let tasks = c.nodes[0].coord.tasks();
    tasks.close();
    tasks.wait().await;
    assert_eq!(c.values(2, b"k"), vec![b"v".to_vec()]);
    assert!(c.net.calls() >= 2);
}

#[tokio::test(start_paused = true)]
async fn deadlines_follow_the_nodes_wall_clock() {
    use distro_db::write::{Condition, Ttl, Write};
    let c = TestCluster::new(3, 0.0);
    let deadline = c.clock.now_ms() + 60_000;
    let set = Write::Set {
        value: b"v".to_vec(),
        ttl: Ttl::At(deadline),
        cond: Condition::Always,
    };
    c.nodes[0].coord.write(b"k", set, None, None).await.unwrap();
    let o = c.nodes[1].coord.get(b"k", Some(3)).await.unwrap().unwrap();
    assert_eq!(o.resolve(c.clock.now_ms()).values, vec![b"v".to_vec()]);
    // A minute of wall-clock time passes in an instant: the value is gone
    // from every replica's reading, with no sleep.
    c.clock.advance(60_000);
    let o = c.nodes[1].coord.get(b"k", Some(3)).await.unwrap().unwrap();
    assert!(o.resolve(c.clock.now_ms()).values.is_empty());
    // The actor reads its own clock: to a SET NX the key is absent now
    // (with the system clock, a year before this one, it would not be).
    let nx = Write::Set {
        value: b"w".to_vec(),
        ttl: Ttl::None,
        cond: Condition::Absent,
    };
    let done = c.nodes[0].coord.write(b"k", nx, None, None).await.unwrap();
    assert!(done.applied && !done.existed, "{done:?}");
}

/// Replica writes a peer connection read together are answered together:
/// one answer per request, in order, each as `handle` would give it.
#[tokio::test(start_paused = true)]
async fn a_batch_of_replica_writes_gets_each_its_own_answer_in_order() {
    use distro_db::rpc::message::RemoteError;
    use distro_db::rpc::{Handler, Request, Response};
    use distro_db::vclock::VClock;
    let c = TestCluster::new(3, 0.0);
    let copy = |v: &[u8]| {
        Object::update(None, &VClock::new(), &"n1/1".into(), Some(v.to_vec()), 1).unwrap()
    };
    let mut forged = copy(b"x");
    forged.clock = VClock::new();
    let batch = vec![
        Request::Replicate {
            key: b"a".to_vec(),
            object: copy(b"1"),
            hint: None,
        },
        // Kept as a hint for n2, not in n0's own replica.
        Request::Replicate {
            key: b"h".to_vec(),
            object: copy(b"2"),
            hint: Some("n2".into()),
        },
        // Refused: a version its clock does not cover.
        Request::Replicate {
            key: b"bad".to_vec(),
            object: forged,
            hint: None,
        },
        // A hint naming this node itself is its own copy.
        Request::Replicate {
            key: b"b".to_vec(),
            object: copy(b"3"),
            hint: Some("n0".into()),
        },
        // Refused: a key past the bound.
        Request::Replicate {
            key: vec![b'k'; distro_db::config::MAX_KEY_LEN + 1],
            object: copy(b"4"),
            hint: None,
        },
    ];
    let answers = c.nodes[0].service.handle_batch(batch).await;
    assert_eq!(answers.len(), 5, "{answers:?}");
    for (i, answer) in answers.iter().enumerate() {
        let expected = if i == 2 || i == 4 {
            matches!(answer, Response::Error(RemoteError::Invalid(_)))
        } else {
            matches!(answer, Response::Ack { .. })
        };
        assert!(expected, "answer {i}: {answer:?}");
    }
    let n0 = &c.nodes[0];
    let value = |o: Option<Object>| o.map(|o| o.values().concat());
    assert_eq!(value(n0.replica.get(b"a").unwrap()), Some(b"1".to_vec()));
    assert_eq!(value(n0.replica.get(b"b").unwrap()), Some(b"3".to_vec()));
    assert_eq!(n0.replica.get(b"h").unwrap(), None);
    assert_eq!(
        value(n0.hints.for_owner("n2", b"h").unwrap()),
        Some(b"2".to_vec())
    );
    assert_eq!(n0.replica.get(b"bad").unwrap(), None);
    assert_eq!(
        n0.replica
            .get(&vec![b'k'; distro_db::config::MAX_KEY_LEN + 1])
            .unwrap(),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn writes_made_together_go_to_each_replica_in_one_frame() {
    let c = TestCluster::new(3, 0.0);
    let keys: Vec<Vec<u8>> = (0..32).map(|i| format!("k{i}").into_bytes()).collect();
    let before = c.net.calls();
    let writes = keys
        .iter()
        .map(|k| c.nodes[0].coord.put(k, value("v"), None, None));
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    // One copy frame to each of the two other replicas, not one per write.
    assert_eq!(c.net.calls() - before, 2);
    c.settle().await;
    for k in &keys {
        for i in 0..3 {
            assert_eq!(c.values(i, k), vec![b"v".to_vec()], "node {i}");
        }
    }
    assert_eq!(c.nodes[0].coord.stats().writes.load(Ordering::Relaxed), 32);
}

#[tokio::test(start_paused = true)]
async fn a_silent_replica_of_a_batch_gets_a_hint_for_each_write() {
    let c = TestCluster::new(3, 0.0);
    c.net.cut(c.nodes[0].addr, c.nodes[2].addr);
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i}").into_bytes()).collect();
    let started = tokio::time::Instant::now();
    let writes = keys
        .iter()
        .map(|k| c.nodes[0].coord.put(k, value("v"), None, None));
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    // W=2 was met by n0 and n1 without waiting for n2.
    assert!(started.elapsed() < TIMEOUT);
    c.settle().await;
    assert_eq!(c.nodes[0].hints.pending().get("n2"), Some(&20));
    for k in &keys {
        assert!(c.values(2, k).is_empty());
        assert_eq!(c.values(1, k), vec![b"v".to_vec()]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_misses_w_says_so_for_each_write() {
    let c = TestCluster::new(3, 0.0);
    c.net.down(c.nodes[1].addr);
    c.net.cut(c.nodes[0].addr, c.nodes[2].addr);
    let keys: Vec<Vec<u8>> = (0..5).map(|i| format!("k{i}").into_bytes()).collect();
    let writes = keys
        .iter()
        .map(|k| c.nodes[0].coord.put(k, value("v"), None, None));
    for r in futures::future::join_all(writes).await {
        match r {
            Err(CoordError::WriteUnknown(q)) => {
                assert_eq!((q.needed, q.got), (2, 1), "{q}");
                assert!(q.failures.iter().any(|f| f.node == "n1"), "{q}");
            }
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
    }
    c.settle().await;
    // The write stays here and is handed to both owners later.
    assert_eq!(c.nodes[0].hints.pending().get("n1"), Some(&5));
    assert_eq!(c.nodes[0].hints.pending().get("n2"), Some(&5));
    assert_eq!(
        c.nodes[0]
            .coord
            .stats()
            .write_failures
            .load(Ordering::Relaxed),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn replicas_of_a_batch_that_fail_are_replaced_by_spares() {
    let c = TestCluster::new(4, 0.0);
    let v = view(4, |_| true);
    // Keys of one owner set that leaves n3 as the spare.
    let first = c.key_not_owned_by(3);
    let owners = v.owners(&first).to_vec();
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|k| format!("key-{k}").into_bytes())
        .filter(|k| v.owners(k) == owners.as_slice())
        .take(8)
        .collect();
    assert_eq!(keys.len(), 8);
    let owners: Vec<usize> = owners.iter().map(|&i| usize::from(i)).collect();
    // The detector still says live, but the connection is refused.
    c.net.down(c.nodes[owners[2]].addr);
    let writes = keys
        .iter()
        .map(|k| c.nodes[owners[0]].coord.put(k, value("v"), None, Some(3)));
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    c.settle().await;
    for k in &keys {
        let hinted = c.nodes[3]
            .hints
            .for_owner(&c.nodes[owners[2]].id, k)
            .unwrap();
        assert!(
            hinted.is_some(),
            "the spare keeps a hint for the failed owner"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn reads_made_together_ask_each_replica_for_digests_in_one_frame() {
    let c = TestCluster::new(3, 0.0);
    let keys: Vec<Vec<u8>> = (0..32).map(|i| format!("k{i}").into_bytes()).collect();
    let writes = keys
        .iter()
        .map(|k| c.nodes[0].coord.put(k, value("v"), None, Some(3)));
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    // A newer copy on n0 alone for one key (n0 keeps hints for the
    // others): its read must not answer from digests.
    let stale = &keys[7];
    c.net.cut(c.nodes[0].addr, c.nodes[1].addr);
    c.net.cut(c.nodes[0].addr, c.nodes[2].addr);
    c.nodes[0]
        .coord
        .put(stale, value("new"), None, Some(1))
        .await
        .unwrap();
    c.settle().await;
    c.net.heal();
    let before = c.net.calls();
    let reads = keys.iter().map(|k| c.nodes[0].coord.get(k, None));
    let got = futures::future::join_all(reads).await;
    for (k, r) in keys.iter().zip(got) {
        let want: &[u8] = if k == stale { b"new" } else { b"v" };
        assert_eq!(r.unwrap().unwrap().values(), vec![want], "{k:?}");
    }
    let stats = c.nodes[0].coord.stats();
    assert_eq!(stats.digest_reads.load(Ordering::Relaxed), 31);
    assert_eq!(stats.digest_mismatches.load(Ordering::Relaxed), 1);
    // One digest frame per replica asked (n1, n2), then the stale key's
    // full read (and its repair), not one digest call per read.
    let calls = c.net.calls() - before;
    assert!(calls <= 2 + 3, "{calls} calls");
}

#[tokio::test(start_paused = true)]
async fn a_batched_write_replaces_a_refusing_replica_without_waiting_for_a_silent_one() {
    let c = TestCluster::new(4, 0.0);
    let key = c.key_not_owned_by(3);
    let v = view(4, |_| true);
    let owners: Vec<usize> = v.owners(&key).iter().map(|&i| usize::from(i)).collect();
    // One owner refuses at once, the other never answers; n3 is the spare.
    c.net.down(c.nodes[owners[1]].addr);
    c.net.cut(c.nodes[owners[0]].addr, c.nodes[owners[2]].addr);
    let started = tokio::time::Instant::now();
    c.nodes[owners[0]]
        .coord
        .put(&key, value("v"), None, None)
        .await
        .unwrap();
    // W=2: this node and the spare, before the silent owner's timeout.
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    c.settle().await;
    let hinted = c.nodes[3]
        .hints
        .for_owner(&c.nodes[owners[1]].id, &key)
        .unwrap();
    assert!(
        hinted.is_some(),
        "the spare keeps a hint for the refusing owner"
    );
    // The silent owner's copy is a hint kept by the coordinator.
    assert_eq!(
        c.nodes[owners[0]]
            .hints
            .pending()
            .get(&*c.nodes[owners[2]].id),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_many_tasks_on_a_multi_threaded_runtime_are_batched() {
    let c = TestCluster::new(3, 0.0);
    let coord = c.nodes[0].coord.clone();
    let before = c.net.calls();
    // The tasks start together: the last to reach the barrier wakes the
    // others at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (coord, barrier) = (coord.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let key = format!("k{i}").into_bytes();
                coord.put(&key, value("v"), None, None).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let calls = c.net.calls() - before;
    // Two replicas: 128 calls unbatched. How many writes share a frame
    // depends on the scheduling of the two workers; some always do.
    assert!(calls < 128, "{calls} calls for 64 writes");
    for i in 0..64 {
        let key = format!("k{i}").into_bytes();
        assert_eq!(c.values(0, &key), vec![b"v".to_vec()]);
    }
}
