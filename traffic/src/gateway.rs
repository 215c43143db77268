//! Gateway API HTTPRoute: the weights of the stable and canary backendRefs, and header routes as
//! rules of Sluice's own placed before the user's.
//!
//! The route is handled as JSON, not as generated types: a typed round trip drops every field the
//! types do not know (a newer Gateway API, an implementation's extension), and Sluice must never
//! drop what the user wrote. `rules` is an atomic list, so it is written whole, with a merge
//! patch that carries the resourceVersion it was computed from: the apiserver refuses it if the
//! route changed in between, and the change is recomputed.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::spec::{Backends, RequestMatch, TrafficState, ValueMatch};
use crate::{TrafficError, api_error};

/// Annotation on the route listing the rules Sluice manages there, by name.
pub const MANAGED_RULES_ANNOTATION: &str = "sluice.dev/managed-rules";
const CONFLICT_RETRIES: usize = 5;

pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

fn refers_to(backend_ref: &Value, service: &str) -> bool {
    let group = backend_ref["group"].as_str().unwrap_or("");
    let kind = backend_ref["kind"].as_str().unwrap_or("Service");
    group.is_empty() && kind == "Service" && backend_ref["name"].as_str() == Some(service)
}

/// The name of Sluice's rule for header route `n` of `rollout`.
pub fn managed_rule_name(rollout: &str, n: usize) -> String {
    format!("sluice-{rollout}-{n}")
}

fn header_match(condition: &RequestMatch) -> Value {
    match condition {
        RequestMatch::Header { name, value } => match value {
            ValueMatch::Exact(v) => json!({"type": "Exact", "name": name, "value": v}),
            ValueMatch::Prefix(p) => json!({"type": "RegularExpression", "name": name,
                                            "value": format!("^{}.*", regex::escape(p))}),
            ValueMatch::Regex(r) => json!({"type": "RegularExpression", "name": name, "value": r}),
        },
        RequestMatch::Cookie { name } => json!({
            "type": "RegularExpression",
            "name": "Cookie",
            "value": format!("(^|;\\s*){}=always(;|$)", regex::escape(name)),
        }),
    }
}

/// The route's rules and managed-rules annotation for `state`, from the route as it is. Rules
/// Sluice does not manage keep their place and content; only the two weights change in them.
pub fn desired_rules(
    route: &Value,
    backends: &Backends,
    state: &TrafficState,
    max_weight: i32,
) -> Result<(Vec<Value>, Option<String>), TrafficError> {
    let route_name = route["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let managed: Vec<&str> = route["metadata"]["annotations"][MANAGED_RULES_ANNOTATION]
        .as_str()
        .map(|s| s.split(',').filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    let mut user_rules: Vec<Value> = route["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !r["name"].as_str().is_some_and(|n| managed.contains(&n)))
        .collect();
    let mut stable_matches: Vec<Value> = Vec::new();
    let mut stable_port: Option<Value> = None;
    let mut referencing = 0;
    for (index, rule) in user_rules.iter_mut().enumerate() {
        let Some(refs) = rule["backendRefs"].as_array_mut() else {
            continue;
        };
        if !refs.iter().any(|r| refers_to(r, &backends.stable_service)) {
            continue;
        }
        if !refs.iter().any(|r| refers_to(r, &backends.canary_service)) {
            return Err(TrafficError::Unsupported {
                field: format!("HTTPRoute {route_name} rules[{index}].backendRefs"),
                reason: format!(
                    "lists Service {} but not the canary Service {}: list both",
                    backends.stable_service, backends.canary_service
                ),
            });
        }
        referencing += 1;
        for r in refs.iter_mut() {
            if refers_to(r, &backends.stable_service) {
                r["weight"] = json!(max_weight - state.canary_weight);
                if stable_port.is_none() {
                    stable_port = r.get("port").cloned();
                }
            } else if refers_to(r, &backends.canary_service) {
                r["weight"] = json!(state.canary_weight);
            }
        }
        match rule["matches"].as_array() {
            Some(matches) if !matches.is_empty() => stable_matches.extend(matches.iter().cloned()),
            _ => stable_matches.push(json!({"path": {"type": "PathPrefix", "value": "/"}})),
        }
    }
    if referencing == 0 {
        return Err(TrafficError::NotReferenced {
            kind: "HTTPRoute",
            name: route_name,
            service: backends.stable_service.clone(),
        });
    }
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for (n, route_conditions) in state.routes.iter().enumerate() {
        let headers: Vec<Value> = route_conditions.iter().map(header_match).collect();
        // Each of the user's path matches, narrowed by the headers: path precedence decides
        // before header count, so a header rule without the user's paths could lose to them.
        let matches: Vec<Value> = stable_matches
            .iter()
            .map(|m| {
                let mut m = m.clone();
                let mut all = m["headers"].as_array().cloned().unwrap_or_default();
                all.extend(headers.iter().cloned());
                m["headers"] = json!(all);
                m
            })
            .collect();
        let name = managed_rule_name(&backends.rollout, n);
        // Written as the apiserver stores it (the CRD's defaults spelled out), so that the
        // route read back equals what was written and no write repeats.
        let mut backend =
            json!({"group": "", "kind": "Service", "name": backends.canary_service, "weight": 1});
        if let Some(port) = &stable_port {
            backend["port"] = port.clone();
        }
        rules.push(json!({"name": name, "matches": matches, "backendRefs": [backend]}));
        names.push(name);
    }
    rules.extend(user_rules);
    let annotation = (!names.is_empty()).then(|| names.join(","));
    Ok((rules, annotation))
}

/// Sets weights and header routes on one HTTPRoute.
pub struct GatewayRouter {
    routes: Api<DynamicObject>,
    namespace: String,
    field_manager: String,
}

impl GatewayRouter {
    pub fn new(client: kube::Client, namespace: &str, field_manager: &str) -> Self {
        Self {
            routes: Api::namespaced_with(client, namespace, &http_route_resource()),
            namespace: namespace.to_owned(),
            field_manager: field_manager.to_owned(),
        }
    }

    /// Brings `route` to `state`; true when it wrote. A conflicting change by someone else in
    /// between is read again and the change recomputed.
    pub async fn apply(
        &self,
        route: &str,
        backends: &Backends,
        state: &TrafficState,
        max_weight: i32,
    ) -> Result<bool, TrafficError> {
        for _ in 0..CONFLICT_RETRIES {
            let current = self
                .routes
                .get_opt(route)
                .await
                .map_err(|e| api_error("HTTPRoute", &self.namespace, route, e))?
                .ok_or_else(|| TrafficError::NotFound {
                    kind: "HTTPRoute",
                    namespace: self.namespace.clone(),
                    name: route.to_owned(),
                })?;
            let current = serde_json::to_value(&current).unwrap_or(Value::Null);
            let (rules, annotation) = desired_rules(&current, backends, state, max_weight)?;
            let annotation_now = current["metadata"]["annotations"][MANAGED_RULES_ANNOTATION]
                .as_str()
                .map(str::to_owned);
            if current["spec"]["rules"].as_array() == Some(&rules) && annotation_now == annotation {
                return Ok(false);
            }
            let patch = json!({
                "metadata": {
                    "resourceVersion": current["metadata"]["resourceVersion"],
                    "annotations": {MANAGED_RULES_ANNOTATION: annotation},
                },
                "spec": {"rules": rules},
            });
            let params = PatchParams {
                field_manager: Some(self.field_manager.clone()),
                ..PatchParams::default()
            };
            match self
                .routes
                .patch(route, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(api_error("HTTPRoute", &self.namespace, route, e)),
            }
        }
        Err(TrafficError::Conflict {
            kind: "HTTPRoute",
            name: route.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Backends {
        Backends {
            rollout: "web".into(),
            stable_service: "web-stable".into(),
            canary_service: "web-canary".into(),
        }
    }

    fn route() -> Value {
        json!({
            "metadata": {"name": "web", "resourceVersion": "7"},
            "spec": {"rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "y"}]}}],
                 "backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                                 {"name": "web-canary", "port": 80, "weight": 0}],
                 "someFutureField": {"kept": true}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "cdn", "port": 80}]},
            ]},
        })
    }

    #[test]
    fn weights_at_each_step_with_header_and_cookie_routes() {
        for weight in [0, 10, 50, 100] {
            let state = TrafficState {
                canary_weight: weight,
                routes: vec![
                    vec![RequestMatch::Header {
                        name: "X-A".into(),
                        value: ValueMatch::Regex("^b+$".into()),
                    }],
                    vec![RequestMatch::Cookie {
                        name: "canary".into(),
                    }],
                ],
            };
            let (rules, annotation) = desired_rules(&route(), &backends(), &state, 100).unwrap();
            assert_eq!(annotation.as_deref(), Some("sluice-web-0,sluice-web-1"));
            assert_eq!(rules[2]["backendRefs"][0]["weight"], 100 - weight);
            assert_eq!(rules[2]["backendRefs"][1]["weight"], weight);
            assert_eq!(rules[2]["filters"], route()["spec"]["rules"][0]["filters"]);
            assert_eq!(rules[3], route()["spec"]["rules"][1]);
            assert_eq!(rules[0]["matches"][0]["headers"][0]["value"], "^b+$");
            assert_eq!(
                rules[1]["matches"][0]["headers"][0]["value"],
                "(^|;\\s*)canary=always(;|$)"
            );
        }
    }

    #[test]
    fn weights_change_and_nothing_else() {
        let state = TrafficState {
            canary_weight: 30,
            routes: vec![],
        };
        let (rules, annotation) = desired_rules(&route(), &backends(), &state, 100).unwrap();
        let mut expected = route()["spec"]["rules"].as_array().unwrap().clone();
        expected[0]["backendRefs"][0]["weight"] = json!(70);
        expected[0]["backendRefs"][1]["weight"] = json!(30);
        assert_eq!(rules, expected);
        assert_eq!(annotation, None);
    }

    #[test]
    fn header_routes_come_first_with_the_users_paths_and_are_removed_again() {
        let state = TrafficState {
            canary_weight: 10,
            routes: vec![vec![
                RequestMatch::Header {
                    name: "X-Canary".into(),
                    value: ValueMatch::Exact("1".into()),
                },
                RequestMatch::Cookie {
                    name: "beta".into(),
                },
            ]],
        };
        let (rules, annotation) = desired_rules(&route(), &backends(), &state, 100).unwrap();
        assert_eq!(annotation.as_deref(), Some("sluice-web-0"));
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["name"], "sluice-web-0");
        assert_eq!(rules[0]["matches"][0]["path"]["value"], "/api");
        assert_eq!(
            rules[0]["matches"][0]["headers"][0],
            json!({"type": "Exact", "name": "X-Canary", "value": "1"})
        );
        assert_eq!(rules[0]["matches"][0]["headers"][1]["name"], "Cookie");
        assert_eq!(
            rules[0]["backendRefs"],
            json!([{"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": 1}])
        );
        assert_eq!(rules[1]["someFutureField"], json!({"kept": true}));

        let mut written = route();
        written["spec"]["rules"] = json!(rules);
        written["metadata"]["annotations"] = json!({MANAGED_RULES_ANNOTATION: "sluice-web-0"});
        let (after, annotation) =
            desired_rules(&written, &backends(), &TrafficState::default(), 100).unwrap();
        assert_eq!(annotation, None);
        assert_eq!(after, route()["spec"]["rules"].as_array().unwrap().clone());
    }

    #[test]
    fn a_route_without_both_services_is_refused_with_its_name() {
        let mut no_canary = route();
        no_canary["spec"]["rules"][0]["backendRefs"] = json!([{"name": "web-stable", "port": 80}]);
        let error =
            desired_rules(&no_canary, &backends(), &TrafficState::default(), 100).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("HTTPRoute web rules[0].backendRefs"),
            "{error}"
        );
        let mut none = route();
        none["spec"]["rules"].as_array_mut().unwrap().remove(0);
        let error = desired_rules(&none, &backends(), &TrafficState::default(), 100).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("does not send traffic to Service web-stable"),
            "{error}"
        );
    }
}
