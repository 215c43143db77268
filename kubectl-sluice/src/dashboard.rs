//! `kubectl sluice dashboard`: the controller's dashboard and REST routes, served on loopback
//! over the user's own kubeconfig. Every read and action goes to the apiserver with the user's
//! credentials and every permission is a SelfSubjectAccessReview, so the page never has more
//! rights than the user; `api::loopback` keeps other local pages and other sites out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::loopback::{Loopback, guard};
use api::{
    Action, AuthError, Authorizer, ControlError, RolloutControl, RolloutView, SessionMode, Verb,
};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::Client;
use kube::api::{Api, PostParams};
use rollout_controller::access::{own_verb, refused, rollout_attributes};
use rollout_controller::action::read_error;
use serde_json::json;

use crate::Cluster;

/// How often the event streams ask the apiserver again: each look is three list requests with
/// the user's credentials, so a second, not the controller's quarter.
const POLL: Duration = Duration::from_secs(1);

/// Rollouts read and steered with the user's client.
struct UserControl {
    client: Client,
}

impl RolloutControl for UserControl {
    async fn list(&self, namespace: Option<&str>) -> Result<Vec<RolloutView>, ControlError> {
        Cluster::new(self.client.clone(), namespace)
            .list()
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<RolloutView, ControlError> {
        Cluster::new(self.client.clone(), Some(namespace))
            .view(name)
            .await
            .map_err(|e| read_error(e, namespace, name))
    }

    async fn act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
    ) -> Result<RolloutView, ControlError> {
        let cluster = Cluster::new(self.client.clone(), Some(namespace));
        match cluster.decide(name, action).await {
            Ok(acted) => cluster
                .view_of(&acted.rollout)
                .await
                .map_err(|e| read_error(e, namespace, name)),
            Err(e) => Err(e.into_control_error(namespace, name)),
        }
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }
}

/// The user's own rights, asked of the apiserver as the user.
struct UserAuthorizer {
    client: Client,
    user: String,
}

impl Authorizer for UserAuthorizer {
    async fn authorize(
        &self,
        _token: Option<&str>,
        namespace: Option<&str>,
        verb: Verb,
    ) -> Result<String, AuthError> {
        // What the apiserver will check of the user's own requests.
        let verb = own_verb(verb);
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
            "resourceAttributes": rollout_attributes(namespace, verb),
        }}))
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let decided = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if decided.status.is_some_and(|s| s.allowed) {
            Ok(self.user.clone())
        } else {
            Err(refused(&self.user, namespace, verb))
        }
    }

    async fn identify(&self, _token: Option<&str>) -> Result<Option<String>, AuthError> {
        Ok(Some(self.user.clone()))
    }

    fn mode(&self) -> SessionMode {
        SessionMode::Session
    }
}

/// Who the kubeconfig's credentials are, as the apiserver sees them.
async fn whoami(client: &Client) -> String {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    match reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(review) => review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .unwrap_or_else(|| "your kubeconfig's user".into()),
        Err(_) => "your kubeconfig's user".into(),
    }
}

/// Serves until interrupted; the login link is the one line on stdout.
pub(crate) async fn serve(
    namespace: Option<&str>,
    addr: SocketAddr,
    open: bool,
) -> anyhow::Result<u8> {
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "--address {}: only a loopback address; the dashboard acts with your credentials",
            addr.ip()
        );
    }
    let client = Client::try_default()
        .await
        .context("no kubeconfig (set KUBECONFIG) and not in a cluster")?;
    let namespace = namespace.unwrap_or(client.default_namespace()).to_owned();
    let user = whoami(&client).await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let loopback = Arc::new(Loopback::new(bound, user.clone(), Some(namespace))?);
    let control = Arc::new(UserControl {
        client: client.clone(),
    });
    let auth = Arc::new(UserAuthorizer {
        client,
        user: user.clone(),
    });
    let app = guard(api::router(control, auth), loopback.clone());
    let url = loopback.login_url();
    println!("{url}");
    eprintln!(
        "Serving the Sluice dashboard on http://{bound}/dashboard/ as {}; Ctrl-C stops it.",
        user
    );
    if open {
        open_browser(&url);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the dashboard")?;
    Ok(0)
}

/// Starts the desktop's browser on the link, if there is one; the link is printed either way.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = tokio::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match started {
        Ok(mut child) => {
            tokio::spawn(async move { child.wait().await });
        }
        Err(_) => eprintln!("No browser started ({opener}): open the link above."),
    }
}
