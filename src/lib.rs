//! distro-db: a leaderless, Dynamo-style distributed key-value store.
//!
//! # Layout
//!
//! Pure parts (no I/O, unit- and property-tested):
//! - [`vclock`]: vector clocks over server actors.
//! - [`object`]: versioned objects with siblings (dotted version vectors).
//! - [`token`]: the context tokens clients pass back (`CTX=`),
//!   authenticated with a cluster key.
//! - [`keyspace`]: key hashing, the 1024 fixed partitions and their buckets.
//! - [`cluster::layout`], [`cluster::assign`]: the versioned layout and the
//!   balanced assignment of partitions to members.
//! - [`coordinator::quorum`], [`coordinator::plan`]: the quorum tracker and
//!   the sloppy-quorum plan.
//! - [`api::resp`], [`api::commands`], [`rpc::frame`], [`rpc::message`]:
//!   the client and peer codecs and messages.
//! - [`clock`]: the wall-clock seam (system time, or moved by hand in tests).
//! - [`config`], [`limits`], [`epoch`]: settings, connection and memory
//!   limits, and the rule for keeping a vector-clock epoch.
//! - [`config_file`]: the `--config` TOML file, merged under flags and the
//!   environment; [`logs`]: the log filter, format and destination.
//! - [`acl`]: client users, their rights and `AUTH`'s check.
//!
//! On disk: [`durable`] (atomic, fsynced file writes; every file a node
//! writes goes through it) and [`identity`] (the node id a data directory
//! belongs to, checked at start).
//!
//! The data path, top to bottom (each arrow points down):
//! - [`server`]: the TCP port; admits connections (through [`tls`] when the
//!   node has a certificate) and tells clients from peers.
//! - [`api`]: client sessions (pipelined) and commands → [`coordinator`].
//! - [`coordinator`]: quorum reads and writes over narrow handles →
//!   [`rpc`] (transport), [`replica`], [`hints`], [`cluster`] (views).
//! - [`rpc`]: the peer protocol (multiplexed TCP, or in memory for tests)
//!   and the [`coordinator::service::PeerService`] that answers peers.
//! - [`replica`], [`hints`]: versioned objects in a [`storage::Store`].
//! - [`storage`]: the log-structured engine and the in-memory one.
//!
//! Around it: [`node`] (wires the parts, stops them in order), [`workers`]
//! (hint delivery, anti-entropy), [`observe`] (`--metrics`: Prometheus
//! metrics, health and readiness, the status page), [`cluster::membership`] (chitchat gossip),
//! [`fault`] (fault injection at the seams), and the REPL side:
//! [`client`], [`repl`] and [`local`]. The load generator `db-bench` is a
//! crate of its own (benches/loadgen), built on [`resp`] and [`tls`].
//!
//! Data lifecycle: [`backup`] (`db backup` / `db restore` of one node's
//! store, and the node's `BACKUP` sessions) and [`dump`] (`db dump` /
//! `db load`: a cluster-wide export of live keys with their clocks).

pub mod acl;
pub mod api;
pub mod backup;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod coordinator;
pub mod dump;
pub mod durable;
pub mod epoch;
pub mod fault;
pub mod heap;
pub mod hints;
pub mod identity;
pub mod keyspace;
pub mod limits;
pub mod local;
pub mod logs;
pub mod node;
pub mod object;
pub mod observe;
pub mod quiet;
pub mod random;
pub mod repl;
pub mod replica;
pub mod rpc;
pub mod server;
pub mod storage;
pub mod text;
pub mod tls;
pub mod token;
pub mod vclock;
pub mod workers;
pub mod write;

/// The RESP codec, also at the crate root for clients and tests.
pub use api::resp;
