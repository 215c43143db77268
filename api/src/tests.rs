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
