//! Least privilege, proven: the controller runs as the ServiceAccount `deploy/rbac/` installs,
//! with a token from the TokenRequest API, in its own process, through a canary with analysis
//! (Prometheus address, token and CA read from a Secret and a ConfigMap), NGINX routing, role
//! metadata, a pipeline promoting through the REST API and an abort; a blue-green; an A/B test
//! on a Gateway API HTTPRoute; and releases that trim the run and revision history. The apiserver's audit log says which verbs on which
//! resources that identity used: nothing may be denied, and the ClusterRole and Role may grant
//! nothing the run did not use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, ensure};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use rollout_controller::crd::analysis::{AnalysisRun, AnalysisTemplate, ROLLOUT_LABEL};
use rollout_controller::plan::runs::ANALYSIS_RUN_HISTORY;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_tests::tokens::service_account_token;
use sluice_tests::{AUDITED_NAMESPACE, BackfilledPrometheus};
use traffic::gateway::http_route_resource;

use crate::cli::built_binary;
use crate::prometheus_analysis::openmetrics;
use crate::rollout_analysis::error_rate_template;
use crate::rollouts::{create_rollout, create_service, rollout_manifest, set_image, status_until};
use crate::support::{Env, TestNamespace, eventually, free_port};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        least_privilege::the_controller_uses_exactly_the_rights_deploy_grants
    )]
}

/// The controller's ServiceAccount, as deploy/rbac/ names it.
const ACCOUNT: &str = "sluice";

fn deploy_rbac() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac")
}

/// One right: (API group, resource[/subresource], verb).
type Right = (String, String, String);

/// Rights an admission plugin checks inside another request, so the audit log never shows
/// them as requests of their own. The harness runs the plugin, so a missing one is refused.
const CHECKED_IN_ADMISSION: [(&str, &str, &str); 1] = [
    // OwnerReferencesPermissionEnforcement: ReplicaSets, AnalysisRuns and the canary Ingress
    // are created with a controller owner reference that blocks the Rollout's deletion.
    ("sluice.dev", "rollouts/finalizers", "update"),
];

/// Every right the Roles and ClusterRoles in deploy/rbac/ grant.
fn granted() -> anyhow::Result<BTreeSet<Right>> {
    let mut rights = BTreeSet::new();
    for entry in std::fs::read_dir(deploy_rbac())? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)?;
            if !matches!(value["kind"].as_str(), Some("ClusterRole" | "Role")) {
                continue;
            }
            for rule in value["rules"].as_array().into_iter().flatten() {
                let list = |key: &str| -> Vec<String> {
                    rule[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                };
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        for verb in list("verbs") {
                            ensure!(
                                group != "*" && resource != "*" && verb != "*",
                                "{}: a wildcard is not least privilege: {rule}",
                                path.display()
                            );
                            rights.insert((group.clone(), resource.clone(), verb));
                        }
                    }
                }
            }
        }
    }
    ensure!(!rights.is_empty(), "no Role or ClusterRole in deploy/rbac/");
    Ok(rights)
}

/// One request in the apiserver's audit log, as far as the tests read it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditEvent {
    pub(crate) verb: String,
    pub(crate) user: AuditUser,
    pub(crate) object_ref: Option<AuditObject>,
    pub(crate) response_status: Option<AuditStatus>,
    #[serde(default)]
    pub(crate) request_u_r_i: String,
}

#[derive(Deserialize)]
pub(crate) struct AuditUser {
    pub(crate) username: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditObject {
    pub(crate) resource: Option<String>,
    pub(crate) subresource: Option<String>,
    #[serde(default)]
    pub(crate) api_group: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AuditStatus {
    pub(crate) code: Option<u16>,
}

/// The requests `user` made, in the order the audit log has them, from byte `from` of the log
/// on.
pub(crate) fn audit_events(log: &Path, user: &str, from: usize) -> anyhow::Result<Vec<AuditEvent>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut events = Vec::new();
    for line in text.get(from..).unwrap_or_default().lines() {
        let event: AuditEvent = serde_json::from_str(line).context("an audit event")?;
        if event.user.username == user {
            events.push(event);
        }
    }
    Ok(events)
}

/// What `user` did according to the audit log: the rights it used, and the requests refused.
fn used_by(log: &Path, user: &str) -> anyhow::Result<(BTreeSet<Right>, Vec<String>)> {
    let mut used = BTreeSet::new();
    let mut denied = Vec::new();
    for event in audit_events(log, user, 0)? {
        let code = event.response_status.as_ref().and_then(|s| s.code);
        if code == Some(403) {
            denied.push(format!("{} {}", event.verb, event.request_u_r_i));
        }
        let Some(object) = event.object_ref else {
            continue;
        };
        let Some(resource) = object.resource else {
            continue;
        };
        let resource = match object.subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        // A server-side apply that creates its object (201) is authorized as create too.
        if event.verb == "patch" && code == Some(201) {
            used.insert((object.api_group.clone(), resource.clone(), "create".into()));
        }
        used.insert((object.api_group, resource, event.verb));
    }
    Ok((used, denied))
}

/// The real controller binary, as the ServiceAccount, until dropped.
struct ControllerProcess {
    child: tokio::process::Child,
    api: String,
}

impl ControllerProcess {
    fn start(kubeconfig: &Path, namespace: &str, log: &Path) -> anyhow::Result<Self> {
        let (health, api) = (free_port(), free_port());
        let log = std::fs::File::create(log)?;
        let child = tokio::process::Command::new(built_binary("rollout-controller")?)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace])
            .args(["--health-addr", &health.to_string()])
            .args(["--api-addr", &api.to_string()])
            .args(["--leader-election-namespace", AUDITED_NAMESPACE])
            .args(["--leader-election-id", &format!("sluice-{namespace}")])
            .env("POD_NAMESPACE", AUDITED_NAMESPACE)
            .env("POD_NAME", format!("sluice-{namespace}-0"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting rollout-controller")?;
        Ok(Self {
            child,
            api: format!("http://{api}"),
        })
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub(crate) async fn create_namespace_once(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The canary's analysis (rollout_analysis's error-rate template), with its Prometheus address,
/// bearer token and CA certificate from a Secret and a ConfigMap, as a real installation keeps
/// them.
fn analysed_template() -> Value {
    let mut template = error_rate_template();
    template["spec"]["args"][0] = json!({"name": "prometheus", "valueFrom": {"secretKeyRef": {"name": "prometheus", "key": "address"}}});
    let provider = &mut template["spec"]["metrics"][0]["provider"]["prometheus"];
    provider["authentication"] =
        json!({"bearerToken": {"secretKeyRef": {"name": "prometheus", "key": "token"}}});
    provider["tls"] =
        json!({"caCert": {"configMapKeyRef": {"name": "prometheus-ca", "key": "ca.crt"}}});
    template
}

async fn the_controller_uses_exactly_the_rights_deploy_grants(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let cluster = env.cluster().await?;
    let admin = cluster.admin_client().await?;
    create_namespace_once(&admin, AUDITED_NAMESPACE).await?;
    let applied = tokio::process::Command::new(cluster.binaries().path("kubectl"))
        .args([
            "apply",
            "--server-side",
            "--field-manager",
            "sluice-e2e",
            "-f",
        ])
        .arg(deploy_rbac())
        .env("KUBECONFIG", cluster.admin_kubeconfig())
        .output()
        .await?;
    ensure!(
        applied.status.success(),
        "applying deploy/rbac/: {applied:?}"
    );
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), AUDITED_NAMESPACE);
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
    let token = accounts
        .create_token_request(ACCOUNT, &PostParams::default(), &request)
        .await
        .with_context(|| format!("a token for ServiceAccount {AUDITED_NAMESPACE}/{ACCOUNT}"))?
        .status
        .and_then(|s| s.token)
        .context("no token issued")?;
    let kubeconfig = cluster.token_kubeconfig(ACCOUNT, &token)?;
    let ca_pem = std::fs::read_to_string(cluster.ca_cert())?;
    let controller_log = cluster
        .dir()
        .join("logs")
        .join("least-privilege-controller.log");

    let log = controller_log.clone();
    env.in_namespace("rbac", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller_log = log;
        let canary_manifest = |image: &str| {
            let mut manifest = rollout_manifest("web", 2, image, json!({"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": {"nginx": {"stableIngress": "web"}},
                "canaryMetadata": {"labels": {"role": "canary"}},
                "stableMetadata": {"labels": {"role": "stable"}},
                "scaleDownDelaySeconds": 1, "abortScaleDownDelaySeconds": 1,
                "steps": [
                    {"setWeight": 50},
                    {"analysis": {"templates": [{"templateName": "error-rate"}]}},
                    {"pause": {}},
                ],
            }}));
            manifest["spec"]["revisionHistoryLimit"] = json!(1);
            manifest
        };
        let hash = |image: &str| -> anyhow::Result<String> {
            let template = canary_manifest(image)["spec"]["template"].clone();
            Ok(rollout_controller::hash::pod_template_hash(&serde_json::from_value(template)?))
        };
        let (v1, v2, v3) = (hash("web:1")?, hash("web:2")?, hash("web:3")?);
        let prometheus = BackfilledPrometheus::start(&openmetrics(&[
            (&v1, 20.0, 0.005),
            (&v2, 20.0, 0.005),
            (&v3, 20.0, 0.05),
        ]))
        .await?;
        let outcome = async {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            secrets
                .create(&PostParams::default(), &serde_json::from_value(json!({
                    "metadata": {"name": "prometheus"},
                    "stringData": {"address": prometheus.url(), "token": "not-checked-by-this-prometheus"},
                }))?)
                .await?;
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            maps.create(&PostParams::default(), &serde_json::from_value(json!({
                "metadata": {"name": "prometheus-ca"}, "data": {"ca.crt": ca_pem},
            }))?)
            .await?;
            let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), &ns);
            templates
                .create(&PostParams::default(), &serde_json::from_value(analysed_template())?)
                .await?;
            templates
                .create(&PostParams::default(), &serde_json::from_value(json!({
                    "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisTemplate",
                    "metadata": {"name": "quick"},
                    "spec": {"metrics": [{
                        "name": "up", "interval": "1s", "count": 1,
                        "provider": {"prometheus": {"address": prometheus.url(), "query": "vector(1)"}},
                        "successCondition": "result[0] == 1",
                    }]},
                }))?)
                .await?;
            for service in ["web-stable", "web-canary", "bg-active", "bg-preview", "ab-stable", "ab-canary"] {
                let app = service.split('-').next().unwrap_or(service);
                create_service(&client, &ns, service, app).await?;
            }
            let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
            ingresses
                .create(&PostParams::default(), &serde_json::from_value(json!({
                    "metadata": {"name": "web"},
                    "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]},
                }))?)
                .await?;
            let routes: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &http_route_resource());
            routes
                .create(&PostParams::default(), &serde_json::from_value(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": "ab"},
                    "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
                        {"name": "ab-stable", "port": 80, "weight": 100},
                        {"name": "ab-canary", "port": 80, "weight": 0}]}]},
                }))?)
                .await?;
            let deployer = service_account_token(&client, &ns, "deployer", &["get", "list", "update"]).await?;

            let controller = ControllerProcess::start(&kubeconfig, &ns, &controller_log)?;
            create_rollout(&client, &ns, canary_manifest("web:1")).await?;
            create_rollout(&client, &ns, rollout_manifest("bg", 2, "bg:1", json!({"blueGreen": {
                "activeService": "bg-active", "previewService": "bg-preview", "scaleDownDelaySeconds": 1,
            }})))
            .await?;
            create_rollout(&client, &ns, rollout_manifest("ab", 2, "ab:1", json!({"abTest": {
                "stableService": "ab-stable", "canaryService": "ab-canary",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "ab"}},
                "match": [{"headers": [{"name": "X-Canary", "exact": "always"}]}],
                "duration": "2s", "promote": "auto", "scaleDownDelaySeconds": 1,
            }})))
            .await?;
            for name in ["web", "bg", "ab"] {
                status_until(&client, &ns, name, &format!("{name} v1 Healthy"), |s| s.phase == Phase::Healthy).await?;
            }

            // The canary: analysis passes, a pipeline promotes the pause through the REST API.
            set_image(&client, &ns, "web", "web:2").await?;
            status_until(&client, &ns, "web", "web v2 paused after its analysis", |s| {
                s.current_step_index == Some(2) && s.phase == Phase::Paused
            })
            .await?;
            let promoted = reqwest::Client::new()
                .post(format!("{}/api/v1/namespaces/{ns}/rollouts/web/promote", controller.api))
                .bearer_auth(&deployer)
                .json(&json!({"fromStep": 2}))
                .send()
                .await?;
            ensure!(promoted.status() == 200, "promote through the REST API: {}", promoted.status());
            status_until(&client, &ns, "web", "web v2 Healthy", |s| {
                s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(v2.as_str())
            })
            .await?;
            // v3 fails its analysis and is aborted by the controller.
            set_image(&client, &ns, "web", "web:3").await?;
            status_until(&client, &ns, "web", "web v3 Aborted", |s| s.phase == Phase::Aborted).await?;
            eventually("the canary Ingress removed", || async {
                Ok(ingresses.get_opt("web-web-canary").await?.is_none().then_some(()))
            })
            .await?;

            // A rollout with more analysis steps than the run history keeps, and no revision
            // history: its next release deletes the oldest finished run and the old ReplicaSet.
            let quick = json!({"templates": [{"templateName": "quick"}]});
            let mut many = rollout_manifest("many", 1, "many:1", json!({"canary": {
                "steps": vec![json!({"analysis": quick}); ANALYSIS_RUN_HISTORY + 1],
            }}));
            many["spec"]["revisionHistoryLimit"] = json!(0);
            create_rollout(&client, &ns, many).await?;
            status_until(&client, &ns, "many", "many v1 Healthy", |s| s.phase == Phase::Healthy).await?;
            set_image(&client, &ns, "many", "many:2").await?;
            status_until(&client, &ns, "many", "many v2 through its analyses", |s| {
                s.phase == Phase::Healthy && s.observed_generation.unwrap_or(0) >= 2
            })
            .await?;
            set_image(&client, &ns, "many", "many:3").await?;
            let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &ns);
            eventually("the oldest finished run of many deleted", || async {
                let listed = runs
                    .list(&ListParams::default().labels(&format!("{ROLLOUT_LABEL}=many")))
                    .await?;
                Ok((listed.items.len() <= ANALYSIS_RUN_HISTORY + 1).then_some(()))
            })
            .await?;

            set_image(&client, &ns, "bg", "bg:2").await?;
            set_image(&client, &ns, "ab", "ab:2").await?;
            for name in ["bg", "ab"] {
                // Generation 2 is the v2 template.
                status_until(&client, &ns, name, &format!("{name} v2 Healthy"), |s| {
                    s.phase == Phase::Healthy && s.observed_generation.unwrap_or(0) >= 2
                })
                .await?;
            }
            // Old ReplicaSets scaled down after their delay, and the revision history trimmed.
            eventually("the scale-downs after the delays", || async {
                let counts = crate::rollouts::replica_counts(&client, &ns).await?;
                Ok((counts.values().filter(|n| **n == 0).count() >= 2).then_some(()))
            })
            .await?;
            // A restart of bg: its stable pods listed and deleted one at a time.
            let rollouts: Api<rollout_controller::crd::Rollout> = Api::namespaced(client.clone(), &ns);
            let at = k8s_openapi::jiff::Timestamp::now().as_second() + 1;
            let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(at)?,
            );
            rollouts
                .patch(
                    "bg",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&json!({"spec": {"restartAt": at}})),
                )
                .await?;
            status_until(&client, &ns, "bg", "bg restarted", |s| {
                s.restarted_at.is_some() && s.phase == Phase::Healthy
            })
            .await?;
            drop(controller);
            Ok(())
        }
        .await;
        prometheus.stop().await;
        outcome
    })
    .await?;

    let user = format!("system:serviceaccount:{AUDITED_NAMESPACE}:{ACCOUNT}");
    let (used, denied) = used_by(&cluster.audit_log(), &user)?;
    ensure!(
        denied.is_empty(),
        "the controller was refused {} requests (its log: {}): {denied:#?}",
        denied.len(),
        controller_log.display()
    );
    let granted = granted()?;
    let mut used = used;
    used.extend(
        CHECKED_IN_ADMISSION
            .iter()
            .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())),
    );
    let unused: Vec<&Right> = granted.difference(&used).collect();
    let missing: Vec<&Right> = used.difference(&granted).collect();
    eprintln!(
        "least_privilege: {} rights granted, {} used; used: {:?}",
        granted.len(),
        used.len(),
        used
    );
    ensure!(
        unused.is_empty(),
        "deploy/rbac/ grants rights the controller never used: {unused:?}"
    );
    ensure!(
        missing.is_empty(),
        "the controller used rights deploy/rbac/ does not grant: {missing:?}"
    );
    Ok(())
}
