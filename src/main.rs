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
    restore_sigpipe();
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mend: {}", output::one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// Restores the default SIGPIPE action (Rust ignores it), so `mend ... |
/// head` ends quietly like other command-line tools instead of panicking in
/// `println!` on a closed pipe.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; setting a
    // signal disposition to its default has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
