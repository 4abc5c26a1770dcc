//! The apply rule, the one function every write path (client writes,
//! replicated writes, repairs, undo) goes through:
//!
//! * an incoming entry replaces the local one only if its version is greater;
//! * an equal version with identical content is a no-op (so repairs are
//!   idempotent);
//! * an equal version with different content is a conflict: it is returned to
//!   the caller and never silently overwrites the local entry.

use std::cmp::Ordering;

use crate::record::EntryMeta;

/// What to do with an incoming entry. Serialized (and named on the wire)
/// as `"apply"`, `"stale"`, `"duplicate"` or `"conflict"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The incoming entry is newer (or there is no local one): write it.
    Apply,
    /// The local entry is newer: keep it.
    Stale,
    /// The local entry is the same version with the same content: nothing to do.
    Duplicate,
    /// Same version, different content: report, do not write.
    Conflict,
}

impl Decision {
    /// The snake_case name used in reports and serde.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Apply => "apply",
            Decision::Stale => "stale",
            Decision::Duplicate => "duplicate",
            Decision::Conflict => "conflict",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides the fate of `incoming` against `existing`.
pub fn decide(existing: Option<&EntryMeta>, incoming: &EntryMeta) -> Decision {
    let Some(cur) = existing else {
        return Decision::Apply;
    };
    match incoming.version.order(&cur.version) {
        Ordering::Greater => Decision::Apply,
        Ordering::Less => Decision::Stale,
        Ordering::Equal => {
            if incoming.version.seq == cur.version.seq
                && incoming.tombstone == cur.tombstone
                && incoming.value_hash == cur.value_hash
            {
                Decision::Duplicate
            } else {
                Decision::Conflict
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::value_hash;
    use crate::version::{NodeId, Version};

    fn m(ms: u64, origin: &str, value: &[u8]) -> EntryMeta {
        EntryMeta {
            version: Version {
                ms,
                logical: 0,
                origin: NodeId::new(origin).unwrap(),
                seq: 1,
            },
            tombstone: false,
            value_hash: value_hash(value),
        }
    }

    #[test]
    fn newer_wins_equal_is_duplicate_or_conflict() {
        assert_eq!(decide(None, &m(1, "a", b"x")), Decision::Apply);
        // (current, incoming) as (ms, origin, value), and the decision.
        let cases = [
            ((1, "a", "x"), (2, "a", "y"), Decision::Apply),
            ((2, "a", "x"), (1, "a", "y"), Decision::Stale),
            ((1, "a", "x"), (1, "b", "y"), Decision::Apply),
            ((1, "a", "x"), (1, "a", "x"), Decision::Duplicate),
            ((1, "a", "x"), (1, "a", "z"), Decision::Conflict),
        ];
        for ((cm, co, cv), (im, io, iv), want) in cases {
            let (cur, inc) = (m(cm, co, cv.as_bytes()), m(im, io, iv.as_bytes()));
            assert_eq!(
                decide(Some(&cur), &inc),
                want,
                "{cm}/{co}/{cv} then {im}/{io}/{iv}"
            );
        }
        let mut t = m(1, "a", b"");
        t.tombstone = true;
        assert_eq!(decide(Some(&m(1, "a", b"")), &t), Decision::Conflict);
    }
}
