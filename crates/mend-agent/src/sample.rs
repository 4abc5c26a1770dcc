//! Sampling: cheap spot checks between full exchanges. Half the sample is
//! drawn uniformly from the local tree, half from the peer's; each sampled
//! key is looked up on the other side and compared by entry digest. The
//! divergent share is estimated with a 95% Wilson score interval.

use std::sync::Arc;

use mend_core::exchange::{Divergence, EntrySummary, entry_hash};
use mend_rpc::convert::summary_from_pb;
use mend_rpc::pb;

use crate::error::AgentError;
use crate::exchange::{Peer, connect, peer_err};
use crate::outcome::{DivergentKey, classify_in};
use crate::state::{AgentBackend, AgentState};

/// Most keys one sample may draw.
pub const SAMPLE_KEYS_MAX: u32 = 100_000;

/// The outcome of a sample.
#[derive(Debug, Clone)]
pub struct SampleOutcome {
    /// Keys compared.
    pub sampled: u64,
    /// Those that differ, classified.
    pub keys: Vec<DivergentKey>,
    /// Estimated divergent share.
    pub share: f64,
    /// 95% interval, low end.
    pub ci_low: f64,
    /// 95% interval, high end.
    pub ci_high: f64,
}

/// The 95% Wilson score interval for `k` successes in `n` trials.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_964f64;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let d = 1.0 + z * z / n;
    let c = p + z * z / (2.0 * n);
    let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (((c - h) / d).max(0.0), ((c + h) / d).min(1.0))
}

/// Samples `n` keys (half local, half peer) and compares them.
pub async fn sample<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    n: u32,
    seed: u64,
) -> Result<SampleOutcome, AgentError> {
    let out = sample_once(state, addr, n, seed).await;
    crate::exchange::forget_on_error(state, addr, out)
}

/// A sampled key in a range: this agent's entry and the peer's (`None`:
/// absent on that side).
type Pair = (String, Option<EntrySummary>, Option<EntrySummary>);

async fn sample_once<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    n: u32,
    seed: u64,
) -> Result<SampleOutcome, AgentError> {
    let peer = connect(state, addr).await?;
    let specs = state.store.ranges().specs().to_vec();
    let per_range = (n as usize).div_ceil(2 * specs.len()).max(1);
    let now = state.store.now_ms();
    let policy = state.config.policy();
    let mut pairs: Vec<Pair> = Vec::new();
    for (id, spec) in specs.iter().enumerate() {
        let id = id as u16;
        let draws = Draws {
            peer: &peer,
            addr,
            per_range,
            seed,
        };
        pairs.extend(draw_local(state, draws, id, &spec.name).await?);
        pairs.extend(draw_peer(state, draws, &spec.name).await?);
    }
    let sampled = pairs.len() as u64;
    let keys = divergent(state, pairs, now, &policy);
    let (ci_low, ci_high) = wilson(keys.len() as u64, sampled);
    let share = if sampled == 0 {
        0.0
    } else {
        keys.len() as f64 / sampled as f64
    };
    Ok(SampleOutcome {
        sampled,
        keys,
        share,
        ci_low,
        ci_high,
    })
}

/// The draws of one range on each side: `per_range` keys from `seed`,
/// looked up on the other side.
#[derive(Clone, Copy)]
struct Draws<'a> {
    peer: &'a Peer,
    addr: &'a str,
    per_range: usize,
    seed: u64,
}

/// Draws keys of range `id` here and looks them up at the peer.
async fn draw_local<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    draws: Draws<'_>,
    id: u16,
    name: &str,
) -> Result<Vec<Pair>, AgentError> {
    let (peer, addr, per_range, seed) = (draws.peer, draws.addr, draws.per_range, draws.seed);
    let mut pairs = Vec::new();
    // Local draws, looked up at the peer.
    let local: Vec<EntrySummary> = state
        .blocking(move |s| s.sample_entries(id, per_range, seed))
        .await?
        .into_iter()
        .map(|e| EntrySummary {
            hash: entry_hash(&e.digest),
            key: e.key,
            version: e.meta.version,
            tombstone: e.meta.tombstone,
        })
        .collect();
    for chunk in local.chunks(state.config.limits.fetch_keys_max) {
        let req = pb::FetchRequest {
            keys: chunk.iter().map(|e| e.key.clone()).collect(),
        };
        let resp = peer.lookup(req).await.map_err(|s| peer_err(addr, s))?;
        if resp.results.len() != chunk.len() {
            return Err(AgentError::internal(format!(
                "peer {addr} answered {} of {} lookups",
                resp.results.len(),
                chunk.len()
            )));
        }
        for (mine, r) in chunk.iter().zip(resp.results) {
            let theirs = match r.entry {
                Some(e) if r.found => Some(summary_from_pb(e).map_err(|s| peer_err(addr, s))?),
                _ => None,
            };
            pairs.push((name.to_string(), Some(mine.clone()), theirs));
        }
    }
    Ok(pairs)
}

/// Has the peer draw keys of range `name` and looks them up here (none
/// when the peer does not serve the range).
async fn draw_peer<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    draws: Draws<'_>,
    name: &str,
) -> Result<Vec<Pair>, AgentError> {
    let (peer, addr, per_range, seed) = (draws.peer, draws.addr, draws.per_range, draws.seed);
    // Peer draws, looked up here.
    let req = pb::PeerSampleRequest {
        range: name.to_string(),
        count: per_range as u32,
        seed,
    };
    let drawn = match peer.sample(req).await {
        Ok(r) => r.entries,
        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
        Err(s) => return Err(peer_err(addr, s)),
    };
    let theirs: Vec<EntrySummary> = drawn
        .into_iter()
        .map(summary_from_pb)
        .collect::<Result<_, _>>()
        .map_err(|s| peer_err(addr, s))?;
    let st = state.clone();
    let looked = tokio::task::spawn_blocking(move || {
        theirs
            .into_iter()
            .map(|t| st.store.summary(&t.key).map(|m| (m, t)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(AgentError::from)?
    .map_err(AgentError::from)?;
    Ok(looked
        .into_iter()
        .map(|(mine, t)| (name.to_string(), mine, Some(t)))
        .collect())
}

/// The sampled keys whose entries differ, classified (those the policy
/// does not count as divergent left out).
fn divergent<B: AgentBackend>(
    state: &AgentState<B>,
    pairs: Vec<Pair>,
    now: u64,
    policy: &mend_core::classify::Policy,
) -> Vec<DivergentKey> {
    let mut keys = Vec::new();
    for (range, l, p) in pairs {
        if l.as_ref().map(|e| e.hash) == p.as_ref().map(|e| e.hash) {
            continue;
        }
        let versionless = state
            .store
            .ranges()
            .by_name(&range)
            .and_then(|id| state.store.ranges().get(id))
            .is_some_and(|s| s.versionless);
        let Some(c) = classify_in(versionless, l.as_ref(), p.as_ref(), now, policy) else {
            continue;
        };
        let key = l
            .as_ref()
            .or(p.as_ref())
            .map(|e| e.key.clone())
            .unwrap_or_default();
        keys.push(DivergentKey {
            range,
            div: Divergence {
                key,
                local: l,
                peer: p,
            },
            category: c.category,
            behind: c.behind,
        });
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_brackets_the_estimate() {
        let (lo, hi) = wilson(10, 1000);
        assert!(lo < 0.01 && 0.01 < hi, "{lo} {hi}");
        assert!(lo > 0.004 && hi < 0.02, "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, _) = wilson(0, 500);
        assert!(lo.abs() < 1e-12, "{lo}");
    }
}
