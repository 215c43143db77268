//! The canary strategy: steps (setWeight, pause, analysis, setCanaryScale, setHeaderRoute) walked
//! in order, the split of pods between the new and the stable version, and the role metadata
//! (canaryMetadata, stableMetadata) of each.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::EventReason;
use super::pause::PauseReason;
use super::replicas::replicas_for_weight;
use super::runs::{RunKind, Verdict};
use super::{
    DEFAULT_SCALE_DOWN_DELAY_SECONDS, EventType, ObservedReplicaSet, Planner, PodMetadataChange,
    ReplicaSetTarget,
};
use crate::crd::{CanaryStep, Phase, PodMetadata};

impl Planner<'_> {
    pub(super) fn canary(&mut self, stable: &str, steps: &[CanaryStep]) {
        let replicas = self.replicas();
        let mut paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let full = self.is_full();
        let mut index = self.status.current_step_index.unwrap_or(0).max(0) as usize;
        if full {
            index = index.max(steps.len());
        }
        let mut canary_status = self.status.canary.clone().unwrap_or_default();
        let mut blocked_on_pause = false;
        let mut waiting = false;
        let mut analysing: Option<String> = None;
        let background = self
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.analysis.clone());
        if let Some(background) = &background
            && index < steps.len()
            && index >= background.starting_step.unwrap_or(0).max(0) as usize
        {
            let approved = self.approved(index);
            match self.analysis_gate(
                RunKind::Background,
                background,
                "spec.strategy.canary.analysis",
                approved,
            ) {
                Verdict::Aborted => return,
                Verdict::Hold(_) => paused = true,
                Verdict::Pass | Verdict::Wait => {}
            }
        }
        while index < steps.len() && !paused {
            let step = &steps[index];
            if let Some(analysis) = &step.analysis {
                let field = format!("spec.strategy.canary.steps[{index}].analysis");
                let kind = RunKind::Step(index);
                // A promoted step passes without its run.
                let verdict = if self.approved(index) {
                    Verdict::Pass
                } else {
                    self.analysis_gate(kind, analysis, &field, false)
                };
                match verdict {
                    Verdict::Pass => {
                        self.clear_inconclusive();
                        self.status.analysis_runs.retain(|r| r.kind != kind);
                        let name = self.run_name(kind);
                        self.wanted_runs.retain(|n| n != &name);
                        self.step_done(index, steps.len(), "analysis passed".into());
                        index += 1;
                        continue;
                    }
                    Verdict::Aborted => return,
                    Verdict::Hold(_) => blocked_on_pause = true,
                    Verdict::Wait => analysing = Some(self.run_name(kind)),
                }
                break;
            }
            if let Some(weight) = step.set_weight {
                let (new_want, stable_want) = self.split_for(weight, canary_status.scale_override);
                // With a router, a smaller weight takes traffic off at once (pods follow after);
                // a larger one waits for the canary's pods.
                let lowering = self.router.is_some() && weight <= canary_status.weight;
                if lowering || self.split_reached(stable, new_want, stable_want) {
                    canary_status.weight = weight;
                    self.step_done(index, steps.len(), format!("setWeight {weight}"));
                    index += 1;
                    continue;
                }
                waiting = true;
                break;
            }
            if step.set_header_route.is_some() {
                self.step_done(index, steps.len(), "setHeaderRoute".into());
                index += 1;
                continue;
            }
            if let Some(scale) = &step.set_canary_scale {
                canary_status.scale_override = if scale.match_traffic_weight == Some(true) {
                    None
                } else if let Some(n) = scale.replicas {
                    Some(n)
                } else {
                    scale.weight.map(|w| replicas_for_weight(w, replicas))
                };
                self.step_done(index, steps.len(), "setCanaryScale".into());
                index += 1;
                continue;
            }
            if let Some(pause) = &step.pause {
                if self.approved(index) {
                    self.set_pause(PauseReason::CanaryStep, false);
                    self.step_done(index, steps.len(), "pause (promoted)".into());
                    index += 1;
                    continue;
                }
                self.set_pause(PauseReason::CanaryStep, true);
                let started = self
                    .pause_started(PauseReason::CanaryStep)
                    .unwrap_or(self.now);
                let duration = pause.length().and_then(Result::ok);
                if let Some(duration) = duration {
                    let ends =
                        started + SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
                    if self.now >= ends {
                        self.set_pause(PauseReason::CanaryStep, false);
                        self.step_done(
                            index,
                            steps.len(),
                            format!("pause {}", pause.shown().unwrap_or_default()),
                        );
                        index += 1;
                        continue;
                    }
                    self.wake_at(ends);
                }
                blocked_on_pause = true;
                break;
            }
            // A step with no action (rejected by the schema) is passed over.
            index += 1;
        }
        self.status.current_step_index = Some(index as i32);

        if index >= steps.len() && !paused {
            // Every step done: the canary becomes stable once it runs at full size. Background
            // analysis has nothing left to gate.
            self.status
                .analysis_runs
                .retain(|r| r.kind != RunKind::Background);
            self.wanted_runs.clear();
            let (new_want, stable_want) = if self.router.is_some() {
                (replicas, replicas)
            } else {
                (replicas, 0)
            };
            self.set_split(stable, new_want, stable_want);
            if self.split_reached(stable, new_want, stable_want) {
                self.promote(stable);
                canary_status.weight = 100;
                canary_status.scale_override = None;
                if self.router.is_some() {
                    // The stable Service moves to the new version and the router's weight goes
                    // back to it; the old version drains for scaleDownDelaySeconds.
                    let delay = self
                        .spec
                        .strategy
                        .canary
                        .as_ref()
                        .and_then(|c| c.scale_down_delay_seconds)
                        .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS);
                    canary_status.scale_down_revision = Some(stable.to_owned());
                    canary_status.scale_down_at =
                        Some(Time(self.now + SignedDuration::from_secs(i64::from(delay))));
                }
                self.status.canary = Some(canary_status);
                self.finish_on_stable(&self.new.clone());
                return;
            }
            if self.router.is_some() {
                self.traffic_state = Some(traffic::TrafficState {
                    canary_weight: self.routable_weight(canary_status.weight),
                    routes: self.header_routes(steps, index),
                });
            }
            self.waiting_for_pods = true;
            self.status.phase = Phase::Progressing;
            self.status.message = format!(
                "promoting: {} of {replicas} pods of the new version available",
                self.observed.available(&self.new)
            );
        } else {
            // Hold the split of the step we are at (its weight, or the last one reached).
            let weight = match steps.get(index).and_then(|s| s.set_weight) {
                Some(w) if !paused => w,
                _ => canary_status.weight,
            };
            let (new_want, stable_want) = self.split_for(weight, canary_status.scale_override);
            self.set_split(stable, new_want, stable_want);
            if self.router.is_some() {
                self.traffic_state = Some(traffic::TrafficState {
                    canary_weight: self.routable_weight(canary_status.weight),
                    routes: self.header_routes(steps, index),
                });
            }
            self.waiting_for_pods = waiting;
            self.status.phase = if paused || blocked_on_pause {
                Phase::Paused
            } else {
                Phase::Progressing
            };
            self.status.message = match &analysing {
                Some(run) => format!("step {}/{}: analysis {run} running", index + 1, steps.len()),
                None => format!(
                    "step {}/{}: {}",
                    index + 1,
                    steps.len(),
                    step_message(steps.get(index), paused)
                ),
            };
            let inconclusive = self
                .pause_started(PauseReason::AnalysisInconclusive)
                .is_some();
            if inconclusive && (paused || blocked_on_pause) {
                // Name the run and the metric that could not decide, so a person knows what
                // to look at before promoting.
                let why = self
                    .status
                    .analysis_runs
                    .iter()
                    .filter(|r| r.phase == ::analysis::Phase::Inconclusive && !r.dismissed)
                    .find_map(|r| {
                        let run = self.observed.analysis_runs.get(&r.name)?;
                        Some(format!(
                            "analysis run {} is inconclusive: {}",
                            r.name, run.message
                        ))
                    })
                    .unwrap_or_else(|| "analysis inconclusive".into());
                self.status.message = format!(
                    "step {}/{}: paused: {why}; promote the step or abort",
                    index + 1,
                    steps.len()
                );
            }
        }
        self.status.canary = Some(canary_status);
        self.pin_services(stable, &self.new.clone());
    }

    pub(super) fn step_done(&mut self, index: usize, count: usize, what: String) {
        let message = format!("step {}/{count} done: {what}", index + 1);
        self.event(EventType::Normal, EventReason::StepCompleted, message);
    }

    /// Targets: the new version `new_pods` pods, stable `stable_pods`, every other version 0.
    pub(super) fn set_split(&mut self, stable: &str, new_pods: i32, stable_pods: i32) {
        self.targets.insert(self.new.clone(), new_pods);
        self.targets.insert(stable.to_owned(), stable_pods);
        // Growing stable first keeps it whole when the canary shrinks; otherwise the canary.
        let stable_grows = self
            .observed
            .replica_set(stable)
            .map_or(0, |rs| rs.replicas)
            < stable_pods;
        self.order = if stable_grows {
            vec![stable.to_owned(), self.new.clone()]
        } else {
            vec![self.new.clone(), stable.to_owned()]
        };
    }

    /// The new version has `new_pods` pods, all available, and every other version has shrunk
    /// to its target.
    fn split_reached(&self, stable: &str, new_pods: i32, stable_pods: i32) -> bool {
        let new_ok = self
            .observed
            .replica_set(&self.new)
            .map_or(new_pods == 0, |rs| {
                rs.replicas == new_pods && rs.available >= new_pods
            });
        let stable_ok = self
            .observed
            .replica_set(stable)
            .map_or(stable_pods == 0, |rs| {
                rs.replicas == stable_pods && rs.available >= stable_pods
            });
        let others_gone = self
            .observed
            .replica_sets
            .iter()
            .filter(|rs| rs.hash != stable && rs.hash != self.new)
            .all(|rs| rs.replicas == 0);
        new_ok && stable_ok && others_gone
    }

    /// The weight the router may send: `weight`, or less while canary pods that carried it are
    /// not ready, so that traffic never points at pods that are not there. The step's weight in
    /// status stays; the router's comes back as the pods do.
    pub(super) fn routable_weight(&self, weight: i32) -> i32 {
        let replicas = self.replicas().max(1);
        let max = self.max_weight();
        let ready = self
            .observed
            .replica_set(&self.new)
            .map_or(0, |rs| rs.available.min(rs.replicas));
        let (needed, _) = self.split_for(weight, None);
        if ready >= needed {
            weight
        } else {
            weight.min(ready * max / replicas)
        }
    }

    fn max_weight(&self) -> i32 {
        self.router
            .as_ref()
            .and_then(|r| r.max_traffic_weight)
            .unwrap_or(100)
            .max(1)
    }

    /// Canary and stable pods for a weight. With a router stable stays whole and the canary
    /// gets pods for its share of traffic (or what setCanaryScale says); without one the weight
    /// is made of pods.
    fn split_for(&self, weight: i32, scale_override: Option<i32>) -> (i32, i32) {
        let replicas = self.replicas();
        match &self.router {
            Some(_) => {
                let max = self.max_weight();
                let percent = (weight.clamp(0, max) * 100 + max - 1) / max;
                let canary =
                    scale_override.unwrap_or_else(|| replicas_for_weight(percent, replicas));
                (canary.min(replicas), replicas)
            }
            None => canary_split(weight, scale_override, replicas),
        }
    }

    /// The header routes in force at `index`: those of the last setHeaderRoute step before it.
    fn header_routes(&self, steps: &[CanaryStep], index: usize) -> Vec<Vec<traffic::RequestMatch>> {
        let Some((i, route)) = steps
            .iter()
            .enumerate()
            .take(index)
            .filter_map(|(i, s)| s.set_header_route.as_ref().map(|r| (i, r)))
            .next_back()
        else {
            return Vec::new();
        };
        let field = format!("spec.strategy.canary.steps[{i}].setHeaderRoute.match");
        let conditions: Vec<traffic::RequestMatch> = route
            .matches
            .iter()
            .enumerate()
            .filter_map(|(j, m)| m.resolve(&format!("{field}[{j}]")).ok())
            .collect();
        if conditions.is_empty() {
            Vec::new()
        } else {
            vec![conditions]
        }
    }

    /// The role metadata each version's pods should carry: stableMetadata on stable, and
    /// canaryMetadata on the new version while it is a canary. Keys the Rollout's own template
    /// sets are the user's and never removed.
    pub(super) fn role_metadata_changes(
        &self,
        scale_up: &[ReplicaSetTarget],
    ) -> Vec<PodMetadataChange> {
        let Some(canary) = &self.spec.strategy.canary else {
            return Vec::new();
        };
        let empty = PodMetadata::default();
        let canary_meta = canary.canary_metadata.as_ref().unwrap_or(&empty);
        let stable_meta = canary.stable_metadata.as_ref().unwrap_or(&empty);
        if canary_meta == &empty && stable_meta == &empty {
            return Vec::new();
        }
        let template = self.spec.template.metadata.as_ref();
        let own_labels = template.and_then(|m| m.labels.clone()).unwrap_or_default();
        let own_annotations = template
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        let stable = self.status.stable_revision.as_deref();
        let mut changes = Vec::new();
        let created: Vec<ObservedReplicaSet> = scale_up
            .iter()
            .filter(|t| self.observed.replica_set(&t.hash).is_none())
            .map(|t| ObservedReplicaSet {
                name: String::new(),
                hash: t.hash.clone(),
                revision: 0,
                replicas: t.replicas,
                ready: 0,
                available: 0,
                pod_metadata: PodMetadata {
                    labels: own_labels.clone(),
                    annotations: own_annotations.clone(),
                },
            })
            .collect();
        for rs in self.observed.replica_sets.iter().chain(&created) {
            let role = if Some(rs.hash.as_str()) == stable {
                stable_meta
            } else if rs.hash == self.new && !self.status.abort {
                canary_meta
            } else {
                &empty
            };
            let diff = |managed: [&BTreeMap<String, String>; 2],
                        want: &BTreeMap<String, String>,
                        have: &BTreeMap<String, String>,
                        own: &BTreeMap<String, String>| {
                let mut out = BTreeMap::new();
                for key in managed.iter().flat_map(|m| m.keys()) {
                    let target = want.get(key).or_else(|| own.get(key));
                    if target != have.get(key) {
                        out.insert(key.clone(), target.cloned());
                    }
                }
                out
            };
            let labels = diff(
                [&canary_meta.labels, &stable_meta.labels],
                &role.labels,
                &rs.pod_metadata.labels,
                &own_labels,
            );
            let annotations = diff(
                [&canary_meta.annotations, &stable_meta.annotations],
                &role.annotations,
                &rs.pod_metadata.annotations,
                &own_annotations,
            );
            if !labels.is_empty() || !annotations.is_empty() {
                changes.push(PodMetadataChange {
                    hash: rs.hash.clone(),
                    labels,
                    annotations,
                });
            }
        }
        changes
    }
}

/// Canary and stable pods for a weight: the canary gets whole pods for its share, stable the
/// rest of the desired count. Without a traffic router the weight is made of pods, so a
/// setCanaryScale override can add canary pods but never take the canary below its weight.
pub(crate) fn canary_split(weight: i32, scale_override: Option<i32>, replicas: i32) -> (i32, i32) {
    let by_weight = replicas_for_weight(weight, replicas);
    let canary = scale_override.map_or(by_weight, |n| n.max(by_weight));
    (canary, replicas - by_weight)
}

/// What a canary step does, in a few words: the REST view's step list and the status message
/// say it the same way.
pub(crate) fn describe_step(step: &CanaryStep) -> String {
    if let Some(weight) = step.set_weight {
        return format!("setWeight {weight}");
    }
    if let Some(pause) = &step.pause {
        return match pause.shown() {
            Some(d) => format!("pause {d}"),
            None => "pause (until promoted)".into(),
        };
    }
    if let Some(scale) = &step.set_canary_scale {
        return match (scale.replicas, scale.weight, scale.match_traffic_weight) {
            (Some(r), _, _) => format!("setCanaryScale {r} replicas"),
            (_, Some(w), _) => format!("setCanaryScale {w}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        };
    }
    if let Some(analysis) = &step.analysis {
        let names: Vec<&str> = analysis
            .templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect();
        return format!("analysis {}", names.join(", "));
    }
    if let Some(route) = &step.set_header_route {
        return if route.matches.is_empty() {
            "setHeaderRoute (remove)".into()
        } else {
            format!("setHeaderRoute ({} matches)", route.matches.len())
        };
    }
    "(empty step)".into()
}

/// The status message's part for `step` (`None`: past the last step).
fn step_message(step: Option<&CanaryStep>, paused: bool) -> String {
    let what = step.map_or_else(|| "promoting".into(), describe_step);
    if paused {
        format!("{what} (rollout paused)")
    } else {
        what
    }
}
