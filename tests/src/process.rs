//! A child process we started, with its output in a log file, that is stopped when dropped
//! unless it was deliberately detached (`sluice-cluster up`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::{HarnessError, Result};

/// How long a process gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    /// Behind a lock so that readiness checks can look at it through a shared reference.
    child: Mutex<Option<Child>>,
}

impl ManagedProcess {
    /// Starts `program` with `args`, its stdout and stderr going to `<log_dir>/<name>.log`. The
    /// child gets its own process group, so a Ctrl-C at a terminal reaches only us and we stop
    /// the children in order.
    pub fn spawn(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out =
            File::create(&log).map_err(HarnessError::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io(format!("opening {}", log.display())))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(HarnessError::io(format!("starting {}", program.display())))?;
        let pid = child.id().ok_or_else(|| HarnessError::Invalid {
            what: name.into(),
            detail: "exited before its pid could be read".into(),
        })?;
        Ok(Self {
            name: name.into(),
            pid,
            log,
            child: Mutex::new(Some(child)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error carrying the tail of the log when the process has already exited.
    pub fn ensure_running(&self) -> Result<()> {
        let mut guard = self.child();
        let Some(child) = guard.as_mut() else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::ProcessExited {
                process: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log, 30),
            }),
            Err(e) => Err(HarnessError::io(format!("checking on {}", self.name))(e)),
        }
    }

    /// SIGTERM, then SIGKILL after a grace period; waits for the exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = kill(pid_of(self.pid), Signal::SIGTERM);
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// Leaves the process running after we exit; returns its pid for a later [`stop_pid`].
    pub fn detach(self) -> u32 {
        self.child().take();
        self.pid
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child().as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Stops a process that an earlier `sluice-cluster up` detached, if it is still the program we
/// started (the pid may have been reused since): SIGTERM, then SIGKILL after a grace period.
pub async fn stop_pid(pid: u32, program: &Path) {
    if !is_running_program(pid, program) {
        return;
    }
    let _ = kill(pid_of(pid), Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + GRACE;
    while tokio::time::Instant::now() < deadline {
        if !is_running_program(pid, program) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = kill(pid_of(pid), Signal::SIGKILL);
}

fn is_running_program(pid: u32, program: &Path) -> bool {
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe == program,
        Err(_) => false,
    }
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
