//! Routers that move traffic between versions of a workload. Each edits only what it owns in
//! the user's objects. This crate knows nothing of Rollouts: it takes plain names and values.
//!
//! Routers: Service selectors (a Service points at one version's pods through the
//! pod-template-hash label, the rest of its selector left alone), ingress-nginx canary Ingresses
//! ([`nginx`]) and Gateway API HTTPRoute weights and header rules ([`gateway`]). The last two
//! are [`TrafficRouter`]s, picked from a rollout's `trafficRouting` by [`Router::for_routing`].

pub mod gateway;
pub mod nginx;
pub mod router;
pub mod spec;

pub use router::{Applied, Router, TrafficRouter};
pub use spec::{Backends, RequestMatch, SetHeaderRoute, TrafficRouting, TrafficState, ValueMatch};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Why a traffic change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("Service {namespace}/{name} not found")]
    ServiceNotFound { namespace: String, name: String },
    #[error("{kind} {namespace}/{name}: {source}")]
    Api {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {name} does not send traffic to Service {service}")]
    NotReferenced {
        kind: &'static str,
        name: String,
        service: String,
    },
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
    #[error("{kind} {name} kept changing under us; will try again")]
    Conflict { kind: &'static str, name: String },
    #[error("{kind} {name}: the patch Sluice built is not a JSON patch: {source}")]
    Patch {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

impl TrafficError {
    /// Errors that describe the user's objects or spec (not a failing API): the rollout is
    /// marked InvalidSpec with this message, and nothing is changed.
    pub fn is_invalid_spec(&self) -> bool {
        matches!(
            self,
            TrafficError::ServiceNotFound { .. }
                | TrafficError::NotFound { .. }
                | TrafficError::NotReferenced { .. }
                | TrafficError::Unsupported { .. }
        )
    }
}

pub(crate) fn api_error(
    kind: &'static str,
    namespace: &str,
    name: &str,
    source: kube::Error,
) -> TrafficError {
    TrafficError::Api {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    }
}

/// Points Services at one version's pods through their selectors.
#[derive(Clone)]
pub struct ServiceSelectorRouter {
    services: Api<Service>,
    namespace: String,
    field_manager: String,
}

impl ServiceSelectorRouter {
    pub fn new(client: kube::Client, namespace: &str, field_manager: &str) -> Self {
        Self {
            services: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            field_manager: field_manager.to_owned(),
        }
    }

    /// Sets `label=value` in `service`'s selector, keeping every other key the user wrote. A
    /// merge patch of that one key: it never creates a Service that is not there.
    pub async fn select(
        &self,
        service: &str,
        label: &str,
        value: &str,
    ) -> Result<(), TrafficError> {
        let patch = selector_patch(label, value);
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        match self
            .services
            .patch(service, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(TrafficError::ServiceNotFound {
                    namespace: self.namespace.clone(),
                    name: service.to_owned(),
                })
            }
            Err(source) => Err(api_error("Service", &self.namespace, service, source)),
        }
    }
}

/// The merge patch that adds or replaces one selector key.
pub fn selector_patch(label: &str, value: &str) -> serde_json::Value {
    json!({"spec": {"selector": {label: value}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_touches_one_selector_key_only() {
        assert_eq!(
            selector_patch("rollouts-pod-template-hash", "abc"),
            json!({"spec": {"selector": {"rollouts-pod-template-hash": "abc"}}})
        );
    }
}
