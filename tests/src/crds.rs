//! Installing Sluice's CRDs the way users do: server-side apply, then waiting until each is
//! Established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::{HarnessError, Result, wait};

/// Applies every CRD of `rollout_controller::crds()` and waits until all are Established.
pub async fn install(client: &Client, field_manager: &str) -> Result<()> {
    let crds: Vec<CustomResourceDefinition> = rollout_controller::crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .collect();
    apply_and_wait(client, field_manager, &crds).await
}

/// Installs the Gateway API's HTTPRoute CRD that build.sh took from its module.
pub async fn install_gateway_api(client: &Client, field_manager: &str) -> Result<()> {
    let path = crate::binaries::Binaries::locate()?.http_route_crd()?;
    let text = std::fs::read_to_string(&path).map_err(|source| HarnessError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    let crd: CustomResourceDefinition =
        serde_norway::from_str(&text).map_err(|e| HarnessError::Invalid {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
    apply_and_wait(client, field_manager, &[crd]).await
}

async fn apply_and_wait(
    client: &Client,
    field_manager: &str,
    crds: &[CustomResourceDefinition],
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(crd),
        )
        .await?;
    }
    for crd in crds {
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
