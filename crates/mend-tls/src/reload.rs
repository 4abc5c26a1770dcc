//! Hot reload of the TLS set: the files are polled every
//! `tls_reload_poll_ms`; a changed set is validated in full
//! ([`Material::load`]) before it is swapped in, so a half-written or
//! expired replacement never replaces a working one. New connections (and
//! new outgoing ones) use the new set; established ones keep theirs.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;

use crate::TlsError;
use crate::material::{Material, TlsPaths};

/// The default poll interval of the TLS files, in ms.
pub const TLS_RELOAD_POLL_MS_DEFAULT: u64 = 2_000;

/// One loaded set with the server config built from it.
#[derive(Debug)]
pub struct Loaded {
    /// The files' contents, validated.
    pub material: Arc<Material>,
    /// The server config built from them.
    pub server: Arc<ServerConfig>,
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are as last seen.
    Unchanged,
    /// A new, valid set is now served.
    Reloaded,
    /// The files changed into an invalid set; the old one stays.
    Rejected(String),
}

/// The TLS set in use, swapped atomically on reload.
#[derive(Debug)]
pub struct TlsSource {
    paths: TlsPaths,
    current: RwLock<Arc<Loaded>>,
    /// Hash of the file contents last looked at (valid or not), so a bad
    /// set is reported once, not at every poll.
    seen: Mutex<u64>,
    /// Sets swapped in since start.
    pub reloads: AtomicU64,
    /// Changed sets refused since start.
    pub rejected: AtomicU64,
}

fn contents_hash(paths: &TlsPaths) -> u64 {
    let mut h = DefaultHasher::new();
    for f in paths.files() {
        // An unreadable file hashes as its error, so a later fix is seen.
        match std::fs::read(f) {
            Ok(b) => b.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

fn build(paths: &TlsPaths) -> Result<Loaded, TlsError> {
    let material = Material::load(paths)?;
    let server = material.server_config()?;
    Ok(Loaded {
        material: Arc::new(material),
        server,
    })
}

impl TlsSource {
    /// Loads the initial set; an invalid one is an error (nothing to fall
    /// back to).
    pub fn load(paths: TlsPaths) -> Result<Arc<TlsSource>, TlsError> {
        let seen = contents_hash(&paths);
        let loaded = build(&paths)?;
        Ok(Arc::new(TlsSource {
            paths,
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }))
    }

    /// The set in use.
    pub fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The files this source watches.
    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// Looks at the files once: reloads a changed valid set, refuses a
    /// changed invalid one. Blocking (file reads); call off async workers.
    pub fn check(&self) -> ReloadOutcome {
        let h = contents_hash(&self.paths);
        {
            let mut seen = match self.seen.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if *seen == h {
                return ReloadOutcome::Unchanged;
            }
            *seen = h;
        }
        match build(&self.paths) {
            Ok(l) => {
                let mut cur = match self.current.write() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                *cur = Arc::new(l);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Reloaded
            }
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Rejected(e.to_string())
            }
        }
    }

    /// Polls every `every` until `stop` turns true, reporting each outcome
    /// other than `Unchanged` to `on_change` and the log.
    pub fn spawn_poll(
        self: &Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        on_change: impl Fn(&ReloadOutcome) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let src = me.clone();
                let Ok(outcome) = tokio::task::spawn_blocking(move || src.check()).await else {
                    continue;
                };
                match &outcome {
                    ReloadOutcome::Unchanged => continue,
                    ReloadOutcome::Reloaded => {
                        tracing::info!(cert = %me.paths.cert_file.display(), "TLS certificate, key and CA reloaded");
                    }
                    ReloadOutcome::Rejected(why) => {
                        tracing::error!(error = %why, "changed TLS files refused; still serving the previous set");
                    }
                }
                on_change(&outcome);
            }
        })
    }
}
