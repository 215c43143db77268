//! What a test puts in front of a Rollout so that Traefik routes its host: the stable and
//! canary Services and the router's own object, an HTTPRoute for the Gateway API or an Ingress
//! for ingress-nginx, as a user would make them before Sluice takes them over.

use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use traffic::gateway::http_route_resource;

use crate::rollouts::create_service;
use crate::traefik::{INGRESS_CLASS, Traefik};
use crate::{Result, object};

/// What a malformed object here was meant to be.
const WHAT: &str = "a routing object";

/// The router Sluice writes, and Traefik serves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// HTTPRoute backendRef weights and header matches.
    Gateway,
    /// ingress-nginx's canary annotations on a copy of the stable Ingress.
    Nginx,
}

impl Router {
    pub const ALL: [Router; 2] = [Router::Gateway, Router::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            Router::Gateway => "gateway",
            Router::Nginx => "nginx",
        }
    }
}

/// The Services `web-stable` and `web-canary` of the Rollout `web` and `router`'s object named
/// `web` for `host`: the Rollout's `trafficRouting` for them.
pub async fn routed(client: &Client, ns: &str, host: &str, router: Router) -> Result<Value> {
    create_service(client, ns, "web-stable", "web").await?;
    create_service(client, ns, "web-canary", "web").await?;
    Ok(match router {
        Router::Gateway => {
            http_route(client, ns, host).await?;
            json!({"gatewayAPI": {"httpRoute": "web"}})
        }
        Router::Nginx => {
            ingress(client, ns, "web", host, "web-stable").await?;
            json!({"nginx": {"stableIngress": "web"}})
        }
    })
}

/// The HTTPRoute `web` on Traefik's Gateway: every request for `host` to `web-stable`, none yet
/// to `web-canary`.
pub async fn http_route(client: &Client, ns: &str, host: &str) -> Result<()> {
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &http_route_resource());
    let route: DynamicObject = object(
        WHAT,
        Traefik::canary_http_route("web", host, "web-stable", "web-canary", 80),
    )?;
    routes.create(&PostParams::default(), &route).await?;
    Ok(())
}

/// An Ingress `name` of Traefik's ingress-nginx class: every request for `host` to `service`.
pub async fn ingress(
    client: &Client,
    ns: &str,
    name: &str,
    host: &str,
    service: &str,
) -> Result<()> {
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let ingress: Ingress = object(
        WHAT,
        json!({
            "metadata": {"name": name},
            "spec": {
                "ingressClassName": INGRESS_CLASS,
                "rules": [{"host": host, "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"number": 80}}},
                }]}}],
            },
        }),
    )?;
    ingresses.create(&PostParams::default(), &ingress).await?;
    Ok(())
}
