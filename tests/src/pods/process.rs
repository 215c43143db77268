//! A container's process: the program started inside the pod's namespace with the container's
//! environment and arguments, its output appended to the pod's log file.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;

use crate::process::{WhenWeDie, command_for, spawn_from_lasting_thread};
use crate::{HarnessError, Result};

/// How the runner starts one container.
#[derive(Debug, Clone)]
pub struct Launch {
    pub namespace: String,
    pub executable: std::path::PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A running container process.
#[derive(Debug)]
pub struct ContainerProcess {
    child: Child,
}

impl ContainerProcess {
    /// `setpriv --pdeathsig KILL ip netns exec <ns> <program> <args>`: each execs the next in
    /// place, so the child's pid is the program's. The environment is the container's alone (plus PATH), as in a
    /// container; its own process group keeps a Ctrl-C at the harness's terminal from
    /// reaching it before the runner's orderly stop.
    pub fn start(launch: &Launch, log: &Path) -> Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(HarnessError::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io(format!("opening {}", log.display())))?;
        // Killed with the runner, should it die without stopping it.
        let mut command = command_for(Path::new("ip"), WhenWeDie::Signal(Signal::SIGKILL));
        command
            .args(["netns", "exec", &launch.namespace])
            .arg(&launch.executable)
            .args(&launch.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let child = spawn_from_lasting_thread(command).map_err(HarnessError::io(format!(
            "starting {} in {}",
            launch.executable.display(),
            launch.namespace
        )))?;
        Ok(Self { child })
    }

    /// Waits for the exit (cancel-safe: for a `select!`).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM, then SIGKILL once `grace` has passed; returns the exit status (None: it could
    /// not be waited for).
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Some(pid) = self.child.id() {
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.start_kill();
                self.child.wait().await.ok()
            }
        }
    }
}
