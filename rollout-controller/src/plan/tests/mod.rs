//! The plan's tests: the fixtures (Rollout builders) and a small simulated cluster that carries
//! plans out write by write, checking the invariants of docs/ARCHITECTURE.md after each; the
//! tests themselves are in one file per strategy and per concern beside this one.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::replicas::{Bounds, bounds, replicas_for_weight};
use super::writes::Write;
use super::*;
use crate::crd::{Decision, POD_TEMPLATE_HASH_LABEL, PodMetadata};
use ::analysis::lifecycle::Phase as RunPhase;

mod ab_test;
mod bad_input;
mod blue_green;
mod canary;
mod decisions;
mod one_service;
mod progress_deadline;
mod properties;
mod revisions;
mod rolling;

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
    /// Scaled to zero and labelled retired: out of the watch, so out of what is observed.
    retired: Vec<SimReplicaSet>,
    services: BTreeMap<String, BTreeMap<String, String>>,
    now: Timestamp,
    /// API writes, as the controller makes them: a router write only where it differs, a status
    /// only when it changed (counts alone held back), the Events of a reconcile as one.
    writes: usize,
    /// The most pods that existed at once.
    peak_pods: i32,
    /// The first invariant broken, if any.
    violation: Option<String>,
    runs: BTreeMap<String, ObservedRun>,
    templates: BTreeMap<TemplateKey, AnalysisTemplateSpec>,
    /// The router's state as last written; `None`: everything on stable.
    router: Option<traffic::TrafficState>,
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
            retired: Vec::new(),
            services,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            writes: 0,
            peak_pods: 0,
            router: None,
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
            router: None,
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
        if target.retire && (target.replicas != 0 || target.create) {
            self.violate(format!(
                "ReplicaSet {} retired at {} replicas (create: {})",
                target.hash, target.replicas, target.create
            ));
        }

        // The controller creates or patches as the plan says, asking the apiserver nothing.
        if target.create == self.rs(&target.hash).is_some() {
            self.violate(format!(
                "ReplicaSet {} planned with create: {} while it {}",
                target.hash,
                target.create,
                if target.create {
                    "exists"
                } else {
                    "does not exist"
                }
            ));
        }
        // Written as new, a retired one is there again: its revision and replicas as planned.
        if target.create
            && let Some(at) = self.retired.iter().position(|rs| rs.hash == target.hash)
        {
            let mut back = self.retired.remove(at);
            back.ready = 0;
            back.replicas = 0;
            self.replica_sets.push(back);
        }
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
        if target.retire
            && let Some(at) = self
                .replica_sets
                .iter()
                .position(|rs| rs.hash == target.hash)
        {
            let gone = self.replica_sets.remove(at);
            self.retired.push(gone);
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

    /// One reconcile: plan, then each write in the order `Plan::writes` gives, the one the
    /// controller makes them in, checking after each.
    fn reconcile(&mut self) -> Plan {
        let plan = plan(&self.rollout, &self.observed(), self.now);
        let aborting = plan.status.abort;
        for write in plan.writes() {
            match write {
                Write::ScaleUp { target, .. } | Write::ScaleDown(target) => {
                    let status = &plan.status;
                    if target.retire
                        && (Some(&target.hash) == status.updated_revision.as_ref()
                            || Some(&target.hash) == status.stable_revision.as_ref())
                    {
                        self.violate(format!("ReplicaSet {} retired in use", target.hash));
                    }
                    self.write_replicas(target, aborting);
                }
                Write::PodMetadata(change) => self.write_pod_metadata(change),
                Write::Selector(change) => self.write_selector(change),
                Write::Traffic(traffic) => {
                    self.write_traffic(traffic, plan.status.updated_revision.as_deref());
                }
                Write::DeleteReplicaSet(name) => {
                    self.writes += 1;
                    self.replica_sets
                        .retain(|rs| format!("web-{}", rs.hash) != name);
                }
                Write::PruneHistory { limit } => {
                    self.retired
                        .sort_by_key(|rs| std::cmp::Reverse(rs.revision));
                    let deleted = self.retired.len().saturating_sub(limit);
                    self.retired.truncate(limit);
                    self.writes += deleted;
                }
                Write::CreateRun(new) => {
                    self.writes += 1;
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
                Write::TerminateRun(name) => {
                    self.writes += 1;
                    if let Some(run) = self.runs.get_mut(name) {
                        run.terminating = true;
                        run.phase = RunPhase::Successful;
                    }
                }
                Write::DeleteRun(name) => {
                    self.writes += 1;
                    self.runs.remove(name);
                }
                // Held back, as the controller holds it until a transition or
                // COUNTS_WRITE_DELAY: the planner decides nothing from counts, so planning on
                // from the status without them is planning from what the cluster has.
                Write::Status {
                    counts_only: true, ..
                } => {}
                Write::Status { status, .. } => {
                    self.writes += 1;
                    self.check_status(status);
                    self.rollout.status = Some(status.clone());
                }
                Write::Events(_) => self.writes += 1,
                // Not simulated: the abort latency metric and restarts (pods are counts here).
                Write::TrafficOnStable { .. } | Write::RestartPod(_) => {}
            }
        }
        plan
    }

    fn write_pod_metadata(&mut self, change: &PodMetadataChange) {
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

    /// A router's weight only ever points at a canary with the pods for its share, when it is
    /// written. The router writes only what differs.
    fn write_traffic(&mut self, traffic: &TrafficPlan, updated: Option<&str>) {
        if let (Some(state), Some(updated)) = (traffic.state.as_ref(), updated) {
            let need = replicas_for_weight(state.canary_weight, self.rollout.spec.replicas);
            if self.ready_of(updated) < need {
                self.violate(format!(
                    "router weight {} with {} ready canary pods (needs {need})",
                    state.canary_weight,
                    self.ready_of(updated)
                ));
            }
        }
        if self.router != traffic.state {
            self.writes += 1;
            self.router = traffic.state.clone();
        }
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

    /// Reconciles with every pod becoming ready in between, until nothing changes. (Pods that
    /// became ready are a change even when the status holds their counts back.)
    fn settle(&mut self) {
        let pods = |sim: &Sim| {
            sim.replica_sets
                .iter()
                .map(|r| (r.replicas, r.ready))
                .collect::<Vec<_>>()
        };
        for _ in 0..50 {
            let before = (self.status(), pods(self));
            self.reconcile();
            self.pods_ready();
            let after = (self.status(), pods(self));
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

// ---- playing events ----------------------------------------------------------------------

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
