//! The dashboard in a real browser: live agents with divergence and a dead
//! peer, the page at `/` loaded in headless Chromium (Debian's `chromium`,
//! installed by `scripts/install-deps.sh`), and assertions on what a person
//! sees in the rendered DOM: the failing peer on top, the counts per
//! category, a chart with one point per exchange, the attribution hint, the
//! repair's timeline and undo command. A screenshot is kept as an artifact
//! of the run (`$CARGO_TARGET_TMPDIR/dashboard.png`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

/// How long (virtual time) Chromium runs the page's scripts before it
/// dumps the DOM: the page polls every 2 s, so several renders happen.
const VIRTUAL_TIME_BUDGET_MS: u32 = 6_000;

/// Chromium, headless, with the flags this machine's closed network needs
/// (no background connections), a fresh profile, and `extra` arguments.
fn chromium(profile: &Path, extra: &[&str]) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .args(extra)
        .output()
        .expect("run chromium (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The part of `dom` from the element with `id` to the end of its section.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[at..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

fn config(dir: &Path, b: &AgentProc, c_addr: &str) -> std::path::PathBuf {
    let p = dir.join("a.toml");
    let text = format!(
        "[[peers]]\nid = \"node-b\"\naddress = \"{}\"\nbudget = {{ divergent_keys_max = 5, oldest_divergence_ms_max = 86400000 }}\n\n\
         [[peers]]\nid = \"node-c\"\naddress = \"{c_addr}\"\n",
        b.addr
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_an_operator_needs_first_in_a_real_browser() {
    let d = tempfile::tempdir().unwrap();
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    // node-c is configured but down: its address refuses connections.
    let c = AgentProc::start("node-c", &d.path().join("c"), &[]);
    let c_addr = c.addr.clone();
    c.kill();
    let t0 = now_ms() - 7_200_000;
    write(&b, base_data(200, t0)).await;
    let cfg = config(d.path(), &b, &c_addr);
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    let mut data = base_data(200, t0);
    let w = now_ms() - 600_000;
    // 7 keys node-b never got, 3 updates node-b never got.
    data.extend((0..7).map(|i| put(&format!("new-{i}"), "n", ver(w + i, "node-a", 100 + i))));
    write(&a, data).await;
    write(
        &a,
        (0..3)
            .map(|i| {
                put(
                    &format!("key-{i:06}"),
                    "v2",
                    ver(w + 100 + i, "node-a", 200 + i),
                )
            })
            .collect(),
    )
    .await;

    // Three exchanges on demand: three points on the chart.
    for _ in 0..3 {
        let (code, r) = mend_json(&["diff", "--agent", &a.addr, "--peer", "node-b"]);
        assert_eq!(code, 1, "divergence found: {r}");
        assert_eq!(r["divergent_keys"], 10, "{r}");
        let cli: mend_core::report::DiffReport =
            serde_json::from_value(r.clone()).unwrap_or_else(|e| panic!("{e}: {r}"));
        assert_eq!(cli.keys.len(), 10);
    }
    let out = mend(&["diff", "--agent", &a.addr, "--peer", "node-c"]);
    assert!(!out.status.success(), "node-c is down");
    let (code, rep) = mend_json(&["repair", "--agent", &a.addr, "--peer", "node-b"]);
    assert_eq!(code, 0, "{rep}");
    let repair_id = rep["repair_id"].as_str().expect("repair id").to_string();

    let http = a.http.clone().expect("http address");
    let api: Value = reqwest::get(format!("http://{http}/api/dashboard"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["peers"][0]["id"], "node-c", "failing first: {api}");
    // One report shape: the dashboard's reports, `/status`'s and `mend diff
    // --json` all read as `mend_core::report::DiffReport` (which refuses
    // unknown fields), so no surface can drift from the documented one.
    let reports = |v: &Value| -> Vec<(String, mend_core::report::DiffReport)> {
        v["reports"]
            .as_array()
            .unwrap_or_else(|| panic!("reports: {v}"))
            .iter()
            .map(|r| {
                let report = serde_json::from_value(r["report"].clone())
                    .unwrap_or_else(|e| panic!("{e}: {r}"));
                (r["peer"].as_str().unwrap().to_string(), report)
            })
            .collect()
    };
    let on_dashboard = reports(&api);
    assert!(
        on_dashboard.iter().any(|(p, _)| p == "node-b"),
        "node-b's report: {api}"
    );
    let status: Value = reqwest::get(format!("http://{http}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let on_status = reports(&status);
    assert_eq!(
        on_status.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        on_dashboard.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{http}/");
    let dom = String::from_utf8(chromium(profile.path(), &["--dump-dom", &url]).stdout).unwrap();
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the page loaded its data: {dom}"
    );

    // Failures first: node-c heads the attention list and the peer table.
    let attention = section(&dom, "attention");
    assert!(attention.contains("data-peer=\"node-c\""), "{attention}");
    assert!(attention.contains("last exchange failed"), "{attention}");
    let peers = section(&dom, "peers");
    let first_row = peers.find("<tr data-peer=").expect("peer rows");
    assert!(
        peers[first_row..].starts_with("<tr data-peer=\"node-c\""),
        "node-c on top: {peers}"
    );
    // The counts per category of the last exchange with node-b.
    let ex = section(&dom, "exchanges");
    assert!(
        ex.contains("data-category=\"missing\" data-count=\"7\""),
        "{ex}"
    );
    assert!(
        ex.contains("data-category=\"stale\" data-count=\"3\""),
        "{ex}"
    );
    // One chart for (node-b, default) with one point per exchange, and the
    // budget line.
    let charts = section(&dom, "charts");
    let at = charts
        .find("data-peer=\"node-b\" data-range=\"default\" data-points=\"3\"")
        .unwrap_or_else(|| panic!("a chart of 3 points for node-b: {charts}"));
    let svg = &charts[at..charts[at..].find("</svg>").map(|e| at + e).unwrap()];
    assert_eq!(svg.matches("class=\"point\"").count(), 3, "{svg}");
    assert!(svg.contains("class=\"budget\""), "{svg}");
    // The hint a person reads.
    let src = section(&dom, "sources");
    assert!(
        src.contains("all 7 missing keys were written via node-a"),
        "{src}"
    );
    assert!(
        src.contains("node-a's propagation to node-b likely stopped in that window"),
        "{src}"
    );
    // The repair: its run with a timeline, and the undo command.
    assert!(
        dom.contains(&format!("data-run=\"{repair_id}\" data-state=\"done\"")),
        "{dom}"
    );
    assert!(
        dom.contains("pushing 10 keys to the peer"),
        "timeline: {dom}"
    );
    assert!(
        dom.contains(&format!("mend undo --agent {} {repair_id}", a.addr)),
        "undo command: {dom}"
    );
    // The cluster view: node-b answers and now holds what node-a holds;
    // node-c does not answer.
    let cluster = section(&dom, "cluster");
    assert!(cluster.contains("data-in-sync=\"true\""), "{cluster}");
    assert!(cluster.contains("no: "), "{cluster}");

    // A screenshot, kept as an artifact of the run.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    chromium(profile.path(), &[&arg, "--window-size=1280,1800", &url]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    eprintln!("dashboard screenshot: {}", shot.display());
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_ships_everything_it_needs() {
    // No CDN, no other origin: the page is one document with its script,
    // served with a policy that forbids loading anything from elsewhere.
    let d = tempfile::tempdir().unwrap();
    let a = AgentProc::start("node-a", &d.path().join("a"), &["--http", "127.0.0.1:0"]);
    let http = a.http.clone().expect("http address");
    let r = reqwest::get(format!("http://{http}/")).await.unwrap();
    let csp = r
        .headers()
        .get("content-security-policy")
        .expect("a CSP")
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("src=\"http"),
        "nothing loaded from elsewhere"
    );
    assert!(
        !body.contains("href=\"http"),
        "nothing linked from elsewhere"
    );
    assert!(body.contains("/api/dashboard"));
    a.stop();
}
