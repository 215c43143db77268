//! deploy/ against the real apiserver and the real tools: the Helm chart (default and
//! non-default values) and the kustomization render objects that a server-side dry run accepts
//! in a namespace that enforces the restricted Pod Security Standard, and agree with each other;
//! and the monitoring files hold — promtool checks and unit-tests the alerts, the PrometheusRule
//! carries the groups of rules.yaml, and the dashboard and the alerts name only metrics the
//! controller exports. (That deploy/rbac grants exactly what the controller uses is
//! least_privilege.rs's proof, from the apiserver's audit log.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail, ensure};
use libtest_mimic::Trial;
use rollout_controller::metrics::{InfoLabels, MeasurementLabels, Metrics, kind, reason};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_tests::ControlPlane;
use sluice_tests::binaries::{Binaries, prometheus_tool};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::Env;

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(deploy::the_chart_ships_the_crds_of_deploy_crds),
        trial!(deploy::the_chart_renders_objects_the_apiserver_accepts),
        trial!(deploy::the_chart_refuses_values_the_controller_cannot_honour),
        trial!(deploy::the_kustomization_renders_objects_the_apiserver_accepts),
        trial!(deploy::promtool_checks_and_tests_the_alert_rules),
        trial!(deploy::the_prometheus_rule_carries_the_groups_of_rules_yaml),
        trial!(deploy::the_dashboard_and_the_alerts_name_only_exported_metrics),
    ]
}

/// The namespace deploy/ installs into.
const SYSTEM_NAMESPACE: &str = "sluice-system";
/// The field manager of this file's applies (dry runs and the RBAC it installs for real).
const FIELD_MANAGER: &str = "sluice-e2e-deploy";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/sluice")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The documents of a YAML stream, without the empty ones (helm leaves some).
fn documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

struct Output {
    stdout: String,
    stderr: String,
}

/// Runs `program`, with `stdin` fed to it; fails with its stderr when it exits non-zero.
async fn run(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &Path)],
    stdin: Option<&str>,
) -> anyhow::Result<Output> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in envs {
        command.env(key, value);
    }
    let shown = format!("{} {}", program.display(), args.join(" "));
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    // Fed from a task of its own, so that a child writing output before it has read all its
    // input cannot block on a full pipe; dropping the pipe at the end closes its stdin.
    let feed = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => {
            let text = text.to_owned();
            Some(tokio::spawn(async move {
                pipe.write_all(text.as_bytes()).await
            }))
        }
        _ => None,
    };
    let output = child.wait_with_output().await?;
    if let Some(feed) = feed {
        feed.await?
            .with_context(|| format!("writing the input of {shown}"))?;
    }
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(
        output.status.success(),
        "{shown} exited with {}:\n{stderr}{stdout}",
        output.status
    );
    Ok(Output { stdout, stderr })
}

/// helm, with its cache and config in a directory of its own rather than the user's home.
struct Helm {
    program: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    fn locate() -> anyhow::Result<Self> {
        Ok(Self {
            program: Binaries::locate()?.helm()?,
            home: tempfile::tempdir()?,
        })
    }

    /// `helm template sluice deploy/helm/sluice` into sluice-system, CRDs included, with
    /// `values` (a values file) on top of the chart's own.
    async fn template(&self, values: Option<Value>) -> anyhow::Result<Vec<Value>> {
        let chart = chart_dir();
        let chart = chart.to_string_lossy();
        let values_file = self.home.path().join("values.json");
        let mut args = vec![
            "template",
            "sluice",
            &chart,
            "--namespace",
            SYSTEM_NAMESPACE,
            "--include-crds",
        ];
        let values_path = values_file.to_string_lossy();
        if let Some(values) = values {
            // JSON is YAML.
            std::fs::write(&values_file, values.to_string())?;
            args.extend(["--values", &values_path]);
        }
        documents(&self.run(&args).await?.stdout)
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let home = self.home.path();
        let (cache, config, data) = (home.join("cache"), home.join("config"), home.join("data"));
        run(
            &self.program,
            args,
            &[
                ("HELM_CACHE_HOME", &cache),
                ("HELM_CONFIG_HOME", &config),
                ("HELM_DATA_HOME", &data),
            ],
            None,
        )
        .await
    }
}

/// The harness's kubectl with the admin kubeconfig.
struct Kubectl {
    program: PathBuf,
    kubeconfig: PathBuf,
}

#[derive(Clone, Copy, PartialEq)]
enum Apply {
    DryRun,
    ForReal,
}

impl Kubectl {
    fn of(cluster: &ControlPlane) -> Self {
        Self {
            program: cluster.binaries().path("kubectl"),
            kubeconfig: cluster.admin_kubeconfig().to_owned(),
        }
    }

    /// `kubectl kustomize deploy/`.
    async fn kustomize(&self) -> anyhow::Result<Vec<Value>> {
        let dir = deploy_dir();
        documents(
            &run(
                &self.program,
                &["kustomize", &dir.to_string_lossy()],
                &[],
                None,
            )
            .await?
            .stdout,
        )
    }

    /// Server-side applies `objects` (as users install deploy/), a dry run unless `ForReal`,
    /// and returns them as the apiserver answered: defaulted, validated, admitted. A Pod
    /// Security warning fails it: sluice-system enforces the restricted standard, and a
    /// Deployment whose pods it would reject only warns.
    async fn apply(&self, objects: &[Value], mode: Apply) -> anyhow::Result<Vec<Value>> {
        let kubeconfig = self.kubeconfig.to_string_lossy();
        let mut args = vec![
            "--kubeconfig",
            &kubeconfig,
            "apply",
            "--server-side",
            "--field-manager",
            FIELD_MANAGER,
            // Another trial may own the same fields with other values (a label the chart adds).
            "--force-conflicts",
            "--output",
            "json",
            "--filename",
            "-",
        ];
        if mode == Apply::DryRun {
            args.push("--dry-run=server");
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let output = run(&self.program, &args, &[], Some(&list.to_string())).await?;
        ensure!(
            !output.stderr.contains("PodSecurity"),
            "Pod Security warnings: {}",
            output.stderr
        );
        let answer: Value = serde_json::from_str(&output.stdout)?;
        let applied = match answer["kind"].as_str() {
            Some("List") => answer["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![answer],
        };
        ensure!(
            applied.len() == objects.len(),
            "sent {} objects, the apiserver answered {}",
            objects.len(),
            applied.len()
        );
        Ok(applied)
    }

    /// sluice-system, for real: namespaced objects cannot even be dry-run without it.
    async fn system_namespace(&self) -> anyhow::Result<()> {
        let namespace = documents(&read(&deploy_dir().join("controller/namespace.yaml"))?)?;
        self.apply(&namespace, Apply::ForReal).await?;
        Ok(())
    }
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.sort();
    kinds
}

/// What deploy/ and the chart both make, besides the Namespace that only deploy/ makes.
const INSTALLED_KINDS: [&str; 13] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "CustomResourceDefinition",
    "CustomResourceDefinition",
    "CustomResourceDefinition",
    "Deployment",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "Service",
    "Service",
    "ServiceAccount",
];

fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in {:?}", kinds(objects)))
}

fn container(deployment: &Value) -> anyhow::Result<&Value> {
    deployment
        .pointer("/spec/template/spec/containers/0")
        .context("the Deployment has no container")
}

fn args(deployment: &Value) -> anyhow::Result<Vec<String>> {
    Ok(container(deployment)?["args"]
        .as_array()
        .context("no args")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect())
}

/// The value that follows `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

async fn the_chart_ships_the_crds_of_deploy_crds(_env: &'static Env) -> anyhow::Result<()> {
    let names = |dir: &Path| -> anyhow::Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            names.insert(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    };
    let (generated, shipped) = (deploy_dir().join("crds"), chart_dir().join("crds"));
    let (wanted, have) = (names(&generated)?, names(&shipped)?);
    ensure!(
        wanted == have,
        "deploy/helm/sluice/crds holds {have:?}, deploy/crds {wanted:?}"
    );
    ensure!(!wanted.is_empty(), "deploy/crds is empty");
    for name in &wanted {
        ensure!(
            read(&generated.join(name))? == read(&shipped.join(name))?,
            "deploy/helm/sluice/crds/{name} differs from deploy/crds/{name}: \
             cp deploy/crds/*.yaml deploy/helm/sluice/crds/"
        );
    }
    Ok(())
}

async fn the_chart_renders_objects_the_apiserver_accepts(env: &'static Env) -> anyhow::Result<()> {
    let helm = Helm::locate()?;
    let kubectl = Kubectl::of(env.cluster().await?);
    kubectl.system_namespace().await?;

    let rendered = helm.template(None).await?;
    ensure!(
        kinds(&rendered) == INSTALLED_KINDS,
        "{:?}",
        kinds(&rendered)
    );
    let applied = kubectl.apply(&rendered, Apply::DryRun).await?;
    let deployment = one(&applied, "Deployment", "sluice")?;
    ensure!(
        deployment["spec"]["replicas"] == 2,
        "{}",
        deployment["spec"]
    );
    let defaults = args(deployment)?;
    ensure!(
        flag(&defaults, "--namespace").is_none(),
        "watches one namespace: {defaults:?}"
    );
    ensure!(
        flag(&defaults, "--api-auth") == Some("kubernetes"),
        "{defaults:?}"
    );
    for (name, value) in [
        ("--reconcile-concurrency", "32"),
        ("--analysis-concurrency", "16"),
        ("--kube-api-qps", "50"),
        ("--kube-api-burst", "100"),
    ] {
        ensure!(flag(&defaults, name) == Some(value), "{defaults:?}");
    }
    ensure!(
        flag(&defaults, "--shards").is_none(),
        "one shard is the default, not a flag: {defaults:?}"
    );
    ensure!(
        container(deployment)?["image"] == "ghcr.io/sluice-dev/sluice:0.1.0",
        "{}",
        container(deployment)?["image"]
    );

    // The chart and deploy/ agree on what matters: the rights, and how the pod runs.
    let kustomized = kubectl.kustomize().await?;
    let plain = one(&kustomized, "Deployment", "sluice")?;
    let chart = one(&rendered, "Deployment", "sluice")?;
    ensure!(
        one(&rendered, "ClusterRole", "sluice")?["rules"]
            == one(&kustomized, "ClusterRole", "sluice")?["rules"],
        "the chart's ClusterRole rules differ from deploy/rbac/clusterrole.yaml's"
    );
    ensure!(
        one(&rendered, "Role", "sluice-leader-election")?["rules"]
            == one(&kustomized, "Role", "sluice-leader-election")?["rules"],
        "the chart's leader-election Role differs from deploy/rbac/role.yaml's"
    );
    for pointer in ["/spec/replicas", "/spec/template/spec/securityContext"] {
        ensure!(
            chart.pointer(pointer) == plain.pointer(pointer),
            "{pointer}: the chart has {:?}, deploy/ {:?}",
            chart.pointer(pointer),
            plain.pointer(pointer)
        );
    }
    for field in [
        "image",
        "env",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "securityContext",
    ] {
        ensure!(
            container(chart)?[field] == container(plain)?[field],
            "container {field}: the chart has {}, deploy/ {}",
            container(chart)?[field],
            container(plain)?[field]
        );
    }
    let plain_args = args(plain)?;
    ensure!(
        defaults.starts_with(&plain_args),
        "the chart's args {defaults:?} do not start with deploy/'s {plain_args:?}"
    );

    let rendered = helm
        .template(Some(json!({
            "image": {"tag": "0.2.0"},
            "replicas": 3,
            "shards": 8,
            "watchNamespaces": ["shop"],
            "apiAuth": "none",
            "commonLabels": {"team": "platform"},
            "podAnnotations": {"prometheus.io/scrape": "true"},
            "resources": {
                "requests": {"cpu": "250m", "memory": "256Mi"},
                "limits": {"cpu": "2", "memory": "1Gi"},
            },
            "service": {"apiPort": 80},
            "kubeApiQps": 20,
            "kubeApiBurst": 30,
        })))
        .await?;
    let applied = kubectl.apply(&rendered, Apply::DryRun).await?;
    let deployment = one(&applied, "Deployment", "sluice")?;
    ensure!(
        deployment["spec"]["replicas"] == 3,
        "{}",
        deployment["spec"]
    );
    let custom = args(deployment)?;
    ensure!(flag(&custom, "--namespace") == Some("shop"), "{custom:?}");
    ensure!(flag(&custom, "--api-auth") == Some("none"), "{custom:?}");
    ensure!(flag(&custom, "--shards") == Some("8"), "{custom:?}");
    let verbs = &one(&applied, "Role", "sluice-leader-election")?["rules"][0]["verbs"];
    ensure!(
        *verbs == json!(["get", "list", "create", "update", "delete"]),
        "with shards the replicas list and delete Leases: {verbs}"
    );
    ensure!(
        flag(&custom, "--kube-api-qps") == Some("20")
            && flag(&custom, "--kube-api-burst") == Some("30"),
        "{custom:?}"
    );
    ensure!(
        container(deployment)?["image"] == "ghcr.io/sluice-dev/sluice:0.2.0",
        "{}",
        container(deployment)?["image"]
    );
    ensure!(
        container(deployment)?["resources"]
            == json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}),
        "{}",
        container(deployment)?["resources"]
    );
    let template = &deployment["spec"]["template"]["metadata"];
    ensure!(
        template["annotations"]["prometheus.io/scrape"] == "true",
        "{template}"
    );
    ensure!(template["labels"]["team"] == "platform", "{template}");
    for object in applied
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        ensure!(
            object["metadata"]["labels"]["team"] == "platform",
            "{} {} lacks commonLabels",
            object["kind"],
            object["metadata"]["name"]
        );
    }
    let api = one(&applied, "Service", "sluice")?;
    ensure!(
        api["spec"]["ports"][0]["port"] == 80,
        "{}",
        api["spec"]["ports"]
    );
    Ok(())
}

async fn the_chart_refuses_values_the_controller_cannot_honour(
    _env: &'static Env,
) -> anyhow::Result<()> {
    let helm = Helm::locate()?;
    for (values, why) in [
        (
            json!({"watchNamespaces": ["shop", "bank"]}),
            "watchNamespaces",
        ),
        (json!({"apiAuth": "basic"}), "apiAuth"),
        (json!({"shards": 0}), "shards"),
    ] {
        match helm.template(Some(values.clone())).await {
            Ok(_) => bail!("helm rendered {values} (the controller cannot honour it)"),
            Err(e) => ensure!(
                format!("{e:#}").contains(why),
                "the error does not name {why}: {e:#}"
            ),
        }
    }
    Ok(())
}

async fn the_kustomization_renders_objects_the_apiserver_accepts(
    env: &'static Env,
) -> anyhow::Result<()> {
    let kubectl = Kubectl::of(env.cluster().await?);
    kubectl.system_namespace().await?;
    let rendered = kubectl.kustomize().await?;
    let mut wanted: Vec<&str> = INSTALLED_KINDS.to_vec();
    wanted.push("Namespace");
    wanted.sort();
    ensure!(kinds(&rendered) == wanted, "{:?}", kinds(&rendered));
    let applied = kubectl.apply(&rendered, Apply::DryRun).await?;
    for object in applied.iter().filter(|o| {
        !matches!(
            o["kind"].as_str(),
            Some("CustomResourceDefinition" | "Namespace" | "ClusterRole" | "ClusterRoleBinding")
        )
    }) {
        ensure!(
            object["metadata"]["namespace"] == SYSTEM_NAMESPACE,
            "{} {} is in {}",
            object["kind"],
            object["metadata"]["name"],
            object["metadata"]["namespace"]
        );
    }
    let deployment = one(&applied, "Deployment", "sluice")?;
    ensure!(
        deployment["spec"]["replicas"] == 2,
        "{}",
        deployment["spec"]
    );
    ensure!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"] == "sluice",
        "{}",
        deployment["spec"]["template"]["spec"]
    );
    let args = args(deployment)?;
    ensure!(
        args == [
            "--api-addr",
            "0.0.0.0:8080",
            "--health-addr",
            "0.0.0.0:9090",
            "--log-format",
            "json"
        ],
        "{args:?}"
    );
    let env_vars = &container(deployment)?["env"];
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let found = env_vars
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field);
        ensure!(found, "no {name} from {field}: {env_vars}");
    }
    let pdb = one(&applied, "PodDisruptionBudget", "sluice")?;
    ensure!(pdb["spec"]["minAvailable"] == 1, "{}", pdb["spec"]);
    let binding = one(&applied, "ClusterRoleBinding", "sluice")?;
    ensure!(
        binding["subjects"]
            == json!([{"kind": "ServiceAccount", "name": "sluice", "namespace": SYSTEM_NAMESPACE}]),
        "{}",
        binding["subjects"]
    );
    Ok(())
}

async fn promtool_checks_and_tests_the_alert_rules(_env: &'static Env) -> anyhow::Result<()> {
    let promtool = prometheus_tool("promtool")?;
    let monitoring = deploy_dir().join("monitoring");
    let rules = monitoring.join("rules.yaml");
    let output = run(
        &promtool,
        &["check", "rules", &rules.to_string_lossy()],
        &[],
        None,
    )
    .await?;
    ensure!(
        output.stdout.contains("SUCCESS"),
        "{}{}",
        output.stdout,
        output.stderr
    );
    let tests = monitoring.join("rules-test.yaml");
    run(
        &promtool,
        &["test", "rules", &tests.to_string_lossy()],
        &[],
        None,
    )
    .await?;
    Ok(())
}

async fn the_prometheus_rule_carries_the_groups_of_rules_yaml(
    _env: &'static Env,
) -> anyhow::Result<()> {
    let monitoring = deploy_dir().join("monitoring");
    let plain = documents(&read(&monitoring.join("rules.yaml"))?)?;
    let operator = documents(&read(&monitoring.join("prometheusrule.yaml"))?)?;
    ensure!(plain.len() == 1 && operator.len() == 1, "one document each");
    let rule = &operator[0];
    ensure!(
        rule["apiVersion"] == "monitoring.coreos.com/v1" && rule["kind"] == "PrometheusRule",
        "{} {}",
        rule["apiVersion"],
        rule["kind"]
    );
    let groups = &plain[0]["groups"];
    ensure!(
        groups.as_array().is_some_and(|g| !g.is_empty()),
        "rules.yaml has no groups"
    );
    ensure!(
        &rule["spec"]["groups"] == groups,
        "prometheusrule.yaml's spec.groups differ from rules.yaml's groups"
    );
    Ok(())
}

/// The names of the series the controller's /metrics has once every family has a value.
fn exported_series() -> anyhow::Result<BTreeSet<String>> {
    let metrics = Metrics::default();
    metrics.observe_rollout(
        InfoLabels {
            namespace: "shop".into(),
            name: "web".into(),
            strategy: "canary".into(),
            phase: "Paused".into(),
        },
        1,
        20,
    );
    metrics.reconcile_duration.observe(0.01);
    metrics
        .reconcile_errors
        .get_or_create(&reason("Kube"))
        .inc();
    metrics
        .aborts
        .get_or_create(&reason("AnalysisFailed"))
        .inc();
    metrics
        .transitions
        .get_or_create(&reason("AnalysisFailed"))
        .inc();
    metrics.api_writes.get_or_create(&kind("ReplicaSet")).inc();
    metrics
        .undecodable_objects
        .get_or_create(&kind("AnalysisTemplate"))
        .set(1);
    metrics
        .measurements
        .get_or_create(&MeasurementLabels {
            metric: "error-rate".into(),
            verdict: "Pass".into(),
        })
        .inc();
    metrics.abort_latency.observe(0.5);
    let text = metrics.encode();
    let mut families = BTreeSet::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            families.insert(family.split(' ').next().unwrap_or_default().to_owned());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            series.insert(name.to_owned());
        }
    }
    // Every family got a value above, so none is missing from `series`.
    for family in &families {
        ensure!(
            series.iter().any(|s| s.starts_with(family.as_str())),
            "family {family} has no series: give it a value in exported_series()"
        );
    }
    Ok(series)
}

/// The `sluice_*` names in `text`.
fn sluice_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sluice_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every string under a key called `key`, anywhere in `value`.
fn strings_under(value: &Value, key: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                match v {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_under(v, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

async fn the_dashboard_and_the_alerts_name_only_exported_metrics(
    _env: &'static Env,
) -> anyhow::Result<()> {
    let exported = exported_series()?;
    let monitoring = deploy_dir().join("monitoring");
    let dashboard: Value = serde_json::from_str(&read(&monitoring.join("dashboard.json"))?)
        .context("dashboard.json is not JSON")?;
    let mut queries = Vec::new();
    strings_under(&dashboard, "expr", &mut queries);
    ensure!(queries.len() >= 10, "only {} queries", queries.len());
    let mut variables = Vec::new();
    strings_under(&dashboard["templating"], "definition", &mut variables);
    let mut used = BTreeSet::new();
    for text in queries.iter().chain(&variables) {
        used.extend(sluice_names(text));
    }
    let unknown: Vec<&String> = used.difference(&exported).collect();
    ensure!(
        unknown.is_empty(),
        "the dashboard names metrics the controller does not export: {unknown:?}"
    );
    for wanted in [
        "sluice_rollout_info",
        "sluice_rollout_canary_weight",
        "sluice_analysis_measurements_total",
        "sluice_abort_latency_seconds_bucket",
        "sluice_reconcile_errors_total",
        "sluice_reconcile_duration_seconds_bucket",
        "sluice_leader",
    ] {
        ensure!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }

    // The alerts too.
    let rules = read(&monitoring.join("rules.yaml"))?;
    let mut exprs = Vec::new();
    strings_under(&documents(&rules)?[0], "expr", &mut exprs);
    let in_rules: BTreeSet<String> = exprs.iter().flat_map(|e| sluice_names(e)).collect();
    let unknown: Vec<&String> = in_rules.iter().filter(|n| !exported.contains(*n)).collect();
    ensure!(
        unknown.is_empty(),
        "the alerts name metrics the controller does not export: {unknown:?}"
    );

    // The panels' queries are PromQL once Grafana's variables are filled in: promtool parses
    // them as recording rules.
    let promtool = prometheus_tool("promtool")?;
    let records: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .replace("$__rate_interval", "5m")
                .replace("$__range", "6h")
                .replace("$namespace", ".*");
            json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": records}]}).to_string(),
    )?;
    run(
        &promtool,
        &["check", "rules", &file.to_string_lossy()],
        &[],
        None,
    )
    .await
    .context("the dashboard's queries do not parse")?;
    Ok(())
}
