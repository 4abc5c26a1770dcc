//! The gRPC services: one module each.

pub mod ingest;
pub mod operator;
pub mod peer;
pub mod replica;
pub mod status_report;

use tonic::Status;

use crate::error::AgentError;

/// The wire status of an agent error: the one place the domain's error
/// becomes a gRPC status (so "retry later" stays `UNAVAILABLE`, a bug
/// `INTERNAL`, a request the configuration cannot serve
/// `FAILED_PRECONDITION`).
impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        let m = e.to_string();
        match e {
            AgentError::Invalid(_) => Status::invalid_argument(m),
            AgentError::NotFound(_) => Status::not_found(m),
            AgentError::Precondition(_) => Status::failed_precondition(m),
            AgentError::Unavailable(_) => Status::unavailable(m),
            AgentError::Exhausted(_) => Status::resource_exhausted(m),
            AgentError::Timeout(_) => Status::deadline_exceeded(m),
            AgentError::Denied(_) => Status::permission_denied(m),
            AgentError::Corrupt(_) => Status::data_loss(m),
            AgentError::Internal(_) => Status::internal(m),
        }
    }
}
