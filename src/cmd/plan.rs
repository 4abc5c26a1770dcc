//! `mend plan`: capacity planning from the cost model of
//! `mend_core::plan`, with its assumptions and where they came from.

use std::process::ExitCode;

use mend_core::TreeShape;
use mend_core::plan::{Calibration, Plan, PlanInput, plan};
use serde_json::json;

use crate::cli::PlanArgs;
use crate::output::{human_bytes, print_json};

// `--deepen-entries-per-bucket` defaults to the agent's default (the CLI
// definitions spell it as a literal: the fuzz build compiles them alone).
const _: () = assert!(mend_store::DEEPEN_ENTRIES_PER_BUCKET_DEFAULT == 16);

/// Where each calibration constant was measured.
const SOURCES: [(&str, &str); 10] = [
    (
        "round_trip_us",
        "BENCHMARKS.md end-to-end grid, d = 1 (MEND_BENCH_E2E_GRID=1 cargo bench --bench benches -- e2e_grid_only)",
    ),
    (
        "entry_list_us",
        "same grid, d = 10 000 at N = 1M against N = 100k",
    ),
    (
        "node_us",
        "upper bound from exchange/diff in memory, N = 10k, d = 1 (cargo bench --bench benches -- exchange/diff)",
    ),
    ("divergent_key_us", "same grid, N = 100k, d = 10 000"),
    (
        "apply_key_us",
        "BENCHMARKS.md repair apply (cargo bench --bench benches -- repair_apply/)",
    ),
    (
        "apply_bytes_per_s",
        "BENCHMARKS.md end to end, unthrottled repair (MEND_BENCH_REPAIR_REPORT=1 cargo bench --bench benches -- e2e_report_only)",
    ),
    (
        "write_us",
        "BENCHMARKS.md store, batches of 1000 at 1M (cargo bench --bench benches -- store/write_batch1000)",
    ),
    (
        "plain_write_us",
        "same run, plain RocksDB with the same options",
    ),
    (
        "rebuild_key_us",
        "BENCHMARKS.md scale, N = 10M (MEND_BENCH_SCALE=1 cargo bench --bench benches -- scale_only)",
    ),
    (
        "leaf_row_bytes",
        "BENCHMARKS.md scale, disk overhead at 100k and 1M",
    ),
];

/// Runs `mend plan`.
pub fn run(a: PlanArgs) -> anyhow::Result<ExitCode> {
    let shape = TreeShape::new(a.fanout, a.depth)?;
    if !a.rtt_ms.is_finite() || a.rtt_ms < 0.0 {
        anyhow::bail!("--rtt-ms {} must be a non-negative number", a.rtt_ms);
    }
    let input = PlanInput {
        keys: a.keys,
        divergent: a.divergent,
        value_bytes: a.value_bytes,
        key_bytes: a.key_bytes,
        origin_bytes: a.origin_bytes,
        bandwidth: a.bandwidth,
        rtt_ms: a.rtt_ms,
        ranges: a.ranges,
        shape,
        deepen_entries_per_bucket: a.deepen_entries_per_bucket,
        deepen_tree_bytes_max: a.deepen_tree_bytes_max,
    };
    let c = Calibration::REFERENCE;
    let p = plan(&input, &c);
    if a.json {
        print_json(&to_json(&input, &c, &p))?;
    } else {
        print_human(&input, &c, &p);
    }
    Ok(ExitCode::SUCCESS)
}

/// The calibration constants with their names and sources.
fn calibration_rows(c: &Calibration) -> impl Iterator<Item = (&'static str, f64, &'static str)> {
    let values = [
        c.round_trip_us,
        c.entry_list_us,
        c.node_us,
        c.divergent_key_us,
        c.apply_key_us,
        c.apply_bytes_per_s,
        c.write_us,
        c.plain_write_us,
        c.rebuild_key_us,
        c.leaf_row_bytes,
    ];
    SOURCES
        .into_iter()
        .zip(values)
        .map(|((name, source), value)| (name, value, source))
}

fn calibration_json(c: &Calibration) -> serde_json::Value {
    calibration_rows(c)
        .map(|(name, value, source)| json!({"name": name, "value": value, "source": source}))
        .collect()
}

fn to_json(i: &PlanInput, c: &Calibration, p: &Plan) -> serde_json::Value {
    json!({
        "input": {
            "keys": i.keys,
            "divergent": i.divergent,
            "value_bytes": i.value_bytes,
            "key_bytes": i.key_bytes,
            "origin_bytes": i.origin_bytes,
            "bandwidth": i.bandwidth,
            "rtt_ms": i.rtt_ms,
            "ranges": i.ranges,
            "fanout": i.shape.fanout,
            "depth": i.shape.depth,
            "deepen_entries_per_bucket": i.deepen_entries_per_bucket,
            "deepen_tree_bytes_max": i.deepen_tree_bytes_max,
        },
        "shape": {"fanout": p.shape.fanout, "depth": p.shape.depth},
        "keys_per_range": p.keys_per_range,
        "entries_per_bucket": p.entries_per_bucket,
        "differing_buckets_per_range": p.differing_buckets,
        "rounds_per_range": p.rounds_per_range,
        "rounds": p.rounds,
        "bytes_sent": p.bytes_sent.round(),
        "bytes_received": p.bytes_received.round(),
        "entries_listed": p.entries_listed.round(),
        "diff_ms": p.diff_s * 1e3,
        "repair_bytes": p.repair_bytes.round(),
        "repair_ms": p.repair_s * 1e3,
        "tree_memory_bytes": p.tree_memory_bytes.round(),
        "disk_overhead_bytes_per_key": p.disk_overhead_per_key,
        "rebuild_ms": p.rebuild_s * 1e3,
        "write_cost_ratio": p.write_cost_ratio,
        "calibration": calibration_json(c),
    })
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 120.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

fn print_human(i: &PlanInput, c: &Calibration, p: &Plan) {
    println!(
        "plan: {} keys in {} range(s) of {}^{} buckets ({:.1} keys per bucket), {} divergent, {} B values",
        i.keys,
        i.ranges,
        p.shape.fanout,
        p.shape.depth,
        p.entries_per_bucket,
        i.divergent,
        i.value_bytes
    );
    if p.shape != i.shape {
        println!(
            "tree: created at {}^{}, deepened to {}^{} as the range grew past {} keys per bucket (deepen.entries_per_bucket)",
            i.shape.fanout,
            i.shape.depth,
            p.shape.fanout,
            p.shape.depth,
            i.deepen_entries_per_bucket
        );
    }
    println!("link: {}/s, RTT {} ms", human_bytes(i.bandwidth), i.rtt_ms);
    println!();
    println!("diff");
    println!(
        "  round trips      {} (challenge and handshake, then {} per range, ranges one after another)",
        p.rounds, p.rounds_per_range
    );
    println!(
        "  bytes            {} sent, {} received",
        human_bytes(p.bytes_sent as u64),
        human_bytes(p.bytes_received as u64)
    );
    println!(
        "  differing leaves {:.0} per range; entries listed {:.0}",
        p.differing_buckets, p.entries_listed
    );
    println!("  time             {}", secs(p.diff_s));
    println!("repair");
    println!("  bytes streamed   {}", human_bytes(p.repair_bytes as u64));
    println!("  time             {}", secs(p.repair_s));
    println!("footprint");
    println!(
        "  tree memory      {}",
        human_bytes(p.tree_memory_bytes as u64)
    );
    println!(
        "  disk overhead    {:.0} B per key ({} in all) over a plain key -> value store",
        p.disk_overhead_per_key,
        human_bytes((p.disk_overhead_per_key * i.keys as f64) as u64)
    );
    println!("  tree rebuild     {}", secs(p.rebuild_s));
    println!(
        "  write path       {:.1}x the time of a plain RocksDB write",
        p.write_cost_ratio
    );
    println!();
    println!(
        "assumptions: divergent keys spread uniformly (the keyed placement hash makes any key set look so);"
    );
    println!(
        "round trips, bytes, memory and disk follow from the protocol; times add these costs measured on the"
    );
    println!("reference machine (2-core AMD EPYC); scale them to yours:");
    for (name, v, source) in calibration_rows(c) {
        println!("  {name:<18} {v:<10} {source}");
    }
}
