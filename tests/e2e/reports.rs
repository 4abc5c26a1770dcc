//! Reports people can keep: a wiped replica is named as one cause (not one
//! "propagation stopped" hint per origin) by `mend diff`, and `mend report
//! --format markdown|json` summarises the incident from the agent's
//! history: since when, why, what was repaired, what is left.

use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_is_one_cause_and_the_incident_report_tells_the_story() {
    let d = tempfile::tempdir().unwrap();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let t0 = now_ms() - 3_600_000;
    // 300 keys written via two origins; node-b lost its disk: it has none.
    let data: Vec<_> = (0..300u64)
        .map(|i| {
            let origin = if i % 2 == 0 { "node-a" } else { "node-c" };
            put(
                &format!("key-{i:04}"),
                "v",
                ver(t0 + i * 1000, origin, i + 1),
            )
        })
        .collect();
    write(&a, data).await;
    let (code, r) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(
        r["cause"]["kind"], "empty",
        "one cause: {} {}",
        r["cause"], r["sources"]
    );
    let hint = r["cause"]["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("node-b holds 0 of 300 entries: it is empty"),
        "{hint}"
    );
    assert!(hint.contains("from 2 origins"), "{hint}");

    let out = mend(&["report", "--agent", &a.addr, "--format", "markdown"]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "divergent: exit 1\n{md}");
    assert!(
        md.starts_with("# Divergence between node-a and node-b\n"),
        "{md}"
    );
    assert!(
        md.contains("- Status: **ongoing**, 300 keys divergent"),
        "{md}"
    );
    assert!(
        md.contains("- Cause: node-b holds 0 of 300 entries: it is empty"),
        "{md}"
    );
    assert!(md.contains("| missing | 300 |"), "{md}");

    // Repair, then an exchange that finds it gone: the incident is resolved
    // and names the repair.
    let (code, rep) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 0, "{rep}");
    let id = rep["repair_id"].as_str().unwrap().to_string();
    let (code, after) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 0, "{after}");
    let (code, j) = mend_json(&["report", "--agent", &a.addr]);
    assert_eq!(code, 0, "{j}");
    let inc: &Value = &j["incident"];
    assert_eq!(inc["status"], "resolved", "{inc}");
    assert_eq!(inc["peak_keys"], 300);
    assert!(inc["resolved_ms"].as_u64().unwrap() >= inc["first_seen_ms"].as_u64().unwrap());
    assert!(
        inc["repaired"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains(&id)),
        "{inc}"
    );
    assert_eq!(j["report"]["in_sync"], true);
    a.stop();
    b.stop();
}
