//! Installing Sluice's CRDs the way users do: server-side apply, then waiting until each is
//! Established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::{Result, wait};

/// Applies every CRD of `rollout_controller::crds()` and waits until all are Established.
pub async fn install(client: &Client, field_manager: &str) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = rollout_controller::crds();
    for (_, crd) in &crds {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(crd),
        )
        .await?;
    }
    for (_, crd) in &crds {
        let name = crd.name_any();
        wait::until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(60),
            || async {
                let crd = api.get(&name).await?;
                let established = crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                Ok::<_, crate::HarnessError>(established.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}
