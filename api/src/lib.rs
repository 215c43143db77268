//! Sluice's REST API for pipelines (docs/API.md): list, get, wait for, watch, promote, abort, retry,
//! pause, resume and undo rollouts, and its OpenAPI document. No Kubernetes here: the routes talk
//! to a [`RolloutControl`] for rollouts and an [`Authorizer`] for callers, which the controller
//! implements with kube (actions become writes of `spec.paused` / `spec.decision` /
//! `spec.template`, never of status).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::{IntoParams, OpenApi, ToSchema};

mod dashboard;
mod list_events;
pub mod loopback;
mod session;
mod still_allowed;
mod views;
pub use dashboard::CONTENT_SECURITY_POLICY;
pub use session::{Permissions, SessionMode, SessionView};
pub use views::{
    ActionsView, AnalysisRunView, Applies, LookView, MeasurementView, MetricView, RevisionView,
    RolloutView, StepView,
};

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
    /// Go back to an older revision (its `sluice.dev/revision` number); `None`: the one before
    /// the current.
    Undo {
        to_revision: Option<i64>,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Promote { .. } => "promote",
            Action::Abort => "abort",
            Action::Retry => "retry",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Undo { .. } => "undo",
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
    /// How often `wait` and the event streams look again. The controller reads an in-memory
    /// store; a control that asks the apiserver each time looks less often.
    fn poll_interval(&self) -> Duration {
        WAIT_POLL
    }
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
    /// Who `token` belongs to (`None` without one), for the dashboard's session.
    fn identify(
        &self,
        token: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, AuthError>> + Send;
    /// How a dashboard user proves who they are to this server.
    fn mode(&self) -> SessionMode;
    /// How often a long event stream checks its caller again.
    fn recheck_interval(&self) -> Duration {
        RECHECK
    }
}

/// A minute: a revoked caller stops seeing rollouts within one, and a stream costs one review a
/// minute.
const RECHECK: Duration = Duration::from_secs(60);

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
        Ok(NO_AUTH_CALLER.into())
    }

    async fn identify(&self, _: Option<&str>) -> Result<Option<String>, AuthError> {
        Ok(Some(NO_AUTH_CALLER.into()))
    }

    fn mode(&self) -> SessionMode {
        SessionMode::None
    }
}

const NO_AUTH_CALLER: &str = "anonymous (--api-auth=none)";

/// The body of every error.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
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

/// Longest `wait` or `events` stream a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
const DEFAULT_WAIT: Duration = Duration::from_secs(600);
/// How often `wait` and `events` look at the rollout by default. The controller's store is in
/// memory, so a look is cheap; a quarter second is well below any step's length.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// Request bodies are small JSON objects; a larger one is a 413 ([`read_body`]).
const BODY_LIMIT: usize = 16 * 1024;

pub(crate) struct Shared<C, A> {
    pub(crate) control: Arc<C>,
    pub(crate) auth: Arc<A>,
    requests: AtomicU64,
}

pub(crate) type AppState<C, A> = Arc<Shared<C, A>>;

/// The OpenAPI document: every route, its parameters, bodies and answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "Progressive delivery for Kubernetes: read and steer rollouts from a pipeline. \
            Callers send `Authorization: Bearer <Kubernetes token>`; reads need get/list and \
            actions update on rollouts.sluice.dev in the rollout's namespace."
    ),
    paths(
        list,
        list_events::list_events,
        session::session,
        get_one,
        session::permissions,
        wait,
        events,
        promote,
        abort,
        retry,
        pause,
        resume,
        undo,
        openapi_json
    ),
    components(schemas(ErrorBody, PromoteBody, UndoBody, list_events::Deleted))
)]
pub struct ApiDoc;

/// The API's routes and the dashboard, served by the controller and by `kubectl sluice
/// dashboard`. Each path comes from its handler's OpenAPI annotation, so the document and the
/// router cannot name different paths.
pub fn router<C: RolloutControl, A: Authorizer>(control: Arc<C>, auth: Arc<A>) -> Router {
    router_with(control, auth, dashboard::EMBEDDED)
}

fn router_with<C: RolloutControl, A: Authorizer>(
    control: Arc<C>,
    auth: Arc<A>,
    assets: &'static [dashboard::Asset],
) -> Router {
    use utoipa::Path as _;
    let state: AppState<C, A> = Arc::new(Shared {
        control,
        auth,
        requests: AtomicU64::new(0),
    });
    Router::new()
        .route(&__path_list::path(), get(list::<C, A>))
        .route(
            &list_events::__path_list_events::path(),
            get(list_events::list_events::<C, A>),
        )
        .route(
            &session::__path_session::path(),
            get(session::session::<C, A>),
        )
        .route(&__path_get_one::path(), get(get_one::<C, A>))
        .route(
            &session::__path_permissions::path(),
            get(session::permissions::<C, A>),
        )
        .route(&__path_wait::path(), get(wait::<C, A>))
        .route(&__path_events::path(), get(events::<C, A>))
        .route(&__path_promote::path(), post(promote::<C, A>))
        .route(&__path_abort::path(), post(abort::<C, A>))
        .route(&__path_retry::path(), post(retry::<C, A>))
        .route(&__path_pause::path(), post(pause::<C, A>))
        .route(&__path_resume::path(), post(resume::<C, A>))
        .route(&__path_undo::path(), post(undo::<C, A>))
        .route(&__path_openapi_json::path(), get(openapi_json))
        .with_state(state)
        .merge(dashboard::routes(assets))
        .layer(axum::middleware::map_response(|r: Response| async move {
            dashboard::secure(r)
        }))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// One admitted request, logged when it ends.
struct Admitted {
    id: u64,
    caller: String,
    started: Instant,
}

impl Admitted {
    fn log(&self, what: &str, status: StatusCode) {
        info!(
            request = self.id,
            caller = %self.caller,
            what,
            status = status.as_u16(),
            millis = self.started.elapsed().as_millis() as u64,
            "API request"
        );
    }
}

/// Gives the request an id and checks its caller; a refusal is logged here.
async fn admit<C: RolloutControl, A: Authorizer>(
    state: &AppState<C, A>,
    headers: &HeaderMap,
    namespace: Option<&str>,
    verb: Verb,
    what: &str,
) -> Result<Admitted, ApiError> {
    let id = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let started = Instant::now();
    match state.auth.authorize(bearer(headers), namespace, verb).await {
        Ok(caller) => Ok(Admitted {
            id,
            caller,
            started,
        }),
        Err(e) => {
            let error = ApiError::from(e);
            info!(
                request = id,
                what,
                status = error.status.as_u16(),
                "{}",
                error.message
            );
            Err(error)
        }
    }
}

/// Authorizes, runs and logs one request with an id, the caller and the outcome.
pub(crate) async fn admitted<C, A, T, F>(
    state: &AppState<C, A>,
    headers: &HeaderMap,
    namespace: Option<&str>,
    verb: Verb,
    what: &str,
    run: F,
) -> Result<T, ApiError>
where
    C: RolloutControl,
    A: Authorizer,
    F: Future<Output = Result<T, ApiError>>,
{
    let admitted = admit(state, headers, namespace, verb, what).await?;
    let outcome = run.await;
    admitted.log(
        what,
        match &outcome {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status,
        },
    );
    outcome
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// A humantime `timeout` parameter, at most [`MAX_WAIT`].
pub(crate) fn parse_timeout(
    timeout: Option<&str>,
    default: Duration,
) -> Result<Duration, ApiError> {
    let timeout = match timeout {
        Some(t) => {
            humantime::parse_duration(t).map_err(|e| bad_request(format!("timeout: {t:?}: {e}")))?
        }
        None => default,
    };
    if timeout > MAX_WAIT {
        return Err(bad_request(format!(
            "timeout: at most {}",
            humantime::format_duration(MAX_WAIT)
        )));
    }
    Ok(timeout)
}

/// The request body, up to [`BODY_LIMIT`]. Read only inside [`handle`], after the caller was
/// admitted: who may not act hears 401 or 403, never what is wrong with a body.
async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        let too_large = e
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("request body: larger than {BODY_LIMIT} bytes"),
            )
        } else {
            bad_request("request body: could not be read".into())
        }
    })
}

/// A JSON body, or the default for an empty one; unknown fields are refused.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("request body: {e}")))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this namespace (default: all the caller may list).
    namespace: Option<String>,
}

/// List rollouts, with phase, step and weight.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts",
    params(ListQuery),
    responses(
        (status = 200, description = "The rollouts, by namespace and name", body = Vec<RolloutView>),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "The caller may not list rollouts there", body = ErrorBody),
    )
)]
async fn list<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Vec<RolloutView>>, ApiError> {
    let namespace = query.namespace.as_deref();
    let control = state.control.clone();
    admitted(
        &state,
        &headers,
        namespace,
        Verb::List,
        "list",
        async move { Ok(control.list(namespace).await?) },
    )
    .await
    .map(axum::Json)
}

/// One rollout: phase, steps, weights, revisions and its analysis verdicts with their evidence.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/rollouts/{name}",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Rollout")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "The caller may not get rollouts there", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
    )
)]
async fn get_one<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let control = state.control.clone();
    let what = format!("get {ns}/{name}");
    admitted(&state, &headers, Some(&ns), Verb::Get, &what, async {
        Ok(control.get(&ns, &name).await?)
    })
    .await
    .map(axum::Json)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// The phase to wait for (default `Healthy`).
    phase: Option<String>,
    /// How long to wait, e.g. `10m` (default 10m, at most 1h).
    timeout: Option<String>,
}

const PHASES: [&str; 5] = ["Progressing", "Paused", "Healthy", "Degraded", "Aborted"];

/// Long-polls until the rollout reaches `phase` for the generation current when the call came
/// in (a wait right after an apply never returns the old revision's Healthy).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/rollouts/{name}/wait",
    params(("ns" = String, Path), ("name" = String, Path), WaitQuery),
    responses(
        (status = 200, description = "The phase was reached", body = RolloutView),
        (status = 400, description = "Unknown phase or bad timeout", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "The rollout aborted instead", body = ErrorBody),
        (status = 504, description = "The timeout passed first", body = ErrorBody),
    )
)]
async fn wait<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<WaitQuery>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let control = state.control.clone();
    let what = format!("wait {ns}/{name}");
    admitted(&state, &headers, Some(&ns), Verb::Get, &what, async {
        let phase = query.phase.unwrap_or_else(|| "Healthy".into());
        if !PHASES.contains(&phase.as_str()) {
            return Err(bad_request(format!(
                "phase: {phase:?} is not one of {PHASES:?}"
            )));
        }
        let timeout = parse_timeout(query.timeout.as_deref(), DEFAULT_WAIT)?;
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
            let poll = control.poll_interval();
            tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    })
    .await
    .map(axum::Json)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// How long to stream, e.g. `30m` (default and at most 1h); then a `timeout` event ends it.
    timeout: Option<String>,
}

/// What the `events` stream is at, between looks.
struct Watching<C, A> {
    control: Arc<C>,
    allowed: still_allowed::StillAllowed<A>,
    namespace: String,
    name: String,
    last: Option<RolloutView>,
    deadline: Instant,
    done: bool,
}

/// Server-sent events: a `status` event with the rollout's view at once and on every change,
/// `error` when the Kubernetes API cannot be read (the stream goes on), and a final `deleted`,
/// `timeout`, or `error` (`Unauthorized`, `Forbidden`) once the caller, checked again each minute,
/// may no longer read it.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/rollouts/{name}/events",
    params(("ns" = String, Path), ("name" = String, Path), EventsQuery),
    responses(
        (status = 200, description = "A text/event-stream of `status` events, each a RolloutView as JSON", content_type = "text/event-stream", body = RolloutView),
        (status = 404, description = "No such rollout", body = ErrorBody),
    )
)]
async fn events<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let what = format!("events {ns}/{name}");
    let (timeout, first) = admitted(&state, &headers, Some(&ns), Verb::Get, &what, async {
        let timeout = parse_timeout(query.timeout.as_deref(), MAX_WAIT)?;
        // Refuse a stream about a rollout that does not exist, with a status code, not an event.
        let first = state.control.get(&ns, &name).await?;
        Ok((timeout, first))
    })
    .await?;
    let watching = Watching {
        control: state.control.clone(),
        allowed: still_allowed::StillAllowed::new(
            state.auth.clone(),
            &headers,
            Some(&ns),
            Verb::Get,
        ),
        namespace: ns,
        name,
        last: None,
        deadline: Instant::now() + timeout,
        done: false,
    };
    let stream = futures::stream::unfold((watching, Some(first)), |(mut w, pending)| async move {
        if let Some(view) = pending {
            let event = status_event(&view);
            w.last = Some(view);
            return Some((event, (w, None)));
        }
        if w.done {
            return None;
        }
        loop {
            if Instant::now() >= w.deadline {
                w.done = true;
                return Some((Event::default().event("timeout").data("{}"), (w, None)));
            }
            tokio::time::sleep(w.control.poll_interval()).await;
            if let Some(refusal) = w.allowed.refusal().await {
                w.done = true;
                return Some((refusal, (w, None)));
            }
            match w.control.get(&w.namespace, &w.name).await {
                Ok(view) if w.last.as_ref() == Some(&view) => continue,
                Ok(view) => {
                    let event = status_event(&view);
                    w.last = Some(view);
                    return Some((event, (w, None)));
                }
                Err(ControlError::NotFound { .. }) => {
                    w.done = true;
                    return Some((Event::default().event("deleted").data("{}"), (w, None)));
                }
                Err(e) => return Some((error_event(&e), (w, None))),
            }
        }
    })
    .map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The Kubernetes API could not be read; the stream goes on.
pub(crate) fn error_event(e: &ControlError) -> Event {
    let body = ErrorBody {
        error: "Unavailable".into(),
        message: e.to_string(),
    };
    let data = serde_json::to_string(&body).unwrap_or_default();
    Event::default().event("error").data(data)
}

fn status_event(view: &RolloutView) -> Event {
    Event::default()
        .event("status")
        .data(serde_json::to_string(view).unwrap_or_default())
}

/// The body of `promote`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PromoteBody {
    /// Skip all remaining steps and analyses.
    #[serde(default)]
    full: bool,
    /// The step the caller means to promote: a 409 unless it is the current one, so that of many
    /// pipelines promoting one step, one succeeds.
    from_step: Option<i32>,
}

/// The body of `undo`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UndoBody {
    /// The `sluice.dev/revision` to go back to (default: the one before the current).
    to_revision: Option<i64>,
}

async fn act<C: RolloutControl, A: Authorizer>(
    state: AppState<C, A>,
    headers: HeaderMap,
    ns: String,
    name: String,
    action: Action,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let what = action.name();
    act_on_body(state, headers, ns, name, what, Body::empty(), |_| {
        Ok(action)
    })
    .await
}

/// An action made of the request's body by `parse`, which sees the body only once the caller
/// is admitted.
async fn act_on_body<C: RolloutControl, A: Authorizer>(
    state: AppState<C, A>,
    headers: HeaderMap,
    ns: String,
    name: String,
    what: &str,
    body: Body,
    parse: impl FnOnce(&[u8]) -> Result<Action, ApiError>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let control = state.control.clone();
    let what = format!("{what} {ns}/{name}");
    admitted(&state, &headers, Some(&ns), Verb::Update, &what, async {
        let action = parse(&read_body(body).await?)?;
        Ok(control.act(&ns, &name, action).await?)
    })
    .await
    .map(axum::Json)
}

/// Approve the paused step (`fromStep` must be it), or with `full` skip all remaining steps.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/rollouts/{name}/promote",
    params(("ns" = String, Path), ("name" = String, Path)),
    request_body(content = Option<PromoteBody>, description = "Empty: promote the current step"),
    responses(
        (status = 200, description = "Promoted", body = RolloutView),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "The caller may not update rollouts there", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "Not paused, aborted, already promoted, or fromStep is not the current step", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
    )
)]
async fn promote<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<axum::Json<RolloutView>, ApiError> {
    act_on_body(state, headers, ns, name, "promote", body, |bytes| {
        let body: PromoteBody = parse_body(bytes)?;
        Ok(Action::Promote {
            full: body.full,
            from_step: body.from_step,
        })
    })
    .await
}

/// Go back to an older revision: its pod template becomes the rollout's, and rolls out as any
/// new template does.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/rollouts/{name}/undo",
    params(("ns" = String, Path), ("name" = String, Path)),
    request_body(content = Option<UndoBody>, description = "Empty: the revision before the current"),
    responses(
        (status = 200, description = "The older template is the rollout's again", body = RolloutView),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "The caller may not update rollouts there", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "No such revision in history, or it is the current one", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
    )
)]
async fn undo<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<axum::Json<RolloutView>, ApiError> {
    act_on_body(state, headers, ns, name, "undo", body, |bytes| {
        let body: UndoBody = parse_body(bytes)?;
        Ok(Action::Undo {
            to_revision: body.to_revision,
        })
    })
    .await
}

macro_rules! simple_action {
    ($handler:ident, $action:expr, $path:literal, $summary:literal, $conflict:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            post,
            path = $path,
            params(("ns" = String, Path), ("name" = String, Path)),
            responses(
                (status = 200, description = "Done", body = RolloutView),
                (status = 401, description = "No or bad token", body = ErrorBody),
                (status = 403, description = "The caller may not update rollouts there", body = ErrorBody),
                (status = 404, description = "No such rollout", body = ErrorBody),
                (status = 409, description = $conflict, body = ErrorBody),
            )
        )]
        async fn $handler<C: RolloutControl, A: Authorizer>(
            State(state): State<AppState<C, A>>,
            headers: HeaderMap,
            Path((ns, name)): Path<(String, String)>,
        ) -> Result<axum::Json<RolloutView>, ApiError> {
            act(state, headers, ns, name, $action).await
        }
    };
}

simple_action!(
    abort,
    Action::Abort,
    "/api/v1/namespaces/{ns}/rollouts/{name}/abort",
    "Abort the revision rolling out: all traffic back to stable.",
    "Nothing is rolling out, or it is aborted already"
);
simple_action!(
    retry,
    Action::Retry,
    "/api/v1/namespaces/{ns}/rollouts/{name}/retry",
    "Start an aborted revision again from its first step.",
    "The rollout is not aborted"
);
simple_action!(
    pause,
    Action::Pause,
    "/api/v1/namespaces/{ns}/rollouts/{name}/pause",
    "Hold the rollout where it is (`spec.paused`).",
    "The rollout changed while the request was decided; ask again"
);
simple_action!(
    resume,
    Action::Resume,
    "/api/v1/namespaces/{ns}/rollouts/{name}/resume",
    "Let a paused rollout go on.",
    "The rollout changed while the request was decided; ask again"
);

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            format!("writing the OpenAPI document: {e}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests;
