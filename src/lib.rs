//! distro-db: a leaderless, Dynamo-style distributed key-value store.
pub mod storage;
