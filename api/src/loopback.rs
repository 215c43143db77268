//! The guard in front of `kubectl sluice dashboard`'s server. That server acts with the user's
//! own kubeconfig credentials, so reaching it is as good as holding them: it listens on loopback
//! only; it answers only requests addressed to it by its loopback name (a page of another site
//! whose name resolves to 127.0.0.1, DNS rebinding, sends its own name as `Host`); a browser
//! gets in only with the one-time code of the login link the command printed, exchanged for an
//! HttpOnly, SameSite=Strict session cookie; and every request that changes anything must come
//! from the dashboard's own origin and carry the session's CSRF token, which a page of another
//! origin cannot read.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::session::unauthorized;
use crate::{ApiError, SessionMode, SessionView};

/// The header the dashboard sends the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("{0} is not a loopback address: the dashboard acts with your credentials")]
    NotLoopback(SocketAddr),
}

/// Browser sessions of one local dashboard server.
pub struct Loopback {
    addr: SocketAddr,
    user: String,
    namespace: Option<String>,
    /// Login codes not used yet.
    codes: Mutex<HashSet<String>>,
    /// Session id (the cookie) → its CSRF token.
    sessions: Mutex<HashMap<String, String>>,
}

/// 32 random bytes from the thread's CSPRNG, as hex.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
}

#[derive(Deserialize)]
struct LoginQuery {
    code: String,
}

impl Loopback {
    /// For a server bound to `addr`, acting as `user`, showing `namespace` first.
    pub fn new(
        addr: SocketAddr,
        user: String,
        namespace: Option<String>,
    ) -> Result<Self, LoopbackError> {
        if !addr.ip().is_loopback() {
            return Err(LoopbackError::NotLoopback(addr));
        }
        Ok(Self {
            addr,
            user,
            namespace,
            codes: Mutex::new(HashSet::new()),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// A login link with a new one-time code.
    pub fn login_url(&self) -> String {
        let code = secret();
        let url = format!("http://{}/dashboard/login?code={code}", self.addr);
        self.codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(code);
        url
    }

    /// Cookies are not kept apart by port: two dashboards on one machine need two names.
    fn cookie_name(&self) -> String {
        format!("sluice_session_{}", self.addr.port())
    }

    /// The names this server answers to: its address, and `localhost` with its port (a name
    /// no other site can send for itself).
    fn host_allowed(&self, host: &str) -> bool {
        host == self.addr.to_string() || host == format!("localhost:{}", self.addr.port())
    }

    /// The CSRF token of the session the request's cookie names, if any.
    fn session_of(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(key, _)| *key == name)
            .find_map(|(_, id)| sessions.get(id).cloned())
    }

    /// Exchanges a one-time code for a session cookie, and sends the browser on to the page
    /// (which takes the code out of the address bar and its history).
    fn login(&self, request: &Request) -> Response {
        let code = Query::<LoginQuery>::try_from_uri(request.uri()).map(|q| q.0.code);
        let valid = code.is_ok_and(|code| {
            self.codes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&code)
        });
        if !valid {
            return (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "This login link is not valid or was used already: run `kubectl sluice dashboard` again.\n",
            )
                .into_response();
        }
        let id = secret();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), secret());
        let cookie = format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name()
        );
        let mut response =
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard/")]).into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }

    fn session_view(&self, csrf_token: Option<String>) -> SessionView {
        SessionView {
            mode: SessionMode::Session,
            user: csrf_token.as_ref().map(|_| self.user.clone()),
            csrf_token,
            namespace: self.namespace.clone(),
        }
    }
}

/// `inner` (the API and the dashboard), behind the checks of [`Loopback`].
pub fn guard(inner: Router, loopback: Arc<Loopback>) -> Router {
    inner
        .layer(axum::middleware::from_fn_with_state(loopback, check))
        // The guard's own answers (the login, its refusals) carry the page's headers too.
        .layer(axum::middleware::map_response(|r: Response| async move {
            crate::dashboard::secure(r)
        }))
}

fn host_of(request: &Request) -> Option<String> {
    match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok().map(str::to_owned),
        // HTTP/2 names the host in the URI instead.
        None => request.uri().authority().map(|a| a.to_string()),
    }
}

async fn check(State(loopback): State<Arc<Loopback>>, request: Request, next: Next) -> Response {
    let Some(host) = host_of(&request).filter(|h| loopback.host_allowed(h)) else {
        return forbidden("this server answers only to its loopback address").into_response();
    };
    let path = request.uri().path();
    if path == "/dashboard/login" {
        return loopback.login(&request);
    }
    if !path.starts_with("/api/") {
        // The page's own files and the OpenAPI document: nothing of the cluster.
        return next.run(request).await;
    }
    let session = loopback.session_of(request.headers());
    if path == "/api/v1/session" {
        return axum::Json(loopback.session_view(session)).into_response();
    }
    let Some(csrf_token) = session else {
        return unauthorized("no session: open the link `kubectl sluice dashboard` printed")
            .into_response();
    };
    let reads = [Method::GET, Method::HEAD];
    if !reads.contains(request.method()) {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if origin != Some(format!("http://{host}").as_str()) {
            return forbidden("a change must come from the dashboard's own page (Origin)")
                .into_response();
        }
        let sent = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|t| t.to_str().ok());
        if !sent.is_some_and(|sent| same_secret(sent, &csrf_token)) {
            return forbidden(format!("missing or wrong {CSRF_HEADER}")).into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, post};

    use super::*;
    use crate::tests::respond as send;

    const ADDR: &str = "127.0.0.1:3100";

    fn app() -> (Router, Arc<Loopback>) {
        let loopback = Arc::new(
            Loopback::new(ADDR.parse().unwrap(), "alice".into(), Some("shop".into())).unwrap(),
        );
        let inner = Router::new()
            .route("/dashboard/", get(|| async { "page" }))
            .route("/api/v1/rollouts", get(|| async { "listed" }))
            .route("/api/v1/act", post(|| async { "acted" }));
        (guard(inner, loopback.clone()), loopback)
    }

    fn get_on(host: &str, uri: &str) -> axum::http::request::Builder {
        Request::get(uri).header("host", host)
    }

    /// Logs in with a fresh code: the cookie pair and the session's CSRF token.
    async fn logged_in(app: &Router, loopback: &Loopback) -> (String, String) {
        let url = loopback.login_url();
        let path = url.strip_prefix(&format!("http://{ADDR}")).unwrap();
        let (status, headers, _) = send(app, get_on(ADDR, path)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], "/dashboard/");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(
            headers["content-security-policy"],
            crate::CONTENT_SECURITY_POLICY
        );
        let set = headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_owned();
        let (_, _, body) = send(
            app,
            get_on(ADDR, "/api/v1/session").header("cookie", &cookie),
        )
        .await;
        let session: SessionView = serde_json::from_str(&body).unwrap();
        assert_eq!(session.user.as_deref(), Some("alice"));
        (cookie, session.csrf_token.unwrap())
    }

    #[test]
    fn only_a_loopback_address_is_served() {
        let error = Loopback::new("0.0.0.0:3100".parse().unwrap(), "a".into(), None);
        assert!(matches!(error, Err(LoopbackError::NotLoopback(_))));
        assert!(Loopback::new("[::1]:3100".parse().unwrap(), "a".into(), None).is_ok());
    }

    #[tokio::test]
    async fn a_request_for_another_host_name_is_refused() {
        let (app, loopback) = app();
        let (cookie, _) = logged_in(&app, &loopback).await;
        for host in [
            "evil.example:3100",
            "127.0.0.1:3101",
            "127.0.0.1",
            "localhost",
        ] {
            let request = get_on(host, "/api/v1/rollouts").header("cookie", &cookie);
            let (status, _, _) = send(&app, request).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
            let (status, headers, _) = send(&app, get_on(host, "/dashboard/")).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
            assert_eq!(headers["x-content-type-options"], "nosniff");
        }
        let (status, _, _) = send(&app, Request::get("/dashboard/")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no Host at all");
        for host in [ADDR, "localhost:3100"] {
            let request = get_on(host, "/api/v1/rollouts").header("cookie", &cookie);
            assert_eq!(send(&app, request).await.0, StatusCode::OK, "{host}");
        }
    }

    #[tokio::test]
    async fn the_login_code_works_once_and_the_api_needs_its_session() {
        let (app, loopback) = app();
        let (status, _, body) = send(&app, get_on(ADDR, "/api/v1/rollouts")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Unauthorized"), "{body}");
        let (_, _, body) = send(&app, get_on(ADDR, "/api/v1/session")).await;
        let anonymous: SessionView = serde_json::from_str(&body).unwrap();
        assert_eq!(
            anonymous,
            SessionView {
                mode: SessionMode::Session,
                user: None,
                csrf_token: None,
                namespace: Some("shop".into()),
            }
        );
        // The page itself is open: it holds nothing of the cluster.
        assert_eq!(
            send(&app, get_on(ADDR, "/dashboard/")).await.0,
            StatusCode::OK
        );

        let url = loopback.login_url();
        let path = url
            .strip_prefix(&format!("http://{ADDR}"))
            .unwrap()
            .to_owned();
        assert_eq!(
            send(&app, get_on(ADDR, &path)).await.0,
            StatusCode::SEE_OTHER
        );
        let (status, headers, _) = send(&app, get_on(ADDR, &path)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a code works once");
        assert!(!headers.contains_key("set-cookie"));
        for bad in [
            "/dashboard/login",
            "/dashboard/login?code=",
            "/dashboard/login?code=00",
        ] {
            assert_eq!(
                send(&app, get_on(ADDR, bad)).await.0,
                StatusCode::FORBIDDEN,
                "{bad}"
            );
        }
        let forged = "sluice_session_3100=0000";
        let request = get_on(ADDR, "/api/v1/rollouts").header("cookie", forged);
        assert_eq!(send(&app, request).await.0, StatusCode::UNAUTHORIZED);

        let (cookie, _) = logged_in(&app, &loopback).await;
        // Among other cookies of the same host.
        let cookies = format!("theme=dark; {cookie}; other=1");
        let request = get_on(ADDR, "/api/v1/rollouts").header("cookie", cookies);
        let (status, _, body) = send(&app, request).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "listed"));
    }

    #[tokio::test]
    async fn a_change_needs_the_pages_origin_and_the_sessions_csrf_token() {
        let (app, loopback) = app();
        let (cookie, csrf) = logged_in(&app, &loopback).await;
        let (_, other_csrf) = logged_in(&app, &loopback).await;
        let post = |origin: Option<&str>, token: Option<&str>| {
            let mut request = Request::post("/api/v1/act")
                .header("host", ADDR)
                .header("cookie", &cookie);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if let Some(token) = token {
                request = request.header(CSRF_HEADER, token);
            }
            request
        };
        let own = "http://127.0.0.1:3100";
        let refused = [
            (None, Some(csrf.as_str())),
            (Some("http://evil.example"), Some(csrf.as_str())),
            (Some("http://localhost:3100"), Some(csrf.as_str())),
            (Some("null"), Some(csrf.as_str())),
            (Some(own), None),
            (Some(own), Some("0000")),
            (Some(own), Some(other_csrf.as_str())),
        ];
        for (origin, token) in refused {
            let (status, _, body) = send(&app, post(origin, token)).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{origin:?} {token:?}: {body}"
            );
        }
        let (status, _, body) = send(&app, post(Some(own), Some(&csrf))).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "acted"));
    }
}
