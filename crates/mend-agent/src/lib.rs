//! mend-agent: the sidecar runtime. It owns the store, serves the Replica,
//! Peer and Operator gRPC services (plus health and reflection), drives the
//! exchange against peers, plans and applies repairs with a journal, and
//! serves HTTP status.
//!
//! Invariant: blocking store calls run on tokio's blocking pool, never on an
//! async worker; every operation returns an [`AgentError`], which only
//! `service/` turns into the `tonic::Status` that reaches the wire; never a
//! panic.

pub mod action_log;
pub mod actions;
pub mod auth;
pub mod backend;
pub mod dashboard;
pub mod deepen;
pub mod discovery;
pub mod error;
pub use mend_config as config;
pub mod cluster;
pub mod exchange;
pub mod gc;
pub mod health;
pub mod http;
pub mod journal;
pub mod link;
pub mod meta;
pub mod metrics;
pub mod monitor;
pub mod outcome;
pub mod pace;
pub mod peers;
pub mod repair;
pub mod report;
pub mod rows;
pub mod runs;
pub mod sample;
pub mod schedule;
pub mod scrub;
pub mod server;
pub mod service;
pub mod session;
pub mod shadow;
pub mod slots;
pub mod state;
pub mod sync_record;
pub mod wire;

pub use config::AgentConfig;
pub use error::AgentError;
pub use server::{RunningAgent, StartError, StopError, start};
pub use state::AgentState;
