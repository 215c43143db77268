//! The metric lifecycle, pure: when the next measurement is due, and what phase a metric and a
//! run are in, from the limits and the measurement history. No clock reads: `now` comes in.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::MetricLimits;
use crate::units::Timestamp;
use crate::verdict::Verdict;

/// Phase of one metric or of a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Nothing measured yet.
    Pending,
    /// Measuring.
    Running,
    /// Done, and the measurements passed.
    Successful,
    /// More `Fail` than `failureLimit`: aborts the rollout.
    Failed,
    /// More `Error` in a row than `consecutiveErrorLimit`, or never any data: aborts the rollout.
    Error,
    /// More `Inconclusive` than `inconclusiveLimit`, or done without a pass: pauses for a person.
    Inconclusive,
}

impl Phase {
    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Running)
    }
}

/// As the status writes it (`Successful`), for people and for values kept as strings.
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Successful => "Successful",
            Phase::Failed => "Failed",
            Phase::Error => "Error",
            Phase::Inconclusive => "Inconclusive",
        })
    }
}

/// Counts of a metric's measurements by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// `Pass` measurements.
    pub passed: u32,
    /// `Fail` measurements.
    pub failed: u32,
    /// `Inconclusive` measurements.
    pub inconclusive: u32,
    /// `Error` measurements.
    pub errors: u32,
    /// `Error` measurements since the last one that was not an error.
    pub consecutive_errors: u32,
}

impl Tally {
    /// Counts the verdicts, oldest first.
    pub fn of(verdicts: impl IntoIterator<Item = Verdict>) -> Self {
        let mut tally = Tally::default();
        for verdict in verdicts {
            tally.add(verdict);
        }
        tally
    }

    /// Adds one measurement; the status keeps a tally so the history itself can be bounded.
    pub fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Pass => self.passed += 1,
            Verdict::Fail => self.failed += 1,
            Verdict::Inconclusive => self.inconclusive += 1,
            Verdict::Error => self.errors += 1,
        }
        if verdict == Verdict::Error {
            self.consecutive_errors += 1;
        } else {
            self.consecutive_errors = 0;
        }
    }

    /// Measurements that produced data (everything but errors); `count` counts these, so a
    /// metric whose provider keeps failing cannot complete as if it had measured.
    pub fn measured(&self) -> u32 {
        self.passed + self.failed + self.inconclusive
    }

    /// All measurements.
    pub fn total(&self) -> u32 {
        self.measured() + self.errors
    }
}

/// The phase of one metric from its limits and tally.
///
/// `stopped` says the run was ended from outside (the step or the rollout moved on), which
/// completes a metric without `count`. Limits are checked in the order Failed, Error,
/// Inconclusive. A completed metric is Successful only with at least one `Pass`: a metric that
/// only ever errored ends in Error and one without a pass in Inconclusive — no data is never a
/// pass.
pub fn metric_phase(limits: &MetricLimits, tally: &Tally, stopped: bool) -> Phase {
    if tally.failed > limits.failure_limit {
        return Phase::Failed;
    }
    if tally.consecutive_errors > limits.consecutive_error_limit {
        return Phase::Error;
    }
    if tally.inconclusive > limits.inconclusive_limit {
        return Phase::Inconclusive;
    }
    let complete = stopped || limits.count.is_some_and(|count| tally.measured() >= count);
    if !complete {
        return if tally.total() == 0 {
            Phase::Pending
        } else {
            Phase::Running
        };
    }
    if tally.passed > 0 {
        Phase::Successful
    } else if tally.errors > 0 && tally.measured() == 0 {
        Phase::Error
    } else {
        Phase::Inconclusive
    }
}

/// When the next measurement is due: `initialDelay` after the run started for the first one,
/// then `interval` after the last look finished (a look that only read a baseline counts: it
/// records no measurement). `None` once the metric's phase is final.
pub fn next_measurement_at(
    limits: &MetricLimits,
    run_started_at: Timestamp,
    last_look: Option<Timestamp>,
    phase: Phase,
) -> Option<Timestamp> {
    if phase.is_terminal() {
        return None;
    }
    Some(match last_look {
        None => run_started_at.plus(limits.initial_delay),
        Some(last) => last.plus(limits.interval),
    })
}

/// Whether a measurement is due at `now`.
pub fn is_due(
    limits: &MetricLimits,
    run_started_at: Timestamp,
    last_look: Option<Timestamp>,
    phase: Phase,
    now: Timestamp,
) -> bool {
    next_measurement_at(limits, run_started_at, last_look, phase).is_some_and(|due| due <= now)
}

/// A metric's phase as the run sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricOutcome {
    /// The metric's own phase.
    pub phase: Phase,
    /// Listed in the template's `dryRun`: measured and shown, never decides the run.
    pub dry_run: bool,
}

/// The run's phase from its metrics' phases: any gating metric Failed → Failed, else Error →
/// Error, else Inconclusive → Inconclusive; Successful when every gating metric is. Dry-run
/// metrics only have to finish. A run without metrics is Inconclusive, not Successful.
pub fn run_phase(metrics: &[MetricOutcome]) -> Phase {
    let gating: Vec<Phase> = metrics
        .iter()
        .filter(|m| !m.dry_run)
        .map(|m| m.phase)
        .collect();
    for decisive in [Phase::Failed, Phase::Error, Phase::Inconclusive] {
        if gating.contains(&decisive) {
            return decisive;
        }
    }
    if metrics.is_empty() {
        return Phase::Inconclusive;
    }
    if metrics.iter().all(|m| m.phase.is_terminal()) {
        return Phase::Successful;
    }
    if metrics.iter().all(|m| m.phase == Phase::Pending) {
        Phase::Pending
    } else {
        Phase::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Error as E, Fail as F, Inconclusive as I, Pass as P};
    use std::time::{Duration, SystemTime};

    fn limits(count: Option<u32>) -> MetricLimits {
        MetricLimits {
            interval: Duration::from_secs(30),
            initial_delay: Duration::from_secs(10),
            count,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
        }
    }

    fn phase(limits: &MetricLimits, verdicts: &[Verdict]) -> Phase {
        metric_phase(limits, &Tally::of(verdicts.iter().copied()), false)
    }

    #[test]
    fn a_phase_displays_as_it_is_serialized() {
        use Phase::*;
        for phase in [Pending, Running, Successful, Failed, Error, Inconclusive] {
            let written = serde_json::to_value(phase).unwrap();
            assert_eq!(written.as_str(), Some(phase.to_string().as_str()));
        }
    }

    #[test]
    fn limits_decide_in_order() {
        let three = limits(Some(3));
        assert_eq!(phase(&three, &[]), Phase::Pending);
        assert_eq!(phase(&three, &[P]), Phase::Running);
        assert_eq!(phase(&three, &[P, P, P]), Phase::Successful);
        assert_eq!(phase(&three, &[P, F]), Phase::Failed);
        assert_eq!(phase(&three, &[P, I]), Phase::Inconclusive);
        assert_eq!(phase(&three, &[P, E, E, E, E]), Phase::Running);
        assert_eq!(phase(&three, &[P, E, E, E, E, E]), Phase::Error);
        // An error streak is broken by any measurement that produced data.
        assert_eq!(
            phase(&three, &[E, E, E, E, P, E, E, E, E, P, P]),
            Phase::Successful
        );
        let lenient = MetricLimits {
            failure_limit: 1,
            inconclusive_limit: 1,
            ..three
        };
        assert_eq!(phase(&lenient, &[F, P, P]), Phase::Successful);
        assert_eq!(phase(&lenient, &[F, F]), Phase::Failed);
        assert_eq!(phase(&lenient, &[I, P, I]), Phase::Inconclusive);
    }

    #[test]
    fn no_data_is_never_successful() {
        let lenient = MetricLimits {
            inconclusive_limit: 10,
            consecutive_error_limit: 10,
            ..limits(Some(3))
        };
        assert_eq!(phase(&lenient, &[I, I, I]), Phase::Inconclusive);
        // Errors do not count towards `count`, and a run stopped with only errors is Error.
        assert_eq!(phase(&lenient, &[E, E, E]), Phase::Running);
        let tally = Tally::of([E, E, E]);
        assert_eq!(metric_phase(&lenient, &tally, true), Phase::Error);
        assert_eq!(
            metric_phase(&lenient, &Tally::default(), true),
            Phase::Inconclusive
        );
        // The failure limit still rules when the last measurement errored after a failure.
        let background = limits(None);
        assert_eq!(phase(&background, &[P, P, P, P]), Phase::Running);
        assert_eq!(
            metric_phase(&background, &Tally::of([P, P]), true),
            Phase::Successful
        );
    }

    #[test]
    fn measurements_follow_initial_delay_and_interval() {
        let start = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1000));
        let at = |secs| Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        let limits = limits(Some(3));
        assert_eq!(
            next_measurement_at(&limits, start, None, Phase::Pending),
            Some(at(1010))
        );
        assert!(!is_due(&limits, start, None, Phase::Pending, at(1009)));
        assert!(is_due(&limits, start, None, Phase::Pending, at(1010)));
        let last = at(1012);
        assert_eq!(
            next_measurement_at(&limits, start, Some(last), Phase::Running),
            Some(at(1042))
        );
        assert_eq!(
            next_measurement_at(&limits, start, Some(last), Phase::Failed),
            None
        );
    }

    #[test]
    fn run_phase_combines_metrics() {
        let m = |phase, dry_run| MetricOutcome { phase, dry_run };
        assert_eq!(
            run_phase(&[m(Phase::Successful, false), m(Phase::Failed, true)]),
            Phase::Successful
        );
        assert_eq!(
            run_phase(&[m(Phase::Inconclusive, false), m(Phase::Failed, false)]),
            Phase::Failed
        );
        assert_eq!(
            run_phase(&[m(Phase::Inconclusive, false), m(Phase::Error, false)]),
            Phase::Error
        );
        assert_eq!(
            run_phase(&[m(Phase::Successful, false), m(Phase::Running, true)]),
            Phase::Running
        );
        assert_eq!(
            run_phase(&[m(Phase::Pending, false), m(Phase::Pending, false)]),
            Phase::Pending
        );
        assert_eq!(run_phase(&[]), Phase::Inconclusive);
    }
}
