//! The fault simulation of the real agent logic: a few hundred seeds in
//! CI (`MEND_SIM_SEEDS` for more), every property held; a seed replays bit
//! for bit.

use mend_sim::faults::{Mode, SimOutcome, mode_of, run_seed};

fn seeds() -> u64 {
    std::env::var("MEND_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn every_seed_holds_every_property() {
    let n = seeds();
    let mut failed: Vec<SimOutcome> = Vec::new();
    let mut total = SimOutcome::default();
    for seed in 0..n {
        let o = run_seed(seed, mode_of(seed));
        total.writes_acked += o.writes_acked;
        total.exchanges += o.exchanges;
        total.repairs += o.repairs;
        total.auto_repairs += o.auto_repairs;
        total.keys_repaired += o.keys_repaired;
        total.crashes += o.crashes;
        total.crashes_mid_repair += o.crashes_mid_repair;
        total.undos += o.undos;
        total.wipes += o.wipes;
        total.faults_injected += o.faults_injected;
        total.messages += o.messages;
        if !o.violations.is_empty() {
            failed.push(o);
        }
    }
    eprintln!(
        "{n} seeds: {} writes acknowledged, {} exchanges, {} repairs ({} automatic, {} keys), {} crashes ({} mid-repair), {} undos, {} wipes, {} of {} messages faulted",
        total.writes_acked,
        total.exchanges,
        total.repairs,
        total.auto_repairs,
        total.keys_repaired,
        total.crashes,
        total.crashes_mid_repair,
        total.undos,
        total.wipes,
        total.faults_injected,
        total.messages
    );
    // The runs must have exercised what they claim to.
    assert!(total.crashes_mid_repair > 0 && total.undos > 0 && total.wipes > 0);
    assert!(total.auto_repairs > 0);
    assert!(total.faults_injected > total.messages / 100);
    let report: Vec<String> = failed
        .iter()
        .take(5)
        .map(|o| {
            format!(
                "seed {} ({:?}): {}",
                o.seed,
                mode_of(o.seed),
                o.violations
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {n} seeds failed (replay: mend simulate --seed N):\n{}",
        failed.len(),
        report.join("\n")
    );
}

#[test]
fn a_seed_replays_bit_for_bit() {
    for seed in [7, 11] {
        let a = run_seed(seed, Mode::Uniform);
        let b = run_seed(seed, Mode::Uniform);
        assert_eq!(
            serde_json::to_string(&a).ok(),
            serde_json::to_string(&b).ok()
        );
    }
    assert_ne!(
        run_seed(7, Mode::Uniform).trace,
        run_seed(8, Mode::Uniform).trace
    );
}
