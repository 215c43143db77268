//! ingress-nginx: a canary Ingress beside the user's stable Ingress, carrying the canary
//! annotations. Sluice creates and owns it; the user's Ingress is only read.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::spec::{Backends, RequestMatch, TrafficState, ValueMatch};
use crate::{TrafficError, api_error};

pub const DEFAULT_ANNOTATION_PREFIX: &str = "nginx.ingress.kubernetes.io";

/// `<rollout>-<ingress>-canary`, cut to the 253 characters of an object name.
pub fn canary_ingress_name(rollout: &str, stable_ingress: &str) -> String {
    let name = format!("{rollout}-{stable_ingress}-canary");
    if name.len() <= 253 {
        return name;
    }
    let keep: String = name.chars().take(253 - "-canary".len()).collect();
    format!("{}-canary", keep.trim_end_matches(['-', '.']))
}

/// What NGINX can express. Its header and cookie conditions are alternatives (a request with
/// the header, or else with the cookie, goes to the canary), so each route must be one condition,
/// with at most one header route and one cookie route.
pub fn lint(routes: &[Vec<RequestMatch>], field: &str) -> Result<(), TrafficError> {
    let unsupported = |reason: &str| TrafficError::Unsupported {
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    if routes.iter().any(|route| route.len() > 1) {
        return Err(unsupported(
            "NGINX cannot require two conditions at once (one header or one cookie per match)",
        ));
    }
    let conditions = routes.iter().flatten();
    let headers = conditions
        .clone()
        .filter(|m| matches!(m, RequestMatch::Header { .. }))
        .count();
    let cookies = conditions.count() - headers;
    if headers > 1 || cookies > 1 {
        return Err(unsupported(
            "NGINX matches at most one header and one cookie per canary Ingress",
        ));
    }
    Ok(())
}

fn escape_prefix(prefix: &str) -> String {
    format!("^{}.*", regex::escape(prefix))
}

/// The canary Ingress for `state`: the stable Ingress's rules and paths that send traffic to
/// the stable Service, sent to the canary Service instead; same class and TLS.
pub fn canary_ingress(
    stable: &Ingress,
    backends: &Backends,
    state: &TrafficState,
    prefix: &str,
    max_weight: i32,
    owner: Option<&OwnerReference>,
) -> Result<Value, TrafficError> {
    let stable_name = stable.metadata.name.clone().unwrap_or_default();
    lint(&state.routes, "header route")?;
    let spec = stable.spec.clone().unwrap_or_default();
    let mut rules = Vec::new();
    for rule in spec.rules.iter().flatten() {
        let Some(http) = &rule.http else { continue };
        let paths: Vec<Value> = http
            .paths
            .iter()
            .filter(|p| {
                p.backend.service.as_ref().map(|s| s.name.as_str())
                    == Some(backends.stable_service.as_str())
            })
            .map(|p| {
                let mut path = serde_json::to_value(p).unwrap_or(Value::Null);
                path["backend"]["service"]["name"] = json!(backends.canary_service);
                path
            })
            .collect();
        if paths.is_empty() {
            continue;
        }
        let mut out = json!({"http": {"paths": paths}});
        if let Some(host) = &rule.host {
            out["host"] = json!(host);
        }
        rules.push(out);
    }
    if rules.is_empty() {
        return Err(TrafficError::NotReferenced {
            kind: "Ingress",
            name: stable_name,
            service: backends.stable_service.clone(),
        });
    }
    let mut annotations = BTreeMap::from([
        (format!("{prefix}/canary"), "true".to_owned()),
        (
            format!("{prefix}/canary-weight"),
            state.canary_weight.to_string(),
        ),
    ]);
    if max_weight != 100 {
        annotations.insert(
            format!("{prefix}/canary-weight-total"),
            max_weight.to_string(),
        );
    }
    for condition in state.routes.iter().flatten() {
        match condition {
            RequestMatch::Header { name, value } => {
                annotations.insert(format!("{prefix}/canary-by-header"), name.clone());
                match value {
                    ValueMatch::Exact(v) => {
                        annotations.insert(format!("{prefix}/canary-by-header-value"), v.clone())
                    }
                    ValueMatch::Prefix(p) => annotations.insert(
                        format!("{prefix}/canary-by-header-pattern"),
                        escape_prefix(p),
                    ),
                    ValueMatch::Regex(r) => {
                        annotations.insert(format!("{prefix}/canary-by-header-pattern"), r.clone())
                    }
                };
            }
            RequestMatch::Cookie { name } => {
                annotations.insert(format!("{prefix}/canary-by-cookie"), name.clone());
            }
        }
    }
    let mut ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": canary_ingress_name(&backends.rollout, &stable_name),
            "labels": {"sluice.dev/rollout": backends.rollout},
            "annotations": annotations,
        },
        "spec": {"rules": rules},
    });
    if let Some(owner) = owner {
        ingress["metadata"]["ownerReferences"] = json!([owner]);
    }
    if let Some(class) = &spec.ingress_class_name {
        ingress["spec"]["ingressClassName"] = json!(class);
    }
    if let Some(tls) = &spec.tls {
        ingress["spec"]["tls"] = serde_json::to_value(tls).unwrap_or(Value::Null);
    }
    Ok(ingress)
}

/// Writes and removes the canary Ingress of one rollout.
pub struct NginxRouter {
    ingresses: Api<Ingress>,
    namespace: String,
    field_manager: String,
}

impl NginxRouter {
    pub fn new(client: kube::Client, namespace: &str, field_manager: &str) -> Self {
        Self {
            ingresses: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            field_manager: field_manager.to_owned(),
        }
    }

    /// Reads the user's Ingress (never writes it).
    pub async fn stable_ingress(&self, name: &str) -> Result<Ingress, TrafficError> {
        self.ingresses
            .get_opt(name)
            .await
            .map_err(|e| api_error("Ingress", &self.namespace, name, e))?
            .ok_or_else(|| TrafficError::NotFound {
                kind: "Ingress",
                namespace: self.namespace.clone(),
                name: name.to_owned(),
            })
    }

    /// Creates or updates the canary Ingress (server-side apply: Sluice owns all of it).
    pub async fn apply(&self, canary: &Value) -> Result<(), TrafficError> {
        let name = canary["metadata"]["name"].as_str().unwrap_or_default();
        self.ingresses
            .patch(
                name,
                &PatchParams::apply(&self.field_manager).force(),
                &Patch::Apply(canary),
            )
            .await
            .map_err(|e| api_error("Ingress", &self.namespace, name, e))?;
        Ok(())
    }

    /// Deletes the canary Ingress; gone already is fine. True when it existed.
    pub async fn remove(&self, name: &str) -> Result<bool, TrafficError> {
        match self.ingresses.delete(name, &Default::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(api_error("Ingress", &self.namespace, name, e)),
        }
    }

    /// The canary Ingress as it is, if it exists.
    pub async fn current(&self, name: &str) -> Result<Option<Ingress>, TrafficError> {
        self.ingresses
            .get_opt(name)
            .await
            .map_err(|e| api_error("Ingress", &self.namespace, name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stable() -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["web.example"], "secretName": "web-tls"}],
                "rules": [
                    {"host": "web.example", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}},
                        {"path": "/admin", "pathType": "Prefix",
                         "backend": {"service": {"name": "admin", "port": {"number": 80}}}},
                    ]}},
                    {"host": "other.example", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "other", "port": {"number": 80}}}},
                    ]}},
                ],
            },
        }))
        .unwrap()
    }

    fn backends() -> Backends {
        Backends {
            rollout: "shop".into(),
            stable_service: "web-stable".into(),
            canary_service: "web-canary".into(),
        }
    }

    #[test]
    fn the_canary_ingress_copies_only_the_stable_paths() {
        let state = TrafficState {
            canary_weight: 20,
            routes: vec![vec![RequestMatch::Header {
                name: "X-Canary".into(),
                value: ValueMatch::Prefix("be.ta".into()),
            }]],
        };
        let ingress = canary_ingress(
            &stable(),
            &backends(),
            &state,
            DEFAULT_ANNOTATION_PREFIX,
            100,
            None,
        )
        .unwrap();
        assert_eq!(ingress["metadata"]["name"], "shop-web-canary");
        assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
        assert_eq!(ingress["spec"]["tls"][0]["secretName"], "web-tls");
        let rules = ingress["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        let paths = rules[0]["http"]["paths"].as_array().unwrap();
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0]["backend"]["service"]["name"], "web-canary");
        let a = &ingress["metadata"]["annotations"];
        assert_eq!(a["nginx.ingress.kubernetes.io/canary"], "true");
        assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "20");
        assert_eq!(
            a["nginx.ingress.kubernetes.io/canary-by-header"],
            "X-Canary"
        );
        assert_eq!(
            a["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
            "^be\\.ta.*"
        );
        assert!(
            a.get("nginx.ingress.kubernetes.io/canary-weight-total")
                .is_none()
        );
    }

    #[test]
    fn annotations_at_each_weight_with_a_header_and_a_cookie() {
        for weight in [0, 10, 50, 100] {
            let state = TrafficState {
                canary_weight: weight,
                routes: vec![
                    vec![RequestMatch::Header {
                        name: "X-A".into(),
                        value: ValueMatch::Exact("1".into()),
                    }],
                    vec![RequestMatch::Cookie {
                        name: "canary".into(),
                    }],
                ],
            };
            let ingress = canary_ingress(&stable(), &backends(), &state, "p", 100, None).unwrap();
            let a = &ingress["metadata"]["annotations"];
            assert_eq!(a["p/canary-weight"], weight.to_string());
            assert_eq!(a["p/canary-by-header"], "X-A");
            assert_eq!(a["p/canary-by-header-value"], "1");
            assert_eq!(a["p/canary-by-cookie"], "canary");
            assert_eq!(a.as_object().unwrap().len(), 5, "{a}");
        }
        let total = canary_ingress(
            &stable(),
            &backends(),
            &TrafficState::default(),
            "p",
            1000,
            None,
        )
        .unwrap();
        assert_eq!(
            total["metadata"]["annotations"]["p/canary-weight-total"],
            "1000"
        );
    }

    #[test]
    fn what_nginx_cannot_express_is_rejected() {
        let header = |n: &str| RequestMatch::Header {
            name: n.into(),
            value: ValueMatch::Exact("1".into()),
        };
        let cookie = || RequestMatch::Cookie { name: "c".into() };
        assert!(lint(&[vec![header("a")]], "f").is_ok());
        assert!(lint(&[vec![header("a")], vec![cookie()]], "f").is_ok());
        let two = lint(&[vec![header("a"), header("b")]], "steps[2].setHeaderRoute").unwrap_err();
        assert!(two.to_string().contains("steps[2].setHeaderRoute"), "{two}");
        assert!(lint(&[vec![header("a"), cookie()]], "f").is_err());
        assert!(lint(&[vec![header("a")], vec![header("b")]], "f").is_err());
    }

    #[test]
    fn an_ingress_without_the_stable_service_is_named() {
        let mut other = stable();
        other
            .spec
            .as_mut()
            .unwrap()
            .rules
            .as_mut()
            .unwrap()
            .remove(0);
        let error = canary_ingress(
            &other,
            &backends(),
            &TrafficState::default(),
            "p",
            100,
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("Ingress web"), "{error}");
    }

    #[test]
    fn long_names_are_cut() {
        let name = canary_ingress_name(&"r".repeat(200), &"i".repeat(100));
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-canary"));
    }
}
