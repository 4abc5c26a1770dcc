//! Shared helpers for end-to-end tests: real `mend agent` processes on
//! 127.0.0.1 with ephemeral ports, temporary data directories and mutual
//! TLS (one development CA per test binary, made with `mend cert`), and the
//! `mend` CLI run as a process with a client certificate.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use mend_rpc::pb;
use mend_rpc::pb::replica_client::ReplicaClient;

/// The secret material every test agent shares.
pub const SECRET: &str = "e2e test secret";

/// The test binary's CA directory (`mend cert` layout), made once.
static CERTS: OnceLock<tempfile::TempDir> = OnceLock::new();
static ISSUE: Mutex<()> = Mutex::new(());

/// The name of the client certificate the CLI and test clients use: it
/// carries the operator and replica roles.
pub const CLIENT: &str = "cli";

/// The CA directory, with a `cli` set (roles operator and replica).
pub fn certs() -> &'static Path {
    CERTS
        .get_or_init(|| {
            // reqwest (the tests' HTTP client) takes the default provider.
            mend_tls::install_default_provider();
            let d = tempfile::Builder::new()
                .prefix("mend-e2e-certs-")
                .tempdir()
                .expect("cert dir");
            let out = Command::new(env!("CARGO_BIN_EXE_mend"))
                .args(["cert", "--dir"])
                .arg(d.path())
                .args(["--name", CLIENT, "--san", "operator", "--san", "replica"])
                .output()
                .expect("run mend cert");
            assert!(out.status.success(), "mend cert: {out:?}");
            d
        })
        .path()
}

/// The TLS set directory of `name`, issued by the test CA on first use.
pub fn cert_set(name: &str) -> PathBuf {
    cert_set_with(name, &[])
}

/// [`cert_set`], issued with `sans` besides `name` (a shared DNS name, say)
/// when it is first issued; a set issued before keeps its names.
pub fn cert_set_with(name: &str, sans: &[&str]) -> PathBuf {
    let dir = certs().join(name);
    let _g = ISSUE.lock().unwrap_or_else(|p| p.into_inner());
    if !dir.join("tls.crt").exists() {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        mend_tls::dev::make(certs(), &[name.to_string()], &sans, 2)
            .expect("issue test certificate");
    }
    dir
}

/// A TLS channel to `addr` as the client certificate `name`.
pub async fn channel_as(addr: &str, name: &str) -> tonic::transport::Channel {
    try_channel_as(addr, name).await.expect("connect over TLS")
}

/// [`channel_as`], with an agent that is down (or a link that refuses) as
/// an error instead of a panic, for tests that kill agents.
pub async fn try_channel_as(
    addr: &str,
    name: &str,
) -> Result<tonic::transport::Channel, tonic::Status> {
    let m =
        mend_tls::Material::load(&mend_tls::TlsPaths::in_dir(&cert_set(name))).expect("client set");
    mend_tls::client::endpoint(
        addr,
        None,
        &mend_tls::client::ClientTls::Tls(std::sync::Arc::new(m)),
    )
    .expect("endpoint")
    .connect_timeout(std::time::Duration::from_secs(5))
    .connect()
    .await
    .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

/// A TLS channel to `addr` as the CLI's client (operator and replica).
pub async fn channel(addr: &str) -> tonic::transport::Channel {
    channel_as(addr, CLIENT).await
}

/// A running agent process; killed on drop.
pub struct AgentProc {
    /// The child process.
    pub child: Child,
    /// Its gRPC address.
    pub addr: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its node id.
    pub node: String,
    /// Its HTTP address, if started with `--http`.
    pub http: Option<String>,
}

impl AgentProc {
    /// Starts `mend agent` on an ephemeral port over `dir`, with extra args,
    /// over mutual TLS with a certificate named `node`.
    pub fn start(node: &str, dir: &Path, extra: &[&str]) -> AgentProc {
        AgentProc::start_at(node, dir, "127.0.0.1:0", extra)
    }

    /// [`AgentProc::start`] on the gRPC address `listen`, for agents that
    /// must know each other's addresses before they start (see
    /// [`free_port`]).
    pub fn start_at(node: &str, dir: &Path, listen: &str, extra: &[&str]) -> AgentProc {
        let set = cert_set(node);
        let set = set.to_str().expect("utf-8 path");
        let mut args = vec![
            // Test agents are not configured with each other (ports are
            // ephemeral): let every test node be a peer, at any loopback port.
            "--allow",
            "peer=node-*",
            "--allow-peer-address",
            "127.0.0.1:*",
            "--tls-dir",
            set,
        ];
        args.extend_from_slice(extra);
        AgentProc::start_bare_at(node, dir, listen, &args)
    }

    /// Starts `mend agent` with exactly `args` besides node id, listen
    /// address and data directory (no TLS, roles or peers of the harness).
    pub fn start_bare(node: &str, dir: &Path, args: &[&str]) -> AgentProc {
        AgentProc::start_bare_at(node, dir, "127.0.0.1:0", args)
    }

    /// [`AgentProc::start_bare`] on the gRPC address `listen`.
    pub fn start_bare_at(node: &str, dir: &Path, listen: &str, args: &[&str]) -> AgentProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mend"));
        cmd.args(["agent", "--node-id", node, "--listen", listen, "--data-dir"])
            .arg(dir)
            .args(args)
            .env("MEND_CLUSTER_SECRET", SECRET)
            .env(
                "RUST_LOG",
                std::env::var("MEND_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn mend agent");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read agent banner");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .unwrap_or_else(|| panic!("agent {node} did not report its address: {line:?}"))
            .to_string();
        let http = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .filter(|h| *h != "off")
            .map(String::from);
        AgentProc {
            child,
            addr,
            dir: dir.to_path_buf(),
            node: node.to_string(),
            http,
        }
    }

    /// Stops the agent with SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        signal(&self.child, Signal::TERM);
        let st = self.child.wait().expect("wait agent");
        assert!(st.success(), "agent {} exited with {st}", self.node);
    }

    /// Kills the agent with SIGKILL.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A Replica client.
    pub async fn replica(&self) -> ReplicaClient<tonic::transport::Channel> {
        ReplicaClient::new(channel(&self.addr).await)
    }
}

pub use rustix::process::Signal;

/// Sends `sig` to our own child process (rustix's safe `kill`, so the
/// workspace's `unsafe_code = "forbid"` holds in tests too).
pub fn signal(child: &Child, sig: Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), sig)
        .unwrap_or_else(|e| panic!("signal {sig:?} to pid {}: {e}", child.id()));
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `mend` CLI.
pub fn mend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .env("MEND_CLUSTER_SECRET", SECRET)
        .env("MEND_TLS_DIR", cert_set(CLIENT))
        .stdin(Stdio::null())
        .output()
        .expect("run mend")
}

/// Runs the `mend` CLI with `--json` appended and parses stdout.
pub fn mend_json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let out = mend(&a);
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mend {args:?} printed no JSON ({e}); exit {code}; stdout {:?}; stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

/// A version.
pub fn ver(ms: u64, origin: &str, seq: u64) -> Option<pb::Version> {
    Some(pb::Version {
        ms,
        logical: 0,
        origin: origin.into(),
        seq,
    })
}

/// A versioned put for a batch.
pub fn put(key: &str, value: &str, version: Option<pb::Version>) -> pb::BatchWrite {
    pb::BatchWrite {
        key: key.into(),
        value: value.into(),
        delete: false,
        version,
    }
}

/// A versioned delete for a batch.
pub fn del(key: &str, version: Option<pb::Version>) -> pb::BatchWrite {
    pb::BatchWrite {
        key: key.into(),
        value: Vec::new(),
        delete: true,
        version,
    }
}

/// Writes a batch to an agent.
pub async fn write(a: &AgentProc, writes: Vec<pb::BatchWrite>) {
    let mut c = a.replica().await;
    for chunk in writes.chunks(5000) {
        c.write_batch(pb::WriteBatchRequest {
            writes: chunk.to_vec(),
        })
        .await
        .expect("write batch");
    }
}

/// Reads `key` through a Replica client.
pub async fn get(
    c: &mut ReplicaClient<tonic::transport::Channel>,
    key: impl Into<Vec<u8>>,
) -> pb::GetResponse {
    c.get(pb::GetRequest { key: key.into() })
        .await
        .expect("get")
        .into_inner()
}

/// Now in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The same `n` versioned keys for every agent.
pub fn base_data(n: u64, ms: u64) -> Vec<pb::BatchWrite> {
    (0..n)
        .map(|i| {
            put(
                &format!("key-{i:06}"),
                &format!("value-{i}"),
                ver(ms + i / 100, "loader", i + 1),
            )
        })
        .collect()
}

/// A loopback port free now (bound, read, released): for a set of agents
/// configured with each other's addresses before any of them starts. Another
/// process could take it in between; on a test machine none does.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The value of the Prometheus series `name` with every label of `labels`
/// in a scrape (summed over the other labels; 0 when absent).
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(x)
            | prometheus_parse::Value::Gauge(x)
            | prometheus_parse::Value::Untyped(x) => x,
            _ => 0.0,
        })
        .sum()
}

/// Scrapes an agent's `/metrics`.
pub async fn scrape(http: &str) -> prometheus_parse::Scrape {
    let body = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text")
}

/// Interval between two looks at a condition another process owns (a
/// served certificate, a metric, a health status, a key visible at an
/// agent): there is nothing to subscribe to across the process boundary.
pub const POLL_MS: u64 = 20;

/// Waits until `f` returns `Some` (at most `limit`, then panics naming
/// `what`): the one place the tests poll a condition.
pub async fn until<T>(
    limit: std::time::Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let t = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(POLL_MS)).await;
    }
}
