//! The rolling update: the new version grows and the old ones shrink within maxSurge and
//! maxUnavailable, optionally under background analysis.

use super::Planner;
use super::runs::{RunKind, Verdict};
use crate::crd::Phase;

impl Planner<'_> {
    pub(super) fn rolling(&mut self, stable: &str) {
        let replicas = self.replicas();
        let mut paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let mut message = "paused".to_owned();
        if !self.is_full()
            && let Some(background) = self
                .spec
                .strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.analysis.as_ref())
        {
            let kind = RunKind::Background;
            let field = "spec.strategy.rollingUpdate.analysis";
            let approved = self.approved(0);
            match self.analysis_gate(kind, background, field, approved) {
                Verdict::Aborted => return,
                Verdict::Hold(why) => {
                    message = format!("paused: analysis inconclusive; promote or abort ({why})");
                    paused = true;
                }
                Verdict::Pass | Verdict::Wait => {}
            }
        }
        if paused {
            // Hold the current sizes.
            for rs in &self.observed.replica_sets {
                self.targets.insert(rs.hash.clone(), rs.replicas);
            }
            self.status.phase = Phase::Paused;
            self.status.message = message;
            return;
        }
        self.targets.insert(self.new.clone(), replicas);
        self.order = vec![self.new.clone()];
        let done = self
            .observed
            .replica_set(&self.new)
            .is_some_and(|rs| rs.replicas == replicas && rs.available >= replicas)
            && self
                .observed
                .replica_sets
                .iter()
                .filter(|rs| rs.hash != self.new)
                .all(|rs| rs.replicas == 0);
        if done {
            self.promote(stable);
            self.finish_on_stable(&self.new.clone());
            return;
        }
        self.waiting_for_pods = true;
        self.status.phase = Phase::Progressing;
        self.status.message = format!(
            "rolling: {} of {replicas} pods of the new version available",
            self.observed.available(&self.new)
        );
    }
}
