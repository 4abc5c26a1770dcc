//! The Grafana dashboard (`deploy/grafana/mend.json`) against the metrics
//! the agent really exports: every expression names only metric series the
//! agent's registry encodes (its own Prometheus text, with the `_total`,
//! `_bucket`, `_sum`, `_count` suffixes of each type), and every exported
//! metric has a panel.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

fn dashboard() -> Value {
    // Read at run time, not baked in at build time: a test binary reused
    // from a checkout at another path still reads this one's files.
    let path = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .expect("cargo sets CARGO_MANIFEST_DIR when it runs tests and benches"),
    )
    .join("../../deploy/grafana/mend.json");
    let text = std::fs::read_to_string(path).expect("deploy/grafana/mend.json");
    serde_json::from_str(&text).expect("valid JSON")
}

/// A registry with one child in every labelled family: the encoder leaves
/// out families no one has touched yet.
fn touched() -> mend_agent::metrics::Metrics {
    use mend_agent::metrics::*;
    let m = Metrics::default();
    let peer = PeerLabel { peer: "p".into() };
    let pr = PeerRange {
        peer: "p".into(),
        range: "r".into(),
    };
    let rl = RangeLabel { range: "r".into() };
    let _ = m.divergent_keys.get_or_create(&PeerRangeCategory {
        peer: "p".into(),
        range: "r".into(),
        category: "missing".into(),
    });
    let _ = m.oldest_divergence_seconds.get_or_create(&pr);
    let _ = m.tree_depth.get_or_create(&rl);
    let _ = m.tree_deepenings.get_or_create(&RangeReason {
        range: "r".into(),
        outcome: "done".into(),
    });
    let _ = m.budget_exceeded.get_or_create(&pr);
    for f in m.peer_counters() {
        let _ = f.get_or_create(&peer);
    }
    let _ = m.exchange_rounds.get_or_create(&peer);
    let _ = m.exchange_duration_seconds.get_or_create(&peer);
    let _ = m.peer_clock_skew_seconds.get_or_create(&peer);
    let _ = m.scheduled_exchanges_skipped.get_or_create(&PeerReason {
        peer: "p".into(),
        reason: "busy".into(),
    });
    m.auth_denied("Peer", "role");
    m.discovery(false);
    let _ = m.connections_refused.get_or_create(&Reason {
        reason: "limit".into(),
    });
    m.tree_mismatch("r", "scrub", 1);
    let _ = m.tombstones_purged.get_or_create(&rl);
    let _ = m.purge_horizon_timestamp_seconds.get_or_create(&rl);
    m
}

/// Metric family → the series names its type exports.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let text = touched().encode().expect("encode");
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("name and type");
        let series: Vec<String> = match kind {
            "counter" => vec![format!("{name}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            _ => vec![name.to_string()],
        };
        out.insert(name.to_string(), series.into_iter().collect());
    }
    out
}

/// The `mend_…` identifiers of a PromQL expression.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("mend_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn every_expression_uses_an_exported_metric_and_every_metric_has_a_panel() {
    let families = exported();
    // Every family registered is encoded (none left untouched above).
    let src = include_str!("../src/metrics.rs");
    assert_eq!(
        families.len(),
        src.matches("r.register(").count(),
        "touched() must give every registered family a child: {families:?}"
    );
    let series: BTreeMap<&str, &str> = families
        .iter()
        .flat_map(|(f, s)| s.iter().map(move |x| (x.as_str(), f.as_str())))
        .collect();
    let d = dashboard();
    let panels = d["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("a panel has a title");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metrics_in(expr);
            assert!(
                !names.is_empty(),
                "panel {title:?}: {expr:?} names no mend metric"
            );
            for n in names {
                let family = series.get(n.as_str()).unwrap_or_else(|| {
                    panic!("panel {title:?}: {n} is not a series the agent exports (expr {expr:?})")
                });
                used.insert(family.to_string());
            }
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {title:?} uses the dashboard's datasource variable"
            );
        }
    }
    let missing: Vec<_> = families.keys().filter(|f| !used.contains(*f)).collect();
    assert!(missing.is_empty(), "metrics without a panel: {missing:?}");
    // Panel ids are unique (Grafana keys panels by id).
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len());
}

#[test]
fn the_checker_catches_a_wrong_name() {
    // The scanner finds names inside functions and label matchers, and a
    // name the agent does not export is not among the series.
    let names =
        metrics_in("sum by (peer) (rate(mend_exchange_errors_total{peer=\"x\"}[5m])) / mend_nope");
    assert_eq!(names, ["mend_exchange_errors_total", "mend_nope"]);
    let all: BTreeSet<String> = exported().into_values().flatten().collect();
    assert!(all.contains("mend_exchange_errors_total"));
    assert!(!all.contains("mend_nope"));
    assert!(
        !all.contains("mend_exchange_errors"),
        "a counter is exported with _total only"
    );
}
