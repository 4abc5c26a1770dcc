//! Errors of the data model: every one is the caller's input being out of
//! bounds or malformed, never an internal failure.

use thiserror::Error;

/// A violation of the data model's limits or formats.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    /// The key is empty or longer than [`crate::limits::KEY_BYTES_MAX`].
    #[error("key length {len} bytes is outside 1..={max}")]
    KeyLength {
        /// Length of the offending key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than [`crate::limits::VALUE_BYTES_MAX`].
    #[error("value length {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Length of the offending value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A node id is empty, too long, or not printable ASCII.
    #[error("invalid node id {id:?}: must be 1..={max} printable ASCII bytes")]
    NodeId {
        /// The offending id (lossily decoded).
        id: String,
        /// The limit.
        max: usize,
    },
    /// No configured range contains the key.
    #[error("key {key_hex} is outside every configured range")]
    KeyOutsideRanges {
        /// The key, hex encoded.
        key_hex: String,
    },
    /// A tree shape outside the supported bounds.
    #[error("invalid tree shape fanout={fanout} depth={depth}: {why}")]
    Shape {
        /// Requested fan-out.
        fanout: u32,
        /// Requested depth.
        depth: u32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The range configuration is inconsistent.
    #[error("invalid ranges: {0}")]
    Ranges(String),
    /// A stored or received record could not be decoded.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// An ingest batch breaks a limit or names what does not exist (source
    /// name, position, entry count, a key outside the batch's range).
    #[error("invalid ingest batch: {0}")]
    Ingest(String),
}

/// Checks a key against the limits.
pub fn check_key(key: &[u8]) -> Result<(), CoreError> {
    if key.is_empty() || key.len() > crate::limits::KEY_BYTES_MAX {
        return Err(CoreError::KeyLength {
            len: key.len(),
            max: crate::limits::KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks a value against the limits.
pub fn check_value(value: &[u8]) -> Result<(), CoreError> {
    if value.len() > crate::limits::VALUE_BYTES_MAX {
        return Err(CoreError::ValueTooLarge {
            len: value.len(),
            max: crate::limits::VALUE_BYTES_MAX,
        });
    }
    Ok(())
}
