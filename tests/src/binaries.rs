//! Where the Go-built control plane, helm, Prometheus, promtool and Traefik live: a cache outside git,
//! filled once per machine by `tests/cluster/build.sh` at the versions pinned in
//! `tests/cluster/versions.env`.

use std::path::{Path, PathBuf};

use crate::{HarnessError, Result};

const VERSIONS_ENV: &str = include_str!("../cluster/versions.env");

/// The component versions pinned in `tests/cluster/versions.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub kubernetes: String,
    pub etcd: String,
    pub kwok: String,
    pub gateway_api: String,
    pub helm: String,
    pub prometheus: String,
    pub traefik: String,
}

impl Versions {
    pub fn pinned() -> Result<Self> {
        Self::parse(VERSIONS_ENV)
    }

    fn parse(text: &str) -> Result<Self> {
        let value = |key: &str| {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_owned())
                .ok_or_else(|| HarnessError::Invalid {
                    what: "tests/cluster/versions.env".into(),
                    detail: format!("no {key}= line"),
                })
        };
        Ok(Self {
            kubernetes: value("K8S_VERSION")?,
            etcd: value("ETCD_VERSION")?,
            kwok: value("KWOK_VERSION")?,
            gateway_api: value("GATEWAY_API_VERSION")?,
            helm: value("HELM_VERSION")?,
            prometheus: value("PROMETHEUS_VERSION")?,
            traefik: value("TRAEFIK_VERSION")?,
        })
    }
}

/// The executables the control plane is made of.
pub const CONTROL_PLANE: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
];

const BUILD_HINT: &str = "build the control plane, helm, Prometheus and Traefik once with \
     `tests/cluster/build.sh` (needs Go and the Go module proxy; takes a few minutes)";

/// The directory holding the built control plane: `$SLUICE_K8S_BIN` when set, otherwise
/// `$SLUICE_CACHE` (default `~/.cache/sluice`) `/k8s-<v>-etcd-<v>-kwok-<v>/bin`, as build.sh writes.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    pub fn locate() -> Result<Self> {
        let binaries = Self { dir: bin_dir()? };
        for name in CONTROL_PLANE {
            binaries.require(name)?;
        }
        binaries.require_file(&binaries.kwok_stages_dir().join("pod-ready.yaml"))?;
        Ok(binaries)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The files of the Gateway API's standard channel (its `config/crd/standard/*.yaml`: the
    /// CRDs, and what guards their upgrades), copied from its module by build.sh, by name.
    pub fn gateway_api_standard(&self) -> Result<Vec<PathBuf>> {
        let version = Versions::pinned()?.gateway_api;
        let dir = self
            .dir
            .join("..")
            .join(format!("gateway-api-{version}"))
            .join("standard");
        // Written last by build.sh: without it the copy is partial, or from an older build.sh.
        self.require_file(&dir.join(".complete"))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(HarnessError::io(format!("listing {}", dir.display())))?
        {
            let path = entry
                .map_err(HarnessError::io(format!("listing {}", dir.display())))?
                .path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// helm, built by build.sh beside `bin/` in a directory named after its version (the e2e
    /// tests render deploy/helm/sluice with it). Only the tests that need it ask for it, so a
    /// missing helm fails those, with the build hint.
    pub fn helm(&self) -> Result<PathBuf> {
        self.beside("helm", &Versions::pinned()?.helm)
    }

    /// Prometheus, built by build.sh beside `bin/` (see [`prometheus_tool`]).
    pub fn prometheus(&self) -> Result<PathBuf> {
        prometheus_tool_in(&self.dir, "prometheus")
    }

    /// promtool, built by build.sh beside `bin/` (see [`prometheus_tool`]).
    pub fn promtool(&self) -> Result<PathBuf> {
        prometheus_tool_in(&self.dir, "promtool")
    }

    /// Traefik, built by build.sh from its Go module beside `bin/`:
    /// `<bin>/../traefik-<TRAEFIK_VERSION>/traefik`. Only the cache, never `PATH`, for the same
    /// reason as [`prometheus_tool`]: its providers' behaviour is what the proxy tests measure.
    pub fn traefik(&self) -> Result<PathBuf> {
        self.beside("traefik", &Versions::pinned()?.traefik)
    }

    /// `<bin>/../<name>-<version>/<name>`, where build.sh puts a tool whose version the
    /// control plane's directory name does not carry; the build hint when it is missing.
    fn beside(&self, name: &str, version: &str) -> Result<PathBuf> {
        let path = self
            .dir
            .join("..")
            .join(format!("{name}-{version}"))
            .join(name);
        self.require_file(&path)?;
        Ok(path)
    }

    /// kwok's own default lifecycle stages, copied from its module by build.sh.
    pub fn kwok_stages_dir(&self) -> PathBuf {
        self.dir.join("..").join("kwok-stages")
    }

    fn require(&self, name: &str) -> Result<()> {
        self.require_file(&self.path(name))
    }

    fn require_file(&self, path: &Path) -> Result<()> {
        require_file(path)
    }
}

/// `prometheus` or `promtool` as build.sh builds them from the Go module
/// github.com/prometheus/prometheus: `<bin>/../prometheus-<PROMETHEUS_VERSION>/<name>`, beside
/// the control plane's `bin/` (the same directory [`Binaries::locate`] uses, without requiring
/// the control plane: the backfilled-Prometheus and promtool tests need no cluster).
///
/// Only the cache, never `PATH`: what is on PATH may be any Prometheus (Debian 12's is 2.42),
/// whose flags, PromQL range boundaries and promtool output differ, so the tests would pass or
/// fail by machine. A missing binary fails with the build hint instead.
pub fn prometheus_tool(name: &str) -> Result<PathBuf> {
    prometheus_tool_in(&bin_dir()?, name)
}

fn prometheus_tool_in(bin: &Path, name: &str) -> Result<PathBuf> {
    let version = Versions::pinned()?.prometheus;
    let path = bin
        .join("..")
        .join(format!("prometheus-{version}"))
        .join(name);
    require_file(&path)?;
    Ok(path)
}

/// `$SLUICE_K8S_BIN`, or the cache's `k8s-<v>-etcd-<v>-kwok-<v>/bin`.
fn bin_dir() -> Result<PathBuf> {
    Ok(match std::env::var_os("SLUICE_K8S_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let v = Versions::pinned()?;
            cache_root()?
                .join(format!(
                    "k8s-{}-etcd-{}-kwok-{}",
                    v.kubernetes, v.etcd, v.kwok
                ))
                .join("bin")
        }
    })
}

fn require_file(path: &Path) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    Err(HarnessError::MissingBinary {
        binary: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        hint: BUILD_HINT.into(),
    })
}

fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("sluice"))
        .ok_or_else(|| HarnessError::Invalid {
            what: "cache directory".into(),
            detail: "neither SLUICE_CACHE nor HOME is set".into(),
        })
}

/// Finds a program on PATH.
pub fn on_path(program: &str, hint: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| HarnessError::MissingBinary {
            binary: program.into(),
            dir: PathBuf::from("$PATH"),
            hint: hint.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_parse() {
        let v = Versions::pinned().unwrap();
        assert!(v.kubernetes.starts_with("v1."), "{v:?}");
        assert!(v.etcd.starts_with("v3.6."), "{v:?}");
        assert!(v.kwok.starts_with('v'), "{v:?}");
        assert!(v.helm.starts_with("v3."), "{v:?}");
        assert!(v.prometheus.starts_with("v3."), "{v:?}");
        assert!(v.traefik.starts_with("v3."), "{v:?}");
    }

    #[test]
    fn a_missing_version_is_named() {
        let err = Versions::parse("K8S_VERSION=v1.37.2\nKWOK_VERSION=v0.8.0\n").unwrap_err();
        assert!(err.to_string().contains("ETCD_VERSION"), "{err}");
    }
}
