//! What the `convert_decode` fuzz target calls (and `cargo test` runs on
//! fixed and structure-aware inputs): protobuf bytes from the network,
//! decoded and passed through the `convert` (and `ingest`) functions the
//! agent uses on them. None may panic; what converts to the domain converts back to an
//! equal message.

use prost::Message;

use crate::convert::{
    leaf_probe_from_pb, leaf_probe_to_pb, leaf_reply_from_pb, leaf_reply_to_pb, probe_from_pb,
    probe_reply_from_pb, probe_reply_to_pb, probe_to_pb, summary_from_pb, summary_to_pb,
    unpack_bits, unpack_status, version_from_pb, version_to_pb,
};
use crate::ingest::{batch_from_pb, batch_to_pb};
use crate::pb;

/// The ranges ingest batches are converted against: one, named "d".
fn ingest_ranges() -> &'static mend_core::RangeMap {
    static RANGES: std::sync::OnceLock<mend_core::RangeMap> = std::sync::OnceLock::new();
    RANGES.get_or_init(|| {
        let spec = mend_core::RangeSpec::whole("d", mend_core::TreeShape::default());
        mend_core::RangeMap::new(vec![spec]).unwrap_or_else(|_| unreachable!("one valid range"))
    })
}

/// Which message the first byte of a fuzz input selects.
pub const KINDS: u8 = 7;

/// Decodes `data[1..]` as the message `data[0]` selects and converts it.
pub fn convert_decode(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % KINDS {
        0 => {
            if let Ok(v) = pb::Version::decode(rest)
                && let Ok(d) = version_from_pb(v)
            {
                let back = version_to_pb(&d);
                assert_eq!(version_from_pb(back).ok(), Some(d));
            }
        }
        1 => {
            if let Ok(p) = pb::Probe::decode(rest) {
                let d = probe_from_pb(p.clone());
                assert_eq!(probe_to_pb(&d), p);
            }
        }
        2 => {
            // A probe reply, for a probe of as many hashes as its first byte.
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            if let Ok(r) = pb::ProbeReply::decode(rest)
                && let Ok(d) = probe_reply_from_pb(r, usize::from(n))
            {
                let back = probe_reply_to_pb(&d);
                assert_eq!(probe_reply_from_pb(back, usize::from(n)).ok(), Some(d));
            }
        }
        3 => {
            // A leaves request, then a reply to it: the length-prefixed
            // request first.
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let n = usize::from(n).min(rest.len());
            let (req, reply) = rest.split_at(n);
            let Ok(q) = pb::LeavesRequest::decode(req) else {
                return;
            };
            let lp = leaf_probe_from_pb(q.clone());
            assert_eq!(leaf_probe_to_pb(&q.range, q.depth, &lp), q);
            if let Ok(r) = pb::LeafReply::decode(reply)
                && let Ok(d) = leaf_reply_from_pb(r, &lp)
            {
                let back = leaf_reply_to_pb(&d);
                assert_eq!(leaf_reply_from_pb(back, &lp).ok(), Some(d));
            }
        }
        4 => {
            if let Ok(e) = pb::EntrySummary::decode(rest)
                && let Ok(d) = summary_from_pb(e)
            {
                assert_eq!(summary_from_pb(summary_to_pb(&d)).ok(), Some(d));
            }
        }
        5 => {
            // An ingest batch, against one range named "d".
            if let Ok(b) = pb::IngestBatch::decode(rest)
                && let Ok(d) = batch_from_pb(b, ingest_ranges())
            {
                let back = batch_to_pb(&d, "d");
                assert_eq!(batch_from_pb(back, ingest_ranges()).ok(), Some(d));
            }
        }
        _ => {
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let _ = unpack_status(rest, usize::from(n));
            let _ = unpack_bits(rest, usize::from(n));
            let _ = pb::HandshakeRequest::decode(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend_core::exchange::{BucketQuery, EntrySummary, LeafProbe, LeafReply, NodeStatus};
    use mend_core::{NodeId, Version};

    /// The fixed-seed input stream (`mend_core::rng`).
    fn stream(seed: u64) -> impl FnMut() -> u64 {
        let mut r = mend_core::rng::SplitMix64::new(seed);
        move || r.next_u64()
    }

    fn version(r: &mut impl FnMut() -> u64) -> Version {
        Version {
            ms: r() % 4_000_000_000_000,
            logical: (r() % 100) as u32,
            origin: NodeId::new(format!("n{}", r() % 9)).unwrap_or_else(|_| unreachable!()),
            seq: r() % 1000,
        }
    }

    /// Valid messages of every kind, encoded as the fuzz target reads them.
    fn valid_inputs(r: &mut impl FnMut() -> u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let v = version(r);
        out.push([vec![0], version_to_pb(&v).encode_to_vec()].concat());
        let hashes: Vec<u64> = (0..(r() % 20)).map(|_| r()).collect();
        let probe = mend_core::exchange::Probe {
            level: (r() % 4) as u32,
            parents: (0..hashes.len() as u32).collect(),
            hashes: hashes.clone(),
        };
        out.push([vec![1], probe_to_pb(&probe).encode_to_vec()].concat());
        let status: Vec<NodeStatus> = hashes
            .iter()
            .map(|h| match h % 3 {
                0 => NodeStatus::Same,
                1 => NodeStatus::Differs,
                _ => NodeStatus::Empty,
            })
            .collect();
        let reply = mend_core::exchange::ProbeReply {
            status,
            next: (0..(r() % 8)).map(|_| r()).collect(),
        };
        out.push(
            [
                vec![2, hashes.len() as u8],
                probe_reply_to_pb(&reply).encode_to_vec(),
            ]
            .concat(),
        );
        let lp = LeafProbe {
            queries: (0..1 + r() % 4)
                .map(|i| BucketQuery {
                    first: i as u32 * 10,
                    count: 1 + (r() % 4) as u32,
                    hashes: (0..(r() % 5)).map(|_| r()).collect(),
                })
                .collect(),
        };
        let req = leaf_probe_to_pb("default", 4, &lp).encode_to_vec();
        let lr = LeafReply {
            query: 0,
            lacking: vec![true; lp.queries[0].hashes.len()],
            extra: (0..(r() % 4))
                .map(|i| EntrySummary {
                    key: format!("key-{i}").into_bytes(),
                    version: version(r),
                    tombstone: r().is_multiple_of(2),
                    hash: 0,
                })
                .collect(),
        };
        if req.len() < 256 {
            out.push(
                [
                    vec![3, req.len() as u8],
                    req,
                    leaf_reply_to_pb(&lr).encode_to_vec(),
                ]
                .concat(),
            );
        }
        let e = EntrySummary {
            key: b"k".to_vec(),
            version: version(r),
            tombstone: false,
            hash: r(),
        };
        out.push([vec![4], summary_to_pb(&e).encode_to_vec()].concat());
        let batch = mend_core::ingest::IngestBatch {
            range: 0,
            source: format!("feed-{}", r() % 3),
            position_to: r().to_be_bytes().to_vec(),
            entries: (0..(r() % 4))
                .map(|i| mend_core::ingest::IngestEntry {
                    key: format!("key-{i}").into_bytes(),
                    version: version(r),
                    value_hash: r().is_multiple_of(3).then(|| [r() as u8; 32]),
                })
                .collect(),
        };
        out.push([vec![5], batch_to_pb(&batch, "d").encode_to_vec()].concat());
        out
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut r = stream(3);
        for _ in 0..20_000 {
            let n = (r() % 64) as usize;
            let b: Vec<u8> = (0..n).map(|_| r() as u8).collect();
            convert_decode(&b);
        }
    }

    #[test]
    fn valid_messages_convert_and_flipped_bits_never_panic() {
        let mut r = stream(4);
        let mut converted = 0;
        for _ in 0..500 {
            for input in valid_inputs(&mut r) {
                convert_decode(&input);
                converted += 1;
                for _ in 0..8 {
                    let mut b = input.clone();
                    let bit = (r() as usize) % (b.len() * 8);
                    if bit >= 8 {
                        b[bit / 8] ^= 1 << (bit % 8);
                    }
                    convert_decode(&b);
                }
            }
        }
        assert!(converted > 2_000);
    }
}
