//! `mend agent`: the sidecar daemon. Prints one line with the bound
//! addresses on stdout once serving (tests and scripts read it), logs
//! through `tracing` on stderr, and shuts down gracefully on SIGTERM/SIGINT.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use mend_agent::config::{AgentConfig, PeerConfig};

use crate::cli::{AgentArgs, TlsArgs};

/// The agent's config from its flags and config file.
pub fn build_config(a: &AgentArgs, tls: &TlsArgs) -> anyhow::Result<AgentConfig> {
    let mut c = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?;
            AgentConfig::from_toml(&text).with_context(|| format!("config {}", p.display()))?
        }
        None => AgentConfig::default(),
    };
    if let Some(n) = &a.node_id {
        c.node_id = n.clone();
    }
    if let Some(l) = a.listen {
        c.listen = l;
    }
    if let Some(d) = &a.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(h) = a.http {
        c.http = Some(h);
    }
    if a.secret_file.is_some() {
        c.secret_file = a.secret_file.clone();
    }
    for p in &a.peers {
        let (id, addr) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--peer {p:?}: expected ID=ADDR"))?;
        c.peers.retain(|x| x.id != id);
        c.peers.push(PeerConfig {
            id: id.to_string(),
            address: addr.to_string(),
            interval_ms: 0,
            budget: None,
        });
    }
    if let Some(p) = super::tls_paths(tls) {
        c.tls.dir = None;
        c.tls.cert_file = Some(p.cert_file);
        c.tls.key_file = Some(p.key_file);
        c.tls.ca_file = Some(p.ca_file);
    }
    if tls.insecure_plaintext {
        c.insecure_plaintext = true;
    }
    for g in &a.allow {
        let (role, pat) = g
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--allow {g:?}: expected ROLE=PATTERN"))?;
        let list = match role {
            "replica" => &mut c.roles.replica,
            "peer" => &mut c.roles.peer,
            "operator" => &mut c.roles.operator,
            _ => anyhow::bail!("--allow {g:?}: ROLE must be replica, peer or operator"),
        };
        list.push(pat.to_string());
    }
    c.roles
        .peer_addresses
        .extend(a.allow_peer_address.iter().cloned());
    // One peer list for every replica (a Kubernetes ConfigMap, say) names
    // this node too: a node is not its own peer.
    let me = c.node_id.clone();
    c.peers.retain(|p| p.id != me);
    c.validate()?;
    Ok(c)
}

/// Logs through `tracing` on stderr (`RUST_LOG`, default info).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// The line printed once serving: tests and scripts read the addresses.
pub fn banner(node_id: &str, agent: &mend_agent::RunningAgent) -> String {
    let http = agent
        .http_addr
        .map(|h| h.to_string())
        .unwrap_or_else(|| "off".into());
    let tls = if agent.state.tls.is_some() {
        "on"
    } else {
        "off"
    };
    format!(
        "mend agent {node_id} listening on grpc={} http={http} tls={tls}",
        agent.addr
    )
}

/// Runs the agent until a signal.
pub fn run(a: AgentArgs, tls: &TlsArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let config = build_config(&a, tls)?;
    let secret = crate::secret::load(config.secret_file.as_deref(), |m| tracing::warn!("{m}"))?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM right after the banner must shut down gracefully.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut agent = mend_agent::start(config.clone(), secret).await?;
        println!("{}", banner(&config.node_id, &agent));
        std::io::stdout().flush()?;
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            r = agent.wait() => {
                r.map_err(|e| anyhow::anyhow!("server failed: {e}"))?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        agent
            .stop()
            .await
            .map_err(|e| anyhow::anyhow!("shutdown: {e}"))?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
