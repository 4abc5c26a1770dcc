//! Coordinated schedules without a coordinator, on six real agents that
//! each list the five others with a 1 s schedule: only the lower node id of
//! a pair initiates, and no node takes part in more than
//! `schedule.exchanges_max` exchanges at once, read from the agents' own
//! metrics. A control run with coordination off (both sides initiate,
//! many slots, no jitter) shows the same measurement does see overlap, so
//! the bound is the coordination's doing, not the exchanges' brevity.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

const NODES: [&str; 6] = ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"];

struct Cluster {
    agents: Vec<AgentProc>,
    _dir: tempfile::TempDir,
}

/// Six agents, each configured with the five others (interval 1 s) and
/// `schedule` as its `[schedule]` table; 300 shared keys, and 5 keys only on
/// each node so every exchange has leaves to compare.
async fn cluster(schedule: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = NODES
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut agents = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        let cfg = config(dir.path(), node, &addrs, i, schedule);
        agents.push(AgentProc::start_at(
            node,
            &dir.path().join(node),
            &addrs[i],
            &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
        ));
    }
    let t0 = now_ms() - 3_600_000;
    for (i, a) in agents.iter().enumerate() {
        let mut data = base_data(300, t0);
        data.extend((0..5).map(|k| {
            put(
                &format!("only-{i}-{k}"),
                "x",
                ver(t0 + k, NODES[i], 1000 + k),
            )
        }));
        write(a, data).await;
    }
    Cluster { agents, _dir: dir }
}

fn config(
    dir: &Path,
    node: &str,
    addrs: &[String],
    me: usize,
    schedule: &str,
) -> std::path::PathBuf {
    let mut text = format!("[schedule]\n{schedule}\n\n");
    for (j, other) in NODES.iter().enumerate() {
        if j != me {
            text.push_str(&format!(
                "[[peers]]\nid = \"{other}\"\naddress = \"{}\"\ninterval_ms = 1000\n\n",
                addrs[j]
            ));
        }
    }
    let p = dir.join(format!("{node}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

impl Cluster {
    async fn scrapes(&self) -> Vec<prometheus_parse::Scrape> {
        let mut out = Vec::new();
        for a in &self.agents {
            out.push(scrape(a.http.as_deref().expect("http")).await);
        }
        out
    }

    fn stop(self) {
        for a in self.agents {
            a.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_side_initiates_and_each_node_is_in_one_exchange_at_a_time() {
    // No jitter: a node's five schedules all fire at once, the worst case.
    let c = cluster("exchanges_max = 1\njitter_percent = 0").await;
    // Every pair has exchanged at least twice, initiated by its lower id.
    let s = until(
        Duration::from_secs(120),
        "two exchanges of every pair",
        async || {
            let s = c.scrapes().await;
            let done = (0..NODES.len()).all(|i| {
                (i + 1..NODES.len())
                    .all(|j| metric(&s[i], "mend_exchanges_total", &[("peer", NODES[j])]) >= 2.0)
            });
            done.then_some(s)
        },
    )
    .await;
    for (i, node) in NODES.iter().enumerate() {
        for lower in &NODES[..i] {
            assert_eq!(
                metric(&s[i], "mend_exchanges_total", &[("peer", lower)]),
                0.0,
                "{node} must not initiate with the lower id {lower}"
            );
        }
        let peak = metric(&s[i], "mend_exchange_slots_in_use_max", &[]);
        assert!(peak >= 1.0, "{node} took part in exchanges");
        assert!(peak <= 1.0, "{node} was in {peak} exchanges at once");
    }
    // How often a side was busy (not asserted: it depends on timing).
    let skipped: f64 = s
        .iter()
        .map(|x| metric(x, "mend_scheduled_exchanges_skipped_total", &[]))
        .sum();
    let (code, st) = mend_json(&["status", "--agent", &c.agents[0].addr]);
    assert_eq!(code, 0);
    assert_eq!(st["exchange_slots"]["max"], 1, "{st}");
    eprintln!("coordinated: {skipped} scheduled exchanges skipped for a busy side");
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coordination_the_metrics_see_overlap() {
    let c = cluster("initiate = \"both\"\nexchanges_max = 64\njitter_percent = 0").await;
    let peak = until(
        Duration::from_secs(120),
        "a node in two exchanges at once",
        async || {
            let s = c.scrapes().await;
            let peak = s
                .iter()
                .map(|x| metric(x, "mend_exchange_slots_in_use_max", &[]))
                .fold(0.0, f64::max);
            let both = metric(&s[5], "mend_exchanges_total", &[("peer", "node-a")]) > 0.0;
            (peak >= 2.0 && both).then_some(peak)
        },
    )
    .await;
    eprintln!("uncoordinated: a node was in {peak} exchanges at once");
    c.stop();
}
