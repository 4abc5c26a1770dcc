//! End-to-end tests of the root package, in one binary (STYLE point 11):
//! real `mend agent` processes over mutual TLS (agents, security, hostile
//! peers, diagnostics, reports, tree shapes, ingest into digest-only ranges
//! across a SIGKILL, coordinated schedules of six
//! agents, segmented repairs paused, resumed and killed), the dashboard in headless Chromium (dashboard; its operator actions
//! clicked over WebDriver, dashboard_actions), the deployment
//! files run as written (deploy), the fault campaign on real processes
//! (campaign), crash safety of the RocksDB-backed store under SIGKILL, and
//! the `mend` CLI (store, plan, simulate, demo) run as real processes
//! against real data directories.

#![allow(clippy::unwrap_used)]

mod agents;
mod campaign;
mod dashboard;
mod dashboard_actions;
mod demo;
mod deploy;
mod diagnostics;
mod discovery;
mod harness;
mod hostile;
mod ingest;
mod plan;
mod reports;
mod schedules;
mod security;
mod segments;
mod shapes;
mod simulate;
mod store_cli;
mod store_crash;
