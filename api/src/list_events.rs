//! The live list: server-sent events of every rollout the caller may list, so that the
//! dashboard's table follows the cluster without polling from the page.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::still_allowed::StillAllowed;
use crate::{
    ApiError, AppState, Authorizer, ErrorBody, MAX_WAIT, RolloutControl, RolloutView, Verb,
    admitted, error_event, parse_timeout,
};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListEventsQuery {
    /// Only this namespace (default: all, which needs `list` cluster-wide).
    namespace: Option<String>,
    /// How long to stream, e.g. `30m` (default and at most 1h); then a `timeout` event ends it.
    timeout: Option<String>,
}

/// The rollout a `deleted` event is about.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub(crate) struct Deleted {
    namespace: String,
    name: String,
}

type Key = (String, String);

/// What changed between two lists: each rollout new or changed, then each one gone.
pub(crate) fn changes(
    before: &BTreeMap<Key, RolloutView>,
    now: &BTreeMap<Key, RolloutView>,
) -> Vec<Event> {
    let upserts = now
        .iter()
        .filter(|(key, view)| before.get(*key) != Some(*view))
        .map(|(_, view)| json_event("upsert", view));
    let deletions = before
        .keys()
        .filter(|key| !now.contains_key(*key))
        .map(|(namespace, name)| {
            let gone = Deleted {
                namespace: namespace.clone(),
                name: name.clone(),
            };
            json_event("deleted", &gone)
        });
    upserts.chain(deletions).collect()
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default())
}

fn keyed(views: Vec<RolloutView>) -> BTreeMap<Key, RolloutView> {
    views
        .into_iter()
        .map(|v| ((v.namespace.clone(), v.name.clone()), v))
        .collect()
}

/// Where the stream is at, between looks.
struct Listing<C, A> {
    control: Arc<C>,
    allowed: StillAllowed<A>,
    namespace: Option<String>,
    last: BTreeMap<Key, RolloutView>,
    pending: Vec<Event>,
    deadline: Instant,
    done: bool,
}

/// Server-sent events of the list: `list` (every rollout, as `GET /api/v1/rollouts` answers)
/// at once, then `upsert` with a rollout's view when it is new or changed and `deleted` with its
/// namespace and name when it is gone; `error` when the Kubernetes API cannot be read (the
/// stream goes on), and a final `timeout`, or `error` (`Unauthorized`, `Forbidden`) once the
/// caller, checked again each minute, may no longer list them.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts/events",
    params(ListEventsQuery),
    responses(
        (status = 200, description = "A text/event-stream: `list` (an array of RolloutView), then `upsert` (a RolloutView) and `deleted` ({namespace, name})", content_type = "text/event-stream", body = Vec<RolloutView>),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "The caller may not list rollouts there", body = ErrorBody),
    )
)]
pub(crate) async fn list_events<C: RolloutControl, A: Authorizer>(
    State(state): State<AppState<C, A>>,
    headers: HeaderMap,
    Query(query): Query<ListEventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let namespace = query.namespace;
    let what = format!(
        "list events {}",
        namespace.as_deref().unwrap_or("(all namespaces)")
    );
    let scope = namespace.as_deref();
    let (timeout, first) = admitted(&state, &headers, scope, Verb::List, &what, async {
        let timeout = parse_timeout(query.timeout.as_deref(), MAX_WAIT)?;
        Ok((timeout, state.control.list(scope).await?))
    })
    .await?;
    let listing = Listing {
        control: state.control.clone(),
        allowed: StillAllowed::new(state.auth.clone(), &headers, scope, Verb::List),
        namespace,
        pending: vec![json_event("list", &first)],
        last: keyed(first),
        deadline: Instant::now() + timeout,
        done: false,
    };
    let stream = futures::stream::unfold(listing, |mut l| async move {
        loop {
            if !l.pending.is_empty() {
                let event = l.pending.remove(0);
                return Some((event, l));
            }
            if l.done {
                return None;
            }
            if Instant::now() >= l.deadline {
                l.done = true;
                return Some((Event::default().event("timeout").data("{}"), l));
            }
            tokio::time::sleep(l.control.poll_interval()).await;
            if let Some(refusal) = l.allowed.refusal().await {
                l.done = true;
                return Some((refusal, l));
            }
            match l.control.list(l.namespace.as_deref()).await {
                Ok(views) => {
                    let now = keyed(views);
                    l.pending = changes(&l.last, &now);
                    l.last = now;
                }
                Err(e) => return Some((error_event(&e), l)),
            }
        }
    })
    .map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
