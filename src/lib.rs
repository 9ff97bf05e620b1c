//! distro-db: a leaderless, Dynamo-style distributed key-value store.
//!
//! # Layout
//!
//! Pure parts (no I/O, unit- and property-tested):
//! - [`vclock`]: vector clocks over server actors.
//! - [`object`]: versioned objects with siblings (dotted version vectors).
//! - [`ring`]: the consistent-hash ring with virtual nodes.
//! - [`resp`]: the Redis protocol codec; [`rpc::frame`]: the peer frame codec.
//! - [`command`]: client command parsing; [`config`]: configuration and defaults.
//!
//! Wiring (sockets and tasks):
//! - [`node`]: builds and stops a node; [`server`]: its TCP port (RESP and peer RPC).
//! - [`coordinator`]: quorum reads and writes, sloppy quorum, read repair.
//! - [`anti_entropy`]: Merkle-tree exchanges between replicas.
//! - [`replica`]: the local copy over a [`storage::Store`]; [`handoff`]: hints kept for down nodes.
//! - [`membership`]: chitchat gossip, members and liveness.
//! - [`rpc`]: peer messages and the transport seam; [`fault`]: fault injection at the seams.
//! - [`client`], [`repl`]: the REPL and its RESP client; [`local`]: `db local`.
//! - [`bench`]: `db bench`, a closed-loop load generator (RESP, and etcd's HTTP gateway).

pub mod anti_entropy;
pub mod bench;
pub mod client;
pub mod command;
pub mod config;
pub mod coordinator;
pub mod fault;
pub mod handoff;
pub mod local;
pub mod membership;
pub mod node;
pub mod object;
pub mod repl;
pub mod replica;
pub mod resp;
pub mod ring;
pub mod rpc;
pub mod server;
pub mod storage;
pub mod vclock;
