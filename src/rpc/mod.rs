//! Peer RPC: how nodes talk to each other.
//!
//! - [`message`]: the request and response types, and the typed errors
//!   that cross the wire.
//! - [`frame`]: the wire format (a preamble, then length-prefixed rmp-serde
//!   frames carrying a protocol version and a request id).
//! - [`transport`]: the [`Transport`] seam every outgoing call goes through.
//! - [`tcp`]: the multiplexed TCP transport and the server side of a peer
//!   connection.
//! - [`memory`]: an in-memory network for deterministic tests.
//! - [`service`]: the [`service::PeerService`] that answers peer requests.

pub mod frame;
pub mod memory;
pub mod message;
pub mod service;
pub mod tcp;
pub mod transport;

pub use message::{Request, Response};
pub use tcp::TcpTransport;
pub use transport::{RpcError, Transport};
