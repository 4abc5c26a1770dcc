//! Peers from DNS (`[discovery] peers = "dns:…"`): every
//! `discovery.interval_ms` the name is resolved again (A/AAAA records at
//! a port, or SRV records with theirs), each address not yet known is asked
//! for a handshake (its certificate checked against the DNS name, the
//! cluster secret proven), and the node id it proves becomes a peer
//! (`peers::Discovered`, persisted), scheduled like a listed one. This
//! agent's own address is recognised by its node id and skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio::sync::watch;

use crate::config::DnsPeers;
use crate::peers::{DISCOVERED_MAX, Discovered, Found};
use crate::state::{AgentBackend, AgentState};

/// Starts discovery if `[discovery] peers` is set; stops on `shutdown`.
pub fn spawn<B: AgentBackend>(state: Arc<AgentState<B>>, mut shutdown: watch::Receiver<bool>) {
    let dns = match state.config.discovery.parse() {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "discovery off");
            return;
        }
    };
    let resolver = match resolver(state.config.discovery.nameserver) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "discovery off: no DNS resolver");
            return;
        }
    };
    let every = Duration::from_millis(state.config.discovery.interval_ms);
    tokio::spawn(async move {
        // Our own addresses, recognised once.
        let mut selves = std::collections::HashSet::new();
        loop {
            round(&state, &dns, &resolver, &mut selves, &shutdown).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => break,
            }
        }
    });
}

/// A resolver asking `nameserver` (UDP and TCP), or the system's.
fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let mut b = match nameserver {
        Some(ns) => {
            let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                TokioConnectionProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    // Re-resolved every round: a cached answer would hide a new peer.
    b.options_mut().cache_size = 0;
    Ok(b.build())
}

/// The addresses DNS gives now, each with the name its certificate must
/// carry. At most `DISCOVERED_MAX`.
pub async fn lookup(
    dns: &DnsPeers,
    resolver: &TokioResolver,
) -> Result<Vec<(SocketAddr, String)>, String> {
    let mut out = Vec::new();
    match dns {
        DnsPeers::Addresses { name, port } => {
            let ips = resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            out.extend(
                ips.iter()
                    .map(|ip| (SocketAddr::new(ip, *port), name.clone())),
            );
        }
        DnsPeers::Srv { name } => {
            let srv = resolver
                .srv_lookup(name.as_str())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            for r in srv.iter().take(DISCOVERED_MAX) {
                let target = r.target().to_utf8();
                let target = target.trim_end_matches('.').to_string();
                match resolver.lookup_ip(target.as_str()).await {
                    Ok(ips) => out.extend(
                        ips.iter()
                            .map(|ip| (SocketAddr::new(ip, r.port()), target.clone())),
                    ),
                    Err(e) => tracing::info!(%target, error = %e, "SRV target does not resolve"),
                }
            }
        }
    }
    out.truncate(DISCOVERED_MAX);
    Ok(out)
}

/// One resolution: new addresses are asked who they are; peers found are
/// persisted and scheduled.
async fn round<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    dns: &DnsPeers,
    resolver: &TokioResolver,
    selves: &mut std::collections::HashSet<String>,
    shutdown: &watch::Receiver<bool>,
) {
    let found = match lookup(dns, resolver).await {
        Ok(f) => f,
        Err(e) => {
            state.metrics.discovery(false);
            tracing::warn!(error = %e, "discovery: DNS lookup failed; peers found before stay");
            return;
        }
    };
    state.metrics.discovery(true);
    let known = state.discovered.found();
    for (addr, tls_name) in found {
        let a = addr.to_string();
        if selves.contains(&a) || known.iter().any(|f| f.address == a) {
            continue;
        }
        state.discovered.name(&a, &tls_name);
        let who = match crate::exchange::ask_handshake(state, &a, &[]).await {
            Ok(r) => r.node_id,
            Err(e) => {
                tracing::info!(addr = %a, error = %e.message(), "discovery: address did not answer a handshake");
                continue;
            }
        };
        if who == state.node_id.as_str() {
            selves.insert(a);
            continue;
        }
        let f = Found {
            id: who.clone(),
            address: a,
            tls_name,
        };
        if let Some((all, new)) = state.discovered.add(f) {
            let op = Discovered::persist_op(&all);
            if let Err(e) = state
                .blocking(move |s| s.backend().write(vec![op], true))
                .await
            {
                tracing::warn!(error = %e.message(), "discovery: peers not persisted");
            }
            if new && state.config.peer(&who).is_none() {
                tracing::info!(peer = %who, "discovery: new peer");
                if let Some(p) = state.peer(&who) {
                    crate::schedule::spawn_peer(state, p, shutdown);
                }
            }
        }
    }
    state.discovered.resolved.store(true, Ordering::SeqCst);
}
