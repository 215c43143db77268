//! The interface the controller moves traffic through: plain inputs in (names, a weight, request
//! matches), the router's own objects read and written behind it.

use std::future::Future;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::TrafficError;
use crate::gateway::GatewayRouter;
use crate::nginx::NginxRouter;
use crate::spec::{Backends, TrafficRouting, TrafficState};

/// What [`TrafficRouter::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The router's objects already were in the state asked for: nothing was written.
    Unchanged,
    /// One object of this kind was written (for the caller's count of API writes by kind).
    Wrote(&'static str),
}

/// A router that splits traffic between the stable and the canary Service.
///
/// The futures are `Send` so that a controller can drive them from its reconcile tasks.
pub trait TrafficRouter {
    /// Reads the user's object the router starts from and says what is wrong with it for these
    /// backends: an error for which [`TrafficError::is_invalid_spec`] holds, or a failing API.
    fn check(&self, backends: &Backends) -> impl Future<Output = Result<(), TrafficError>> + Send;

    /// Brings the router to `state`, out of `max_weight` for all traffic. `None`: everything
    /// back on the stable Service, and what Sluice made for the canary removed. Writes only
    /// what differs.
    fn apply(
        &self,
        backends: &Backends,
        state: Option<&TrafficState>,
        max_weight: i32,
    ) -> impl Future<Output = Result<Applied, TrafficError>> + Send;
}

/// The router a rollout's `trafficRouting` names. An enum rather than a trait object: the
/// trait's methods return `impl Future`, which a `dyn` cannot.
pub enum Router {
    Nginx(NginxRouter),
    GatewayApi(GatewayRouter),
}

impl Router {
    /// The router `routing` names, working in `namespace` under `field_manager`; `owner` goes
    /// on the objects Sluice creates (the canary Ingress). None when `routing` names none.
    pub fn for_routing(
        client: kube::Client,
        namespace: &str,
        field_manager: &str,
        routing: &TrafficRouting,
        owner: Option<OwnerReference>,
    ) -> Option<Self> {
        if let Some(nginx) = &routing.nginx {
            Some(Router::Nginx(NginxRouter::new(
                client,
                namespace,
                field_manager,
                nginx,
                owner,
            )))
        } else {
            routing.gateway_api.as_ref().map(|gateway| {
                Router::GatewayApi(GatewayRouter::new(
                    client,
                    namespace,
                    field_manager,
                    gateway,
                ))
            })
        }
    }
}

impl TrafficRouter for Router {
    async fn check(&self, backends: &Backends) -> Result<(), TrafficError> {
        match self {
            Router::Nginx(router) => router.check(backends).await,
            Router::GatewayApi(router) => router.check(backends).await,
        }
    }

    async fn apply(
        &self,
        backends: &Backends,
        state: Option<&TrafficState>,
        max_weight: i32,
    ) -> Result<Applied, TrafficError> {
        match self {
            Router::Nginx(router) => router.apply(backends, state, max_weight).await,
            Router::GatewayApi(router) => router.apply(backends, state, max_weight).await,
        }
    }
}
