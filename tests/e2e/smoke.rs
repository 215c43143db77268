//! Proof that the parts are real: a ReplicaSet's pods become Ready and fill a Service's
//! EndpointSlice; the apiserver enforces a CRD's CEL rule; RBAC denies and then allows; and
//! Prometheus over a backfilled TSDB answers a rate() query with the value the data implies.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use libtest_mimic::Trial;
use serde_json::{Value, json};
use sluice_tests::BackfilledPrometheus;

use crate::support::{Env, TestNamespace, eventually, ready_endpoints};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(smoke::replica_set_pods_become_ready_endpoints),
        trial!(smoke::crd_cel_rule_is_enforced),
        trial!(smoke::rbac_denies_then_allows),
        trial!(smoke::prometheus_answers_rate_over_backfill),
    ]
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(value)?)
}

/// Ready addresses in the EndpointSlices of `service`.
async fn ready_addresses(client: &Client, ns: &str, service: &str) -> anyhow::Result<Vec<String>> {
    Ok(ready_endpoints(client, ns, service)
        .await?
        .into_iter()
        .flat_map(|e| e.addresses)
        .collect())
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn replica_set_pods_become_ready_endpoints(env: &'static Env) -> anyhow::Result<()> {
    env.in_namespace("smoke-rs", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        let services: Api<Service> = Api::namespaced(client.clone(), &name);
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &name);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);

        let service = services
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": {"name": "web"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
                }))?,
            )
            .await?;
        let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        ensure!(
            cluster_ip.starts_with("198.51.100."),
            "the Service's cluster IP {cluster_ip} is outside the documentation range 198.51.100.0/24"
        );

        replica_sets
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": {"name": "web"},
                    "spec": {
                        "replicas": 3,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                        },
                    },
                }))?,
            )
            .await?;

        let addresses = eventually("3 ready endpoints behind Service web", || async {
            let addresses = ready_addresses(&client, &name, "web").await?;
            Ok((addresses.len() == 3).then_some(addresses))
        })
        .await?;
        ensure!(
            addresses
                .iter()
                .all(|a| a.parse().is_ok_and(sluice_tests::is_pod_ip)),
            "pod addresses {addresses:?} are outside the pod range {}",
            sluice_tests::POD_CIDR
        );
        let ready_pods = pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items
            .iter()
            .filter(|p| pod_is_ready(p))
            .count();
        ensure!(ready_pods == 3, "{ready_pods} pods Ready, want 3");
        let rs = replica_sets.get("web").await?;
        let ready_replicas = rs.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        ensure!(ready_replicas == 3, "ReplicaSet reports {ready_replicas} ready replicas, want 3");

        replica_sets
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await?;
        eventually("1 ready endpoint and 1 pod after scaling to 1", || async {
            let addresses = ready_addresses(&client, &name, "web").await?;
            let pods = pods.list(&ListParams::default().labels("app=web")).await?;
            Ok((addresses.len() == 1 && pods.items.len() == 1).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

async fn crd_cel_rule_is_enforced(env: &'static Env) -> anyhow::Result<()> {
    env.in_namespace("smoke-cel", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd_name = "widgets.smoke.sluice.dev";
        let rule_message = "minReplicas must not exceed maxReplicas";
        crds.create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": crd_name},
                "spec": {
                    "group": "smoke.sluice.dev",
                    "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                    "scope": "Namespaced",
                    "versions": [{
                        "name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {
                                "type": "object",
                                "properties": {
                                    "minReplicas": {"type": "integer"},
                                    "maxReplicas": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [{
                                    "rule": "self.minReplicas <= self.maxReplicas",
                                    "message": rule_message,
                                }],
                            }},
                        }},
                    }],
                },
            }))?,
        )
        .await?;
        let outcome = async {
            eventually("the Widget CRD to be Established", || async {
                let crd = crds.get(crd_name).await?;
                let established = crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                Ok(established.then_some(()))
            })
            .await?;
            let gvk = GroupVersionKind::gvk("smoke.sluice.dev", "v1", "Widget");
            let widgets: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &name,
                &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
            );
            let widget = |name: &str, min: i64, max: i64| -> anyhow::Result<DynamicObject> {
                object(json!({
                    "apiVersion": "smoke.sluice.dev/v1", "kind": "Widget",
                    "metadata": {"name": name},
                    "spec": {"minReplicas": min, "maxReplicas": max},
                }))
            };
            // The CRD is new: its schema may take a moment to reach every apiserver handler.
            eventually("a valid Widget to be accepted", || async {
                Ok(widgets
                    .create(&PostParams::default(), &widget("good", 1, 5)?)
                    .await
                    .ok()
                    .map(|_| ()))
            })
            .await?;
            match widgets
                .create(&PostParams::default(), &widget("bad", 5, 1)?)
                .await
            {
                Ok(_) => bail!("the apiserver accepted a Widget that breaks the CEL rule"),
                Err(kube::Error::Api(status)) => {
                    ensure!(
                        status.code == 422,
                        "rejected with {}, want 422: {status:?}",
                        status.code
                    );
                    ensure!(
                        status.message.contains(rule_message),
                        "the rejection does not carry the rule's message: {}",
                        status.message
                    );
                }
                Err(e) => return Err(e).context("creating the invalid Widget"),
            }
            Ok(())
        }
        .await;
        crds.delete(crd_name, &DeleteParams::default()).await?;
        outcome
    })
    .await
}

/// Lists pods as `client`; Ok(Some(code)) for an API refusal.
async fn list_pods_status(client: &Client, ns: &str) -> anyhow::Result<Option<u16>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    match pods.list(&ListParams::default()).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) => Ok(Some(status.code)),
        Err(e) => Err(e.into()),
    }
}

async fn grant_pod_reading(client: &Client, ns: &str, subject: Value) -> anyhow::Result<()> {
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let role_name = "pod-reader";
    if roles.get_opt(role_name).await?.is_none() {
        roles
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": {"name": role_name},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
                }))?,
            )
            .await?;
    }
    let binding_name = format!(
        "pod-reader-{}",
        subject["name"].as_str().unwrap_or("subject")
    );
    bindings
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": binding_name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
                "subjects": [subject],
            }))?,
        )
        .await?;
    Ok(())
}

async fn rbac_denies_then_allows(env: &'static Env) -> anyhow::Result<()> {
    let cluster = env.cluster().await?;
    env.in_namespace("smoke-rbac", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;

        // A user authenticated by a client certificate.
        let user = format!("smoke-user-{name}");
        let user_client = cluster.user_client(&user, &[]).await?;
        let refused = list_pods_status(&user_client, &name).await?;
        ensure!(
            refused == Some(403),
            "a user without RBAC got {refused:?}, want 403"
        );
        grant_pod_reading(
            &client,
            &name,
            json!({"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}),
        )
        .await?;
        eventually("the user to be allowed after the RoleBinding", || async {
            Ok(list_pods_status(&user_client, &name)
                .await?
                .is_none()
                .then_some(()))
        })
        .await?;

        // A ServiceAccount authenticated by a token from the TokenRequest API.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        accounts
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "reader"}}))?,
            )
            .await?;
        let request: TokenRequest =
            object(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
        let token = accounts
            .create_token_request("reader", &PostParams::default(), &request)
            .await?
            .status
            .and_then(|s| s.token)
            .context("the TokenRequest returned no token")?;
        let sa_client = cluster
            .token_client(&format!("{name}-reader"), &token)
            .await?;
        let refused = list_pods_status(&sa_client, &name).await?;
        ensure!(
            refused == Some(403),
            "a ServiceAccount without RBAC got {refused:?}, want 403"
        );
        grant_pod_reading(
            &client,
            &name,
            json!({"kind": "ServiceAccount", "name": "reader", "namespace": name}),
        )
        .await?;
        eventually(
            "the ServiceAccount to be allowed after the RoleBinding",
            || async {
                Ok(list_pods_status(&sa_client, &name)
                    .await?
                    .is_none()
                    .then_some(()))
            },
        )
        .await?;

        // A token the apiserver did not sign is not a user at all.
        let stranger = cluster
            .token_client(&format!("{name}-stranger"), "not-a-token")
            .await?;
        let refused = list_pods_status(&stranger, &name).await?;
        ensure!(
            refused == Some(401),
            "a garbage token got {refused:?}, want 401"
        );
        Ok(())
    })
    .await
}

async fn prometheus_answers_rate_over_backfill(_env: &'static Env) -> anyhow::Result<()> {
    // 20 minutes of two counters, a sample every 15 s, ending a minute ago: 200s grow by 2/s,
    // 500s by 0.2/s.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let end = now - 60;
    let start = end - 20 * 60;
    let mut text =
        String::from("# HELP http_requests Requests served.\n# TYPE http_requests counter\n");
    let mut samples_500 = String::new();
    for (i, t) in (start..=end).step_by(15).enumerate() {
        let i = i as u64;
        text.push_str(&format!(
            "http_requests_total{{code=\"200\"}} {} {t}\n",
            30 * i
        ));
        samples_500.push_str(&format!(
            "http_requests_total{{code=\"500\"}} {} {t}\n",
            3 * i
        ));
    }
    text.push_str(&samples_500);
    text.push_str("# EOF\n");

    let prometheus = BackfilledPrometheus::start(&text).await?;
    let outcome = async {
        let http = reqwest::Client::new();
        let query = |promql: &'static str| {
            let http = http.clone();
            let url = format!("{}/api/v1/query", prometheus.url());
            async move {
                let body: Value = http
                    .get(url)
                    .query(&[("query", promql), ("time", &end.to_string())])
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let value = body["data"]["result"][0]["value"][1]
                    .as_str()
                    .with_context(|| format!("no sample in the answer to {promql}: {body}"))?;
                anyhow::Ok(value.parse::<f64>()?)
            }
        };
        let total = query("sum(rate(http_requests_total[5m]))").await?;
        ensure!((total - 2.2).abs() < 1e-9, "total rate {total}, want 2.2");
        let error_ratio = query(
            "sum(rate(http_requests_total{code=\"500\"}[5m])) / sum(rate(http_requests_total[5m]))",
        )
        .await?;
        ensure!(
            (error_ratio - 0.2 / 2.2).abs() < 1e-9,
            "error ratio {error_ratio}, want 1/11"
        );
        Ok(())
    }
    .await;
    prometheus.stop().await;
    outcome
}
