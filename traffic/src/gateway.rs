//! Gateway API HTTPRoute: the weights of the stable and canary backendRefs, and header routes as
//! rules of Sluice's own placed before the user's.
//!
//! The route is handled as JSON, not as generated types: a typed round trip drops every field the
//! types do not know (a newer Gateway API, an implementation's extension), and Sluice must never
//! drop what the user wrote. `rules` and `backendRefs` are atomic lists, so server-side apply of
//! one weight would take ownership of the user's whole rule list; the route is written with a
//! JSON patch instead, of only the weights and the rules Sluice manages, whose first operation
//! tests the resourceVersion the patch was computed from: the apiserver refuses it if the route
//! changed in between, and the patch is computed again.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::info;

use crate::spec::{Backends, GatewayApiRouting, RequestMatch, TrafficState, ValueMatch};
use crate::{Applied, TrafficError, TrafficRouter, api_error};

/// Annotation on the route listing the rules Sluice manages there, by name.
pub const MANAGED_RULES_ANNOTATION: &str = "sluice.dev/managed-rules";
const CONFLICT_RETRIES: usize = 5;
/// The fields of a user's rule that act on the requests it matches, besides sending them to its
/// backends: a header-routed request must get them too.
const RULE_FIELDS_KEPT: [&str; 2] = ["filters", "timeouts"];

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

/// The name of Sluice's `n`th rule for `rollout`.
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

fn managed_annotation(route: &Value) -> Option<&str> {
    route["metadata"]["annotations"][MANAGED_RULES_ANNOTATION].as_str()
}

/// The route as Sluice wants it, in parts: what a JSON patch needs to reach it from the route
/// as it is.
struct RoutePlan {
    /// Sluice's rules, which go first.
    managed: Vec<Value>,
    /// The user's rules with the two weights set, each with its index in the route as it is.
    user: Vec<(usize, Value)>,
    /// The route's indices of the rules Sluice manages now.
    managed_now: Vec<usize>,
    annotation: Option<String>,
}

fn plan_route(
    route: &Value,
    backends: &Backends,
    state: &TrafficState,
    max_weight: i32,
) -> Result<RoutePlan, TrafficError> {
    let route_name = route["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let managed_names: Vec<&str> = managed_annotation(route)
        .map(|s| s.split(',').filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    let mut user = Vec::new();
    let mut managed_now = Vec::new();
    for (index, rule) in route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if rule["name"]
            .as_str()
            .is_some_and(|n| managed_names.contains(&n))
        {
            managed_now.push(index);
        } else {
            user.push((index, rule.clone()));
        }
    }
    // The user's rules that send traffic to the stable Service, with their canary backendRef.
    let mut referencing: Vec<(&Value, Value)> = Vec::new();
    for (index, rule) in user.iter_mut() {
        let Some(refs) = rule["backendRefs"].as_array_mut() else {
            continue;
        };
        if !refs.iter().any(|r| refers_to(r, &backends.stable_service)) {
            continue;
        }
        let Some(canary) = refs
            .iter()
            .find(|r| refers_to(r, &backends.canary_service))
            .cloned()
        else {
            return Err(TrafficError::Unsupported {
                field: format!("HTTPRoute {route_name} rules[{index}].backendRefs"),
                reason: format!(
                    "lists Service {} but not the canary Service {}: list both",
                    backends.stable_service, backends.canary_service
                ),
            });
        };
        for r in refs.iter_mut() {
            if refers_to(r, &backends.stable_service) {
                r["weight"] = json!(max_weight - state.canary_weight);
            } else if refers_to(r, &backends.canary_service) {
                r["weight"] = json!(state.canary_weight);
            }
        }
        referencing.push((rule, canary));
    }
    if referencing.is_empty() {
        return Err(TrafficError::NotReferenced {
            kind: "HTTPRoute",
            name: route_name,
            service: backends.stable_service.clone(),
        });
    }
    let mut managed = Vec::new();
    for route_conditions in &state.routes {
        let headers: Vec<Value> = route_conditions.iter().map(header_match).collect();
        // One rule of Sluice's per rule of the user's: it carries that rule's filters and
        // timeouts, which hold for all its matches (and a URL rewrite of a path prefix allows
        // only one match per rule).
        for (rule, canary) in &referencing {
            // Each of the user's path matches, narrowed by the headers: path precedence decides
            // before header count, so a header rule without the user's paths could lose to them.
            let user_matches = match rule["matches"].as_array() {
                Some(matches) if !matches.is_empty() => matches.clone(),
                _ => vec![json!({"path": {"type": "PathPrefix", "value": "/"}})],
            };
            let matches: Vec<Value> = user_matches
                .into_iter()
                .map(|mut m| {
                    let mut all = m["headers"].as_array().cloned().unwrap_or_default();
                    all.extend(headers.iter().cloned());
                    m["headers"] = json!(all);
                    m
                })
                .collect();
            // Written as the apiserver stores it (the CRD's defaults spelled out), so that the
            // route read back equals what was written and no write repeats.
            let mut backend = canary.clone();
            backend["weight"] = json!(1);
            for (key, default) in [("group", ""), ("kind", "Service")] {
                if backend.get(key).is_none() {
                    backend[key] = json!(default);
                }
            }
            let mut out = json!({
                "name": managed_rule_name(&backends.rollout, managed.len()),
                "matches": matches,
                "backendRefs": [backend],
            });
            for key in RULE_FIELDS_KEPT {
                if let Some(value) = rule.get(key) {
                    out[key] = value.clone();
                }
            }
            managed.push(out);
        }
    }
    let names: Vec<&str> = managed
        .iter()
        .filter_map(|rule| rule["name"].as_str())
        .collect();
    let annotation = (!names.is_empty()).then(|| names.join(","));
    Ok(RoutePlan {
        managed,
        user,
        managed_now,
        annotation,
    })
}

/// The route's rules and managed-rules annotation for `state`, from the route as it is. Rules
/// Sluice does not manage keep their place and content; only the two weights change in them.
pub fn desired_rules(
    route: &Value,
    backends: &Backends,
    state: &TrafficState,
    max_weight: i32,
) -> Result<(Vec<Value>, Option<String>), TrafficError> {
    let plan = plan_route(route, backends, state, max_weight)?;
    let mut rules = plan.managed;
    rules.extend(plan.user.into_iter().map(|(_, rule)| rule));
    Ok((rules, plan.annotation))
}

/// What is wrong with the user's HTTPRoute for `backends`, if anything.
pub fn check_route(route: &Value, backends: &Backends) -> Result<(), TrafficError> {
    desired_rules(route, backends, &TrafficState::default(), 100).map(|_| ())
}

/// A JSON pointer's reference token for `key` (RFC 6901: `~` and `/` escaped).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON patch (RFC 6902) operations that bring `route` to `state`, or None when it is there.
/// The first tests the route's resourceVersion; then come the weights that differ, Sluice's rules
/// (removed and added again when any differs) and its annotation. No operation touches the
/// user's rules beyond a weight of the stable or canary backendRef, or any other field.
pub fn route_patch(
    route: &Value,
    backends: &Backends,
    state: &TrafficState,
    max_weight: i32,
) -> Result<Option<Vec<Value>>, TrafficError> {
    let plan = plan_route(route, backends, state, max_weight)?;
    let rules: &[Value] = route["spec"]["rules"].as_array().map_or(&[], Vec::as_slice);
    let mut ops = vec![json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": route["metadata"]["resourceVersion"],
    })];
    // Weights first, at the indices of the route as it is: the removals below shift them.
    for (index, wanted) in &plan.user {
        let now = rules[*index]["backendRefs"]
            .as_array()
            .into_iter()
            .flatten();
        let wanted = wanted["backendRefs"].as_array().into_iter().flatten();
        for (j, (now, wanted)) in now.zip(wanted).enumerate() {
            if now.get("weight") != wanted.get("weight") {
                ops.push(json!({
                    "op": if now.get("weight").is_some() { "replace" } else { "add" },
                    "path": format!("/spec/rules/{index}/backendRefs/{j}/weight"),
                    "value": wanted["weight"],
                }));
            }
        }
    }
    let in_place = plan.managed_now.len() == plan.managed.len()
        && plan
            .managed_now
            .iter()
            .enumerate()
            .all(|(n, index)| *index == n && rules[*index] == plan.managed[n]);
    if !in_place {
        for index in plan.managed_now.iter().rev() {
            ops.push(json!({"op": "remove", "path": format!("/spec/rules/{index}")}));
        }
        for (n, rule) in plan.managed.iter().enumerate() {
            ops.push(json!({"op": "add", "path": format!("/spec/rules/{n}"), "value": rule}));
        }
    }
    let now = managed_annotation(route);
    if now != plan.annotation.as_deref() {
        let path = format!(
            "/metadata/annotations/{}",
            pointer_token(MANAGED_RULES_ANNOTATION)
        );
        ops.push(match (now, &plan.annotation) {
            (_, None) => json!({"op": "remove", "path": path}),
            (Some(_), Some(wanted)) => json!({"op": "replace", "path": path, "value": wanted}),
            // `add` of the map would replace the user's annotations; only a missing map is added.
            (None, Some(wanted)) if route["metadata"]["annotations"].is_object() => {
                json!({"op": "add", "path": path, "value": wanted})
            }
            (None, Some(wanted)) => json!({
                "op": "add",
                "path": "/metadata/annotations",
                "value": {MANAGED_RULES_ANNOTATION: wanted},
            }),
        });
    }
    Ok((ops.len() > 1).then_some(ops))
}

/// Sets weights and header routes on one HTTPRoute.
pub struct GatewayRouter {
    routes: Api<DynamicObject>,
    namespace: String,
    field_manager: String,
    http_route: String,
}

impl GatewayRouter {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        field_manager: &str,
        routing: &GatewayApiRouting,
    ) -> Self {
        Self {
            routes: Api::namespaced_with(client, namespace, &http_route_resource()),
            namespace: namespace.to_owned(),
            field_manager: field_manager.to_owned(),
            http_route: routing.http_route.clone(),
        }
    }

    /// The user's HTTPRoute, as JSON.
    async fn route(&self) -> Result<Value, TrafficError> {
        let route = self
            .routes
            .get_opt(&self.http_route)
            .await
            .map_err(|e| self.api_error(e))?
            .ok_or_else(|| TrafficError::NotFound {
                kind: "HTTPRoute",
                namespace: self.namespace.clone(),
                name: self.http_route.clone(),
            })?;
        Ok(serde_json::to_value(&route).unwrap_or(Value::Null))
    }

    fn api_error(&self, source: kube::Error) -> TrafficError {
        api_error("HTTPRoute", &self.namespace, &self.http_route, source)
    }
}

impl TrafficRouter for GatewayRouter {
    async fn check(&self, backends: &Backends) -> Result<(), TrafficError> {
        check_route(&self.route().await?, backends)
    }

    /// A route changed by someone else in between is read again and the patch computed again.
    async fn apply(
        &self,
        backends: &Backends,
        state: Option<&TrafficState>,
        max_weight: i32,
    ) -> Result<Applied, TrafficError> {
        let state = state.cloned().unwrap_or_default();
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        // A refused patch and the resourceVersion it tested: a 422 is a failed test only if the
        // route has changed since, otherwise the patch itself was refused.
        let mut refused: Option<(Value, kube::Error)> = None;
        for _ in 0..CONFLICT_RETRIES {
            let current = self.route().await?;
            let version = &current["metadata"]["resourceVersion"];
            if let Some((tested, error)) = refused.take()
                && &tested == version
            {
                return Err(self.api_error(error));
            }
            let Some(ops) = route_patch(&current, backends, &state, max_weight)? else {
                return Ok(Applied::Unchanged);
            };
            let patch = serde_json::from_value(Value::Array(ops)).map_err(|source| {
                TrafficError::Patch {
                    kind: "HTTPRoute",
                    name: self.http_route.clone(),
                    source,
                }
            })?;
            match self
                .routes
                .patch(&self.http_route, &params, &Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => {
                    info!(http_route = %self.http_route, weight = state.canary_weight, "HTTPRoute weights set");
                    return Ok(Applied::Wrote("HTTPRoute"));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(kube::Error::Api(status)) if status.code == 422 => {
                    refused = Some((version.clone(), kube::Error::Api(status)));
                }
                Err(e) => return Err(self.api_error(e)),
            }
        }
        Err(TrafficError::Conflict {
            kind: "HTTPRoute",
            name: self.http_route.clone(),
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
            assert_eq!(rules[0]["filters"], route()["spec"]["rules"][0]["filters"]);
            assert_eq!(rules[1]["filters"], route()["spec"]["rules"][0]["filters"]);
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

    #[test]
    fn header_rules_carry_the_filters_and_timeouts_of_each_users_rule() {
        let mut two = route();
        two["spec"]["rules"][0]["timeouts"] = json!({"request": "10s", "backendRequest": "5s"});
        two["spec"]["rules"].as_array_mut().unwrap().push(json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}},
                        {"path": {"type": "Exact", "value": "/v2-beta"},
                         "headers": [{"type": "Exact", "name": "X-Beta", "value": "1"}]}],
            "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "v2.internal"}}],
            "backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                            {"name": "web-canary", "port": 8080, "weight": 0,
                             "filters": [{"type": "ResponseHeaderModifier",
                                          "responseHeaderModifier": {"set": [{"name": "x-v", "value": "canary"}]}}]}],
        }));
        let state = TrafficState {
            canary_weight: 10,
            routes: vec![vec![RequestMatch::Header {
                name: "X-Canary".into(),
                value: ValueMatch::Exact("1".into()),
            }]],
        };
        let (rules, annotation) = desired_rules(&two, &backends(), &state, 100).unwrap();
        assert_eq!(annotation.as_deref(), Some("sluice-web-0,sluice-web-1"));
        assert_eq!(rules.len(), 5);
        let canary_header = json!({"type": "Exact", "name": "X-Canary", "value": "1"});
        let (api, v2) = (&rules[0], &rules[1]);
        assert_eq!(api["filters"], two["spec"]["rules"][0]["filters"]);
        assert_eq!(api["timeouts"], two["spec"]["rules"][0]["timeouts"]);
        assert_eq!(
            api["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [canary_header]}])
        );
        assert_eq!(v2["filters"], two["spec"]["rules"][2]["filters"]);
        assert!(v2.get("timeouts").is_none(), "{v2}");
        assert_eq!(v2["matches"][0]["headers"], json!([canary_header]));
        assert_eq!(
            v2["matches"][1]["headers"],
            json!([{"type": "Exact", "name": "X-Beta", "value": "1"}, canary_header])
        );
        // The canary's own backendRef of that rule, its port and filters, carrying all of it.
        let mut canary = two["spec"]["rules"][2]["backendRefs"][1].clone();
        canary["weight"] = json!(1);
        canary["group"] = json!("");
        canary["kind"] = json!("Service");
        assert_eq!(v2["backendRefs"], json!([canary]));
        assert!(api.get("someFutureField").is_none(), "{api}");
    }

    /// Applies a JSON patch (RFC 6902) as the apiserver does, for the operations Sluice writes.
    fn apply_patch(doc: &Value, ops: &[Value]) -> Result<Value, String> {
        fn split(path: &str) -> (Vec<String>, String) {
            let mut tokens: Vec<String> = path
                .split('/')
                .skip(1)
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect();
            let last = tokens.pop().unwrap_or_default();
            (tokens, last)
        }
        let mut doc = doc.clone();
        for op in ops {
            let path = op["path"].as_str().ok_or("no path")?;
            let (parents, last) = split(path);
            let mut parent = &mut doc;
            for token in &parents {
                parent = match parent {
                    Value::Array(a) => {
                        a.get_mut(token.parse::<usize>().map_err(|e| e.to_string())?)
                    }
                    Value::Object(o) => o.get_mut(token),
                    _ => None,
                }
                .ok_or(format!("{path}: no {token}"))?;
            }
            let value = op["value"].clone();
            match (op["op"].as_str().ok_or("no op")?, parent) {
                ("test", p) if p[last.as_str()] == value => {}
                ("test", _) => return Err(format!("test of {path} failed")),
                ("add", Value::Array(a)) => a.insert(last.parse().map_err(|_| path)?, value),
                ("remove", Value::Array(a)) => {
                    a.remove(last.parse().map_err(|_| path)?);
                }
                ("add", Value::Object(o)) => {
                    o.insert(last, value);
                }
                ("replace", Value::Object(o)) if o.contains_key(&last) => {
                    o.insert(last, value);
                }
                ("remove", Value::Object(o)) if o.contains_key(&last) => {
                    o.remove(&last);
                }
                (op, _) => return Err(format!("{op} {path}: not applicable")),
            }
        }
        Ok(doc)
    }

    /// The route with user annotations, at weight 0 as users write it.
    fn annotated_route() -> Value {
        let mut route = route();
        route["metadata"]["annotations"] = json!({"team": "shop", "a/b~c": "kept"});
        route
    }

    /// Checks that `ops` start with the resourceVersion test, touch only what Sluice owns, and
    /// bring `route` to what `desired_rules` says; returns the patched route.
    fn patched(route: &Value, state: &TrafficState, ops: &[Value]) -> Value {
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"})
        );
        let managed = |index: usize| {
            let rules = route["spec"]["rules"].as_array().unwrap();
            managed_annotation(route).is_some_and(|names| {
                rules
                    .get(index)
                    .and_then(|r| r["name"].as_str())
                    .is_some_and(|n| names.split(',').any(|m| m == n))
            })
        };
        let weight = regex::Regex::new(r"^/spec/rules/(\d+)/backendRefs/(\d+)/weight$").unwrap();
        let rule = regex::Regex::new(r"^/spec/rules/(\d+)$").unwrap();
        for op in &ops[1..] {
            let path = op["path"].as_str().unwrap();
            if let Some(c) = weight.captures(path) {
                let r = &route["spec"]["rules"][c[1].parse::<usize>().unwrap()]["backendRefs"]
                    [c[2].parse::<usize>().unwrap()];
                assert!(
                    refers_to(r, "web-stable") || refers_to(r, "web-canary"),
                    "{op} touches a foreign backendRef"
                );
            } else if let Some(c) = rule.captures(path) {
                let index: usize = c[1].parse().unwrap();
                match op["op"].as_str() {
                    Some("remove") => assert!(managed(index), "{op} removes a user's rule"),
                    Some("add") => assert!(
                        op["value"]["name"]
                            .as_str()
                            .unwrap()
                            .starts_with("sluice-web-")
                    ),
                    _ => panic!("{op} replaces a rule"),
                }
            } else {
                assert!(
                    path == "/metadata/annotations/sluice.dev~1managed-rules"
                        || (path == "/metadata/annotations"
                            && op["op"] == "add"
                            && route["metadata"]["annotations"].is_null()),
                    "{op} touches what Sluice does not own"
                );
            }
        }
        let after = apply_patch(route, ops).unwrap();
        let (rules, annotation) = desired_rules(route, &backends(), state, 100).unwrap();
        assert_eq!(after["spec"]["rules"], json!(rules));
        assert_eq!(managed_annotation(&after), annotation.as_deref());
        let mut others = after["metadata"]["annotations"].clone();
        if let Some(o) = others.as_object_mut() {
            o.remove(MANAGED_RULES_ANNOTATION);
        }
        let mut before = route["metadata"]["annotations"].clone();
        if let Some(o) = before.as_object_mut() {
            o.remove(MANAGED_RULES_ANNOTATION);
        }
        if !before.is_null() {
            assert_eq!(others, before, "the user's annotations changed");
        }
        assert_eq!(after["spec"]["parentRefs"], route["spec"]["parentRefs"]);
        assert_eq!(
            route_patch(&after, &backends(), state, 100).unwrap(),
            None,
            "no second write"
        );
        after
    }

    #[test]
    fn the_patch_at_each_weight_replaces_two_weights_only() {
        let route = annotated_route();
        assert_eq!(
            route_patch(&route, &backends(), &TrafficState::default(), 100).unwrap(),
            None,
            "weight 0 is how the route is written"
        );
        for weight in [10, 50, 100] {
            let state = TrafficState {
                canary_weight: weight,
                routes: vec![],
            };
            let ops = route_patch(&route, &backends(), &state, 100)
                .unwrap()
                .unwrap();
            assert_eq!(
                ops,
                vec![
                    json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"}),
                    json!({"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 100 - weight}),
                    json!({"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": weight}),
                ]
            );
            let after = patched(&route, &state, &ops);
            assert_eq!(after["spec"]["rules"][1], route["spec"]["rules"][1]);
            assert_eq!(
                after["metadata"]["annotations"],
                route["metadata"]["annotations"]
            );
            // And back to weight 0 from there.
            let back = route_patch(&after, &backends(), &TrafficState::default(), 100)
                .unwrap()
                .unwrap();
            assert_eq!(
                back[1],
                json!({"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 100})
            );
            assert_eq!(apply_patch(&after, &back).unwrap(), route);
        }
        let mut unweighted = route.clone();
        unweighted["spec"]["rules"][0]["backendRefs"][1]
            .as_object_mut()
            .unwrap()
            .remove("weight");
        let state = TrafficState {
            canary_weight: 0,
            routes: vec![],
        };
        let ops = route_patch(&unweighted, &backends(), &state, 100)
            .unwrap()
            .unwrap();
        assert_eq!(
            ops[1..],
            [json!({"op": "add", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0})]
        );
    }

    #[test]
    fn the_patch_adds_and_removes_a_header_rule_and_its_annotation() {
        let header = TrafficState {
            canary_weight: 10,
            routes: vec![vec![RequestMatch::Header {
                name: "X-Canary".into(),
                value: ValueMatch::Exact("1".into()),
            }]],
        };
        for route in [annotated_route(), route()] {
            let ops = route_patch(&route, &backends(), &header, 100)
                .unwrap()
                .unwrap();
            let (rules, _) = desired_rules(&route, &backends(), &header, 100).unwrap();
            let annotation = if route["metadata"]["annotations"].is_object() {
                json!({"op": "add", "path": "/metadata/annotations/sluice.dev~1managed-rules", "value": "sluice-web-0"})
            } else {
                json!({"op": "add", "path": "/metadata/annotations", "value": {MANAGED_RULES_ANNOTATION: "sluice-web-0"}})
            };
            assert_eq!(
                ops[3..],
                [
                    json!({"op": "add", "path": "/spec/rules/0", "value": rules[0]}),
                    annotation
                ]
            );
            let with_rule = patched(&route, &header, &ops);

            // The weight moves on, the header rule stays: only the weights are written.
            let fifty = TrafficState {
                canary_weight: 50,
                ..header.clone()
            };
            let ops = route_patch(&with_rule, &backends(), &fifty, 100)
                .unwrap()
                .unwrap();
            assert_eq!(
                ops[1..],
                [
                    json!({"op": "replace", "path": "/spec/rules/1/backendRefs/0/weight", "value": 50}),
                    json!({"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": 50}),
                ]
            );
            let at_fifty = patched(&with_rule, &fifty, &ops);

            // All traffic back on stable: the rule and the annotation go, the route is as before.
            let ops = route_patch(&at_fifty, &backends(), &TrafficState::default(), 100)
                .unwrap()
                .unwrap();
            assert_eq!(
                ops[1..],
                [
                    json!({"op": "replace", "path": "/spec/rules/1/backendRefs/0/weight", "value": 100}),
                    json!({"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": 0}),
                    json!({"op": "remove", "path": "/spec/rules/0"}),
                    json!({"op": "remove", "path": "/metadata/annotations/sluice.dev~1managed-rules"}),
                ]
            );
            let restored = patched(&at_fifty, &TrafficState::default(), &ops);
            assert_eq!(restored["spec"], route["spec"]);
        }
    }

    #[test]
    fn a_moved_or_edited_header_rule_is_put_back_in_front() {
        let header = TrafficState {
            canary_weight: 0,
            routes: vec![vec![RequestMatch::Cookie {
                name: "beta".into(),
            }]],
        };
        let route = annotated_route();
        let ops = route_patch(&route, &backends(), &header, 100)
            .unwrap()
            .unwrap();
        let mut moved = apply_patch(&route, &ops).unwrap();
        let rules = moved["spec"]["rules"].as_array_mut().unwrap();
        let ours = rules.remove(0);
        rules.push(ours.clone());
        let ops = route_patch(&moved, &backends(), &header, 100)
            .unwrap()
            .unwrap();
        assert_eq!(
            ops[1..],
            [
                json!({"op": "remove", "path": "/spec/rules/2"}),
                json!({"op": "add", "path": "/spec/rules/0", "value": ours}),
            ]
        );
        patched(&moved, &header, &ops);
    }
}
