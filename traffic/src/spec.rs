//! The traffic part of a Rollout's spec, as users write it (docs/API.md), and the plain state a router
//! is asked to reach.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which router moves the canary's share of traffic: exactly one of `nginx` or `gatewayAPI`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxRouting>,
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// The weight that means "all traffic" (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_traffic_weight: Option<i32>,
}

/// ingress-nginx canary annotations on a canary Ingress Sluice creates beside the user's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NginxRouting {
    /// The user's Ingress whose rules send traffic to the stable Service; never modified.
    #[schemars(length(min = 1))]
    pub stable_ingress: String,
    /// Annotation prefix (default `nginx.ingress.kubernetes.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_prefix: Option<String>,
}

/// Weights on the backendRefs of a Gateway API HTTPRoute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// The HTTPRoute, in the rollout's namespace, whose rules list both Services.
    #[schemars(length(min = 1))]
    pub http_route: String,
}

/// How a header value is matched: exactly one of the three.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// One header condition of a `setHeaderRoute` step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRouteMatch {
    #[schemars(length(min = 1))]
    pub header_name: String,
    pub header_value: StringMatch,
}

/// Requests matching every condition go to the canary, whatever the weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SetHeaderRoute {
    /// No conditions: the header route is removed.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HeaderRouteMatch>,
}

/// A value condition, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// One condition of a route to the canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestMatch {
    Header {
        name: String,
        value: ValueMatch,
    },
    /// A cookie with this name and the value `always` (ingress-nginx's convention).
    Cookie {
        name: String,
    },
}

/// What the router should make true: the canary's share of traffic and, apart from the weight,
/// the requests that always go to the canary (each route's conditions all hold).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TrafficState {
    pub canary_weight: i32,
    pub routes: Vec<Vec<RequestMatch>>,
}

/// Names a router works with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backends {
    /// The Rollout's name: managed objects and rules are named after it.
    pub rollout: String,
    pub stable_service: String,
    pub canary_service: String,
}

impl HeaderRouteMatch {
    /// The resolved condition; `field` names this match in errors.
    pub fn resolve(&self, field: &str) -> Result<RequestMatch, crate::TrafficError> {
        let v = &self.header_value;
        let value = match (&v.exact, &v.prefix, &v.regex) {
            (Some(e), None, None) => ValueMatch::Exact(e.clone()),
            (None, Some(p), None) => ValueMatch::Prefix(p.clone()),
            (None, None, Some(r)) => {
                regex::Regex::new(r).map_err(|e| crate::TrafficError::Unsupported {
                    field: format!("{field}.headerValue.regex"),
                    reason: format!("not a regular expression: {e}"),
                })?;
                ValueMatch::Regex(r.clone())
            }
            _ => {
                return Err(crate::TrafficError::Unsupported {
                    field: format!("{field}.headerValue"),
                    reason: "set exactly one of exact, prefix or regex".into(),
                });
            }
        };
        Ok(RequestMatch::Header {
            name: self.header_name.clone(),
            value,
        })
    }
}
