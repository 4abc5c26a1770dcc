//! `mend attach`: an agent for a PostgreSQL table in one command. The
//! agent starts as `mend agent` would (same flags, same banner line), with
//! one digest-only range for the table unless a config file says
//! otherwise; then the `mend-pg` adapter checks the table and the server,
//! takes the slot, snapshots the table and follows the slot into the range
//! through the agent's own Ingest service (over its TLS, as its own node
//! identity, which this command grants the replica role). The adapter's
//! metrics (`mend_pg_*`) are served with the agent's. SIGTERM/SIGINT stop
//! both; an adapter error (the table changed, the slot was taken) stops the
//! agent and exits non-zero with the error on one line.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use mend_agent::AgentConfig;
use mend_agent::config::FutureWrites;
use mend_agent::rows::{JournalFn, Restore, RowAdapter, RowChange, RowError, RowFuture};
use mend_core::{EntryMeta, Record};
use mend_core::{NodeId, RangeMode, RangeSpec, TreeShape};
use mend_pg::rows::{PgRows, Restored};
use mend_pg::{Adapter, AdapterConfig, PgError, PgLimits, PgMetrics};
use mend_rpc::pb::ingest_client::IngestClient;
use mend_tls::client::ClientTls;

use crate::cli::{AttachArgs, TlsArgs};

const _: () = assert!(crate::cli::ATTACH_BATCH_ROWS_DEFAULT == mend_pg::BATCH_ROWS_DEFAULT);

/// Runs the agent and the adapter until a signal or an error.
pub fn run(a: AttachArgs, tls: &TlsArgs) -> anyhow::Result<ExitCode> {
    super::agent::init_tracing();
    let range = a.range.clone().unwrap_or_else(|| a.table.clone());
    let config = agent_config(&a, tls, &range)?;
    let adapter_config = adapter_config(&a, &range)?;
    let secret = crate::secret::load(config.secret_file.as_deref(), |m| tracing::warn!("{m}"))?;
    let client_tls = match config.tls.paths() {
        Some(p) if !config.insecure_plaintext => {
            ClientTls::Tls(Arc::new(mend_tls::Material::load(&p)?))
        }
        _ => ClientTls::Plaintext,
    };
    super::runtime()?.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let metrics = Arc::new(PgMetrics::default());
        let mut adapter = Adapter::connect(adapter_config, metrics.clone()).await?;
        let rows = PgRows::connect(&a.postgres, adapter.spec().clone()).await?;
        let mut agent = mend_agent::start(config.clone(), secret).await?;
        agent
            .state
            .rows
            .register(&range, Arc::new(PgRowAdapter(rows)));
        let mut registry = prometheus_client::registry::Registry::with_prefix("mend");
        metrics.register(&mut registry);
        agent.state.metrics.register_extra(registry);
        let ingest = ingest_client(&agent.addr.to_string(), &config.node_id, &client_tls).await?;
        println!(
            "{} attached={} range={range}",
            super::agent::banner(&config.node_id, &agent),
            adapter.spec().qualified(),
        );
        std::io::stdout().flush()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let follow = adapter.run(ingest, shutdown);
        tokio::pin!(follow);
        let failed = tokio::select! {
            _ = int.recv() => None,
            _ = term.recv() => None,
            r = &mut follow => Some(r),
            r = agent.wait() => {
                r.map_err(|e| anyhow::anyhow!("server failed: {e}"))?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        if failed.is_none() {
            let _ = stop.send(());
            follow.await?;
        }
        agent
            .stop()
            .await
            .map_err(|e| anyhow::anyhow!("shutdown: {e}"))?;
        match failed {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(ExitCode::SUCCESS),
        }
    })
}

/// The agent's configuration as `mend agent` would build it from the same
/// flags, with one digest-only range for the table unless a config file
/// names the ranges; the agent accepts versions ahead of its clock and
/// grants its own node the replica role (the adapter dials as it).
fn agent_config(a: &AttachArgs, tls: &TlsArgs, range: &str) -> anyhow::Result<AgentConfig> {
    let mut config = super::agent::build_config(&a.agent, tls)?;
    let versionless = a.version_column.is_none();
    if a.agent.config.is_none() {
        let mut spec = RangeSpec::whole(range, TreeShape::default());
        spec.mode = RangeMode::Digests;
        spec.versionless = versionless;
        config.ranges = vec![spec];
    }
    check_range(&config, range, versionless, &a.table)?;
    // The database already holds whatever version a writer stamped:
    // refusing it would stall the feed; diffs classify it future_version.
    config.future_writes = FutureWrites::Accept;
    config.roles.replica.push(config.node_id.clone());
    config.validate()?;
    Ok(config)
}

/// Refuses a configured range the table cannot feed: missing, holding
/// values, or versioned differently from how the table is followed.
fn check_range(
    config: &AgentConfig,
    range: &str,
    versionless: bool,
    table: &str,
) -> anyhow::Result<()> {
    match config.ranges.iter().find(|r| r.name == range) {
        Some(r) if r.mode != RangeMode::Digests => {
            anyhow::bail!("range {range:?} holds values: attach needs mode = \"digests\"")
        }
        Some(r) if r.versionless != versionless => anyhow::bail!(
            "range {range:?} is {} but the table is followed {}: {}",
            if r.versionless {
                "versionless"
            } else {
                "versioned"
            },
            if versionless {
                "without --version-column"
            } else {
                "with --version-column"
            },
            if versionless {
                "give --version-column, or set versionless = true on the range"
            } else {
                "drop --version-column, or set versionless = false on the range"
            }
        ),
        Some(_) => Ok(()),
        None => anyhow::bail!("the config has no range {range:?} for table {table}"),
    }
}

/// The adapter's configuration from the flags, validated.
fn adapter_config(a: &AttachArgs, range: &str) -> anyhow::Result<AdapterConfig> {
    let mut adapter_config = AdapterConfig::new(
        &a.postgres,
        &a.table,
        a.version_column.as_deref().unwrap_or(""),
        range,
    );
    adapter_config.schema = a.schema.clone();
    adapter_config.source = format!("pg:{}.{}", a.schema, a.table);
    adapter_config.origin = NodeId::new(a.origin.clone())?;
    if let Some(s) = &a.slot {
        adapter_config.slot = s.clone();
    }
    adapter_config.limits = PgLimits {
        batch_rows: a.batch_rows,
        ..PgLimits::default()
    };
    adapter_config.validate()?;
    Ok(adapter_config)
}

/// The adapter's client of the agent's Ingest service at `addr`, over the
/// agent's TLS as its own node `node_id`.
async fn ingest_client(
    addr: &str,
    node_id: &str,
    tls: &ClientTls,
) -> anyhow::Result<IngestClient<tonic::transport::Channel>> {
    let channel = mend_tls::client::endpoint(addr, Some(node_id), tls)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .connect()
        .await?;
    Ok(IngestClient::new(channel)
        .max_encoding_message_size(mend_rpc::MESSAGE_BYTES_MAX)
        .max_decoding_message_size(mend_rpc::MESSAGE_BYTES_MAX))
}

/// The table's repair access as the agent's row adapter of its range.
struct PgRowAdapter(PgRows);

/// A data or integrity error is the row's (retrying will not help); any
/// other failure (connection, server) is "retry later".
fn row_err(e: PgError) -> RowError {
    match &e {
        PgError::Row(m) => RowError::Rejected(m.clone()),
        PgError::Sql { source, .. }
            if source
                .code()
                .is_some_and(|c| ["22", "23", "42"].iter().any(|k| c.code().starts_with(k))) =>
        {
            RowError::Rejected(e.to_string())
        }
        _ => RowError::Unavailable(e.to_string()),
    }
}

impl RowAdapter for PgRowAdapter {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>]) -> RowFuture<'a, Vec<Option<Record>>> {
        Box::pin(async move { self.0.read(keys).await.map_err(row_err) })
    }

    fn apply<'a>(
        &'a self,
        key: &'a [u8],
        change: &'a RowChange,
        journal: JournalFn<'a>,
    ) -> RowFuture<'a, bool> {
        Box::pin(async move {
            let (version, payload) = match change {
                RowChange::Put { version, payload } => (version, Some(payload.as_slice())),
                RowChange::Delete { version } => (version, None),
            };
            let journal = |b: Option<Record>, a: EntryMeta| async move {
                journal(b, a).await.map_err(|e| e.to_string())
            };
            self.0
                .apply(key, version, payload, journal)
                .await
                .map_err(row_err)
        })
    }

    fn restore<'a>(
        &'a self,
        key: &'a [u8],
        after: &'a EntryMeta,
        before: Option<&'a Record>,
    ) -> RowFuture<'a, Restore> {
        Box::pin(async move {
            Ok(
                match self.0.restore(key, after, before).await.map_err(row_err)? {
                    Restored::Restored => Restore::Restored,
                    Restored::AlreadyRestored => Restore::AlreadyRestored,
                    Restored::Changed => Restore::Changed,
                },
            )
        })
    }
}
