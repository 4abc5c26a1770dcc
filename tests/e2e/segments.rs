//! Segmented repairs on real agents: a repair of 800 keys runs subtree by
//! subtree (16 segments under the default 16^4 shape, forced with
//! `limits.repair_segment_keys_min = 0`), is paused between segments,
//! stays paused across a restart, resumes from its first unfinished
//! segment, and converges; a run whose agent is killed mid-run resumes on
//! its own at the next start; a cancelled run keeps what it did, drops the
//! rest, and is still undoable.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const KEYS: u64 = 800;

/// Node a with segmentation forced and the dashboard on; node b empty.
/// a holds `KEYS` keys b lacks.
async fn pair(dir: &Path) -> (AgentProc, AgentProc, std::path::PathBuf) {
    let cfg = dir.join("a.toml");
    std::fs::write(&cfg, "[limits]\nrepair_segment_keys_min = 0\n").unwrap();
    let a = start_a(dir, &cfg);
    let b = AgentProc::start("node-b", &dir.join("b"), &[]);
    let old = now_ms() - 600_000;
    let writes = (0..KEYS)
        .map(|i| {
            put(
                &format!("seg-{i:04}"),
                "from a",
                ver(old + i, "node-a", i + 1),
            )
        })
        .collect();
    write(&a, writes).await;
    (a, b, cfg)
}

fn start_a(dir: &Path, cfg: &Path) -> AgentProc {
    AgentProc::start(
        "node-a",
        &dir.join("a"),
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    )
}

/// `mend status --json` of `a`.
fn status(a: &str) -> Value {
    let (code, s) = mend_json(&["status", "--agent", a]);
    assert_eq!(code, 0, "{s}");
    s
}

/// The run `id` in `a`'s status, if it still has segments left.
fn run(a: &str, id: &str) -> Option<Value> {
    status(a)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repair_id"] == id)
        .cloned()
}

/// Starts a throttled repair from a to b (100 keys/s: about 0.5 s per
/// segment) and returns the child and the run's id once two segments are
/// done.
async fn repair_under_way(a: &str, b: &str) -> (std::process::Child, String, u64) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mend"))
        .args([
            "repair",
            "--agent",
            a,
            "--peer",
            b,
            "--rate-keys",
            "100",
            "--json",
        ])
        .env("MEND_CLUSTER_SECRET", SECRET)
        .env("MEND_TLS_DIR", cert_set(CLIENT))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (id, done) = until(Duration::from_secs(60), "two segments done", async || {
        let s = status(a);
        let r = s["runs"].as_array()?.first()?.clone();
        let done = r["segments_done"].as_u64()?;
        (done >= 2).then(|| (r["repair_id"].as_str().unwrap().to_string(), done))
    })
    .await;
    (child, id, done)
}

async fn dashboard(http: &str) -> Value {
    reqwest::get(format!("http://{http}/api/dashboard"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Run `id` on the dashboard's board of runs.
fn on_board(api: &Value, id: &str) -> Value {
    api["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .expect("the resumed run is on the board")
        .clone()
}

fn divergent(a: &str, b: &str) -> u64 {
    let (_, d) = mend_json(&["diff", "--agent", a, "--peer", b]);
    d["divergent_keys"].as_u64().unwrap()
}

fn control(verb: &str, a: &str, id: &str) -> Value {
    let (code, r) = mend_json(&["repair", verb, "--agent", a, id]);
    assert_eq!(code, 0, "mend repair {verb}: {r}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_repair_stays_paused_across_a_restart_and_resumes_from_its_next_segment() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, cfg) = pair(d.path()).await;
    let (child, id, _) = repair_under_way(&a.addr, &b.addr).await;
    let p = control("pause", &a.addr, &id);
    assert_eq!(p["live"], true, "{p}");

    // The repair call returns when the run stops between segments.
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["state"], "paused", "{rep}");
    assert_eq!(rep["segments_total"], 16, "{rep}");
    let paused_at = rep["segments_done"].as_u64().unwrap();
    assert!((2..16).contains(&paused_at), "{rep}");
    let moved = rep["keys_to_peer"].as_u64().unwrap();
    assert!(moved > 0 && moved < KEYS, "{rep}");
    assert_eq!(
        divergent(&a.addr, &b.addr),
        KEYS - moved,
        "exactly the keys of the unfinished segments are still missing at b"
    );
    let r = run(&a.addr, &id).expect("a paused run is listed");
    assert_eq!(r["state"], "paused");
    assert_eq!(r["live"], false);

    // Across a restart it stays paused: no segment moves by itself.
    a.stop();
    let a = start_a(d.path(), &cfg);
    let r = run(&a.addr, &id).expect("still listed after the restart");
    assert_eq!(r["state"], "paused", "{r}");
    assert_eq!(r["segments_done"], paused_at, "{r}");
    let text = mend(&["status", "--agent", &a.addr]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "{id} with node-b: paused, {paused_at}/16 segments done"
        )),
        "{text}"
    );
    // The page lists it with the command that resumes it.
    let http = a.http.clone().unwrap();
    let api = dashboard(&http).await;
    let u = &api["unfinished"][0];
    assert_eq!(u["id"], id.as_str(), "{api}");
    assert_eq!(u["state"], "paused");
    assert!(
        u["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("mend repair resume")),
        "{u}"
    );

    // Resume: it goes on from the next segment and converges.
    let r = control("resume", &a.addr, &id);
    assert_eq!(r["live"], true, "{r}");
    until(
        Duration::from_secs(60),
        "the resumed run to finish",
        async || run(&a.addr, &id).is_none().then_some(()),
    )
    .await;
    assert_eq!(divergent(&a.addr, &b.addr), 0, "converged");
    let api = dashboard(&http).await;
    let board = on_board(&api, &id);
    assert_eq!(board["state"], "done", "{board}");
    assert_eq!(board["segments_done"], 16, "{board}");
    let events: Vec<&str> = board["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        events[0],
        format!("resumed at segment {} of 16", paused_at + 1),
        "{events:?}"
    );
    let first = events
        .iter()
        .find(|e| e.starts_with("segment "))
        .expect("segment events");
    assert!(
        first.starts_with(&format!("segment {} of 16", paused_at + 1)),
        "no finished segment is run again: {events:?}"
    );

    // One repair over both processes: undo restores all of it.
    let (code, u) = mend_json(&["undo", "--agent", &a.addr, &id]);
    assert_eq!(code, 0, "{u}");
    assert_eq!(u["restored"], KEYS, "{u}");
    assert_eq!(divergent(&a.addr, &b.addr), KEYS);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_whose_agent_is_killed_resumes_by_itself_at_the_next_start() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, cfg) = pair(d.path()).await;
    let (child, id, done) = repair_under_way(&a.addr, &b.addr).await;
    a.kill();
    let _ = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap();
    let a = start_a(d.path(), &cfg);
    // Nothing is asked of it: the journal says it was running.
    until(
        Duration::from_secs(60),
        "the interrupted run to finish",
        async || run(&a.addr, &id).is_none().then_some(()),
    )
    .await;
    assert_eq!(
        divergent(&a.addr, &b.addr),
        0,
        "converged after the restart"
    );
    let http = a.http.clone().unwrap();
    let api = dashboard(&http).await;
    let board = on_board(&api, &id);
    let resumed_at = board["events"][0]["what"].as_str().unwrap().to_string();
    let n: u64 = resumed_at
        .strip_prefix("resumed at segment ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{resumed_at}"));
    assert!(
        n > done,
        "resumed after the {done} segments finished before the kill: {resumed_at}"
    );
    // Keys pushed before the kill and again after it are one repair.
    let (code, u) = mend_json(&["undo", "--agent", &a.addr, &id]);
    assert_eq!(code, 0, "{u}");
    assert_eq!(u["restored"], KEYS, "{u}");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_repair_keeps_what_it_did_and_cannot_be_resumed() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, _cfg) = pair(d.path()).await;
    let (child, id, _) = repair_under_way(&a.addr, &b.addr).await;
    // Undo of a run in flight is refused: it would race the run.
    let u = mend(&["undo", "--agent", &a.addr, &id]);
    assert_eq!(u.status.code(), Some(2));
    let err = String::from_utf8_lossy(&u.stderr);
    assert!(
        err.contains("is running; pause or cancel it first"),
        "{err}"
    );
    let c = control("cancel", &a.addr, &id);
    assert_eq!(c["live"], true, "{c}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["state"], "cancelled", "{rep}");
    let moved = rep["keys_to_peer"].as_u64().unwrap();
    assert!(moved > 0 && moved < KEYS, "{rep}");
    assert!(
        run(&a.addr, &id).is_none(),
        "a cancelled run has no segments left"
    );
    assert_eq!(divergent(&a.addr, &b.addr), KEYS - moved);
    let r = mend(&["repair", "resume", "--agent", &a.addr, &id]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("cancelled"), "{err}");
    let (code, u) = mend_json(&["undo", "--agent", &a.addr, &id]);
    assert_eq!(code, 0, "{u}");
    assert_eq!(u["restored"], moved, "{u}");
    assert_eq!(divergent(&a.addr, &b.addr), KEYS);
    a.stop();
    b.stop();
}
