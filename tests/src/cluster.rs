//! The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! kwok, started on free 127.0.0.1 ports in a directory of their own.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::binaries::Binaries;
use crate::pki::{CertFiles, Pki};
use crate::ports::free_ports;
use crate::process::{ManagedProcess, WhenWeDie, stop_pid};
use crate::process_record::{self, RecordedProcess};
use crate::{HarnessError, NODE_IP, POD_CIDR, Result, SERVICE_CIDR, pods, wait};

/// How long each part may take to come up before start-up gives up.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// The annotation kwok selects the nodes it simulates by.
const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// The cluster-admin kubeconfig, in the cluster's directory.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
/// The pod runner's executable, among the workspace's cargo-built binaries.
const POD_RUNNER: &str = "sluice-pod-runner";

/// ServiceAccounts of this namespace are audited: Sluice's controller runs as one there, as
/// `deploy/` installs it, when a test proves which rights it uses.
pub const AUDITED_NAMESPACE: &str = "sluice-system";

/// Records who did what (Metadata level: verb, resource, response code) for ServiceAccounts of
/// [`AUDITED_NAMESPACE`] only; the control plane's own traffic would drown it.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [\"system:serviceaccounts:sluice-system\"]
- level: None
";

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where certificates, kubeconfigs, logs and etcd's data go. `None`: a fresh temporary
    /// directory (on tmpfs where there is one), removed when the cluster stops.
    pub dir: Option<PathBuf>,
    /// How many kwok nodes to create.
    pub nodes: usize,
    /// How long kwok waits before marking a scheduled pod Running and Ready, at least ...
    pub pod_ready_delay: Duration,
    /// ... and at most this much longer, drawn at random per pod.
    pub pod_ready_jitter: Duration,
    /// Start the pod runner ([`crate::pods`]): pods whose image its table maps run as real
    /// processes on their pod IPs; all others stay kwok's. On by default: with no such pod it
    /// costs one watch, and it needs root (for network namespaces), as the harness has.
    pub run_pods: bool,
    /// Start every process so that it outlives us, for [`ControlPlane::detach`]
    /// (`sluice-cluster up`). Otherwise (the default) the kernel kills them when we die without
    /// stopping them, even by `kill -9`.
    pub detachable: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            dir: None,
            nodes: 3,
            pod_ready_delay: Duration::from_millis(1000),
            pod_ready_jitter: Duration::from_millis(1000),
            run_pods: true,
            detachable: false,
        }
    }
}

impl ClusterOptions {
    /// Defaults, with the readiness delay taken from `SLUICE_POD_READY_DELAY` (humantime-free:
    /// milliseconds) when a test run wants another.
    pub fn from_env() -> Result<Self> {
        let mut options = Self::default();
        if let Ok(ms) = std::env::var("SLUICE_POD_READY_DELAY_MS") {
            let ms: u64 = ms.parse().map_err(|e| HarnessError::Invalid {
                what: "SLUICE_POD_READY_DELAY_MS".into(),
                detail: format!("{ms:?} is not a number of milliseconds: {e}"),
            })?;
            options.pod_ready_delay = Duration::from_millis(ms);
            options.pod_ready_jitter = Duration::from_millis(ms);
        }
        Ok(options)
    }
}

/// A running control plane. Stop it with [`ControlPlane::stop`]; dropping it kills the processes
/// as a last resort.
pub struct ControlPlane {
    dir: PathBuf,
    /// Set when the directory is temporary; taken by [`ControlPlane::stop`] to remove it.
    temp: Mutex<Option<tempfile::TempDir>>,
    pki: Pki,
    api_server_url: String,
    /// etcd's client URL, for tests that must store what the apiserver would refuse.
    etcd_url: String,
    admin_kubeconfig: PathBuf,
    binaries: Binaries,
    /// In start order; stopped in reverse.
    processes: Mutex<Vec<(PathBuf, ManagedProcess)>>,
    detachable: bool,
    started_in: Duration,
    /// The pod address blocks this cluster's nodes hand out, claimed for as long as it lives.
    pod_blocks: pods::range::PodBlocks,
}

impl ControlPlane {
    pub async fn start(options: ClusterOptions) -> Result<Self> {
        let started = Instant::now();
        let binaries = Binaries::locate()?;
        let (dir, temp) = match &options.dir {
            Some(dir) => {
                let running = process_record::recorded_processes(dir)
                    .map(|recorded| recorded.iter().any(RecordedProcess::is_running))
                    .unwrap_or(false);
                if running {
                    return Err(HarnessError::Invalid {
                        what: dir.display().to_string(),
                        detail: "a cluster is already running there; stop it first \
                                 (sluice-cluster down)"
                            .into(),
                    });
                }
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .map_err(HarnessError::io(format!("clearing {}", dir.display())))?;
                }
                std::fs::create_dir_all(dir)
                    .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("sluice-cluster-")
                    .tempdir_in(fast_temp_root())
                    .map_err(HarnessError::io("creating a temporary directory"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(HarnessError::io("creating the log directory"))?;
        let pki = Pki::create(&dir.join("pki"))?;

        let [
            etcd_client,
            etcd_peer,
            api_port,
            kcm_port,
            scheduler_port,
            kwok_port,
        ] = free_ports::<6>()?;
        let api_server_url = format!("https://127.0.0.1:{api_port}");
        let mut cluster = Self {
            admin_kubeconfig: dir.join(ADMIN_KUBECONFIG),
            dir,
            temp: Mutex::new(temp),
            pki,
            api_server_url,
            etcd_url: format!("http://127.0.0.1:{etcd_client}"),
            binaries,
            processes: Mutex::new(Vec::new()),
            detachable: options.detachable,
            started_in: Duration::ZERO,
            pod_blocks: pods::range::PodBlocks::claim(options.nodes)?,
        };

        cluster.spawn(
            "etcd",
            vec![
                "--name=default".into(),
                format!("--data-dir={}", cluster.dir.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;

        let serving = cluster.pki.serving_cert("kube-apiserver")?;
        let service_account = cluster.pki.service_account_key()?;
        let audit_policy = cluster.dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)
            .map_err(HarnessError::io("writing the audit policy"))?;
        let ca = cluster.pki.ca_cert.display().to_string();
        cluster.spawn(
            "kube-apiserver",
            vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                "--bind-address=127.0.0.1".into(),
                // Without a default route the apiserver cannot pick an address to advertise.
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", serving.cert.display()),
                format!("--tls-private-key-file={}", serving.key.display()),
                format!("--client-ca-file={ca}"),
                "--authorization-mode=RBAC".into(),
                // As hardened clusters run: setting blockOwnerDeletion on an owner reference
                // needs `update` on the owner's finalizers, which the controller's ClusterRole
                // must then grant.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                // Endpoints of the `kubernetes` Service would name 127.0.0.1, which EndpointSlice
                // validation rejects; no test needs them.
                "--endpoint-reconciler-type=none".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!(
                    "--service-account-key-file={}",
                    service_account.cert.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    service_account.key.display()
                ),
                "--allow-privileged=true".into(),
                format!("--audit-policy-file={}", audit_policy.display()),
                format!("--audit-log-path={}", cluster.audit_log().display()),
                "--audit-log-format=json".into(),
                // Written as requests complete, so a test reads every request it made.
                "--audit-log-mode=blocking".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        let admin = cluster
            .pki
            .client_cert("sluice-admin", &["system:masters"])?;
        cluster.write_cert_kubeconfig(&cluster.admin_kubeconfig, &admin)?;
        let client = cluster.admin_client().await?;
        cluster
            .wait_healthy("kube-apiserver to be ready", &client)
            .await?;

        let kcm = cluster
            .pki
            .client_cert("system:kube-controller-manager", &[])?;
        let kcm_kubeconfig = cluster.dir.join("kube-controller-manager.kubeconfig");
        cluster.write_cert_kubeconfig(&kcm_kubeconfig, &kcm)?;
        let kcm_kubeconfig = kcm_kubeconfig.display().to_string();
        cluster.spawn(
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={kcm_kubeconfig}"),
                format!("--authentication-kubeconfig={kcm_kubeconfig}"),
                format!("--authorization-kubeconfig={kcm_kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--leader-elect=false".into(),
                // Each controller acts as its own ServiceAccount, as on kubeadm clusters, so the
                // built-in RBAC roles apply.
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    service_account.key.display()
                ),
                format!("--root-ca-file={ca}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
                "--concurrent-replicaset-syncs=10".into(),
                "--concurrent-service-endpoint-syncs=10".into(),
                // kwok's nodes never fail, but a saturated apiserver (10,000 Rollouts' pods on two
                // cores) can delay their lease renewals past the default 50 s; the node
                // lifecycle controller then marks every pod on the node Ready=False, and kwok's
                // pod-ready stage (which only takes Pending pods) never makes them Ready again.
                "--node-monitor-grace-period=15m".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;

        let scheduler = cluster.pki.client_cert("system:kube-scheduler", &[])?;
        let scheduler_kubeconfig = cluster.dir.join("kube-scheduler.kubeconfig");
        cluster.write_cert_kubeconfig(&scheduler_kubeconfig, &scheduler)?;
        let scheduler_kubeconfig = scheduler_kubeconfig.display().to_string();
        cluster.spawn(
            "kube-scheduler",
            vec![
                format!("--kubeconfig={scheduler_kubeconfig}"),
                format!("--authentication-kubeconfig={scheduler_kubeconfig}"),
                format!("--authorization-kubeconfig={scheduler_kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={scheduler_port}"),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;

        // kwok edits the status of every simulated node and pod, so it acts as cluster admin.
        let kwok = cluster.pki.client_cert("kwok", &["system:masters"])?;
        let kwok_kubeconfig = cluster.dir.join("kwok.kubeconfig");
        cluster.write_cert_kubeconfig(&kwok_kubeconfig, &kwok)?;
        let stages = cluster.dir.join("kwok-stages.yaml");
        std::fs::write(&stages, kwok_stages(&cluster.binaries, &options)?)
            .map_err(HarnessError::io("writing kwok's stages"))?;
        cluster.spawn(
            "kwok",
            vec![
                format!("--kubeconfig={}", kwok_kubeconfig.display()),
                format!("--config={}", stages.display()),
                format!(
                    "--manage-nodes-with-annotation-selector={}={}",
                    KWOK_NODE_ANNOTATION.0, KWOK_NODE_ANNOTATION.1
                ),
                format!("--cidr={POD_CIDR}"),
                format!("--node-ip={NODE_IP}"),
                format!("--server-address=127.0.0.1:{kwok_port}"),
                "--node-lease-duration-seconds=40".into(),
            ],
        )?;
        if options.run_pods {
            cluster.spawn_pod_runner()?;
        }

        cluster.create_nodes(&client, options.nodes).await?;
        cluster.wait_nodes_ready(&client, options.nodes).await?;
        cluster.wait_default_service_account(&client).await?;
        cluster.started_in = started.elapsed();
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig with cluster-admin rights (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    pub fn api_server_url(&self) -> &str {
        &self.api_server_url
    }

    /// etcd's client URL (plain HTTP on loopback). Writing there bypasses the apiserver's
    /// validation: tests use it to store an object as an older, looser schema would have let it
    /// be stored.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    pub async fn admin_client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// A client authenticated by a fresh client certificate for `user` in `groups`; it has no
    /// rights beyond what RBAC grants that user or those groups.
    pub async fn user_client(&self, user: &str, groups: &[&str]) -> Result<Client> {
        let cert = self.pki.client_cert(user, groups)?;
        let path = self
            .dir
            .join(format!("user-{}.kubeconfig", user.replace(':', "-")));
        self.write_cert_kubeconfig(&path, &cert)?;
        client_from_kubeconfig(&path).await
    }

    /// A fresh client certificate for `user` in `groups`, for a process that reads the apiserver
    /// under its own name (Prometheus' service discovery, for one).
    pub fn user_cert(&self, user: &str, groups: &[&str]) -> Result<CertFiles> {
        self.pki.client_cert(user, groups)
    }

    /// A client that presents `token` as a Bearer token (for ServiceAccount tokens).
    pub async fn token_client(&self, name: &str, token: &str) -> Result<Client> {
        client_from_kubeconfig(&self.token_kubeconfig(name, token)?).await
    }

    /// A kubeconfig that presents `token` as a Bearer token, for a process to run as that
    /// identity.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("token-{name}.kubeconfig"));
        self.write_kubeconfig(&path, json!({"token": token}))?;
        Ok(path)
    }

    /// The apiserver's audit log (JSON lines): every request of a ServiceAccount of
    /// [`AUDITED_NAMESPACE`], at Metadata level.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs").join("audit.log")
    }

    /// Stops every process, newest first. A temporary directory is removed, unless
    /// `keep_files` (say, to read the logs after a failure), when its path is returned.
    pub async fn stop(&self, keep_files: bool) -> Option<PathBuf> {
        let processes = std::mem::take(&mut *lock(&self.processes));
        for (_, mut process) in processes.into_iter().rev() {
            process.stop().await;
        }
        // The runner removes its networks as it stops; this catches a runner that could not.
        pods::netns::sweep().await;
        let temp = lock(&self.temp).take()?;
        if keep_files { Some(temp.keep()) } else { None }
    }

    /// The pid of the process started as `name` (`etcd`, `kube-apiserver`, `kwok`,
    /// `pod-runner`, ...), while it is ours.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        lock(&self.processes)
            .iter()
            .find(|(_, p)| p.name() == name)
            .map(|(_, p)| p.pid())
    }

    /// Leaves the processes running, for [`stop_detached`] to stop by the record in the
    /// cluster's directory. Only for a cluster started [`ClusterOptions::detachable`]: any other
    /// one's processes die with us.
    pub fn detach(self) -> Result<PathBuf> {
        if !self.detachable {
            return Err(HarnessError::Invalid {
                what: "detaching the cluster".into(),
                detail: "it was not started detachable: its processes die with us".into(),
            });
        }
        if let Some(temp) = lock(&self.temp).take() {
            // A detached cluster must outlive us, so its directory is kept.
            let _ = temp.keep();
        }
        for (_, process) in std::mem::take(&mut *lock(&self.processes)) {
            process.detach();
        }
        Ok(self.dir.clone())
    }

    fn spawn(&self, name: &str, args: Vec<String>) -> Result<()> {
        self.spawn_program(name, self.binaries.path(name), args, Signal::SIGKILL)
    }

    /// Starts `program` and records it before anything else can happen (see
    /// [`process_record`]). `on_our_death` is what it gets when we die without stopping it,
    /// unless the cluster is detachable.
    fn spawn_program(
        &self,
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        on_our_death: Signal,
    ) -> Result<()> {
        let when_we_die = if self.detachable {
            WhenWeDie::KeepRunning
        } else {
            WhenWeDie::Signal(on_our_death)
        };
        let process =
            ManagedProcess::spawn_with(name, &program, &args, &self.dir.join("logs"), when_we_die)?;
        let mut processes = lock(&self.processes);
        processes.push((program, process));
        let record: Vec<RecordedProcess> = processes
            .iter()
            .map(|(program, p)| RecordedProcess {
                name: p.name().to_owned(),
                pid: p.pid(),
                start_ticks: p.start_ticks(),
                program: program.clone(),
            })
            .collect();
        process_record::write(&self.dir, &record)
    }

    /// The pod runner, as cluster admin (it patches pod status and deletes pods, as kubelet
    /// does for its node). It finds its programs beside itself, in the target directory.
    fn spawn_pod_runner(&self) -> Result<()> {
        let bin_dir = pods::cargo_bin_dir()?;
        let program = bin_dir.join(POD_RUNNER);
        if !program.is_file() {
            return Err(HarnessError::MissingBinary {
                binary: POD_RUNNER.into(),
                dir: bin_dir,
                hint: "build the workspace's binaries first: cargo build --workspace --bins".into(),
            });
        }
        let cert = self
            .pki
            .client_cert("sluice-pod-runner", &["system:masters"])?;
        let kubeconfig = self.dir.join("pod-runner.kubeconfig");
        self.write_cert_kubeconfig(&kubeconfig, &cert)?;
        self.spawn_program(
            "pod-runner",
            program,
            vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--logs={}", self.dir.join("logs").display()),
                format!("--programs={}", bin_dir.display()),
                format!("--pod-blocks={}", self.pod_blocks.to_arg()),
            ],
            // So that it stops its pods' processes and removes their networks.
            Signal::SIGTERM,
        )
    }

    /// Fails with the log tail of any process that has exited.
    fn ensure_running(&self) -> Result<()> {
        lock(&self.processes)
            .iter()
            .try_for_each(|(_, p)| p.ensure_running())
    }

    fn write_cert_kubeconfig(&self, path: &Path, cert: &CertFiles) -> Result<()> {
        self.write_kubeconfig(
            path,
            json!({"client-certificate": cert.cert, "client-key": cert.key}),
        )
    }

    fn write_kubeconfig(&self, path: &Path, user: serde_json::Value) -> Result<()> {
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sluice-local", "cluster": {
                "server": self.api_server_url,
                "certificate-authority": self.pki.ca_cert,
            }}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "sluice-local", "context": {"cluster": "sluice-local", "user": "user"}}],
            "current-context": "sluice-local",
        });
        let text =
            serde_json::to_string_pretty(&kubeconfig).map_err(|e| HarnessError::Invalid {
                what: "kubeconfig".into(),
                detail: e.to_string(),
            })?;
        std::fs::write(path, text).map_err(HarnessError::io(format!("writing {}", path.display())))
    }

    async fn wait_healthy(&self, what: &str, client: &Client) -> Result<()> {
        wait::until(what, START_TIMEOUT, || async {
            self.ensure_running()?;
            let request = http_get("/readyz")?;
            Ok(client.request_text(request).await.ok().map(|_| ()))
        })
        .await
    }

    async fn create_nodes(&self, client: &Client, count: usize) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..count {
            let name = format!("kwok-node-{i}");
            let pod_cidr = self
                .pod_blocks
                .node_cidr(i)
                .ok_or_else(|| HarnessError::Invalid {
                    what: format!("node {i} of {count}"),
                    detail: format!("this cluster claimed no block of {POD_CIDR} for it"),
                })?;
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION.0: KWOK_NODE_ANNOTATION.1},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                // kwok hands out this node's pod IPs from here (before its --cidr).
                "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }))
            .map_err(|e| HarnessError::Invalid {
                what: "node manifest".into(),
                detail: e.to_string(),
            })?;
            nodes.create(&PostParams::default(), &node).await?;
        }
        Ok(())
    }

    async fn wait_nodes_ready(&self, client: &Client, count: usize) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        wait::until("kwok nodes to be Ready", START_TIMEOUT, || async {
            self.ensure_running()?;
            let list = nodes.list(&ListParams::default()).await?;
            let ready = list.items.iter().filter(|n| node_is_ready(n)).count();
            Ok((ready >= count).then_some(()))
        })
        .await
    }

    /// The ServiceAccount controller has run: Pods can be created in a namespace.
    async fn wait_default_service_account(&self, client: &Client) -> Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        wait::until(
            "kube-controller-manager to create the default ServiceAccount",
            START_TIMEOUT,
            || async {
                self.ensure_running()?;
                Ok(accounts.get_opt("default").await?.map(|_| ()))
            },
        )
        .await
    }
}

/// A poisoned lock only means another thread panicked mid-test; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stops a cluster that `sluice-cluster up` left running in `dir`, and removes the directory.
/// Every process it recorded is stopped, newest (the pod runner) first, even when `up` was
/// killed before it finished starting; then pod networks no live runner owns are removed.
pub async fn stop_detached(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(HarnessError::Invalid {
            what: dir.display().to_string(),
            detail: "no such directory (is a cluster running there?)".into(),
        });
    }
    // `up` may have been killed before it started anything: then there is nothing to stop.
    let processes = if process_record::exists(dir) {
        process_record::recorded_processes(dir)?
    } else {
        Vec::new()
    };
    for process in processes.iter().rev() {
        stop_pid(process.pid, process.start_ticks).await;
    }
    pods::netns::sweep().await;
    std::fs::remove_dir_all(dir).map_err(HarnessError::io(format!("removing {}", dir.display())))
}

/// The directory a detached cluster uses when none is given: on tmpfs where there is one.
pub fn default_detached_dir() -> PathBuf {
    fast_temp_root().join("sluice-cluster")
}

/// tmpfs keeps etcd's writes off the disk.
fn fast_temp_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn http_get(path: &str) -> Result<http::Request<Vec<u8>>> {
    http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| HarnessError::Invalid {
            what: format!("GET {path}"),
            detail: e.to_string(),
        })
}

pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// kwok's default stages, with a readiness delay added to pod-ready.
fn kwok_stages(binaries: &Binaries, options: &ClusterOptions) -> Result<String> {
    let dir = binaries.kwok_stages_dir();
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map_err(HarnessError::io(format!("reading {}", path.display())))
    };
    let delay_ms = options.pod_ready_delay.as_millis();
    let latest_ms = delay_ms + options.pod_ready_jitter.as_millis();
    let pod_ready = with_delay(&read("pod-ready.yaml")?, delay_ms, latest_ms)?;
    let mut pod_stages = vec![
        pod_ready,
        read("pod-complete.yaml")?,
        read("pod-delete.yaml")?,
    ];
    if options.run_pods {
        // Pods the runner owns: kwok gives them an IP and nothing else; the runner reports
        // their readiness and deletes them once their process has exited.
        for stage in &mut pod_stages {
            *stage = pods::kwok_stages::exclude_runner_pods(stage).ok_or_else(|| {
                HarnessError::Invalid {
                    what: "a kwok pod stage".into(),
                    detail: "has no `selector.matchExpressions`".into(),
                }
            })?;
        }
        pod_stages.push(pods::kwok_stages::runner_pod_start());
    }
    let mut documents = vec![
        read("node-initialize.yaml")?,
        read("node-heartbeat-with-lease.yaml")?,
    ];
    documents.extend(pod_stages);
    Ok(documents.join("\n---\n"))
}

/// Inserts a `delay` into a kwok Stage's spec. `jitterDurationMilliseconds` is, in kwok's terms,
/// the latest the stage may run; each pod draws its delay between the two.
fn with_delay(stage: &str, delay_ms: u128, latest_ms: u128) -> Result<String> {
    let spec = "\nspec:\n";
    let at = stage.find(spec).ok_or_else(|| HarnessError::Invalid {
        what: "kwok pod-ready stage".into(),
        detail: "has no top-level `spec:`".into(),
    })?;
    let (head, tail) = stage.split_at(at + spec.len());
    Ok(format!(
        "{head}  delay:\n    durationMilliseconds: {delay_ms}\n    jitterDurationMilliseconds: {latest_ms}\n{tail}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_goes_into_the_stage_spec() {
        let stage = "kind: Stage\nspec:\n  resourceRef:\n    kind: Pod\n";
        let delayed = with_delay(stage, 1000, 2500).unwrap();
        assert_eq!(
            delayed,
            "kind: Stage\nspec:\n  delay:\n    durationMilliseconds: 1000\n    jitterDurationMilliseconds: 2500\n  resourceRef:\n    kind: Pod\n"
        );
    }

    #[test]
    fn a_stage_without_spec_is_an_error() {
        assert!(with_delay("kind: Stage\n", 1, 2).is_err());
    }
}
