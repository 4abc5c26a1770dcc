//! The agent's error: what went wrong, by what the caller can do about it.
//!
//! Every operation of the agent (diff, repair, undo, sample, purge, …)
//! returns [`AgentError`]; only `service/` turns it into a `tonic::Status`
//! (`From<AgentError> for Status` there), so the kind survives from the
//! store or the peer up to the wire: a retryable RocksDB error or an
//! unreachable peer is `UNAVAILABLE` ("retry later"), a bug `INTERNAL`,
//! a request the current configuration cannot serve `FAILED_PRECONDITION`.

use mend_core::exchange::ExchangeError;
use mend_store::StoreError;

/// Why an agent operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed or outside a documented limit; retrying
    /// the same request fails the same way.
    #[error("{0}")]
    Invalid(String),
    /// A peer, range, repair or run the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served in the current state (a range's mode,
    /// a missing adapter, a configuration, a store of another cluster);
    /// retrying helps only after an operator changes something.
    #[error("{0}")]
    Precondition(String),
    /// Retry later: the store is busy or locked, a peer or an adapter's
    /// store cannot be reached, a connection was lost.
    #[error("{0}")]
    Unavailable(String),
    /// A bounded resource is full (slots, reply streams, message sizes):
    /// retry later or with a smaller request.
    #[error("{0}")]
    Exhausted(String),
    /// A peer did not answer within its deadline: retry later.
    #[error("{0}")]
    Timeout(String),
    /// The caller or this agent lacks the role the call needs.
    #[error("{0}")]
    Denied(String),
    /// Stored or received data is corrupt.
    #[error("{0}")]
    Corrupt(String),
    /// A bug, or a failure nothing can recover from by retrying.
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    /// [`AgentError::Invalid`].
    pub fn invalid(m: impl Into<String>) -> AgentError {
        AgentError::Invalid(m.into())
    }
    /// [`AgentError::NotFound`].
    pub fn not_found(m: impl Into<String>) -> AgentError {
        AgentError::NotFound(m.into())
    }
    /// [`AgentError::Precondition`].
    pub fn precondition(m: impl Into<String>) -> AgentError {
        AgentError::Precondition(m.into())
    }
    /// [`AgentError::Unavailable`].
    pub fn unavailable(m: impl Into<String>) -> AgentError {
        AgentError::Unavailable(m.into())
    }
    /// [`AgentError::Exhausted`].
    pub fn exhausted(m: impl Into<String>) -> AgentError {
        AgentError::Exhausted(m.into())
    }
    /// [`AgentError::Timeout`].
    pub fn timeout(m: impl Into<String>) -> AgentError {
        AgentError::Timeout(m.into())
    }
    /// [`AgentError::Denied`].
    pub fn denied(m: impl Into<String>) -> AgentError {
        AgentError::Denied(m.into())
    }
    /// [`AgentError::Internal`].
    pub fn internal(m: impl Into<String>) -> AgentError {
        AgentError::Internal(m.into())
    }

    /// Whether retrying the same call later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            AgentError::Unavailable(_) | AgentError::Exhausted(_) | AgentError::Timeout(_)
        )
    }

    /// The same error with `context` in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> AgentError {
        self.map_message(|m| format!("{context}: {m}"))
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        use AgentError::*;
        match self {
            Invalid(m) | NotFound(m) | Precondition(m) | Unavailable(m) | Exhausted(m)
            | Timeout(m) | Denied(m) | Corrupt(m) | Internal(m) => m,
        }
    }

    fn map_message(self, f: impl FnOnce(String) -> String) -> AgentError {
        use AgentError::*;
        match self {
            Invalid(m) => Invalid(f(m)),
            NotFound(m) => NotFound(f(m)),
            Precondition(m) => Precondition(f(m)),
            Unavailable(m) => Unavailable(f(m)),
            Exhausted(m) => Exhausted(f(m)),
            Timeout(m) => Timeout(f(m)),
            Denied(m) => Denied(f(m)),
            Corrupt(m) => Corrupt(f(m)),
            Internal(m) => Internal(f(m)),
        }
    }

    /// The error a peer (or the transport to it) returned, attributed to
    /// `addr`, by its status code. Transport failures surface as
    /// `Unknown`/`Unavailable` statuses carrying hyper's wording; they say
    /// what happened first ("connection lost"). No gRPC status from a live
    /// peer starts with "h2 protocol error" or "transport error".
    pub fn from_peer(addr: &str, s: &tonic::Status) -> AgentError {
        use tonic::Code;
        let m = s.message();
        let lost = matches!(s.code(), Code::Unknown | Code::Unavailable)
            && (m.starts_with("h2 protocol error") || m.starts_with("transport error"));
        if lost {
            return AgentError::Unavailable(format!("peer {addr}: connection lost ({m})"));
        }
        let m = format!("peer {addr}: {m}");
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => AgentError::Invalid(m),
            Code::NotFound => AgentError::NotFound(m),
            Code::FailedPrecondition | Code::AlreadyExists | Code::Unimplemented => {
                AgentError::Precondition(m)
            }
            Code::Unavailable | Code::Aborted | Code::Cancelled => AgentError::Unavailable(m),
            Code::ResourceExhausted => AgentError::Exhausted(m),
            Code::DeadlineExceeded => AgentError::Timeout(m),
            Code::PermissionDenied | Code::Unauthenticated => AgentError::Denied(m),
            Code::DataLoss => AgentError::Corrupt(m),
            Code::Ok | Code::Unknown | Code::Internal => AgentError::Internal(m),
        }
    }
}

/// A store error by kind: bad input is [`AgentError::Invalid`], retryable
/// engine errors and a locked store [`AgentError::Unavailable`],
/// corruption [`AgentError::Corrupt`], a store or range that does not fit
/// the request [`AgentError::Precondition`], any other engine error
/// [`AgentError::Internal`].
impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> AgentError {
        let m = e.to_string();
        match e {
            StoreError::Input(_) => AgentError::Invalid(m),
            StoreError::Backend {
                retryable: true, ..
            }
            | StoreError::Locked { .. } => AgentError::Unavailable(m),
            StoreError::Corrupt(_) => AgentError::Corrupt(m),
            StoreError::SecretMismatch { .. }
            | StoreError::ParamsMismatch(_)
            | StoreError::NotAStore { .. }
            | StoreError::WrongMode { .. } => AgentError::Precondition(m),
            StoreError::Backend { .. } => AgentError::Internal(m),
        }
    }
}

/// An exchange error by kind: a peer's protocol violation is
/// [`AgentError::Invalid`], a limit [`AgentError::Exhausted`], and a local
/// store failure keeps the store error's kind (a retryable one stays
/// retryable).
impl From<ExchangeError> for AgentError {
    fn from(e: ExchangeError) -> AgentError {
        match e {
            ExchangeError::Protocol(m) => AgentError::Invalid(m),
            ExchangeError::Local { message, retryable } if retryable => {
                AgentError::Unavailable(message)
            }
            ExchangeError::Local { message, .. } => AgentError::Internal(message),
            ExchangeError::Limit(m) => AgentError::Exhausted(m),
        }
    }
}

/// A failed blocking task (a panic in store code): a bug.
impl From<tokio::task::JoinError> for AgentError {
    fn from(e: tokio::task::JoinError) -> AgentError {
        AgentError::Internal(format!("store task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retryable_store_error_stays_retryable_through_an_exchange() {
        let store = StoreError::Backend {
            retryable: true,
            message: "busy".into(),
        };
        assert!(AgentError::from(store).retryable());
        let local = ExchangeError::Local {
            message: "busy".into(),
            retryable: true,
        };
        assert!(AgentError::from(local).retryable());
        let fatal = ExchangeError::Local {
            message: "io".into(),
            retryable: false,
        };
        assert!(matches!(AgentError::from(fatal), AgentError::Internal(_)));
    }

    #[test]
    fn a_peer_status_keeps_its_kind_and_names_the_peer() {
        let e = AgentError::from_peer("b:1", &tonic::Status::failed_precondition("no adapter"));
        assert_eq!(e, AgentError::Precondition("peer b:1: no adapter".into()));
        let lost = AgentError::from_peer("b:1", &tonic::Status::unknown("transport error: eof"));
        assert!(lost.retryable(), "{lost:?}");
    }
}
