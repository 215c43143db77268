//! Traefik (built by tests/cluster/build.sh) in front of the pods: a real proxy that routes real
//! requests by what Sluice writes. One process serves both routers Sluice drives:
//! - its `kubernetesGateway` provider, a Gateway API implementation: HTTPRoutes attached to the
//!   Gateway [`GATEWAY`] in [`NAMESPACE`] (GatewayClass [`GATEWAY_CLASS`]), whose one listener
//!   is Traefik's `web` entrypoint;
//! - its `kubernetesIngressNGINX` provider, which reads ingress-nginx's annotations (canary,
//!   canary-by-header, canary-weight, ...): Ingresses of the IngressClass [`INGRESS_CLASS`].
//!
//! It listens on 127.0.0.1 only and watches the local apiserver as the ServiceAccount
//! [`NAMESPACE`]/[`SERVICE_ACCOUNT`], with the rights [`cluster_role`] grants; it connects to the
//! pod IPs of the Services the routes name, which are those of the network namespaces the pod
//! runner made.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::cluster::ControlPlane;
use crate::ports::free_ports;
use crate::process::ManagedProcess;
use crate::{HarnessError, Result, tokens, wait};

/// Traefik's `providersThrottleDuration`: after a provider's change it waits this long for more
/// before applying a new configuration (its default is 2 s). Every route change a test makes
/// reaches the data plane no sooner than this.
pub const PROVIDERS_THROTTLE: Duration = Duration::from_millis(200);
/// Where Traefik's identity and its Gateway live.
pub const NAMESPACE: &str = "sluice-traefik";
/// Traefik's ServiceAccount, in [`NAMESPACE`].
pub const SERVICE_ACCOUNT: &str = "traefik";
/// The GatewayClass whose Gateways Traefik implements.
pub const GATEWAY_CLASS: &str = "sluice-traefik";
/// The Gateway in [`NAMESPACE`] that HTTPRoutes of any namespace attach to (their `parentRefs`
/// name it with its namespace): one HTTP listener on Traefik's `web` entrypoint.
pub const GATEWAY: &str = "traefik";
/// What Traefik's Gateway API provider answers to in `GatewayClass.spec.controllerName`.
pub const GATEWAY_CONTROLLER: &str = "traefik.io/gateway-controller";
/// The IngressClass whose Ingresses Traefik's ingress-nginx provider serves.
pub const INGRESS_CLASS: &str = "sluice-nginx";
/// ingress-nginx's controller name, which the IngressClass names as ingress-nginx's would.
pub const INGRESS_CONTROLLER: &str = "k8s.io/ingress-nginx";
/// Host names of the routes the harness makes to see each provider's configuration reach the
/// entrypoint. Their backend is a Service that selects no pod, so Traefik never connects
/// anywhere for them and answers 503 (a missing Service would be logged as an error at every
/// reconfiguration).
const GATEWAY_SENTINEL_HOST: &str = "gateway.sentinel.test";
const INGRESS_SENTINEL_HOST: &str = "ingress.sentinel.test";
const FIELD_MANAGER: &str = "sluice-harness-traefik";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longer than any test run: Traefik does not re-read its token file.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A running Traefik. Stop it with [`Traefik::stop`]; dropping it kills the process.
pub struct Traefik {
    web: SocketAddr,
    internal: SocketAddr,
    log: PathBuf,
    process: Mutex<Option<ManagedProcess>>,
}

impl Traefik {
    /// Installs what Traefik needs in `cluster` (the Gateway API CRDs, its ServiceAccount and
    /// RBAC, the GatewayClass, Gateway and IngressClass), starts it on free 127.0.0.1 ports with
    /// its log in the cluster's `logs/traefik.log`, and returns once it answers its ping and both
    /// providers' configurations have reached its `web` entrypoint.
    pub async fn start(cluster: &ControlPlane) -> Result<Self> {
        let program = cluster.binaries().traefik()?;
        let client = cluster.admin_client().await?;
        crate::crds::install_gateway_api(&client, FIELD_MANAGER).await?;
        let [web_port, internal_port] = free_ports::<2>()?;
        let web = SocketAddr::from(([127, 0, 0, 1], web_port));
        let internal = SocketAddr::from(([127, 0, 0, 1], internal_port));
        for object in identity().into_iter().chain(routing_objects(web_port)) {
            apply(&client, object).await?;
        }

        let dir = cluster.dir().join("traefik");
        std::fs::create_dir_all(&dir)
            .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
        let token =
            tokens::request_token(&client, NAMESPACE, SERVICE_ACCOUNT, TOKEN_LIFETIME).await?;
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).map_err(HarnessError::io(format!(
            "writing {}",
            token_file.display()
        )))?;
        let config_file = dir.join("traefik.yml");
        let config = static_config(
            web,
            internal,
            cluster.api_server_url(),
            cluster.ca_cert(),
            &token_file,
        );
        // JSON is YAML, and serde_json quotes the paths safely.
        std::fs::write(&config_file, config.to_string()).map_err(HarnessError::io(format!(
            "writing {}",
            config_file.display()
        )))?;

        let logs = cluster.dir().join("logs");
        let process = ManagedProcess::spawn(
            "traefik",
            &program,
            &[format!("--configFile={}", config_file.display())],
            &logs,
        )?;
        let traefik = Self {
            web,
            internal,
            log: process.log().to_path_buf(),
            process: Mutex::new(Some(process)),
        };
        traefik.wait_ready().await?;
        Ok(traefik)
    }

    /// Traefik's `web` entrypoint, the Gateway's listener and the Ingresses' HTTP port:
    /// `127.0.0.1:<port>`. Requests name the route they mean in their Host header.
    pub fn web_addr(&self) -> SocketAddr {
        self.web
    }

    /// Traefik's own API (`/api/...`) and `/ping`: `http://127.0.0.1:<port>`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.internal)
    }

    /// `parentRefs` entry of an HTTPRoute served through Traefik.
    pub fn gateway_parent_ref() -> Value {
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": NAMESPACE, "name": GATEWAY})
    }

    /// An HTTPRoute `name` on the Gateway for `host`: every path to `stable` at weight 100 and
    /// `canary` beside it at 0, both on `port` — what Sluice's Gateway API router is given to
    /// move the weight of.
    pub fn canary_http_route(
        name: &str,
        host: &str,
        stable: &str,
        canary: &str,
        port: u16,
    ) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [Self::gateway_parent_ref()],
                "hostnames": [host],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": stable, "port": port, "weight": 100},
                        {"name": canary, "port": port, "weight": 0},
                    ],
                }],
            },
        })
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails with the log tail if Traefik has exited.
    pub fn ensure_running(&self) -> Result<()> {
        match lock(&self.process).as_ref() {
            Some(process) => process.ensure_running(),
            None => Ok(()),
        }
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(&self) {
        let process = lock(&self.process).take();
        if let Some(mut process) = process {
            process.stop().await;
        }
    }

    /// Traefik answers `/ping`, the Gateway API provider has programmed the Gateway, and a
    /// route of each provider answers at the entrypoint: with 5xx, as routes whose backend does
    /// not exist do, not with the 404 of no route at all.
    async fn wait_ready(&self) -> Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let ping = format!("{}/ping", self.api_url());
        wait::until("Traefik to answer /ping", START_TIMEOUT, || async {
            self.ensure_running()?;
            let answer = http.get(&ping).send().await;
            Ok::<_, HarnessError>(answer.ok().filter(|a| a.status().is_success()).map(|_| ()))
        })
        .await?;
        for host in [GATEWAY_SENTINEL_HOST, INGRESS_SENTINEL_HOST] {
            let url = format!("http://{}/", self.web);
            wait::until(
                &format!("Traefik to route {host} (its provider synced)"),
                START_TIMEOUT,
                || async {
                    self.ensure_running()?;
                    let answer = http
                        .get(&url)
                        .header(reqwest::header::HOST, host)
                        .send()
                        .await;
                    Ok::<_, HarnessError>(
                        answer
                            .ok()
                            .filter(|a| a.status().is_server_error())
                            .map(|_| ()),
                    )
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// A poisoned lock only means another thread panicked mid-test; the process is still ours.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Traefik's static configuration. Both providers watch the apiserver at `api_server` as the
/// ServiceAccount whose token is in `token_file`; the Gateway API provider maps the Gateway's
/// listener to the entrypoint with the same port, `web`.
fn static_config(
    web: SocketAddr,
    internal: SocketAddr,
    api_server: &str,
    ca: &Path,
    token_file: &Path,
) -> Value {
    let throttle = format!("{}ms", PROVIDERS_THROTTLE.as_millis());
    json!({
        // Nothing but the apiserver and the pods: no version check, no usage report.
        "global": {"checkNewVersion": false, "sendAnonymousUsage": false},
        "entryPoints": {
            "web": {"address": web.to_string()},
            "traefik": {"address": internal.to_string()},
        },
        "ping": {"entryPoint": "traefik"},
        "api": {"insecure": true, "dashboard": false},
        "log": {"level": "INFO", "noColor": true},
        "providers": {
            "providersThrottleDuration": throttle,
            "kubernetesGateway": {
                "endpoint": api_server,
                "token": token_file,
                "certAuthFilePath": ca,
                "statusAddress": {"ip": "127.0.0.1"},
            },
            "kubernetesIngressNGINX": {
                "endpoint": api_server,
                "token": token_file,
                "certAuthFilePath": ca,
                "ingressClass": INGRESS_CLASS,
                "ingressClassByName": true,
                "controllerClass": INGRESS_CONTROLLER,
                "httpEntryPoint": "web",
                "publishStatusAddress": ["127.0.0.1"],
            },
        },
    })
}

/// What Traefik's two providers read and write, cluster-wide (the tests' namespaces come and
/// go): they watch Services, EndpointSlices, Secrets, ConfigMaps and Namespaces, the Gateway
/// API's kinds and Ingresses, and write the status of Gateways, routes and Ingresses.
fn cluster_role() -> Value {
    let read = json!(["get", "list", "watch"]);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "sluice-traefik"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "secrets", "configmaps", "namespaces"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": read},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": [
                "gatewayclasses", "gateways", "httproutes", "grpcroutes", "tcproutes", "tlsroutes",
                "referencegrants", "backendtlspolicies",
            ], "verbs": read},
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": [
                "gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status",
                "tcproutes/status", "tlsroutes/status", "backendtlspolicies/status",
            ], "verbs": ["update"]},
        ],
    })
}

/// Traefik's namespace, ServiceAccount, and its rights ([`cluster_role`]).
fn identity() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}}),
        cluster_role(),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "sluice-traefik"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sluice-traefik"},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        }),
    ]
}

/// The GatewayClass, the Gateway listening on `web_port`, the IngressClass, and the two
/// sentinel routes whose answers tell [`Traefik::wait_ready`] that each provider has synced.
fn routing_objects(web_port: u16) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "sentinel", "namespace": NAMESPACE},
            "spec": {
                "selector": {"sluice.dev/traefik-sentinel": "none"},
                "ports": [{"port": 80}],
            },
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": GATEWAY_CONTROLLER},
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [{
                    "name": "web",
                    "protocol": "HTTP",
                    "port": web_port,
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }],
            },
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "sentinel", "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [Traefik::gateway_parent_ref()],
                "hostnames": [GATEWAY_SENTINEL_HOST],
                "rules": [{"backendRefs": [{"name": "sentinel", "port": 80}]}],
            },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": INGRESS_CLASS},
            "spec": {"controller": INGRESS_CONTROLLER},
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "sentinel", "namespace": NAMESPACE},
            "spec": {
                "ingressClassName": INGRESS_CLASS,
                "rules": [{"host": INGRESS_SENTINEL_HOST, "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "sentinel", "port": {"number": 80}}},
                }]}}],
            },
        }),
    ]
}

/// Server-side apply of one object, of any kind, so that a second start against the same
/// cluster finds its objects as it left them.
async fn apply(client: &Client, value: Value) -> Result<()> {
    let object: DynamicObject = from_value(value)?;
    let invalid = |detail: String| HarnessError::Invalid {
        what: format!("Traefik's object {}", object.name_any()),
        detail,
    };
    let types = object
        .types
        .as_ref()
        .ok_or_else(|| invalid("no apiVersion or kind".into()))?;
    let gvk = GroupVersionKind::try_from(types).map_err(|e| invalid(e.to_string()))?;
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await?;
    Ok(())
}

fn from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    crate::object("a Traefik routing object", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Value {
        static_config(
            "127.0.0.1:8000".parse().unwrap(),
            "127.0.0.1:9000".parse().unwrap(),
            "https://127.0.0.1:6443",
            Path::new("ca.crt"),
            Path::new("token"),
        )
    }

    #[test]
    fn the_throttle_is_set_and_nothing_listens_beyond_loopback() {
        let config = config();
        assert_eq!(config["providers"]["providersThrottleDuration"], "200ms");
        let entrypoints = config["entryPoints"].as_object().unwrap();
        assert_eq!(entrypoints.len(), 2);
        for (name, entrypoint) in entrypoints {
            let address = entrypoint["address"].as_str().unwrap();
            assert!(address.starts_with("127.0.0.1:"), "{name}: {address}");
        }
        assert_eq!(config["global"]["checkNewVersion"], false);
        assert_eq!(config["global"]["sendAnonymousUsage"], false);
    }

    #[test]
    fn both_providers_watch_the_local_apiserver_as_the_service_account() {
        let config = config();
        for provider in ["kubernetesGateway", "kubernetesIngressNGINX"] {
            let provider = &config["providers"][provider];
            assert_eq!(provider["endpoint"], "https://127.0.0.1:6443");
            assert_eq!(provider["token"], "token");
            assert_eq!(provider["certAuthFilePath"], "ca.crt");
        }
        let nginx = &config["providers"]["kubernetesIngressNGINX"];
        assert_eq!(nginx["ingressClass"], INGRESS_CLASS);
        assert_eq!(nginx["httpEntryPoint"], "web");
    }

    /// Traefik's Gateway API provider binds a listener to the entrypoint of the same port.
    #[test]
    fn the_gateway_listens_on_the_web_entrypoint() {
        let objects = routing_objects(8000);
        let gateway = objects.iter().find(|o| o["kind"] == "Gateway").unwrap();
        assert_eq!(gateway["spec"]["listeners"][0]["port"], 8000);
        assert_eq!(gateway["spec"]["gatewayClassName"], GATEWAY_CLASS);
        let class = objects
            .iter()
            .find(|o| o["kind"] == "GatewayClass")
            .unwrap();
        assert_eq!(class["spec"]["controllerName"], GATEWAY_CONTROLLER);
    }
}
