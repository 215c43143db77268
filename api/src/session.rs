//! What the dashboard asks before it shows anything: how this server authenticates its users and
//! who the caller is, and whether the caller may act on a rollout (to show no button that would
//! answer 403).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    ApiError, AppState, AuthError, Authorizer, ErrorBody, RolloutControl, Verb, admitted, bearer,
};

/// How a dashboard user proves who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum SessionMode {
    /// A bearer token on every request (the controller): the page asks for one.
    Token,
    /// A cookie from a one-time login link, and a CSRF token on every POST (`kubectl sluice
    /// dashboard`, [`crate::loopback`]).
    Session,
    /// Nobody is checked (`--api-auth=none`).
    None,
}

/// The caller as the dashboard sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub mode: SessionMode,
    /// Who the caller is; `None`: not signed in (no token, or no session).
    pub user: Option<String>,
    /// Sent back as `X-CSRF-Token` on every POST (session mode only).
    pub csrf_token: Option<String>,
    /// The namespace to show first (the kubeconfig context's, in session mode).
    pub namespace: Option<String>,
}

/// What the caller may do with a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// `update` on rollouts.sluice.dev in the namespace: every action.
    pub update: bool,
}

/// Who the caller is and how this server authenticates: without a token, 200 with no `user`
/// (the dashboard then asks for one); with a bad one, 401.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    responses(
        (status = 200, description = "The mode, and the caller if signed in", body = SessionView),
        (status = 401, description = "A token that is not valid", body = ErrorBody),
    )
)]
pub(crate) async fn session<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
) -> Result<axum::Json<SessionView>, ApiError> {
    let user = state.auth.identify(bearer(&headers)).await?;
    Ok(axum::Json(SessionView {
        mode: state.auth.mode(),
        user,
        csrf_token: None,
        namespace: None,
    }))
}

/// Whether the caller may act on the rollout (`update`, checked as the actions check it); the
/// caller must be allowed to `get` it to ask.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/rollouts/{name}/permissions",
    params(("ns" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "What the caller may do", body = Permissions),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "The caller may not get rollouts there", body = ErrorBody),
    )
)]
pub(crate) async fn permissions<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<axum::Json<Permissions>, ApiError> {
    let what = format!("permissions {ns}/{name}");
    let auth = state.auth.clone();
    let token = bearer(&headers);
    admitted(&state, &headers, Some(&ns), Verb::Get, &what, async {
        match auth.authorize(token, Some(&ns), Verb::Update).await {
            Ok(_) => Ok(Permissions { update: true }),
            Err(AuthError::Forbidden(_)) => Ok(Permissions { update: false }),
            Err(e) => Err(ApiError::from(e)),
        }
    })
    .await
    .map(axum::Json)
}

/// 401 for a caller who is not signed in, as every API route answers it.
pub(crate) fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
}
