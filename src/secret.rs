//! Where the cluster secret comes from: `--secret-file`, else the
//! `MEND_CLUSTER_SECRET` environment variable, else the fixed development
//! secret with a warning (so quick starts need no setup).

use std::path::Path;

use anyhow::Context;
use mend_core::Secret;

/// Environment variable holding the cluster secret.
pub const SECRET_ENV: &str = "MEND_CLUSTER_SECRET";

/// Loads the secret; `warn` is called when falling back to the development one.
pub fn load(file: Option<&Path>, warn: impl FnOnce(&str)) -> anyhow::Result<Secret> {
    if let Some(f) = file {
        let raw =
            std::fs::read(f).with_context(|| format!("cannot read secret file {}", f.display()))?;
        anyhow::ensure!(
            !raw.trim_ascii().is_empty(),
            "secret file {} is empty",
            f.display()
        );
        return Ok(Secret::from_bytes(&raw));
    }
    if let Ok(s) = std::env::var(SECRET_ENV) {
        anyhow::ensure!(!s.trim().is_empty(), "{SECRET_ENV} is set but empty");
        return Ok(Secret::from_bytes(s.as_bytes()));
    }
    warn(
        "no cluster secret configured (--secret-file or MEND_CLUSTER_SECRET): using the development secret",
    );
    Ok(Secret::development())
}
