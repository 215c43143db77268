//! The A/B test strategy: the new version runs whole beside stable and takes the requests that
//! match, for a duration, under analysis.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::EventReason;
use super::pause::PauseReason;
use super::runs::{RunKind, Verdict};
use super::{DEFAULT_SCALE_DOWN_DELAY_SECONDS, EventType, InvalidSpec, Planner};
use crate::crd::{AbTest, Phase, PromoteMode};

impl Planner<'_> {
    /// A/B: B runs whole beside A; once it is ready the matching requests go to it for
    /// `duration`, under analysis; then it is promoted, by itself or by a decision.
    pub(super) fn ab_test(&mut self, stable: &str, ab: &AbTest) {
        let replicas = self.replicas();
        let paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let new = self.new.clone();
        self.targets.insert(stable.to_owned(), replicas);
        self.targets.insert(new.clone(), replicas);
        self.order = vec![stable.to_owned(), new.clone()];
        self.urgent = true;
        let available = self.observed.available(&new);
        let mut test = self.status.ab_test.clone().unwrap_or_default();
        if available < replicas.max(1) {
            self.waiting_for_pods = true;
            self.status.phase = if paused {
                Phase::Paused
            } else {
                Phase::Progressing
            };
            self.status.message = format!("B: {available} of {replicas} pods available");
            self.status.ab_test = Some(test);
            self.pin_services(stable, &new);
            return;
        }
        let routes = ab_routes(ab).unwrap_or_default();
        self.traffic_state = Some(traffic::TrafficState {
            canary_weight: 0,
            routes,
        });
        let started = match &test.started_at {
            Some(t) => t.0,
            None => {
                test.started_at = Some(Time(self.now));
                let message = format!("A/B test of revision {new} started for {}", ab.duration);
                self.event(EventType::Normal, EventReason::AbTestStarted, message);
                self.now
            }
        };
        let duration = humantime::parse_duration(&ab.duration).unwrap_or_default();
        let ends = started + SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
        let ended = self.now >= ends;
        if !ended {
            self.wake_at(ends);
        }
        let full = self.is_full();
        let mut message = format!("A/B test running until {ends}");
        let mut verdict = ended || full;
        let mut inconclusive = false;
        if !full
            && !test.passed
            && let Some(analysis) = &ab.analysis
        {
            let kind = RunKind::AbTest;
            let approved = self.approved(0);
            match self.analysis_gate(kind, analysis, "spec.strategy.abTest.analysis", approved) {
                Verdict::Aborted => return,
                Verdict::Hold(why) => {
                    message = format!("A/B analysis inconclusive: promote or abort ({why})");
                    inconclusive = true;
                    verdict = false;
                }
                Verdict::Pass => {}
                Verdict::Wait => {
                    verdict = false;
                    if ended {
                        // The test's time is up: the run is stopped and decides with what it has.
                        let name = self.run_name(kind);
                        self.wanted_runs.retain(|n| n != &name);
                        message = format!("A/B test over: analysis run {name} finishing");
                    }
                }
            }
        }
        if verdict && !test.passed {
            test.passed = true;
            let message = format!("A/B test of revision {new} passed");
            self.event(EventType::Normal, EventReason::AbTestPassed, message);
        }
        if test.passed && !paused && (ab.promote == PromoteMode::Auto || self.approved(0)) {
            let delay = DEFAULT_SCALE_DOWN_DELAY_SECONDS;
            test.scale_down_revision = Some(stable.to_owned());
            test.scale_down_at = Some(Time(self.now + SignedDuration::from_secs(i64::from(delay))));
            self.status.ab_test = Some(test);
            self.promote(stable);
            self.finish_on_stable(&new);
            return;
        }
        let waiting_for_decision = test.passed;
        if waiting_for_decision {
            message = "A/B test passed: waiting for promotion".into();
            self.set_pause(PauseReason::AbTest, true);
        }
        self.status.phase = if paused || inconclusive || waiting_for_decision {
            Phase::Paused
        } else {
            Phase::Progressing
        };
        self.status.message = message;
        self.status.ab_test = Some(test);
        self.pin_services(stable, &new);
    }
}

/// The routes of an A/B test: each match is one route to B.
pub(crate) fn ab_routes(ab: &AbTest) -> Result<Vec<Vec<traffic::RequestMatch>>, InvalidSpec> {
    ab.matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("spec.strategy.abTest.match[{i}]");
            m.resolve(&field).map_err(|e| InvalidSpec {
                field,
                message: e.to_string(),
            })
        })
        .collect()
}
