//! The dashboard's operator actions, clicked in a real browser: headless
//! Chromium driven over WebDriver (Debian's `chromium-driver`, through
//! fantoccini), against real agents over mutual TLS. Without a session the
//! page only reads; `mend dashboard` (operator role) gives a session URL;
//! with it, Repair and Undo each ask for a confirmation, Cancel on it does
//! nothing, Confirm does what it says (seen by `mend diff`), and the page
//! shows who did it. Everything the HTTP side refuses is refused before it
//! reads the body. A screenshot is kept (`$CARGO_TARGET_TMPDIR`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use mend_rpc::pb;
use mend_rpc::pb::operator_client::OperatorClient;
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::*;

/// Longest wait for something the page or an agent does.
const WAIT: Duration = Duration::from_secs(60);

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromedriver (scripts/install-deps.sh installs chromium-driver)");
        Driver { child, port }
    }

    /// A headless Chromium session with a fresh profile in `profile`.
    async fn browser(&self, profile: &Path) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port);
        until(WAIT, "chromedriver to answer", async || {
            reqwest::get(format!("{url}/status"))
                .await
                .ok()?
                .error_for_status()
                .ok()
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1800",
                format!("--user-data-dir={}", profile.display()),
            ]}),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clicks the element `css` names once it is there (the page re-renders
/// every poll, so an element found just before a render is retried).
async fn click(c: &Client, css: &str) {
    until(WAIT, css, async || {
        c.find(Locator::Css(css)).await.ok()?.click().await.ok()
    })
    .await
}

/// The text of the element `css` names, once it is there.
async fn text(c: &Client, css: &str) -> String {
    until(WAIT, css, async || {
        c.find(Locator::Css(css)).await.ok()?.text().await.ok()
    })
    .await
}

/// Divergent keys between `a` and node-b, by `mend diff`.
fn divergent(a: &AgentProc) -> u64 {
    let (_, r) = mend_json(&["diff", "--agent", &a.addr, "--peer", "node-b"]);
    r["divergent_keys"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"))
}

/// `POST /api/actions` with `body`, bearing `token`: (status, body).
async fn post(http: &str, token: Option<&str>, body: String) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{http}/api/actions"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn session(addr: &str, ttl_ms: u64) -> pb::DashboardSessionResponse {
    OperatorClient::new(channel(addr).await)
        .dashboard_session(pb::DashboardSessionRequest { ttl_ms })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_an_operator_session_and_refuse_bad_ones_before_reading_the_body() {
    let d = tempfile::tempdir().unwrap();
    let a = AgentProc::start("node-a", &d.path().join("a"), &["--http", "127.0.0.1:0"]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &["--http", "127.0.0.1:0"]);
    let http = a.http.clone().unwrap();
    let undo = json!({"action": "undo", "id": "r1"}).to_string();

    let (code, body) = post(&http, None, undo.clone()).await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("mend dashboard"),
        "says how to get one: {body}"
    );
    // Not even a body that is not an action is read without a session.
    let (code, _) = post(&http, None, "{".into()).await;
    assert_eq!(code, 401);
    // Nor one too large to be an action (which, with a session, is 413).
    let big = format!("\"{}\"", "x".repeat(8192));
    let (code, _) = post(&http, None, big.clone()).await;
    assert_eq!(code, 401, "refused before the body is read");
    let (code, body) = post(&http, Some("garbage"), undo.clone()).await;
    assert_eq!((code, body.contains("malformed")), (401, true), "{body}");
    // Another agent's session, and one that has expired.
    let other = session(&b.addr, 0).await;
    let (code, body) = post(&http, Some(&other.token), undo.clone()).await;
    assert_eq!(
        (code, body.contains("not valid on this agent")),
        (401, true),
        "{body}"
    );
    let short = session(&a.addr, 1).await;
    let body = until(WAIT, "the 1 ms session to expire", async || {
        let (code, body) = post(&http, Some(&short.token), undo.clone()).await;
        (code == 401).then_some(body)
    })
    .await;
    assert!(body.contains("expired"), "{body}");
    // A certificate without the operator role gets no session.
    let e = OperatorClient::new(channel_as(&a.addr, "replica").await)
        .dashboard_session(pb::DashboardSessionRequest { ttl_ms: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // An agent without an HTTP port has no page to open.
    let c = AgentProc::start("node-c", &d.path().join("c"), &[]);
    let e = OperatorClient::new(channel(&c.addr).await)
        .dashboard_session(pb::DashboardSessionRequest { ttl_ms: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("--http"), "{e:?}");
    c.stop();

    // With a valid session: bad actions are 400 with why, a huge body 413,
    // and a repair may name only a peer of the agent, never an address.
    let s = session(&a.addr, 0).await;
    assert!(
        s.operator.split(',').any(|n| n == CLIENT),
        "acts as the caller: {}",
        s.operator
    );
    let t = Some(s.token.as_str());
    for (body, why) in [
        (
            r#"{"action":"drop","id":"r1"}"#.to_string(),
            "unknown variant",
        ),
        (
            r#"{"action":"undo","id":"r1","force":true}"#.into(),
            "unknown field",
        ),
        (
            json!({"action":"repair","peer": b.addr}).to_string(),
            "is not a peer of this agent",
        ),
        (
            json!({"action":"undo","id": "x".repeat(200)}).to_string(),
            "a repair id is",
        ),
    ] {
        let (code, text) = post(&http, t, body.clone()).await;
        assert_eq!((code, text.contains(why)), (400, true), "{body}: {text}");
    }
    let (code, _) = post(&http, t, big).await;
    assert_eq!(code, 413);
    // An action that fails is accepted, then shown failed with why.
    let (code, text) = post(&http, t, undo.clone()).await;
    assert_eq!(code, 202, "{text}");
    let api = until(WAIT, "the undo to fail", async || {
        let v: Value = reqwest::get(format!("http://{http}/api/dashboard"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["actions"][0]["state"] == "failed").then_some(v)
    })
    .await;
    assert_eq!(api["actions"][0]["operator"], s.operator, "{api}");
    assert_eq!(api["actions"][0]["what"], "undo r1", "{api}");
    assert!(
        api["actions"][0]["result"].as_str().unwrap().contains("r1"),
        "{api}"
    );
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_repairs_and_undoes_from_the_page_after_confirming_in_a_real_browser() {
    let d = tempfile::tempdir().unwrap();
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let t0 = now_ms() - 7_200_000;
    write(&b, base_data(100, t0)).await;
    let cfg = d.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!("[[peers]]\nid = \"node-b\"\naddress = \"{}\"\n", b.addr),
    )
    .unwrap();
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    let mut data = base_data(100, t0);
    let w = now_ms() - 600_000;
    data.extend((0..7).map(|i| put(&format!("new-{i}"), "n", ver(w + i, "node-a", 100 + i))));
    write(&a, data).await;
    assert_eq!(divergent(&a), 7);
    let http = a.http.clone().unwrap();

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = driver.browser(profile.path()).await;

    // Without a session: no buttons, and the command that gives one.
    c.goto(&format!("http://{http}/")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("body[data-loaded='1']"))
        .await
        .unwrap();
    assert!(
        c.find_all(Locator::Css("button.act"))
            .await
            .unwrap()
            .is_empty(),
        "read-only without a session"
    );
    let header = text(&c, "#operator").await;
    assert!(header.contains("read-only"), "{header}");
    assert!(
        header.contains(&format!("mend dashboard --agent {}", a.addr)),
        "{header}"
    );

    // A session from the CLI (operator role over mutual TLS).
    let (code, s) = mend_json(&["dashboard", "--agent", &a.addr]);
    assert_eq!(code, 0, "{s}");
    let url = s["url"].as_str().unwrap().to_string();
    let operator = s["operator"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("http://{http}/#session=")),
        "{url}"
    );
    c.goto(&url).await.unwrap();
    let header = until(WAIT, "the page to take the session", async || {
        let t = c
            .find(Locator::Css("#operator"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        t.contains("operator:").then_some(t)
    })
    .await;
    assert!(header.contains(&operator), "{header}");
    let now = c.current_url().await.unwrap();
    assert_eq!(
        now.fragment(),
        None,
        "the token left the address bar: {now}"
    );

    // Repair, then Cancel on the confirmation: nothing happens.
    let repair = "#peers tr[data-peer='node-b'] button[data-act='repair']:not([data-dry-run])";
    click(&c, repair).await;
    let ask = text(&c, "#confirm-text").await;
    assert!(
        ask.contains("Repair every divergent key between node-a and node-b"),
        "{ask}"
    );
    click(&c, "#confirm-no").await;
    let shown = c.find(Locator::Css("#confirm")).await.unwrap();
    assert!(
        !shown.is_displayed().await.unwrap(),
        "the confirmation closed"
    );
    assert!(
        text(&c, "#action-status")
            .await
            .contains("nothing was done")
    );
    assert!(
        c.find_all(Locator::Css("#actions tbody tr"))
            .await
            .unwrap()
            .is_empty(),
        "no action taken"
    );
    assert_eq!(divergent(&a), 7, "cancel did nothing");

    // Repair, then Confirm: repaired, and shown with who did it.
    click(&c, repair).await;
    click(&c, "#confirm-yes").await;
    let done = "#actions tr[data-kind='repair'][data-state='done']";
    let result = text(&c, &format!("{done} td.result")).await;
    assert!(result.contains("repaired 7 keys"), "{result}");
    let row = text(&c, done).await;
    assert!(row.contains(&operator), "{row}");
    let id = c
        .find(Locator::Css(done))
        .await
        .unwrap()
        .attr("data-repair")
        .await
        .unwrap()
        .expect("the repair id");
    assert_eq!(divergent(&a), 0, "repaired");

    // Undo from its journal row, confirmed: set back.
    click(
        &c,
        &format!("#recent tr[data-repair='{id}'] button[data-act='undo']"),
    )
    .await;
    let ask = text(&c, "#confirm-text").await;
    assert!(ask.contains(&format!("Undo repair {id}")), "{ask}");
    click(&c, "#confirm-yes").await;
    let result = text(
        &c,
        "#actions tr[data-kind='undo'][data-state='done'] td.result",
    )
    .await;
    assert!(result.contains("restored 7 keys"), "{result}");
    assert_eq!(divergent(&a), 7, "undone");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-actions.png");
    std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();
    eprintln!("dashboard actions screenshot: {}", shot.display());

    // End the session: the buttons go, and the token no longer works.
    click(&c, "#end-session").await;
    until(WAIT, "the buttons to go", async || {
        c.find_all(Locator::Css("button.act"))
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    let token = url.split("#session=").nth(1).unwrap();
    let (code, body) = post(
        &http,
        Some(token),
        json!({"action":"undo","id":id}).to_string(),
    )
    .await;
    assert_eq!((code, body.contains("ended")), (401, true), "{body}");
    c.close().await.unwrap();
    a.stop();
    b.stop();
}
