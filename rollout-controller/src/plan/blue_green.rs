//! The blue-green strategy: the new version previews beside the active one, is switched to by
//! a decision or after autoPromotionSeconds, with pre- and post-promotion analysis.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::pause::PauseReason;
use super::runs::{RunKind, Verdict};
use super::{DEFAULT_SCALE_DOWN_DELAY_SECONDS, Planner};
use crate::crd::{BlueGreenStatus, Phase};

impl Planner<'_> {
    pub(super) fn blue_green(&mut self, stable: &str) {
        let Some(bg) = self.spec.strategy.blue_green.clone() else {
            return;
        };
        let replicas = self.replicas();
        let paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let preview_count = bg.preview_replica_count.unwrap_or(replicas).min(replicas);
        let new_available = self.observed.available(&self.new);
        let preview_ready = new_available >= preview_count;
        if preview_ready && self.blue_green_status().ready_since.is_none() {
            self.blue_green_status().ready_since = Some(Time(self.now));
        }
        let auto_at = self
            .status
            .blue_green
            .as_ref()
            .and_then(|s| s.ready_since.clone())
            .map(|t| {
                t.0 + SignedDuration::from_secs(i64::from(bg.auto_promotion_seconds.unwrap_or(0)))
            });
        let decided = self.approved(0);
        let full = self.is_full();
        let auto =
            bg.auto_promotion_enabled != Some(false) && auto_at.is_some_and(|at| self.now >= at);
        // The switch waits for the pre-promotion analysis of the ready preview.
        let mut analysis_message = None;
        let mut inconclusive = false;
        if preview_ready
            && !full
            && let Some(pre) = &bg.pre_promotion_analysis
        {
            let kind = RunKind::PrePromotion;
            let field = "spec.strategy.blueGreen.prePromotionAnalysis";
            match self.analysis_gate(kind, pre, field, decided) {
                Verdict::Pass => {}
                Verdict::Aborted => return,
                Verdict::Hold(why) => {
                    inconclusive = true;
                    analysis_message = Some(format!(
                        "pre-promotion analysis inconclusive: promote or abort ({why})"
                    ));
                }
                Verdict::Wait => {
                    analysis_message = Some(format!(
                        "pre-promotion analysis {} running",
                        self.run_name(kind)
                    ));
                }
            }
        }
        let promoting = !paused && preview_ready && analysis_message.is_none() && (decided || auto);
        if !promoting
            && preview_ready
            && bg.auto_promotion_enabled != Some(false)
            && let Some(at) = auto_at
        {
            self.wake_at(at);
        }

        let new_target = if promoting || decided {
            replicas
        } else {
            preview_count
        };
        self.targets.insert(self.new.clone(), new_target);
        self.targets.insert(stable.to_owned(), replicas);
        self.order = vec![stable.to_owned(), self.new.clone()];
        self.urgent = true;

        if promoting
            && new_available >= replicas
            && !full
            && let Some(post) = &bg.post_promotion_analysis
        {
            // The active Service moves to the new version now; it becomes stable, and the old
            // version may go, only once the post-promotion analysis passes.
            self.active_on_new = true;
            let kind = RunKind::PostPromotion;
            // Past the switch there is no step left to promote: only promote --full (which
            // skips this analysis) or an abort ends an inconclusive one.
            let field = "spec.strategy.blueGreen.postPromotionAnalysis";
            let message = match self.analysis_gate(kind, post, field, false) {
                Verdict::Pass => None,
                Verdict::Aborted => return,
                Verdict::Hold(why) => {
                    inconclusive = true;
                    Some(format!(
                        "post-promotion analysis inconclusive: promote --full or abort ({why})"
                    ))
                }
                Verdict::Wait => Some(format!(
                    "switched to {}: post-promotion analysis {} running",
                    self.new,
                    self.run_name(kind)
                )),
            };
            if let Some(message) = message {
                self.status.phase = if inconclusive {
                    Phase::Paused
                } else {
                    Phase::Progressing
                };
                self.status.message = message;
                self.pin_services(stable, &self.new.clone());
                return;
            }
        }
        if promoting && new_available >= replicas {
            // Switch the active Service, then keep the old version for scaleDownDelaySeconds.
            let delay = bg
                .scale_down_delay_seconds
                .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS);
            let until = self.now + SignedDuration::from_secs(i64::from(delay));
            let status = self.blue_green_status();
            status.scale_down_revision = Some(stable.to_owned());
            status.scale_down_at = Some(Time(until));
            self.promote(stable);
            self.set_pause(PauseReason::BlueGreen, false);
            let new = self.new.clone();
            self.targets.clear();
            self.finish_on_stable(&new);
            return;
        }
        self.waiting_for_pods = new_available < new_target;
        let waiting_for_decision =
            preview_ready && !promoting && bg.auto_promotion_enabled == Some(false);
        if waiting_for_decision {
            self.set_pause(PauseReason::BlueGreen, true);
        }
        self.status.phase = if paused || waiting_for_decision || inconclusive {
            Phase::Paused
        } else {
            Phase::Progressing
        };
        self.status.message = if let Some(message) = analysis_message {
            message
        } else if waiting_for_decision {
            format!("preview of {} ready: waiting for promotion", self.new)
        } else if promoting {
            format!("promoting: {new_available} of {replicas} pods of the new version available")
        } else {
            format!("preview: {new_available} of {preview_count} pods of the new version available")
        };
        self.pin_services(stable, &self.new.clone());
    }

    pub(super) fn blue_green_status(&mut self) -> &mut BlueGreenStatus {
        self.status
            .blue_green
            .get_or_insert_with(BlueGreenStatus::default)
    }
}
