//! Every built-in scenario, over several seeds, is diagnosed exactly: each
//! injected key gets its category and side behind, nothing else diverges,
//! and attribution names the right origin and window for at least 95% of
//! the faults. A failure prints the scenario and seed to replay.

use mend_sim::{ORIGIN_WINDOW_TARGET_PCT, SCENARIOS, run};

const SEEDS: [u64; 5] = [1, 2, 3, 0xDEAD_BEEF, 20_240_501];

#[test]
fn every_scenario_is_diagnosed_exactly() {
    for s in SCENARIOS {
        for seed in SEEDS {
            let d = run(s.name, seed).unwrap_or_else(|e| panic!("{} seed {seed}: {e}", s.name));
            let n = d.injected.len() as u64;
            let replay = format!("scenario {} seed {seed}", s.name);
            assert!(n > 0, "{replay}: nothing injected");
            assert_eq!(
                d.category_correct,
                n,
                "{replay}: categories {:?}",
                d.table()
            );
            assert!(
                d.unexpected.is_empty(),
                "{replay}: unexpected {} keys",
                d.unexpected.len()
            );
            assert!(
                d.origin_window_correct * 100 >= ORIGIN_WINDOW_TARGET_PCT * n,
                "{replay}: origin+window {} of {n}; sources {:#?}",
                d.origin_window_correct,
                d.sources
            );
            assert!(d.passed(), "{replay}");
            assert_eq!(d.diagnosed.len() as u64, n, "{replay}");
        }
    }
}

#[test]
fn a_seed_replays_exactly_and_seeds_differ() {
    let a = run("propagation_outage", 42).expect("drill");
    let b = run("propagation_outage", 42).expect("drill");
    assert_eq!(a.injected, b.injected);
    assert_eq!(a.sources, b.sources);
    assert_eq!(
        (a.now_ms, a.keys_total, a.rounds),
        (b.now_ms, b.keys_total, b.rounds)
    );
    let c = run("propagation_outage", 43).expect("drill");
    assert_ne!(a.injected, c.injected);
}

#[test]
fn each_scenario_injects_what_it_names() {
    use mend_core::Category::*;
    let main = |name: &str| {
        let d = run(name, 5).expect("drill");
        let mut cats: Vec<_> = d
            .injected
            .iter()
            .map(|f| f.category)
            .filter(|c| *c != InFlight)
            .collect();
        cats.sort();
        cats.dedup();
        cats
    };
    assert_eq!(main("propagation_outage"), [Missing, Stale]);
    assert_eq!(main("clock_skew"), [FutureVersion]);
    assert_eq!(main("lost_deletes"), [UnpropagatedDelete]);
    assert_eq!(main("conflicts"), [Conflict]);
    assert_eq!(main("replication_lag"), []);
    assert_eq!(main("wiped_replica"), [Missing]);
    assert!(matches!(
        run("nope", 1),
        Err(mend_sim::SimError::UnknownScenario { .. })
    ));
}
