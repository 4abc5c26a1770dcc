//! The `mend` command line: a thin `main` that parses arguments, runs one
//! subcommand and maps its outcome to an exit code (0 ok, 1 "found a
//! problem" such as divergence or a failed verify, 2 error with one line on
//! stderr).

/// `println!` for this binary: a closed stdout (`mend ... | head`) ends
/// the process quietly, as SIGPIPE would, instead of panicking. SIGPIPE
/// itself stays ignored (Rust's default): sockets written with `writev`
/// (TLS records) have no MSG_NOSIGNAL, and a peer closing its end must be
/// an error to report, not the death of the process.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod cli;
mod cmd;
mod output;
mod secret;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    mend_tls::install_default_provider();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mend: {}", output::one_line(&e));
            ExitCode::from(2)
        }
    }
}
