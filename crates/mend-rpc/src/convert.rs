//! Conversions between wire messages and domain types. Every `*_from_pb`
//! validates its input and returns `Status::invalid_argument` naming the
//! field; the `*_to_pb` direction cannot fail.

use tonic::Status;

use mend_core::error::{check_key, check_value};
use mend_core::exchange::{
    BucketQuery, EntrySummary, LeafProbe, LeafReply, NodeStatus, Probe, ProbeReply,
};
use mend_core::{NodeId, Version};

use crate::pb;

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// A wire version to a domain version.
pub fn version_from_pb(v: pb::Version) -> Result<Version, Status> {
    let origin = NodeId::new(v.origin).map_err(|e| invalid("version.origin", e))?;
    Ok(Version {
        ms: v.ms,
        logical: v.logical,
        origin,
        seq: v.seq,
    })
}

/// An optional wire version.
pub fn opt_version_from_pb(v: Option<pb::Version>) -> Result<Option<Version>, Status> {
    v.map(version_from_pb).transpose()
}

/// A domain version to the wire.
pub fn version_to_pb(v: &Version) -> pb::Version {
    pb::Version {
        ms: v.ms,
        logical: v.logical,
        origin: v.origin.as_str().to_string(),
        seq: v.seq,
    }
}

/// A range's name, shape and bounds for the handshake.
pub fn range_shape_to_pb(s: &mend_core::RangeSpec) -> pb::RangeShape {
    pb::RangeShape {
        name: s.name.clone(),
        fanout: s.shape.fanout,
        depth: s.shape.depth,
        start: s.start.clone(),
        end: s.end.clone().unwrap_or_default(),
        has_end: s.end.is_some(),
        versionless: s.versionless,
    }
}

/// A range bound for messages: printable ASCII as is, else hex.
pub fn bound_str(b: &[u8]) -> String {
    if b.iter().all(|c| c.is_ascii_graphic()) {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        b.iter().map(|c| format!("{c:02x}")).collect::<String>()
    }
}

/// Checks a key received from the network.
pub fn key_from_pb(k: &[u8]) -> Result<(), Status> {
    check_key(k).map_err(|e| invalid("key", e))
}

/// Checks a value received from the network.
pub fn value_from_pb(v: &[u8]) -> Result<(), Status> {
    check_value(v).map_err(|e| invalid("value", e))
}

/// Packs node statuses two bits each.
pub fn pack_status(s: &[NodeStatus]) -> Vec<u8> {
    let mut out = vec![0u8; s.len().div_ceil(4)];
    for (i, st) in s.iter().enumerate() {
        let v = match st {
            NodeStatus::Same => 0u8,
            NodeStatus::Differs => 1,
            NodeStatus::Empty => 2,
        };
        out[i / 4] |= v << ((i % 4) * 2);
    }
    out
}

/// Unpacks `n` node statuses.
pub fn unpack_status(b: &[u8], n: usize) -> Result<Vec<NodeStatus>, Status> {
    if b.len() != n.div_ceil(4) {
        return Err(invalid(
            "status",
            format!("{} bytes for {n} nodes", b.len()),
        ));
    }
    (0..n)
        .map(|i| match (b[i / 4] >> ((i % 4) * 2)) & 3 {
            0 => Ok(NodeStatus::Same),
            1 => Ok(NodeStatus::Differs),
            2 => Ok(NodeStatus::Empty),
            _ => Err(invalid("status", "unknown node status 3")),
        })
        .collect()
}

/// Packs flags one bit each.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// Unpacks `n` flags.
pub fn unpack_bits(b: &[u8], n: usize) -> Result<Vec<bool>, Status> {
    if b.len() != n.div_ceil(8) {
        return Err(invalid(
            "bitmap",
            format!("{} bytes for {n} flags", b.len()),
        ));
    }
    Ok((0..n).map(|i| b[i / 8] & (1 << (i % 8)) != 0).collect())
}

/// A domain probe to the wire.
pub fn probe_to_pb(p: &Probe) -> pb::Probe {
    pb::Probe {
        level: p.level,
        parents: p.parents.clone(),
        hashes: p.hashes.clone(),
    }
}

/// A wire probe to the domain (shape checks are the responder's).
pub fn probe_from_pb(p: pb::Probe) -> Probe {
    Probe {
        level: p.level,
        parents: p.parents,
        hashes: p.hashes,
    }
}

/// A domain probe reply to the wire.
pub fn probe_reply_to_pb(r: &ProbeReply) -> pb::ProbeReply {
    pb::ProbeReply {
        status: pack_status(&r.status),
        next: r.next.clone(),
    }
}

/// A wire probe reply to the domain, given how many hashes were probed.
pub fn probe_reply_from_pb(r: pb::ProbeReply, probed: usize) -> Result<ProbeReply, Status> {
    Ok(ProbeReply {
        status: unpack_status(&r.status, probed)?,
        next: r.next,
    })
}

/// A domain leaf probe of `range` compared at `depth` to the wire.
pub fn leaf_probe_to_pb(range: &str, depth: u32, lp: &LeafProbe) -> pb::LeavesRequest {
    pb::LeavesRequest {
        range: range.to_string(),
        depth,
        queries: lp
            .queries
            .iter()
            .map(|q| pb::BucketQuery {
                first: q.first,
                count: q.count,
                hashes: q.hashes.clone(),
            })
            .collect(),
    }
}

/// A wire leaf probe to the domain.
pub fn leaf_probe_from_pb(r: pb::LeavesRequest) -> LeafProbe {
    LeafProbe {
        queries: r
            .queries
            .into_iter()
            .map(|q| BucketQuery {
                first: q.first,
                count: q.count,
                hashes: q.hashes,
            })
            .collect(),
    }
}

/// A domain entry summary to the wire.
pub fn summary_to_pb(e: &EntrySummary) -> pb::EntrySummary {
    pb::EntrySummary {
        key: e.key.clone(),
        version: Some(version_to_pb(&e.version)),
        tombstone: e.tombstone,
        hash: e.hash,
    }
}

/// A wire entry summary to the domain.
pub fn summary_from_pb(e: pb::EntrySummary) -> Result<EntrySummary, Status> {
    key_from_pb(&e.key)?;
    let version = version_from_pb(
        e.version
            .ok_or_else(|| invalid("entry.version", "missing"))?,
    )?;
    Ok(EntrySummary {
        key: e.key,
        version,
        tombstone: e.tombstone,
        hash: e.hash,
    })
}

/// A domain leaf reply to the wire.
pub fn leaf_reply_to_pb(r: &LeafReply) -> pb::LeafReply {
    pb::LeafReply {
        query: r.query,
        lacking: pack_bits(&r.lacking),
        extra: if r.extra.is_empty() {
            Vec::new()
        } else {
            mend_core::packed::encode(&r.extra)
        },
    }
}

/// A wire leaf reply to the domain, given the probe it answers.
pub fn leaf_reply_from_pb(r: pb::LeafReply, probe: &LeafProbe) -> Result<LeafReply, Status> {
    let q = probe
        .queries
        .get(r.query as usize)
        .ok_or_else(|| invalid("leaf_reply.query", format!("no query {}", r.query)))?;
    Ok(LeafReply {
        query: r.query,
        // An empty bitmap marks a continuation reply of the same query.
        lacking: if r.lacking.is_empty() {
            Vec::new()
        } else {
            unpack_bits(&r.lacking, q.hashes.len())?
        },
        extra: if r.extra.is_empty() {
            Vec::new()
        } else {
            // A responder splits replies at LEAF_REPLY_BYTES_MAX of decoded
            // entries; twice that bounds a reply's allocation.
            mend_core::packed::decode_bounded(
                &r.extra,
                mend_core::packed::PACKED_ENTRIES_MAX,
                2 * mend_core::exchange::LEAF_REPLY_BYTES_MAX,
            )
            .map_err(|e| invalid("leaf_reply.extra", e))?
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_packing_roundtrips_and_rejects_bad_lengths() {
        let s = vec![
            NodeStatus::Same,
            NodeStatus::Differs,
            NodeStatus::Empty,
            NodeStatus::Differs,
            NodeStatus::Same,
        ];
        assert_eq!(
            unpack_status(&pack_status(&s), s.len()).ok(),
            Some(s.clone())
        );
        assert!(unpack_status(&[0xff, 0xff], 5).is_err());
        assert!(unpack_status(&[0], 5).is_err());
        let b = vec![true, false, true, true, false, false, false, false, true];
        assert_eq!(unpack_bits(&pack_bits(&b), b.len()).ok(), Some(b));
        assert!(unpack_bits(&[1], 9).is_err());
    }

    #[test]
    fn versions_from_the_wire_are_validated() {
        let bad = pb::Version {
            ms: 1,
            logical: 0,
            origin: "has space".into(),
            seq: 0,
        };
        assert_eq!(
            version_from_pb(bad).map_err(|s| s.code()).err(),
            Some(tonic::Code::InvalidArgument)
        );
    }
}
