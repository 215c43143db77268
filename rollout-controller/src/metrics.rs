//! The controller's own metrics (names as in docs/API.md), served on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub namespace: String,
    pub name: String,
    pub strategy: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeasurementLabels {
    pub metric: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverLabels {
    /// `acquired` or `released`.
    pub transition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

pub struct Metrics {
    pub registry: Registry,
    info: Family<InfoLabels, Gauge>,
    step: Family<RolloutLabels, Gauge>,
    canary_weight: Family<RolloutLabels, Gauge>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub aborts: Family<ReasonLabels, Counter>,
    pub transitions: Family<ReasonLabels, Counter>,
    pub api_writes: Family<KindLabels, Counter>,
    pub measurements: Family<MeasurementLabels, Counter>,
    /// From the Fail verdict (the run's end) to traffic on stable.
    pub abort_latency: Histogram,
    /// 1 while this replica holds the leader lease, or with shards any shard's lease (or runs
    /// without election), 0 otherwise.
    pub leader: Gauge,
    /// Watched objects the controller cannot decode, by kind.
    pub undecodable_objects: Family<KindLabels, Gauge>,
    /// Shard leases this replica holds (with `--shards`).
    pub shards_held: Gauge,
    /// The shards the rollouts are spread over (`--shards`; 1 without): every replica says the
    /// same, and an alert compares it with the leases held across the replicas.
    pub shards: Gauge,
    /// Shard leases this replica acquired or released.
    pub shard_handovers: Family<HandoverLabels, Counter>,
    /// The info series each rollout has now, so that a phase change replaces it.
    current_info: Mutex<HashMap<RolloutLabels, InfoLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let info = Family::<InfoLabels, Gauge>::default();
        let step = Family::<RolloutLabels, Gauge>::default();
        let canary_weight = Family::<RolloutLabels, Gauge>::default();
        let reconcile_duration = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        let aborts = Family::<ReasonLabels, Counter>::default();
        let transitions = Family::<ReasonLabels, Counter>::default();
        let api_writes = Family::<KindLabels, Counter>::default();
        let measurements = Family::<MeasurementLabels, Counter>::default();
        let abort_latency = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]);
        let leader = Gauge::default();
        let undecodable_objects = Family::<KindLabels, Gauge>::default();
        let shards_held = Gauge::default();
        let shards = Gauge::default();
        let shard_handovers = Family::<HandoverLabels, Counter>::default();
        registry.register(
            "rollout_info",
            "Each rollout, with its strategy and phase",
            info.clone(),
        );
        registry.register("rollout_step", "Index of the current step", step.clone());
        registry.register(
            "rollout_canary_weight",
            "Percentage of traffic on the canary",
            canary_weight.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        registry.register("aborts", "Rollouts aborted, by reason", aborts.clone());
        registry.register(
            "rollout_transitions",
            "Rollout transitions (Events), by reason",
            transitions.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API, by kind of object",
            api_writes.clone(),
        );
        registry.register(
            "analysis_measurements",
            "Analysis measurements, by metric and verdict",
            measurements.clone(),
        );
        registry.register(
            "abort_latency_seconds",
            "From a failed analysis to all traffic on stable",
            abort_latency.clone(),
        );
        registry.register(
            "leader",
            "1 on a replica that holds the leader lease (with shards: a shard lease), 0 on the others",
            leader.clone(),
        );
        registry.register(
            "undecodable_objects",
            "Watched objects the controller cannot decode, by kind; rollouts that use one are Degraded",
            undecodable_objects.clone(),
        );
        registry.register(
            "shards_held",
            "Shard leases this replica holds",
            shards_held.clone(),
        );
        registry.register(
            "shards",
            "The shards rollouts are spread over (--shards)",
            shards.clone(),
        );
        registry.register(
            "shard_handovers",
            "Shard leases this replica acquired or released, by transition",
            shard_handovers.clone(),
        );
        Self {
            registry,
            info,
            step,
            canary_weight,
            reconcile_duration,
            reconcile_errors,
            aborts,
            transitions,
            api_writes,
            measurements,
            abort_latency,
            leader,
            undecodable_objects,
            shards_held,
            shards,
            shard_handovers,
            current_info: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn observe_rollout(&self, info: InfoLabels, step: i64, weight: i64) {
        let key = RolloutLabels {
            namespace: info.namespace.clone(),
            name: info.name.clone(),
        };
        let mut current = self.current_info.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = current.insert(key.clone(), info.clone())
            && previous != info
        {
            self.info.remove(&previous);
        }
        self.info.get_or_create(&info).set(1);
        self.step.get_or_create(&key).set(step);
        self.canary_weight.get_or_create(&key).set(weight);
    }

    pub fn forget_rollout(&self, namespace: &str, name: &str) {
        let key = RolloutLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut current = self.current_info.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = current.remove(&key) {
            self.info.remove(&previous);
        }
        self.step.remove(&key);
        self.canary_weight.remove(&key);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

pub fn handover(transition: &str) -> HandoverLabels {
    HandoverLabels {
        transition: transition.to_owned(),
    }
}

pub fn kind(kind: &str) -> KindLabels {
    KindLabels {
        kind: kind.to_owned(),
    }
}

pub fn reason(reason: &str) -> ReasonLabels {
    ReasonLabels {
        reason: reason.to_owned(),
    }
}
