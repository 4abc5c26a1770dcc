//! Conversions of the `Ingest` service's messages. A batch is checked
//! field by field (entry count first, before any entry is converted), and
//! every failure is `INVALID_ARGUMENT` naming the field and, for an entry,
//! its index.

use tonic::Status;

use mend_core::RangeMap;
use mend_core::digest::Digest;
use mend_core::error::check_key;
use mend_core::ingest::{IngestBatch, IngestEntry, check_entries, check_position, check_source};

use crate::convert::version_from_pb;
use crate::pb;

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// The id of the range named `name` (`INVALID_ARGUMENT` if none is).
pub fn range_id(ranges: &RangeMap, name: &str) -> Result<u16, Status> {
    ranges
        .by_name(name)
        .ok_or_else(|| invalid("range", format!("no range is named {name:?}")))
}

/// Checks a source name and a range name of a position request.
pub fn position_request_from_pb(
    r: &pb::IngestPositionRequest,
    ranges: &RangeMap,
) -> Result<u16, Status> {
    check_source(&r.source).map_err(|e| invalid("source", e))?;
    range_id(ranges, &r.range)
}

/// A wire batch to a domain batch. The range's mode is the store's to
/// check (`FAILED_PRECONDITION`), as is each key being inside the range.
pub fn batch_from_pb(b: pb::IngestBatch, ranges: &RangeMap) -> Result<IngestBatch, Status> {
    check_entries(b.entries.len()).map_err(|e| invalid("entries", e))?;
    check_source(&b.source).map_err(|e| invalid("source", e))?;
    check_position(&b.position_to).map_err(|e| invalid("position_to", e))?;
    let range = range_id(ranges, &b.range)?;
    let mut entries = Vec::with_capacity(b.entries.len());
    for (i, e) in b.entries.into_iter().enumerate() {
        entries.push(
            entry_from_pb(e)
                .map_err(|s| Status::invalid_argument(format!("entries[{i}].{}", s.message())))?,
        );
    }
    Ok(IngestBatch {
        range,
        source: b.source,
        position_to: b.position_to,
        entries,
    })
}

/// A domain batch to the wire, with its range named `range` (for adapters
/// written in Rust, and the round trip the fuzz target checks).
pub fn batch_to_pb(b: &IngestBatch, range: &str) -> pb::IngestBatch {
    pb::IngestBatch {
        source: b.source.clone(),
        range: range.to_string(),
        position_to: b.position_to.clone(),
        entries: b
            .entries
            .iter()
            .map(|e| pb::IngestEntry {
                key: e.key.clone(),
                version: Some(crate::convert::version_to_pb(&e.version)),
                value_digest: e.value_hash.map(|h| h.to_vec()).unwrap_or_default(),
                tombstone: e.value_hash.is_none(),
            })
            .collect(),
    }
}

fn entry_from_pb(e: pb::IngestEntry) -> Result<IngestEntry, Status> {
    check_key(&e.key).map_err(|err| invalid("key", err))?;
    let version = version_from_pb(e.version.ok_or_else(|| invalid("version", "required"))?)?;
    let value_hash = if e.tombstone {
        if !e.value_digest.is_empty() {
            return Err(invalid("value_digest", "must be empty for a tombstone"));
        }
        None
    } else {
        let d: Digest = e.value_digest.as_slice().try_into().map_err(|_| {
            invalid(
                "value_digest",
                format!(
                    "{} bytes; a live entry needs exactly 32",
                    e.value_digest.len()
                ),
            )
        })?;
        Some(d)
    };
    Ok(IngestEntry {
        key: e.key,
        version,
        value_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend_core::{RangeSpec, TreeShape};

    fn ranges() -> RangeMap {
        RangeMap::new(vec![RangeSpec::whole("d", TreeShape::default())]).unwrap()
    }

    fn entry(digest: usize, tombstone: bool) -> pb::IngestEntry {
        pb::IngestEntry {
            key: b"k".to_vec(),
            version: Some(pb::Version {
                ms: 1,
                logical: 0,
                origin: "pg".into(),
                seq: 1,
            }),
            value_digest: vec![7; digest],
            tombstone,
        }
    }

    fn batch(entries: Vec<pb::IngestEntry>) -> pb::IngestBatch {
        pb::IngestBatch {
            source: "feed".into(),
            range: "d".into(),
            position_to: vec![0, 1],
            entries,
        }
    }

    fn refused(b: pb::IngestBatch, field: &str) {
        let s = batch_from_pb(b, &ranges()).unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().starts_with(field), "{field}: {}", s.message());
    }

    #[test]
    fn good_batches_convert() {
        let b = batch_from_pb(batch(vec![entry(32, false), entry(0, true)]), &ranges()).unwrap();
        assert_eq!(b.entries[0].value_hash, Some([7; 32]));
        assert_eq!(b.entries[1].value_hash, None);
    }

    #[test]
    fn each_field_is_checked() {
        refused(batch(vec![entry(31, false)]), "entries[0].value_digest");
        refused(batch(vec![entry(32, true)]), "entries[0].value_digest");
        let mut e = entry(32, false);
        e.version = None;
        refused(batch(vec![e]), "entries[0].version");
        let mut e = entry(32, false);
        e.key.clear();
        refused(batch(vec![entry(32, false), e]), "entries[1].key");
        let mut b = batch(vec![]);
        b.position_to.clear();
        refused(b, "position_to");
        let mut b = batch(vec![]);
        b.source = "s".repeat(mend_core::limits::SOURCE_NAME_BYTES_MAX + 1);
        refused(b, "source");
        let mut b = batch(vec![]);
        b.range = "nope".into();
        refused(b, "range");
        let n = mend_core::limits::INGEST_BATCH_ENTRIES_MAX + 1;
        refused(batch(vec![pb::IngestEntry::default(); n]), "entries");
    }
}
