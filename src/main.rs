//! The `mend` command line: a thin `main` that parses arguments, runs one
//! subcommand and maps its outcome to an exit code (0 ok, 1 "found a
//! problem" such as divergence or a failed verify, 2 error with one line on
//! stderr).

mod cli;
mod cmd;
mod output;
mod secret;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mend: {}", output::one_line(&e));
            ExitCode::from(2)
        }
    }
}
