//! Peer authentication: who may speak the peer protocol and gossip.
//!
//! Every node of a cluster holds the same **peer key**, derived from the
//! cluster secret (`--cluster-secret`, `DISTRO_DB_CLUSTER_SECRET` or
//! `--cluster-secret-file`) and the cluster id with HMAC-SHA256. The secret
//! itself never crosses the wire.
//!
//! - **Peer connections** authenticate both ways before any request is
//!   read, by challenge and response over fresh nonces (so a recorded
//!   handshake cannot be replayed): after the preamble the client sends a
//!   32-byte nonce; the server answers with its own nonce and
//!   `HMAC(key, "server" | client nonce | server nonce)`; the client checks
//!   it and answers `HMAC(key, "client" | client nonce | server nonce)`,
//!   which the server checks. Either side closes on a wrong tag. Over TLS
//!   both tags also cover a TLS exporter value of the session
//!   ([`crate::tls::Stream::binding`]), so a handshake cannot be relayed
//!   from one TLS session into another.
//! - **Gossip** runs under a chitchat cluster id only holders of the key
//!   can compute ([`PeerKey::gossip_cluster_id`]), so chitchat ignores a
//!   node with another secret: it is never listed and never owns
//!   partitions. (Sealing each datagram, [`PeerKey::seal`], needs
//!   chitchat's message encoding, which chitchat 0.13 keeps private.)
//!
//! Without a secret the key is derived from the empty secret: it still
//! tells clusters with different ids apart, but authenticates nothing, and
//! a node without a secret listens only on loopback unless
//! `--insecure-peers` says otherwise (see [`crate::config`]).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// HMAC-SHA256, the one MAC of the crate (peer handshakes, context tokens).
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Bytes of a nonce and of a tag.
pub const TAG_LEN: usize = 32;
/// Longest a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The key peers prove they hold (never sent).
#[derive(Clone)]
pub struct PeerKey([u8; 32]);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The other side's tag is wrong: another secret, or another cluster.
    #[error(
        "peer authentication failed: the other side holds another cluster secret or cluster id"
    )]
    BadTag,
    /// The connection failed or timed out during the handshake.
    #[error("peer handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// An HMAC-SHA256 keyed with `key`.
pub(crate) fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// A key for one purpose (`label`) of cluster `cluster_id`, derived from
/// `secret` (empty: no secret): `HMAC-SHA256(secret, label | cluster id)`.
/// Each purpose has its own label, so a key for one never serves another;
/// every node of a cluster derives the same keys.
pub(crate) fn derive_key(secret: &[u8], label: &[u8], cluster_id: &str) -> [u8; 32] {
    let mut m = mac(secret);
    m.update(label);
    m.update(cluster_id.as_bytes());
    m.finalize().into_bytes().into()
}

impl PeerKey {
    /// The key of cluster `cluster_id` with `secret` (empty: no secret).
    pub fn derive(secret: &[u8], cluster_id: &str) -> PeerKey {
        PeerKey(derive_key(secret, b"distro-db peer key v1\0", cluster_id))
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut m = mac(&self.0);
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    fn check(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut m = mac(&self.0);
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }

    /// A name for the cluster in gossip that only holders of the key can
    /// compute: chitchat ignores packets of another cluster id, so a node
    /// with another secret never enters the member list. (It is sent in
    /// clear in every packet: an eavesdropper on the network can copy it;
    /// sealing every packet, [`PeerKey::seal`], is the full answer.)
    pub fn gossip_cluster_id(&self, cluster_id: &str) -> String {
        let t = self.tag(&[b"gossip cluster id"]);
        let hex: String = t[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{cluster_id}.{hex}")
    }

    /// The binding of node `id` to the data directory holding `nonce`
    /// ([`crate::identity::binding_nonce`]): the same directory gives the
    /// same binding in the same cluster, and nothing else does.
    pub fn binding(&self, id: &str, nonce: &[u8; 16]) -> u64 {
        let t = self.tag(&[b"node binding\0", id.as_bytes(), b"\0", nonce]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&t[..8]);
        u64::from_be_bytes(b)
    }

    /// A gossip packet with its tag appended.
    pub fn seal(&self, packet: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(packet.len() + TAG_LEN);
        out.extend_from_slice(packet);
        out.extend_from_slice(&self.tag(&[b"gossip", packet]));
        out
    }

    /// The packet inside a sealed gossip packet, if its tag is right.
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let cut = sealed.len().checked_sub(TAG_LEN)?;
        let (packet, tag) = sealed.split_at(cut);
        self.check(&[b"gossip", packet], tag).then_some(packet)
    }
}

fn nonce() -> [u8; TAG_LEN] {
    rand::random()
}

/// The client side, after the preamble was written: proves this node holds
/// the key and checks that the server does.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &PeerKey,
) -> Result<(), AuthError> {
    client_bound(stream, key, &[]).await
}

/// [`client`], both tags also covering `binding` (the TLS session's
/// exporter value; empty in plain text, which leaves the tags unchanged).
pub async fn client_bound<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &PeerKey,
    binding: &[u8],
) -> Result<(), AuthError> {
    let run = async {
        let mine = nonce();
        stream.write_all(&mine).await?;
        stream.flush().await?;
        let mut answer = [0u8; 2 * TAG_LEN];
        stream.read_exact(&mut answer).await?;
        let (theirs, tag) = answer.split_at(TAG_LEN);
        if !key.check(&[b"server", &mine, theirs, binding], tag) {
            return Err(AuthError::BadTag);
        }
        stream
            .write_all(&key.tag(&[b"client", &mine, theirs, binding]))
            .await?;
        stream.flush().await?;
        Ok(())
    };
    within(run).await
}

/// The server side, after the preamble was read: proves this node holds
/// the key and checks that the client does.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &PeerKey,
) -> Result<(), AuthError> {
    server_bound(stream, key, &[]).await
}

/// [`server`], both tags also covering `binding` (see [`client_bound`]).
pub async fn server_bound<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &PeerKey,
    binding: &[u8],
) -> Result<(), AuthError> {
    let run = async {
        let mut theirs = [0u8; TAG_LEN];
        stream.read_exact(&mut theirs).await?;
        let mine = nonce();
        let mut answer = [0u8; 2 * TAG_LEN];
        answer[..TAG_LEN].copy_from_slice(&mine);
        answer[TAG_LEN..].copy_from_slice(&key.tag(&[b"server", &theirs, &mine, binding]));
        stream.write_all(&answer).await?;
        stream.flush().await?;
        let mut tag = [0u8; TAG_LEN];
        stream.read_exact(&mut tag).await?;
        if !key.check(&[b"client", &theirs, &mine, binding], &tag) {
            return Err(AuthError::BadTag);
        }
        Ok(())
    };
    within(run).await
}

async fn within(
    run: impl std::future::Future<Output = Result<(), AuthError>>,
) -> Result<(), AuthError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            Err(AuthError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(a: PeerKey, b: PeerKey) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (mut c, mut s) = tokio::io::duplex(1024);
        // Each side closes its end when done, as a connection would.
        tokio::join!(async move { client(&mut c, &a).await }, async move {
            server(&mut s, &b).await
        })
    }

    #[tokio::test]
    async fn both_sides_must_hold_the_key() {
        let k = PeerKey::derive(b"s3cret", "prod");
        let (c, s) = pair(k.clone(), k.clone()).await;
        assert!(c.is_ok() && s.is_ok());
        // Another secret, or another cluster id: the client refuses the
        // server's proof and the server never gets one.
        for other in [
            PeerKey::derive(b"other", "prod"),
            PeerKey::derive(b"s3cret", "test"),
            PeerKey::derive(b"", "prod"),
        ] {
            let (c, s) = pair(other.clone(), k.clone()).await;
            assert!(matches!(c, Err(AuthError::BadTag)), "{c:?}");
            assert!(s.is_err());
            let (c, s) = pair(k.clone(), other).await;
            assert!(matches!(c, Err(AuthError::BadTag)));
            assert!(s.is_err());
        }
    }

    #[tokio::test]
    async fn a_replayed_client_answer_is_refused() {
        // The server's fresh nonce changes what the client must answer: a
        // client that replays the last answer it saw fails.
        let k = PeerKey::derive(b"s3cret", "prod");
        let (mut c, mut s) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { server(&mut s, &k).await });
        let old_nonce = [7u8; TAG_LEN];
        c.write_all(&old_nonce).await.unwrap();
        let mut answer = [0u8; 2 * TAG_LEN];
        c.read_exact(&mut answer).await.unwrap();
        let k2 = PeerKey::derive(b"s3cret", "prod");
        let other_server_nonce = [9u8; TAG_LEN];
        let recorded = k2.tag(&[b"client", &old_nonce, &other_server_nonce]);
        c.write_all(&recorded).await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(AuthError::BadTag)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let k = PeerKey::derive(b"x", "c");
        let (_c, mut s) = tokio::io::duplex(1024);
        assert!(matches!(server(&mut s, &k).await, Err(AuthError::Io(_))));
    }

    #[test]
    fn the_gossip_cluster_id_depends_on_the_secret() {
        let a = PeerKey::derive(b"s3cret", "prod").gossip_cluster_id("prod");
        assert!(a.starts_with("prod."));
        assert_eq!(
            a,
            PeerKey::derive(b"s3cret", "prod").gossip_cluster_id("prod")
        );
        assert_ne!(
            a,
            PeerKey::derive(b"other", "prod").gossip_cluster_id("prod")
        );
        assert!(!a.contains("s3cret"));
    }

    #[test]
    fn gossip_packets_are_sealed_and_checked() {
        let k = PeerKey::derive(b"s3cret", "prod");
        let sealed = k.seal(b"hello");
        assert_eq!(k.open(&sealed), Some(&b"hello"[..]));
        assert_eq!(PeerKey::derive(b"other", "prod").open(&sealed), None);
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(k.open(&flipped), None);
        assert_eq!(k.open(b"short"), None);
        assert_eq!(k.open(b""), None);
    }
}
