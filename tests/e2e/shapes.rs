//! Wide trees over gRPC: shapes an operator may configure for large
//! stores (64^4, 256^3), with tens of thousands of divergent keys, so that
//! a level's probes and their replies are far larger than one gRPC message
//! (16 MiB). The initiator must size and batch them to fit.

use crate::harness::*;

/// Two agents with `shape`, both holding the same `n` keys in different
/// versions: every key diverges (stale on `b`).
async fn pair(d: &std::path::Path, fanout: u32, depth: u32, n: u64) -> (AgentProc, AgentProc) {
    let cfg = d.join("shape.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[ranges]]\nname = \"default\"\nshape = {{ fanout = {fanout}, depth = {depth} }}\n"
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let a = AgentProc::start("node-a", &d.join("a"), &["--config", c]);
    let b = AgentProc::start("node-b", &d.join("b"), &["--config", c]);
    let old = now_ms() - 3_600_000;
    for (agent, ms) in [(&a, old + 1_000), (&b, old)] {
        let w = (0..n)
            .map(|i| put(&format!("k-{i:07}"), "v", ver(ms, "node-a", i + 1)))
            .collect();
        write(agent, w).await;
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_trees_with_many_divergent_keys_fit_the_message_limit() {
    // Proves probes and replies are split to fit MESSAGE_BYTES_MAX at
    // 64^4 (a level-4 probe of ~3.4M hashes, 27 MB in one request before)
    // and 256^3 (level-3 children of ~40k differing nodes, an 80 MB reply
    // before): the diff finds every divergent key.
    for (fanout, depth) in [(64u32, 4u32), (256, 3)] {
        let d = tempfile::tempdir().unwrap();
        let n = 60_000;
        let (a, b) = pair(d.path(), fanout, depth, n).await;
        let (code, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
        assert_eq!(code, 1, "{fanout}^{depth}: {}", v["summary"]);
        assert_eq!(v["divergent_keys"], n, "{fanout}^{depth}");
        a.stop();
        b.stop();
    }
}
