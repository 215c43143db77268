//! The demo's app (examples/demo/app.yaml), installed with server-side apply as a user would
//! `kubectl apply --server-side` it, and the template changes that ship v2 and v3. The app's
//! route goes to the harness's Traefik: on the NGINX router the Ingress of app.yaml in Traefik's
//! IngressClass, on the Gateway API router an HTTPRoute made from it, attached to the harness's
//! Gateway, with the Rollout's `trafficRouting` naming it.

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use rollout_controller::crd::Rollout;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_tests::traefik::{INGRESS_CLASS, Traefik};

pub(crate) const APP_YAML: &str = include_str!("../app.yaml");
pub(crate) const FIELD_MANAGER: &str = "sluice-demo";

/// Which of Traefik's two providers routes the app, and so what Sluice writes its weights to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Router {
    /// ingress-nginx's canary annotations, on a canary Ingress Sluice makes beside app.yaml's.
    Nginx,
    /// The backendRef weights of an HTTPRoute attached to the harness's Gateway.
    Gateway,
}

impl Router {
    /// What routes the app, as a person would say it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Router::Nginx => {
                "Ingress web (Traefik's ingress-nginx provider; Sluice adds a canary Ingress)"
            }
            Router::Gateway => {
                "HTTPRoute web (Traefik's Gateway API provider; Sluice sets its backendRef weights)"
            }
        }
    }
}

/// The documents of app.yaml, made ready for the demo's cluster: the AnalysisTemplate's
/// `prometheus` argument set to the demo's Prometheus, and the route given to Traefik by
/// `router`.
pub(crate) fn documents(prometheus_url: &str, router: Router) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(APP_YAML) {
        let value = Value::deserialize(document).context("reading app.yaml")?;
        if value.is_null() {
            continue;
        }
        documents.push(value);
    }
    let mut replaced = false;
    for doc in &mut documents {
        if doc["kind"] != "AnalysisTemplate" {
            continue;
        }
        let args = doc["spec"]["args"].as_array_mut().into_iter().flatten();
        for arg in args.filter(|a| a["name"] == "prometheus") {
            arg["value"] = json!(prometheus_url);
            replaced = true;
        }
    }
    if !replaced {
        bail!(
            "app.yaml has no AnalysisTemplate with a `prometheus` argument to point at the demo's Prometheus"
        );
    }
    route(&mut documents, router)?;
    Ok(documents)
}

/// The host app.yaml's Ingress serves: what the demo's client asks for.
pub(crate) fn host(documents: &[Value]) -> anyhow::Result<String> {
    documents
        .iter()
        .filter(|d| d["kind"] == "Ingress" || d["kind"] == "HTTPRoute")
        .find_map(|d| {
            d["spec"]["rules"][0]["host"]
                .as_str()
                .or_else(|| d["spec"]["hostnames"][0].as_str())
                .map(str::to_owned)
        })
        .context("app.yaml's route names no host")
}

/// Hands app.yaml's one Ingress to Traefik: in its IngressClass for the NGINX router, or
/// replaced by an HTTPRoute on the harness's Gateway (same name, host and stable Service, the
/// Rollout's canary Service beside it at weight 0) for the Gateway API router.
fn route(documents: &mut [Value], router: Router) -> anyhow::Result<()> {
    let ingress = documents
        .iter_mut()
        .find(|d| d["kind"] == "Ingress")
        .context("app.yaml has no Ingress")?;
    if router == Router::Nginx {
        ingress["spec"]["ingressClassName"] = json!(INGRESS_CLASS);
        return Ok(());
    }
    let rule = &ingress["spec"]["rules"][0];
    let backend = &rule["http"]["paths"][0]["backend"]["service"];
    let (Some(name), Some(host), Some(stable), Some(port)) = (
        ingress["metadata"]["name"].as_str(),
        rule["host"].as_str(),
        backend["name"].as_str(),
        backend["port"]["number"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok()),
    ) else {
        bail!(
            "app.yaml's Ingress has no name, or no host, Service or port number in its first rule"
        );
    };
    let (name, host, stable) = (name.to_owned(), host.to_owned(), stable.to_owned());
    let rollout = documents
        .iter_mut()
        .find(|d| d["kind"] == "Rollout")
        .context("app.yaml has no Rollout")?;
    let canary = &mut rollout["spec"]["strategy"]["canary"];
    let canary_service = canary["canaryService"]
        .as_str()
        .context("app.yaml's Rollout has no canaryService")?
        .to_owned();
    canary["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": name}});
    let http_route = Traefik::canary_http_route(&name, &host, &stable, &canary_service, port);
    if let Some(ingress) = documents.iter_mut().find(|d| d["kind"] == "Ingress") {
        *ingress = http_route;
    }
    Ok(())
}

/// Applies every document into `namespace`; returns `Kind name` of each.
pub(crate) async fn apply(
    client: &Client,
    namespace: &str,
    documents: Vec<Value>,
) -> anyhow::Result<Vec<String>> {
    let mut applied = Vec::new();
    for doc in documents {
        let object: DynamicObject = serde_json::from_value(doc).context("an app.yaml object")?;
        let types = object
            .types
            .clone()
            .context("an app.yaml object without apiVersion/kind")?;
        let (group, version) = match types.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", types.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("discovering {}", types.kind))?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let name = object.name_any();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying {} {name}", types.kind))?;
        applied.push(format!("{} {name}", types.kind));
    }
    Ok(applied)
}

/// A version of the app: its image tag and how demo-app behaves.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub version: &'static str,
    pub error_rate: &'static str,
}

impl Release {
    pub(crate) fn image(&self) -> String {
        format!(
            "registry.example.com/demo-app:{}",
            self.version.trim_start_matches('v')
        )
    }

    /// How a person would say what changed.
    pub(crate) fn describe(&self) -> String {
        format!(
            "image {}, env DEMO_VERSION={} DEMO_ERROR_RATE={}",
            self.image(),
            self.version,
            self.error_rate
        )
    }
}

/// Ships `release`: the first container's image and its DEMO_VERSION / DEMO_ERROR_RATE env in
/// the Rollout's pod template, the rest of the container as it is. Returns the generation the
/// change made.
pub(crate) async fn ship(
    rollouts: &Api<Rollout>,
    name: &str,
    release: &Release,
) -> anyhow::Result<i64> {
    let rollout = rollouts.get(name).await?;
    let mut containers = serde_json::to_value(&rollout.spec.template)?["spec"]["containers"].take();
    let Some(container) = containers.get_mut(0) else {
        bail!("rollout {name} has no container");
    };
    container["image"] = json!(release.image());
    let mut env: Vec<Value> = container["env"].as_array().cloned().unwrap_or_default();
    for (key, value) in [
        ("DEMO_VERSION", release.version),
        ("DEMO_ERROR_RATE", release.error_rate),
    ] {
        env.retain(|var| var["name"] != key);
        env.push(json!({"name": key, "value": value}));
    }
    container["env"] = Value::Array(env);
    // A merge patch replaces the containers list whole, with the one edited here.
    let patch = json!({"spec": {"template": {"spec": {"containers": containers}}}});
    let patched = rollouts
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("changing rollout {name}'s pod template"))?;
    patched
        .metadata
        .generation
        .context("the patched rollout has no generation")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's manifests pass `kubectl sluice lint` (the same code) without an error or a
    /// warning, as the strategy examples do.
    #[test]
    fn the_demo_manifests_lint_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let reports = rollout_controller::lint::lint(&text).unwrap();
            let findings: Vec<String> = reports.iter().map(ToString::to_string).collect();
            assert!(
                !rollout_controller::lint::has_errors(&reports),
                "{}: {findings:#?}",
                path.display()
            );
            assert!(
                reports.iter().all(|r| r.findings.is_empty()),
                "{}: warnings: {findings:#?}",
                path.display()
            );
            assert!(
                reports.iter().any(|r| r.kind == "Rollout"),
                "{}: no Rollout linted: {findings:#?}",
                path.display()
            );
        }
        assert!(files > 0, "no YAML in {}", dir.display());
    }

    /// What the demo applies, on either router, lints as clean as the file.
    #[test]
    fn the_documents_applied_lint_clean_on_both_routers() {
        for router in [Router::Nginx, Router::Gateway] {
            let text: String = documents("http://127.0.0.1:4321", router)
                .unwrap()
                .iter()
                .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
                .collect();
            let reports = rollout_controller::lint::lint(&text).unwrap();
            let findings: Vec<String> = reports.iter().map(ToString::to_string).collect();
            assert!(
                reports.iter().any(|r| r.kind == "Rollout")
                    && reports.iter().all(|r| r.findings.is_empty()),
                "{router:?}: {findings:#?}"
            );
        }
    }

    #[test]
    fn the_prometheus_argument_is_pointed_at_the_demos_prometheus() {
        let documents = documents("http://127.0.0.1:4321", Router::Nginx).unwrap();
        let template = documents
            .iter()
            .find(|d| d["kind"] == "AnalysisTemplate")
            .unwrap();
        let args = template["spec"]["args"].as_array().unwrap();
        assert!(
            args.iter()
                .any(|a| a["name"] == "prometheus" && a["value"] == "http://127.0.0.1:4321")
        );
    }

    #[test]
    fn a_release_names_its_image_after_its_version() {
        let v3 = Release {
            version: "v3",
            error_rate: "0.05",
        };
        assert_eq!(v3.image(), "registry.example.com/demo-app:3");
        assert!(v3.describe().contains("DEMO_ERROR_RATE=0.05"));
    }

    fn kinds(documents: &[Value]) -> Vec<&str> {
        documents
            .iter()
            .filter_map(|d| d["kind"].as_str())
            .collect()
    }

    #[test]
    fn on_nginx_the_ingress_is_traefiks_and_the_rollout_routes_by_it() {
        let documents = documents("http://127.0.0.1:4321", Router::Nginx).unwrap();
        assert!(!kinds(&documents).contains(&"HTTPRoute"));
        let ingress = documents.iter().find(|d| d["kind"] == "Ingress").unwrap();
        assert_eq!(ingress["spec"]["ingressClassName"], INGRESS_CLASS);
        let rollout = documents.iter().find(|d| d["kind"] == "Rollout").unwrap();
        assert_eq!(
            rollout["spec"]["strategy"]["canary"]["trafficRouting"],
            json!({"nginx": {"stableIngress": "web"}})
        );
        assert_eq!(host(&documents).unwrap(), "web.demo.example");
    }

    #[test]
    fn on_the_gateway_an_http_route_replaces_the_ingress() {
        let documents = documents("http://127.0.0.1:4321", Router::Gateway).unwrap();
        assert!(!kinds(&documents).contains(&"Ingress"));
        let route = documents.iter().find(|d| d["kind"] == "HTTPRoute").unwrap();
        assert_eq!(
            route["spec"]["parentRefs"][0],
            Traefik::gateway_parent_ref()
        );
        assert_eq!(route["spec"]["hostnames"], json!(["web.demo.example"]));
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "web-stable", "port": 80, "weight": 100},
                {"name": "web-canary", "port": 80, "weight": 0},
            ])
        );
        let rollout = documents.iter().find(|d| d["kind"] == "Rollout").unwrap();
        assert_eq!(
            rollout["spec"]["strategy"]["canary"]["trafficRouting"],
            json!({"gatewayAPI": {"httpRoute": "web"}})
        );
        assert_eq!(host(&documents).unwrap(), "web.demo.example");
        // What the controller reads: the Rollout still parses, with the Gateway API router.
        let parsed: Rollout = serde_json::from_value(rollout.clone()).unwrap();
        let routing = parsed
            .spec
            .strategy
            .canary
            .unwrap()
            .traffic_routing
            .unwrap();
        assert_eq!(routing.gateway_api.unwrap().http_route, "web");
        assert!(routing.nginx.is_none());
    }
}
