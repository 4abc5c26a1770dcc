//! An exchange descends its ranges at once (issue 14, "use both cores"):
//! over a link where every probe and leaf request takes 100 ms of virtual
//! time (tokio's paused clock, so the figures are exact, not timed), a diff
//! of two ranges takes as long as the slower of the two alone, not their
//! sum, and still finds exactly the keys of both.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mend_agent::link::mem::{Counting, Crossing, Fate, Rpc, Wire, pair};
use mend_core::{NodeId, Secret, Version};
use mend_store::conformance::ranges;
use mend_store::{MemBackend, Store, StoreConfig, Write};

/// Virtual time each probe and leaf request spends on the wire.
const REQUEST_MS: u64 = 100;

/// Delays probe and leaf requests by [`REQUEST_MS`]; delivers the rest.
#[derive(Default)]
struct Slow(Counting);

impl Wire for Slow {
    fn fate(&self, c: Crossing<'_>) -> Fate {
        self.0.fate(c);
        match (c.rpc, c.reply) {
            (Rpc::Probe | Rpc::Leaves, false) => Fate::Delay(Duration::from_millis(REQUEST_MS)),
            _ => Fate::Deliver,
        }
    }
}

fn store(node: &str) -> Arc<Store<MemBackend>> {
    let cfg = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"parallel test"),
        Some(ranges()),
    );
    Arc::new(Store::open(MemBackend::new(), cfg).unwrap())
}

fn v(ms: u64) -> Version {
    mend_store::conformance::v(ms, "origin", ms)
}

/// Runs `diff` of `range` (None: both) on a paused clock; returns the
/// divergent keys and the virtual time it took.
fn timed_diff(
    a: &Arc<Store<MemBackend>>,
    b: &Arc<Store<MemBackend>>,
    range: Option<&str>,
) -> (Vec<Vec<u8>>, Duration) {
    let agent = pair(a.clone(), b.clone(), Arc::new(Slow::default()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        let out = mend_agent::exchange::diff(&agent, "b", range)
            .await
            .unwrap();
        let mut keys: Vec<_> = out.keys.into_iter().map(|k| k.div.key).collect();
        keys.sort();
        (keys, start.elapsed())
    })
}

#[test]
fn two_ranges_take_the_time_of_the_slower_one_not_the_sum() {
    let (a, b) = (store("a"), store("b"));
    // Range "a" holds keys before "m", range "b" the rest.
    let shared: Vec<Write> = (0..400u64)
        .flat_map(|i| {
            [
                Write::put(format!("a-{i:04}"), "v").at(v(1_000 + i)),
                Write::put(format!("x-{i:04}"), "v").at(v(1_000 + i)),
            ]
        })
        .collect();
    a.write(shared.clone()).unwrap();
    b.write(shared).unwrap();
    a.write(vec![Write::put("a-only", "1").at(v(9_000))])
        .unwrap();
    b.write(vec![Write::put("x-only", "2").at(v(9_001))])
        .unwrap();
    a.write(vec![Write::put("x-0007", "newer").at(v(9_002))])
        .unwrap();

    let (keys_a, alone_a) = timed_diff(&a, &b, Some("a"));
    let (keys_b, alone_b) = timed_diff(&a, &b, Some("b"));
    let (keys, both) = timed_diff(&a, &b, None);

    assert_eq!(keys_a, [b"a-only".to_vec()]);
    assert_eq!(keys_b, [b"x-0007".to_vec(), b"x-only".to_vec()]);
    assert_eq!(
        keys,
        [b"a-only".to_vec(), b"x-0007".to_vec(), b"x-only".to_vec()]
    );
    // Each range alone spends some rounds on the slow wire ...
    assert!(alone_a >= Duration::from_millis(REQUEST_MS), "{alone_a:?}");
    assert!(alone_b >= Duration::from_millis(REQUEST_MS), "{alone_b:?}");
    // ... and together their rounds overlap: one after the other would
    // take alone_a + alone_b.
    assert_eq!(both, alone_a.max(alone_b), "a {alone_a:?}, b {alone_b:?}");
}
