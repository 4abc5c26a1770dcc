//! One module per subcommand.

mod agent;
mod attach;
mod cert;
mod client;
mod demo;
mod demo_pg;
mod diff;
mod drift;
mod incident;
mod names;
mod plan;
mod repair;
mod simulate;
mod store;

use std::process::ExitCode;

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use mend_rpc::pb::operator_client::OperatorClient;
use mend_rpc::pb::replica_client::ReplicaClient;
use mend_tls::client::ClientTls;
use tonic::transport::Channel;

use crate::cli::{Cli, Command, TlsArgs};

/// The TLS flags of this run, set once by [`run`].
static TLS_ARGS: OnceLock<TlsArgs> = OnceLock::new();

/// The client side's TLS, loaded once on first use.
static CLIENT_TLS: OnceLock<ClientTls> = OnceLock::new();

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = TLS_ARGS.set(cli.tls.clone());
    match cli.command {
        Command::Demo(a) if a.postgres => demo_pg::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Store(c) => store::run(c),
        Command::Agent(a) => agent::run(a, &cli.tls),
        Command::Attach(a) => attach::run(a, &cli.tls),
        Command::Cert(a) => cert::run(a),
        Command::Put(a) => client::put(a),
        Command::Delete(a) => client::delete(a),
        Command::Get(a) => client::get(a),
        Command::Load(a) => client::load(a),
        Command::Diff(a) => diff::run(a),
        Command::Repair(a) => repair::run(a),
        Command::Undo(a) => client::undo(a),
        Command::Dashboard(a) => client::dashboard(a),
        Command::Status(a) => client::status(a),
        Command::History(a) => drift::history(a),
        Command::Report(a) => drift::report(a),
        Command::Sample(a) => drift::sample(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Plan(a) => plan::run(a),
    }
}

/// A tokio runtime for client commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The TLS paths the flags name: a directory, overridden file by file.
pub fn tls_paths(t: &TlsArgs) -> Option<mend_tls::TlsPaths> {
    mend_tls::TlsPaths::from_parts(
        t.tls_dir.as_deref(),
        t.tls_cert.as_deref(),
        t.tls_key.as_deref(),
        t.tls_ca.as_deref(),
    )
}

/// Replaces the client TLS of this process (the demo dials with the
/// certificates it made).
pub fn set_client_tls(t: ClientTls) {
    let _ = CLIENT_TLS.set(t);
}

/// How this CLI dials agents: mutual TLS with the flags' set, or
/// plaintext when asked for.
pub fn client_tls() -> anyhow::Result<ClientTls> {
    if let Some(t) = CLIENT_TLS.get() {
        return Ok(t.clone());
    }
    let args = TLS_ARGS.get().cloned().unwrap_or_default();
    let t = if args.insecure_plaintext {
        ClientTls::Plaintext
    } else {
        let paths = tls_paths(&args).ok_or_else(|| {
            anyhow::anyhow!(
                "no client certificate: give --tls-dir DIR (or MEND_TLS_DIR; `mend cert` makes one), \
                 or --insecure-plaintext for an agent started with it"
            )
        })?;
        let m = mend_tls::Material::load(&paths).context("client TLS")?;
        ClientTls::Tls(Arc::new(m))
    };
    Ok(CLIENT_TLS.get_or_init(|| t).clone())
}

/// A connected channel to the agent at `addr`.
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let tls = client_tls()?;
    let name = TLS_ARGS.get().and_then(|t| t.tls_server_name.clone());
    let ep =
        mend_tls::client::endpoint(addr, name.as_deref(), &tls).map_err(|e| anyhow::anyhow!(e))?;
    ep.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach agent at {addr}: {}",
            mend_agent::exchange::error_chain(&e)
        )
    })
}

/// Connects to an agent's Replica service.
pub async fn replica(addr: &str) -> anyhow::Result<ReplicaClient<Channel>> {
    let c = ReplicaClient::new(channel(addr).await?);
    Ok(c.max_decoding_message_size(mend_rpc::MESSAGE_BYTES_MAX)
        .max_encoding_message_size(mend_rpc::MESSAGE_BYTES_MAX))
}

/// Connects to an agent's Operator service.
pub async fn operator(addr: &str) -> anyhow::Result<OperatorClient<Channel>> {
    let c = OperatorClient::new(channel(addr).await?);
    Ok(c.max_decoding_message_size(mend_rpc::MESSAGE_BYTES_MAX))
}

/// Turns a gRPC status into a one-line error.
pub fn status_err(addr: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("agent {addr}: {} ({:?})", s.message(), s.code())
}
