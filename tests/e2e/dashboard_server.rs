//! The dashboard's server side on the real control plane, as the page uses it (the page itself
//! is driven in a browser elsewhere): from the controller, ServiceAccount tokens checked on the
//! session, the permissions and the list's event stream; from `kubectl sluice dashboard`, each
//! user's own kubeconfig rights, the one-time login link, and the Host, Origin and CSRF checks
//! in front of a promote that moves the rollout exactly one step.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use libtest_mimic::Trial;
use reqwest::Method;
use reqwest::header::{COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use rollout_controller::crd::Phase;
use serde_json::{Value, json};
use sluice_tests::tokens::service_account_token;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::built_binary;
use crate::rest_api::Caller;
use crate::rollouts::{create_rollout, create_service, rollout_manifest, set_image, status_until};
use crate::support::{Env, RunningController, TestNamespace};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        dashboard_server::each_viewer_gets_their_own_rights_from_the_controller_and_from_the_plugin
    )]
}

/// The first event of a server-sent event stream: its name and JSON data.
async fn first_event(mut response: reqwest::Response) -> anyhow::Result<(String, Value)> {
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await? {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(end) = text.find("\n\n") {
                let block = &text[..end];
                let name = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return Ok((
                    name.unwrap_or_default().to_owned(),
                    serde_json::from_str(&data)?,
                ));
            }
        }
        anyhow::bail!("the stream ended before an event: {text:?}")
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .context("no event in 20s")?
}

/// What building a view reads besides rollouts: the plugin reads as the user.
pub(crate) async fn grant_view_reads(
    client: &Client,
    ns: &str,
    accounts: &[&str],
) -> anyhow::Result<()> {
    let metadata = ObjectMeta {
        name: Some("dashboard-reads".into()),
        ..ObjectMeta::default()
    };
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["apps".into()]),
                resources: Some(vec!["replicasets".into()]),
                verbs: vec!["get".into(), "list".into()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec!["sluice.dev".into()]),
                resources: Some(vec!["analysisruns".into()]),
                verbs: vec!["get".into(), "list".into()],
                ..PolicyRule::default()
            },
        ]),
    };
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "dashboard-reads".into(),
        },
        subjects: Some(
            accounts
                .iter()
                .map(|a| Subject {
                    kind: "ServiceAccount".into(),
                    name: (*a).to_owned(),
                    namespace: Some(ns.to_owned()),
                    ..Subject::default()
                })
                .collect(),
        ),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// `kubectl sluice dashboard` running as one user, logged in once.
struct Plugin {
    _process: tokio::process::Child,
    base: String,
    host: String,
    cookie: String,
    csrf: String,
    http: reqwest::Client,
}

impl Plugin {
    async fn start(kubeconfig: &std::path::Path, ns: &str) -> anyhow::Result<Self> {
        let mut process = tokio::process::Command::new(built_binary("kubectl-sluice")?)
            .args(["dashboard", "--no-open", "--port", "0", "-n", ns])
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = process.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("no login link in 20s")??
            .context("the plugin exited without a login link")?;
        let rest = url.strip_prefix("http://").context("not an http link")?;
        let (host, path) = rest.split_once('/').context("no path")?;
        ensure!(path.starts_with("dashboard/login?code="), "{url}");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = format!("http://{host}");
        let login = http.get(&url).send().await?;
        ensure!(
            login.status() == 303 && login.headers()[LOCATION] == "/dashboard/",
            "{login:?}"
        );
        let set = login.headers()[SET_COOKIE].to_str()?.to_owned();
        ensure!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().context("empty cookie")?.to_owned();
        ensure!(
            http.get(&url).send().await?.status() == 403,
            "a login link works once"
        );
        let session: Value = http
            .get(format!("{base}/api/v1/session"))
            .header(COOKIE, &cookie)
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            session["mode"] == "session" && session["namespace"] == ns,
            "{session}"
        );
        let csrf = session["csrfToken"]
            .as_str()
            .context("no csrfToken")?
            .to_owned();
        Ok(Self {
            _process: process,
            base,
            host: host.to_owned(),
            cookie,
            csrf,
            http,
        })
    }

    /// A request with the session cookie and, for a POST, the page's Origin and CSRF token.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie);
        if method == Method::POST {
            request
                .header(ORIGIN, format!("http://{}", self.host))
                .header("x-csrf-token", &self.csrf)
        } else {
            request
        }
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

async fn each_viewer_gets_their_own_rights_from_the_controller_and_from_the_plugin(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("dash", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::with_api(client.clone(), &ns);
        // The plugin patches as the user: its deployer needs `patch`, the controller's REST `update`.
        let deployer = service_account_token(&client, &ns, "deployer", &["get", "list", "update", "patch"]).await?;
        let viewer = service_account_token(&client, &ns, "viewer", &["get", "list"]).await?;
        grant_view_reads(&client, &ns, &["deployer", "viewer"]).await?;
        create_service(&client, &ns, "web", "web").await?;
        let strategy = json!({"canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}});
        create_rollout(&client, &ns, rollout_manifest("web", 4, "web:1", strategy)).await?;
        status_until(&client, &ns, "web", "v1 Healthy", |s| s.phase == Phase::Healthy).await?;
        set_image(&client, &ns, "web", "web:2").await?;
        status_until(&client, &ns, "web", "paused at step 1", |s| {
            s.phase == Phase::Paused && s.current_step_index == Some(1)
        })
        .await?;
        let web = format!("/api/v1/namespaces/{ns}/rollouts/web");

        // The controller: who the token is, what it may do, and the live list.
        let api = Caller { http: reqwest::Client::new(), base: controller.api_url()? };
        let (status, session) = api.call(Method::GET, "/api/v1/session", None, None).await?;
        ensure!(status == 200 && session["mode"] == "token" && session["user"].is_null(), "{status} {session}");
        let (status, session) = api.call(Method::GET, "/api/v1/session", Some(&viewer), None).await?;
        let viewer_name = format!("system:serviceaccount:{ns}:viewer");
        ensure!(status == 200 && session["user"] == viewer_name.as_str(), "{status} {session}");
        ensure!(api.call(Method::GET, "/api/v1/session", Some("garbage"), None).await?.0 == 401);
        let permissions = format!("{web}/permissions");
        let (_, may) = api.call(Method::GET, &permissions, Some(&viewer), None).await?;
        ensure!(may == json!({"update": false}), "viewer: {may}");
        let (_, may) = api.call(Method::GET, &permissions, Some(&deployer), None).await?;
        ensure!(may == json!({"update": true}), "deployer: {may}");
        ensure!(api.call(Method::GET, &format!("/api/v1/rollouts/events?namespace={ns}"), None, None).await?.0 == 401);
        let stream = api
            .http
            .get(format!("{}/api/v1/rollouts/events?namespace={ns}", api.base))
            .bearer_auth(&viewer)
            .send()
            .await?;
        ensure!(stream.headers()["content-security-policy"].to_str()?.starts_with("default-src 'none'"));
        let (name, list) = first_event(stream).await?;
        ensure!(name == "list" && list[0]["name"] == "web", "{name} {list}");
        ensure!(list[0]["actions"]["promote"]["applies"] == true && list[0]["actions"]["retry"]["applies"] == false, "{list}");

        // The plugin as the viewer: reads, but its promote is refused by the viewer's own RBAC.
        let cluster = env.cluster().await?;
        let as_viewer = Plugin::start(&cluster.token_kubeconfig(&format!("{ns}-viewer"), &viewer)?, &ns).await?;
        let (status, view) = as_viewer.json(as_viewer.request(Method::GET, &web)).await?;
        ensure!(status == 200 && view["currentStep"] == 1, "{status} {view}");
        let (_, may) = as_viewer.json(as_viewer.request(Method::GET, &permissions)).await?;
        ensure!(may == json!({"update": false}), "viewer through the plugin: {may}");
        let (status, body) = as_viewer.json(as_viewer.request(Method::POST, &format!("{web}/promote")).json(&json!({"fromStep": 1}))).await?;
        ensure!(status == 403, "a viewer's promote through the plugin: {status} {body}");
        let stream = as_viewer.request(Method::GET, &format!("/api/v1/rollouts/events?namespace={ns}")).send().await?;
        let (name, list) = first_event(stream).await?;
        ensure!(name == "list" && list[0]["name"] == "web", "{name} {list}");
        drop(as_viewer);

        // The plugin as the deployer: forged requests are refused before any RBAC, the page's
        // own promote moves the rollout exactly one step.
        let as_deployer = Plugin::start(&cluster.token_kubeconfig(&format!("{ns}-deployer"), &deployer)?, &ns).await?;
        let promote = format!("{}{web}/promote", as_deployer.base);
        let http = &as_deployer.http;
        let no_session = http.post(&promote).header(ORIGIN, format!("http://{}", as_deployer.host)).header("x-csrf-token", &as_deployer.csrf).send().await?;
        ensure!(no_session.status() == 401, "no cookie: {}", no_session.status());
        let no_csrf = http.post(&promote).header(COOKIE, &as_deployer.cookie).header(ORIGIN, format!("http://{}", as_deployer.host)).send().await?;
        ensure!(no_csrf.status() == 403, "no CSRF token: {}", no_csrf.status());
        let other_site = http.post(&promote).header(COOKIE, &as_deployer.cookie).header(ORIGIN, "http://evil.example").header("x-csrf-token", &as_deployer.csrf).send().await?;
        ensure!(other_site.status() == 403, "another origin: {}", other_site.status());
        let rebound = http.get(format!("{}{web}", as_deployer.base)).header(COOKIE, &as_deployer.cookie).header(HOST, format!("evil.example:{}", as_deployer.host.rsplit(':').next().unwrap_or_default())).send().await?;
        ensure!(rebound.status() == 403, "another Host: {}", rebound.status());
        let (status, _) = controller_view(&api, &web, &viewer).await?;
        ensure!(status == 1, "forged requests changed nothing: step {status}");
        let (status, body) = as_deployer.json(as_deployer.request(Method::POST, &format!("{web}/promote")).json(&json!({"fromStep": 1}))).await?;
        ensure!(status == 200, "the deployer's promote: {status} {body}");
        let moved = status_until(&client, &ns, "web", "paused at step 3", |s| s.phase == Phase::Paused && s.current_step_index == Some(3)).await?;
        ensure!(moved.current_step_index == Some(3), "one step, to the next pause");
        let (status, body) = as_deployer.json(as_deployer.request(Method::POST, &format!("{web}/promote")).json(&json!({"fromStep": 1}))).await?;
        ensure!(status == 409, "the same promote again: {status} {body}");
        Ok(())
    })
    .await
}

/// The rollout's current step, as the controller's API shows it.
async fn controller_view(api: &Caller, web: &str, token: &str) -> anyhow::Result<(i64, Value)> {
    let (_, view) = api.call(Method::GET, web, Some(token), None).await?;
    Ok((view["currentStep"].as_i64().unwrap_or(-1), view))
}
