//! What `/proc` says about a process: whether it still lives (as the same process, not a reuse
//! of its pid), its CPU time and its memory. Benchmarks measure the harness's processes with it,
//! and cleanup checks prove that none is left.

use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// Linux reports CPU times in /proc in USER_HZ, which is 100 on every architecture it runs on
/// (it is part of the ABI, whatever the kernel's own tick rate).
const USER_HZ: u64 = 100;

/// One reading of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// `R`, `S`, `D`, `Z` (exited, not yet reaped), ...
    pub state: char,
    /// When the process started, in ticks since boot: with the pid, it names one process.
    pub start_ticks: u64,
    /// Its own CPU time, user and system.
    pub cpu: Duration,
    /// The CPU time of its children that exited and were waited for.
    pub children_cpu: Duration,
}

impl ProcessStat {
    /// `None` when there is no such process.
    pub fn read(pid: u32) -> Option<Self> {
        parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Whether `pid` still runs as the process this reading was taken of: present, the same
    /// start time (so not a reuse of the pid), and not a zombie.
    pub fn still_runs(&self, pid: u32) -> bool {
        runs(pid, self.start_ticks)
    }
}

/// Whether `pid` runs as the process that started at `start_ticks`, and has not exited.
pub fn runs(pid: u32, start_ticks: u64) -> bool {
    ProcessStat::read(pid).is_some_and(|now| now.start_ticks == start_ticks && now.state != 'Z')
}

/// Resident memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    /// The high-water mark of the resident set.
    pub peak_rss_kib: u64,
}

impl Memory {
    pub fn read(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/status");
        let text =
            std::fs::read_to_string(&path).map_err(HarnessError::io(format!("reading {path}")))?;
        parse_status(&text).ok_or_else(|| HarnessError::Invalid {
            what: path,
            detail: "has no VmRSS or VmHWM".into(),
        })
    }
}

/// A process's CPU time and memory at one instant: benchmarks take one at each phase boundary.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub at: Instant,
    pub stat: ProcessStat,
    pub memory: Memory,
}

impl Reading {
    pub fn take(pid: u32) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            stat: ProcessStat::read(pid).ok_or_else(|| HarnessError::Invalid {
                what: format!("process {pid}"),
                detail: "is gone".into(),
            })?,
            memory: Memory::read(pid)?,
        })
    }
}

fn parse_stat(text: &str) -> Option<ProcessStat> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 of proc(5), so field n is fields[n - 3].
    let number = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = |n: usize| number(n).map(|t| Duration::from_millis(t * 1000 / USER_HZ));
    Some(ProcessStat {
        state: fields.first()?.chars().next()?,
        start_ticks: number(22)?,
        cpu: ticks(14)? + ticks(15)?,
        children_cpu: ticks(16)? + ticks(17)?,
    })
}

fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let value = text.lines().find_map(|l| l.strip_prefix(name))?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 300 0 0 0 150 50 20 10 20 0 9 0 \
                    123456 1000000 500 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.start_ticks, 123456);
        assert_eq!(stat.cpu, Duration::from_secs(2));
        assert_eq!(stat.children_cpu, Duration::from_millis(300));
    }

    #[test]
    fn status_gives_resident_and_peak_memory() {
        let text = "Name:\tx\nVmHWM:\t   25600 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                rss_kib: 20480,
                peak_rss_kib: 25600
            })
        );
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_runs_and_a_later_start_is_another_process() {
        let me = std::process::id();
        let stat = ProcessStat::read(me).unwrap();
        assert!(stat.still_runs(me));
        let reused = ProcessStat {
            start_ticks: stat.start_ticks + 1,
            ..stat
        };
        assert!(!reused.still_runs(me));
    }
}
