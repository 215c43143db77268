//! Pauses: the pause conditions in status and what sets and clears them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{EventType, Planner, REASON_USER_PAUSE};
use crate::crd::PauseCondition;

impl Planner<'_> {
    pub(super) fn user_paused(&mut self) -> bool {
        let paused = self.spec.paused == Some(true);
        let has = self
            .status
            .pause_conditions
            .iter()
            .any(|p| p.reason == REASON_USER_PAUSE);
        if paused && !has {
            self.status.pause_conditions.push(PauseCondition {
                reason: REASON_USER_PAUSE.into(),
                start_time: Time(self.now),
            });
            self.event(EventType::Normal, "Paused", "paused by the user");
        } else if !paused && has {
            self.status
                .pause_conditions
                .retain(|p| p.reason != REASON_USER_PAUSE);
            self.event(EventType::Normal, "Resumed", "resumed by the user");
        }
        paused
    }
}
