//! The built-in scenarios. Each plans one kind of fault between node-a (the
//! local side, which runs the exchange) and node-b (the peer) on top of the
//! same replicated base data set and fully replicated background traffic,
//! plus a little in-flight noise, and runs the plan on a fresh [`Cluster`].
//! Every parameter (key counts, which keys, windows, skew amounts) comes
//! from the drill's seed.

use mend_core::{Category, Side};

use crate::Injected;
use crate::cluster::{A, B, C, Cluster};
use crate::plan::{Fault, MINUTE_MS, Plan};

/// What planning a scenario leaves besides the plan: the ground truth that
/// only exists once the plan has run (a wipe's victims).
pub(crate) enum After {
    /// The plan's faults are the whole truth.
    Nothing,
    /// Every key whose latest write precedes the wipe at this time is
    /// missing on node-b, attributed to that write's origin.
    WipedAt(u64),
}

/// Writes via node-c during a window reach node-a but never node-b: new keys
/// are missing on node-b, updated ones stale there.
pub(crate) fn propagation_outage(p: &mut Plan<'_>) -> After {
    let window = p.past_window(MINUTE_MS, 4 * MINUTE_MS);
    let n = p.rng.between(100, 400);
    for at in p.times(n, window) {
        let (key, category) = if p.rng.percent(25) {
            (p.claim(), Category::Stale)
        } else {
            (p.fresh_key("order"), Category::Missing)
        };
        let fault = Fault {
            category,
            behind: Some(Side::Peer),
            window,
        };
        p.write(at, C, key, true, &[A], Some(fault));
    }
    p.background(Some((C, window)));
    p.noise(&[A, B, C]);
    After::Nothing
}

/// node-a's clock jumps 30–90 s ahead during the last 5–25 s; the writes it
/// stamps meanwhile (puts, updates and a few deletes) have not reached
/// node-b and carry future versions.
pub(crate) fn clock_skew(p: &mut Plan<'_>) -> After {
    let skew = p.rng.between(30_000, 90_000);
    let start = p.now - p.rng.between(5_000, 25_000);
    let end = p.now - 1;
    p.skew(start, A, skew);
    let window = (start + skew, end + skew);
    let n = p.rng.between(20, 120);
    for at in p.times(n, (start, end)) {
        let roll = p.rng.below(100);
        let key = if roll < 30 {
            p.fresh_key("order")
        } else {
            p.claim()
        };
        let to: &[usize] = if p.rng.percent(50) { &[C] } else { &[] };
        let fault = Fault {
            category: Category::FutureVersion,
            behind: Some(Side::Peer),
            window,
        };
        p.write(at, A, key, roll < 90, to, Some(fault));
    }
    p.background(None);
    // Only node-b's writes may be in flight: a node that accepted node-a's
    // skewed versions follows them with its own clock (the store observes
    // versions up to a minute ahead), and would stamp in the future too.
    p.noise(&[B]);
    After::Nothing
}

/// Deletes made via node-a during a window reach node-c but never node-b,
/// which still holds the older live values.
pub(crate) fn lost_deletes(p: &mut Plan<'_>) -> After {
    let window = p.past_window(MINUTE_MS, 5 * MINUTE_MS);
    let n = p.rng.between(20, 200);
    for at in p.times(n, window) {
        let key = p.claim();
        let fault = Fault {
            category: Category::UnpropagatedDelete,
            behind: Some(Side::Peer),
            window,
        };
        p.write(at, A, key, false, &[C], Some(fault));
    }
    p.background(None);
    p.noise(&[A, B, C]);
    After::Nothing
}

/// A writer on one node reuses versions during a window: node-a and node-b
/// end up with the same version of a key holding different values.
pub(crate) fn conflicts(p: &mut Plan<'_>) -> After {
    let writer = p.rng.below(3) as usize;
    let window = p.past_window(MINUTE_MS, 5 * MINUTE_MS);
    let n = p.rng.between(10, 100);
    // The writer's own replica holds one value; of node-a and node-b, the
    // one that is not the writer receives the other value.
    let (to, altered): (&[usize], usize) = match writer {
        A => (&[C], B),
        B => (&[C], A),
        _ => (&[A], B),
    };
    for at in p.times(n, window) {
        let key = if p.rng.percent(70) {
            p.claim()
        } else {
            p.fresh_key("order")
        };
        let fault = Fault {
            category: Category::Conflict,
            behind: None,
            window,
        };
        p.write_altered(at, writer, key, to, altered, fault);
    }
    p.background(None);
    p.noise(&[A, B, C]);
    After::Nothing
}

/// 20–200 writes of the last 4.5 s, by every node, have reached only one
/// of node-a and node-b so far: replication lag, not divergence.
pub(crate) fn replication_lag(p: &mut Plan<'_>) -> After {
    p.background(None);
    let n = p.rng.between(20, 200);
    p.in_flight(n, &[A, B, C], 50);
    After::Nothing
}

/// node-b loses its disk 2–30 minutes ago and rejoins empty; writes since
/// reach it again, everything older is missing there.
pub(crate) fn wiped_replica(p: &mut Plan<'_>) -> After {
    let at = p.now - p.rng.between(2 * MINUTE_MS, 30 * MINUTE_MS);
    p.wipe(at, B);
    p.background(None);
    p.noise(&[A, B, C]);
    After::WipedAt(at)
}

/// The faults that exist only once the plan has run.
pub(crate) fn after(after: After, cluster: &Cluster, base_start: u64) -> Vec<Injected> {
    let After::WipedAt(wiped) = after else {
        return Vec::new();
    };
    let lost = cluster.latest().iter().filter(|(_, v)| v.ms < wiped);
    lost.map(|(key, v)| Injected {
        key: key.clone(),
        category: Category::Missing,
        behind: Some(Side::Peer),
        origin: v.origin.to_string(),
        window: (base_start, wiped - 1),
    })
    .collect()
}
