//! The gRPC services: one module each.

pub mod ingest;
pub mod operator;
pub mod peer;
pub mod replica;
pub mod status_report;
