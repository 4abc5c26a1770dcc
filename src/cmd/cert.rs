//! `mend cert`: a development CA and certificates, so that the demo, the
//! tests and a first deployment run with mutual TLS and no openssl.

use std::process::ExitCode;

use serde_json::json;

use crate::cli::CertArgs;
use crate::output::print_json;

/// Names issued when none is given: a client for operators and one for
/// the replica's writers.
const DEFAULT_NAMES: [&str; 2] = ["operator", "replica"];

/// Runs `mend cert`.
pub fn run(a: CertArgs) -> anyhow::Result<ExitCode> {
    if !(1..=3650).contains(&a.days) {
        anyhow::bail!("--days {}: must be in 1..=3650", a.days);
    }
    let names: Vec<String> = if a.names.is_empty() {
        DEFAULT_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        a.names.clone()
    };
    let made = mend_tls::dev::make(&a.dir, &names, &a.sans, a.days)?;
    if a.json {
        print_json(&json!({
            "ca_created": made.ca_created,
            "ca": made.dir.join("ca.crt"),
            "sets": made.sets.iter().map(|(n, d)| json!({"name": n, "dir": d})).collect::<Vec<_>>(),
        }))?;
    } else {
        if made.ca_created {
            println!(
                "created CA {} (keep ca.key off the nodes)",
                made.dir.join("ca.crt").display()
            );
        } else {
            println!("using CA {}", made.dir.join("ca.crt").display());
        }
        for (n, d) in &made.sets {
            println!("issued {n}: --tls-dir {}", d.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
