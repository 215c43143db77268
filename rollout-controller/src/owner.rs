//! What a rollout owns: the objects whose controller owner reference names it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::Rollout;

/// Whether the object of `metadata` is controlled by `rollout` (its owner reference with
/// `controller: true`). Metadata rather than the object, so that an object that did not decode
/// is judged alike.
pub fn owned_by(rollout: &Rollout, metadata: &ObjectMeta) -> bool {
    let uid = rollout.metadata.uid.as_ref();
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid)
}
