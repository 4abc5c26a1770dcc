//! The repair plan: what moves where and what is skipped, from a classified
//! diff (`mend_core::playbook::repair_plan`, pure), in causal (HLC) order.

use mend_core::classify::{Category, Side};

use crate::outcome::{DiffOutcome, DivergentKey};
use crate::state::{AgentBackend, AgentState};

use super::Planned;
use mend_core::playbook::{Authority, Divergent, Resolution, SkipNote, SkipReason, repair_plan};

/// Plans a repair from a diff (`mend_core::playbook::repair_plan`): what
/// moves where, and what is skipped. `grace_ms` is the tombstone grace
/// period: a tombstone past it against nothing was purged by the other
/// side and does not move. `authorities` are the configured per-range
/// authorities (`[[authority]]`), placed on this exchange's two sides.
pub fn plan(
    d: &DiffOutcome,
    categories: &[Category],
    grace_ms: u64,
    authorities: &[mend_config::AuthorityConfig],
) -> (Vec<Planned>, Vec<(Vec<u8>, SkipNote)>) {
    fn origin(e: &Option<mend_core::exchange::EntrySummary>) -> Option<&mend_core::NodeId> {
        e.as_ref().map(|e| &e.version.origin)
    }
    let horizon = d.started_ms.saturating_sub(grace_ms);
    let purged = |k: &DivergentKey| match (&k.div.local, &k.div.peer) {
        (Some(e), None) | (None, Some(e)) => e.tombstone && e.version.ms < horizon,
        _ => false,
    };
    // Causal order: keys move in the order of their newer entry's version
    // (HLC order), and each side applies its batches in that order, so a
    // reader of the behind replica never sees a write while an earlier
    // missing write is still absent.
    let mut ordered: Vec<&DivergentKey> = d.keys.iter().collect();
    ordered.sort_by(|a, b| newer_version(a).cmp(&newer_version(b)));
    let authority = |range: &str| {
        authorities
            .iter()
            .find(|a| a.range == range)
            .map(|a| Authority {
                side: if a.node == d.local_node {
                    Some(Side::Local)
                } else if a.node == d.peer_node {
                    Some(Side::Peer)
                } else {
                    None
                },
                scope: a.scope,
            })
    };
    let keys = ordered.into_iter().map(|k: &DivergentKey| Divergent {
        key: &k.div.key,
        category: k.category,
        behind: k.behind,
        origin: origin(&k.div.local).or(origin(&k.div.peer)),
        purged: purged(k),
        authority: authority(&k.range),
    });
    let p = repair_plan(keys, categories);
    let planned = p
        .planned
        .into_iter()
        .map(|m| Planned {
            key: m.key,
            category: m.category,
            behind: m.behind,
            resolution: m.resolution,
        })
        .collect();
    let skipped = p
        .skipped
        .into_iter()
        .map(|(k, why)| (k, SkipNote::from(why)))
        .collect();
    (planned, skipped)
}

/// [`plan`] with this agent's tombstone grace and authorities.
pub fn plan_for<B: AgentBackend>(
    state: &AgentState<B>,
    d: &DiffOutcome,
    categories: &[Category],
) -> (Vec<Planned>, Vec<(Vec<u8>, SkipNote)>) {
    // Only where tombstones are purged can "past its grace against nothing"
    // mean the other side purged it; else the tombstone is copied as usual.
    let grace = if state.config.gc.enabled {
        state.store.config().tombstone_grace_ms
    } else {
        u64::MAX
    };
    let (planned, mut skipped) = plan(d, categories, grace, &state.config.authority);
    // A digest-only range's values live behind its adapter: its keys move
    // through the adapters of both sides (`rows`), newer-wins only (a
    // resolution toward an authority re-stamps a value here, which a store
    // behind an adapter does not take); without an adapter here they are
    // reported and left alone.
    let ranges = state.store.ranges();
    let mut why: std::collections::HashMap<&str, SkipReason> = Default::default();
    for s in ranges.specs() {
        if s.versionless {
            why.insert(s.name.as_str(), SkipReason::Versionless);
        } else if s.mode == mend_core::RangeMode::Digests && state.rows.get(&s.name).is_none() {
            why.insert(s.name.as_str(), SkipReason::DigestOnly);
        }
    }
    // A versionless key has no side behind, so the playbook skipped it
    // already: say why in the range's own words.
    let versionless: std::collections::HashSet<&[u8]> = d
        .keys
        .iter()
        .filter(|k| why.get(k.range.as_str()) == Some(&SkipReason::Versionless))
        .map(|k| k.div.key.as_slice())
        .collect();
    for (k, reason) in skipped.iter_mut() {
        if versionless.contains(k.as_slice()) {
            *reason = skip_note(SkipReason::Versionless);
        }
    }
    let digest_only: std::collections::HashSet<&str> = ranges
        .specs()
        .iter()
        .filter(|s| s.mode == mend_core::RangeMode::Digests)
        .map(|s| s.name.as_str())
        .collect();
    if digest_only.is_empty() {
        return (planned, skipped);
    }
    let range_of: std::collections::HashMap<&[u8], &str> = d
        .keys
        .iter()
        .filter(|k| digest_only.contains(k.range.as_str()))
        .map(|k| (k.div.key.as_slice(), k.range.as_str()))
        .collect();
    let mut kept = Vec::with_capacity(planned.len());
    for p in planned {
        let reason = match range_of.get(p.key.as_slice()) {
            None => None,
            Some(r) => why
                .get(r)
                .copied()
                .or((p.resolution == Resolution::Authority)
                    .then_some(SkipReason::DigestOnlyAuthority)),
        };
        match reason {
            Some(r) => skipped.push((p.key, skip_note(r))),
            None => kept.push(p),
        }
    }
    (kept, skipped)
}

/// The note of a skip decided by range: `reason` is
/// [`SkipReason::DigestOnly`], [`SkipReason::Versionless`] or
/// [`SkipReason::DigestOnlyAuthority`].
fn skip_note(reason: SkipReason) -> SkipNote {
    let text = match reason {
        SkipReason::DigestOnly => DIGEST_ONLY_SKIP,
        SkipReason::Versionless => VERSIONLESS_SKIP,
        _ => DIGEST_ONLY_AUTHORITY_SKIP,
    };
    SkipNote::new(reason, text)
}

/// Why a key of a digest-only range is not repaired by this agent.
pub const DIGEST_ONLY_SKIP: &str = "digest-only range without an adapter here: mend holds \
     no value to move; repair through the source's adapter (mend attach serves repairs)";

/// Why a key of a versionless range is not repaired.
pub const VERSIONLESS_SKIP: &str = "versionless range: no version says which side is \
     newer, so mend does not choose; compare the rows and repair by hand";

/// Why a key of a digest-only range is not resolved toward an authority.
pub const DIGEST_ONLY_AUTHORITY_SKIP: &str = "digest-only range: resolving toward an \
     authority re-stamps the value, which a store behind an adapter does not take; \
     repair it newer-wins or by hand";

/// The sort key of a divergent key in causal order: its newer entry's
/// (ms, logical, origin, seq); keys with no entry on either side sort first.
pub(super) fn newer_version(k: &DivergentKey) -> Option<(u64, u32, &str, u64)> {
    [&k.div.local, &k.div.peer]
        .into_iter()
        .flatten()
        .map(|e| {
            let v = &e.version;
            (v.ms, v.logical, v.origin.as_str(), v.seq)
        })
        .max()
}

/// The planned keys whose `behind` side is `side` by newer-wins, in plan
/// (causal) order.
pub(super) fn keys_behind(planned: &[Planned], side: Side) -> Vec<Vec<u8>> {
    planned
        .iter()
        .filter(|p| p.behind == side && p.resolution == Resolution::Newer)
        .map(|p| p.key.clone())
        .collect()
}
