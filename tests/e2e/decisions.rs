//! Decisions never leak from one revision, or one attempt, into the next, driven as users drive
//! rollouts: with `kubectl sluice` and with the REST API. The three sequences of the report,
//! chained on one canary with indefinite pauses at steps 1 and 3:
//! - a full promote of v2, then one promote of v3: v3 stops at its pause at step 3, not Healthy;
//! - v3 aborted, then a promote of v4: v4 is not aborted, and stops at step 3;
//! - v4 was promoted at step 1; v5 aborted and retried stays at its pause at step 1.
//!
//! And a lone promote sent right after each pause, as a pipeline sends it, is answered 200.

use std::time::Duration;

use anyhow::ensure;
use kube::Client;
use kube::api::Api;
use libtest_mimic::Trial;
use reqwest::Method;
use rollout_controller::crd::{Phase, Rollout, RolloutStatus};
use serde_json::{Value, json};
use sluice_tests::tokens::service_account_token;

use crate::cli::{FOUR_STEPS, code, sluice, stdout};
use crate::rest_api::Caller;
use crate::rollouts::{create_rollout, create_service, rollout_manifest, set_image, status_until};
use crate::support::{Env, RunningController, TestNamespace};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(decisions::no_decision_leaks_into_the_next_revision_through_kubectl_sluice),
        trial!(decisions::no_decision_leaks_into_the_next_revision_through_the_rest_api),
        trial!(decisions::a_promote_right_after_each_pause_is_answered_200),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Promote,
    PromoteFull,
    Abort,
    Retry,
}

/// How a pipeline steers the rollout `web`.
trait Pipeline {
    async fn act(&self, act: Act) -> anyhow::Result<()>;
    async fn ship(&self, image: &str) -> anyhow::Result<()>;
    /// What the pipeline's gate says of an aborted rollout.
    async fn gate_on_abort(&self) -> anyhow::Result<String>;
}

struct Cli {
    env: &'static Env,
    ns: String,
}

impl Pipeline for Cli {
    async fn act(&self, act: Act) -> anyhow::Result<()> {
        let args: &[&str] = match act {
            Act::Promote => &["promote", "web"],
            Act::PromoteFull => &["promote", "web", "--full"],
            Act::Abort => &["abort", "web"],
            Act::Retry => &["retry", "web"],
        };
        let output = sluice(self.env, &self.ns, args).await?;
        ensure!(code(&output) == 0, "{act:?}: {output:?}");
        Ok(())
    }

    async fn ship(&self, image: &str) -> anyhow::Result<()> {
        let set = format!("app={image}");
        let output = sluice(self.env, &self.ns, &["set", "image", "web", &set]).await?;
        ensure!(code(&output) == 0, "set image: {output:?}");
        Ok(())
    }

    async fn gate_on_abort(&self) -> anyhow::Result<String> {
        let output = sluice(self.env, &self.ns, &["status", "web", "--timeout", "30s"]).await?;
        ensure!(
            code(&output) == 3,
            "status of an aborted rollout: {output:?}"
        );
        Ok(stdout(&output))
    }
}

struct Rest {
    caller: Caller,
    web: String,
    token: String,
    client: Client,
    ns: String,
}

impl Pipeline for Rest {
    async fn act(&self, act: Act) -> anyhow::Result<()> {
        let (path, body) = match act {
            Act::Promote => ("promote", None),
            Act::PromoteFull => ("promote", Some(json!({"full": true}))),
            Act::Abort => ("abort", None),
            Act::Retry => ("retry", None),
        };
        let url = format!("{}/{path}", self.web);
        let (status, reply) = self
            .caller
            .call(Method::POST, &url, Some(&self.token), body)
            .await?;
        ensure!(status == 200, "{act:?}: {status} {reply}");
        Ok(())
    }

    async fn ship(&self, image: &str) -> anyhow::Result<()> {
        set_image(&self.client, &self.ns, "web", image).await
    }

    async fn gate_on_abort(&self) -> anyhow::Result<String> {
        let url = format!("{}/wait?phase=Healthy&timeout=30s", self.web);
        let (status, reply) = self
            .caller
            .call(Method::GET, &url, Some(&self.token), None)
            .await?;
        ensure!(
            status == 409 && reply["error"] == "Aborted",
            "{status} {reply}"
        );
        Ok(reply["message"].as_str().unwrap_or_default().to_owned())
    }
}

async fn status_now(client: &Client, ns: &str) -> anyhow::Result<RolloutStatus> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    Ok(rollouts.get("web").await?.status.unwrap_or_default())
}

/// Ships `image` and waits for its pause at step 1; its pod-template hash.
async fn ship_to_first_pause(
    pipeline: &impl Pipeline,
    client: &Client,
    ns: &str,
    image: &str,
) -> anyhow::Result<String> {
    let before = status_now(client, ns).await?.updated_revision;
    pipeline.ship(image).await?;
    let paused = status_until(client, ns, "web", &format!("{image} at step 1"), |s| {
        s.updated_revision != before && s.phase == Phase::Paused && s.current_step_index == Some(1)
    })
    .await?;
    Ok(paused.updated_revision.unwrap_or_default())
}

/// `revision` paused at `step`, not aborted, and still there a while later: no decision left
/// over from before moves it.
async fn stays_paused_at(
    client: &Client,
    ns: &str,
    revision: &str,
    step: i32,
) -> anyhow::Result<RolloutStatus> {
    let at = |s: &RolloutStatus| {
        s.updated_revision.as_deref() == Some(revision)
            && s.phase == Phase::Paused
            && s.current_step_index == Some(step)
            && !s.abort
    };
    let what = format!("{revision} paused at step {step}");
    let first = status_until(client, ns, "web", &what, at).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = status_now(client, ns).await?;
    ensure!(
        at(&later) && later.attempt == first.attempt,
        "{revision} did not stay at its pause at step {step}: {later:?}"
    );
    Ok(later)
}

async fn aborted(client: &Client, ns: &str, revision: &str) -> anyhow::Result<RolloutStatus> {
    Ok(
        status_until(client, ns, "web", &format!("{revision} aborted"), |s| {
            s.updated_revision.as_deref() == Some(revision) && s.phase == Phase::Aborted
        })
        .await?,
    )
}

/// The three sequences, chained; each new revision ends paused where its steps say.
async fn no_decision_leaks(
    pipeline: &impl Pipeline,
    client: &Client,
    ns: &str,
) -> anyhow::Result<()> {
    // A full promote of v2, then one promote of v3: v3 stops at its next indefinite pause.
    let v2 = ship_to_first_pause(pipeline, client, ns, "web:2").await?;
    pipeline.act(Act::PromoteFull).await?;
    status_until(client, ns, "web", "v2 Healthy", |s| {
        s.stable_revision.as_deref() == Some(v2.as_str()) && s.phase == Phase::Healthy
    })
    .await?;
    let v3 = ship_to_first_pause(pipeline, client, ns, "web:3").await?;
    pipeline.act(Act::Promote).await?;
    stays_paused_at(client, ns, &v3, 3).await?;

    // v3 aborted, then a promote of v4: v4 is not aborted.
    pipeline.act(Act::Abort).await?;
    aborted(client, ns, &v3).await?;
    let gate = pipeline.gate_on_abort().await?;
    ensure!(
        gate.contains("aborted: by a decision"),
        "the gate does not say why v3 aborted: {gate}"
    );
    let v4 = ship_to_first_pause(pipeline, client, ns, "web:4").await?;
    pipeline.act(Act::Promote).await?;
    stays_paused_at(client, ns, &v4, 3).await?;

    // v4 was promoted at step 1; v5, aborted and retried, stays at its pause at step 1.
    let v5 = ship_to_first_pause(pipeline, client, ns, "web:5").await?;
    pipeline.act(Act::Abort).await?;
    let was = aborted(client, ns, &v5).await?;
    pipeline.act(Act::Retry).await?;
    status_until(client, ns, "web", "v5 retried", |s| s.attempt > was.attempt).await?;
    stays_paused_at(client, ns, &v5, 1).await?;
    Ok(())
}

async fn a_canary_with_two_pauses(client: &Client, ns: &str) -> anyhow::Result<()> {
    create_service(client, ns, "web", "web").await?;
    let strategy: Value = serde_json::from_str(FOUR_STEPS)?;
    create_rollout(client, ns, rollout_manifest("web", 4, "web:1", strategy)).await?;
    status_until(client, ns, "web", "v1 Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    Ok(())
}

async fn no_decision_leaks_into_the_next_revision_through_kubectl_sluice(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("leak-cli", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        a_canary_with_two_pauses(&client, &ns).await?;
        let cli = Cli {
            env,
            ns: ns.clone(),
        };
        no_decision_leaks(&cli, &client, &ns).await
    })
    .await
}

async fn no_decision_leaks_into_the_next_revision_through_the_rest_api(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("leak-api", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::with_api(client.clone(), &ns);
        let token =
            service_account_token(&client, &ns, "deployer", &["get", "list", "update"]).await?;
        a_canary_with_two_pauses(&client, &ns).await?;
        let rest = Rest {
            caller: Caller {
                http: reqwest::Client::new(),
                base: controller.api_url()?,
            },
            web: format!("/api/v1/namespaces/{ns}/rollouts/web"),
            token,
            client: client.clone(),
            ns: ns.clone(),
        };
        no_decision_leaks(&rest, &client, &ns).await
    })
    .await
}

/// Indefinite pauses after each of eight weights: sixteen steps, pauses at 1, 3, .., 15.
fn eight_pauses() -> Value {
    let steps: Vec<Value> = (1..=8)
        .flat_map(|i| [json!({"setWeight": i * 10}), json!({"pause": {}})])
        .collect();
    json!({"canary": {"steps": steps}})
}

async fn a_promote_right_after_each_pause_is_answered_200(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("promote-now", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::with_api(client.clone(), &ns);
        let token =
            service_account_token(&client, &ns, "deployer", &["get", "list", "update"]).await?;
        create_service(&client, &ns, "web", "web").await?;
        create_rollout(
            &client,
            &ns,
            rollout_manifest("web", 4, "web:1", eight_pauses()),
        )
        .await?;
        status_until(&client, &ns, "web", "v1 Healthy", |s| {
            s.phase == Phase::Healthy
        })
        .await?;
        let api = Caller {
            http: reqwest::Client::new(),
            base: controller.api_url()?,
        };
        let web = format!("/api/v1/namespaces/{ns}/rollouts/web");
        let (wait, promote) = (
            format!("{web}/wait?phase=Paused&timeout=60s"),
            format!("{web}/promote"),
        );
        let mut answers = Vec::new();
        for image in ["web:2", "web:3"] {
            set_image(&client, &ns, "web", image).await?;
            for step in (1..16).step_by(2) {
                // As the README's pipeline does: wait for the pause, then promote it at once.
                let (status, view) = api.call(Method::GET, &wait, Some(&token), None).await?;
                ensure!(
                    status == 200 && view["currentStep"] == step,
                    "{image} pause {step}: {status} {view}"
                );
                let body = json!({"fromStep": step});
                let (status, reply) = api
                    .call(Method::POST, &promote, Some(&token), Some(body))
                    .await?;
                ensure!(
                    status == 200,
                    "{image}: the promote right after pause {step} got {status} {reply} \
                     (after {} answered 200)",
                    answers.len()
                );
                answers.push(status);
            }
            let healthy = format!("{web}/wait?phase=Healthy&timeout=60s");
            let (status, view) = api.call(Method::GET, &healthy, Some(&token), None).await?;
            ensure!(status == 200, "{image} not Healthy: {status} {view}");
        }
        eprintln!(
            "decisions: {} promotes right after a pause, all answered 200",
            answers.len()
        );
        Ok(())
    })
    .await
}
