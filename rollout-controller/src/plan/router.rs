//! Whether the user's object a rollout's traffic router starts from (the stable Ingress, the
//! HTTPRoute) can carry its traffic, judged from the object as read: pure, so that a reconcile
//! and the offline linter (`crate::lint`) conclude alike (both end in the router's own pure
//! check).

use k8s_openapi::api::networking::v1::Ingress;

use super::InvalidSpec;
use crate::crd::{RolloutSpec, Routed};

/// The user's object a rollout's router starts from, as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RouterObject {
    /// The stable Ingress (`trafficRouting.nginx.stableIngress`).
    Ingress(Box<Ingress>),
    /// The HTTPRoute (`trafficRouting.gatewayAPI.httpRoute`), as JSON.
    HttpRoute(serde_json::Value),
}

/// The router's object a rollout names, as read for it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObservedRouter {
    /// The Rollout it was read for: the router names what it makes after it.
    pub(crate) rollout: String,
    /// Where it was looked for.
    pub(crate) namespace: String,
    /// `None`: not there.
    pub(crate) object: Option<RouterObject>,
}

/// The spec field that names the router's object, which an [`InvalidSpec`] about it points at.
pub(crate) fn router_field(routed: &Routed<'_>) -> Option<String> {
    named(routed).map(|(field, ..)| field)
}

/// The router's object `routed` names: the spec field naming it, its kind and its name.
fn named<'a>(routed: &Routed<'a>) -> Option<(String, &'static str, &'a str)> {
    if let Some(nginx) = &routed.routing.nginx {
        Some((
            format!("{}.nginx.stableIngress", routed.field),
            "Ingress",
            &nginx.stable_ingress,
        ))
    } else {
        routed.routing.gateway_api.as_ref().map(|gateway| {
            (
                format!("{}.gatewayAPI.httpRoute", routed.field),
                "HTTPRoute",
                gateway.http_route.as_str(),
            )
        })
    }
}

/// What is wrong with the router's object for a rollout with `spec`, as `observed`: the
/// rollout is then InvalidSpec at the field that names the object, and nothing changes.
pub(crate) fn problem(spec: &RolloutSpec, observed: &ObservedRouter) -> Option<InvalidSpec> {
    let routed = spec.strategy.routed()?;
    let (field, kind, name) = named(&routed)?;
    let checked = match &observed.object {
        Some(object) => check(&observed.rollout, &routed, object),
        None => Err(traffic::TrafficError::NotFound {
            kind,
            namespace: observed.namespace.clone(),
            name: name.to_owned(),
        }),
    };
    // The router's pure checks only describe the user's objects; an error of any other kind
    // (a failing API) can only come from reading them, which the edge reports itself.
    let error = checked.err()?;
    Some(InvalidSpec {
        field,
        message: error.to_string(),
    })
}

/// The router's own check of `object` for the rollout's backends.
fn check(
    name: &str,
    routed: &Routed<'_>,
    object: &RouterObject,
) -> Result<(), traffic::TrafficError> {
    let backends = traffic::Backends {
        rollout: name.to_owned(),
        stable_service: routed.stable_service.to_owned(),
        canary_service: routed.canary_service.to_owned(),
    };
    match object {
        RouterObject::Ingress(stable) => traffic::nginx::check_stable_ingress(stable, &backends),
        RouterObject::HttpRoute(route) => traffic::gateway::check_route(route, &backends),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::Rollout;

    fn rollout(routing: serde_json::Value) -> Rollout {
        crate::plan::tests::rollout(
            json!({"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": routing,
                "steps": [{"setWeight": 20}],
            }}),
            2,
        )
    }

    fn ingress(service: &str) -> RouterObject {
        RouterObject::Ingress(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]},
            }))
            .unwrap(),
        ))
    }

    fn found(object: RouterObject) -> ObservedRouter {
        ObservedRouter {
            rollout: "web".into(),
            namespace: "shop".into(),
            object: Some(object),
        }
    }

    #[test]
    fn an_ingress_that_sends_traffic_to_the_stable_service_is_no_problem() {
        let rollout = rollout(json!({"nginx": {"stableIngress": "web"}}));
        let observed = found(ingress("web-stable"));
        assert_eq!(problem(&rollout.spec, &observed), None);
    }

    #[test]
    fn an_ingress_that_does_not_reach_the_stable_service_is_invalid_at_the_field_naming_it() {
        let rollout = rollout(json!({"nginx": {"stableIngress": "web"}}));
        let observed = found(ingress("other"));
        assert_eq!(
            problem(&rollout.spec, &observed),
            Some(InvalidSpec {
                field: "spec.strategy.canary.trafficRouting.nginx.stableIngress".into(),
                message: "Ingress web does not send traffic to Service web-stable".into(),
            })
        );
    }

    #[test]
    fn a_missing_http_route_is_invalid_with_where_it_was_looked_for() {
        let rollout = rollout(json!({"gatewayAPI": {"httpRoute": "web-route"}}));
        let observed = ObservedRouter {
            object: None,
            ..found(ingress("web-stable"))
        };
        assert_eq!(
            problem(&rollout.spec, &observed),
            Some(InvalidSpec {
                field: "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute".into(),
                message: "HTTPRoute shop/web-route not found".into(),
            })
        );
    }
}
