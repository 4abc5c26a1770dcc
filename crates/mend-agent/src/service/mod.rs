//! The gRPC services: one module each.

pub mod ingest;
pub mod operator;
pub mod peer;
pub mod replica;

use mend_core::Decision;

/// The wire name of an apply decision.
pub fn decision_str(d: Decision) -> &'static str {
    match d {
        Decision::Apply => "apply",
        Decision::Stale => "stale",
        Decision::Duplicate => "duplicate",
        Decision::Conflict => "conflict",
    }
}
