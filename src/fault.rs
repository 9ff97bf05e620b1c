//! Built-in fault injection, off by default.
//!
//! A node started with `--fault-injection` accepts `FAULT PARTITION <node>...`,
//! `FAULT DELAY <node> <ms>`, `FAULT LOSS <node> <percent>` and `FAULT HEAL`.
//! The rules live in [`Faults`], keyed by the peer's address (a node's TCP and
//! gossip ports are the same), and are applied at the node's two seams:
//!
//! - peer RPC: [`FaultyTransport`] wraps the outgoing transport, and the
//!   server drops incoming requests from a partitioned or lossy peer
//!   unanswered (so the caller times out, as across a real partition);
//! - gossip: [`GossipTransport`] is the node's chitchat transport (plain UDP
//!   when no rule is set); it drops, loses or delays datagrams to a peer and
//!   drops datagrams from a partitioned or lossy peer.
//!
//! One rule on node A about node B therefore cuts (or slows) traffic in both
//! directions between them. A delay is applied once per message, when it
//! leaves (gossip, RPC requests) or arrives (RPC requests from that peer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{
    RecvOutcome, SendOutcome, Socket, Transport as GossipTransportTrait, UdpSocket,
};
use tokio::sync::mpsc;
use tracing::warn;

use crate::rpc::{Request, Response, RpcError, Shared, Transport};

/// The fault rule for one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rule {
    /// Drop everything to and from the peer.
    pub partitioned: bool,
    /// Added latency per message.
    pub delay: Duration,
    /// Percentage of messages dropped at random.
    pub loss_pct: u8,
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered normally.
    Pass,
    /// Delivered after this delay.
    Delay(Duration),
    /// Never delivered.
    Drop,
}

/// The fault rules of a node.
#[derive(Debug, Default)]
pub struct Faults {
    enabled: bool,
    rules: RwLock<HashMap<SocketAddr, Rule>>,
}

impl Faults {
    /// Rules that can be set only when `enabled` (`--fault-injection`).
    pub fn new(enabled: bool) -> Arc<Faults> {
        Arc::new(Faults {
            enabled,
            rules: RwLock::default(),
        })
    }

    /// True when the node accepts FAULT commands.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Changes the rule for `addr`.
    pub fn update(&self, addr: SocketAddr, f: impl FnOnce(&mut Rule)) {
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let rule = rules.entry(addr).or_default();
        f(rule);
        if *rule == Rule::default() {
            rules.remove(&addr);
        }
    }

    /// Removes every rule.
    pub fn heal(&self) {
        self.rules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Every rule in force.
    pub fn rules(&self) -> Vec<(SocketAddr, Rule)> {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = rules.iter().map(|(a, r)| (*a, *r)).collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// Decides the fate of one message to or from `addr`.
    pub fn fate(&self, addr: &SocketAddr) -> Fate {
        if !self.enabled {
            return Fate::Pass;
        }
        let rule = {
            let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
            match rules.get(addr) {
                Some(r) => *r,
                None => return Fate::Pass,
            }
        };
        if rule.partitioned || (rule.loss_pct > 0 && rand::random::<u8>() % 100 < rule.loss_pct) {
            Fate::Drop
        } else if !rule.delay.is_zero() {
            Fate::Delay(rule.delay)
        } else {
            Fate::Pass
        }
    }
}

/// Peer RPC through the fault rules.
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    faults: Arc<Faults>,
}

impl FaultyTransport {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Transport>, faults: Arc<Faults>) -> Self {
        FaultyTransport { inner, faults }
    }
}

impl FaultyTransport {
    /// One call through the fault rules: `send` makes it, with the time
    /// left, unless the rules lose it.
    async fn through<F>(
        &self,
        to: SocketAddr,
        timeout: Duration,
        send: impl FnOnce(Duration) -> F,
    ) -> Result<Response, RpcError>
    where
        F: std::future::Future<Output = Result<Response, RpcError>>,
    {
        match self.faults.fate(&to) {
            Fate::Pass => send(timeout).await,
            // Across a partition a request just goes unanswered.
            Fate::Drop => {
                tokio::time::sleep(timeout).await;
                Err(RpcError::Timeout(timeout))
            }
            Fate::Delay(d) if d >= timeout => {
                tokio::time::sleep(timeout).await;
                Err(RpcError::Timeout(timeout))
            }
            Fate::Delay(d) => {
                tokio::time::sleep(d).await;
                send(timeout - d).await
            }
        }
    }
}

#[async_trait]
impl Transport for FaultyTransport {
    async fn call(
        &self,
        to: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        self.through(to, timeout, |t| self.inner.call(to, req, t))
            .await
    }

    async fn call_shared(
        &self,
        to: SocketAddr,
        req: &Shared,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        self.through(to, timeout, |t| self.inner.call_shared(to, req, t))
            .await
    }

    fn unreachable(&self, to: SocketAddr) -> bool {
        self.inner.unreachable(to)
    }
}

/// The node's gossip transport: UDP through the fault rules.
pub struct GossipTransport {
    faults: Arc<Faults>,
}

impl GossipTransport {
    /// A transport applying `faults`.
    pub fn new(faults: Arc<Faults>) -> Self {
        GossipTransport { faults }
    }
}

#[async_trait]
impl GossipTransportTrait for GossipTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let mut inner = UdpSocket::open(listen_addr).await?;
        let local = inner.local_addr()?;
        // One task owns the UDP socket: it sends what the channel brings and
        // forwards what arrives, so a delayed datagram can be sent later
        // without blocking gossip to other peers.
        let (send_tx, mut send_rx) = mpsc::channel::<(SocketAddr, ChitchatEnvelope)>(1024);
        let (recv_tx, recv_rx) = mpsc::channel::<anyhow::Result<RecvOutcome>>(1024);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = send_rx.recv() => match msg {
                        Some((to, env)) => {
                            if let Err(e) = inner.send(to, env).await {
                                warn!(%to, cause = %e, "gossip send failed");
                            }
                        }
                        // The gossip loop dropped its socket: stop.
                        None => break,
                    },
                    received = inner.recv() => {
                        let fatal = received.is_err();
                        if recv_tx.send(received).await.is_err() || fatal {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Box::new(GossipSocket {
            local,
            faults: self.faults.clone(),
            send_tx,
            recv_rx,
        }))
    }
}

struct GossipSocket {
    local: SocketAddr,
    faults: Arc<Faults>,
    send_tx: mpsc::Sender<(SocketAddr, ChitchatEnvelope)>,
    recv_rx: mpsc::Receiver<anyhow::Result<RecvOutcome>>,
}

#[async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        match self.faults.fate(&to) {
            Fate::Pass => {
                self.send_tx
                    .send((to, envelope))
                    .await
                    .map_err(|_| anyhow::anyhow!("gossip socket closed"))?;
            }
            Fate::Drop => {}
            Fate::Delay(d) => {
                let tx = self.send_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send((to, envelope)).await;
                });
            }
        }
        // The byte count only feeds chitchat's statistics.
        Ok(SendOutcome { num_bytes_sent: 0 })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let outcome = self
                .recv_rx
                .recv()
                .await
                .ok_or_else(|| anyhow::anyhow!("gossip socket closed"))??;
            if self.faults.fate(&outcome.from_addr) != Fate::Drop {
                return Ok(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_decide_fates() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let f = Faults::new(true);
        assert_eq!(f.fate(&a), Fate::Pass);
        f.update(a, |r| r.partitioned = true);
        f.update(b, |r| r.delay = Duration::from_millis(30));
        assert_eq!(f.fate(&a), Fate::Drop);
        assert_eq!(f.fate(&b), Fate::Delay(Duration::from_millis(30)));
        f.update(b, |r| r.loss_pct = 100);
        assert_eq!(f.fate(&b), Fate::Drop);
        f.update(b, |r| r.loss_pct = 0);
        assert_eq!(f.rules().len(), 2);
        f.heal();
        assert_eq!(f.fate(&a), Fate::Pass);
        assert!(f.rules().is_empty());
        // Disabled: rules are never applied.
        let off = Faults::new(false);
        off.update(a, |r| r.partitioned = true);
        assert_eq!(off.fate(&a), Fate::Pass);
    }
}
