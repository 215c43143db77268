//! A stream's caller, checked again while it streams: an event stream lasts up to an hour, and a
//! token that expires or loses its RoleBinding meanwhile must stop seeing the rollouts, as its
//! next request would.

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;
use axum::response::sse::Event;

use crate::{ApiError, AuthError, Authorizer, ErrorBody, Verb, bearer};

pub(crate) struct StillAllowed<A> {
    auth: Arc<A>,
    token: Option<String>,
    namespace: Option<String>,
    verb: Verb,
    next: Instant,
}

impl<A: Authorizer> StillAllowed<A> {
    /// For the caller of a request just admitted.
    pub(crate) fn new(
        auth: Arc<A>,
        headers: &HeaderMap,
        namespace: Option<&str>,
        verb: Verb,
    ) -> Self {
        let next = Instant::now() + auth.recheck_interval();
        Self {
            token: bearer(headers).map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            auth,
            verb,
            next,
        }
    }

    /// `None` while the caller is allowed (or cannot be checked just now: the stream goes on
    /// until a check can be made); once not, the stream's final `error` event, saying why.
    pub(crate) async fn refusal(&mut self) -> Option<Event> {
        if Instant::now() < self.next {
            return None;
        }
        self.next = Instant::now() + self.auth.recheck_interval();
        let decision = self
            .auth
            .authorize(self.token.as_deref(), self.namespace.as_deref(), self.verb)
            .await;
        match decision {
            Ok(_) | Err(AuthError::Unavailable(_)) => None,
            Err(refused) => {
                let error = ApiError::from(refused);
                let body = ErrorBody {
                    error: error.error.into(),
                    message: error.message,
                };
                let data = serde_json::to_string(&body).unwrap_or_default();
                Some(Event::default().event("error").data(data))
            }
        }
    }
}
