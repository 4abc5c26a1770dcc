//! The README's main job, `mend demo`, run as a newcomer runs it: a real
//! process with embedded defaults (three agents on loopback with mutual TLS,
//! divergence of every kind, diff, repair, converge). It must exit 0, show
//! every category, repair exactly the repairable keys, leave the three that
//! need a human or settle by themselves, and remove its temporary data.

use std::process::Command;

#[test]
fn the_demo_finds_every_category_repairs_and_converges() {
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .arg("demo")
        .output()
        .expect("run mend demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mend demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (before, after) = stdout
        .split_once("(after the repair)")
        .expect("a diff after the repair");
    for category in [
        "missing",
        "stale",
        "unpropagated_delete",
        "conflict",
        "future_version",
        "in_flight",
    ] {
        assert!(before.contains(category), "first diff lacks {category}");
    }
    assert!(before.contains("10 keys differ"), "first diff: {before}");
    assert!(before.contains("7 keys repaired"), "{before}");
    assert!(
        before.contains("is refused"),
        "a writer's certificate was not refused: {before}"
    );
    assert!(after.contains("3 keys differ"), "{after}");
    // No row of the diff after the repair (category counts, or key rows:
    // key, category, ...) names a repairable category.
    for line in after.lines() {
        let words: Vec<&str> = line.split_whitespace().take(2).collect();
        for left in ["missing", "stale", "unpropagated_delete"] {
            assert!(
                !words.contains(&left),
                "{left} still divergent after the repair: {line}"
            );
        }
    }
    assert!(after.contains("CONVERGED:"), "{after}");
    // Its data directory is gone.
    let data = stdout
        .split("data in ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the demo names its data directory");
    assert!(
        !std::path::Path::new(data).exists(),
        "{data} was left behind"
    );
}

#[test]
fn the_postgres_demo_finds_the_sql_divergence_repairs_it_in_sql_and_converges() {
    // Proves `mend demo --postgres` (two real PostgreSQL servers, agents
    // following them through the adapter) reports exactly the divergence
    // it injects by SQL, with the right categories, repairs the repairable
    // rows in SQL, sees the repairs through the slots, and that the
    // databases then agree row for row by SQL.
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["demo", "--postgres", "--keys", "3000", "--json"])
        .env("MEND_CLUSTER_SECRET", "unused by the demo")
        .output()
        .expect("run mend demo --postgres");
    assert!(
        out.status.success(),
        "mend demo --postgres failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let keys = |diff: &serde_json::Value| -> Vec<(String, String, String)> {
        let mut k: Vec<_> = diff["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["key"].as_str().unwrap().to_string(),
                    k["category"].as_str().unwrap().to_string(),
                    k["behind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        k.sort();
        k
    };
    let own = |k: &str, c: &str, b: &str| (k.to_string(), c.to_string(), b.to_string());
    assert_eq!(
        keys(&v["before"]),
        vec![
            own("10", "stale", "peer"),
            own("11", "stale", "peer"),
            own("20", "unpropagated_delete", "peer"),
            own("5", "future_version", "local"),
            own("900001", "missing", "peer"),
            own("900100", "missing", "local"),
        ]
    );
    let repairs = v["repairs"].as_array().unwrap();
    assert_eq!(repairs.len(), 5);
    assert!(repairs.iter().all(|r| r["applied"] == true), "{repairs:?}");
    assert_eq!(keys(&v["after"]), vec![own("5", "future_version", "local")]);
    assert_eq!(v["sql"]["agree"], true, "{}", v["sql"]);
    assert_eq!(v["sql"]["pg_a"]["rows"], 3000, "{}", v["sql"]);
    assert_eq!(v["converged"], true);
}
