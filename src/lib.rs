//! distro-db: a leaderless, Dynamo-style distributed key-value store.
pub mod object;
pub mod ring;
pub mod storage;
pub mod vclock;
