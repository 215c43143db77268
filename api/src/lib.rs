//! Sluice's REST API for pipelines (API.md): list, get, wait for, promote, abort, retry, pause and
//! resume rollouts. No Kubernetes here: the routes talk to a [`RolloutControl`] for rollouts and an
//! [`Authorizer`] for callers, which the controller implements with kube (actions become writes of
//! `spec.paused` / `spec.decision`, never of status).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// A rollout as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    /// `metadata.generation`: grows with every spec change.
    pub generation: i64,
    /// The generation the status describes.
    pub observed_generation: i64,
    pub strategy: String,
    pub phase: String,
    pub message: String,
    pub current_step: Option<i32>,
    pub steps: Option<i32>,
    pub paused: bool,
    pub weight: Option<i32>,
    pub stable_revision: Option<String>,
    pub updated_revision: Option<String>,
    pub analysis_runs: Vec<AnalysisRunView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunView {
    pub name: String,
    pub kind: String,
    pub phase: String,
}

/// What a caller asks of a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Approve the current step (`from_step` must be it), or skip all remaining steps.
    Promote {
        full: bool,
        from_step: Option<i32>,
    },
    Abort,
    Retry,
    Pause,
    Resume,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Promote { .. } => "promote",
            Action::Abort => "abort",
            Action::Retry => "retry",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }
}

/// Why a rollout could not be read or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("rollout {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    /// The action does not apply now; the message says why.
    #[error("{0}")]
    Conflict(String),
    #[error("Kubernetes API unavailable: {0}")]
    Unavailable(String),
}

/// Reading and steering rollouts.
pub trait RolloutControl: Send + Sync + 'static {
    fn list(
        &self,
        namespace: Option<&str>,
    ) -> impl Future<Output = Result<Vec<RolloutView>, ControlError>> + Send;
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<RolloutView, ControlError>> + Send;
    fn act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
    ) -> impl Future<Output = Result<RolloutView, ControlError>> + Send;
}

/// What a caller wants to do, for authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Update,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Update => "update",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("checking the caller: {0}")]
    Unavailable(String),
}

/// Who may do what: a bearer token checked for `verb` on rollouts in `namespace` (all
/// namespaces when `None`). Returns the caller's name for the log.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(
        &self,
        token: Option<&str>,
        namespace: Option<&str>,
        verb: Verb,
    ) -> impl Future<Output = Result<String, AuthError>> + Send;
}

/// For local use only: everyone may do everything, and every request says so in the log.
pub struct NoAuth;

impl Authorizer for NoAuth {
    async fn authorize(
        &self,
        _: Option<&str>,
        _: Option<&str>,
        _: Verb,
    ) -> Result<String, AuthError> {
        warn!("--api-auth=none: request not authenticated");
        Ok("anonymous (--api-auth=none)".into())
    }
}

/// The body of every error.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "NotFound", e.to_string())
            }
            ControlError::Conflict(_) => Self::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            ControlError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(_) => {
                Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string())
            }
            AuthError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string()),
            AuthError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                e.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error.into(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Longest `wait` a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
const DEFAULT_WAIT: Duration = Duration::from_secs(600);
const WAIT_POLL: Duration = Duration::from_millis(250);
/// Request bodies are small JSON objects.
const BODY_LIMIT: usize = 16 * 1024;

struct Shared<C, A> {
    control: Arc<C>,
    auth: Arc<A>,
    requests: AtomicU64,
}

type AppState<C, A> = Arc<Shared<C, A>>;

/// The API's routes, served by the controller.
pub fn router<C: RolloutControl, A: Authorizer>(control: Arc<C>, auth: Arc<A>) -> Router {
    let state: AppState<C, A> = Arc::new(Shared {
        control,
        auth,
        requests: AtomicU64::new(0),
    });
    Router::new()
        .route("/api/v1/rollouts", get(list::<C, A>))
        .route(
            "/api/v1/namespaces/{ns}/rollouts/{name}",
            get(get_one::<C, A>),
        )
        .route(
            "/api/v1/namespaces/{ns}/rollouts/{name}/wait",
            get(wait::<C, A>),
        )
        .route(
            "/api/v1/namespaces/{ns}/rollouts/{name}/promote",
            post(promote::<C, A>),
        )
        .route(
            "/api/v1/namespaces/{ns}/rollouts/{name}/abort",
            post(abort::<C, A>),
        )
        .route(
            "/api/v1/namespaces/{ns}/rollouts/{name}/retry",
            post(retry::<C, A>),
        )
        .route(
            "/api/v1/namespaces/{ns}/rollouts/{name}/pause",
            post(pause::<C, A>),
        )
        .route(
            "/api/v1/namespaces/{ns}/rollouts/{name}/resume",
            post(resume::<C, A>),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Authorizes and logs one request with an id, the caller and the outcome.
async fn handle<C, A, T, F>(
    state: &AppState<C, A>,
    headers: &HeaderMap,
    namespace: Option<&str>,
    verb: Verb,
    what: &str,
    run: F,
) -> Result<axum::Json<T>, ApiError>
where
    C: RolloutControl,
    A: Authorizer,
    F: Future<Output = Result<T, ApiError>>,
{
    let id = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let started = Instant::now();
    let caller = match state.auth.authorize(bearer(headers), namespace, verb).await {
        Ok(caller) => caller,
        Err(e) => {
            let error = ApiError::from(e);
            info!(
                request = id,
                what,
                status = error.status.as_u16(),
                "{}",
                error.message
            );
            return Err(error);
        }
    };
    let outcome = run.await;
    let status = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    };
    info!(
        request = id,
        caller = %caller,
        what,
        status = status.as_u16(),
        millis = started.elapsed().as_millis() as u64,
        "API request"
    );
    outcome.map(axum::Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    namespace: Option<String>,
}

async fn list<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Vec<RolloutView>>, ApiError> {
    let namespace = query.namespace.as_deref();
    let control = state.control.clone();
    handle(
        &state,
        &headers,
        namespace,
        Verb::List,
        "list",
        async move { Ok(control.list(namespace).await?) },
    )
    .await
}

async fn get_one<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let control = state.control.clone();
    let what = format!("get {ns}/{name}");
    handle(&state, &headers, Some(&ns), Verb::Get, &what, async {
        Ok(control.get(&ns, &name).await?)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    phase: Option<String>,
    timeout: Option<String>,
}

const PHASES: [&str; 5] = ["Progressing", "Paused", "Healthy", "Degraded", "Aborted"];

/// Long-polls until the rollout reaches `phase` for the generation current when the call came
/// in (a wait right after an apply never returns the old revision's Healthy): 200 then, 409 if it
/// aborted instead, 504 at the timeout.
async fn wait<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<WaitQuery>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let control = state.control.clone();
    let what = format!("wait {ns}/{name}");
    handle(&state, &headers, Some(&ns), Verb::Get, &what, async {
        let phase = query.phase.unwrap_or_else(|| "Healthy".into());
        if !PHASES.contains(&phase.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("phase: {phase:?} is not one of {PHASES:?}"),
            ));
        }
        let timeout = match &query.timeout {
            Some(t) => humantime::parse_duration(t).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("timeout: {t:?}: {e}"),
                )
            })?,
            None => DEFAULT_WAIT,
        };
        if timeout > MAX_WAIT {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("timeout: at most {}", humantime::format_duration(MAX_WAIT)),
            ));
        }
        let deadline = Instant::now() + timeout;
        let generation = control.get(&ns, &name).await?.generation;
        loop {
            let view = control.get(&ns, &name).await?;
            if view.observed_generation >= generation {
                if view.phase == phase {
                    return Ok(view);
                }
                if view.phase == "Aborted" {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "Aborted",
                        format!("rollout {ns}/{name} aborted: {}", view.message),
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!(
                        "rollout {ns}/{name} did not reach {phase} in {}; it is {}: {}",
                        humantime::format_duration(timeout),
                        view.phase,
                        view.message
                    ),
                ));
            }
            tokio::time::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PromoteBody {
    #[serde(default)]
    full: bool,
    from_step: Option<i32>,
}

async fn act<C: RolloutControl, A: Authorizer>(
    state: AppState<C, A>,
    headers: HeaderMap,
    ns: String,
    name: String,
    action: Action,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let control = state.control.clone();
    let what = format!("{} {ns}/{name}", action.name());
    handle(&state, &headers, Some(&ns), Verb::Update, &what, async {
        Ok(control.act(&ns, &name, action).await?)
    })
    .await
}

async fn promote<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let body: PromoteBody = if body.iter().all(u8::is_ascii_whitespace) {
        PromoteBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("request body: {e}"),
            )
        })?
    };
    let action = Action::Promote {
        full: body.full,
        from_step: body.from_step,
    };
    act(state, headers, ns, name, action).await
}

macro_rules! simple_action {
    ($handler:ident, $action:expr) => {
        async fn $handler<C: RolloutControl, A: Authorizer>(
            State(state): State<AppState<C, A>>,
            headers: HeaderMap,
            Path((ns, name)): Path<(String, String)>,
        ) -> Result<axum::Json<RolloutView>, ApiError> {
            act(state, headers, ns, name, $action).await
        }
    };
}

simple_action!(abort, Action::Abort);
simple_action!(retry, Action::Retry);
simple_action!(pause, Action::Pause);
simple_action!(resume, Action::Resume);

#[cfg(test)]
mod tests;
