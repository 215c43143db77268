//! Installing Sluice's CRDs the way users do: server-side apply, then waiting until each is
//! Established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::{HarnessError, Result, wait};

/// Applies every CRD of `rollout_controller::crds()` and waits until all are Established.
pub async fn install(client: &Client, field_manager: &str) -> Result<()> {
    let crds: Vec<CustomResourceDefinition> = rollout_controller::crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .collect();
    apply_and_wait(client, field_manager, &crds).await
}

/// Installs the Gateway API's standard channel that build.sh took from its module, every
/// document of every file, as its own install does: the CRDs (waited for until Established),
/// then the rest (the admission policy that guards their upgrades), all cluster-scoped.
pub async fn install_gateway_api(client: &Client, field_manager: &str) -> Result<()> {
    let mut crds: Vec<CustomResourceDefinition> = Vec::new();
    let mut others: Vec<DynamicObject> = Vec::new();
    for path in crate::binaries::Binaries::locate()?.gateway_api_standard()? {
        let text = std::fs::read_to_string(&path)
            .map_err(HarnessError::io(format!("reading {}", path.display())))?;
        let invalid = |detail: String| HarnessError::Invalid {
            what: path.display().to_string(),
            detail,
        };
        for document in serde_norway::Deserializer::from_str(&text) {
            let value =
                serde_json::Value::deserialize(document).map_err(|e| invalid(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            if value["kind"] == "CustomResourceDefinition" {
                crds.push(serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?);
            } else {
                others.push(serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?);
            }
        }
    }
    apply_and_wait(client, field_manager, &crds).await?;
    for object in &others {
        let types = object.types.as_ref().ok_or_else(|| HarnessError::Invalid {
            what: format!("Gateway API object {}", object.name_any()),
            detail: "no apiVersion or kind".into(),
        })?;
        let gvk = GroupVersionKind::try_from(types).map_err(|e| HarnessError::Invalid {
            what: format!("Gateway API object {}", object.name_any()),
            detail: e.to_string(),
        })?;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
        api.patch(
            &object.name_any(),
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(object),
        )
        .await?;
    }
    Ok(())
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
