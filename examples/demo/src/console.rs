//! What the demo says, and when: every line is kept with its wall-clock time for the summary.
//! While the live view owns a terminal (it redraws the screen), lines go into its footer
//! instead of being printed, where the next redraw would wipe them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone)]
pub(crate) struct Console(Arc<Inner>);

struct Inner {
    started: Instant,
    started_at: SystemTime,
    terminal: bool,
    live: AtomicBool,
    lines: Mutex<Vec<Line>>,
}

#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub at: SystemTime,
    pub text: String,
}

impl Console {
    pub(crate) fn new(terminal: bool) -> Self {
        Self(Arc::new(Inner {
            started: Instant::now(),
            started_at: SystemTime::now(),
            terminal,
            live: AtomicBool::new(false),
            lines: Mutex::new(Vec::new()),
        }))
    }

    /// Whether stdout is a terminal (the live view then redraws in place).
    pub(crate) fn terminal(&self) -> bool {
        self.0.terminal
    }

    /// Prints `[+12.3s] text` (or hands it to the live view's footer) and keeps it.
    pub(crate) fn say(&self, text: impl Into<String>) {
        let line = Line {
            at: SystemTime::now(),
            text: text.into(),
        };
        if !(self.0.terminal && self.0.live.load(Ordering::Relaxed)) {
            println!("{}", self.format(&line));
        }
        self.lines().push(line);
    }

    /// While set, a terminal belongs to the live view.
    pub(crate) fn set_live(&self, live: bool) {
        self.0.live.store(live, Ordering::Relaxed);
    }

    /// The newest `n` lines, formatted.
    pub(crate) fn recent(&self, n: usize) -> Vec<String> {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|line| self.format(line))
            .collect()
    }

    pub(crate) fn format(&self, line: &Line) -> String {
        format!("[{}] {}", self.offset(line.at), line.text)
    }

    /// `+12.3s` since the demo started.
    pub(crate) fn offset(&self, at: SystemTime) -> String {
        let seconds = at
            .duration_since(self.0.started_at)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        format!("+{seconds:.1}s")
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.0.started.elapsed()
    }

    fn lines(&self) -> MutexGuard<'_, Vec<Line>> {
        // A poisoned lock only means a panic elsewhere; the lines are still good to print.
        self.0
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
