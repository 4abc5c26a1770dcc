//! Key ranges. A store serves one or more named ranges, each a half-open
//! interval `[start, end)` of raw key bytes (`end = None` is unbounded) with
//! its own tree shape. Ranges never overlap, so each key falls in at most one;
//! a key in none is rejected. A range's id is its position in the
//! configuration, which the store persists and checks on every open.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::limits::{RANGE_NAME_BYTES_MAX, RANGES_MAX};
use crate::record::hex;
use crate::shape::TreeShape;

/// One configured key range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSpec {
    /// Name peers use to refer to the range.
    pub name: String,
    /// First key of the range (inclusive); empty = the start of the key space.
    #[serde(default)]
    pub start: Vec<u8>,
    /// End of the range (exclusive); `None` = unbounded.
    #[serde(default)]
    pub end: Option<Vec<u8>>,
    /// Shape of the range's tree.
    #[serde(default)]
    pub shape: TreeShape,
    /// What the range holds: values (the default) or, for a range fed by a
    /// change feed through the `Ingest` service, only each value's digest.
    /// Persisted with the range, so a store cannot be reopened with a
    /// range's mode switched (its entries would not fit the other mode).
    #[serde(default, skip_serializing_if = "RangeMode::is_values")]
    pub mode: RangeMode,
    /// A digest-only range fed by a store without versions: every entry
    /// carries the same version, the range applies its feed in feed order,
    /// and diffs classify only what can be known without versions
    /// (`Category::VERSIONLESS`); nothing is repaired automatically.
    /// Persisted with the range.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub versionless: bool,
}

/// What a range's entries carry.
///
/// Both modes keep the same entry digest (`Secret::entry_digest` over the
/// key, version, tombstone flag and the value's 32-byte hash), so a
/// digest-only range and a value-holding range with the same entries have
/// the same tree and compare equal in an exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeMode {
    /// Entries hold their values; written by the `Replica` service and by
    /// repairs.
    #[default]
    Values,
    /// Entries hold only the value's 32-byte hash, supplied by a change-feed
    /// adapter through the `Ingest` service; no values are stored, so they
    /// cannot be served to peers or repaired from here (a repair goes
    /// through the adapter).
    Digests,
}

impl RangeMode {
    /// True for the default mode (not written to persisted parameters, so
    /// stores created before modes existed keep their parameters).
    pub fn is_values(&self) -> bool {
        *self == RangeMode::Values
    }

    /// Its name in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RangeMode::Values => "values",
            RangeMode::Digests => "digests",
        }
    }
}

impl RangeSpec {
    /// A range covering every key.
    pub fn whole(name: &str, shape: TreeShape) -> RangeSpec {
        RangeSpec {
            name: name.to_string(),
            start: Vec::new(),
            end: None,
            shape,
            mode: RangeMode::Values,
            versionless: false,
        }
    }

    /// True if `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// Validated, non-overlapping ranges with O(log R) lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMap {
    specs: Vec<RangeSpec>,
    /// Range ids sorted by start key.
    by_start: Vec<u16>,
}

impl RangeMap {
    /// Validates the ranges: 1..=1024 of them, unique non-empty names,
    /// valid shapes, `start < end`, no overlaps.
    pub fn new(specs: Vec<RangeSpec>) -> Result<RangeMap, CoreError> {
        if specs.is_empty() || specs.len() > RANGES_MAX {
            return Err(CoreError::Ranges(format!(
                "{} ranges configured; 1..={RANGES_MAX} allowed",
                specs.len()
            )));
        }
        let mut names = std::collections::HashSet::new();
        for s in &specs {
            if s.name.is_empty() || s.name.len() > RANGE_NAME_BYTES_MAX {
                return Err(CoreError::Ranges(format!(
                    "range name {:?} must be 1..={RANGE_NAME_BYTES_MAX} bytes",
                    s.name
                )));
            }
            if !names.insert(s.name.clone()) {
                return Err(CoreError::Ranges(format!(
                    "duplicate range name {:?}",
                    s.name
                )));
            }
            s.shape.validate()?;
            if s.versionless && s.mode != RangeMode::Digests {
                return Err(CoreError::Ranges(format!(
                    "range {:?}: versionless needs mode = \"digests\" (a store without versions \
                     feeds mend through Ingest)",
                    s.name
                )));
            }
            if let Some(end) = &s.end
                && end.as_slice() <= s.start.as_slice()
            {
                return Err(CoreError::Ranges(format!(
                    "range {:?}: end {} is not after start {}",
                    s.name,
                    hex(end),
                    hex(&s.start)
                )));
            }
        }
        let mut by_start: Vec<u16> = (0..specs.len() as u16).collect();
        by_start.sort_by(|a, b| specs[*a as usize].start.cmp(&specs[*b as usize].start));
        for w in by_start.windows(2) {
            let (a, b) = (&specs[w[0] as usize], &specs[w[1] as usize]);
            if a.end.as_deref().is_none_or(|e| e > b.start.as_slice()) {
                return Err(CoreError::Ranges(format!(
                    "ranges {:?} and {:?} overlap",
                    a.name, b.name
                )));
            }
        }
        Ok(RangeMap { specs, by_start })
    }

    /// The ranges in id order.
    pub fn specs(&self) -> &[RangeSpec] {
        &self.specs
    }

    /// The range with id `id`.
    pub fn get(&self, id: u16) -> Option<&RangeSpec> {
        self.specs.get(id as usize)
    }

    /// The id of the range named `name`.
    pub fn by_name(&self, name: &str) -> Option<u16> {
        self.specs
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u16)
    }

    /// The id of the range containing `key`.
    pub fn lookup(&self, key: &[u8]) -> Result<u16, CoreError> {
        // Last range whose start <= key.
        let idx = self
            .by_start
            .partition_point(|id| self.specs[*id as usize].start.as_slice() <= key);
        if idx > 0 {
            let id = self.by_start[idx - 1];
            if self.specs[id as usize].contains(key) {
                return Ok(id);
            }
        }
        Err(CoreError::KeyOutsideRanges { key_hex: hex(key) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, start: &[u8], end: Option<&[u8]>) -> RangeSpec {
        RangeSpec {
            name: name.into(),
            start: start.to_vec(),
            end: end.map(|e| e.to_vec()),
            shape: TreeShape::default(),
            mode: Default::default(),
            versionless: false,
        }
    }

    #[test]
    fn lookup_finds_the_one_range() {
        let m = RangeMap::new(vec![r("b", b"m", None), r("a", b"a", Some(b"m"))]).unwrap();
        assert_eq!(m.lookup(b"a").unwrap(), 1);
        assert_eq!(m.lookup(b"lzz").unwrap(), 1);
        assert_eq!(m.lookup(b"m").unwrap(), 0);
        assert_eq!(m.lookup(b"zz").unwrap(), 0);
        assert!(matches!(
            m.lookup(b"0"),
            Err(CoreError::KeyOutsideRanges { .. })
        ));
    }

    #[test]
    fn rejects_overlaps_and_duplicates() {
        assert!(RangeMap::new(vec![r("a", b"a", Some(b"n")), r("b", b"m", None)]).is_err());
        assert!(RangeMap::new(vec![r("a", b"a", None), r("b", b"m", None)]).is_err());
        assert!(RangeMap::new(vec![r("a", b"a", Some(b"b")), r("a", b"c", None)]).is_err());
        assert!(RangeMap::new(vec![r("a", b"b", Some(b"a"))]).is_err());
        assert!(RangeMap::new(vec![]).is_err());
    }
}
