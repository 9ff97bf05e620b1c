//! Peer RPC: how nodes talk to each other over TCP.
//!
//! - [`message`]: the request and response types.
//! - [`frame`]: the wire format (a preamble, then length-prefixed rmp-serde
//!   frames carrying a protocol version and a request id) and its decoder.
//! - [`transport`]: the [`Transport`](transport::Transport) seam every
//!   outgoing call goes through, and its TCP implementation with pooled
//!   connections and a timeout on every call.
//!
//! The server side lives in [`crate::server`], which tells peer connections
//! from RESP clients by their first byte ([`frame::PREAMBLE`]).

pub mod frame;
pub mod message;
pub mod transport;

pub use message::{Request, Response};
pub use transport::{RpcError, TcpTransport, Transport};
