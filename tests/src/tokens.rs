//! ServiceAccount tokens for callers of the REST API, issued the way a pipeline gets one: a
//! ServiceAccount bound to a Role, and a token from the TokenRequest API.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{HarnessError, Result};

/// Creates a ServiceAccount `name` in `ns` allowed `verbs` on `rollouts.sluice.dev` there, and
/// returns an hour-long token for it.
pub async fn service_account_token(
    client: &Client,
    ns: &str,
    name: &str,
    verbs: &[&str],
) -> Result<String> {
    let metadata = ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let account = ServiceAccount {
        metadata: metadata.clone(),
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await?;
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["sluice.dev".into()]),
            resources: Some(vec!["rollouts".into()]),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        }]),
    };
    roles.create(&PostParams::default(), &role).await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let binding = RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.to_owned(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }]),
    };
    bindings.create(&PostParams::default(), &binding).await?;
    request_token(client, ns, name, Duration::from_secs(3600)).await
}

/// A token for the existing ServiceAccount `ns/name` from the TokenRequest API, valid for
/// `lifetime` (the apiserver's audiences).
pub async fn request_token(
    client: &Client,
    ns: &str,
    name: &str,
    lifetime: Duration,
) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(Vec::new()),
            expiration_seconds: Some(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    token
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| HarnessError::Invalid {
            what: format!("the TokenRequest for {ns}/{name}"),
            detail: "no token issued".into(),
        })
}
