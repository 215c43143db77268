//! The live view: `kubectl-sluice get rollout web -w`, the plugin users run, with its output
//! read through a pipe so that the demo can put its own footer under each frame (what the
//! client sees through Traefik, the latest events). On a terminal each frame replaces the
//! last, as the plugin itself does; elsewhere frames and events are printed one after another.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::console::Console;

/// Lines under each frame.
pub(crate) type Footer = Arc<dyn Fn() -> String + Send + Sync>;

pub(crate) struct LiveView {
    child: Child,
    task: JoinHandle<()>,
    console: Console,
}

impl LiveView {
    pub(crate) fn start(
        kubectl_sluice: &Path,
        kubeconfig: &Path,
        namespace: &str,
        rollout: &str,
        log_dir: &Path,
        console: Console,
        footer: Footer,
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(log_dir.join("kubectl-sluice.log"))
            .context("creating kubectl-sluice.log")?;
        let mut child = Command::new(kubectl_sluice)
            .args(["-n", namespace, "get", "rollout", rollout, "-w"])
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            // Its own process group: a Ctrl-C reaches only the demo, which stops it in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", kubectl_sluice.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("kubectl-sluice's stdout was not piped")?;
        console.say(format!(
            "live view: kubectl-sluice -n {namespace} get rollout {rollout} -w"
        ));
        console.set_live(true);
        let terminal = console.terminal();
        let task = tokio::spawn(draw(stdout, footer, console.clone(), terminal));
        Ok(Self {
            child,
            task,
            console,
        })
    }

    /// Stops the plugin and gives the terminal back to plain lines.
    pub(crate) async fn stop(mut self) {
        self.task.abort();
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        self.console.set_live(false);
    }
}

/// Reads frames (each ends with an empty line) and draws them with the footer: on a terminal
/// again every second, so the footer's counters move between frames.
async fn draw(
    stdout: tokio::process::ChildStdout,
    footer: Footer,
    console: Console,
    terminal: bool,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut building = String::new();
    let mut frame = String::new();
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    let mut cleared = false;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.is_empty() => {
                    if building.is_empty() {
                        continue;
                    }
                    let complete = std::mem::take(&mut building);
                    if terminal {
                        frame = complete;
                        if !cleared {
                            // Once, so that the lines before the view are not painted over.
                            print!("\x1b[H\x1b[2J");
                            cleared = true;
                        }
                        paint(&frame, &footer);
                    } else {
                        // Off a terminal every frame stays in the transcript; the events are
                        // printed as they happen.
                        println!("{complete}");
                    }
                }
                Ok(Some(line)) => {
                    building.push_str(&line);
                    building.push('\n');
                }
                Ok(None) | Err(_) => {
                    console.set_live(false);
                    console.say("live view: kubectl-sluice exited (its log is kubectl-sluice.log)");
                    return;
                }
            },
            _ = redraw.tick(), if terminal && cleared => paint(&frame, &footer),
        }
    }
}

/// Home, each line cleared to its end, then the rest of the screen cleared: redraws without the
/// flicker of clearing first.
fn paint(frame: &str, footer: &Footer) {
    let mut out = String::from("\x1b[H");
    for line in frame
        .lines()
        .chain(std::iter::once(""))
        .chain(footer().lines())
    {
        let _ = writeln!(out, "{line}\x1b[K");
    }
    out.push_str("\x1b[J");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
