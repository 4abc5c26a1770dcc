//! Diagnosis and scoring: the exchange between node-a and node-b run in
//! process with [`run_local`], each divergent key classified the way the
//! agent classifies it, the keys attributed to sources, and the result held
//! against the injected ground truth.

use std::collections::{HashMap, HashSet};

use mend_core::attribution::{Observed, Options, Source, attribute};
use mend_core::exchange::{EntrySummary, run_local};
use mend_core::{EntryMeta, Policy, Side, classify};

use crate::cluster::{A, B, Cluster, NODES};
use crate::{Drill, Injected, SimError};

/// The exchange sees entries as summaries whose content is an 8-byte hash;
/// classification needs an [`EntryMeta`]. Exactly as the agent builds it
/// (`mend_agent::exchange::meta_of`): the hash fills the first 8 bytes of
/// `value_hash`, so equal summaries give equal metas and different ones
/// different metas.
fn meta_of(e: &EntrySummary) -> EntryMeta {
    let mut value_hash = [0u8; 32];
    value_hash[..8].copy_from_slice(&e.hash.to_le_bytes());
    EntryMeta {
        version: e.version.clone(),
        tombstone: e.tombstone,
        value_hash,
    }
}

/// Runs the exchange at `now` and scores it against `injected`.
pub(crate) fn judge(
    scenario: &str,
    seed: u64,
    now: u64,
    cluster: &Cluster,
    injected: Vec<Injected>,
) -> Result<Drill, SimError> {
    let (local, peer) = (cluster.view(A)?, cluster.view(B)?);
    let run = run_local(&local, &peer, local.root_hash()?, peer.root_hash()?)?;
    let policy = Policy::default();
    let mut observed = Vec::with_capacity(run.divergences.len());
    for div in &run.divergences {
        let (l, p) = (
            div.local.as_ref().map(meta_of),
            div.peer.as_ref().map(meta_of),
        );
        if let Some(c) = classify(l.as_ref(), p.as_ref(), now, &policy) {
            observed.push(Observed {
                div,
                category: c.category,
                behind: c.behind,
            });
        }
    }
    let opts = Options {
        // Every source is kept for scoring; reports show the largest few.
        sources_max: usize::MAX,
        now_ms: now,
        local_node: NODES[A].to_string(),
        peer_node: NODES[B].to_string(),
        ..Options::default()
    };
    let sources = attribute(&observed, &opts);

    let by_key: HashMap<&[u8], &Observed<'_>> =
        observed.iter().map(|o| (o.div.key.as_slice(), o)).collect();
    let mut category_correct = 0;
    let mut origin_window_correct = 0;
    for f in &injected {
        let Some(o) = by_key.get(f.key.as_slice()) else {
            continue;
        };
        if (o.category, o.behind) != (f.category, f.behind) {
            continue;
        }
        category_correct += 1;
        if attributed(f, o, &sources) {
            origin_window_correct += 1;
        }
    }
    let truth: HashSet<&[u8]> = injected.iter().map(|f| f.key.as_slice()).collect();
    let unexpected = observed
        .iter()
        .filter(|o| !truth.contains(o.div.key.as_slice()))
        .map(|o| o.div.key.clone())
        .collect();
    let diagnosed = observed
        .iter()
        .map(|o| (o.div.key.clone(), o.category, o.behind))
        .collect();
    Ok(Drill {
        scenario: scenario.to_string(),
        seed,
        now_ms: now,
        keys_total: cluster.latest().len() as u64,
        injected,
        diagnosed,
        sources,
        rounds: run.rounds,
        category_correct,
        origin_window_correct,
        unexpected,
    })
}

/// True when the key of fault `f`, diagnosed as `o`, falls in a source with
/// the injected category and origin (its newer write's time between the
/// source's first and last), and that source's window lies inside the
/// injected one: attribution named the right node and did not smear the
/// incident into unrelated writes.
fn attributed(f: &Injected, o: &Observed<'_>, sources: &[Source]) -> bool {
    let side = o.behind.map_or(Side::Local, Side::other);
    let newer = match side {
        Side::Local => o.div.local.as_ref(),
        Side::Peer => o.div.peer.as_ref(),
    };
    let Some(ms) = newer.map(|e| e.version.ms) else {
        return false;
    };
    sources.iter().any(|s| {
        s.category == f.category
            && s.origin == f.origin
            && s.newer_side == side
            && (s.first_ms..=s.last_ms).contains(&ms)
            && f.window.0 <= s.first_ms
            && s.last_ms <= f.window.1
    })
}
