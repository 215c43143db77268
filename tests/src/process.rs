//! A child process we started, with its output in a log file, that is stopped when dropped
//! unless it was deliberately detached (`sluice-cluster up`), and killed by the kernel when we
//! die without stopping it (`kill -9`) unless it was started to outlive us.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::procfs::{self, ProcessStat};
use crate::{HarnessError, Result};

/// How long a process gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// What becomes of a process when we die without stopping it (`kill -9`, an abort).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenWeDie {
    /// The kernel sends it this signal (a parent-death signal, set by `setpriv`).
    Signal(Signal),
    /// It keeps running: a detached cluster's, which `sluice-cluster down` stops.
    KeepRunning,
}

#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    /// With the pid, names the process even after its pid was reused.
    start_ticks: u64,
    log: PathBuf,
    /// Behind a lock so that readiness checks can look at it through a shared reference.
    child: Mutex<Option<Child>>,
}

impl ManagedProcess {
    /// Starts `program` with `args`, its stdout and stderr going to `<log_dir>/<name>.log`,
    /// killed should we die without stopping it. The child gets its own process group, so a
    /// Ctrl-C at a terminal reaches only us and we stop the children in order.
    pub fn spawn(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Self> {
        Self::spawn_with(
            name,
            program,
            args,
            log_dir,
            WhenWeDie::Signal(Signal::SIGKILL),
        )
    }

    /// [`ManagedProcess::spawn`], with its fate on our death chosen.
    pub fn spawn_with(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        when_we_die: WhenWeDie,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out =
            File::create(&log).map_err(HarnessError::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io(format!("opening {}", log.display())))?;
        let mut command = command_for(program, when_we_die);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = spawn_from_lasting_thread(command)
            .map_err(HarnessError::io(format!("starting {}", program.display())))?;
        let exited = || HarnessError::Invalid {
            what: name.into(),
            detail: "exited before its pid could be read".into(),
        };
        let pid = child.id().ok_or_else(exited)?;
        let start_ticks = ProcessStat::read(pid).ok_or_else(exited)?.start_ticks;
        Ok(Self {
            name: name.into(),
            pid,
            start_ticks,
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

    pub fn start_ticks(&self) -> u64 {
        self.start_ticks
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

/// `program` itself, or, when it is to die with us, `setpriv --pdeathsig` execing it: the
/// signal survives the exec, and the pid stays the program's.
pub(crate) fn command_for(program: &Path, when_we_die: WhenWeDie) -> Command {
    match when_we_die {
        WhenWeDie::KeepRunning => Command::new(program),
        WhenWeDie::Signal(signal) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--pdeathsig={}", signal.as_str()))
                .arg("--")
                .arg(program);
            command
        }
    }
}

type SpawnJob = (
    Command,
    tokio::runtime::Handle,
    mpsc::Sender<std::io::Result<Child>>,
);

/// Children are forked from one thread that lives as long as the process: the kernel sends a
/// parent-death signal when the thread that forked a child ends, not the process, and the e2e
/// harness starts its cluster on a test thread that ends long before the run does. The child
/// is registered with the caller's runtime, which reaps it.
pub(crate) fn spawn_from_lasting_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: LazyLock<Option<mpsc::Sender<SpawnJob>>> = LazyLock::new(|| {
        let (jobs, receiver) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("sluice-spawner".into())
            .spawn(move || {
                // Ends only with the process: the sender lives in a static.
                for (mut command, runtime, reply) in receiver {
                    let _entered = runtime.enter();
                    let _ = reply.send(command.spawn());
                }
            })
            .ok()
            .map(|_| jobs)
    });
    let unavailable = |what: &str| std::io::Error::other(format!("the spawner thread {what}"));
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let jobs = SPAWNER
        .as_ref()
        .ok_or_else(|| unavailable("could not be started"))?;
    let (reply, answer) = mpsc::channel();
    jobs.send((command, runtime, reply))
        .map_err(|_| unavailable("is gone"))?;
    answer.recv().map_err(|_| unavailable("did not answer"))?
}

/// Stops a process that an earlier `sluice-cluster up` detached, if it is still the one we
/// started (the pid may have been reused since): SIGTERM, then SIGKILL after a grace period.
pub async fn stop_pid(pid: u32, start_ticks: u64) {
    if !procfs::runs(pid, start_ticks) {
        return;
    }
    let _ = kill(pid_of(pid), Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + GRACE;
    while tokio::time::Instant::now() < deadline {
        if !procfs::runs(pid, start_ticks) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = kill(pid_of(pid), Signal::SIGKILL);
    // Gone once the kernel has delivered it, which a caller about to check must see.
    for _ in 0..20 {
        if !procfs::runs(pid, start_ticks) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
