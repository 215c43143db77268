//! The load generator plays ingress-nginx and its clients at once. No ingress controller runs on
//! this cluster, so it reads what one would — the stable Ingress, the canary Ingress Sluice
//! writes (its `canary-weight`), the EndpointSlices of the Services they name — and sends that
//! share of a steady stream of requests to the canary's pods and the rest to stable's. A pod is
//! reached on its own IP, where the pod runner runs its demo-app, and only while the network
//! namespace the runner made for it exists.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::console::Console;
use crate::observe::Watched;
use crate::pods::{self, Networks, RunningPod};

const ANNOTATION_PREFIX: &str = "nginx.ingress.kubernetes.io";
/// Requests in flight at once; beyond that a request is dropped (and counted), never queued.
const MAX_IN_FLIGHT: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests by version, as the clients saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VersionCounts {
    pub sent: u64,
    /// 5xx answers.
    pub errors: u64,
    /// No answer (connection refused, timeout).
    pub failed: u64,
}

/// Where requests go now, as an ingress controller would work it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routing {
    pub stable_service: Option<String>,
    /// The canary Ingress: its name, Service, weight and weight total.
    pub canary: Option<CanaryRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CanaryRoute {
    pub ingress: String,
    pub service: String,
    pub weight: u64,
    pub total: u64,
}

impl CanaryRoute {
    fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.weight as f64 * 100.0 / self.total as f64
        }
    }
}

/// When the routing changed, for the summary's abort latency.
#[derive(Debug, Clone)]
pub(crate) struct RoutingChange {
    pub at: SystemTime,
    pub routing: Routing,
}

#[derive(Default)]
pub(crate) struct LoadStats {
    by_version: Mutex<BTreeMap<String, VersionCounts>>,
    /// Requests for a Service without a ready endpoint (NGINX would answer 503).
    pub no_endpoint: AtomicU64,
    /// Requests dropped because too many were in flight.
    pub dropped: AtomicU64,
    changes: Mutex<Vec<RoutingChange>>,
}

impl LoadStats {
    pub(crate) fn by_version(&self) -> BTreeMap<String, VersionCounts> {
        lock(&self.by_version).clone()
    }

    pub(crate) fn routing_changes(&self) -> Vec<RoutingChange> {
        lock(&self.changes).clone()
    }

    pub(crate) fn routing(&self) -> Option<Routing> {
        lock(&self.changes).last().map(|c| c.routing.clone())
    }

    fn record(&self, version: &str, outcome: Outcome) {
        let mut counts = lock(&self.by_version);
        let entry = counts.entry(version.to_owned()).or_default();
        match outcome {
            Outcome::Sent => entry.sent += 1,
            Outcome::Error => entry.errors += 1,
            Outcome::Failed => entry.failed += 1,
        }
    }
}

enum Outcome {
    Sent,
    Error,
    Failed,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; counters stay usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct LoadGenerator {
    pub rate: f64,
    pub stable_ingress: String,
    pub stats: Arc<LoadStats>,
    pub console: Console,
}

impl LoadGenerator {
    /// Sends `rate` requests a second until dropped; returns only if the HTTP client cannot be
    /// built.
    pub(crate) async fn run(
        &self,
        ingresses: &Watched<Ingress>,
        slices: &Watched<EndpointSlice>,
        pods: &Watched<Pod>,
        networks: &Networks,
    ) -> anyhow::Error {
        let client = match reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
        {
            Ok(client) => client,
            Err(e) => return anyhow::anyhow!("building the load generator's HTTP client: {e}"),
        };
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate.max(1.0)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Smooth weighted split: the canary gets exactly weight/total of the requests, spread
        // evenly, so each look of the analysis sees the share Sluice set.
        let mut credit: u64 = 0;
        let mut turn: BTreeMap<String, usize> = BTreeMap::new();
        // Clients arrive once the site is up: until stable first has a ready endpoint, a
        // request without one is not sent and not counted as a 503.
        let mut up = false;
        loop {
            tick.tick().await;
            let routing = routing(&self.stable_ingress, &ingresses.state());
            self.note(&routing);
            let service = match &routing.canary {
                Some(canary) if canary.total > 0 => {
                    credit += canary.weight.min(canary.total);
                    if credit >= canary.total {
                        credit -= canary.total;
                        Some(canary.service.clone())
                    } else {
                        routing.stable_service.clone()
                    }
                }
                _ => routing.stable_service.clone(),
            };
            let backends = service
                .as_deref()
                .map(|s| {
                    let running = pods::running(&pods.state());
                    ready_backends(s, &slices.state(), &running)
                        .into_iter()
                        .filter(|b| networks.owns(&b.pod))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let Some(service) = service.filter(|_| !backends.is_empty()) else {
                if up {
                    self.stats.no_endpoint.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            };
            up = true;
            let n = turn.entry(service).or_insert(0);
            let backend = backends[*n % backends.len()].clone();
            *n = n.wrapping_add(1);
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let client = client.clone();
            let stats = self.stats.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let version = &backend.pod.version;
                stats.record(version, Outcome::Sent);
                let url = format!("http://{}:{}/", backend.pod.ip, backend.port);
                match client.get(&url).send().await {
                    Ok(response) if response.status().is_server_error() => {
                        stats.record(version, Outcome::Error)
                    }
                    Ok(_) => {}
                    Err(_) => stats.record(version, Outcome::Failed),
                }
            });
        }
    }

    /// Records and tells a change of where traffic goes.
    fn note(&self, routing: &Routing) {
        let mut changes = lock(&self.stats.changes);
        if changes.last().map(|c| &c.routing) == Some(routing) {
            return;
        }
        let previous = changes.last().and_then(|c| c.routing.canary.clone());
        changes.push(RoutingChange {
            at: SystemTime::now(),
            routing: routing.clone(),
        });
        drop(changes);
        let stable = routing.stable_service.as_deref().unwrap_or("(none)");
        match (&routing.canary, previous) {
            (Some(canary), _) => self.console.say(format!(
                "traffic: Ingress {} sends {:.0}% to {}, the rest to {stable}",
                canary.ingress,
                canary.percent(),
                canary.service
            )),
            (None, Some(old)) => self.console.say(format!(
                "traffic: canary Ingress {} is gone: all requests to {stable}",
                old.ingress
            )),
            (None, None) => self
                .console
                .say(format!("traffic: all requests to {stable}")),
        }
    }
}

/// The stable Ingress's Service, and the canary Ingress beside it, if any.
pub(crate) fn routing(stable_ingress: &str, ingresses: &[Arc<Ingress>]) -> Routing {
    let stable_service = ingresses
        .iter()
        .find(|i| i.name_any() == stable_ingress)
        .and_then(|i| first_service(i));
    let canary = ingresses
        .iter()
        .filter(|i| annotation(i, "canary").as_deref() == Some("true"))
        .filter_map(|i| {
            Some(CanaryRoute {
                ingress: i.name_any(),
                service: first_service(i)?,
                weight: annotation(i, "canary-weight")
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(0),
                total: annotation(i, "canary-weight-total")
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(100),
            })
        })
        .min_by(|a, b| a.ingress.cmp(&b.ingress));
    Routing {
        stable_service,
        canary,
    }
}

fn annotation(ingress: &Ingress, key: &str) -> Option<String> {
    ingress
        .annotations()
        .get(&format!("{ANNOTATION_PREFIX}/{key}"))
        .cloned()
}

fn first_service(ingress: &Ingress) -> Option<String> {
    ingress
        .spec
        .as_ref()?
        .rules
        .iter()
        .flatten()
        .filter_map(|rule| rule.http.as_ref())
        .flat_map(|http| http.paths.iter())
        .find_map(|path| path.backend.service.as_ref().map(|s| s.name.clone()))
}

/// A ready endpoint of a Service: the pod behind it and the port its slice names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    pub pod: RunningPod,
    pub port: u16,
}

/// The running pods behind the ready endpoints of `service`, in a stable order.
pub(crate) fn ready_backends(
    service: &str,
    slices: &[Arc<EndpointSlice>],
    running: &[RunningPod],
) -> Vec<Backend> {
    let mut backends: Vec<Backend> = slices
        .iter()
        .filter(|s| {
            s.labels()
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                == Some(service)
        })
        .filter_map(|s| {
            let port = s.ports.as_ref()?.first()?.port?;
            Some((s, u16::try_from(port).ok()?))
        })
        .flat_map(|(s, port)| s.endpoints.iter().flatten().map(move |e| (e, port)))
        // The API says an unknown readiness is to be taken as ready.
        .filter(|(e, _)| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|(e, port)| {
            let target = e.target_ref.as_ref()?;
            if target.kind.as_deref() != Some("Pod") {
                return None;
            }
            let name = target.name.as_deref()?;
            let pod = running.iter().find(|p| p.name == name)?;
            // The slice must say the address the pod has: a pod re-created under its old name
            // has a new IP and namespace.
            e.addresses.contains(&pod.ip.to_string()).then(|| Backend {
                pod: pod.clone(),
                port,
            })
        })
        .collect();
    backends.sort_unstable_by(|a, b| a.pod.name.cmp(&b.pod.name));
    backends.dedup();
    backends
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(name: &str, service: &str, annotations: serde_json::Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": annotations},
                "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_canary_ingress_weight_splits_traffic() {
        let ingresses = [
            ingress("web", "web-stable", json!({})),
            ingress(
                "web-web-canary",
                "web-canary",
                json!({"nginx.ingress.kubernetes.io/canary": "true",
                       "nginx.ingress.kubernetes.io/canary-weight": "20"}),
            ),
        ];
        let split = routing("web", &ingresses);
        assert_eq!(split.stable_service.as_deref(), Some("web-stable"));
        let canary = split.canary.unwrap();
        assert_eq!((canary.weight, canary.total), (20, 100));
        assert_eq!(canary.service, "web-canary");
        assert_eq!(routing("web", &ingresses[..1]).canary, None);
    }

    #[test]
    fn only_ready_endpoints_of_running_pods_at_their_addresses_get_requests() {
        let slice: Arc<EndpointSlice> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web-stable-x", "labels": {"kubernetes.io/service-name": "web-stable"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["198.18.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "a"}},
                    {"addresses": ["198.18.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "b"}},
                    {"addresses": ["198.18.0.3"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "c"}},
                    {"addresses": ["198.18.0.9"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "d"}},
                ],
            }))
            .unwrap(),
        );
        let pod = |name: &str, last: u8| RunningPod {
            name: name.into(),
            ip: std::net::Ipv4Addr::new(198, 18, 0, last),
            hash: "h".into(),
            version: "v1".into(),
            namespace: format!("sluice-{name}"),
        };
        // c has no running pod; d runs at another address than its endpoint says.
        let running = [pod("a", 1), pod("b", 2), pod("d", 4)];
        assert_eq!(
            ready_backends("web-stable", std::slice::from_ref(&slice), &running),
            vec![Backend {
                pod: pod("a", 1),
                port: 8080
            }]
        );
        assert!(ready_backends("web-canary", &[slice], &running).is_empty());
    }
}
