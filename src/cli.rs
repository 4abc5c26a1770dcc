//! Command-line definitions (clap derive; doc comments are the help text).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mend: Merkle-tree anti-entropy for replicated stores.
#[derive(Debug, Parser)]
#[command(name = "mend", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a self-contained demonstration with embedded defaults.
    Demo(DemoArgs),
    /// Inspect a store's data directory (the agent must not be running).
    #[command(subcommand)]
    Store(StoreCommand),
}

/// Flags of `mend demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keys per replica.
    #[arg(long, default_value_t = 20_000)]
    pub keys: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mend store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Recompute every range's tree from the data and compare it with the
    /// persisted one: exit 0 with each range's root when they agree, exit 1
    /// naming the first disagreeing bucket when not.
    Verify(StoreArgs),
    /// Keys, tombstones, ranges, tree shapes and bytes on disk.
    Stats(StoreArgs),
    /// Rebuild every range's tree from the data (after a failed verify).
    Rebuild(StoreArgs),
}

/// Flags shared by `mend store` commands.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// File holding the cluster secret (else MEND_CLUSTER_SECRET, else the development secret).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
