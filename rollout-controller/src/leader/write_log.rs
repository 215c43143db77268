//! The controller's own witness of its writes (`--write-log`): one JSON line per write the gate
//! let through (with the lease it was fenced on, when it was sent and answered) and per change of
//! what a lease lets it write (from when, until when; stopped when). With every replica logging
//! under its own identity, the logs together show whether two replicas ever wrote a shard at
//! the same time. Lines are written unbuffered, so a replica killed with SIGKILL loses none it
//! finished.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::warn;

#[derive(Debug)]
pub struct WriteLog {
    identity: String,
    file: Mutex<File>,
}

/// A monotonic instant as microseconds since the Unix epoch, on this process's wall clock.
fn unix_micros(at: Instant) -> i64 {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let wall = if at <= now {
        wall.checked_sub(now - at)
    } else {
        wall.checked_add(at - now)
    };
    wall.and_then(|w| w.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .unwrap_or_default()
}

impl WriteLog {
    pub fn create(path: &Path, identity: &str) -> std::io::Result<Self> {
        Ok(Self {
            identity: identity.to_owned(),
            file: Mutex::new(File::options().create(true).append(true).open(path)?),
        })
    }

    fn line(&self, mut record: Value) {
        record["replica"] = json!(self.identity);
        let mut line = record.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            warn!(error = %e, "write log: appending");
        }
    }

    /// A write the gate let through, once it was answered (`code` 0: no answer).
    pub(crate) fn write(
        &self,
        lease: &str,
        method: &str,
        path: &str,
        sent: Instant,
        answered: Instant,
        code: u16,
    ) {
        self.line(json!({
            "kind": "write", "lease": lease, "method": method, "path": path,
            "sent_us": unix_micros(sent), "answered_us": unix_micros(answered), "code": code,
        }));
    }

    /// From `from` the lease lets this replica write until `until`.
    pub(crate) fn hold(&self, lease: &str, from: Instant, until: Instant) {
        self.line(json!({
            "kind": "hold", "lease": lease,
            "from_us": unix_micros(from), "until_us": unix_micros(until),
        }));
    }

    /// From `at` the lease lets this replica write nothing.
    pub(crate) fn stop(&self, lease: &str, at: Instant) {
        self.line(json!({"kind": "stop", "lease": lease, "at_us": unix_micros(at)}));
    }
}
