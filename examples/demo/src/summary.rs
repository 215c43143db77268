//! The closing summary: the steps v2 went through, v3's analysis with the failing verdict's
//! evidence, how long the abort took, and what the load generator saw.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use analysis::Verdict;
use rollout_controller::crd::POD_TEMPLATE_HASH_LABEL;
use rollout_controller::crd::analysis::AnalysisRun;

use crate::console::Console;
use crate::loadgen::{RoutingChange, VersionCounts};
use crate::narrate::Transition;

/// One shipped version and what became of it.
pub(crate) struct Shipped {
    pub version: String,
    pub describe: String,
    pub hash: String,
    pub shipped_at: SystemTime,
    /// When the demo saw it Healthy (v2) or aborted (v3).
    pub ended_at: SystemTime,
}

pub(crate) struct Report {
    pub v2: Shipped,
    pub v3: Shipped,
    pub transitions: Vec<Transition>,
    pub runs: Vec<AnalysisRun>,
    pub routing: Vec<RoutingChange>,
    /// The controller's `sluice_abort_latency_seconds` histogram: sum and count.
    pub controller_abort_latency: Option<(f64, f64)>,
    pub load: BTreeMap<String, VersionCounts>,
    pub rate: f64,
    pub no_endpoint: u64,
    pub dropped: u64,
    pub control_plane_up: Duration,
}

/// Seconds between two instants, negative when `to` is earlier.
fn seconds(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
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
        self.analysis(&mut out, console, &self.v2.hash);

        let _ = writeln!(
            out,
            "\n{} ({}) was aborted by Sluice {:.1} s after it shipped:",
            self.v3.version,
            self.v3.hash,
            seconds(self.v3.shipped_at, self.v3.ended_at)
        );
        self.steps(&mut out, console, &self.v3);
        self.analysis(&mut out, console, &self.v3.hash);

        match self.failing() {
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
                // The data plane's view: when the load generator first routed nothing to the
                // canary after the verdict.
                let off_canary = self
                    .routing
                    .iter()
                    .filter(|c| c.at >= self.v3.shipped_at)
                    .find(|c| {
                        seconds(at, c.at) >= -1.0
                            && c.routing.canary.as_ref().is_none_or(|r| r.weight == 0)
                    });
                match off_canary {
                    Some(change) => {
                        let _ = writeln!(
                            out,
                            "  abort latency: {:.2} s from the Fail verdict ({}) to the canary Ingress gone, as the load generator's watch saw it ({})",
                            seconds(at, change.at),
                            console.offset(at),
                            console.offset(change.at)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  abort latency: the canary Ingress was not seen to go"
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
                "  the controller's own measure (sluice_abort_latency_seconds, Fail verdict to traffic on stable): {:.3} s{}",
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
        let _ = writeln!(
            out,
            "load generator ({:.0} req/s to the pods' IPs):",
            self.rate
        );
        for (version, counts) in &self.load {
            let _ = writeln!(
                out,
                "  {version}: {} requests, {} answered 5xx, {} unanswered",
                counts.sent, counts.errors, counts.failed
            );
        }
        if self.no_endpoint > 0 || self.dropped > 0 {
            let _ = writeln!(
                out,
                "  {} requests found no ready endpoint (NGINX would answer 503), {} were dropped (too many in flight)",
                self.no_endpoint, self.dropped
            );
        }
        out
    }
}
