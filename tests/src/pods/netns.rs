//! A pod's network: a namespace with the pod IP on one end of a veth pair, a /32 route to it on
//! the host's end. Everything is named with [`PREFIX`], so that a sweep finds what a runner
//! that died left behind.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::{HarnessError, POD_CIDR, Result};

/// Every namespace and host-side veth the runner creates starts with this.
pub const PREFIX: &str = "sluice";
/// Where each namespace's owner (the runner's pid) is written, so that a sweep by one runner
/// leaves a live runner's namespaces alone (several clusters may share a machine).
const OWNERS: &str = "/run/sluice-pods";
/// The runner's executable name (a rebuilt one shows as `sluice-pod-runner (deleted)`).
const RUNNER_EXECUTABLE: &str = "sluice-pod-runner";
/// The interface name limit (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// The network of one pod.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub namespace: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
}

impl PodNetwork {
    /// Names derived from the pod's UID: the namespace carries all of it, the veth (15
    /// characters at most) its first 9 hex digits, which is unique enough among a test
    /// run's pods and checked at creation (`ip link add` fails on a clash).
    pub fn for_pod(uid: &str, ip: Ipv4Addr) -> Self {
        let hex: String = uid.chars().filter(char::is_ascii_hexdigit).collect();
        let room = IFNAME_MAX - PREFIX.len();
        Self {
            namespace: format!("{PREFIX}-{uid}"),
            host_veth: format!("{PREFIX}{}", &hex[..hex.len().min(room)]),
            ip,
        }
    }

    /// Creates the namespace, the veth pair (`eth0` inside), the address, the routes, and
    /// brings up `lo`. A failure part-way removes what was made.
    pub async fn create(&self) -> Result<()> {
        refuse_host_address(self.ip).await?;
        record_owner(&self.namespace)?;
        let made = self.create_steps().await;
        if made.is_err() {
            self.remove().await;
        }
        made
    }

    async fn create_steps(&self) -> Result<()> {
        let ns = self.namespace.as_str();
        let ip = format!("{}/32", self.ip);
        let ip_only = self.ip.to_string();
        ip_cmd(&["netns", "add", ns]).await?;
        ip_cmd(&[
            "link",
            "add",
            &self.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ])
        .await?;
        ip_cmd(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip_cmd(&["-n", ns, "addr", "add", &ip, "dev", "eth0"]).await?;
        ip_cmd(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        // Replies go back out eth0 to whatever host address asked: the host answers ARP for
        // its own addresses on any interface.
        ip_cmd(&["-n", ns, "route", "add", "default", "dev", "eth0"]).await?;
        ip_cmd(&["link", "set", &self.host_veth, "up"]).await?;
        // The /32 is more specific than any route of the host's own networks, so the pod IP
        // is reached here even when it lies in a range the host is attached to.
        ip_cmd(&["route", "add", &ip_only, "dev", &self.host_veth]).await
    }

    /// Removes the namespace (which destroys both veth ends, and the route with them), and the
    /// host veth should it outlive the namespace. Kills what still runs inside first. Errors
    /// are logged, not returned: a removal must go as far as it can.
    pub async fn remove(&self) {
        remove_namespace(&self.namespace).await;
        if link_exists(&self.host_veth).await
            && let Err(e) = ip_cmd(&["link", "del", &self.host_veth]).await
        {
            tracing::warn!(veth = %self.host_veth, "removing: {e}");
        }
        let _ = std::fs::remove_file(owner_file(&self.namespace));
    }
}

/// An `unreachable` route for the whole pod range: a pod IP whose namespace is not there (yet,
/// or any more) then fails at once on this machine instead of leaving it by the default route.
/// Each namespace's /32 route is more specific and wins. Idempotent.
pub async fn guard_pod_range() -> Result<()> {
    ip_cmd(&["route", "replace", "unreachable", POD_CIDR]).await
}

/// Whether the pod range's `unreachable` route is in place.
pub async fn pod_range_guarded() -> bool {
    ip_output(&["route", "show", "type", "unreachable"])
        .await
        .is_ok_and(|text| {
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(POD_CIDR))
        })
}

/// Everything with [`PREFIX`] that no live runner owns: namespaces (and the processes in
/// them), host veths. Returns what was removed.
pub async fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    let mut kept_veths = Vec::new();
    for ns in namespaces().await {
        if owner_alive(&ns) {
            if let Some(uid) = ns.strip_prefix(&format!("{PREFIX}-")) {
                kept_veths.push(PodNetwork::for_pod(uid, Ipv4Addr::UNSPECIFIED).host_veth);
            }
            continue;
        }
        remove_namespace(&ns).await;
        let _ = std::fs::remove_file(owner_file(&ns));
        removed.push(format!("netns {ns}"));
    }
    for veth in host_veths().await {
        if kept_veths.contains(&veth) {
            continue;
        }
        if ip_cmd(&["link", "del", &veth]).await.is_ok() {
            removed.push(format!("veth {veth}"));
        }
    }
    // The guard is shared by every runner on the machine: it goes with the last one.
    if !other_runner_alive()
        && pod_range_guarded().await
        && ip_cmd(&["route", "del", "unreachable", POD_CIDR])
            .await
            .is_ok()
    {
        removed.push(format!("route unreachable {POD_CIDR}"));
    }
    removed
}

/// Whether a `sluice-pod-runner` other than this process runs.
fn other_runner_alive() -> bool {
    let own = std::process::id().to_string();
    std::fs::read_dir("/proc").is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.bytes().all(|b| b.is_ascii_digit()) && name != own && is_runner(&entry.path())
        })
    })
}

/// Whether the process at `/proc/<pid>` runs a `sluice-pod-runner` (of any build: clusters of
/// other worktrees may share the machine).
fn is_runner(proc_dir: &Path) -> bool {
    std::fs::read_link(proc_dir.join("exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(RUNNER_EXECUTABLE))
    })
}

/// The namespaces with [`PREFIX`] (`ip netns list` prints `name (id: N)` or `name`).
pub async fn namespaces() -> Vec<String> {
    let text = ip_output(&["netns", "list"]).await.unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&format!("{PREFIX}-")))
        .map(str::to_owned)
        .collect()
}

/// The host's links with [`PREFIX`] (`ip -o link` prints `N: name@peer: <...> ...`).
pub async fn host_veths() -> Vec<String> {
    let text = ip_output(&["-o", "link", "show"]).await.unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| name.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Host routes through a link with [`PREFIX`].
pub async fn host_routes() -> Vec<String> {
    let text = ip_output(&["route", "show"]).await.unwrap_or_default();
    text.lines()
        .filter(|line| line.contains(&format!("dev {PREFIX}")))
        .map(str::to_owned)
        .collect()
}

/// The pids running in namespace `ns`.
pub async fn pids_in(ns: &str) -> Vec<u32> {
    let text = ip_output(&["netns", "pids", ns]).await.unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

async fn remove_namespace(ns: &str) {
    for pid in pids_in(ns).await {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if namespaces().await.iter().any(|n| n == ns)
        && let Err(e) = ip_cmd(&["netns", "del", ns]).await
    {
        tracing::warn!(netns = %ns, "removing: {e}");
    }
}

/// A pod IP that is one of the host's own addresses, or the gateway of one of its routes,
/// would cut the host off its network once routed into a namespace: refuse it.
async fn refuse_host_address(ip: Ipv4Addr) -> Result<()> {
    let addresses = ip_output(&["-o", "-4", "addr", "show"]).await?;
    let routes = ip_output(&["-4", "route", "show", "table", "all"]).await?;
    let ip_text = ip.to_string();
    let is_host_address = addresses.lines().any(|line| {
        line.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next())
            == Some(ip_text.as_str())
    });
    let is_gateway = routes.lines().any(|line| {
        line.split_whitespace().skip_while(|w| *w != "via").nth(1) == Some(ip_text.as_str())
    });
    if is_host_address || is_gateway || ip.is_loopback() || ip.is_unspecified() {
        return Err(HarnessError::Invalid {
            what: format!("pod IP {ip}"),
            detail: "is an address or gateway of this host; it cannot be given to a pod".into(),
        });
    }
    Ok(())
}

fn owner_file(ns: &str) -> PathBuf {
    Path::new(OWNERS).join(ns)
}

fn record_owner(ns: &str) -> Result<()> {
    std::fs::create_dir_all(OWNERS).map_err(HarnessError::io(format!("creating {OWNERS}")))?;
    let path = owner_file(ns);
    std::fs::write(&path, std::process::id().to_string())
        .map_err(HarnessError::io(format!("writing {}", path.display())))
}

/// Whether the runner that made `ns` still runs: that pid runs a `sluice-pod-runner` (of any
/// build: clusters of other worktrees may share the machine; a pid reused by another program
/// does not count).
fn owner_alive(ns: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(owner_file(ns)) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        return true;
    }
    is_runner(Path::new(&format!("/proc/{pid}")))
}

async fn link_exists(name: &str) -> bool {
    ip_cmd(&["link", "show", name]).await.is_ok()
}

async fn ip_cmd(args: &[&str]) -> Result<()> {
    ip_output(args).await.map(|_| ())
}

async fn ip_output(args: &[&str]) -> Result<String> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(HarnessError::io(format!("running {command}")))?;
    if !output.status.success() {
        return Err(HarnessError::Command {
            command,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_interface_limit_and_carry_the_prefix() {
        let net = PodNetwork::for_pod(
            "0f3e1c2a-9b8d-4e7f-a6b5-c4d3e2f1a0b9",
            Ipv4Addr::new(198, 18, 0, 130),
        );
        assert_eq!(net.namespace, "sluice-0f3e1c2a-9b8d-4e7f-a6b5-c4d3e2f1a0b9");
        assert_eq!(net.host_veth, "sluice0f3e1c2a9");
        assert!(net.host_veth.len() <= IFNAME_MAX);
    }
}
