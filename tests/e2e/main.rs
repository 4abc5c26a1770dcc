//! End-to-end tests of the root package, in one binary (STYLE point 11):
//! real processes (the `mend` binary; for `store_crash`, this binary
//! re-executed), RocksDB in temporary directories, agents on loopback over
//! mutual TLS from a test CA. One module per area:
//!
//! - `harness`: shared helpers (agent processes, certificates, the CLI); no tests;
//! - `agents`: diff, repair and undo between real agents; a write racing a
//!   throttled repair; peers killed mid-exchange and mid-repair; malformed
//!   and over-limit requests; reflection and health;
//! - `security`: callers with missing, foreign, wrong-role, expired and
//!   rotated certificates, unlisted peer addresses, plaintext off loopback,
//!   floods, far-future versions, ranges of one name with other bounds;
//! - `hostile`: a hostile peer server (packed bomb, endless listing, entries
//!   it was not asked for) and readers that stop reading;
//! - `diagnostics`: categories, attribution, drift budgets with webhook
//!   alerts, playbooks, shadow runs, sampling, `/metrics`;
//! - `reports`: a wiped replica named as one cause, `mend report`;
//! - `shapes`: wide trees whose probes exceed one gRPC message;
//! - `ingest`: the Ingest service into digest-only ranges across a SIGKILL;
//! - `postgres`: the `mend-pg` adapter against real PostgreSQL servers
//!   (snapshot + slot stream = a full scan across an adapter crash and an
//!   agent SIGKILL, divergence by SQL found by category and repaired in
//!   SQL, bad configurations, `mend attach`);
//! - `schedules`: six agents' coordinated schedules, and a control run without;
//! - `segments`: segmented repairs paused, resumed, cancelled and killed;
//! - `discovery`: peers found in DNS (SRV and A records) and remembered;
//! - `plan`: `mend plan`'s model against measured runs of two agents;
//! - `campaign`: the fault campaign (fault proxies, SIGKILL, SIGSTOP) on
//!   three agents;
//! - `dashboard`: the page in headless Chromium, with a screenshot; its
//!   reports, `/status`'s and `mend diff --json` read as one `DiffReport`;
//! - `dashboard_actions`: the page's operator actions clicked over WebDriver;
//! - `deploy`: `deploy/`: the Kubernetes example's config run by a real
//!   agent, its peers against the StatefulSet, the systemd unit's command
//!   and hardening;
//! - `demo`: `mend demo` as a newcomer runs it, and `mend demo --postgres`;
//! - `simulate`: `mend simulate` (drills and `--seeds`);
//! - `store_cli`: `mend store verify` and `mend store stats` on prepared
//!   data directories;
//! - `store_crash`: the store under SIGKILL, with this binary re-executed as
//!   the writer.

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
mod postgres;
mod reports;
mod schedules;
mod security;
mod segments;
mod shapes;
mod simulate;
mod store_cli;
mod store_crash;
