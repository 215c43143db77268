//! What a reconcile of an AnalysisRun makes of its looks: given the status the run had, what
//! each look brought back and the one `now` of the reconcile, the new status (measurements,
//! tallies, phases, message, timestamps) and when the run wants to look next. Pure, so that every
//! limit and timestamp is decided here and tested without a cluster or a provider; `mod.rs`
//! reads the Secrets, asks the providers and writes the result.

use std::collections::BTreeMap;

use analysis::lifecycle::{MetricOutcome, Phase, metric_phase, next_measurement_at, run_phase};
use analysis::measure::Outcome;
use analysis::{Judgement, Measurement, MetricPlan, Timestamp, Verdict};

use crate::crd::analysis::{AnalysisRunSpec, AnalysisRunStatus, MEASUREMENT_HISTORY, MetricResult};

/// A metric of the run, ready to measure, or why it cannot be.
pub(crate) struct Metric {
    pub(crate) plan: Result<MetricPlan, String>,
    pub(crate) result: MetricResult,
}

/// What one look at a metric brought back.
pub(crate) struct Look {
    /// The metric's index in the run's spec.
    pub(crate) metric: usize,
    pub(crate) outcome: Outcome,
    /// When the provider answered: the next look is due an interval after it.
    pub(crate) finished_at: Timestamp,
}

/// The status after a reconcile, and when the run wants to look again.
#[derive(Debug, PartialEq)]
pub(crate) struct Folded {
    pub(crate) status: AnalysisRunStatus,
    /// The earliest next look of a metric still measuring; `None` when none is.
    pub(crate) next_look_at: Option<Timestamp>,
    /// The instant the status describes: `now`, or the last look's answer if that came later.
    /// A run that ends completes then, and the wait for the next look counts from it.
    pub(crate) as_of: Timestamp,
}

/// When the run started: at the first reconcile that saw it.
pub(crate) fn started_at(previous: &AnalysisRunStatus, now: Timestamp) -> Timestamp {
    previous.started_at.unwrap_or(now)
}

/// The run's metrics with the arguments resolved (or why they could not be), each with its
/// progress so far.
pub(crate) fn metrics(
    spec: &AnalysisRunSpec,
    previous: &AnalysisRunStatus,
    args: &Result<BTreeMap<String, String>, String>,
) -> Vec<Metric> {
    spec.metrics
        .iter()
        .map(|metric| {
            let dry_run = spec.dry_run.iter().any(|d| d.metric_name == metric.name);
            let result = previous
                .metric_results
                .iter()
                .find(|r| r.name == metric.name)
                .cloned()
                .unwrap_or_else(|| MetricResult::new(&metric.name, dry_run));
            let plan = match args {
                Ok(values) => metric
                    .with_args(values)
                    .and_then(|s| s.plan())
                    .map_err(|e| e.to_string()),
                Err(why) => Err(why.clone()),
            };
            Metric { plan, result }
        })
        .collect()
}

/// The metrics to look at now, by index: those that can run, still measure and are due.
pub(crate) fn due(
    metrics: &[Metric],
    started_at: Timestamp,
    stopped: bool,
    now: Timestamp,
) -> Vec<usize> {
    if stopped {
        return Vec::new();
    }
    metrics
        .iter()
        .enumerate()
        .filter(|(_, metric)| {
            let Ok(plan) = &metric.plan else { return false };
            !metric.result.phase.is_terminal()
                && next_measurement_at(
                    &plan.limits,
                    started_at,
                    metric.result.last_look_at,
                    metric.result.phase,
                )
                .is_some_and(|at| at <= now)
        })
        .map(|(index, _)| index)
        .collect()
}

/// Folds the looks into the metrics and decides the run. A run that has already finished stays
/// as it is.
pub(crate) fn fold(
    previous: &AnalysisRunStatus,
    mut metrics: Vec<Metric>,
    looks: Vec<Look>,
    stopped: bool,
    now: Timestamp,
) -> Folded {
    if previous.phase.is_terminal() {
        return Folded {
            status: previous.clone(),
            next_look_at: None,
            as_of: now,
        };
    }
    let started_at = started_at(previous, now);
    let as_of = looks
        .iter()
        .map(|l| l.finished_at)
        .fold(now, Timestamp::max);
    for look in looks {
        let Some(metric) = metrics.get_mut(look.metric) else {
            continue;
        };
        let result = &mut metric.result;
        result.carry = look.outcome.carry;
        result.last_look_at = Some(look.finished_at);
        if let Some(judgement) = look.outcome.judgement {
            result.tally.add(judgement.verdict);
            result.measurements.push(Measurement {
                started_at: now,
                finished_at: look.finished_at,
                judgement,
            });
            let excess = result
                .measurements
                .len()
                .saturating_sub(MEASUREMENT_HISTORY);
            result.measurements.drain(..excess);
        }
    }

    let mut status = AnalysisRunStatus {
        phase: Phase::Pending,
        message: String::new(),
        started_at: Some(started_at),
        completed_at: None,
        metric_results: Vec::new(),
    };
    let mut next_look_at: Option<Timestamp> = None;
    for mut metric in metrics {
        match &metric.plan {
            Ok(plan) => {
                metric.result.phase = metric_phase(&plan.limits, &metric.result.tally, stopped);
                if let Some(at) = next_measurement_at(
                    &plan.limits,
                    started_at,
                    metric.result.last_look_at,
                    metric.result.phase,
                ) {
                    next_look_at = Some(next_look_at.map_or(at, |n| n.min(at)));
                }
            }
            Err(why) => {
                // A spec that cannot run (or a Secret that cannot be read) is an error of the
                // metric that never counts as data.
                if !metric.result.phase.is_terminal() {
                    let judgement = Judgement::error(why.clone());
                    metric.result.tally.add(Verdict::Error);
                    metric.result.measurements.push(Measurement {
                        started_at: now,
                        finished_at: now,
                        judgement,
                    });
                }
                metric.result.phase = Phase::Error;
            }
        }
        status.metric_results.push(metric.result);
    }
    let outcomes: Vec<MetricOutcome> = status
        .metric_results
        .iter()
        .map(|r| MetricOutcome {
            phase: r.phase,
            dry_run: r.dry_run,
        })
        .collect();
    status.phase = run_phase(&outcomes);
    status.message = run_message(&status);
    if status.phase.is_terminal() {
        status.completed_at = Some(as_of);
    }
    Folded {
        status,
        next_look_at,
        as_of,
    }
}

/// One line saying which metric decided and why, or how far the run is.
fn run_message(status: &AnalysisRunStatus) -> String {
    let last_message = |result: &MetricResult| {
        result
            .measurements
            .last()
            .map(|m| m.judgement.message.clone())
            .unwrap_or_default()
    };
    match status.phase {
        Phase::Failed | Phase::Error | Phase::Inconclusive => status
            .metric_results
            .iter()
            .find(|r| !r.dry_run && r.phase == status.phase)
            .map(|r| {
                let t = &r.tally;
                format!(
                    "metric {} {:?} ({} passed, {} failed, {} inconclusive, {} errors): {}",
                    r.name,
                    r.phase,
                    t.passed,
                    t.failed,
                    t.inconclusive,
                    t.errors,
                    last_message(r)
                )
            })
            .unwrap_or_else(|| format!("{:?}", status.phase)),
        Phase::Successful => format!("{} metrics passed", status.metric_results.len()),
        Phase::Pending | Phase::Running => {
            let parts: Vec<String> = status
                .metric_results
                .iter()
                .map(|r| format!("{}: {} measured", r.name, r.tally.total()))
                .collect();
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use analysis::Evidence;
    use serde_json::json;

    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// A run of one metric, `errors`, looked at every 30s, with the limits given.
    fn run(limits: serde_json::Value) -> AnalysisRunSpec {
        let mut metric = json!({
            "name": "errors",
            "interval": "30s",
            "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "up"}},
            "successCondition": "result[0] < 1",
        });
        for (key, value) in limits.as_object().into_iter().flatten() {
            metric[key] = value.clone();
        }
        serde_json::from_value(json!({"metrics": [metric]})).unwrap()
    }

    fn look(verdict: Verdict, message: &str, finished_at: Timestamp) -> Look {
        Look {
            metric: 0,
            outcome: Outcome {
                judgement: Some(Judgement::new(verdict, message, Evidence::default())),
                carry: None,
            },
            finished_at,
        }
    }

    /// One reconcile at `now` with the arguments resolved.
    fn reconcile(
        spec: &AnalysisRunSpec,
        previous: &AnalysisRunStatus,
        looks: Vec<Look>,
        now: Timestamp,
    ) -> Folded {
        let metrics = metrics(spec, previous, &Ok(BTreeMap::new()));
        fold(previous, metrics, looks, spec.terminate == Some(true), now)
    }

    /// Looks at the one metric with these verdicts, one reconcile each, 30s apart from t=1000;
    /// each answer comes back a second after its reconcile began.
    fn looks(spec: &AnalysisRunSpec, verdicts: &[Verdict]) -> Folded {
        let mut status = AnalysisRunStatus::default();
        let mut folded = None;
        for (i, verdict) in (0u64..).zip(verdicts) {
            let now = at(1000 + 30 * i);
            let answer = look(*verdict, "judged", at(1001 + 30 * i));
            let next = reconcile(spec, &status, vec![answer], now);
            status = next.status.clone();
            folded = Some(next);
        }
        folded.unwrap()
    }

    #[test]
    fn a_passing_look_is_appended_and_counted() {
        let spec = run(json!({"count": 3}));
        let previous = AnalysisRunStatus::default();
        let metrics = metrics(&spec, &previous, &Ok(BTreeMap::new()));
        assert_eq!(due(&metrics, at(1000), false, at(1000)), vec![0]);
        let folded = fold(
            &previous,
            metrics,
            vec![look(Verdict::Pass, "0.1 < 1", at(1001))],
            false,
            at(1000),
        );
        let status = &folded.status;
        assert_eq!(status.phase, Phase::Running);
        assert_eq!(status.message, "errors: 1 measured");
        assert_eq!(status.completed_at, None);
        let result = &status.metric_results[0];
        assert_eq!(result.phase, Phase::Running);
        assert_eq!(result.tally.passed, 1);
        assert_eq!(result.tally.total(), 1);
        assert_eq!(result.last_look_at, Some(at(1001)));
        assert_eq!(result.measurements.len(), 1);
        assert_eq!(result.measurements[0].judgement.message, "0.1 < 1");
        // The next look is an interval after the answer, and the wait counts from it.
        assert_eq!(folded.next_look_at, Some(at(1031)));
        assert_eq!(folded.as_of, at(1001));
    }

    #[test]
    fn failures_past_the_failure_limit_fail_the_run() {
        let spec = run(json!({"count": 5, "failureLimit": 1}));
        let once = looks(&spec, &[Verdict::Fail]);
        assert_eq!(once.status.phase, Phase::Running);
        let twice = looks(&spec, &[Verdict::Fail, Verdict::Fail]);
        assert_eq!(twice.status.phase, Phase::Failed);
        assert_eq!(twice.status.metric_results[0].phase, Phase::Failed);
        assert_eq!(
            twice.status.message,
            "metric errors Failed (0 passed, 2 failed, 0 inconclusive, 0 errors): judged"
        );
        assert_eq!(twice.status.completed_at, Some(at(1031)));
        assert_eq!(twice.next_look_at, None);
    }

    #[test]
    fn inconclusives_past_the_inconclusive_limit_make_the_run_inconclusive() {
        let spec = run(json!({"count": 5, "inconclusiveLimit": 1}));
        let once = looks(&spec, &[Verdict::Pass, Verdict::Inconclusive]);
        assert_eq!(once.status.phase, Phase::Running);
        let twice = looks(
            &spec,
            &[Verdict::Inconclusive, Verdict::Pass, Verdict::Inconclusive],
        );
        assert_eq!(twice.status.phase, Phase::Inconclusive);
        assert!(
            twice
                .status
                .message
                .starts_with("metric errors Inconclusive (1 passed, 0 failed, 2 inconclusive"),
            "{}",
            twice.status.message
        );
        assert!(twice.status.completed_at.is_some());
    }

    #[test]
    fn a_provider_error_counts_as_an_error_not_as_data() {
        let spec = run(json!({"count": 1}));
        let folded = looks(&spec, &[Verdict::Error]);
        let result = &folded.status.metric_results[0];
        assert_eq!(result.tally.errors, 1);
        assert_eq!(result.tally.consecutive_errors, 1);
        assert_eq!(result.tally.measured(), 0);
        assert_eq!(result.measurements[0].judgement.verdict, Verdict::Error);
        // `count` counts data: the metric goes on measuring.
        assert_eq!(result.phase, Phase::Running);
        assert_eq!(folded.status.phase, Phase::Running);
        assert_eq!(folded.next_look_at, Some(at(1031)));
    }

    #[test]
    fn errors_in_a_row_past_the_limit_end_the_run_in_error() {
        let spec = run(json!({"count": 5, "consecutiveErrorLimit": 1}));
        let broken = looks(&spec, &[Verdict::Error, Verdict::Pass, Verdict::Error]);
        assert_eq!(broken.status.phase, Phase::Running);
        assert_eq!(broken.status.metric_results[0].tally.consecutive_errors, 1);
        let streak = looks(&spec, &[Verdict::Pass, Verdict::Error, Verdict::Error]);
        assert_eq!(streak.status.phase, Phase::Error);
        assert_eq!(streak.status.metric_results[0].tally.consecutive_errors, 2);
        assert_eq!(streak.status.completed_at, Some(at(1061)));
    }

    #[test]
    fn a_run_that_has_finished_stays_as_it_is() {
        let spec = run(json!({"count": 1}));
        let finished = looks(&spec, &[Verdict::Pass]).status;
        assert_eq!(finished.phase, Phase::Successful);
        let again = reconcile(
            &spec,
            &finished,
            vec![look(Verdict::Fail, "late", at(2001))],
            at(2000),
        );
        assert_eq!(again.status, finished);
        assert_eq!(again.next_look_at, None);
    }

    #[test]
    fn reaching_count_makes_the_run_successful() {
        let spec = run(json!({"count": 2}));
        let one = looks(&spec, &[Verdict::Pass]);
        assert_eq!(one.status.phase, Phase::Running);
        let two = looks(&spec, &[Verdict::Pass, Verdict::Pass]);
        assert_eq!(two.status.phase, Phase::Successful);
        assert_eq!(two.status.metric_results[0].phase, Phase::Successful);
        assert_eq!(two.status.message, "1 metrics passed");
        assert_eq!(two.status.completed_at, Some(at(1031)));
        assert_eq!(two.next_look_at, None);
    }

    #[test]
    fn timestamps_are_taken_from_now() {
        let spec = run(json!({"count": 3}));
        let first = looks(&spec, &[Verdict::Pass]);
        assert_eq!(first.status.started_at, Some(at(1000)));
        assert_eq!(
            first.status.metric_results[0].measurements[0].started_at,
            at(1000)
        );
        assert_eq!(
            first.status.metric_results[0].measurements[0].finished_at,
            at(1001)
        );
        // Later reconciles keep when the run started; each measurement starts at its `now`.
        let second = reconcile(
            &spec,
            &first.status,
            vec![look(Verdict::Pass, "judged", at(1032))],
            at(1031),
        );
        assert_eq!(second.status.started_at, Some(at(1000)));
        assert_eq!(
            second.status.metric_results[0].measurements[1].started_at,
            at(1031)
        );
        // Nothing due before the next look: no measurement, the same instant for every time.
        let next = metrics(&spec, &second.status, &Ok(BTreeMap::new()));
        assert!(due(&next, at(1000), false, at(1061)).is_empty());
        assert_eq!(due(&next, at(1000), false, at(1062)), vec![0]);
        // A run stopped from outside completes at `now`, with what it has.
        let stopped = AnalysisRunSpec {
            terminate: Some(true),
            ..spec.clone()
        };
        let stopping = metrics(&stopped, &second.status, &Ok(BTreeMap::new()));
        assert!(due(&stopping, at(1000), true, at(1100)).is_empty());
        let ended = reconcile(&stopped, &second.status, Vec::new(), at(1040));
        assert_eq!(ended.status.phase, Phase::Successful);
        assert_eq!(ended.status.completed_at, Some(at(1040)));
        assert_eq!(ended.as_of, at(1040));
    }

    #[test]
    fn a_metric_that_cannot_run_is_an_error_at_now() {
        let spec = run(json!({"count": 3}));
        let previous = AnalysisRunStatus::default();
        let unresolved = Err("argument token: Secret api not found".to_owned());
        let metrics = metrics(&spec, &previous, &unresolved);
        assert!(due(&metrics, at(1000), false, at(1000)).is_empty());
        let folded = fold(&previous, metrics, Vec::new(), false, at(1000));
        let result = &folded.status.metric_results[0];
        assert_eq!(result.phase, Phase::Error);
        assert_eq!(result.tally.errors, 1);
        let measurement = &result.measurements[0];
        assert_eq!(
            (measurement.started_at, measurement.finished_at),
            (at(1000), at(1000))
        );
        assert_eq!(folded.status.phase, Phase::Error);
        assert_eq!(folded.status.completed_at, Some(at(1000)));
        assert!(
            folded
                .status
                .message
                .ends_with("argument token: Secret api not found")
        );
    }

    #[test]
    fn a_baseline_look_records_no_measurement_but_sets_the_pace() {
        let spec = run(json!({"count": 3}));
        let previous = AnalysisRunStatus::default();
        let baseline = Look {
            metric: 0,
            outcome: Outcome {
                judgement: None,
                carry: None,
            },
            finished_at: at(1001),
        };
        let folded = reconcile(&spec, &previous, vec![baseline], at(1000));
        let result = &folded.status.metric_results[0];
        assert!(result.measurements.is_empty());
        assert_eq!(result.last_look_at, Some(at(1001)));
        assert_eq!(folded.next_look_at, Some(at(1031)));
    }

    #[test]
    fn the_history_keeps_the_newest_measurements_and_the_tally_counts_all() {
        let spec = run(json!({"failureLimit": 100}));
        let verdicts = vec![Verdict::Fail; MEASUREMENT_HISTORY + 2];
        let folded = looks(&spec, &verdicts);
        let result = &folded.status.metric_results[0];
        assert_eq!(result.measurements.len(), MEASUREMENT_HISTORY);
        assert_eq!(result.tally.failed as usize, MEASUREMENT_HISTORY + 2);
        assert_eq!(result.measurements[0].started_at, at(1060));
    }
}
