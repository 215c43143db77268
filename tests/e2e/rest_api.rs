//! The REST API on the real control plane: ServiceAccount tokens checked with TokenReview and
//! SubjectAccessReview, 20 concurrent promotes of one step of which exactly one wins, and `wait`
//! answering Healthy for the new generation and 409 for an abort.

use anyhow::ensure;
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use serde_json::{Value, json};
use sluice_tests::tokens::service_account_token;

use crate::cli::FOUR_STEPS;
use crate::rollouts::{create_rollout, create_service, rollout_manifest, set_image, status_until};
use crate::support::{Env, RunningController, TestNamespace};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        rest_api::pipelines_promote_wait_and_abort_with_service_account_tokens
    )]
}

pub(crate) struct Caller {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Caller {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

/// ServiceAccounts `deployer` (`deployer_verbs` on rollouts) and `viewer` (get, list) in `ns`,
/// and `web`, a canary of 4 replicas through [`FOUR_STEPS`], Healthy on `web:1`: their tokens.
pub(crate) async fn web_with_deployer_and_viewer(
    client: &kube::Client,
    ns: &str,
    deployer_verbs: &[&str],
) -> anyhow::Result<(String, String)> {
    let deployer = service_account_token(client, ns, "deployer", deployer_verbs).await?;
    let viewer = service_account_token(client, ns, "viewer", &["get", "list"]).await?;
    create_service(client, ns, "web", "web").await?;
    let strategy: Value = serde_json::from_str(FOUR_STEPS)?;
    create_rollout(client, ns, rollout_manifest("web", 4, "web:1", strategy)).await?;
    status_until(client, ns, "web", "v1 Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    Ok((deployer, viewer))
}

async fn pipelines_promote_wait_and_abort_with_service_account_tokens(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("api", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::with_api(client.clone(), &ns);
        let (deployer, viewer) =
            web_with_deployer_and_viewer(&client, &ns, &["get", "list", "update"]).await?;
        let api = Caller {
            http: reqwest::Client::new(),
            base: controller.api_url()?,
        };
        let web = format!("/api/v1/namespaces/{ns}/rollouts/web");
        use reqwest::Method;

        set_image(&client, &ns, "web", "web:2").await?;
        let (status, body) = api
            .call(
                Method::GET,
                &format!("{web}/wait?phase=Paused&timeout=60s"),
                Some(&viewer),
                None,
            )
            .await?;
        ensure!(status == 200 && body["currentStep"] == 1, "{status} {body}");

        // Who may do what.
        ensure!(
            api.call(Method::GET, &web, None, None).await?.0 == 401,
            "no token must be 401"
        );
        ensure!(
            api.call(Method::GET, &web, Some("garbage"), None).await?.0 == 401,
            "a bad token must be 401"
        );
        let (status, body) = api
            .call(
                Method::POST,
                &format!("{web}/promote"),
                Some(&viewer),
                Some(json!({"fromStep": 1})),
            )
            .await?;
        ensure!(
            status == 403,
            "a reader promoting must be 403: {status} {body}"
        );
        let (status, body) = api
            .call(
                Method::GET,
                &format!("/api/v1/rollouts?namespace={ns}"),
                Some(&viewer),
                None,
            )
            .await?;
        ensure!(
            status == 200 && body.as_array().map(Vec::len) == Some(1),
            "{status} {body}"
        );

        // Twenty pipelines promote step 1 at once: one wins, the rollout moves one step.
        let promote_path = format!("{web}/promote");
        let promotes = (0..20).map(|_| {
            api.call(
                Method::POST,
                &promote_path,
                Some(&deployer),
                Some(json!({"fromStep": 1})),
            )
        });
        let outcomes = futures::future::join_all(promotes).await;
        let statuses: Vec<u16> = outcomes
            .into_iter()
            .map(|o| o.map(|(s, _)| s))
            .collect::<anyhow::Result<_>>()?;
        ensure!(
            statuses.iter().filter(|s| **s == 200).count() == 1,
            "{statuses:?}"
        );
        ensure!(
            statuses.iter().filter(|s| **s == 409).count() == 19,
            "{statuses:?}"
        );
        let at_three = status_until(&client, &ns, "web", "the pause at step 3", |s| {
            s.current_step_index == Some(3)
        })
        .await?;
        ensure!(at_three.phase == Phase::Paused, "{at_three:?}");

        // `wait` for Healthy answers only once the promoted revision is Healthy.
        let wait_path = format!("{web}/wait?phase=Healthy&timeout=60s");
        let waiting = api.call(Method::GET, &wait_path, Some(&viewer), None);
        let promoting = async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            api.call(
                Method::POST,
                &format!("{web}/promote"),
                Some(&deployer),
                Some(json!({"fromStep": 3})),
            )
            .await
        };
        let (waited, promoted) = tokio::join!(waiting, promoting);
        let (code, view) = waited?;
        ensure!(promoted?.0 == 200, "the last promote failed");
        ensure!(code == 200 && view["phase"] == "Healthy", "{code} {view}");

        // An aborted rollout makes `wait` answer 409.
        set_image(&client, &ns, "web", "web:3").await?;
        let (status, _) = api
            .call(
                Method::GET,
                &format!("{web}/wait?phase=Paused&timeout=60s"),
                Some(&viewer),
                None,
            )
            .await?;
        ensure!(status == 200, "v3 did not pause: {status}");
        let (status, body) = api
            .call(Method::POST, &format!("{web}/abort"), Some(&deployer), None)
            .await?;
        ensure!(status == 200, "{status} {body}");
        let (status, body) = api
            .call(
                Method::GET,
                &format!("{web}/wait?phase=Healthy&timeout=60s"),
                Some(&viewer),
                None,
            )
            .await?;
        ensure!(
            status == 409 && body["error"] == "Aborted",
            "{status} {body}"
        );
        let (status, body) = api
            .call(
                Method::POST,
                &format!("{web}/promote"),
                Some(&deployer),
                None,
            )
            .await?;
        ensure!(
            status == 409,
            "promoting an aborted rollout must be 409: {status} {body}"
        );
        Ok(())
    })
    .await
}
