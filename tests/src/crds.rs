//! Installing Sluice's CRDs the way users do: server-side apply, then waiting until each is
//! Established.

use std::path::Path;
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
        split_documents(&path, &mut crds, Some(&mut others))?;
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

/// Applies every CustomResourceDefinition in the YAML files of `dir` (another controller's, as
/// its release ships them: the scale benchmark installs Argo Rollouts' so) and waits until all
/// are Established. Documents of other kinds are skipped.
pub async fn install_from_dir(client: &Client, field_manager: &str, dir: &Path) -> Result<()> {
    let listing = |e: std::io::Error| HarnessError::io(format!("listing {}", dir.display()))(e);
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let path = entry.map_err(listing)?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut crds: Vec<CustomResourceDefinition> = Vec::new();
    for path in paths {
        split_documents(&path, &mut crds, None)?;
    }
    if crds.is_empty() {
        return Err(HarnessError::Invalid {
            what: dir.display().to_string(),
            detail: "holds no CustomResourceDefinition".into(),
        });
    }
    apply_and_wait(client, field_manager, &crds).await
}

/// The YAML documents of `path`: its CRDs into `crds`, every other object into `others`, or
/// skipped without it.
fn split_documents(
    path: &Path,
    crds: &mut Vec<CustomResourceDefinition>,
    mut others: Option<&mut Vec<DynamicObject>>,
) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(HarnessError::io(format!("reading {}", path.display())))?;
    let invalid = |detail: String| HarnessError::Invalid {
        what: path.display().to_string(),
        detail,
    };
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(document).map_err(|e| invalid(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        if value["kind"] == "CustomResourceDefinition" {
            crds.push(serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?);
        } else if let Some(others) = others.as_deref_mut() {
            others.push(serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?);
        }
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
