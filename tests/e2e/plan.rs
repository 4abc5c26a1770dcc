//! `mend plan` against measured runs: two real agents diff and repair, and
//! the model's counted figures (round trips, bytes each way, repair bytes,
//! tree memory) must be within 2× of what the agents report. Times are
//! compared in the benchmarks, not here (BENCHMARKS.md "Cost model").

use serde_json::Value;

use crate::harness::*;

/// Keys per agent; keys are `key-NNNNNN` (10 bytes), values `value-N`.
const KEYS: u64 = 40_000;

fn within_2x(what: &str, model: f64, measured: f64) {
    eprintln!(
        "plan check: {what}: model {model:.0}, measured {measured:.0}, ratio {:.2}",
        model / measured
    );
    assert!(
        measured > 0.0 && model <= 2.0 * measured && measured <= 2.0 * model,
        "{what}: model {model} vs measured {measured} is not within 2x"
    );
}

/// The plan's counted figures against a diff's and a repair's.
fn counted_within_2x(p: &Value, diff: &Value, rep: &Value) {
    within_2x("rounds", num(p, "rounds"), num(diff, "rounds"));
    within_2x("bytes sent", num(p, "bytes_sent"), num(diff, "bytes_sent"));
    within_2x(
        "bytes received",
        num(p, "bytes_received"),
        num(diff, "bytes_received"),
    );
    within_2x(
        "repair bytes",
        num(p, "repair_bytes"),
        num(rep, "bytes_streamed"),
    );
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}

fn plan(divergent: u64) -> Value {
    let (code, p) = mend_json(&[
        "plan",
        "--keys",
        &KEYS.to_string(),
        "--divergent",
        &divergent.to_string(),
        "--value-bytes",
        "10",
        "--key-bytes",
        "10",
        "--origin-bytes",
        "6",
        "--bandwidth",
        "1000000000",
    ]);
    assert_eq!(code, 0, "{p}");
    p
}

/// Diffs and repairs `a` against `b` and checks both against the plan for
/// `divergent` keys.
fn check(a: &AgentProc, b: &AgentProc, divergent: u64) {
    let (code, diff) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 1, "{diff}");
    assert_eq!(num(&diff, "divergent_keys") as u64, divergent);
    let (code, rep) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(num(&rep, "keys_repaired") as u64, divergent);
    let p = plan(divergent);
    // Challenge, handshake, two probe steps (depth 4), and one leaf step
    // however many leaf probes it takes (they go out at once).
    assert_eq!(num(&diff, "rounds"), 5.0, "{divergent} divergent keys");
    counted_within_2x(&p, &diff, &rep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_is_within_2x_of_measured_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = AgentProc::start("node-a", &dir.path().join("a"), &[]);
    let b = AgentProc::start("node-b", &dir.path().join("b"), &[]);
    let base = now_ms() - 3_600_000;
    write(&a, base_data(KEYS, base)).await;
    write(&b, base_data(KEYS, base)).await;

    // d = 100 newer values on b, spread over the key space; then d = 2000
    // on the repaired pair (about 1 900 differing buckets of 65 536).
    let newer = now_ms() - 60_000;
    let inject = |d: u64, seq0: u64| -> Vec<mend_rpc::pb::BatchWrite> {
        (0..d)
            .map(|i| {
                let k = i * (KEYS / d);
                put(
                    &format!("key-{k:06}"),
                    &format!("newer-{k:04}"),
                    ver(newer + seq0 + i, "node-b", seq0 + i + 1),
                )
            })
            .collect()
    };
    write(&b, inject(100, 0)).await;
    check(&a, &b, 100);
    write(&b, inject(2000, 1000)).await;
    check(&a, &b, 2000);
    // d = 6000: ~5 500 differing buckets, more than one leaf probe holds
    // (LEAF_QUERIES_MAX = 4096).
    write(&b, inject(6000, 10_000)).await;
    check(&a, &b, 6000);

    // Tree memory: the store reports it once the agent has stopped.
    let p = plan(100);
    a.stop();
    let (code, stats) = mend_json(&[
        "store",
        "stats",
        "--data-dir",
        dir.path().join("a").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stats}");
    let measured: f64 = stats["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| num(r, "tree_memory_bytes"))
        .sum();
    within_2x("tree memory", num(&p, "tree_memory_bytes"), measured);
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_holds_on_a_workload_it_was_not_fitted_on() {
    // Proves the model generalises: the calibration was fitted on one range
    // of 16^4 with ~13-byte keys and 100-byte values; here two ranges of
    // 32^3, 40-byte keys, 1 KiB values and another origin, and the counted
    // figures must still be within 2x.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ranges.toml");
    std::fs::write(
        &cfg,
        "[[ranges]]\nname = \"low\"\nend = [109]\nshape = { fanout = 32, depth = 3 }\n\
         [[ranges]]\nname = \"high\"\nstart = [109]\nshape = { fanout = 32, depth = 3 }\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let a = AgentProc::start("node-a", &dir.path().join("a"), &["--config", c]);
    let b = AgentProc::start("node-b", &dir.path().join("b"), &["--config", c]);
    let n = 20_000u64;
    let d = 400u64;
    let value = "x".repeat(1000);
    // 40-byte keys, half below "m" and half above.
    let key = |i: u64| {
        format!(
            "{}user/{i:08}/profile-settings-v2",
            if i.is_multiple_of(2) { "a" } else { "t" }
        )
    };
    let base = now_ms() - 3_600_000;
    for agent in [&a, &b] {
        let w = (0..n)
            .map(|i| put(&key(i), &value, ver(base + i, "importer-7", i + 1)))
            .collect();
        write(agent, w).await;
    }
    let newer = now_ms() - 60_000;
    let w = (0..d)
        .map(|j| {
            // Alternately in each range.
            let i = j * (n / d) + j % 2;
            put(&key(i), &"y".repeat(1000), ver(newer + j, "node-b", j + 1))
        })
        .collect();
    write(&b, w).await;
    let (code, diff) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 1, "{diff}");
    assert_eq!(num(&diff, "divergent_keys") as u64, d);
    let (code, rep) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 0, "{rep}");
    let (code, p) = mend_json(&[
        "plan",
        "--keys",
        &n.to_string(),
        "--divergent",
        &d.to_string(),
        "--value-bytes",
        "1000",
        "--key-bytes",
        "40",
        "--origin-bytes",
        "6",
        "--ranges",
        "2",
        "--fanout",
        "32",
        "--depth",
        "3",
        "--bandwidth",
        "1000000000",
    ]);
    assert_eq!(code, 0, "{p}");
    counted_within_2x(&p, &diff, &rep);
    a.stop();
    b.stop();
}
