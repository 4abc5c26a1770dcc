//! Versions: a hybrid-logical-clock timestamp plus the write's breadcrumb
//! (origin node and that origin's sequence number).
//!
//! Versions order by timestamp (`ms`, then `logical`), then by origin. The
//! sequence number does not take part in ordering: two writes with the same
//! timestamp and origin are "the same version", and if their content differs
//! that is a conflict (a writer reusing versions). What to do about one is
//! the apply rule's business, a layer up (it reports it and writes nothing).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::limits::NODE_ID_BYTES_MAX;

/// The id of a node (agent / replica): 1..=64 printable ASCII bytes.
/// Shared, not copied: every [`Version`] carries one, and the write path
/// clones versions into outcomes, so a clone is a reference count, not an
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Validates and wraps a node id.
    pub fn new(id: impl Into<String>) -> Result<Self, CoreError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= NODE_ID_BYTES_MAX
            && id.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(NodeId(id.into()))
        } else {
            Err(CoreError::NodeId {
                id,
                max: NODE_ID_BYTES_MAX,
            })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0.to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A write's version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Wall-clock part of the hybrid logical clock, milliseconds since the Unix epoch.
    pub ms: u64,
    /// Logical counter that orders writes within the same millisecond.
    pub logical: u32,
    /// The node that made the write.
    pub origin: NodeId,
    /// The origin's sequence number for this write (its breadcrumb).
    pub seq: u64,
}

impl Version {
    /// Compares two versions by (ms, logical, origin); `seq` is ignored.
    pub fn order(&self, other: &Version) -> Ordering {
        (self.ms, self.logical, &self.origin).cmp(&(other.ms, other.logical, &other.origin))
    }

    /// True when both versions have the same timestamp and origin.
    pub fn same_as(&self, other: &Version) -> bool {
        self.order(other) == Ordering::Equal
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}@{}#{}",
            self.ms, self.logical, self.origin, self.seq
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ms: u64, logical: u32, origin: &str, seq: u64) -> Version {
        Version {
            ms,
            logical,
            origin: NodeId::new(origin).unwrap(),
            seq,
        }
    }

    #[test]
    fn orders_by_time_then_origin_ignoring_seq() {
        assert_eq!(v(1, 0, "b", 9).order(&v(2, 0, "a", 1)), Ordering::Less);
        assert_eq!(v(2, 1, "a", 0).order(&v(2, 0, "z", 0)), Ordering::Greater);
        assert_eq!(v(2, 0, "a", 0).order(&v(2, 0, "b", 0)), Ordering::Less);
        assert!(v(2, 0, "a", 1).same_as(&v(2, 0, "a", 7)));
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("has space").is_err());
        assert!(NodeId::new("x".repeat(65)).is_err());
        assert!(NodeId::new("node-a").is_ok());
    }
}
