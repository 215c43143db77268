//! The closing summary: the steps v2 went through and the share of requests it got at each, as
//! the client counted them; v3's analysis with the failing verdict's evidence, and how its abort
//! looked at the client (how long until its last answer, how many bad answers it still gave);
//! and everything the client saw. Only what the demo recorded goes in; nothing here asks the
//! cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use analysis::Verdict;
use rollout_controller::crd::POD_TEMPLATE_HASH_LABEL;
use rollout_controller::crd::analysis::AnalysisRun;
use sluice_tests::load::{Outcome, Record, Tally};
use sluice_tests::shares::within_binomial;

use crate::console::Console;
use crate::manifests::Router;
use crate::narrate::Transition;

/// A share is counted from this long after the weight changed: Traefik applies a route change
/// within its providers' throttle (200 ms) of the apiserver's event.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

/// One shipped version and what became of it.
pub(crate) struct Shipped {
    pub version: String,
    pub describe: String,
    pub hash: String,
    pub shipped_at: SystemTime,
    /// When the demo saw it Healthy (v2) or aborted (v3).
    pub ended_at: SystemTime,
}

/// The client's whole run: every request it sent through Traefik and how it ended.
pub(crate) struct ClientRun {
    pub router: Router,
    pub target: SocketAddr,
    pub host: String,
    pub rate: f64,
    /// The wall clock at the client's zero, to place the rollout's times on its clock.
    pub started_at: SystemTime,
    pub records: Vec<Record>,
    pub dropped: u64,
}

impl ClientRun {
    /// `at` on the client's clock; zero before it began.
    fn offset(&self, at: SystemTime) -> Duration {
        at.duration_since(self.started_at).unwrap_or_default()
    }
}

pub(crate) struct Report {
    pub v2: Shipped,
    pub v3: Shipped,
    pub transitions: Vec<Transition>,
    pub runs: Vec<AnalysisRun>,
    /// The controller's `sluice_abort_latency_seconds` histogram: sum and count.
    pub controller_abort_latency: Option<(f64, f64)>,
    pub client: ClientRun,
    pub control_plane_up: Duration,
}

/// Seconds between two instants, negative when `to` is earlier.
fn seconds(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A stretch of a release at one weight, as the rollout's watch saw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub weight: i32,
    pub from: SystemTime,
    pub to: SystemTime,
}

/// The stretches of constant weight while `shipped` was the canary, up to `until` at the
/// latest: from each change of weight to the next change of weight, or to the first state in
/// which it no longer is the canary (promoted, aborted, another version).
pub(crate) fn segments(
    transitions: &[Transition],
    shipped: &Shipped,
    until: SystemTime,
) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut open: Option<(i32, SystemTime)> = None;
    let relevant = transitions
        .iter()
        .filter(|t| t.at >= shipped.shipped_at && t.at <= until);
    for t in relevant {
        let canary = t.updated.as_deref() == Some(shipped.hash.as_str())
            && t.stable != t.updated
            && !t.aborted;
        let weight = t.weight.filter(|_| canary);
        match (open, weight) {
            (Some((w, _)), Some(now)) if w == now => continue,
            (Some((w, from)), _) => segments.push(Segment {
                weight: w,
                from,
                to: t.at,
            }),
            (None, _) => {}
        }
        open = weight.map(|w| (w, t.at));
    }
    if let Some((weight, from)) = open {
        segments.push(Segment {
            weight,
            from,
            to: until,
        });
    }
    segments
}

/// Of the answers that named a version, how many `version` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Share {
    pub answered: usize,
    pub of_version: usize,
}

impl Share {
    pub(crate) fn percent(self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.of_version as f64 * 100.0 / self.answered as f64
        }
    }
}

/// `version`'s share of the answers to requests sent in `[from, to)` (the client's clock).
pub(crate) fn share(records: &[Record], version: &str, from: Duration, to: Duration) -> Share {
    let mut share = Share::default();
    for record in records.iter().filter(|r| r.sent >= from && r.sent < to) {
        if let Some(answered_by) = record.version() {
            share.answered += 1;
            if answered_by == version {
                share.of_version += 1;
            }
        }
    }
    share
}

/// What the client heard from an aborted version after its Fail verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Drain {
    /// From the verdict to the end of its last answer; `None` when none ended after it.
    pub last_answer: Option<Duration>,
    /// Its answers that ended after the verdict.
    pub answers: usize,
    /// Of those, its 5xx: bad answers a user got after Sluice knew.
    pub errors: usize,
}

pub(crate) fn drain(records: &[Record], version: &str, verdict: Duration) -> Drain {
    let mut drain = Drain::default();
    let after = records
        .iter()
        .filter(|r| r.version() == Some(version) && r.ended() >= verdict);
    for record in after {
        drain.answers += 1;
        if matches!(record.outcome, Outcome::Answered { status, .. } if status >= 500) {
            drain.errors += 1;
        }
        let since = record.ended().saturating_sub(verdict);
        drain.last_answer = Some(drain.last_answer.map_or(since, |last| last.max(since)));
    }
    drain
}

/// From the client's first answer on (before it, Traefik had not yet routed the host): how
/// many requests, and how many failed in the data plane (no answer, 502/503/504).
pub(crate) fn failures(records: &[Record]) -> (usize, usize) {
    let Some(first) = records.iter().position(|r| r.version().is_some()) else {
        return (0, 0);
    };
    let counted = &records[first..];
    (counted.len(), counted.iter().filter(|r| r.failed()).count())
}

impl Report {
    fn runs_of(&self, hash: &str) -> impl Iterator<Item = &AnalysisRun> {
        self.runs.iter().filter(move |run| {
            run.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
                .map(String::as_str)
                == Some(hash)
        })
    }

    fn steps(&self, out: &mut String, console: &Console, shipped: &Shipped) {
        let _ = writeln!(
            out,
            "  {}  shipped: {}",
            console.offset(shipped.shipped_at),
            shipped.describe
        );
        for t in self.transitions.iter().filter(|t| {
            t.at >= shipped.shipped_at
                && t.at <= shipped.ended_at + Duration::from_secs(1)
                && t.updated.as_deref() == Some(shipped.hash.as_str())
        }) {
            let _ = writeln!(out, "  {}  {}", console.offset(t.at), t.describe());
        }
    }

    /// The share `shipped` got at each weight, at the client.
    fn shares(&self, out: &mut String, console: &Console, shipped: &Shipped, until: SystemTime) {
        let segments = segments(&self.transitions, shipped, until);
        let mut lines = Vec::new();
        for segment in &segments {
            let from = self.client.offset(segment.from) + SETTLE;
            let to = self.client.offset(segment.to);
            let measured = share(&self.client.records, &shipped.version, from, to);
            if measured.answered == 0 {
                continue;
            }
            let p = f64::from(segment.weight) / 100.0;
            let sigma3 = 300.0 * (p * (1.0 - p) / measured.answered as f64).sqrt();
            let judged = if within_binomial(measured.of_version, measured.answered, p, 3.0) {
                "within"
            } else {
                "outside"
            };
            lines.push(format!(
                "    weight {:>3}%  {}..{}  {} answered {:>5} of {:>5} ({:>5.1}%; {judged} 3σ, ±{sigma3:.1} points)",
                segment.weight,
                console.offset(segment.from),
                console.offset(segment.to),
                shipped.version,
                measured.of_version,
                measured.answered,
                measured.percent(),
            ));
        }
        if lines.is_empty() {
            let _ = writeln!(
                out,
                "  share at the client: no answers while it was the canary"
            );
            return;
        }
        let _ = writeln!(
            out,
            "  share at the client, per weight Sluice set (answers from {} s after each change):",
            SETTLE.as_secs_f64()
        );
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }

    /// The failing measurement of v3's runs, if any: (run, metric, when, message, evidence).
    fn failing(&self) -> Option<(String, String, SystemTime, String, analysis::Evidence)> {
        self.runs_of(&self.v3.hash).find_map(|run| {
            let status = run.status.as_ref()?;
            status.metric_results.iter().find_map(|metric| {
                let m = metric
                    .measurements
                    .iter()
                    .find(|m| m.verdict() == Verdict::Fail)?;
                Some((
                    run.metadata.name.clone().unwrap_or_default(),
                    metric.name.clone(),
                    m.finished_at.0,
                    m.judgement.message.clone(),
                    m.judgement.evidence.clone(),
                ))
            })
        })
    }

    fn analysis(&self, out: &mut String, console: &Console, hash: &str) {
        for run in self.runs_of(hash) {
            let Some(status) = &run.status else { continue };
            let _ = writeln!(
                out,
                "  analysis {} {:?}{}",
                run.metadata.name.as_deref().unwrap_or_default(),
                status.phase,
                if status.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", status.message)
                }
            );
            for metric in &status.metric_results {
                let t = metric.tally;
                let _ = writeln!(
                    out,
                    "    {}: {} looks — {} Pass, {} Fail, {} Inconclusive, {} Error",
                    metric.name,
                    t.total(),
                    t.passed,
                    t.failed,
                    t.inconclusive,
                    t.errors
                );
                for m in &metric.measurements {
                    let e = &m.judgement.evidence;
                    let e_value = e
                        .e_value
                        .map(|v| format!("  e-value {v:.3}"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "      {}  {:<12}{e_value}  {}",
                        console.offset(m.finished_at.0),
                        format!("{:?}", m.verdict()),
                        m.judgement.message
                    );
                }
            }
        }
    }

    pub(crate) fn render(&self, console: &Console) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n══ Summary ══");
        let _ = writeln!(
            out,
            "{} ({}) became stable {:.1} s after it shipped:",
            self.v2.version,
            self.v2.hash,
            seconds(self.v2.shipped_at, self.v2.ended_at)
        );
        self.steps(&mut out, console, &self.v2);
        self.shares(&mut out, console, &self.v2, self.v2.ended_at);
        self.analysis(&mut out, console, &self.v2.hash);

        let _ = writeln!(
            out,
            "\n{} ({}) was aborted by Sluice {:.1} s after it shipped:",
            self.v3.version,
            self.v3.hash,
            seconds(self.v3.shipped_at, self.v3.ended_at)
        );
        self.steps(&mut out, console, &self.v3);
        let failing = self.failing();
        let until = failing
            .as_ref()
            .map_or(self.v3.ended_at, |f| f.2.min(self.v3.ended_at));
        self.shares(&mut out, console, &self.v3, until);
        self.analysis(&mut out, console, &self.v3.hash);

        match failing {
            Some((run, metric, at, message, e)) => {
                let _ = writeln!(
                    out,
                    "  the failing verdict ({run}, metric {metric}, at {}):",
                    console.offset(at)
                );
                let _ = writeln!(out, "    {message}");
                let rate = |events: Option<f64>, samples: Option<u64>| match (events, samples) {
                    (Some(events), Some(n)) if n > 0 => format!(
                        "{events:.0} errors in {n} requests ({:.2}%)",
                        events * 100.0 / n as f64
                    ),
                    (Some(events), Some(_)) => format!("{events:.0} errors in 0 requests"),
                    _ => "no counts".into(),
                };
                let _ = writeln!(
                    out,
                    "    evidence: canary {}, stable {}; e-value {} against a threshold of {} (1/α)",
                    rate(e.canary_events, e.canary_samples),
                    rate(e.baseline_events, e.baseline_samples),
                    e.e_value.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                    e.e_value_threshold
                        .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
                );
                let verdict = self.client.offset(at);
                let drained = drain(&self.client.records, &self.v3.version, verdict);
                match drained.last_answer {
                    Some(last) => {
                        let _ = writeln!(
                            out,
                            "  at the client: {}'s last answer came {:.3} s after the Fail verdict; after the verdict it answered {} requests, {} of them errors (5xx)",
                            self.v3.version,
                            last.as_secs_f64(),
                            drained.answers,
                            drained.errors
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  at the client: {} gave no answer after the Fail verdict",
                            self.v3.version
                        );
                    }
                }
            }
            None => {
                let _ = writeln!(out, "  (no Fail measurement found in v3's analysis runs)");
            }
        }
        if let Some((sum, count)) = self.controller_abort_latency
            && count > 0.0
        {
            let _ = writeln!(
                out,
                "  the controller's own measure (sluice_abort_latency_seconds, Fail verdict to traffic on stable written): {:.3} s{}",
                sum / count,
                if count > 1.0 {
                    format!(" on average over {count} aborts")
                } else {
                    String::new()
                }
            );
        }

        let _ = writeln!(
            out,
            "\nthe local control plane came up in {:.1} s",
            self.control_plane_up.as_secs_f64()
        );
        let client = &self.client;
        let _ = writeln!(
            out,
            "the client ({:.0} req/s through Traefik at {}, Host {}; {}):",
            client.rate,
            client.target,
            client.host,
            client.router.describe()
        );
        let tally = Tally::of(&client.records);
        let versions: BTreeMap<&String, usize> =
            tally.by_version.iter().map(|(v, n)| (v, *n)).collect();
        for (version, answers) in versions {
            let _ = writeln!(
                out,
                "  {version}: {answers} answers, {} of them 5xx (the version's own errors)",
                tally.server_errors_of(version)
            );
        }
        let (counted, failed) = failures(&client.records);
        let _ = writeln!(
            out,
            "  failed in the data plane (no answer, 502, 503, 504) from the first answer on: {failed} of {counted} requests{}",
            if client.dropped > 0 {
                format!("; {} ticks dropped (too many in flight)", client.dropped)
            } else {
                String::new()
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_secs_f64(s)
    }

    fn transition(s: f64, weight: Option<i32>, stable: &str, updated: &str) -> Transition {
        Transition {
            at: at(s),
            phase: "Progressing".into(),
            step: None,
            step_description: None,
            steps: 6,
            weight,
            stable: Some(stable.into()),
            updated: Some(updated.into()),
            aborted: false,
            message: String::new(),
        }
    }

    fn shipped(version: &str, hash: &str, s: f64) -> Shipped {
        Shipped {
            version: version.into(),
            describe: String::new(),
            hash: hash.into(),
            shipped_at: at(s),
            ended_at: at(s + 100.0),
        }
    }

    fn answer(sent_ms: u64, status: u16, version: Option<&str>) -> Record {
        Record {
            sent: Duration::from_millis(sent_ms),
            took: Duration::from_millis(5),
            outcome: Outcome::Answered {
                status,
                version: version.map(str::to_owned),
            },
        }
    }

    #[test]
    fn a_segment_lasts_from_one_weight_to_the_next_and_ends_with_the_canary() {
        let mut aborted = transition(40.0, Some(0), "h1", "h2");
        aborted.aborted = true;
        let transitions = [
            transition(5.0, None, "h1", "h1"),
            transition(10.0, Some(0), "h1", "h2"),
            transition(11.0, Some(20), "h1", "h2"),
            // The pause after setWeight: same weight, one stretch.
            transition(12.0, Some(20), "h1", "h2"),
            transition(22.0, Some(50), "h1", "h2"),
            aborted,
            transition(50.0, Some(100), "h1", "h9"),
        ];
        let segments = segments(&transitions, &shipped("v2", "h2", 9.0), at(60.0));
        let found: Vec<(i32, SystemTime, SystemTime)> =
            segments.iter().map(|s| (s.weight, s.from, s.to)).collect();
        assert_eq!(
            found,
            vec![
                (0, at(10.0), at(11.0)),
                (20, at(11.0), at(22.0)),
                (50, at(22.0), at(40.0)),
            ]
        );
    }

    #[test]
    fn the_last_segment_ends_at_the_limit_and_promotion_ends_one() {
        let transitions = [
            transition(10.0, Some(100), "h1", "h2"),
            transition(20.0, Some(100), "h2", "h2"),
        ];
        let promoted = segments(&transitions, &shipped("v2", "h2", 9.0), at(60.0));
        assert_eq!(
            promoted,
            vec![Segment {
                weight: 100,
                from: at(10.0),
                to: at(20.0)
            }]
        );
        // Cut at the verdict: what came after is not the weight's doing.
        let cut = segments(&transitions[..1], &shipped("v2", "h2", 9.0), at(15.0));
        assert_eq!(cut[0].to, at(15.0));
    }

    #[test]
    fn a_share_counts_answers_that_named_a_version_in_the_window() {
        let records = [
            answer(900, 200, Some("v2")),
            answer(1000, 200, Some("v1")),
            answer(1100, 200, Some("v2")),
            answer(1200, 500, Some("v2")),
            // Traefik's own 503 names no version: not an answer of either.
            answer(1300, 503, None),
            answer(1400, 200, Some("v1")),
            answer(2000, 200, Some("v2")),
        ];
        let measured = share(
            &records,
            "v2",
            Duration::from_millis(1000),
            Duration::from_millis(2000),
        );
        assert_eq!(
            measured,
            Share {
                answered: 4,
                of_version: 2
            }
        );
        assert!((measured.percent() - 50.0).abs() < 1e-9);
        assert_eq!(Share::default().percent(), 0.0);
    }

    #[test]
    fn the_drain_is_the_aborted_versions_last_answer_after_the_verdict() {
        let records = [
            answer(9_000, 500, Some("v3")),
            // In flight at the verdict: served after it.
            answer(9_998, 500, Some("v3")),
            answer(10_100, 200, Some("v3")),
            answer(10_200, 200, Some("v2")),
            answer(10_400, 500, Some("v3")),
            answer(11_000, 200, Some("v2")),
        ];
        let drained = drain(&records, "v3", Duration::from_secs(10));
        assert_eq!(
            drained,
            Drain {
                last_answer: Some(Duration::from_millis(405)),
                answers: 3,
                errors: 2,
            }
        );
        assert_eq!(
            drain(&records, "v3", Duration::from_secs(20)),
            Drain::default()
        );
    }

    #[test]
    fn failures_count_from_the_first_answer() {
        let refused = Record {
            sent: Duration::from_millis(0),
            took: Duration::from_millis(1),
            outcome: Outcome::Failed {
                error: "could not connect".into(),
            },
        };
        let records = [
            // Before the route exists: Traefik's 404 and 503 are not yet the site.
            answer(0, 404, None),
            answer(10, 503, None),
            answer(20, 200, Some("v1")),
            answer(30, 502, None),
            answer(40, 500, Some("v1")),
            Record {
                sent: Duration::from_millis(50),
                ..refused
            },
        ];
        assert_eq!(failures(&records), (4, 2));
        assert_eq!(failures(&records[..2]), (0, 0));
    }
}
