//! The record of every process a cluster started, in `<dir>/processes.json`, rewritten as each
//! one starts: `sluice-cluster down` stops what it lists even when `up` was killed before it
//! finished starting, and `up` refuses a directory whose processes still run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::procfs;
use crate::{HarnessError, Result};

const FILE: &str = "processes.json";

/// One process of a cluster: its pid and start time name it (a pid alone may be reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedProcess {
    pub name: String,
    pub pid: u32,
    pub start_ticks: u64,
    pub program: PathBuf,
}

impl RecordedProcess {
    /// Whether this process still runs (not a later one that got its pid).
    pub fn is_running(&self) -> bool {
        procfs::runs(self.pid, self.start_ticks)
    }
}

/// The processes recorded in `dir`, in start order; an error when there is no record.
pub fn recorded_processes(dir: &Path) -> Result<Vec<RecordedProcess>> {
    let path = dir.join(FILE);
    let text =
        std::fs::read(&path).map_err(HarnessError::io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| HarnessError::Invalid {
        what: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Whether `dir` holds a record at all.
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(FILE).is_file()
}

/// Replaces the record in `dir` with `processes`. Written aside and renamed into place, so that
/// a reader (or a `kill -9` mid-write) never sees half a record.
pub(crate) fn write(dir: &Path, processes: &[RecordedProcess]) -> Result<()> {
    let path = dir.join(FILE);
    let partial = dir.join(format!("{FILE}.partial"));
    let json = serde_json::to_vec_pretty(processes).map_err(|e| HarnessError::Invalid {
        what: "the process record".into(),
        detail: e.to_string(),
    })?;
    std::fs::write(&partial, json)
        .map_err(HarnessError::io(format!("writing {}", partial.display())))?;
    std::fs::rename(&partial, &path)
        .map_err(HarnessError::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::ProcessStat;

    #[test]
    fn a_record_reads_back_and_names_running_processes_by_start_time() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!exists(dir.path()));
        let me = std::process::id();
        let stat = ProcessStat::read(me).unwrap();
        let running = RecordedProcess {
            name: "me".into(),
            pid: me,
            start_ticks: stat.start_ticks,
            program: "/proc/self/exe".into(),
        };
        let reused = RecordedProcess {
            start_ticks: stat.start_ticks + 1,
            ..running.clone()
        };
        write(dir.path(), &[running.clone(), reused.clone()]).unwrap();
        let read = recorded_processes(dir.path()).unwrap();
        assert_eq!(read, vec![running.clone(), reused.clone()]);
        assert!(running.is_running());
        assert!(!reused.is_running());
    }
}
