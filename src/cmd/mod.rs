//! One module per subcommand.

mod agent;
mod client;
mod demo;
mod diff;
mod drift;
mod plan;
mod repair;
mod simulate;
mod store;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Store(c) => store::run(c),
        Command::Agent(a) => agent::run(a),
        Command::Put(a) => client::put(a),
        Command::Delete(a) => client::delete(a),
        Command::Get(a) => client::get(a),
        Command::Load(a) => client::load(a),
        Command::Diff(a) => diff::run(a),
        Command::Repair(a) => repair::run(a),
        Command::Undo(a) => client::undo(a),
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

/// Normalises an agent address to a URI.
pub fn uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Turns a gRPC status into a one-line error.
pub fn status_err(addr: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("agent {addr}: {} ({:?})", s.message(), s.code())
}
