//! A throwaway local PostgreSQL server in a directory: for the tests, the
//! Postgres demo and the benchmarks, which start their own instances
//! rather than touch one the machine may run.
//!
//! The server listens only on a Unix socket inside its directory (no TCP
//! port, so instances never collide), with `wal_level = logical`, trust
//! authentication for the one user `mend`, and `fsync = off` (the instance
//! is thrown away; mend's own store still syncs). Started with `pg_ctl -w`,
//! which returns once the server accepts connections. As root (CI
//! containers), the server runs as the `postgres` user of Debian's package,
//! since PostgreSQL refuses to run as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::PgError;

/// A running local server; stopped (immediate mode) on drop.
#[derive(Debug)]
pub struct LocalPostgres {
    bindir: PathBuf,
    data: PathBuf,
    as_postgres: bool,
}

impl LocalPostgres {
    /// Initialises a cluster in `dir/pgdata` and starts it.
    pub fn start(dir: &Path) -> Result<LocalPostgres, PgError> {
        LocalPostgres::start_with(dir, &[])
    }

    /// [`LocalPostgres::start`] with extra server settings (`name=value`,
    /// after the defaults, so they win).
    pub fn start_with(dir: &Path, settings: &[&str]) -> Result<LocalPostgres, PgError> {
        let bindir = bindir()?;
        let as_postgres = is_root();
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).map_err(io("creating the data directory"))?;
        if as_postgres {
            // The server user must reach and own its directory.
            let (uid, gid) = postgres_ids()?;
            for d in dir
                .ancestors()
                .take_while(|d| d.starts_with(std::env::temp_dir()))
            {
                let mut p = std::fs::metadata(d)
                    .map_err(io("reading permissions"))?
                    .permissions();
                p.set_mode(p.mode() | 0o711);
                std::fs::set_permissions(d, p).map_err(io("opening the directory"))?;
            }
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))
                .map_err(io("handing the data directory to postgres"))?;
        }
        let pg = LocalPostgres {
            bindir,
            data,
            as_postgres,
        };
        let data = pg.data.to_string_lossy().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "mend",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-k {data} -c listen_addresses='' -c wal_level=logical -c max_replication_slots=16 \
             -c max_wal_senders=16 -c fsync=off -c full_page_writes=off"
        );
        let options: String = settings.iter().fold(options, |o, s| format!("{o} -c {s}"));
        let log = format!("{data}/server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )?;
        Ok(pg)
    }

    /// A connection string for database `dbname` (`postgres` always exists).
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port=5432 user=mend dbname={dbname}",
            self.data.display()
        )
    }

    /// The directory of the server's socket (and data).
    pub fn socket_dir(&self) -> &Path {
        &self.data
    }

    /// A server binary's path (`psql`, `pg_dump`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), PgError> {
        let exe = self.bindir.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.data)
            .output()
            .map_err(|e| PgError::Instance(format!("running {}: {e}", exe.display())))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default();
            return Err(PgError::Instance(format!(
                "{tool} failed ({}): {}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                if log.is_empty() {
                    ""
                } else {
                    "\nserver log:\n"
                },
                log.trim()
            )));
        }
        Ok(())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        if let Err(e) = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]) {
            tracing::warn!(error = %e, "stopping the local PostgreSQL");
        }
    }
}

/// The server binaries: `MEND_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout).
fn bindir() -> Result<PathBuf, PgError> {
    if let Some(d) = std::env::var_os("MEND_PG_BINDIR") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        PgError::Instance(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: install Debian's \
             postgresql package (apt-get install postgresql) or set MEND_PG_BINDIR"
                .into(),
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Result<(u32, u32), PgError> {
    let id = |flag: &str| -> Result<u32, PgError> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| PgError::Instance(format!("id {flag} postgres: {e}")))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                PgError::Instance(
                    "running as root needs the postgres user (Debian's postgresql package)".into(),
                )
            })
    };
    Ok((id("-u")?, id("-g")?))
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> PgError {
    move |e| PgError::Instance(format!("{what}: {e}"))
}
