//! Writes per step transition, counted by the apiserver: the controller runs as a ServiceAccount
//! of the audited namespace, one-replica canaries (`setWeight 50`, `pause 5s`) are updated, and
//! the audit log says which writes that identity made. A step transition is a change of
//! `status.currentStepIndex` or of `status.phase` between two consecutive states of a Rollout
//! that a watch sees, from the image change until the rollout is Healthy on the new version.
//! Every write from the image change until the controller is quiet again counts, a status write
//! held back for its counts included; so does every GET that found nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use libtest_mimic::Trial;
use rollout_controller::crd::{Phase, Rollout};
use rollout_controller::plan::status_write::COUNTS_WRITE_DELAY;
use serde_json::json;
use sluice_tests::AUDITED_NAMESPACE;
use sluice_tests::tokens::request_token;

use crate::least_privilege::{AuditEvent, audit_events, create_namespace_once};
use crate::rollouts::{create_rollout, rollout_manifest, set_image, status_until};
use crate::support::{Env, RunningController, TestNamespace};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        writes::a_step_transition_takes_at_most_three_api_writes
    )]
}

/// The controller's identity in this test, bound to cluster-admin: rights are least_privilege's
/// concern, the number of writes is this test's.
const ACCOUNT: &str = "sluice-write-count";
const ROLLOUTS: usize = 3;
const MAX_WRITES_PER_TRANSITION: usize = 3;
/// How long the controller may still write after the last rollout is Healthy: a status write
/// held back for its counts goes out within `COUNTS_WRITE_DELAY`.
const QUIET: Duration = Duration::from_secs(COUNTS_WRITE_DELAY.as_secs() + 2);

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

fn name(i: usize) -> String {
    format!("w{i}")
}

fn canary(name: &str, image: &str) -> serde_json::Value {
    rollout_manifest(
        name,
        1,
        image,
        json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "5s"}}]}}),
    )
}

/// A ServiceAccount of the audited namespace with cluster-admin, and a token for it.
async fn audited_identity(admin: &kube::Client) -> anyhow::Result<String> {
    create_namespace_once(admin, AUDITED_NAMESPACE).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), AUDITED_NAMESPACE);
    let account = serde_json::from_value(json!({"metadata": {"name": ACCOUNT}}))?;
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let binding = serde_json::from_value(json!({
        "metadata": {"name": ACCOUNT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": AUDITED_NAMESPACE}],
    }))?;
    match bindings.create(&PostParams::default(), &binding).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(request_token(admin, AUDITED_NAMESPACE, ACCOUNT, Duration::from_secs(3600)).await?)
}

/// (currentStepIndex, phase) of every rollout of `ns`, each change once, in the order a watch
/// sees them; until aborted.
type States = std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<(i32, Phase)>>>>;

fn watch_states(client: &kube::Client, ns: &str) -> (States, tokio::task::JoinHandle<()>) {
    let states = States::default();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let mut stream = watcher(rollouts, watcher::Config::default()).boxed();
    let task = {
        let states = states.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) = event {
                    let status = r.status.unwrap_or_default();
                    let state = (status.current_step_index.unwrap_or(0), status.phase);
                    let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
                    let seen = states
                        .entry(r.metadata.name.unwrap_or_default())
                        .or_default();
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                }
            }
        })
    };
    (states, task)
}

/// The rollout an object of the test belongs to: the Rollout itself, its ReplicaSets
/// (`<rollout>-<hash>`) and its Events (`<rollout>.<id>`).
fn owner_of(object: &str) -> Option<String> {
    (0..ROLLOUTS).map(name).find(|r| {
        object == r
            || object
                .strip_prefix(r.as_str())
                .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
    })
}

/// `verb resource[/subresource]`.
fn kind_of(event: &AuditEvent) -> String {
    let object = event.object_ref.as_ref();
    let resource = object.and_then(|o| o.resource.clone()).unwrap_or_default();
    match object.and_then(|o| o.subresource.as_deref()) {
        Some(sub) => format!("{} {resource}/{sub}", event.verb),
        None => format!("{} {resource}", event.verb),
    }
}

async fn a_step_transition_takes_at_most_three_api_writes(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    let cluster = env.cluster().await?;
    let admin = cluster.admin_client().await?;
    let token = audited_identity(&admin).await?;
    let controller_client = cluster.token_client(ACCOUNT, &token).await?;
    let log = cluster.audit_log();
    let user = format!("system:serviceaccount:{AUDITED_NAMESPACE}:{ACCOUNT}");
    env.in_namespace("writes", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(controller_client, &ns);
        for i in 0..ROLLOUTS {
            create_rollout(&client, &ns, canary(&name(i), "app:1")).await?;
        }
        for i in 0..ROLLOUTS {
            status_until(&client, &ns, &name(i), "v1 Healthy", |s| {
                s.phase == Phase::Healthy
            })
            .await?;
        }
        tokio::time::sleep(QUIET).await;

        let (states, watch) = watch_states(&client, &ns);
        // Each rollout's first state must be the one before the image change: a watch that
        // starts listing after the first transition would count one transition fewer.
        crate::support::eventually("the watch lists every rollout", || async {
            let listed = states.lock().unwrap_or_else(|p| p.into_inner()).len();
            Ok((listed == ROLLOUTS).then_some(()))
        })
        .await?;
        let from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        for i in 0..ROLLOUTS {
            set_image(&client, &ns, &name(i), "app:2").await?;
        }
        for i in 0..ROLLOUTS {
            let spec: rollout_controller::crd::RolloutSpec =
                serde_json::from_value(canary(&name(i), "app:2")["spec"].clone())?;
            let hash = rollout_controller::hash::pod_template_hash(&spec.template);
            status_until(&client, &ns, &name(i), "v2 Healthy", |s| {
                s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(hash.as_str())
            })
            .await?;
        }
        tokio::time::sleep(QUIET).await;
        watch.abort();

        let events: Vec<AuditEvent> = audit_events(&log, &user, from)?
            .into_iter()
            .filter(|e| e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns.as_str()))
            .collect();
        let not_found: Vec<String> = events
            .iter()
            .filter(|e| e.verb == "get")
            .filter(|e| e.response_status.as_ref().and_then(|s| s.code) == Some(404))
            .map(|e| e.request_u_r_i.clone())
            .collect();
        let states = states.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut report = Vec::new();
        let mut over = Vec::new();
        let (mut all_writes, mut all_transitions) = (0, 0);
        let mut total: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..ROLLOUTS {
            let rollout = name(i);
            let seen = states.get(&rollout).cloned().unwrap_or_default();
            // The first state is the one before the image change.
            let transitions = seen.len().saturating_sub(1);
            let mut breakdown: BTreeMap<String, usize> = BTreeMap::new();
            for event in events.iter().filter(|e| WRITE_VERBS.contains(&e.verb.as_str())) {
                let object = event.object_ref.as_ref().and_then(|o| o.name.as_deref());
                if object.and_then(owner_of).as_deref() == Some(rollout.as_str()) {
                    *breakdown.entry(kind_of(event)).or_default() += 1;
                }
            }
            let writes: usize = breakdown.values().sum();
            for (kind, n) in &breakdown {
                *total.entry(kind.clone()).or_default() += n;
            }
            ensure!(
                seen.contains(&(1, Phase::Paused)),
                "{rollout}: the watch never saw the pause: {seen:?}"
            );
            report.push(format!(
                "{rollout}: {writes} writes over {transitions} transitions {seen:?}: {breakdown:?}"
            ));
            if writes > MAX_WRITES_PER_TRANSITION * transitions {
                over.push(rollout);
            }
            all_writes += writes;
            all_transitions += transitions;
        }
        eprintln!(
            "writes: {all_writes} writes over {all_transitions} transitions ({:.2} per transition); {total:?}\n{}",
            all_writes as f64 / all_transitions.max(1) as f64,
            report.join("\n")
        );
        ensure!(
            over.is_empty() && not_found.is_empty(),
            "more than {MAX_WRITES_PER_TRANSITION} writes per step transition for {over:?}, \
             or reads of objects that did not exist ({not_found:?}):\n{}",
            report.join("\n")
        );
        Ok(())
    })
    .await
    .context("writes per step transition")
}
