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
    /// TLS settings: the agent's own set for `mend agent`, the client's for
    /// every command that talks to an agent.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS flags, accepted by every subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Directory with tls.crt, tls.key and ca.crt (cert-manager's layout; `mend cert` makes one per name).
    #[arg(long, global = true, env = "MEND_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Certificate chain (PEM), overriding DIR/tls.crt.
    #[arg(long, global = true, env = "MEND_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM), overriding DIR/tls.key.
    #[arg(long, global = true, env = "MEND_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM), overriding DIR/ca.crt.
    #[arg(long, global = true, env = "MEND_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Name the agent's certificate must carry (default: the host of --agent).
    #[arg(long, global = true, env = "MEND_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// No TLS: serve (agent) or dial (client) plaintext. Loopback only; no identities, every role granted.
    #[arg(long, global = true, env = "MEND_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a self-contained demonstration with embedded defaults.
    Demo(DemoArgs),
    /// Inspect a store's data directory (the agent must not be running).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run the sidecar agent.
    Agent(AgentArgs),
    /// Run an agent for a PostgreSQL table: snapshot it, follow its logical
    /// replication slot into a digest-only range, and serve like `mend agent`.
    Attach(AttachArgs),
    /// Make a development CA and certificates (no openssl needed).
    Cert(CertArgs),
    /// Write a value through an agent.
    Put(PutArgs),
    /// Delete a key through an agent (writes a tombstone).
    Delete(DeleteArgs),
    /// Read a key from an agent.
    Get(GetArgs),
    /// Load generated keys into one or more agents (the same versioned writes to each).
    Load(LoadArgs),
    /// Find the keys on which two agents differ, classified by cause.
    Diff(DiffArgs),
    /// Repair the divergent keys between two agents.
    Repair(RepairArgs),
    /// Undo a repair (run against the agent that ran it).
    Undo(RepairControlArgs),
    /// Open an operator session of an agent's dashboard page: prints the URL
    /// whose page can repair, undo, pause, resume and cancel as you.
    Dashboard(DashboardArgs),
    /// Show an agent's ranges, roots, peers, budgets and journaled repairs.
    Status(StatusArgs),
    /// Drift over time: the scheduled exchanges with each peer.
    History(HistoryArgs),
    /// The report of the latest scheduled exchange.
    Report(ReportArgs),
    /// Spot-check random keys on both sides and estimate the divergent share.
    Sample(SampleArgs),
    /// Run a built-in drill in process: inject a fault between simulated
    /// replicas and compare what mend diagnoses with what was injected.
    Simulate(SimulateArgs),
    /// Capacity planning: expected rounds, bytes, times, memory and disk
    /// for a deployment, from the benchmark-calibrated cost model.
    Plan(PlanArgs),
}

/// Flags of `mend history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Agent gRPC address.
    #[arg(long)]
    pub agent: String,
    /// Only this peer (its configured id).
    #[arg(long)]
    pub peer: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Agent gRPC address.
    #[arg(long)]
    pub agent: String,
    /// Only this peer (its configured id); default: the most recent exchange.
    #[arg(long)]
    pub peer: Option<String>,
    /// Keys to print in the human report.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// `text` (the latest report), `markdown` (the incident summary for a
    /// postmortem: what diverged, since when, why, what was repaired, what
    /// is left) or `json` (both: `{"incident": ..., "report": ...}`).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Same as `--format json`.
    #[arg(long)]
    pub json: bool,
}

/// Output of `mend report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// The latest report, for a terminal.
    Text,
    /// The incident summary in Markdown.
    Markdown,
    /// The incident and the latest report as JSON.
    Json,
}

/// Flags of `mend sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The agent that samples ("local").
    #[arg(long)]
    pub agent: String,
    /// The peer agent's address (or a configured peer id).
    #[arg(long)]
    pub peer: String,
    /// Keys to sample (half from each side).
    #[arg(long, default_value_t = 1000)]
    pub keys: u32,
    /// Seed of the random draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's id (overrides the config file).
    #[arg(long)]
    pub node_id: Option<String>,
    /// gRPC listen address, e.g. 127.0.0.1:7400 (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A peer as ID=ADDR; repeatable.
    #[arg(long = "peer", value_name = "ID=ADDR")]
    pub peers: Vec<String>,
    /// HTTP address for /metrics, /healthz and /status.
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    /// TOML config file with the same settings plus ranges, tree shapes, windows and limits.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// File holding the cluster secret (else MEND_CLUSTER_SECRET, else the development secret).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Grant a role to an identity pattern, as ROLE=PATTERN (ROLE: replica, peer or operator;
    /// PATTERN: a certificate name, `*` wildcards allowed); repeatable.
    #[arg(long = "allow", value_name = "ROLE=PATTERN")]
    pub allow: Vec<String>,
    /// An address pattern (host:port, `*` wildcards) that diff, repair and sample
    /// requests may target besides the configured peers; repeatable.
    #[arg(long = "allow-peer-address", value_name = "PATTERN")]
    pub allow_peer_address: Vec<String>,
}

/// Flags of `mend attach`: the agent's flags plus the table to follow.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The agent (as `mend agent`). Without --config, the agent has one
    /// digest-only range covering every key, named after --range.
    #[command(flatten)]
    pub agent: AgentArgs,
    /// PostgreSQL connection string, libpq keyword/value form
    /// (e.g. "host=/run/postgresql dbname=app user=mend").
    #[arg(long, value_name = "CONNINFO")]
    pub postgres: String,
    /// The table to follow.
    #[arg(long)]
    pub table: String,
    /// The table's schema.
    #[arg(long, default_value = "public")]
    pub schema: String,
    /// The column that orders a row's versions (timestamp[tz] or integer).
    /// Without it the table is followed versionless: diffs say only
    /// missing / differs / deleted, and nothing is repaired automatically.
    #[arg(long)]
    pub version_column: Option<String>,
    /// The origin every version carries: the same for every replica of the table.
    #[arg(long, default_value = "pg")]
    pub origin: String,
    /// The replication slot and publication (default: mend_TABLE).
    #[arg(long)]
    pub slot: Option<String>,
    /// The digest-only range the rows go to (default: the table's name).
    #[arg(long)]
    pub range: Option<String>,
    /// Entries per ingest batch and changes per peek at the slot (1..=10 000).
    #[arg(long, default_value_t = ATTACH_BATCH_ROWS_DEFAULT)]
    pub batch_rows: usize,
}

/// `mend attach --batch-rows` default: mend-pg's `BATCH_ROWS_DEFAULT`
/// (asserted equal in `cmd::attach`; spelled out here because the
/// `cli_parse` fuzz target compiles this file without mend-pg).
pub const ATTACH_BATCH_ROWS_DEFAULT: usize = 5_000;

/// Flags of `mend cert`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory of the CA (created with ca.crt and ca.key if missing); each
    /// name gets DIR/NAME/{tls.crt,tls.key,ca.crt}.
    #[arg(long)]
    pub dir: PathBuf,
    /// A certificate to issue, named by its identity (a node id, `operator`,
    /// `replica`, ...); repeatable. Default: operator and replica.
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// Extra subject alternative names for every certificate issued: DNS
    /// names, IP addresses, or `uri:` URIs (e.g. uri:spiffe://prod/mend); repeatable.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Validity of the certificates, in days (1..=3650).
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Explicit version flags for replicated writes.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Version timestamp in ms since the epoch (a replicated write); omit to let the agent stamp it.
    #[arg(long, requires = "origin")]
    pub version_ms: Option<u64>,
    /// Origin node of the version.
    #[arg(long, requires = "version_ms")]
    pub origin: Option<String>,
    /// The origin's sequence number.
    #[arg(long, default_value_t = 0)]
    pub seq: u64,
}

/// Flags of `mend put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Agent gRPC address.
    #[arg(long)]
    pub agent: String,
    /// The key (UTF-8).
    pub key: String,
    /// The value (UTF-8).
    pub value: String,
    #[command(flatten)]
    pub version: VersionArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Agent gRPC address.
    #[arg(long)]
    pub agent: String,
    /// The key (UTF-8).
    pub key: String,
    #[command(flatten)]
    pub version: VersionArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Agent gRPC address.
    #[arg(long)]
    pub agent: String,
    /// The key (UTF-8).
    pub key: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Agent gRPC addresses; every agent receives the same writes.
    #[arg(long = "agent", required = true)]
    pub agents: Vec<String>,
    /// Number of keys.
    #[arg(long)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Seed of the generated values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Key prefix.
    #[arg(long, default_value = "key-")]
    pub prefix: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The agent that runs the exchange ("local" in the report).
    #[arg(long)]
    pub agent: String,
    /// The peer agent's address (or a peer id configured on the agent).
    #[arg(long)]
    pub peer: String,
    /// Compare only this range (default: every range both serve).
    #[arg(long)]
    pub range: Option<String>,
    /// Keys to print in the human report (all are in --json).
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend repair`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RepairArgs {
    /// Pause, resume or cancel a run instead of starting one.
    #[command(subcommand)]
    pub control: Option<RepairControl>,
    /// The agent that runs the repair (and keeps its journal).
    #[arg(long, required = true)]
    pub agent: Option<String>,
    /// The peer agent's address (or a configured peer id).
    #[arg(long, required = true)]
    pub peer: Option<String>,
    /// Repair only this range.
    #[arg(long)]
    pub range: Option<String>,
    /// Show the plan; write nothing.
    #[arg(long, conflicts_with = "shadow")]
    pub dry_run: bool,
    /// Apply the plan to RocksDB checkpoints of both stores, re-compare, report
    /// the predicted outcome, and remove the checkpoints; the live stores are untouched.
    #[arg(long)]
    pub shadow: bool,
    /// Rate limit in bytes per second.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Rate limit in keys per second.
    #[arg(long)]
    pub rate_keys: Option<u64>,
    /// Categories to repair (default: missing, stale, unpropagated_delete).
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mend repair pause|resume|cancel ID`.
#[derive(Debug, Subcommand)]
pub enum RepairControl {
    /// Stop a run after its current segment; `resume` goes on from the next.
    Pause(RepairControlArgs),
    /// Go on with a paused, failed or interrupted run from its first
    /// unfinished segment (in the background: watch `mend status`).
    Resume(RepairControlArgs),
    /// Stop a run after its current segment and drop the segments left;
    /// what it did stays and can be undone.
    Cancel(RepairControlArgs),
}

/// Flags of `mend repair pause|resume|cancel` and `mend undo`: one repair
/// at the agent that runs or ran it.
#[derive(Debug, Args)]
pub struct RepairControlArgs {
    /// The agent that runs (or ran) the repair.
    #[arg(long)]
    pub agent: String,
    /// The repair id printed by `mend repair` (and listed by `mend status`).
    pub repair_id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The agent whose page to open (it must serve HTTP, `--http`).
    #[arg(long)]
    pub agent: String,
    /// How long the session lasts, in minutes (at most 720).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=720))]
    pub minutes: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Agent gRPC address.
    #[arg(long)]
    pub agent: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Repairs listed, newest first (at most 1000).
    #[arg(long, default_value_t = 20)]
    pub repairs: u32,
    /// List the repairs after this one (the `repairs_next` of a page).
    #[arg(long, default_value = "")]
    pub repairs_after: String,
}

/// Flags of `mend demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keys per replica (rows per table with --postgres).
    #[arg(long, default_value_t = 20_000)]
    pub keys: u64,
    /// Run the demo beside two PostgreSQL servers (started in a temp dir;
    /// needs Debian's postgresql package) instead of mend's own replicas.
    #[arg(long)]
    pub postgres: bool,
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

/// Flags of `mend simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The scenario to run (see --list).
    #[arg(long, required_unless_present_any = ["list", "seeds"])]
    pub scenario: Option<String>,
    /// Seed every parameter of the drill derives from; the same seed replays it exactly.
    /// With --seeds: the first seed of the fault simulation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the fault simulation of the real agent logic (three agents, a
    /// seeded nemesis, the checker) for this many seeds from --seed, and
    /// print every seed that broke a property. Exit 1 if any did.
    #[arg(long, conflicts_with_all = ["scenario", "list"], value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub seeds: Option<u64>,
    /// List the scenarios and exit.
    #[arg(long, conflicts_with = "scenario")]
    pub list: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `mend plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Keys per replica (all ranges).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Divergent keys to expect (all ranges).
    #[arg(long)]
    pub divergent: u64,
    /// Average value size in bytes.
    #[arg(long)]
    pub value_bytes: u64,
    /// Bandwidth between the replicas, bytes per second.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub bandwidth: u64,
    /// Round-trip time between the replicas, milliseconds.
    #[arg(long, default_value_t = 0.2)]
    pub rtt_ms: f64,
    /// Key ranges the keys are split over (one tree each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub ranges: u64,
    /// Average key size in bytes.
    #[arg(long, default_value_t = 16)]
    pub key_bytes: u64,
    /// Average node id length in bytes.
    #[arg(long, default_value_t = 6)]
    pub origin_bytes: u64,
    /// Tree fan-out of every range (the agent's default is 16).
    #[arg(long, default_value_t = 16)]
    pub fanout: u32,
    /// Tree depth every range is created with (the agent's default is 4;
    /// trees deepen from it as their ranges grow).
    #[arg(long, default_value_t = 4)]
    pub depth: u32,
    /// The agents' `deepen.entries_per_bucket`: trees deepen while their
    /// ranges hold more entries per bucket (0 = never; default as the
    /// agent's).
    #[arg(long, default_value_t = 16)]
    pub deepen_entries_per_bucket: u64,
    /// The agents' `deepen.tree_bytes_max`: no tree deeper than this many
    /// bytes in memory (default as the agent's, 256 MiB).
    #[arg(long, default_value_t = 256 << 20)]
    pub deepen_tree_bytes_max: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the `cli_parse` fuzz target calls (and `cargo test` runs): `data`
/// split at NUL bytes into arguments after `mend`, parsed. Never panics
/// (clap's own consistency checks of these definitions run too, in builds
/// with debug assertions such as the fuzz build's). Used by the fuzz target
/// (which compiles this file in; cargo-fuzz builds with `--cfg fuzzing`) and
/// the tests, never compiled into the binary.
#[cfg(any(test, fuzzing))]
pub fn fuzz_parse(data: &[u8]) {
    use clap::{CommandFactory, FromArgMatches};
    // The command is built (and its definitions checked) once; each input
    // is parsed against it, as `Cli::try_parse_from` would.
    static COMMAND: std::sync::OnceLock<std::sync::Mutex<clap::Command>> =
        std::sync::OnceLock::new();
    let args = std::iter::once("mend".to_string()).chain(
        data.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned()),
    );
    let cmd = COMMAND.get_or_init(|| {
        let mut c = Cli::command();
        c.build();
        std::sync::Mutex::new(c)
    });
    let mut cmd = cmd.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(m) = cmd.try_get_matches_from_mut(args) {
        let _ = Cli::from_arg_matches(&m);
    }
}

#[cfg(test)]
mod fuzz_cases {
    use super::*;

    /// Valid command lines, mutated one argument at a time.
    const LINES: &[&str] = &[
        "agent --config mend.toml",
        "agent --data-dir d --listen 127.0.0.1:0 --peer b=127.0.0.1:1",
        "diff --agent 127.0.0.1:7400 --peer node-b --json",
        "repair --agent a:1 --peer b --dry-run --rate-keys 100",
        "undo --agent a:1 ID",
        "repair pause --agent a:1 ID",
        "repair resume --agent a:1 ID --json",
        "simulate --seeds 10 --seed 3",
        "simulate --scenario lost_writes --seed 1 --json",
        "plan --keys 1000000 --divergent 100",
        "cert --out /tmp/x --name node-a",
        "store verify --data-dir d",
    ];

    #[test]
    fn command_lines_and_their_mutants_never_panic() {
        let hostile = [
            "",
            "-",
            "--",
            "--json",
            "=",
            "\u{0}",
            "18446744073709551616",
            "-1",
            "ä",
            "--seeds",
            "0",
            "--peer",
            "=b=c",
            "127.0.0.1:99999",
        ];
        let mut parsed = 0;
        for line in LINES {
            let words: Vec<&str> = line.split(' ').collect();
            let whole = words.join("\0");
            if Cli::try_parse_from(std::iter::once("mend").chain(words.iter().copied())).is_ok() {
                parsed += 1;
            }
            fuzz_parse(whole.as_bytes());
            for i in 0..words.len() {
                for h in hostile {
                    let mut w = words.clone();
                    w[i] = h;
                    fuzz_parse(w.join("\0").as_bytes());
                    let mut w = words.clone();
                    w.insert(i, h);
                    fuzz_parse(w.join("\0").as_bytes());
                }
            }
        }
        assert!(parsed >= 5, "the valid lines parse ({parsed})");
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
