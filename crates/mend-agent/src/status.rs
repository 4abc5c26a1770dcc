//! Mapping of domain errors to gRPC statuses.

use tonic::Status;

use mend_core::exchange::ExchangeError;
use mend_store::StoreError;

/// A store error as a gRPC status: bad input is `INVALID_ARGUMENT`,
/// retryable engine errors `UNAVAILABLE`, corruption `DATA_LOSS`, a write
/// or read that does not fit the range's mode `FAILED_PRECONDITION`.
pub fn from_store(e: StoreError) -> Status {
    match &e {
        StoreError::Input(_) => Status::invalid_argument(e.to_string()),
        StoreError::Backend {
            retryable: true, ..
        }
        | StoreError::Locked { .. } => Status::unavailable(e.to_string()),
        StoreError::Corrupt(_) => Status::data_loss(e.to_string()),
        StoreError::SecretMismatch { .. }
        | StoreError::ParamsMismatch(_)
        | StoreError::NotAStore { .. }
        | StoreError::WrongMode { .. } => Status::failed_precondition(e.to_string()),
        StoreError::Backend { .. } => Status::internal(e.to_string()),
    }
}

/// An exchange error as a gRPC status.
pub fn from_exchange(e: ExchangeError) -> Status {
    match e {
        ExchangeError::Protocol(m) => Status::invalid_argument(m),
        ExchangeError::Local(m) => Status::internal(m),
        ExchangeError::Limit(m) => Status::resource_exhausted(m),
    }
}

/// A failed blocking task (a panic in store code) as a status.
pub fn from_join(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("store task failed: {e}"))
}
