//! Peer RPC: how nodes talk to each other.
//!
//! - [`message`]: the request and response types, and the typed errors
//!   that cross the wire.
//! - [`frame`]: the wire format (a preamble, then length-prefixed rmp-serde
//!   frames carrying a protocol version and a request id).
//! - [`transport`]: the [`Transport`] seam every outgoing call goes through.
//! - [`call`]: typed calls: each request with the answer it expects.
//! - [`tcp`]: the multiplexed TCP transport and the server side of a peer
//!   connection.
//! - [`auth`]: the peer key, and the handshake both sides of a peer
//!   connection run before any request.
//! - [`memory`]: an in-memory network for deterministic tests.
//!
//! What a request does is not this module's business: incoming requests go
//! to a [`Handler`] (the node's is [`crate::coordinator::service`]).

pub mod auth;
pub mod call;
pub mod frame;
pub mod memory;
pub mod message;
pub mod tcp;
pub mod transport;

pub use call::{Answer, CallError, ask, ask_shared};
pub use message::{Request, Response};
pub use tcp::TcpTransport;
pub use transport::{Handler, RpcError, Shared, Transport};
