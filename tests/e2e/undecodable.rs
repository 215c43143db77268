//! One object the controller cannot decode must not stop it. Such objects exist where a CRD's
//! older schema let a value through that the controller's types refuse (`count: 4294967296` as a
//! `u32`), and where something writes around the apiserver. The CRDs now bound every integer,
//! so the apiserver refuses them; these tests store them straight into etcd, as the older
//! schema let them be stored, without loosening a CRD that parallel tests share.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use libtest_mimic::Trial;
use rollout_controller::crd::analysis::AnalysisTemplate;
use rollout_controller::crd::{Phase, Rollout};
use serde_json::{Value, json};

use reqwest::Method;
use sluice_tests::tokens::service_account_token;

use crate::cli::{code as code_of, sluice, stdout};
use crate::rest_api::Caller;
use crate::restart::ControllerProcess;
use crate::rollouts::{create_rollout, rollout_manifest, set_image, status_until};
use crate::support::{Env, RunningController, TestNamespace, events_with_reason, eventually};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(undecodable::the_apiserver_refuses_an_integer_beyond_its_type),
        trial!(undecodable::an_undecodable_template_degrades_only_the_rollouts_that_use_it),
        trial!(undecodable::an_undecodable_rollout_is_degraded_and_the_others_go_on),
    ]
}

/// A metric whose `count` does not fit the controller's `u32`.
fn template_spec(count: u64) -> Value {
    json!({"metrics": [{
        "name": "errors",
        "interval": "1s",
        "count": count,
        "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "up"}},
        "successCondition": "result[0] < 1",
    }]})
}

fn rolling() -> Value {
    json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
}

/// Stores `object` (kind `K`, in `ns`) directly in etcd, as the apiserver stores custom
/// resources: JSON under `/registry/<group>/<plural>/<namespace>/<name>`. The apiserver's watch
/// serves it from there like any other.
async fn store_in_etcd<K: Resource<DynamicType = ()>>(
    env: &Env,
    ns: &str,
    name: &str,
    spec: Value,
) -> anyhow::Result<()> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let now = Timestamp::from_second(Timestamp::now().as_second())?;
    let object = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": format!("00000000-0000-4000-8000-{:012x}", nanos & 0xffff_ffff_ffff),
            "generation": 1,
            "creationTimestamp": Time(now),
        },
        "spec": spec,
    });
    let key = format!("/registry/{}/{}/{ns}/{name}", K::group(&()), K::plural(&()));
    // etcd's JSON gateway takes keys and values in base64, as ByteString serialises.
    let base64 = |bytes: Vec<u8>| serde_json::to_value(k8s_openapi::ByteString(bytes));
    let body = json!({
        "key": base64(key.clone().into_bytes())?,
        "value": base64(serde_json::to_vec(&object)?)?,
    });
    let etcd = env.cluster().await?.etcd_url();
    let response = reqwest::Client::new()
        .post(format!("{etcd}/v3/kv/put"))
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    ensure!(
        status.is_success(),
        "etcd refused {key}: {status} {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The object as JSON, read without the controller's types.
async fn raw<K: Resource<DynamicType = ()>>(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<Option<Value>> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()));
    Ok(api.get_opt(name).await?.map(|o| o.data))
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Waits until the controller's `/readyz` answers 200.
async fn ready(controller: &ControllerProcess) -> anyhow::Result<()> {
    let url = format!("http://{}/readyz", controller.health);
    eventually("the controller to be ready", || async {
        let ok = reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success());
        Ok(ok.then_some(()))
    })
    .await
}

/// `sluice_undecodable_objects{kind=...}` as the controller reports it.
async fn undecodable_gauge(controller: &ControllerProcess, kind: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", controller.health))
        .await?
        .text()
        .await?;
    let series = format!("sluice_undecodable_objects{{kind=\"{kind}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// A Warning Event with reason `Undecodable` on `name` whose note has `needle`.
async fn undecodable_event(
    client: &Client,
    ns: &str,
    name: &str,
    needle: &str,
) -> anyhow::Result<()> {
    eventually(&format!("an Undecodable Event on {name}"), || async {
        let events = events_with_reason(client, ns, "Undecodable").await?;
        Ok(events
            .iter()
            .any(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.message.as_deref().is_some_and(|m| m.contains(needle))
            })
            .then_some(()))
    })
    .await
}

fn log_path(ns: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sluice-undecodable-{ns}.log"))
}

async fn the_apiserver_refuses_an_integer_beyond_its_type(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("bounds", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), &ns);
        let mut template: AnalysisTemplate = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "fits"},
            "spec": template_spec(u64::from(u32::MAX)),
        }))?;
        templates.create(&PostParams::default(), &template).await?;
        // One more than a u32 holds: typed, it cannot even be written, so send it as JSON.
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::erase::<AnalysisTemplate>(&()),
        );
        template.metadata.name = Some("too-big".into());
        let mut object: DynamicObject = serde_json::from_value(serde_json::to_value(&template)?)?;
        object.data["spec"] = template_spec(u64::from(u32::MAX) + 1);
        let refused = api.create(&PostParams::default(), &object).await;
        match refused {
            Err(kube::Error::Api(status)) => ensure!(
                status.code == 422 && status.message.contains("spec.metrics[0].count"),
                "refused, but not for the count: {status:?}"
            ),
            other => anyhow::bail!("the apiserver stored count 4294967296: {other:?}"),
        }
        Ok(())
    })
    .await
}

async fn an_undecodable_template_degrades_only_the_rollouts_that_use_it(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let kubeconfig = env.cluster().await?.admin_kubeconfig().to_path_buf();
    env.in_namespace("undecodable-at", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let log = log_path(&ns);
        let first = ControllerProcess::start(&kubeconfig, &ns, &log, None)?;
        ready(&first).await?;
        create_rollout(
            &client,
            &ns,
            rollout_manifest("other", 2, "app:1", rolling()),
        )
        .await?;
        status_until(&client, &ns, "other", "other Healthy", |s| {
            s.phase == Phase::Healthy
        })
        .await?;

        // Arrives on the running controller's watch.
        store_in_etcd::<AnalysisTemplate>(env, &ns, "bad-count", template_spec(1 << 32)).await?;
        let stored = raw::<AnalysisTemplate>(&client, &ns, "bad-count")
            .await?
            .context("the apiserver does not serve what etcd holds")?;
        ensure!(
            stored["spec"]["metrics"][0]["count"] == json!(1_u64 << 32),
            "{stored}"
        );
        let uses_bad = json!({"canary": {"maxSurge": 1, "maxUnavailable": 0, "steps": [
            {"setWeight": 50},
            {"analysis": {"templates": [{"templateName": "bad-count"}]}},
        ]}});
        create_rollout(
            &client,
            &ns,
            rollout_manifest("uses-bad", 2, "app:1", uses_bad),
        )
        .await?;
        let degraded = |s: &rollout_controller::crd::RolloutStatus| {
            s.phase == Phase::Degraded
                && s.conditions.iter().any(|c| {
                    c.type_ == "InvalidSpec"
                        && c.status == "True"
                        && c.message
                            .contains("steps[1].analysis.templates[0].templateName")
                        && c.message
                            .contains("AnalysisTemplate bad-count cannot be decoded")
                        && c.message.contains("spec.metrics[0].count")
                })
        };
        status_until(
            &client,
            &ns,
            "uses-bad",
            "uses-bad Degraded with the decode error (watch)",
            degraded,
        )
        .await?;
        first.kill().await;

        // A fresh process lists it: before, the whole list failed and /readyz stayed 503.
        let second = ControllerProcess::start(&kubeconfig, &ns, &log, None)?;
        ready(&second).await?;
        let v2 = rollout_controller::hash::pod_template_hash(&serde_json::from_value(
            rollout_manifest("other", 2, "app:2", rolling())["spec"]["template"].clone(),
        )?);
        set_image(&client, &ns, "other", "app:2").await?;
        status_until(&client, &ns, "other", "other v2 Healthy", |s| {
            s.phase == Phase::Healthy
                && s.stable_revision.as_deref() == Some(v2.as_str())
                && s.ready_replicas == 2
        })
        .await?;
        status_until(
            &client,
            &ns,
            "uses-bad",
            "uses-bad still Degraded after the restart",
            degraded,
        )
        .await?;
        undecodable_event(&client, &ns, "bad-count", "spec.metrics[0].count").await?;
        let gauge = undecodable_gauge(&second, "AnalysisTemplate").await?;
        ensure!(
            gauge == 1.0,
            "sluice_undecodable_objects for AnalysisTemplate is {gauge}"
        );

        // Fixed through the apiserver, which now checks the bound, it decodes again.
        let templates: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::erase::<AnalysisTemplate>(&()),
        );
        templates
            .patch(
                "bad-count",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": template_spec(3)})),
            )
            .await?;
        let fixed = status_until(&client, &ns, "uses-bad", "uses-bad valid again", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "InvalidSpec" && c.status == "False")
        })
        .await?;
        ensure!(
            fixed.phase != Phase::Degraded || !fixed.message.contains("cannot be decoded"),
            "{fixed:?}"
        );
        eventually("the gauge to fall to 0", || async {
            Ok((undecodable_gauge(&second, "AnalysisTemplate").await? == 0.0).then_some(()))
        })
        .await?;
        second.kill().await;
        Ok(())
    })
    .await
}

async fn an_undecodable_rollout_is_degraded_and_the_others_go_on(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("undecodable-ro", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let mut broken = rollout_manifest("broken", 2, "app:1", rolling())["spec"].clone();
        broken["replicas"] = json!(1_u64 << 32);
        store_in_etcd::<Rollout>(env, &ns, "broken", broken).await?;
        // In process, for its REST API: the undecodable rollout must show there too.
        let controller = RunningController::with_api(client.clone(), &ns);
        create_rollout(
            &client,
            &ns,
            rollout_manifest("other", 2, "app:1", rolling()),
        )
        .await?;
        status_until(&client, &ns, "other", "other Healthy", |s| {
            s.phase == Phase::Healthy
        })
        .await?;

        let status = eventually("broken Degraded with the decode error", || async {
            let Some(object) = raw::<Rollout>(&client, &ns, "broken").await? else {
                return Ok(None);
            };
            let status = object["status"].clone();
            let marked = status["phase"] == "Degraded"
                && condition(&status, "InvalidSpec").is_some_and(|c| {
                    c["status"] == "True"
                        && c["reason"] == "Undecodable"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("spec.replicas"))
                });
            Ok(marked.then_some(status))
        })
        .await?;
        ensure!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot decode this Rollout")),
            "{status}"
        );
        undecodable_event(&client, &ns, "broken", "spec.replicas").await?;
        shown_with_its_decode_error(env, &ns, &client, &controller).await?;

        // Fixed, it decodes and rolls out like any other.
        let rollouts: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<Rollout>(&()));
        rollouts
            .patch(
                "broken",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"replicas": 2}})),
            )
            .await?;
        let healthy = status_until(&client, &ns, "broken", "broken Healthy once fixed", |s| {
            s.phase == Phase::Healthy
        })
        .await?;
        ensure!(
            healthy
                .conditions
                .iter()
                .any(|c| c.type_ == "InvalidSpec" && c.status == "False"),
            "{healthy:?}"
        );
        drop(controller);
        Ok(())
    })
    .await
}

/// The REST API and `kubectl sluice` list the undecodable rollout `broken` beside `other`,
/// Degraded with the field that does not decode, find it rather than answer 404, and the
/// pipeline gate `status` fails on it.
async fn shown_with_its_decode_error(
    env: &Env,
    ns: &str,
    client: &Client,
    controller: &RunningController,
) -> anyhow::Result<()> {
    let names_the_field = |view: &Value| {
        view["phase"] == "Degraded"
            && view["undecodable"]
                .as_str()
                .is_some_and(|e| e.starts_with("spec.replicas: "))
            && view["message"]
                .as_str()
                .is_some_and(|m| m.contains("spec.replicas"))
    };
    let viewer = service_account_token(client, ns, "viewer", &["get", "list"]).await?;
    let api = Caller {
        http: reqwest::Client::new(),
        base: controller.api_url()?,
    };
    let (code, listed) = api
        .call(
            Method::GET,
            &format!("/api/v1/rollouts?namespace={ns}"),
            Some(&viewer),
            None,
        )
        .await?;
    let names: Vec<&str> = listed
        .as_array()
        .map(|l| l.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        code == 200 && names == ["broken", "other"],
        "{code} {listed}"
    );
    ensure!(names_the_field(&listed[0]), "{}", listed[0]);
    let (code, got) = api
        .call(
            Method::GET,
            &format!("/api/v1/namespaces/{ns}/rollouts/broken"),
            Some(&viewer),
            None,
        )
        .await?;
    ensure!(code == 200 && names_the_field(&got), "{code} {got}");

    let list = sluice(env, ns, &["list", "-o", "json"]).await?;
    ensure!(code_of(&list) == 0, "{list:?}");
    let listed: Value = serde_json::from_str(&stdout(&list))?;
    ensure!(
        listed.as_array().is_some_and(|l| l.len() == 2) && names_the_field(&listed[0]),
        "{listed}"
    );
    let get = sluice(env, ns, &["get", "rollout", "broken", "-o", "json"]).await?;
    ensure!(code_of(&get) == 0, "{get:?}");
    let got: Value = serde_json::from_str(&stdout(&get))?;
    ensure!(names_the_field(&got), "{got}");
    let text = stdout(&sluice(env, ns, &["list"]).await?);
    ensure!(
        text.lines().any(|l| l.starts_with("broken")
            && l.contains("Degraded")
            && l.contains("spec.replicas")),
        "{text}"
    );
    let gate = sluice(env, ns, &["status", "broken", "--timeout", "5s"]).await?;
    ensure!(
        code_of(&gate) == 6 && stdout(&gate).contains("spec.replicas"),
        "{gate:?}"
    );
    // An action is refused as a conflict naming the field, as the REST API refuses it.
    let promote = sluice(env, ns, &["promote", "broken"]).await?;
    let said = String::from_utf8_lossy(&promote.stderr);
    ensure!(
        code_of(&promote) == 5 && said.contains("spec.replicas") && said.contains("fix it"),
        "{promote:?}"
    );
    Ok(())
}
