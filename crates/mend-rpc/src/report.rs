//! A diff's report ([`mend_core::report::DiffReport`]) to and from its wire
//! messages: the `DiffSummary` that ends a `Diff` stream and the
//! `DivergentKey`s before it. The agent sends what [`summary_to_pb`] and
//! [`key_to_pb`] build; `mend diff` rebuilds the same report with
//! [`report_from_pb`], refusing unknown enum values with `INVALID_ARGUMENT`
//! naming the field.

use tonic::Status;

use mend_core::attribution::{Cause, SeqGaps, Source};
use mend_core::report::{CauseReport, DiffReport, EntryReport, KeyReport, TreeMismatch};

use crate::enums::{category_from_pb, category_to_pb, side_from_pb, side_to_pb};
use crate::pb;

/// The summary message of a report (its keys go as [`key_to_pb`]).
pub fn summary_to_pb(r: &DiffReport) -> pb::DiffSummary {
    pb::DiffSummary {
        in_sync: r.in_sync,
        tree_mismatches: r
            .tree_mismatches
            .iter()
            .map(|m| pb::TreeMismatch {
                range: m.range.clone(),
                buckets: m.buckets.clone(),
                fixed: m.fixed.clone(),
            })
            .collect(),
        peer_clock_skew_ms: r.peer_clock_skew_ms,
        divergent_keys: r.divergent_keys,
        by_category: r
            .by_category
            .iter()
            .map(|(c, n)| pb::CategoryCount {
                category: category_to_pb(*c),
                count: *n,
            })
            .collect(),
        rounds: r.rounds,
        bytes_sent: r.bytes_sent,
        bytes_received: r.bytes_received,
        nodes_compared: r.nodes_compared,
        leaves_compared: r.leaves_compared,
        elapsed_ms: r.elapsed_ms,
        local_node: r.local_node.clone(),
        peer_node: r.peer_node.clone(),
        ranges: r.ranges.clone(),
        versionless_ranges: r.versionless_ranges.clone(),
        sources: r.sources.iter().map(source_to_pb).collect(),
        cause: r.cause.as_ref().map(cause_to_pb),
    }
}

/// A divergent key as a wire message, from its raw bytes (the report's
/// `key` is lossy text).
pub fn key_to_pb(k: &KeyReport, raw_key: Vec<u8>) -> pb::DivergentKey {
    pb::DivergentKey {
        range: k.range.clone(),
        key: raw_key,
        category: category_to_pb(k.category),
        behind: side_to_pb(k.behind),
        local: Some(entry_to_pb(&k.local)),
        peer: Some(entry_to_pb(&k.peer)),
    }
}

/// The report a `Diff` stream carried: its keys and its summary.
pub fn report_from_pb(
    keys: &[pb::DivergentKey],
    s: &pb::DiffSummary,
) -> Result<DiffReport, Status> {
    let mut by_category = DiffReport::count_categories(std::iter::empty());
    for c in &s.by_category {
        by_category.insert(
            category_from_pb(c.category, "by_category.category")?,
            c.count,
        );
    }
    let keys = keys
        .iter()
        .map(key_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    let keys_omitted = s.divergent_keys.saturating_sub(keys.len() as u64);
    Ok(DiffReport {
        in_sync: s.in_sync,
        local_node: s.local_node.clone(),
        peer_node: s.peer_node.clone(),
        ranges: s.ranges.clone(),
        versionless_ranges: s.versionless_ranges.clone(),
        tree_mismatches: s
            .tree_mismatches
            .iter()
            .map(|m| TreeMismatch {
                range: m.range.clone(),
                buckets: m.buckets.clone(),
                fixed: m.fixed.clone(),
            })
            .collect(),
        peer_clock_skew_ms: s.peer_clock_skew_ms,
        divergent_keys: s.divergent_keys,
        by_category,
        cause: s.cause.as_ref().map(cause_from_pb).transpose()?,
        sources: s
            .sources
            .iter()
            .map(source_from_pb)
            .collect::<Result<_, _>>()?,
        keys,
        keys_omitted,
        rounds: s.rounds,
        bytes_sent: s.bytes_sent,
        bytes_received: s.bytes_received,
        nodes_compared: s.nodes_compared,
        leaves_compared: s.leaves_compared,
        elapsed_ms: s.elapsed_ms,
    })
}

fn entry_to_pb(e: &Option<EntryReport>) -> pb::EntryVersion {
    match e {
        Some(e) => pb::EntryVersion {
            present: true,
            version: Some(pb::Version {
                ms: e.ms,
                logical: e.logical,
                origin: e.origin.clone(),
                seq: e.seq,
            }),
            tombstone: e.tombstone,
        },
        None => pb::EntryVersion::default(),
    }
}

fn entry_from_pb(e: Option<&pb::EntryVersion>) -> Option<EntryReport> {
    let e = e.filter(|e| e.present)?;
    let v = e.version.clone().unwrap_or_default();
    Some(EntryReport {
        ms: v.ms,
        logical: v.logical,
        origin: v.origin,
        seq: v.seq,
        tombstone: e.tombstone,
    })
}

fn key_from_pb(k: &pb::DivergentKey) -> Result<KeyReport, Status> {
    Ok(KeyReport::new(
        k.range.clone(),
        &k.key,
        category_from_pb(k.category, "key.category")?,
        side_from_pb(k.behind, "key.behind")?,
        entry_from_pb(k.local.as_ref()),
        entry_from_pb(k.peer.as_ref()),
    ))
}

/// An attribution source as a wire message.
pub fn source_to_pb(s: &Source) -> pb::Source {
    let gaps = s.seq_gaps.as_ref();
    pb::Source {
        category: category_to_pb(s.category),
        origin: s.origin.clone(),
        newer_side: side_to_pb(Some(s.newer_side)),
        count: s.count,
        first_ms: s.first_ms,
        last_ms: s.last_ms,
        seq_min: s.seq_min,
        seq_max: s.seq_max,
        seq_missing_on: side_to_pb(gaps.map(|g| g.missing_on)),
        seq_missing: gaps.map_or(0, |g| g.missing),
        seq_gaps: gaps
            .map(|g| {
                g.ranges
                    .iter()
                    .map(|(first, last)| pb::SeqRange {
                        first: *first,
                        last: *last,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        hint: s.hint.clone(),
    }
}

/// A wire attribution source; its sequence gaps exist where
/// `seq_missing_on` names a side.
pub fn source_from_pb(s: &pb::Source) -> Result<Source, Status> {
    let newer_side = side_from_pb(s.newer_side, "source.newer_side")?
        .ok_or_else(|| Status::invalid_argument("source.newer_side: required"))?;
    let seq_gaps =
        side_from_pb(s.seq_missing_on, "source.seq_missing_on")?.map(|missing_on| SeqGaps {
            missing_on,
            missing: s.seq_missing,
            ranges: s.seq_gaps.iter().map(|g| (g.first, g.last)).collect(),
        });
    Ok(Source {
        category: category_from_pb(s.category, "source.category")?,
        origin: s.origin.clone(),
        newer_side,
        count: s.count,
        first_ms: s.first_ms,
        last_ms: s.last_ms,
        seq_min: s.seq_min,
        seq_max: s.seq_max,
        seq_gaps,
        hint: s.hint.clone(),
    })
}

/// A single cause as a wire message.
pub fn cause_to_pb(c: &CauseReport) -> pb::Cause {
    let mut m = pb::Cause {
        hint: c.hint.clone(),
        ..Default::default()
    };
    match &c.cause {
        Cause::Empty {
            node,
            keys,
            origins,
        } => {
            m.kind = pb::CauseKind::Empty as i32;
            (m.node, m.keys, m.origins) = (node.clone(), *keys, *origins);
        }
        Cause::LostAfter {
            node,
            after_ms,
            keys,
            origins,
        } => {
            m.kind = pb::CauseKind::LostAfter as i32;
            (m.node, m.after_ms, m.keys, m.origins) = (node.clone(), *after_ms, *keys, *origins);
        }
        Cause::ClockJump {
            node,
            keys,
            ahead_ms,
        } => {
            m.kind = pb::CauseKind::ClockJump as i32;
            (m.node, m.keys, m.ahead_ms) = (node.clone(), *keys, *ahead_ms);
        }
    }
    m
}

/// A wire single cause (its kind required).
pub fn cause_from_pb(c: &pb::Cause) -> Result<CauseReport, Status> {
    let (node, keys) = (c.node.clone(), c.keys);
    let cause = match pb::CauseKind::try_from(c.kind) {
        Ok(pb::CauseKind::Empty) => Cause::Empty {
            node,
            keys,
            origins: c.origins,
        },
        Ok(pb::CauseKind::LostAfter) => Cause::LostAfter {
            node,
            after_ms: c.after_ms,
            keys,
            origins: c.origins,
        },
        Ok(pb::CauseKind::ClockJump) => Cause::ClockJump {
            node,
            keys,
            ahead_ms: c.ahead_ms,
        },
        Ok(pb::CauseKind::Unspecified) => {
            return Err(Status::invalid_argument("cause.kind: required"));
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "cause.kind: unknown value {}",
                c.kind
            )));
        }
    };
    Ok(CauseReport {
        cause,
        hint: c.hint.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_cause_kind_is_refused_naming_the_field() {
        let e = cause_from_pb(&pb::Cause {
            kind: 99,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("cause.kind"), "{}", e.message());
    }

    #[test]
    fn an_unknown_source_category_is_refused_naming_the_field() {
        let s = pb::Source {
            category: 99,
            newer_side: pb::Side::Peer as i32,
            ..Default::default()
        };
        let e = source_from_pb(&s).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("source.category"), "{}", e.message());
    }

    #[test]
    fn every_cause_kind_crosses_the_wire_unchanged() {
        let causes = [
            Cause::Empty {
                node: "b".into(),
                keys: 3,
                origins: 2,
            },
            Cause::LostAfter {
                node: "b".into(),
                after_ms: 1_000,
                keys: 4,
                origins: 2,
            },
            Cause::ClockJump {
                node: "a".into(),
                keys: 5,
                ahead_ms: 60_000,
            },
        ];
        for cause in causes {
            let c = CauseReport {
                cause,
                hint: "why".into(),
            };
            assert_eq!(cause_from_pb(&cause_to_pb(&c)).unwrap(), c);
        }
    }
}
