//! End-to-end tests of the root package, in one binary (STYLE point 11):
//! crash safety of the RocksDB-backed store under SIGKILL, and the `mend
//! store` commands run as real processes against real data directories.

#![allow(clippy::unwrap_used)]

mod agents;
mod diagnostics;
mod harness;
mod hostile;
mod plan;
mod security;
mod shapes;
mod simulate;
mod store_cli;
mod store_crash;
