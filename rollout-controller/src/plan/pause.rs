//! Pauses: why a rollout holds (`status.pauseConditions`), and the one place that sets and
//! clears each.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::EventReason;
use super::{EventType, Planner};
use crate::crd::PauseCondition;

/// Why a rollout is paused. The status carries it as its string, so the names are wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PauseReason {
    /// At a canary `pause` step.
    #[serde(rename = "CanaryPauseStep")]
    CanaryStep,
    /// A blue-green preview is ready and autoPromotionEnabled is false.
    #[serde(rename = "BlueGreenPause")]
    BlueGreen,
    /// An A/B test passed and waits for a decision.
    #[serde(rename = "AbTestPause")]
    AbTest,
    /// An inconclusive analysis waits for a person.
    #[serde(rename = "AnalysisInconclusive")]
    AnalysisInconclusive,
    /// `spec.paused`.
    #[serde(rename = "UserPause")]
    User,
}

impl PauseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PauseReason::CanaryStep => "CanaryPauseStep",
            PauseReason::BlueGreen => "BlueGreenPause",
            PauseReason::AbTest => "AbTestPause",
            PauseReason::AnalysisInconclusive => "AnalysisInconclusive",
            PauseReason::User => "UserPause",
        }
    }
}

impl Planner<'_> {
    /// Sets (`on`) or clears the pause condition for `reason`; true when that changed it. A
    /// pause already set keeps its start time, which timed pauses count from.
    pub(super) fn set_pause(&mut self, reason: PauseReason, on: bool) -> bool {
        let has = self.pause_started(reason).is_some();
        if on && !has {
            self.status.pause_conditions.push(PauseCondition {
                reason: reason.as_str().into(),
                start_time: Time(self.now),
            });
        } else if !on && has {
            self.status
                .pause_conditions
                .retain(|p| p.reason != reason.as_str());
        }
        on != has
    }

    /// Every pause released: an attempt starts, ends, or aborts.
    pub(super) fn clear_pauses(&mut self) {
        self.status.pause_conditions.clear();
    }

    /// When the pause for `reason` began; `None` when the rollout is not paused for it.
    pub(super) fn pause_started(&self, reason: PauseReason) -> Option<Timestamp> {
        self.status
            .pause_conditions
            .iter()
            .find(|p| p.reason == reason.as_str())
            .map(|p| p.start_time.0)
    }

    pub(super) fn user_paused(&mut self) -> bool {
        let paused = self.spec.paused == Some(true);
        if self.set_pause(PauseReason::User, paused) {
            if paused {
                self.event(EventType::Normal, EventReason::Paused, "paused by the user");
            } else {
                self.event(
                    EventType::Normal,
                    EventReason::Resumed,
                    "resumed by the user",
                );
            }
        }
        paused
    }
}

#[cfg(test)]
mod tests {
    use super::PauseReason;

    #[test]
    fn pause_reasons_are_written_as_the_status_has_always_carried_them() {
        let all = [
            (PauseReason::CanaryStep, "CanaryPauseStep"),
            (PauseReason::BlueGreen, "BlueGreenPause"),
            (PauseReason::AbTest, "AbTestPause"),
            (PauseReason::AnalysisInconclusive, "AnalysisInconclusive"),
            (PauseReason::User, "UserPause"),
        ];
        for (reason, wire) in all {
            assert_eq!(reason.as_str(), wire);
            assert_eq!(serde_json::to_value(reason).unwrap(), wire);
            assert_eq!(
                serde_json::from_value::<PauseReason>(wire.into()).unwrap(),
                reason
            );
        }
    }
}
