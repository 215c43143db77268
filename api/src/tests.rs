//! The routes over an in-memory control: status codes, bodies, authorization, `wait`'s
//! generation rule, and exactly one winner among concurrent promotes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

#[derive(Default)]
struct Memory {
    rollouts: Mutex<BTreeMap<(String, String), RolloutView>>,
}

impl Memory {
    fn with(view: RolloutView) -> Arc<Self> {
        let memory = Memory::default();
        memory
            .rollouts
            .lock()
            .unwrap()
            .insert((view.namespace.clone(), view.name.clone()), view);
        Arc::new(memory)
    }

    fn update(&self, change: impl FnOnce(&mut RolloutView)) {
        let mut rollouts = self.rollouts.lock().unwrap();
        change(rollouts.values_mut().next().unwrap());
    }
}

impl RolloutControl for Memory {
    async fn list(&self, namespace: Option<&str>) -> Result<Vec<RolloutView>, ControlError> {
        let rollouts = self.rollouts.lock().unwrap();
        Ok(rollouts
            .values()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .cloned()
            .collect())
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<RolloutView, ControlError> {
        let rollouts = self.rollouts.lock().unwrap();
        rollouts
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or(ControlError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            })
    }

    async fn act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
    ) -> Result<RolloutView, ControlError> {
        // Yield, so that concurrent requests interleave as they would against the apiserver.
        tokio::task::yield_now().await;
        let mut rollouts = self.rollouts.lock().unwrap();
        let view = rollouts
            .get_mut(&(namespace.to_owned(), name.to_owned()))
            .ok_or(ControlError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            })?;
        match action {
            Action::Promote { from_step, .. } => {
                if view.phase != "Paused" {
                    return Err(ControlError::Conflict("not paused".into()));
                }
                if from_step.is_some() && from_step != view.current_step {
                    return Err(ControlError::Conflict(
                        "fromStep is not the current step".into(),
                    ));
                }
                view.current_step = view.current_step.map(|s| s + 1);
                view.phase = "Progressing".into();
            }
            Action::Abort => view.phase = "Aborted".into(),
            Action::Undo { to_revision } => {
                if to_revision == Some(99) {
                    return Err(ControlError::Conflict(
                        "revision 99 is not in the rollout's history".into(),
                    ));
                }
                view.generation += 1;
            }
            _ => {}
        }
        Ok(view.clone())
    }
}

/// Tokens `reader` (get/list) and `writer` (everything).
struct Tokens;

impl Authorizer for Tokens {
    async fn authorize(
        &self,
        token: Option<&str>,
        _: Option<&str>,
        verb: Verb,
    ) -> Result<String, AuthError> {
        match (token, verb) {
            (None, _) => Err(AuthError::Unauthenticated("no bearer token".into())),
            (Some("writer"), _) => Ok("writer".into()),
            (Some("reader"), Verb::Get | Verb::List) => Ok("reader".into()),
            (Some("reader"), Verb::Update) => Err(AuthError::Forbidden(
                "reader may not update rollouts".into(),
            )),
            (Some(_), _) => Err(AuthError::Unauthenticated("token not valid".into())),
        }
    }

    async fn identify(&self, token: Option<&str>) -> Result<Option<String>, AuthError> {
        match token {
            None => Ok(None),
            Some(t @ ("reader" | "writer")) => Ok(Some(t.into())),
            Some(_) => Err(AuthError::Unauthenticated("token not valid".into())),
        }
    }

    fn mode(&self) -> SessionMode {
        SessionMode::Token
    }
}

fn paused_at(step: i32) -> RolloutView {
    RolloutView {
        namespace: "shop".into(),
        name: "web".into(),
        generation: 2,
        observed_generation: 2,
        phase: "Paused".into(),
        current_step: Some(step),
        ..RolloutView::default()
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

const WEB: &str = "/api/v1/namespaces/shop/rollouts/web";

#[tokio::test]
async fn reads_and_actions_need_the_right_token() {
    let app = router(Memory::with(paused_at(1)), Arc::new(Tokens));
    assert_eq!(
        call(&app, "GET", WEB, None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", WEB, Some("garbage"), "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = call(&app, "GET", WEB, Some("reader"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["currentStep"], 1);
    let (status, body) = call(&app, "POST", &format!("{WEB}/promote"), Some("reader"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "Forbidden");
    let (status, _) = call(
        &app,
        "GET",
        "/api/v1/rollouts?namespace=shop",
        Some("reader"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &app,
        "GET",
        "/api/v1/namespaces/shop/rollouts/nope",
        Some("reader"),
        "",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );
}

#[tokio::test]
async fn bad_bodies_are_rejected_and_change_nothing() {
    let memory = Memory::with(paused_at(1));
    let app = router(memory.clone(), Arc::new(Tokens));
    let promote = format!("{WEB}/promote");
    for body in [
        r#"{"fromStep": 1, "force": true}"#,
        r#"{"fromStep": "one"}"#,
        "not json",
    ] {
        let (status, reply) = call(&app, "POST", &promote, Some("writer"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            reply["message"].as_str().unwrap().contains("request body"),
            "{reply}"
        );
    }
    let too_big = format!(r#"{{"fromStep": 1, "x": "{}"}}"#, "a".repeat(20_000));
    assert_eq!(
        call(&app, "POST", &promote, Some("writer"), &too_big)
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        memory.get("shop", "web").await.unwrap().current_step,
        Some(1)
    );
    let (status, reply) = call(&app, "POST", &promote, Some("writer"), r#"{"fromStep": 0}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        reply["message"].as_str().unwrap().contains("fromStep"),
        "{reply}"
    );
    let (status, reply) = call(&app, "POST", &promote, Some("writer"), "").await;
    assert_eq!(
        (status, reply["currentStep"].as_i64()),
        (StatusCode::OK, Some(2))
    );
}

#[tokio::test]
async fn of_twenty_concurrent_promotes_of_one_step_exactly_one_wins() {
    let memory = Memory::with(paused_at(3));
    let app = router(memory.clone(), Arc::new(Tokens));
    let promote = format!("{WEB}/promote");
    let calls = (0..20).map(|_| call(&app, "POST", &promote, Some("writer"), r#"{"fromStep": 3}"#));
    let statuses: Vec<StatusCode> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        19
    );
    assert_eq!(
        memory.get("shop", "web").await.unwrap().current_step,
        Some(4)
    );
}

#[tokio::test]
async fn wait_answers_for_the_generation_current_at_the_call() {
    let mut view = paused_at(0);
    view.phase = "Healthy".into();
    view.generation = 3; // a new template was applied; status still describes generation 2
    let memory = Memory::with(view);
    let app = router(memory.clone(), Arc::new(Tokens));
    let waiting = {
        let app = app.clone();
        tokio::spawn(async move {
            call(
                &app,
                "GET",
                &format!("{WEB}/wait?phase=Healthy&timeout=10s"),
                Some("reader"),
                "",
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !waiting.is_finished(),
        "the old revision's Healthy must not answer"
    );
    memory.update(|v| {
        v.observed_generation = 3;
        v.phase = "Progressing".into();
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!waiting.is_finished());
    memory.update(|v| v.phase = "Healthy".into());
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status, body["observedGeneration"].as_i64()),
        (StatusCode::OK, Some(3))
    );

    memory.update(|v| v.phase = "Aborted".into());
    let (status, body) = call(&app, "GET", &format!("{WEB}/wait"), Some("reader"), "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("Aborted"))
    );
    memory.update(|v| v.phase = "Progressing".into());
    let (status, _) = call(
        &app,
        "GET",
        &format!("{WEB}/wait?timeout=300ms"),
        Some("reader"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (status, _) = call(
        &app,
        "GET",
        &format!("{WEB}/wait?phase=Done"),
        Some("reader"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Every route docs/API.md names, as (method, path).
const API_MD_ROUTES: [(&str, &str); 14] = [
    ("get", "/api/v1/rollouts"),
    ("get", "/api/v1/rollouts/events"),
    ("get", "/api/v1/session"),
    ("get", "/api/v1/namespaces/{ns}/rollouts/{name}/permissions"),
    ("get", "/api/v1/namespaces/{ns}/rollouts/{name}"),
    ("get", "/api/v1/namespaces/{ns}/rollouts/{name}/wait"),
    ("get", "/api/v1/namespaces/{ns}/rollouts/{name}/events"),
    ("post", "/api/v1/namespaces/{ns}/rollouts/{name}/promote"),
    ("post", "/api/v1/namespaces/{ns}/rollouts/{name}/abort"),
    ("post", "/api/v1/namespaces/{ns}/rollouts/{name}/retry"),
    ("post", "/api/v1/namespaces/{ns}/rollouts/{name}/pause"),
    ("post", "/api/v1/namespaces/{ns}/rollouts/{name}/resume"),
    ("post", "/api/v1/namespaces/{ns}/rollouts/{name}/undo"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_is_served() {
    let app = router(Memory::with(paused_at(1)), Arc::new(Tokens));
    let (status, doc) = call(&app, "GET", "/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = API_MD_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Each documented route answers (a token is needed, but the route exists): never 404/405.
    for (method, path) in &documented {
        let uri = path.replace("{ns}", "shop").replace("{name}", "web");
        let uri = if uri.ends_with("/events") || uri.ends_with("/wait") {
            format!("{uri}?timeout=1ms")
        } else {
            uri
        };
        let (status, _) = call(&app, &method.to_uppercase(), &uri, Some("writer"), "").await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {status}"
        );
    }
    // The views carry their schemas.
    for schema in [
        "RolloutView",
        "RevisionView",
        "MetricView",
        "ErrorBody",
        "PromoteBody",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

/// Reads server-sent events from a response body until `count` events arrived.
async fn read_events(body: Body, count: usize) -> Vec<(String, serde_json::Value)> {
    let mut stream = body.into_data_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let Some(chunk) = futures::StreamExt::next(&mut stream).await else {
            break;
        };
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !name.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap_or_default()));
            }
        }
    }
    events
}

#[tokio::test]
async fn events_stream_each_status_change_and_end_when_the_rollout_is_gone() {
    let memory = Memory::with(paused_at(1));
    let app = router(memory.clone(), Arc::new(Tokens));
    let events_uri = format!("{WEB}/events");
    assert_eq!(
        call(&app, "GET", &events_uri, None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = call(
        &app,
        "GET",
        "/api/v1/namespaces/shop/rollouts/nope/events",
        Some("reader"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let request = Request::get(&events_uri)
        .header("authorization", "Bearer reader")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let changes = {
        let memory = memory.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            memory.update(|v| {
                v.current_step = Some(2);
                v.phase = "Progressing".into();
            });
            // Unchanged looks send nothing; the next change does.
            tokio::time::sleep(Duration::from_millis(600)).await;
            memory.update(|v| v.phase = "Healthy".into());
            tokio::time::sleep(Duration::from_millis(400)).await;
            memory.rollouts.lock().unwrap().clear();
        })
    };
    let events = read_events(response.into_body(), 4).await;
    changes.await.unwrap();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["status", "status", "status", "deleted"],
        "{events:?}"
    );
    assert_eq!(events[0].1["phase"], "Paused");
    assert_eq!(
        (
            events[1].1["phase"].as_str(),
            events[1].1["currentStep"].as_i64()
        ),
        (Some("Progressing"), Some(2))
    );
    assert_eq!(events[2].1["phase"], "Healthy");

    // A stream ends by itself at its timeout.
    memory
        .rollouts
        .lock()
        .unwrap()
        .insert(("shop".into(), "web".into()), paused_at(1));
    let request = Request::get(format!("{events_uri}?timeout=300ms"))
        .header("authorization", "Bearer reader")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let events = read_events(response.into_body(), 3).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["status", "timeout"]);
    let (status, _) = call(
        &app,
        "GET",
        &format!("{events_uri}?timeout=2h"),
        Some("reader"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn undo_takes_an_optional_revision_and_says_why_it_cannot() {
    let memory = Memory::with(paused_at(1));
    let app = router(memory.clone(), Arc::new(Tokens));
    let undo = format!("{WEB}/undo");
    let (status, body) = call(&app, "POST", &undo, Some("writer"), "").await;
    assert_eq!(
        (status, body["generation"].as_i64()),
        (StatusCode::OK, Some(3))
    );
    let (status, _) = call(&app, "POST", &undo, Some("writer"), r#"{"toRevision": 1}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, "POST", &undo, Some("writer"), r#"{"toRevision": 99}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"].as_str().unwrap().contains("revision 99"),
        "{body}"
    );
    let (status, _) = call(&app, "POST", &undo, Some("writer"), r#"{"revision": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&app, "POST", &undo, Some("reader"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_caller_is_checked_before_the_body_is_read() {
    let memory = Memory::with(paused_at(1));
    let app = router(memory.clone(), Arc::new(Tokens));
    let too_big = "x".repeat(BODY_LIMIT + 1);
    for path in ["promote", "undo"] {
        let uri = format!("{WEB}/{path}");
        for body in ["not json", r#"{"force": true}"#, too_big.as_str()] {
            let (status, reply) = call(&app, "POST", &uri, None, body).await;
            assert_eq!(
                (status, reply["error"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("Unauthorized")),
                "{path} without a token, body of {} bytes",
                body.len()
            );
            let (status, _) = call(&app, "POST", &uri, Some("reader"), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} by a reader");
        }
    }
    assert_eq!(
        memory.get("shop", "web").await.unwrap().current_step,
        Some(1)
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_in_the_documented_error_shape() {
    let memory = Memory::with(paused_at(1));
    let app = router(memory.clone(), Arc::new(Tokens));
    let too_big = format!(r#"{{"fromStep": 1, "x": "{}"}}"#, "a".repeat(BODY_LIMIT));
    for path in ["promote", "undo"] {
        let (status, reply) = call(
            &app,
            "POST",
            &format!("{WEB}/{path}"),
            Some("writer"),
            &too_big,
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let reply: ErrorBody = serde_json::from_value(reply).expect("the JSON error shape");
        assert_eq!(reply.error, "PayloadTooLarge");
        assert!(reply.message.contains("16384 bytes"), "{}", reply.message);
    }
    // Exactly at the limit is read (and judged on its content).
    let at_limit = format!(r#"{{"fromStep": 1{}}}"#, " ".repeat(BODY_LIMIT - 15));
    assert_eq!(at_limit.len(), BODY_LIMIT);
    let (status, _) = call(
        &app,
        "POST",
        &format!("{WEB}/promote"),
        Some("writer"),
        &at_limit,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        memory.get("shop", "web").await.unwrap().current_step,
        Some(2)
    );
}

/// A GET's status, headers and body as text.
async fn raw(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    respond(app, request).await
}

/// The status, headers and body as text of a request without a body.
pub(crate) async fn respond(
    app: &Router,
    request: axum::http::request::Builder,
) -> (StatusCode, HeaderMap, String) {
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

static ASSETS: &[dashboard::Asset] = &[
    ("index.html", b"<!doctype html><title>Sluice</title>"),
    ("app.js", b"'use strict';"),
    ("css/app.css", b"body {}"),
];

fn assert_secure(headers: &HeaderMap, what: &str) {
    assert_eq!(
        headers["content-security-policy"], CONTENT_SECURITY_POLICY,
        "{what}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
    assert!(headers.contains_key("cache-control"), "{what}");
}

#[tokio::test]
async fn the_dashboard_is_served_from_its_files_with_strict_headers() {
    let app = router_with(Memory::with(paused_at(1)), Arc::new(Tokens), ASSETS);
    let (status, headers, body) = raw(&app, "/dashboard/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(body, "<!doctype html><title>Sluice</title>");
    assert_secure(&headers, "index");
    for (uri, content_type) in [
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/css/app.css", "text/css; charset=utf-8"),
    ] {
        let (status, headers, _) = raw(&app, uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(headers["content-type"], content_type, "{uri}");
        assert_secure(&headers, uri);
    }
    let (status, headers, _) = raw(&app, "/dashboard", None).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "/dashboard/");
    // Nothing outside the embedded files, and a miss does not echo what was asked for.
    for uri in [
        "/dashboard/nope.js",
        "/dashboard/../Cargo.toml",
        "/dashboard/%3Cscript%3E",
    ] {
        let (status, headers, body) = raw(&app, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body, "not found\n", "{uri}");
        assert_secure(&headers, uri);
    }
    // The API's answers carry the same headers, and are never cached.
    let (status, headers, _) = raw(&app, WEB, Some("reader")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-store");
    assert_secure(&headers, "API");
    let (_, headers, _) = raw(&app, WEB, None).await;
    assert_secure(&headers, "401");
}

/// The server builds no HTML from the cluster: a rollout whose name, annotation and messages
/// hold markup is answered as JSON, where the markup is a string, from every route that shows
/// it, and nothing of it lands in a non-JSON answer.
#[tokio::test]
async fn markup_from_the_cluster_only_ever_leaves_as_json() {
    let evil = "<script>alert(1)</script>";
    let mut view = paused_at(1);
    view.name = evil.into();
    view.message = format!("paused {evil}");
    view.annotations.insert("note".into(), evil.into());
    view.analysis_runs = vec![AnalysisRunView {
        name: "run".into(),
        message: evil.into(),
        ..AnalysisRunView::default()
    }];
    let app = router_with(Memory::with(view), Arc::new(Tokens), ASSETS);
    let one = "/api/v1/namespaces/shop/rollouts/%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    for uri in [
        "/api/v1/rollouts?namespace=shop".to_owned(),
        one.to_owned(),
        format!("{one}/events?timeout=1ms"),
        "/api/v1/rollouts/events?namespace=shop&timeout=1ms".to_owned(),
    ] {
        let (status, headers, body) = raw(&app, &uri, Some("reader")).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(
            content_type == "application/json" || content_type == "text/event-stream",
            "{uri}: {content_type}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(body.contains(evil), "{uri}: the markup is shown as data");
    }
    let (status, headers, body) = raw(&app, &format!("{one}/nope"), Some("reader")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("<script"), "{body}");
    assert!(
        headers
            .get("content-type")
            .is_none_or(|t| !t.to_str().unwrap().contains("html"))
    );
}

#[tokio::test]
async fn the_session_says_how_to_sign_in_and_who_the_caller_is() {
    let app = router(Memory::with(paused_at(1)), Arc::new(Tokens));
    let (status, body) = call(&app, "GET", "/api/v1/session", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"mode": "token", "user": null, "csrfToken": null, "namespace": null})
    );
    let (status, body) = call(&app, "GET", "/api/v1/session", Some("reader"), "").await;
    assert_eq!(
        (status, body["user"].as_str()),
        (StatusCode::OK, Some("reader"))
    );
    let (status, body) = call(&app, "GET", "/api/v1/session", Some("garbage"), "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Unauthorized"))
    );
    let open = router(Memory::with(paused_at(1)), Arc::new(NoAuth));
    let (_, body) = call(&open, "GET", "/api/v1/session", None, "").await;
    assert_eq!(body["mode"], "none");
}

#[tokio::test]
async fn permissions_say_whether_the_caller_may_act() {
    let app = router(Memory::with(paused_at(1)), Arc::new(Tokens));
    let uri = format!("{WEB}/permissions");
    let (status, body) = call(&app, "GET", &uri, Some("reader"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"update": false}));
    let (_, body) = call(&app, "GET", &uri, Some("writer"), "").await;
    assert_eq!(body, serde_json::json!({"update": true}));
    assert_eq!(
        call(&app, "GET", &uri, None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    // And what it says holds: the reader's action is refused.
    let (status, _) = call(&app, "POST", &format!("{WEB}/abort"), Some("reader"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_list_stream_sends_the_list_then_each_change_and_each_deletion() {
    let memory = Memory::with(paused_at(1));
    let app = router(memory.clone(), Arc::new(Tokens));
    let uri = "/api/v1/rollouts/events?namespace=shop";
    assert_eq!(
        call(&app, "GET", uri, None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let request = Request::get(uri)
        .header("authorization", "Bearer reader")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let changes = {
        let memory = memory.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut api = paused_at(0);
            api.name = "api".into();
            memory
                .rollouts
                .lock()
                .unwrap()
                .insert(("shop".into(), "api".into()), api);
            tokio::time::sleep(Duration::from_millis(600)).await;
            memory
                .rollouts
                .lock()
                .unwrap()
                .get_mut(&("shop".to_owned(), "web".to_owned()))
                .unwrap()
                .phase = "Healthy".into();
            tokio::time::sleep(Duration::from_millis(600)).await;
            memory
                .rollouts
                .lock()
                .unwrap()
                .remove(&("shop".to_owned(), "api".to_owned()));
        })
    };
    let events = read_events(response.into_body(), 4).await;
    changes.await.unwrap();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["list", "upsert", "upsert", "deleted"], "{events:?}");
    assert_eq!(events[0].1.as_array().unwrap().len(), 1);
    assert_eq!(events[0].1[0]["name"], "web");
    assert_eq!(events[1].1["name"], "api");
    assert_eq!(
        (events[2].1["name"].as_str(), events[2].1["phase"].as_str()),
        (Some("web"), Some("Healthy"))
    );
    assert_eq!(
        events[3].1,
        serde_json::json!({"namespace": "shop", "name": "api"})
    );
}

/// Allows everyone until revoked, and asks to be asked again often.
#[derive(Default)]
struct Revocable {
    revoked: std::sync::atomic::AtomicBool,
}

impl Authorizer for Revocable {
    async fn authorize(
        &self,
        _: Option<&str>,
        _: Option<&str>,
        _: Verb,
    ) -> Result<String, AuthError> {
        if self.revoked.load(Ordering::Relaxed) {
            Err(AuthError::Forbidden("no longer".into()))
        } else {
            Ok("someone".into())
        }
    }

    async fn identify(&self, _: Option<&str>) -> Result<Option<String>, AuthError> {
        Ok(Some("someone".into()))
    }

    fn mode(&self) -> SessionMode {
        SessionMode::Token
    }

    fn recheck_interval(&self) -> Duration {
        Duration::from_millis(300)
    }
}

/// A stream lasts up to an hour: a caller who loses the right to read stops being sent rollouts,
/// with a final error that says so, on either stream.
#[tokio::test]
async fn a_stream_ends_once_its_caller_may_no_longer_read() {
    for uri in [
        "/api/v1/rollouts/events?namespace=shop".to_owned(),
        format!("{WEB}/events"),
    ] {
        let memory = Memory::with(paused_at(1));
        let auth = Arc::new(Revocable::default());
        let app = router(memory.clone(), auth.clone());
        let request = Request::get(&uri)
            .header("authorization", "Bearer t")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let revoke = {
            let auth = auth.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                auth.revoked.store(true, Ordering::Relaxed);
                // A change after the refusal must not be sent.
                tokio::time::sleep(Duration::from_millis(600)).await;
                memory.update(|v| v.phase = "Healthy".into());
            })
        };
        let events =
            tokio::time::timeout(Duration::from_secs(5), read_events(response.into_body(), 3))
                .await
                .expect("the stream ends by itself");
        revoke.await.unwrap();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2, "{uri}: {events:?}");
        assert_eq!(names[1], "error", "{uri}: {events:?}");
        assert_eq!(events[1].1["error"], "Forbidden", "{uri}");
    }
}
