//! What a caller is asked permission for on rollouts, by the REST API (a SubjectAccessReview for
//! a token's user) and by `kubectl sluice dashboard` (a SelfSubjectAccessReview for the
//! kubeconfig's): the same attributes and the same refusal, so both check one rule.

use api::{AuthError, Verb};
use serde_json::{Value, json};

use crate::crd::GROUP;

/// The `resourceAttributes` of an access review: `verb` on rollouts.sluice.dev in `namespace`
/// (all namespaces when `None`).
pub fn rollout_attributes(namespace: Option<&str>, verb: &str) -> Value {
    json!({
        "namespace": namespace,
        "verb": verb,
        "group": GROUP,
        "resource": "rollouts",
    })
}

/// The refusal of an access review that did not allow `user` to.
pub fn refused(user: &str, namespace: Option<&str>, verb: &str) -> AuthError {
    AuthError::Forbidden(format!(
        "{user} may not {verb} rollouts.{GROUP} in {}",
        namespace.unwrap_or("all namespaces")
    ))
}

/// The verb the user's own client needs for `verb`: an action is a merge patch, which the
/// apiserver authorizes as `patch` (the REST API asks `update` of its callers, and patches with
/// the controller's own rights).
pub fn own_verb(verb: Verb) -> &'static str {
    match verb {
        Verb::Update => "patch",
        other => other.as_str(),
    }
}
