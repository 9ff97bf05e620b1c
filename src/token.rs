//! Context tokens: the opaque `CTX=` value a client gets from `VGET` and
//! hands back to `SET` or `VDEL`, and the cluster key that authenticates
//! them.
//!
//! A token is base64url (no padding) of
//! `version (1 byte) | msgpack(clock) | tag (16 bytes)`, where the tag is
//! HMAC-SHA256 under the cluster's [`ContextKey`] over
//! `key length (8 bytes, big-endian) | key | version | msgpack(clock)`,
//! truncated to [`TAG_LEN`] bytes. The key name is not in the token, only
//! in the tag: a token read from one key does not verify on another.
//!
//! Every node of a cluster derives the same context key from the cluster
//! secret and the cluster id ([`crate::rpc::auth::derive_key`], with a
//! label of its own, so it is never the peer key), so a token issued by
//! one node is accepted by any other. Without a secret the key comes from
//! the cluster id alone: tokens are then checked against accidents (a
//! token of another key or cluster, a truncated or altered one), not
//! against an attacker who knows the cluster id (docs/security.md).
//!
//! A client therefore cannot forge a clock: the only way from a [`Token`]
//! to its clock is [`ContextKey::verify`], which checks the tag in
//! constant time, then decodes the clock and checks it as any clock from
//! outside ([`crate::object::validate_clock`]: actor names and the
//! counter bound, even under a valid tag). Every failure, old unversioned
//! tokens included, answers the same [`BAD_TOKEN`] error, which tells the
//! client to read the key again. A token that is merely old (an earlier
//! read of the same key) still verifies: it is the context of that read,
//! and a write with it keeps what the read did not see as siblings.

use base64::Engine as _;
use hmac::Mac;

use crate::rpc::auth::{HmacSha256, derive_key, mac};
use crate::vclock::VClock;

/// Bytes of the tag a token carries (a truncated HMAC-SHA256).
pub const TAG_LEN: usize = 16;
/// The token format this node issues and accepts.
const VERSION: u8 = 2;
/// Separates the context key from every other key of the cluster.
const LABEL: &[u8] = b"distro-db context key v1\0";

/// The error a client gets for any token that does not verify (Redis-style
/// code, then the reason and what to do).
pub const BAD_TOKEN: &str = "BADCTX context token refused: it was not issued for this key by this \
     cluster, or it was altered or cut; read the key again with VGET and pass its CTX";

/// Why a token was refused (the client sees [`BAD_TOKEN`] either way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64url, too short, another version, or the tag does not
    /// match: another key, another cluster, altered or truncated.
    #[error("{BAD_TOKEN}")]
    Refused,
    /// The tag matched but the clock breaks the clock rules (a counter
    /// past the bound): only a holder of the context key could make it.
    #[error("{BAD_TOKEN}")]
    BadClock(crate::object::ObjectError),
}

/// The key tokens are authenticated with (never sent, never logged).
#[derive(Clone)]
pub struct ContextKey(HmacSha256);

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

/// A token as a client sent it, not yet checked: the only way to its clock
/// is [`ContextKey::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The text after `CTX=`.
    pub fn new(text: &str) -> Token {
        Token(text.trim().to_string())
    }
}

impl ContextKey {
    /// The context key of cluster `cluster_id` with `secret` (empty: no
    /// secret, see the module doc).
    pub fn derive(secret: &[u8], cluster_id: &str) -> ContextKey {
        ContextKey(mac(&derive_key(secret, LABEL, cluster_id)))
    }

    /// The HMAC state over everything the tag covers: the keyed state is
    /// cloned, so the key schedule is not redone per token.
    fn tagger(&self, key: &[u8], body: &[u8]) -> HmacSha256 {
        let mut m = self.0.clone();
        m.update(&(key.len() as u64).to_be_bytes());
        m.update(key);
        m.update(body);
        m
    }

    /// The token of `key` whose context is `clock`.
    pub fn encode(&self, key: &[u8], clock: &VClock) -> String {
        let mut bytes = Vec::with_capacity(32 + 24 * clock.len());
        bytes.push(VERSION);
        // Serialising a map of strings to integers into a Vec cannot fail.
        let _ = rmp_serde::encode::write(&mut bytes, clock);
        let tag = self.tagger(key, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The clock of `token` if this cluster issued it for `key` and the
    /// clock is within the clock rules.
    pub fn verify(&self, key: &[u8], token: &Token) -> Result<VClock, TokenError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token.0)
            .map_err(|_| TokenError::Refused)?;
        let cut = bytes
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&n| n > 1)
            .ok_or(TokenError::Refused)?;
        let (body, tag) = bytes.split_at(cut);
        if body[0] != VERSION {
            return Err(TokenError::Refused);
        }
        // Constant time: the comparison does not tell how many bytes matched.
        self.tagger(key, body)
            .verify_truncated_left(tag)
            .map_err(|_| TokenError::Refused)?;
        // Only now, with the tag checked, is the clock decoded.
        let clock: VClock = rmp_serde::from_slice(&body[1..]).map_err(|_| TokenError::Refused)?;
        crate::object::validate_clock(&clock).map_err(TokenError::BadClock)?;
        Ok(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vclock::MAX_COUNTER;
    use proptest::prelude::*;

    fn key() -> ContextKey {
        ContextKey::derive(b"s3cret", "prod")
    }

    fn clock(entries: &[(&str, u64)]) -> VClock {
        entries.iter().map(|(a, c)| (a.to_string(), *c)).collect()
    }

    fn raw(token: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap()
    }

    fn text(bytes: &[u8]) -> Token {
        Token(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    #[test]
    fn a_token_round_trips_on_its_key_and_any_node_of_the_cluster() {
        let c = clock(&[("n1/1", 3), ("n2/1", 1)]);
        let t = key().encode(b"k", &c);
        // Another node derives the same key from the same secret and id.
        let other_node = ContextKey::derive(b"s3cret", "prod");
        assert_eq!(other_node.verify(b"k", &Token::new(&t)), Ok(c.clone()));
        // Surrounding blanks are not part of the token.
        assert_eq!(key().verify(b"k", &Token::new(&format!(" {t}\n"))), Ok(c));
        // The empty clock (a key never written) has a token too.
        let empty = key().encode(b"k", &VClock::new());
        assert_eq!(key().verify(b"k", &Token::new(&empty)), Ok(VClock::new()));
    }

    #[test]
    fn foreign_tokens_are_refused() {
        let c = clock(&[("n1/1", 3)]);
        let t = Token::new(&key().encode(b"k", &c));
        // Another key, including a prefix or extension of the name.
        for other in [&b"other"[..], b"", b"k\0", b"kk"] {
            assert_eq!(key().verify(other, &t), Err(TokenError::Refused));
        }
        // Another secret, another cluster id, no secret.
        for k in [
            ContextKey::derive(b"other", "prod"),
            ContextKey::derive(b"s3cret", "test"),
            ContextKey::derive(b"", "prod"),
        ] {
            assert_eq!(k.verify(b"k", &t), Err(TokenError::Refused));
        }
        // The peer key of the same cluster is not the context key.
        let peer = derive_key(b"s3cret", b"distro-db peer key v1\0", "prod");
        let mut m = mac(&peer);
        let mut body = raw(&key().encode(b"k", &c));
        body.truncate(body.len() - TAG_LEN);
        m.update(&1u64.to_be_bytes());
        m.update(b"k");
        m.update(&body);
        body.extend_from_slice(&m.finalize().into_bytes()[..TAG_LEN]);
        assert_eq!(key().verify(b"k", &text(&body)), Err(TokenError::Refused));
    }

    #[test]
    fn old_and_malformed_tokens_are_refused_with_the_read_again_error() {
        // The unauthenticated format of earlier versions: msgpack of
        // (32-bit key tag, clock).
        let tag = (crate::keyspace::key_hash(b"k") >> 32) as u32;
        let old = rmp_serde::to_vec(&(tag, clock(&[("n1/1", 3)]))).unwrap();
        let old = text(&old);
        assert_eq!(key().verify(b"k", &old), Err(TokenError::Refused));
        for bad in ["", "not a token!", "AAAA", "Ag", &"A".repeat(100)] {
            assert_eq!(
                key().verify(b"k", &Token::new(bad)),
                Err(TokenError::Refused),
                "{bad}"
            );
        }
        let e = TokenError::Refused.to_string();
        assert!(e.starts_with("BADCTX ") && e.contains("read the key again"));
    }

    #[test]
    fn a_clock_past_the_bound_is_refused_even_under_a_valid_tag() {
        for c in [MAX_COUNTER + 1, u64::MAX - 1, u64::MAX] {
            let forged = key().encode(b"k", &clock(&[("n1/1", c)]));
            assert!(matches!(
                key().verify(b"k", &Token::new(&forged)),
                Err(TokenError::BadClock(_))
            ));
        }
        let at = clock(&[("n1/1", MAX_COUNTER)]);
        let t = key().encode(b"k", &at);
        assert_eq!(key().verify(b"k", &Token::new(&t)), Ok(at));
    }

    fn clocks() -> impl Strategy<Value = VClock> {
        proptest::collection::btree_map("[a-z]{1,12}/[0-9a-f]{1,8}", 1u64..1 << 40, 0..6)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn any_bit_flip_or_cut_is_refused(
            c in clocks(),
            k in proptest::collection::vec(any::<u8>(), 0..40),
            bit in any::<usize>(),
            cut in any::<usize>(),
        ) {
            let t = key().encode(&k, &c);
            prop_assert_eq!(key().verify(&k, &Token::new(&t)), Ok(c.clone()));
            let bytes = raw(&t);
            let mut flipped = bytes.clone();
            let bit = bit % (bytes.len() * 8);
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(key().verify(&k, &text(&flipped)), Err(TokenError::Refused));
            let cut = cut % bytes.len();
            prop_assert_eq!(key().verify(&k, &text(&bytes[..cut])), Err(TokenError::Refused));
            // Cut in its text form too (base64 characters dropped).
            let n = cut % t.len();
            prop_assert!(key().verify(&k, &Token::new(&t[..n])).is_err());
        }
    }
}
