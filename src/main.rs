//! The `db` binary.
fn main() {}
