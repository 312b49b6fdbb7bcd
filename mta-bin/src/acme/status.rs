//! `data_dir/acme/status.json`: what the renewal task did last, for `mta doctor` (which runs
//! as another process): the names, the certificate's expiry, the last error, when it tried
//! and when it tries next (Unix seconds).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file's name in `data_dir/acme`.
pub const FILE: &str = "status.json";

/// The renewal task's last state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The names the certificate is for.
    pub names: Vec<String>,
    /// When the certificate served expires, if there is one.
    pub not_after: Option<i64>,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// When the last attempt started.
    pub last_attempt: Option<i64>,
    /// When the next attempt is due.
    pub next_attempt: Option<i64>,
}

impl Status {
    /// The stored status, if any can be read.
    pub fn read(dir: &Path) -> Option<Status> {
        let text = std::fs::read(dir.join(FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Stores it (0600); a failure is logged only: the status is for information.
    pub fn write(&self, dir: &Path) {
        let Ok(bytes) = serde_json::to_vec_pretty(self) else {
            return;
        };
        if let Err(e) = mta_core::durable_file::write(&dir.join(FILE), &bytes, 0o600) {
            tracing::warn!(error = %e, "acme: cannot write {FILE}");
        }
    }
}
