//! Store errors. `Input` errors are the caller's; `Backend` errors carry
//! whether retrying can help; the rest describe a store that cannot be used
//! as asked (wrong secret, wrong parameters, corruption).

use thiserror::Error;

use mend_core::CoreError;

/// Everything that can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The input violates the data model (key or value size, node id, range).
    #[error(transparent)]
    Input(#[from] CoreError),
    /// The path holds no mend store (and nothing was created).
    #[error("{path} is not a mend store: {why}")]
    NotAStore {
        /// The path given.
        path: String,
        /// What is missing.
        why: String,
    },
    /// Another process has the store open.
    #[error("store at {path} is locked by another process")]
    Locked {
        /// The path given.
        path: String,
    },
    /// The store was created with another cluster secret.
    #[error(
        "store was created with secret fingerprint {stored}, but this secret's fingerprint is {given}"
    )]
    SecretMismatch {
        /// Fingerprint recorded in the store.
        stored: String,
        /// Fingerprint of the secret offered.
        given: String,
    },
    /// The configured ranges or tree shapes differ from the persisted ones.
    #[error("configured ranges differ from the store's: {0}")]
    ParamsMismatch(String),
    /// The write or read does not fit the range's mode: values written to,
    /// or read from, a digest-only range, or digests ingested into a
    /// value-holding range. Nothing was written.
    #[error("range {range:?} holds {mode}: {why}")]
    WrongMode {
        /// The range's name.
        range: String,
        /// The range's mode (`values` or `digests`).
        mode: &'static str,
        /// What was refused.
        why: String,
    },
    /// Persisted metadata or tree rows are unreadable.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// The storage engine failed.
    #[error("storage engine error: {message}")]
    Backend {
        /// The engine's message.
        message: String,
        /// True if the same call may succeed later (busy, try again).
        retryable: bool,
    },
}

impl StoreError {
    /// True if retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                retryable: true,
                ..
            }
        )
    }
}
