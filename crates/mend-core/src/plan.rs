//! The capacity-planning cost model behind `mend plan`.
//!
//! Two kinds of figures come out of it:
//!
//! * **Counted** ones follow from the protocol itself: round trips, bytes
//!   each way, entries listed, bytes streamed by a repair, tree memory and
//!   the stored bytes per entry. They are exact expectations for divergent
//!   keys spread uniformly over the key space (the keyed placement hash
//!   makes any key set look uniform), and a test holds them within 2× of
//!   real agents (`tests/e2e/plan.rs`).
//! * **Timed** ones add per-operation costs measured by the benchmarks on
//!   the reference machine ([`Calibration::REFERENCE`], each constant
//!   naming the figure and command it comes from); on other hardware they
//!   scale with its speed. `BENCHMARKS.md` ("Cost model") lists them next
//!   to measured runs.
//!
//! The model of the exchange, per range of `n` keys with `d` divergent, on
//! a tree of fan-out `f` and depth `D` (`M = f^D` buckets):
//!
//! * `m(l) = f^l · (1 − (1 − f^−l)^d)` nodes of level `l` differ (the
//!   expected number of distinct nodes `d` uniform keys fall in), `m(0) = 1`;
//! * level `l` costs `f · m(l−1)` 8-byte hashes, sent by the initiator for
//!   odd `l` (with 2 status bits each back) and by the responder for even
//!   `l`; `⌈D/2⌉` probe round trips;
//! * each of the `m(D)` differing buckets is one leaf query carrying the
//!   initiator's entry hashes (`n/M + 1` on average: a bucket holding a
//!   divergent key is size-biased), answered by a lacking bitmap and the
//!   peer's differing entries in the packed encoding, in `⌈m(D)/4096⌉`
//!   leaf probes (`LEAF_QUERIES_MAX`) sent at once: one round trip;
//! * plus the challenge and handshake round trips, and 5 bytes of gRPC
//!   framing per message.

use crate::agg::Agg;
use crate::exchange::LEAF_QUERIES_MAX;
use crate::shape::TreeShape;

/// What the plan is for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// Keys per replica, over all ranges.
    pub keys: u64,
    /// Divergent keys, over all ranges.
    pub divergent: u64,
    /// Average value size, bytes.
    pub value_bytes: u64,
    /// Average key size, bytes.
    pub key_bytes: u64,
    /// Average origin (node id) length, bytes.
    pub origin_bytes: u64,
    /// Link bandwidth between the replicas, bytes per second.
    pub bandwidth: u64,
    /// Round-trip time between the replicas, milliseconds.
    pub rtt_ms: f64,
    /// Key ranges the keys are split over (each its own tree).
    pub ranges: u64,
    /// Tree shape every range is created with.
    pub shape: TreeShape,
    /// The agent's `deepen.entries_per_bucket`: each range's tree deepens
    /// (one level at a time, up to [`TreeShape::max_depth`]) while its
    /// entries pass this many per bucket; 0 = it keeps `shape`.
    pub deepen_entries_per_bucket: u64,
    /// The agent's `deepen.tree_bytes_max`: no deeper than a tree of this
    /// many bytes.
    pub deepen_tree_bytes_max: u64,
}

/// The shape a range of `keys` entries created at `created` has once its
/// tree has deepened as the agent deepens it (`deepen.entries_per_bucket
/// = per_bucket`, 0 = never; no tree past `bytes_max`).
pub fn grown_shape(created: TreeShape, keys: f64, per_bucket: u64, bytes_max: u64) -> TreeShape {
    let mut s = created;
    if per_bucket == 0 {
        return s;
    }
    while let Ok(next) = s.at_depth(s.depth + 1) {
        if keys <= per_bucket as f64 * s.buckets() as f64 || next.tree_bytes() > bytes_max {
            break;
        }
        s = next;
    }
    s
}

/// Per-operation costs measured on one machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Fixed cost of one exchange round trip besides the link's RTT
    /// (request encode, dispatch, store read, reply), microseconds.
    pub round_trip_us: f64,
    /// Listing one entry of a differing bucket (scan, decode, keyed digest,
    /// encode), microseconds; an exchange lists each twice, once per side.
    pub entry_list_us: f64,
    /// Comparing one node hash (both sides), microseconds.
    pub node_us: f64,
    /// Classifying and attributing one divergent key, microseconds.
    pub divergent_key_us: f64,
    /// Applying one repaired entry through the apply rule with its journal
    /// rows, on the receiving side, microseconds (besides its bytes).
    pub apply_key_us: f64,
    /// Bytes a repair streams and applies per second beyond the per-key
    /// cost (CPU bound, loopback).
    pub apply_bytes_per_s: f64,
    /// One local write through mend's store, batched, microseconds.
    pub write_us: f64,
    /// The same write into plain RocksDB, microseconds.
    pub plain_write_us: f64,
    /// Rebuilding the tree, microseconds per key (parallel, 2 cores).
    pub rebuild_key_us: f64,
    /// Stored bytes of one tree leaf row (on disk, per bucket).
    pub leaf_row_bytes: f64,
}

impl Calibration {
    /// Measured on the reference machine (2-core AMD EPYC, release
    /// profile); `BENCHMARKS.md` has each figure with its command.
    pub const REFERENCE: Calibration = Calibration {
        // End-to-end grid, d = 1: 4 round trips (connect and handshake
        // included) in 1.67 ms at N = 100k.
        round_trip_us: 420.0,
        // End-to-end grid, d = 10 000: 0.84 s at N = 1M against 0.16 s at
        // 100k for 2 × 9 228 bucket listings of 16.3 vs 2.5 entries.
        entry_list_us: 2.7,
        // An upper bound: exchange/diff in memory, N = 10k, d = 1 compares
        // 33 nodes and lists one bucket in 17.7 µs.
        node_us: 0.1,
        // End-to-end grid, N = 100k, d = 10 000: what is left of 159 ms
        // after round trips and listings, per divergent key.
        divergent_key_us: 3.2,
        // repair_apply/mend: 20 000 entries of 1 KiB through
        // Store::write_with_extra with journal rows in 199.8 ms.
        apply_key_us: 10.0,
        // e2e repair, unthrottled, 50 000 × 1 KiB in 1.29 s: what is left
        // after 10 µs per key, per byte streamed (53.4 MB in 0.79 s).
        apply_bytes_per_s: 67.6e6,
        // store/write_batch1000 at N = 1M, random 16-byte keys: 9.56 s.
        write_us: 9.56,
        // plain RocksDB, same options and rows, same run: 3.75 s.
        plain_write_us: 3.75,
        // Scale, N = 10M: `mend store rebuild` in 5.90 s (store/rebuild
        // at 1M: 0.51 s).
        rebuild_key_us: 0.59,
        // Scale: disk overhead per key beyond the record header, times keys
        // per bucket (44 B at 100k, 56 B at 1M).
        leaf_row_bytes: 50.0,
    };
}

/// The model's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Keys per range.
    pub keys_per_range: f64,
    /// Divergent keys per range.
    pub divergent_per_range: f64,
    /// Entries per bucket on average.
    pub entries_per_bucket: f64,
    /// Differing buckets per range.
    pub differing_buckets: f64,
    /// Round trips of one range's descent (ranges run one after another,
    /// after the challenge and handshake shared by all).
    pub rounds_per_range: u64,
    /// Round trips over all ranges, challenge and handshake included.
    pub rounds: u64,
    /// Bytes the initiator sends, all ranges.
    pub bytes_sent: f64,
    /// Bytes the initiator receives, all ranges.
    pub bytes_received: f64,
    /// Entries listed from the stores, both sides, all ranges.
    pub entries_listed: f64,
    /// Expected diff wall time, seconds.
    pub diff_s: f64,
    /// Bytes a repair streams (divergent entries plus framing).
    pub repair_bytes: f64,
    /// Expected repair wall time after the diff, seconds.
    pub repair_s: f64,
    /// In-memory tree, bytes, all ranges.
    pub tree_memory_bytes: f64,
    /// Stored bytes mend adds per key over a plain key → value store.
    pub disk_overhead_per_key: f64,
    /// Tree rebuild time, seconds.
    pub rebuild_s: f64,
    /// mend's write time over plain RocksDB's.
    pub write_cost_ratio: f64,
    /// The shape each range's tree has grown to ([`grown_shape`]): the
    /// one the rest of the plan is for.
    pub shape: TreeShape,
}

/// Bytes of a handshake exchange, one range, each way: protocol 3's
/// challenge round trip and the handshake with nonce and proofs (measured
/// 38–42 bytes in protocol 2, plus 54 sent and 52 received for the
/// challenge, nonce and proofs).
const HANDSHAKE_BYTES: f64 = 95.0;
/// gRPC framing per message.
const FRAME: f64 = 5.0;
/// Bytes a packed entry adds to its key (prefix and length varints, ms
/// delta, flags, seq).
const PACKED_ENTRY_EXTRA: f64 = 10.0;
/// Bytes of one leaf query besides its hashes (bucket, count, headers).
const LEAF_QUERY_EXTRA: f64 = 8.0;
/// Bytes of one leaf reply besides its entries (query, bitmap header,
/// origin table, message header and framing).
const LEAF_REPLY_EXTRA: f64 = 24.0;
/// Bytes of a streamed repair entry besides key, value and origin (version
/// with ms and seq, field headers, framing share; measured 45 B with a
/// 6-byte origin in `tests/e2e/plan.rs`).
const REPAIR_ENTRY_EXTRA: f64 = 36.0;
/// Bytes of a stored record besides key and value (header, version, value
/// hash; see `record`), plus the 6-byte bucket prefix of its row key.
const RECORD_EXTRA: f64 = 55.0 + 6.0;

/// Expected number of distinct nodes among `nodes` that `d` uniform keys
/// fall in.
fn hit(nodes: f64, d: f64) -> f64 {
    if d <= 0.0 {
        return 0.0;
    }
    nodes * -(d * (-1.0 / nodes).ln_1p()).exp_m1()
}

/// Runs the model.
pub fn plan(i: &PlanInput, c: &Calibration) -> Plan {
    let ranges = i.ranges.max(1) as f64;
    let n = i.keys as f64 / ranges;
    let d = i.divergent as f64 / ranges;
    let shape = grown_shape(
        i.shape,
        n,
        i.deepen_entries_per_bucket,
        i.deepen_tree_bytes_max,
    );
    let f = f64::from(shape.fanout);
    let depth = shape.depth;
    let buckets = shape.buckets() as f64;
    let per_bucket = n / buckets;

    let mut sent = HANDSHAKE_BYTES + 2.0 * FRAME;
    let mut received = HANDSHAKE_BYTES + 2.0 * FRAME;
    let mut nodes = 1.0;
    let mut probe_rounds = 0u64;
    let mut differing_buckets = if d > 0.0 { 1.0 } else { 0.0 };
    if d > 0.0 {
        let mut parents = 1.0; // m(0): the root differs
        for level in 1..=depth {
            let hashes = f * parents;
            nodes += hashes;
            let m = hit(shape.nodes_at(level) as f64, d);
            if level % 2 == 1 {
                probe_rounds += 1;
                // Probe: parents (varints, ~3 B) and hashes; reply: status bits.
                sent += 8.0 * hashes + 3.0 * parents + 2.0 * FRAME;
                received += hashes / 4.0 + 2.0 * FRAME;
            } else {
                received += 8.0 * hashes;
            }
            parents = m;
        }
        differing_buckets = parents;
    }
    let leaf_probes = (differing_buckets / LEAF_QUERIES_MAX as f64)
        .ceil()
        .max(1.0);
    let leaf_rounds = if d > 0.0 { 1.0 } else { 0.0 };
    let local_entries = per_bucket + 1.0;
    if d > 0.0 {
        sent += differing_buckets * (8.0 * local_entries + LEAF_QUERY_EXTRA) + leaf_probes * FRAME;
        received += differing_buckets * (LEAF_REPLY_EXTRA + local_entries / 8.0)
            + d * (i.key_bytes as f64 + PACKED_ENTRY_EXTRA);
    }
    // The probe steps and the leaf step of each range; the challenge and
    // the handshake once for all ranges.
    let rounds_per_range = probe_rounds + leaf_rounds as u64;
    let rounds = 2 + rounds_per_range * ranges as u64;
    // Each side lists each differing bucket once (the initiator keeps its
    // listing for the reply's lacking entries).
    let listed = 2.0 * differing_buckets * local_entries;

    let bytes_sent = sent * ranges;
    let bytes_received = received * ranges;
    let entries_listed = listed * ranges;
    let link_s = (bytes_sent + bytes_received) / i.bandwidth.max(1) as f64;
    let cpu_us = rounds as f64 * c.round_trip_us
        + entries_listed * c.entry_list_us
        + nodes * ranges * c.node_us
        + d * ranges * c.divergent_key_us;
    let diff_s = rounds as f64 * i.rtt_ms / 1e3 + link_s + cpu_us / 1e6;

    let entry = (i.key_bytes + i.value_bytes) as f64;
    let divergent_total = d * ranges;
    let repair_bytes = divergent_total * (entry + REPAIR_ENTRY_EXTRA + i.origin_bytes as f64);
    let repair_s = if divergent_total > 0.0 {
        let link = repair_bytes / i.bandwidth.max(1) as f64;
        let apply =
            divergent_total * c.apply_key_us / 1e6 + repair_bytes / c.apply_bytes_per_s.max(1.0);
        link.max(apply) + i.rtt_ms / 1e3
    } else {
        0.0
    };

    let tree_nodes: u64 = (0..=depth).map(|l| shape.nodes_at(l)).sum();
    let tree_memory_bytes = (tree_nodes * std::mem::size_of::<Agg>() as u64) as f64 * ranges;
    let disk_overhead_per_key = RECORD_EXTRA
        + i.origin_bytes as f64
        + c.leaf_row_bytes * (buckets * ranges).min(i.keys as f64) / (i.keys.max(1) as f64);

    Plan {
        keys_per_range: n,
        divergent_per_range: d,
        entries_per_bucket: per_bucket,
        differing_buckets,
        rounds_per_range,
        rounds,
        bytes_sent,
        bytes_received,
        entries_listed,
        diff_s,
        repair_bytes,
        repair_s,
        tree_memory_bytes,
        disk_overhead_per_key,
        rebuild_s: i.keys as f64 * c.rebuild_key_us / 1e6,
        write_cost_ratio: c.write_us / c.plain_write_us,
        shape,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(keys: u64, divergent: u64) -> PlanInput {
        PlanInput {
            keys,
            divergent,
            value_bytes: 100,
            key_bytes: 16,
            origin_bytes: 6,
            bandwidth: 125_000_000,
            rtt_ms: 0.0,
            ranges: 1,
            shape: TreeShape {
                fanout: 16,
                depth: 4,
            },
            deepen_entries_per_bucket: 0,
            deepen_tree_bytes_max: 256 << 20,
        }
    }

    #[test]
    fn rounds_follow_the_protocol() {
        let c = Calibration::REFERENCE;
        assert_eq!(plan(&input(1_000_000, 1), &c).rounds, 5);
        assert_eq!(plan(&input(1_000_000, 0), &c).rounds, 2);
        // 10 000 divergent keys hit ~9 300 of 65 536 buckets: 3 leaf
        // probes, sent at once.
        let p = plan(&input(1_000_000, 10_000), &c);
        assert!((9_000.0..9_500.0).contains(&p.differing_buckets), "{p:?}");
        assert_eq!(p.rounds, 5);
    }

    #[test]
    fn bytes_grow_with_divergence_and_time_with_rtt() {
        let c = Calibration::REFERENCE;
        let one = plan(&input(1_000_000, 1), &c);
        let many = plan(&input(1_000_000, 100), &c);
        assert!(many.bytes_sent > 50.0 * one.bytes_sent / 2.0);
        let mut slow = input(1_000_000, 100);
        slow.rtt_ms = 50.0;
        let far = plan(&slow, &c);
        assert!((far.diff_s - many.diff_s - 5.0 * 0.05).abs() < 1e-9);
        assert!(many.repair_bytes >= 100.0 * (116.0 + 6.0));
    }

    #[test]
    fn trees_grow_past_the_threshold_and_no_further() {
        let s = TreeShape::default();
        let max = 256 << 20;
        assert_eq!(grown_shape(s, 100_000.0, 16, max).depth, 4);
        assert_eq!(
            grown_shape(s, 1_000_000.0, 16, max).depth,
            4,
            "15.3 per bucket"
        );
        assert_eq!(
            grown_shape(s, 10_000_000.0, 16, max).depth,
            5,
            "9.5 per bucket"
        );
        assert_eq!(
            grown_shape(s, 1e12, 16, max).depth,
            5,
            "16^6 is a 720 MiB tree"
        );
        assert_eq!(
            grown_shape(s, 1e12, 16, u64::MAX).depth,
            6,
            "the deepest fan-out 16 allows"
        );
        assert_eq!(grown_shape(s, 10_000_000.0, 0, max).depth, 4, "off");
        // The plan is for the grown tree: more levels, smaller buckets.
        let mut i = input(10_000_000, 100);
        let fixed = plan(&i, &Calibration::REFERENCE);
        i.deepen_entries_per_bucket = 16;
        let grown = plan(&i, &Calibration::REFERENCE);
        assert_eq!((fixed.shape.depth, grown.shape.depth), (4, 5));
        assert!(grown.entries_per_bucket < 10.0 && fixed.entries_per_bucket > 150.0);
        assert!(grown.entries_listed < fixed.entries_listed / 10.0);
        assert!(grown.tree_memory_bytes > 10.0 * fixed.tree_memory_bytes);
    }
}
