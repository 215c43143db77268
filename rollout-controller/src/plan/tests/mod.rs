//! Table tests of each strategy, and property tests of the invariants of docs/ARCHITECTURE.md over random
//! event sequences, all against a small simulated cluster that carries plans out write by write.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::replicas::{Bounds, bounds, replicas_for_weight};
use super::*;
use crate::crd::{Decision, POD_TEMPLATE_HASH_LABEL, PodMetadata};
use ::analysis::lifecycle::Phase as RunPhase;

mod bad_input;
mod decisions;
mod one_service;
mod progress_deadline;

// ---- fixtures ----------------------------------------------------------------------------

pub(super) fn rollout(strategy: serde_json::Value, replicas: i32) -> Rollout {
    let mut rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
            "strategy": strategy,
        },
    }))
    .unwrap();
    rollout.status = None;
    rollout
}

fn canary_rollout(replicas: i32, steps: serde_json::Value) -> Rollout {
    rollout(
        json!({"canary": {"steps": steps, "maxSurge": 1, "maxUnavailable": 0,
                           "stableService": "web-stable", "canaryService": "web-canary"}}),
        replicas,
    )
}

fn blue_green_rollout(replicas: i32, auto: bool) -> Rollout {
    rollout(
        json!({"blueGreen": {"activeService": "web-active", "previewService": "web-preview",
                              "autoPromotionEnabled": auto, "scaleDownDelaySeconds": 30}}),
        replicas,
    )
}

fn rolling_rollout(replicas: i32, surge: i32, unavailable: i32) -> Rollout {
    rollout(
        json!({"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}),
        replicas,
    )
}

fn set_image(rollout: &mut Rollout, image: &str) {
    if let Some(spec) = rollout.spec.template.spec.as_mut() {
        spec.containers[0].image = Some(image.into());
    }
    rollout.metadata.generation = rollout.metadata.generation.map(|g| g + 1);
}

fn hash_of(rollout: &Rollout) -> String {
    pod_template_hash(&rollout.spec.template)
}

// ---- a simulated cluster -----------------------------------------------------------------

#[derive(Debug, Clone)]
struct SimReplicaSet {
    hash: String,
    revision: u64,
    replicas: i32,
    /// Pods that exist and are ready; the rest (up to `replicas`) are starting.
    ready: i32,
    pod_metadata: PodMetadata,
}

/// Pods become ready only when the test says so; every write of a plan is applied one at a
/// time, and the invariants are checked after each.
struct Sim {
    rollout: Rollout,
    replica_sets: Vec<SimReplicaSet>,
    services: BTreeMap<String, BTreeMap<String, String>>,
    now: Timestamp,
    writes: usize,
    /// The most pods that existed at once.
    peak_pods: i32,
    /// The first invariant broken, if any.
    violation: Option<String>,
    runs: BTreeMap<String, ObservedRun>,
    templates: BTreeMap<TemplateKey, AnalysisTemplateSpec>,
}

impl Sim {
    fn new(rollout: Rollout) -> Self {
        let services = ["web-stable", "web-canary", "web-active", "web-preview"]
            .iter()
            .map(|name| {
                let selector = BTreeMap::from([("app".to_string(), "web".to_string())]);
                (name.to_string(), selector)
            })
            .collect();
        Self {
            rollout,
            replica_sets: Vec::new(),
            services,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            writes: 0,
            peak_pods: 0,
            violation: None,
            runs: BTreeMap::new(),
            templates: BTreeMap::from([(
                TemplateKey {
                    cluster_scope: false,
                    name: "error-rate".into(),
                },
                serde_json::from_value(json!({
                    "args": [{"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}}],
                    "metrics": [{"name": "errors", "interval": "30s", "count": 3,
                        "provider": {"prometheus": {"address": "http://127.0.0.1:9090",
                                                    "query": "errors{hash=\"{{args.hash}}\"}"}},
                        "successCondition": "result[0] < 0.01"}],
                }))
                .unwrap(),
            )]),
        }
    }

    /// The runner's part: the run named `name` ends in `phase`.
    fn end_run(&mut self, name: &str, phase: RunPhase) {
        let run = self.runs.get_mut(name).expect("no such run");
        run.phase = phase;
        run.message = format!("metric errors {phase:?}");
        run.completed_at = Some(self.now);
    }

    fn run_names(&self) -> Vec<String> {
        self.runs.keys().cloned().collect()
    }

    fn observed(&self) -> Observed {
        Observed {
            replica_sets: self
                .replica_sets
                .iter()
                .map(|rs| ObservedReplicaSet {
                    name: format!("web-{}", rs.hash),
                    hash: rs.hash.clone(),
                    revision: rs.revision,
                    replicas: rs.replicas,
                    ready: rs.ready,
                    available: rs.ready,
                    pod_metadata: rs.pod_metadata.clone(),
                })
                .collect(),
            services: self.services.clone(),
            analysis_runs: self.runs.clone(),
            templates: self.templates.clone(),
            router_problem: None,
            undecodable: Vec::new(),
            pods: None,
        }
    }

    fn rs(&self, hash: &str) -> Option<&SimReplicaSet> {
        self.replica_sets.iter().find(|rs| rs.hash == hash)
    }

    fn replicas_of(&self, hash: &str) -> i32 {
        self.rs(hash).map_or(0, |rs| rs.replicas)
    }

    fn ready_of(&self, hash: &str) -> i32 {
        self.rs(hash).map_or(0, |rs| rs.ready)
    }

    fn selector_of(&self, service: &str) -> Option<String> {
        self.services
            .get(service)
            .and_then(|s| s.get(POD_TEMPLATE_HASH_LABEL).cloned())
    }

    fn status(&self) -> RolloutStatus {
        self.rollout.status.clone().unwrap_or_default()
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    fn total_available(&self) -> i32 {
        self.replica_sets
            .iter()
            .map(|rs| rs.ready.min(rs.replicas))
            .sum()
    }

    fn bounds(&self) -> Bounds {
        bounds(&self.rollout.spec).unwrap()
    }

    fn write_replicas(&mut self, target: &ReplicaSetTarget, aborting: bool) {
        self.writes += 1;
        let replicas = self.rollout.spec.replicas;
        let bounds = self.bounds();
        let before_available = self.total_available();
        let grows = target.replicas > self.replicas_of(&target.hash);
        match self
            .replica_sets
            .iter_mut()
            .find(|rs| rs.hash == target.hash)
        {
            Some(rs) => {
                rs.replicas = target.replicas;
                rs.ready = rs.ready.min(rs.replicas);
                if let Some(revision) = target.revision {
                    rs.revision = revision;
                }
            }
            None => self.replica_sets.push(SimReplicaSet {
                hash: target.hash.clone(),
                revision: target.revision.unwrap_or(1),
                replicas: target.replicas,
                ready: 0,
                pod_metadata: PodMetadata {
                    labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
                    annotations: BTreeMap::new(),
                },
            }),
        }
        let total: i32 = self.replica_sets.iter().map(|rs| rs.replicas).sum();
        self.peak_pods = self.peak_pods.max(total);
        let router_less_split = self.rollout.spec.strategy.blue_green.is_none()
            && self.rollout.spec.strategy.ab_test.is_none()
            && self
                .rollout
                .spec
                .strategy
                .canary
                .as_ref()
                .is_none_or(|c| c.traffic_routing.is_none());
        if router_less_split && grows && !aborting && total > replicas + bounds.surge {
            self.violate(format!(
                "{total} pods exceed replicas {replicas} + maxSurge {}",
                bounds.surge
            ));
        }
        let floor = (replicas - bounds.unavailable).min(before_available);
        if self.total_available() < floor {
            self.violate(format!(
                "available pods fell to {} (floor {floor}) when {} was scaled to {}",
                self.total_available(),
                target.hash,
                target.replicas
            ));
        }
    }

    fn write_selector(&mut self, change: &SelectorChange) {
        self.writes += 1;
        let replicas = self.rollout.spec.replicas;
        let ready = self.ready_of(&change.hash);
        let need = if change.service == "web-active" {
            replicas.max(1)
        } else {
            1
        };
        if ready < need {
            self.violate(format!(
                "Service {} pointed at {} with {ready} ready pods (needs {need})",
                change.service, change.hash
            ));
        }
        if let Some(selector) = self.services.get_mut(&change.service) {
            selector.insert(POD_TEMPLATE_HASH_LABEL.into(), change.hash.clone());
        }
    }

    /// One reconcile: plan, then each write in the plan's order, checking after each.
    fn reconcile(&mut self) -> Plan {
        let plan = plan(&self.rollout, &self.observed(), self.now);
        // A router's weight only ever points at a canary with the pods for its share.
        if let (Some(state), Some(updated)) = (
            plan.traffic.as_ref().and_then(|t| t.state.as_ref()),
            plan.status.updated_revision.as_ref(),
        ) {
            let need = replicas_for_weight(state.canary_weight, self.rollout.spec.replicas);
            if self.ready_of(updated) < need {
                self.violate(format!(
                    "router weight {} with {} ready canary pods (needs {need})",
                    state.canary_weight,
                    self.ready_of(updated)
                ));
            }
        }
        let aborting = plan.status.abort;
        for target in &plan.scale_up {
            self.write_replicas(target, aborting);
        }
        for change in &plan.pod_metadata {
            self.writes += 1;
            if let Some(rs) = self
                .replica_sets
                .iter_mut()
                .find(|rs| rs.hash == change.hash)
            {
                for (key, value) in &change.labels {
                    match value {
                        Some(v) => rs.pod_metadata.labels.insert(key.clone(), v.clone()),
                        None => rs.pod_metadata.labels.remove(key),
                    };
                }
            }
        }
        for change in &plan.selectors {
            self.write_selector(change);
        }
        for target in &plan.scale_down {
            self.write_replicas(target, aborting);
        }
        for name in &plan.delete {
            self.writes += 1;
            self.replica_sets
                .retain(|rs| &format!("web-{}", rs.hash) != name);
        }
        for new in &plan.create_runs {
            assert!(
                !self.runs.contains_key(&new.name),
                "{} created twice",
                new.name
            );
            self.runs.insert(
                new.name.clone(),
                ObservedRun {
                    phase: RunPhase::Pending,
                    message: String::new(),
                    terminating: false,
                    created_at: Some(self.now),
                    completed_at: None,
                },
            );
        }
        for name in &plan.terminate_runs {
            if let Some(run) = self.runs.get_mut(name) {
                run.terminating = true;
                run.phase = RunPhase::Successful;
            }
        }
        for name in &plan.delete_runs {
            self.runs.remove(name);
        }
        self.writes += 1;
        self.check_status(&plan.status);
        self.rollout.status = Some(plan.status.clone());
        plan
    }

    /// A weight may only grow onto ready pods (pods going unready later is the world's doing).
    fn check_status(&mut self, status: &RolloutStatus) {
        let replicas = self.rollout.spec.replicas;
        let previous_weight = self.status().canary.map_or(0, |c| c.weight);
        if let (Some(canary), Some(updated)) = (&status.canary, &status.updated_revision)
            && canary.weight > previous_weight
        {
            let need = replicas_for_weight(canary.weight, replicas);
            let stable_is_updated = status.stable_revision.as_ref() == Some(updated);
            if canary.weight > 0 && !stable_is_updated && self.ready_of(updated) < need {
                self.violate(format!(
                    "weight {} claimed with {} ready canary pods (needs {need})",
                    canary.weight,
                    self.ready_of(updated)
                ));
            }
        }
        let stable_stays_whole = self.rollout.spec.strategy.blue_green.is_some()
            || self.rollout.spec.strategy.routed().is_some();
        if stable_stays_whole
            && !status.abort
            && let Some(stable) = &status.stable_revision
            && status.updated_revision.as_ref() != Some(stable)
            && self.replicas_of(stable) < replicas
            && self.rs(stable).is_some()
        {
            self.violate(format!(
                "blue-green stable {stable} has {} pods before promotion (wants {replicas})",
                self.replicas_of(stable)
            ));
        }
    }

    /// Every starting pod becomes ready.
    fn pods_ready(&mut self) {
        for rs in &mut self.replica_sets {
            rs.ready = rs.replicas;
        }
    }

    fn advance(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
    }

    /// Reconciles with every pod becoming ready in between, until nothing changes.
    fn settle(&mut self) {
        for _ in 0..50 {
            let before = (
                self.status(),
                self.replica_sets
                    .iter()
                    .map(|r| r.replicas)
                    .collect::<Vec<_>>(),
            );
            self.reconcile();
            self.pods_ready();
            let after = (
                self.status(),
                self.replica_sets
                    .iter()
                    .map(|r| r.replicas)
                    .collect::<Vec<_>>(),
            );
            if before == after {
                return;
            }
        }
    }

    fn decide(&mut self, change: impl FnOnce(&mut Decision)) {
        let hash = hash_of(&self.rollout);
        let mut decision = self
            .rollout
            .spec
            .decision
            .clone()
            .filter(|d| d.revision == hash)
            .unwrap_or(Decision {
                revision: hash,
                ..Decision::default()
            });
        change(&mut decision);
        self.rollout.spec.decision = Some(decision);
    }

    fn assert_ok(&self) {
        assert_eq!(self.violation, None, "invariant broken");
    }
}

/// A rollout that reached Healthy on its first template.
fn deployed(rollout: Rollout) -> Sim {
    let mut sim = Sim::new(rollout);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy, "{:?}", sim.status());
    sim
}

// ---- table tests -------------------------------------------------------------------------

/// A 5-replica canary (setWeight 20, pause 5s, setWeight 60, pause {}) Healthy on v1 and just
/// given v2: the simulation, the stable hash and the canary hash.
fn four_step_canary_on_v2() -> (Sim, String, String) {
    let steps =
        json!([{"setWeight": 20}, {"pause": {"duration": "5s"}}, {"setWeight": 60}, {"pause": {}}]);
    let mut sim = deployed(canary_rollout(5, steps));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    (sim, stable, canary)
}

#[test]
fn the_first_template_is_stable_at_once() {
    let sim = deployed(canary_rollout(5, json!([{"setWeight": 20}])));
    let hash = hash_of(&sim.rollout);
    assert_eq!(sim.status().stable_revision.as_deref(), Some(hash.as_str()));
    assert_eq!(sim.replicas_of(&hash), 5);
    assert_eq!(
        sim.selector_of("web-stable").as_deref(),
        Some(hash.as_str())
    );
    assert_eq!(sim.rs(&hash).unwrap().revision, 1);
    sim.assert_ok();
}

#[test]
fn canary_weights_become_replica_counts() {
    let steps = json!([{"setWeight": 20}, {"setWeight": 40}, {"setWeight": 60}, {"setWeight": 80}]);
    let mut sim = deployed(canary_rollout(5, steps));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    let mut seen = Vec::new();
    for _ in 0..40 {
        sim.reconcile();
        sim.pods_ready();
        let split = (sim.replicas_of(&canary), sim.replicas_of(&stable));
        if seen.last() != Some(&split) {
            seen.push(split);
        }
        if sim.status().phase == Phase::Healthy {
            break;
        }
    }
    for split in [(1, 4), (2, 3), (3, 2), (4, 1), (5, 0)] {
        assert!(seen.contains(&split), "{split:?} never reached: {seen:?}");
    }
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(
        sim.selector_of("web-stable").as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(
        sim.selector_of("web-canary").as_deref(),
        Some(canary.as_str())
    );
    sim.assert_ok();
}

#[test]
fn a_canary_pauses_for_a_time_and_for_a_decision() {
    let (mut sim, stable, canary) = four_step_canary_on_v2();
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (1, 4));
    let plan = sim.reconcile();
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(5)));

    sim.advance(5);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(3));
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (3, 2));
    assert_eq!(sim.status().canary.as_ref().map(|c| c.weight), Some(60));

    // Hours later it still waits: only a decision moves it.
    sim.advance(36_000);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(3));
    sim.decide(|d| d.promoted_step = Some(3));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(canary.as_str())
    );
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (5, 0));
    sim.assert_ok();
}

#[test]
fn an_aborted_canary_goes_back_to_stable_and_stays_there() {
    let (mut sim, stable, canary) = four_step_canary_on_v2();
    sim.advance(5);
    sim.settle();
    sim.advance(5);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(3));
    sim.decide(|d| d.abort = Some(true));
    let plan = sim.reconcile();
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::AbortedByUser)
    );
    // Stable back to full size before the canary shrinks, in the same reconcile where possible.
    assert_eq!(sim.replicas_of(&stable), 5);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (0, 5));
    assert_eq!(
        sim.selector_of("web-canary").as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(sim.status().canary.as_ref().map(|c| c.weight), Some(0));

    sim.advance(3600);
    sim.settle();
    assert_eq!(
        sim.status().phase,
        Phase::Aborted,
        "an abort stays until a retry"
    );

    sim.decide(|d| {
        d.abort = Some(false);
        d.retry = Some(1);
    });
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (1, 4));
    sim.assert_ok();
}

#[test]
fn role_metadata_follows_the_canary_into_stable() {
    let mut r = canary_rollout(2, json!([{"setWeight": 50}, {"pause": {}}]));
    if let Some(c) = r.spec.strategy.canary.as_mut() {
        c.canary_metadata = Some(PodMetadata {
            labels: BTreeMap::from([("role".into(), "canary".into())]),
            ..PodMetadata::default()
        });
        c.stable_metadata = Some(PodMetadata {
            labels: BTreeMap::from([
                ("role".into(), "stable".into()),
                ("tier".into(), "gold".into()),
            ]),
            ..PodMetadata::default()
        });
    }
    let mut sim = deployed(r);
    let v1 = hash_of(&sim.rollout);
    let role = |sim: &Sim, hash: &str, key: &str| {
        sim.rs(hash)
            .and_then(|rs| rs.pod_metadata.labels.get(key).cloned())
    };
    assert_eq!(role(&sim, &v1, "role").as_deref(), Some("stable"));
    set_image(&mut sim.rollout, "web:2");
    let v2 = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(role(&sim, &v2, "role").as_deref(), Some("canary"));
    assert_eq!(role(&sim, &v2, "tier"), None);
    assert_eq!(role(&sim, &v1, "role").as_deref(), Some("stable"));
    assert_eq!(
        role(&sim, &v2, "app").as_deref(),
        Some("web"),
        "the template's own labels stay"
    );
    sim.decide(|d| d.full = Some(true));
    sim.settle();
    assert_eq!(role(&sim, &v2, "role").as_deref(), Some("stable"));
    assert_eq!(role(&sim, &v2, "tier").as_deref(), Some("gold"));
    // Quiet once in place: no more writes.
    assert!(sim.reconcile().pod_metadata.is_empty());
}

#[test]
fn a_stable_replica_set_deleted_by_hand_is_reported_and_replaced() {
    let mut sim = deployed(canary_rollout(3, json!([{"setWeight": 34}, {"pause": {}}])));
    let v1 = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let v2 = hash_of(&sim.rollout);
    sim.settle();
    sim.replica_sets.retain(|rs| rs.hash != v1);
    let plan = sim.reconcile();
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::StableReplicaSetMissing),
        "{:?}",
        plan.events
    );
    sim.settle();
    assert_eq!(sim.status().stable_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(
        sim.replicas_of(&v2),
        3,
        "the remaining version runs at full size"
    );
    sim.assert_ok();
}

#[test]
fn a_decision_for_another_revision_is_ignored() {
    let mut sim = deployed(canary_rollout(4, json!([{"setWeight": 50}, {"pause": {}}])));
    set_image(&mut sim.rollout, "web:2");
    sim.rollout.spec.decision = Some(Decision {
        revision: "someotherx".into(),
        full: Some(true),
        abort: Some(true),
        ..Decision::default()
    });
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!(sim.status().current_step_index, Some(1));
}

#[test]
fn full_promotion_skips_the_remaining_steps() {
    let mut sim = deployed(canary_rollout(
        4,
        json!([{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]),
    ));
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    sim.settle();
    sim.decide(|d| d.full = Some(true));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(canary.as_str())
    );
}

#[test]
fn a_new_template_mid_canary_starts_over_from_stable() {
    let mut sim = deployed(canary_rollout(5, json!([{"setWeight": 40}, {"pause": {}}])));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let abandoned = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.replicas_of(&abandoned), 2);
    set_image(&mut sim.rollout, "web:3");
    let next = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.replicas_of(&abandoned), 0);
    assert_eq!((sim.replicas_of(&next), sim.replicas_of(&stable)), (2, 3));
    assert_eq!(sim.rs(&next).unwrap().revision, 3);
    sim.assert_ok();
}

#[test]
fn changing_back_to_stable_finishes_at_once() {
    let mut sim = deployed(canary_rollout(5, json!([{"setWeight": 40}, {"pause": {}}])));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    sim.settle();
    set_image(&mut sim.rollout, "web:1");
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (0, 5));
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(stable.as_str())
    );
    sim.assert_ok();
}

#[test]
fn blue_green_previews_then_switches_then_scales_down_after_the_delay() {
    let mut sim = deployed(blue_green_rollout(3, false));
    let blue = hash_of(&sim.rollout);
    assert_eq!(
        sim.selector_of("web-active").as_deref(),
        Some(blue.as_str())
    );
    set_image(&mut sim.rollout, "web:2");
    let green = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!(
        sim.selector_of("web-preview").as_deref(),
        Some(green.as_str())
    );
    assert_eq!(
        sim.selector_of("web-active").as_deref(),
        Some(blue.as_str())
    );
    assert_eq!((sim.replicas_of(&green), sim.replicas_of(&blue)), (3, 3));

    sim.decide(|d| d.promoted_step = Some(0));
    sim.settle();
    assert_eq!(
        sim.selector_of("web-active").as_deref(),
        Some(green.as_str())
    );
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    assert_eq!(sim.replicas_of(&blue), 3, "kept for scaleDownDelaySeconds");
    assert_eq!(sim.status().phase, Phase::Healthy);
    // Retiring blue when the delay is over is no progress still to come: the rollout stays
    // Healthy through it, and says so once.
    sim.advance(30);
    let retiring = sim.reconcile();
    assert_eq!(retiring.status.phase, Phase::Healthy);
    assert!(
        !retiring
            .events
            .iter()
            .any(|e| e.reason == EventReason::Healthy),
        "{:?}",
        retiring.events
    );
    sim.settle();
    assert_eq!(sim.replicas_of(&blue), 0);
    assert_eq!(sim.status().phase, Phase::Healthy);
    sim.assert_ok();
}

#[test]
fn blue_green_promotes_by_itself_after_auto_promotion_seconds() {
    let mut r = blue_green_rollout(2, true);
    if let Some(bg) = r.spec.strategy.blue_green.as_mut() {
        bg.auto_promotion_seconds = Some(20);
    }
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    let green = hash_of(&sim.rollout);
    sim.settle();
    assert_ne!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    sim.advance(20);
    sim.settle();
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    sim.assert_ok();
}

#[test]
fn a_retried_blue_green_counts_auto_promotion_from_the_retry_not_from_before_the_abort() {
    let mut r = blue_green_rollout(2, true);
    if let Some(bg) = r.spec.strategy.blue_green.as_mut() {
        bg.auto_promotion_seconds = Some(20);
    }
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    let green = hash_of(&sim.rollout);
    sim.settle();
    sim.advance(10);
    sim.decide(|d| d.abort = Some(true));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted, "{:?}", sim.status());
    sim.advance(60);
    sim.decide(|d| {
        d.abort = None;
        d.retry = Some(1);
    });
    sim.settle();
    // Ready again just now: the 20 s count from here, not from before the abort.
    assert_ne!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str()),
        "promoted without waiting autoPromotionSeconds after the retry: {:?}",
        sim.status()
    );
    sim.advance(20);
    sim.settle();
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    sim.assert_ok();
}

#[test]
fn rolling_stays_within_surge_and_unavailability() {
    let mut sim = deployed(rolling_rollout(10, 2, 1));
    let old = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let new = hash_of(&sim.rollout);
    sim.peak_pods = 0;
    for _ in 0..40 {
        sim.reconcile();
        sim.pods_ready();
        if sim.status().phase == Phase::Healthy {
            break;
        }
    }
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.peak_pods, 12, "the surge reaches maxSurge");
    assert_eq!((sim.replicas_of(&new), sim.replicas_of(&old)), (10, 0));
    sim.assert_ok();
}

#[test]
fn a_missing_service_is_an_invalid_spec_and_changes_nothing() {
    let mut sim = Sim::new(blue_green_rollout(2, true));
    sim.services.remove("web-active");
    let plan = sim.reconcile();
    assert!(plan.scale_up.is_empty() && plan.selectors.is_empty() && plan.scale_down.is_empty());
    assert_eq!(plan.status.phase, Phase::Degraded);
    let condition = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec")
        .unwrap();
    assert_eq!(condition.status, "True");
    assert!(
        condition
            .message
            .contains("spec.strategy.blueGreen.activeService"),
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains("web-active"),
        "{}",
        condition.message
    );
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::InvalidSpec)
    );
    // The same invalid spec again: no second event.
    let again = sim.reconcile();
    assert!(again.events.is_empty());
}

#[test]
fn a_selector_that_misses_the_template_is_an_invalid_spec() {
    let mut r = rolling_rollout(2, 1, 0);
    r.spec.selector.match_labels = Some(BTreeMap::from([("app".into(), "other".into())]));
    let plan = plan(&r, &Observed::default(), Timestamp::UNIX_EPOCH);
    assert!(
        plan.status.message.starts_with("spec.selector"),
        "{}",
        plan.status.message
    );
    assert!(plan.scale_up.is_empty());
}

#[test]
fn the_progress_deadline_counts_only_waiting_and_aborts() {
    let mut r = canary_rollout(2, json!([{"setWeight": 50}, {"pause": {}}]));
    r.spec.progress_deadline_seconds = Some(60);
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    // Paused for a long time: no deadline.
    sim.settle();
    sim.advance(600);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    // Waiting for pods that never become ready.
    sim.decide(|d| d.promoted_step = Some(1));
    sim.reconcile();
    sim.advance(30);
    sim.reconcile();
    assert_eq!(sim.status().phase, Phase::Progressing);
    sim.advance(31);
    let plan = sim.reconcile();
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::ProgressDeadlineExceeded)
    );
    assert_eq!(sim.status().phase, Phase::Aborted);
}

#[test]
fn an_undo_to_an_old_template_reuses_its_replica_set_as_the_newest_revision() {
    let mut sim = deployed(rolling_rollout(2, 1, 0));
    let v1 = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    sim.settle();
    set_image(&mut sim.rollout, "web:1");
    sim.settle();
    assert_eq!(sim.status().stable_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(sim.rs(&v1).unwrap().revision, 3);
    assert_eq!(sim.replica_sets.len(), 2);
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let mut r = rolling_rollout(2, 1, 0);
    r.spec.revision_history_limit = Some(1);
    let mut sim = deployed(r);
    for image in ["web:2", "web:3", "web:4"] {
        set_image(&mut sim.rollout, image);
        sim.settle();
    }
    let current = hash_of(&sim.rollout);
    let revisions: Vec<u64> = sim.replica_sets.iter().map(|rs| rs.revision).collect();
    assert_eq!(
        sim.replica_sets.len(),
        2,
        "the current one and one old one: {revisions:?}"
    );
    assert_eq!(sim.rs(&current).map(|rs| rs.revision), Some(4));
    assert!(
        revisions.contains(&3),
        "the newest old revision is kept: {revisions:?}"
    );
}

// ---- property tests ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Event {
    Reconcile,
    PodsReady { replica_set: usize, count: i32 },
    PodUnready { replica_set: usize },
    Advance { seconds: i64 },
    Promote,
    PromoteFull,
    Abort,
    Retry,
    Pause(bool),
    NewTemplate { image: u8 },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Reconcile),
        4 => (0..4usize, 1..4i32).prop_map(|(replica_set, count)| Event::PodsReady { replica_set, count }),
        1 => (0..4usize).prop_map(|replica_set| Event::PodUnready { replica_set }),
        2 => (1..120i64).prop_map(|seconds| Event::Advance { seconds }),
        1 => Just(Event::Promote),
        1 => Just(Event::PromoteFull),
        1 => Just(Event::Abort),
        1 => Just(Event::Retry),
        1 => any::<bool>().prop_map(Event::Pause),
        1 => (1..4u8).prop_map(|image| Event::NewTemplate { image }),
    ]
}

fn play(mut sim: Sim, events: &[Event]) -> Sim {
    for event in events {
        match event {
            Event::Reconcile => {
                sim.reconcile();
            }
            Event::PodsReady { replica_set, count } => {
                if let Some(rs) = sim.replica_sets.get_mut(*replica_set) {
                    rs.ready = (rs.ready + count).min(rs.replicas);
                }
                sim.reconcile();
            }
            Event::PodUnready { replica_set } => {
                if let Some(rs) = sim.replica_sets.get_mut(*replica_set) {
                    rs.ready = (rs.ready - 1).max(0);
                }
                sim.reconcile();
            }
            Event::Advance { seconds } => {
                sim.advance(*seconds);
                sim.reconcile();
            }
            Event::Promote => {
                let step = sim.status().current_step_index.unwrap_or(0);
                sim.decide(|d| d.promoted_step = Some(step));
                sim.reconcile();
            }
            Event::PromoteFull => {
                sim.decide(|d| d.full = Some(true));
                sim.reconcile();
            }
            Event::Abort => {
                sim.decide(|d| d.abort = Some(true));
                sim.reconcile();
            }
            Event::Retry => {
                sim.decide(|d| {
                    d.abort = Some(false);
                    d.retry = Some(d.retry.unwrap_or(0) + 1);
                });
                sim.reconcile();
            }
            Event::Pause(paused) => {
                sim.rollout.spec.paused = Some(*paused);
                sim.reconcile();
            }
            Event::NewTemplate { image } => {
                set_image(&mut sim.rollout, &format!("web:{image}"));
                sim.reconcile();
            }
        }
        if sim.violation.is_some() {
            break;
        }
    }
    sim
}

/// After any history, a calm period (pods ready, decisions made) ends Healthy or Aborted, with
/// every pod on one version.
fn assert_converges(mut sim: Sim) {
    sim.rollout.spec.paused = Some(false);
    sim.decide(|d| d.full = Some(true));
    sim.advance(3600);
    sim.settle();
    // Past any scale-down delay the calm period may have started.
    sim.advance(120);
    sim.settle();
    let status = sim.status();
    assert!(
        matches!(status.phase, Phase::Healthy | Phase::Aborted),
        "{status:?}"
    );
    let stable = status.stable_revision.clone().unwrap_or_default();
    assert_eq!(
        sim.replicas_of(&stable),
        sim.rollout.spec.replicas,
        "{status:?}"
    );
    let others: i32 = sim
        .replica_sets
        .iter()
        .filter(|rs| rs.hash != stable)
        .map(|rs| rs.replicas)
        .sum();
    assert_eq!(others, 0, "{:?} {status:?}", sim.replica_sets);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn canary_invariants_hold(replicas in 1..8i32, events in proptest::collection::vec(event(), 1..60)) {
        let steps = json!([{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setCanaryScale": {"replicas": 1}},
                           {"setWeight": 60}, {"pause": {}}, {"setCanaryScale": {"matchTrafficWeight": true}}]);
        let sim = play(deployed(canary_rollout(replicas, steps)), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }

    #[test]
    fn routed_canary_invariants_hold(replicas in 1..8i32, events in proptest::collection::vec(event(), 1..60)) {
        let mut rollout = canary_rollout(replicas, json!([{"setWeight": 20}, {"pause": {"duration": "30s"}},
            {"setHeaderRoute": {"match": [{"headerName": "x", "headerValue": {"exact": "1"}}]}},
            {"setWeight": 60}, {"pause": {}}, {"setWeight": 30}, {"pause": {}}]));
        if let Some(c) = rollout.spec.strategy.canary.as_mut() {
            c.traffic_routing = Some(serde_json::from_value(json!({"gatewayAPI": {"httpRoute": "web"}})).unwrap());
        }
        let sim = play(deployed(rollout), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }

    #[test]
    fn blue_green_invariants_hold(replicas in 1..6i32, auto in any::<bool>(), events in proptest::collection::vec(event(), 1..60)) {
        let sim = play(deployed(blue_green_rollout(replicas, auto)), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }

    #[test]
    fn rolling_invariants_hold(replicas in 1..12i32, surge in 0..3i32, unavailable in 0..3i32,
                               events in proptest::collection::vec(event(), 1..60)) {
        let sim = play(deployed(rolling_rollout(replicas, surge, unavailable)), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }
}

// ---- analysis ----------------------------------------------------------------------------

fn error_rate() -> serde_json::Value {
    json!({"templates": [{"templateName": "error-rate"}]})
}

/// A 4-replica canary with an analysis step, Healthy on v1 and given v2.
fn analysed_canary(
    steps: serde_json::Value,
    background: Option<serde_json::Value>,
) -> (Sim, String) {
    let mut rollout = canary_rollout(4, steps);
    if let Some(canary) = rollout.spec.strategy.canary.as_mut() {
        canary.analysis = background.map(|b| serde_json::from_value(b).unwrap());
    }
    let mut sim = deployed(rollout);
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    (sim, canary)
}

#[test]
fn an_analysis_step_waits_for_its_run_and_goes_on_when_it_passes() {
    let (mut sim, canary) = analysed_canary(
        json!([{"setWeight": 25}, {"analysis": error_rate()}, {"setWeight": 50}]),
        None,
    );
    sim.settle();
    let run = format!("web-{canary}-1-2");
    assert_eq!(sim.run_names(), std::slice::from_ref(&run));
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.status().phase, Phase::Progressing);
    assert!(
        sim.status().message.contains(&run),
        "{}",
        sim.status().message
    );
    assert_eq!(sim.status().analysis_runs[0].kind, "step-1");
    assert_eq!(sim.status().canary.unwrap().weight, 25);
    sim.end_run(&run, RunPhase::Successful);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.status().stable_revision, Some(canary));
    assert!(sim.status().analysis_runs.is_empty());
    sim.assert_ok();
}

#[test]
fn a_failed_analysis_aborts_in_the_reconcile_that_sees_it() {
    let (mut sim, canary) = analysed_canary(
        json!([{"setWeight": 50}, {"analysis": error_rate()}, {"setWeight": 75}]),
        None,
    );
    sim.settle();
    let stable = sim.status().stable_revision.unwrap();
    let run = format!("web-{canary}-1-2");
    sim.advance(5);
    sim.end_run(&run, RunPhase::Failed);
    let plan = sim.reconcile();
    assert!(plan.status.abort);
    assert_eq!(plan.status.phase, Phase::Aborted);
    assert_eq!(plan.abort_latency_since, Some(sim.now));
    let event = plan
        .events
        .iter()
        .find(|e| e.reason == EventReason::AnalysisFailed)
        .unwrap();
    assert!(
        event.message.contains("metric errors Failed"),
        "{}",
        event.message
    );
    assert!(event.message.contains(&run), "{}", event.message);
    assert_eq!(sim.selector_of("web-canary"), Some(stable.clone()));
    assert_eq!(sim.replicas_of(&stable), 4);
    sim.settle();
    assert_eq!(sim.replicas_of(&canary), 0);
    assert_eq!(sim.status().phase, Phase::Aborted);
    // The failed run stays listed for people to see; nothing new is started.
    assert_eq!(sim.status().analysis_runs[0].phase, "Failed");
    assert_eq!(sim.run_names(), [run]);
    sim.assert_ok();
}

#[test]
fn an_inconclusive_analysis_pauses_until_the_step_is_promoted() {
    let (mut sim, canary) =
        analysed_canary(json!([{"setWeight": 25}, {"analysis": error_rate()}]), None);
    sim.settle();
    let run = format!("web-{canary}-1-2");
    sim.end_run(&run, RunPhase::Inconclusive);
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Paused);
    assert_eq!(
        plan.status.message,
        format!(
            "step 2/2: paused: analysis run {run} is inconclusive: metric errors Inconclusive; promote the step or abort"
        )
    );
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::AnalysisInconclusive)
    );
    assert!(
        plan.status
            .pause_conditions
            .iter()
            .any(|p| p.reason == pause::PauseReason::AnalysisInconclusive.as_str())
    );
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    sim.decide(|d| d.promoted_step = Some(1));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    sim.assert_ok();
}

#[test]
fn background_analysis_starts_at_its_step_and_stops_at_promotion() {
    let background = json!({"templates": [{"templateName": "error-rate"}], "startingStep": 1});
    let (mut sim, canary) = analysed_canary(
        json!([{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]),
        Some(background),
    );
    sim.settle();
    let run = format!("web-{canary}-bg-2");
    assert_eq!(sim.run_names(), std::slice::from_ref(&run));
    sim.decide(|d| d.promoted_step = Some(1));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert!(
        sim.runs[&run].terminating,
        "the background run is stopped at promotion"
    );
    sim.assert_ok();
}

#[test]
fn a_failing_background_analysis_aborts_at_any_step() {
    let background = json!({"templates": [{"templateName": "error-rate"}]});
    let (mut sim, canary) =
        analysed_canary(json!([{"setWeight": 25}, {"pause": {}}]), Some(background));
    sim.settle();
    let run = format!("web-{canary}-bg-2");
    sim.end_run(&run, RunPhase::Error);
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Aborted);
    // A retry is a new attempt, with runs of its own.
    sim.settle();
    sim.decide(|d| d.retry = Some(1));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert!(
        sim.runs.contains_key(&format!("web-{canary}-bg-3")),
        "{:?}",
        sim.run_names()
    );
    sim.assert_ok();
}

#[test]
fn blue_green_switches_after_pre_promotion_and_switches_back_when_post_promotion_fails() {
    let mut rollout = blue_green_rollout(3, true);
    if let Some(bg) = rollout.spec.strategy.blue_green.as_mut() {
        bg.pre_promotion_analysis = Some(serde_json::from_value(error_rate()).unwrap());
        bg.post_promotion_analysis = Some(serde_json::from_value(error_rate()).unwrap());
    }
    let mut sim = deployed(rollout);
    let old = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let new = hash_of(&sim.rollout);
    sim.settle();
    let pre = format!("web-{new}-pre-2");
    assert_eq!(sim.run_names(), std::slice::from_ref(&pre));
    assert_eq!(sim.selector_of("web-active"), Some(old.clone()));
    assert_eq!(sim.selector_of("web-preview"), Some(new.clone()));
    sim.end_run(&pre, RunPhase::Successful);
    sim.settle();
    let post = format!("web-{new}-post-2");
    assert!(sim.runs.contains_key(&post));
    assert_eq!(sim.selector_of("web-active"), Some(new.clone()), "switched");
    assert_eq!(
        sim.status().stable_revision,
        Some(old.clone()),
        "not stable yet"
    );
    assert_eq!(sim.replicas_of(&old), 3, "the old version stays whole");
    sim.end_run(&post, RunPhase::Failed);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted);
    assert_eq!(
        sim.selector_of("web-active"),
        Some(old.clone()),
        "switched back"
    );
    sim.assert_ok();
}

#[test]
fn rolling_background_analysis_gates_and_aborts() {
    let mut rollout = rolling_rollout(4, 1, 0);
    if let Some(rolling) = rollout.spec.strategy.rolling_update.as_mut() {
        rolling.analysis = Some(serde_json::from_value(error_rate()).unwrap());
    }
    let mut sim = deployed(rollout);
    let old = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let new = hash_of(&sim.rollout);
    sim.reconcile();
    sim.pods_ready();
    let run = format!("web-{new}-bg-2");
    sim.end_run(&run, RunPhase::Failed);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted);
    assert_eq!(sim.replicas_of(&old), 4);
    assert_eq!(sim.replicas_of(&new), 0);
    sim.assert_ok();
}

#[test]
fn a_missing_template_is_an_invalid_spec_and_starts_nothing() {
    let (mut sim, _) =
        analysed_canary(json!([{"setWeight": 25}, {"analysis": error_rate()}]), None);
    if let Some(canary) = sim.rollout.spec.strategy.canary.as_mut() {
        canary.steps[1] =
            serde_json::from_value(json!({"analysis": {"templates": [{"templateName": "nope"}]}}))
                .unwrap();
    }
    let before = sim.replica_sets.len();
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Degraded);
    assert!(
        plan.status.message.starts_with(
            "spec.strategy.canary.steps[1].analysis.templates[0].templateName: AnalysisTemplate nope not found"
        ),
        "{}",
        plan.status.message
    );
    assert!(plan.create_runs.is_empty() && plan.scale_up.is_empty());
    assert_eq!(sim.replica_sets.len(), before);
}

// ---- traffic routers ---------------------------------------------------------------------

fn routed_canary(steps: serde_json::Value) -> Rollout {
    rollout(
        json!({"canary": {"steps": steps, "maxSurge": 1, "maxUnavailable": 0,
                           "stableService": "web-stable", "canaryService": "web-canary",
                           "trafficRouting": {"nginx": {"stableIngress": "web"}}}}),
        4,
    )
}

#[test]
fn with_a_router_stable_stays_whole_and_weight_follows_ready_canary_pods() {
    let steps = json!([{"setWeight": 25},
                       {"setHeaderRoute": {"match": [{"headerName": "X-Canary", "headerValue": {"exact": "1"}}]}},
                       {"pause": {}}, {"setWeight": 75}, {"pause": {}}]);
    let mut sim = deployed(routed_canary(steps));
    let stable = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    let plan = sim.reconcile();
    assert_eq!(
        plan.traffic
            .as_ref()
            .unwrap()
            .state
            .as_ref()
            .unwrap()
            .canary_weight,
        0
    );
    assert_eq!(sim.replicas_of(&canary), 1);
    assert_eq!(sim.replicas_of(&stable), 4);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(2));
    let plan = sim.reconcile();
    let state = plan.traffic.unwrap().state.unwrap();
    assert_eq!(state.canary_weight, 25);
    assert_eq!(
        state.routes.len(),
        1,
        "the header route is in force after its step"
    );
    assert_eq!(
        sim.replicas_of(&stable),
        4,
        "stable stays whole with a router"
    );
    sim.decide(|d| d.promoted_step = Some(2));
    sim.settle();
    assert_eq!(sim.status().canary.unwrap().weight, 75);
    assert_eq!(sim.replicas_of(&canary), 3);
    sim.decide(|d| d.promoted_step = Some(4));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.selector_of("web-stable"), Some(canary.clone()));
    assert_eq!(
        sim.reconcile().traffic.unwrap().state,
        None,
        "canary Ingress removed"
    );
    assert_eq!(sim.replicas_of(&stable), 4, "the old version drains first");
    sim.advance(31);
    sim.settle();
    assert_eq!(sim.replicas_of(&stable), 0);
    sim.assert_ok();
}

#[test]
fn with_a_router_an_abort_takes_all_traffic_at_once_and_keeps_the_canary_a_while() {
    let mut sim = deployed(routed_canary(json!([{"setWeight": 50}, {"pause": {}}])));
    let stable = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.status().canary.unwrap().weight, 50);
    sim.decide(|d| d.abort = Some(true));
    let plan = sim.reconcile();
    assert_eq!(plan.traffic.unwrap().state, None);
    assert_eq!(
        sim.replicas_of(&canary),
        2,
        "kept for abortScaleDownDelaySeconds"
    );
    assert_eq!(sim.replicas_of(&stable), 4);
    sim.advance(31);
    sim.settle();
    assert_eq!(sim.replicas_of(&canary), 0);
    sim.assert_ok();
}

#[test]
fn a_header_route_nginx_cannot_express_is_an_invalid_spec() {
    let steps = json!([{"setHeaderRoute": {"match": [
        {"headerName": "a", "headerValue": {"exact": "1"}},
        {"headerName": "b", "headerValue": {"exact": "2"}}]}}]);
    let sim = Sim::new(routed_canary(steps));
    let plan = plan(&sim.rollout, &sim.observed(), sim.now);
    assert_eq!(plan.status.phase, Phase::Degraded);
    assert!(
        plan.status
            .message
            .starts_with("spec.strategy.canary.steps[0].setHeaderRoute: "),
        "{}",
        plan.status.message
    );
}

// ---- A/B ---------------------------------------------------------------------------------

fn ab_rollout(router: serde_json::Value, matches: serde_json::Value, promote: &str) -> Rollout {
    rollout(
        json!({"abTest": {"stableService": "web-stable", "canaryService": "web-canary",
                          "trafficRouting": router, "match": matches, "duration": "10m",
                          "analysis": error_rate(), "promote": promote}}),
        3,
    )
}

fn gateway() -> serde_json::Value {
    json!({"gatewayAPI": {"httpRoute": "web"}})
}

#[test]
fn an_ab_test_routes_matching_requests_to_b_then_promotes_it_when_it_passes() {
    let matches =
        json!([{"headers": [{"name": "X-Canary", "exact": "always"}]}, {"cookie": "canary"}]);
    let mut sim = deployed(ab_rollout(gateway(), matches, "auto"));
    let a = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let b = hash_of(&sim.rollout);
    let plan = sim.reconcile();
    assert_eq!(
        plan.traffic.unwrap().state,
        None,
        "nothing goes to B before it is ready"
    );
    sim.settle();
    assert_eq!((sim.replicas_of(&a), sim.replicas_of(&b)), (3, 3));
    assert_eq!(sim.selector_of("web-canary"), Some(b.clone()));
    let state = sim.reconcile().traffic.unwrap().state.unwrap();
    assert_eq!(state.canary_weight, 0);
    assert_eq!(state.routes.len(), 2);
    let run = format!("web-{b}-ab-2");
    assert!(sim.runs.contains_key(&run));
    // The run passing early is not enough: the test lasts its duration.
    sim.end_run(&run, RunPhase::Successful);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Progressing);
    sim.advance(601);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.selector_of("web-stable"), Some(b.clone()));
    assert_eq!(
        sim.reconcile().traffic.unwrap().state,
        None,
        "the B routes are removed"
    );
    sim.advance(31);
    sim.settle();
    assert_eq!(sim.replicas_of(&a), 0);
    sim.assert_ok();
}

#[test]
fn a_manual_ab_test_waits_for_a_decision_and_a_failed_one_aborts() {
    let matches = json!([{"cookie": "canary"}]);
    let mut sim = deployed(ab_rollout(gateway(), matches, "manual"));
    set_image(&mut sim.rollout, "web:2");
    let b = hash_of(&sim.rollout);
    sim.settle();
    let run = format!("web-{b}-ab-2");
    sim.advance(601);
    sim.settle();
    assert!(
        sim.runs[&run].terminating,
        "time is up: the run is stopped and decides"
    );
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert!(
        sim.status().message.contains("waiting for promotion"),
        "{}",
        sim.status().message
    );
    sim.decide(|d| d.promoted_step = Some(0));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);

    set_image(&mut sim.rollout, "web:3");
    let c = hash_of(&sim.rollout);
    sim.settle();
    sim.end_run(&format!("web-{c}-ab-3"), RunPhase::Failed);
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Aborted);
    assert_eq!(plan.traffic.unwrap().state, None);
    sim.assert_ok();
}

#[test]
fn an_ab_match_nginx_cannot_express_is_an_invalid_spec() {
    let matches = json!([{"headers": [{"name": "a", "exact": "1"}, {"name": "b", "prefix": "x"}]}]);
    let sim = Sim::new(ab_rollout(
        json!({"nginx": {"stableIngress": "web"}}),
        matches,
        "auto",
    ));
    let plan = plan(&sim.rollout, &sim.observed(), sim.now);
    assert_eq!(plan.status.phase, Phase::Degraded);
    assert!(
        plan.status
            .message
            .starts_with("spec.strategy.abTest.match: "),
        "{}",
        plan.status.message
    );
}
