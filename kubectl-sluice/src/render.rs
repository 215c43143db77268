//! Text for people: the rollout view, the list, lint reports. Colour only on a terminal, and
//! never when NO_COLOR is set.

use std::fmt::Write as _;

use api::{Action, AnalysisRunView, RolloutView};

#[derive(Clone, Copy)]
pub(crate) struct Style {
    pub(crate) colour: bool,
}

impl Style {
    pub(crate) fn for_stdout(terminal: bool) -> Self {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            colour: terminal && !no_colour,
        }
    }

    fn paint(self, text: &str, code: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// A phase or verdict, coloured by what it means.
    fn state(self, text: &str) -> String {
        let code = match text {
            "Healthy" | "Successful" | "Pass" => "32",
            "Aborted" | "Degraded" | "Failed" | "Error" | "Fail" => "31",
            "Paused" | "Inconclusive" => "33",
            _ => "36",
        };
        self.paint(text, code)
    }

    fn dim(self, text: &str) -> String {
        self.paint(text, "2")
    }

    fn bold(self, text: &str) -> String {
        self.paint(text, "1")
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Pads `shown` (which may carry colour codes) to the width of `plain`'s column.
fn pad(shown: String, plain: &str, width: usize) -> String {
    let fill = width.saturating_sub(plain.chars().count());
    format!("{shown}{}", " ".repeat(fill))
}

pub(crate) fn table(views: &[RolloutView], style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<14} {:<12} {:>5} {:>6}  MESSAGE",
        "NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT"
    );
    for v in views {
        let _ = writeln!(
            out,
            "{:<24} {:<14} {} {:>5} {:>6}  {}",
            v.name,
            v.strategy,
            pad(style.state(&v.phase), &v.phase, 12),
            or_dash(v.current_step),
            or_dash(v.weight),
            v.message
        );
    }
    out
}

pub(crate) fn rollout(v: &RolloutView, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}  {}/{}", style.bold("Rollout"), v.namespace, v.name);
    let router = v
        .traffic_router
        .as_deref()
        .map(|r| format!(" (traffic: {r})"))
        .unwrap_or_default();
    let _ = writeln!(out, "  Strategy:  {}{router}", v.strategy);
    let mut flags = Vec::new();
    if v.paused {
        flags.push("spec.paused");
    }
    if v.observed_generation < v.generation {
        flags.push("spec changed, not yet seen");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(", "))
    };
    let _ = writeln!(
        out,
        "  Phase:     {}{flags}  {}",
        style.state(&v.phase),
        v.message
    );
    if let Some(weight) = v.weight {
        let finished = v.stable_revision.is_some() && v.stable_revision == v.updated_revision;
        if finished {
            let _ = writeln!(out, "  Traffic:   stable {weight}%");
        } else {
            let _ = writeln!(
                out,
                "  Traffic:   canary {weight}%, stable {}%",
                100 - weight
            );
        }
    }
    if !v.steps.is_empty() {
        let _ = writeln!(out, "  Steps:");
        for step in &v.steps {
            let (mark, text) = match v.current_step {
                Some(current) if step.index < current => ("✓", style.dim(&step.description)),
                Some(current)
                    if step.index == current && v.stable_revision != v.updated_revision =>
                {
                    ("▶", style.bold(&step.description))
                }
                _ => (" ", step.description.clone()),
            };
            let _ = writeln!(out, "    {mark} {:>2}  {text}", step.index);
        }
    }
    if !v.revisions.is_empty() {
        let _ = writeln!(out, "  Revisions:");
        let _ = writeln!(
            out,
            "    {:>4}  {:<11} {:<8} {:>13}  IMAGES",
            "REV", "HASH", "ROLE", "READY/DESIRED"
        );
        for r in &v.revisions {
            let pods = format!("{}/{}", r.ready, r.desired);
            let _ = writeln!(
                out,
                "    {:>4}  {:<11} {:<8} {:>13}  {}",
                or_dash(r.revision),
                r.hash,
                r.role,
                pods,
                r.images.join(" ")
            );
        }
    }
    if !v.analysis_runs.is_empty() {
        let _ = writeln!(out, "  Analysis:");
        for run in &v.analysis_runs {
            analysis_run(&mut out, run, style);
        }
    }
    out.push('\n');
    out
}

fn analysis_run(out: &mut String, run: &AnalysisRunView, style: Style) {
    let _ = writeln!(
        out,
        "    {} ({}) {}  {}",
        run.name,
        run.kind,
        style.state(&run.phase),
        run.message
    );
    for m in &run.metrics {
        let dry = if m.dry_run { " (dry run)" } else { "" };
        let _ = writeln!(
            out,
            "      {}{dry} {}: {} pass, {} fail, {} inconclusive, {} error",
            m.name,
            style.state(&m.phase),
            m.passed,
            m.failed,
            m.inconclusive,
            m.errors
        );
        if let Some(latest) = &m.latest {
            let _ = writeln!(
                out,
                "        latest {} at {}: {}",
                style.state(&latest.verdict),
                latest.finished_at,
                latest.message
            );
            let evidence = evidence_line(&latest.evidence);
            if !evidence.is_empty() {
                let _ = writeln!(out, "        {}", style.dim(&evidence));
            }
        }
    }
}

/// `key=value` pairs of a judge's evidence, numbers to four significant digits.
fn evidence_line(evidence: &serde_json::Value) -> String {
    let Some(fields) = evidence.as_object() else {
        return String::new();
    };
    fields
        .iter()
        .map(|(key, value)| match value {
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(x) if n.is_f64() => format!("{key}={}", significant(x)),
                _ => format!("{key}={n}"),
            },
            serde_json::Value::String(s) => format!("{key}={s}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn significant(x: f64) -> String {
    if x == 0.0 || (1e-3..1e6).contains(&x.abs()) {
        let text = format!("{x:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{x:.3e}")
    }
}

/// What the CLI asked for, as a person says it.
pub(crate) fn requested(action: &Action) -> String {
    match action {
        Action::Promote { full: true, .. } => "promoted fully (remaining steps skipped)".into(),
        Action::Promote { .. } => "current step promoted".into(),
        Action::Abort => "abort requested".into(),
        Action::Retry => "retry requested".into(),
        Action::Pause => "paused".into(),
        Action::Resume => "resumed".into(),
        Action::Undo {
            to_revision: Some(n),
        } => format!("template set back to revision {n}"),
        Action::Undo { to_revision: None } => "template set back to the previous revision".into(),
    }
}

pub(crate) fn lint(
    file: &str,
    reports: &[rollout_controller::lint::Report],
    style: Style,
) -> String {
    use rollout_controller::lint::Severity;
    let mut out = String::new();
    for report in reports {
        for line in report.to_string().lines() {
            let line = if line.ends_with(": ok") {
                style.paint(line, "32")
            } else if line.contains(": warning: ") {
                style.paint(line, "33")
            } else {
                style.paint(line, "31")
            };
            let _ = writeln!(out, "{file}: {line}");
        }
    }
    let findings = reports.iter().flat_map(|r| r.findings.iter());
    let errors = findings
        .clone()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.filter(|f| f.severity == Severity::Warning).count();
    let _ = writeln!(out, "{file}: {errors} errors, {warnings} warnings");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{MeasurementView, MetricView, RevisionView, StepView};
    use serde_json::json;

    fn paused_canary() -> RolloutView {
        RolloutView {
            namespace: "shop".into(),
            name: "web".into(),
            generation: 3,
            observed_generation: 3,
            strategy: "canary".into(),
            phase: "Paused".into(),
            message: "step 2/4: pause (until promoted)".into(),
            current_step: Some(1),
            steps: ["setWeight 25", "pause (until promoted)", "setWeight 50"]
                .iter()
                .zip(0..)
                .map(|(d, index)| StepView {
                    index,
                    description: (*d).into(),
                    ..StepView::default()
                })
                .collect(),
            weight: Some(25),
            traffic_router: Some("nginx".into()),
            stable_revision: Some("aaaa".into()),
            updated_revision: Some("bbbb".into()),
            revisions: vec![
                RevisionView {
                    revision: Some(2),
                    hash: "bbbb".into(),
                    role: "canary".into(),
                    images: vec!["app=web:2".into()],
                    desired: 1,
                    ready: 1,
                    available: 1,
                    ..RevisionView::default()
                },
                RevisionView {
                    revision: Some(1),
                    hash: "aaaa".into(),
                    role: "stable".into(),
                    images: vec!["app=web:1".into()],
                    desired: 4,
                    ready: 4,
                    available: 4,
                    ..RevisionView::default()
                },
            ],
            analysis_runs: vec![AnalysisRunView {
                name: "web-bbbb-bg-1".into(),
                kind: "background".into(),
                phase: "Running".into(),
                message: String::new(),
                metrics: vec![MetricView {
                    name: "errors".into(),
                    phase: "Running".into(),
                    passed: 3,
                    latest: Some(MeasurementView {
                        verdict: "Pass".into(),
                        message: "e-value 0.8 below 20".into(),
                        finished_at: "2026-12-01T07:00:00.000Z".into(),
                        evidence: json!({"eValue": 0.81234567, "canarySamples": 120}),
                    }),
                    ..MetricView::default()
                }],
                ..AnalysisRunView::default()
            }],
            ..RolloutView::default()
        }
    }

    #[test]
    fn the_view_marks_the_current_step_and_shows_pods_and_evidence() {
        let text = rollout(&paused_canary(), Style { colour: false });
        assert!(text.contains("✓  0  setWeight 25"), "{text}");
        assert!(text.contains("▶  1  pause (until promoted)"), "{text}");
        assert!(text.contains("      2  setWeight 50"), "{text}");
        assert!(text.contains("canary 25%, stable 75%"), "{text}");
        assert!(text.contains("bbbb") && text.contains("1/1") && text.contains("4/4"));
        assert!(text.contains("eValue=0.8123") && text.contains("canarySamples=120"));
        assert!(!text.contains('\x1b'), "no colour off a terminal: {text}");
    }

    #[test]
    fn a_finished_rollout_shows_all_traffic_on_stable() {
        let mut finished = paused_canary();
        finished.phase = "Healthy".into();
        finished.updated_revision = finished.stable_revision.clone();
        finished.weight = Some(100);
        let text = rollout(&finished, Style { colour: false });
        assert!(text.contains("Traffic:   stable 100%\n"), "{text}");
        let table = table(&[finished], Style { colour: false });
        let row = table.lines().nth(1).unwrap_or_default();
        assert!(row.contains("   100  "), "{table}");
    }

    #[test]
    fn colour_only_when_asked() {
        let text = table(&[paused_canary()], Style { colour: true });
        assert!(text.contains("\x1b[33mPaused\x1b[0m"), "{text}");
        let plain = table(&[paused_canary()], Style { colour: false });
        assert!(!plain.contains('\x1b'));
        // Colour codes do not shift the columns.
        let column = |t: &str| t.lines().nth(1).map(|l| l.find("    1").unwrap_or(0));
        assert_eq!(
            column(&text.replace("\x1b[33m", "").replace("\x1b[0m", "")),
            column(&plain)
        );
    }

    #[test]
    fn numbers_in_evidence_are_short() {
        assert_eq!(significant(0.012345678), "0.0123");
        assert_eq!(significant(20.0), "20");
        assert_eq!(significant(1.2e-7), "1.200e-7");
    }
}
