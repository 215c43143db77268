//! ingress-nginx: a canary Ingress beside the user's stable Ingress, carrying the canary
//! annotations. Sluice creates and owns it; the user's Ingress is only read.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use tracing::info;

use crate::spec::{Backends, NginxRouting, RequestMatch, TrafficState, ValueMatch};
use crate::{Applied, TrafficError, TrafficRouter, api_error};

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

/// What is wrong with the user's `stable` Ingress for `backends`, if anything: the check a
/// canary Ingress would make, without making one.
pub fn check_stable_ingress(stable: &Ingress, backends: &Backends) -> Result<(), TrafficError> {
    canary_ingress(
        stable,
        backends,
        &TrafficState::default(),
        DEFAULT_ANNOTATION_PREFIX,
        100,
        None,
    )
    .map(|_| ())
}

/// The parts of an Ingress Sluice writes: maps whose keys it sets one by one.
const OWNED_MAPS: [[&str; 2]; 2] = [["metadata", "annotations"], ["metadata", "labels"]];

/// The keys of `current[section]` that `field_manager` set with server-side apply, read from the
/// object's managedFields. Keys someone else set are not in it, even where the values agree.
fn applied_keys<'a>(current: &'a Value, field_manager: &str, section: &[&str]) -> Vec<&'a str> {
    let mut keys = Vec::new();
    for entry in current["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if entry["manager"].as_str() != Some(field_manager)
            || entry["operation"].as_str() != Some("Apply")
        {
            continue;
        }
        let mut fields = &entry["fieldsV1"];
        for part in section {
            fields = &fields[format!("f:{part}")];
        }
        if let Some(fields) = fields.as_object() {
            keys.extend(fields.keys().filter_map(|k| k.strip_prefix("f:")));
        }
    }
    keys
}

/// True when the canary Ingress as it is (`current`) already is `desired` in every field
/// Sluice owns: each annotation, label and spec field Sluice wants has its value, and none that
/// Sluice applied earlier is left over. Fields others added (an annotation of their own, a spec
/// field) are not compared: applying cannot remove them, so comparing them would apply again on
/// every resync.
pub fn canary_ingress_in_place(current: &Value, desired: &Value, field_manager: &str) -> bool {
    let map_in_place = |section: &[&str]| {
        let (mut want, mut have) = (desired, current);
        for part in section {
            want = &want[*part];
            have = &have[*part];
        }
        let want = want.as_object();
        let wanted = |key: &str| want.is_some_and(|w| w.contains_key(key));
        want.into_iter()
            .flatten()
            .all(|(k, v)| have.get(k) == Some(v))
            && applied_keys(current, field_manager, section)
                .into_iter()
                .all(wanted)
    };
    OWNED_MAPS.iter().all(|section| map_in_place(section)) && map_in_place(&["spec"])
}

/// The canary Ingress of one rollout, beside the user's stable Ingress: created, kept to the
/// state asked for, and deleted when all traffic is back on stable.
pub struct NginxRouter {
    ingresses: Api<Ingress>,
    namespace: String,
    field_manager: String,
    stable_ingress: String,
    prefix: String,
    owner: Option<OwnerReference>,
}

impl NginxRouter {
    /// `owner` goes on the canary Ingress, so that it goes with the rollout.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        field_manager: &str,
        routing: &NginxRouting,
        owner: Option<OwnerReference>,
    ) -> Self {
        Self {
            ingresses: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            field_manager: field_manager.to_owned(),
            stable_ingress: routing.stable_ingress.clone(),
            prefix: routing
                .annotation_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_ANNOTATION_PREFIX.to_owned()),
            owner,
        }
    }

    /// Reads the user's Ingress (never writes it).
    async fn stable(&self) -> Result<Ingress, TrafficError> {
        self.current(&self.stable_ingress)
            .await?
            .ok_or_else(|| TrafficError::NotFound {
                kind: "Ingress",
                namespace: self.namespace.clone(),
                name: self.stable_ingress.clone(),
            })
    }

    /// An Ingress as it is, if it exists.
    async fn current(&self, name: &str) -> Result<Option<Ingress>, TrafficError> {
        self.ingresses
            .get_opt(name)
            .await
            .map_err(|e| api_error("Ingress", &self.namespace, name, e))
    }

    /// Creates or updates the canary Ingress (server-side apply: Sluice owns all it writes).
    async fn write(&self, name: &str, canary: &Value) -> Result<(), TrafficError> {
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
    async fn remove(&self, name: &str) -> Result<bool, TrafficError> {
        match self.ingresses.delete(name, &Default::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(api_error("Ingress", &self.namespace, name, e)),
        }
    }
}

impl TrafficRouter for NginxRouter {
    async fn check(&self, backends: &Backends) -> Result<(), TrafficError> {
        check_stable_ingress(&self.stable().await?, backends)
    }

    async fn apply(
        &self,
        backends: &Backends,
        state: Option<&TrafficState>,
        max_weight: i32,
    ) -> Result<Applied, TrafficError> {
        let name = canary_ingress_name(&backends.rollout, &self.stable_ingress);
        let Some(state) = state else {
            // Read first: a DELETE of what is not there would still cost an API call.
            if self.current(&name).await?.is_some() && self.remove(&name).await? {
                info!(ingress = %name, "canary Ingress removed: all traffic on stable");
                return Ok(Applied::Wrote("Ingress"));
            }
            return Ok(Applied::Unchanged);
        };
        let stable = self.stable().await?;
        let desired = canary_ingress(
            &stable,
            backends,
            state,
            &self.prefix,
            max_weight,
            self.owner.as_ref(),
        )?;
        let current = self
            .current(&name)
            .await?
            .map(|i| serde_json::to_value(i).unwrap_or_default());
        if current
            .as_ref()
            .is_some_and(|c| canary_ingress_in_place(c, &desired, &self.field_manager))
        {
            return Ok(Applied::Unchanged);
        }
        self.write(&name, &desired).await?;
        info!(ingress = %name, weight = state.canary_weight, "canary Ingress set");
        Ok(Applied::Wrote("Ingress"))
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

    /// The canary Ingress as the apiserver returns it after Sluice applied `desired`: its
    /// managedFields name what Sluice set.
    fn as_stored(desired: &Value) -> Value {
        let keys = |v: &Value| -> Value {
            let mut fields = serde_json::Map::new();
            fields.insert(".".into(), json!({}));
            for k in v.as_object().unwrap().keys() {
                fields.insert(format!("f:{k}"), json!({}));
            }
            Value::Object(fields)
        };
        let mut stored = desired.clone();
        stored["metadata"]["resourceVersion"] = json!("12");
        stored["metadata"]["managedFields"] = json!([{
            "manager": "sluice",
            "operation": "Apply",
            "apiVersion": "networking.k8s.io/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": keys(&desired["metadata"]["annotations"]),
                    "f:labels": keys(&desired["metadata"]["labels"]),
                },
                "f:spec": keys(&desired["spec"]),
            },
        }]);
        stored
    }

    fn desired(weight: i32, header: bool) -> Value {
        let routes = if header {
            vec![vec![RequestMatch::Header {
                name: "X-Canary".into(),
                value: ValueMatch::Exact("1".into()),
            }]]
        } else {
            vec![]
        };
        let state = TrafficState {
            canary_weight: weight,
            routes,
        };
        canary_ingress(&stable(), &backends(), &state, "p", 100, None).unwrap()
    }

    #[test]
    fn only_the_fields_sluice_owns_are_compared() {
        let current = as_stored(&desired(10, true));
        assert!(canary_ingress_in_place(
            &current,
            &desired(10, true),
            "sluice"
        ));
        assert!(!canary_ingress_in_place(
            &current,
            &desired(20, true),
            "sluice"
        ));

        // What others add to the canary Ingress is theirs: no write for it, ever.
        let mut foreign = current.clone();
        foreign["metadata"]["annotations"]["team"] = json!("shop");
        foreign["metadata"]["annotations"]["p/rewrite-target"] = json!("/");
        foreign["metadata"]["labels"]["owner"] = json!("ops");
        foreign["spec"]["defaultBackend"] =
            json!({"service": {"name": "x", "port": {"number": 80}}});
        foreign["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"manager": "kubectl-edit", "operation": "Update",
                         "fieldsV1": {"f:metadata": {"f:annotations": {"f:team": {}}}}}));
        assert!(canary_ingress_in_place(
            &foreign,
            &desired(10, true),
            "sluice"
        ));

        // A field Sluice applied and no longer wants must go: only applying again removes it.
        assert!(!canary_ingress_in_place(
            &current,
            &desired(10, false),
            "sluice"
        ));
        // Another manager's change of a value Sluice wants is put back.
        let mut edited = current.clone();
        edited["metadata"]["annotations"]["p/canary-weight"] = json!("90");
        assert!(!canary_ingress_in_place(
            &edited,
            &desired(10, true),
            "sluice"
        ));
        let mut paths = current.clone();
        paths["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/x");
        assert!(!canary_ingress_in_place(
            &paths,
            &desired(10, true),
            "sluice"
        ));
        let mut removed = current;
        removed["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("sluice.dev/rollout");
        assert!(!canary_ingress_in_place(
            &removed,
            &desired(10, true),
            "sluice"
        ));
    }
}
