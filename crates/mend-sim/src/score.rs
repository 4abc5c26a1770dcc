//! Diagnosis and scoring: the agent's own diff (`mend_agent::exchange::diff`)
//! of node-a against node-b's real Peer service over an in-memory link,
//! classified by the agent, the keys attributed to sources, and the result
//! held against the injected ground truth.

use std::collections::{HashMap, HashSet};

use mend_core::Side;
use mend_core::attribution::{Observed, Options, Source, attribute};

use crate::cluster::{A, B, Cluster, NODES};
use crate::{Drill, Injected, SimError};

/// Runs the exchange at `now` and scores it against `injected`.
pub(crate) fn judge(
    scenario: &str,
    seed: u64,
    now: u64,
    cluster: &Cluster,
    injected: Vec<Injected>,
) -> Result<Drill, SimError> {
    // The diagnosis is made at `now` on correct clocks: a skew the scenario
    // injected lasted while the writes were made (an agent whose own clock
    // runs ahead cannot see its versions as ahead of it).
    cluster.set_time(now);
    for node in 0..NODES.len() {
        cluster.set_skew(node, 0);
    }
    let wire = std::sync::Arc::new(mend_agent::link::mem::Counting::default());
    let agent = mend_agent::link::mem::pair(cluster.store(A), cluster.store(B), wire);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| SimError::Invariant(format!("no runtime: {e}")))?;
    let run = rt
        .block_on(mend_agent::exchange::diff(&agent, NODES[B], None))
        .map_err(|s| SimError::Invariant(format!("the exchange failed: {}", s.message())))?;
    let observed = run.observed();
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
        rounds: run.cost.rounds,
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
