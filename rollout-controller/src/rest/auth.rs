//! Who may call the REST API: the bearer token checked with a TokenReview, then what it may do
//! with a SubjectAccessReview on `rollouts` in `sluice.dev`, each decision reused briefly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::{AuthError, Authorizer, SessionMode, Verb};
use k8s_openapi::api::authentication::v1::{TokenReview, UserInfo};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::access::{refused, rollout_attributes};

/// How long an authorization decision is reused.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);

type CacheKey = (String, Option<String>, &'static str);
type CachedDecision = (Result<String, AuthError>, Instant);

/// TokenReview, then SubjectAccessReview on `rollouts` in `sluice.dev`.
pub(crate) struct KubeAuthorizer {
    client: Client,
    cache: Mutex<HashMap<CacheKey, CachedDecision>>,
}

impl KubeAuthorizer {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Who the token belongs to, by TokenReview.
    async fn user(&self, token: &str) -> Result<UserInfo, AuthError> {
        let unavailable = |e: kube::Error| AuthError::Unavailable(e.to_string());
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}}))
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let reviewed = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(unavailable)?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Unauthenticated(
                status.error.unwrap_or_else(|| "token not valid".into()),
            ));
        }
        Ok(status.user.unwrap_or_default())
    }

    async fn review(
        &self,
        token: &str,
        namespace: Option<&str>,
        verb: Verb,
    ) -> Result<String, AuthError> {
        let unavailable = |e: kube::Error| AuthError::Unavailable(e.to_string());
        let user = self.user(token).await?;
        let username = user.username.clone().unwrap_or_default();
        let access: SubjectAccessReview = serde_json::from_value(json!({"spec": {
            "user": user.username,
            "groups": user.groups,
            "uid": user.uid,
            "extra": user.extra,
            "resourceAttributes": rollout_attributes(namespace, verb.as_str()),
        }}))
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let sars: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let decided = sars
            .create(&PostParams::default(), &access)
            .await
            .map_err(unavailable)?;
        if decided.status.is_some_and(|s| s.allowed) {
            Ok(username)
        } else {
            Err(refused(&username, namespace, verb.as_str()))
        }
    }
}

impl Authorizer for KubeAuthorizer {
    async fn authorize(
        &self,
        token: Option<&str>,
        namespace: Option<&str>,
        verb: Verb,
    ) -> Result<String, AuthError> {
        let Some(token) = token else {
            return Err(AuthError::Unauthenticated("no bearer token".into()));
        };
        let key = (
            token.to_owned(),
            namespace.map(str::to_owned),
            verb.as_str(),
        );
        if let Some((decision, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < AUTH_CACHE_TTL
        {
            return decision.clone();
        }
        let decision = self.review(token, namespace, verb).await;
        if !matches!(decision, Err(AuthError::Unavailable(_))) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
            cache.insert(key, (decision.clone(), Instant::now()));
        }
        decision
    }

    async fn identify(&self, token: Option<&str>) -> Result<Option<String>, AuthError> {
        match token {
            None => Ok(None),
            Some(token) => Ok(Some(self.user(token).await?.username.unwrap_or_default())),
        }
    }

    fn mode(&self) -> SessionMode {
        SessionMode::Token
    }
}
