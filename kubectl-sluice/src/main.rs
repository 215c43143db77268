//! `kubectl sluice`: see and steer Sluice rollouts with your kubeconfig. Actions write the same
//! `spec.paused` / `spec.decision` / `spec.template` fields as the REST API, decided by the same
//! code, so both behave the same.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{Action, RolloutView};
use clap::Parser;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use rollout_controller::action::{ACT_TRIES, ActError, Acted, OwnedReplicaSets, decide_and_write};
use rollout_controller::crd::analysis::{AnalysisRun, ROLLOUT_LABEL};
use rollout_controller::crd::{POD_TEMPLATE_HASH_LABEL, Rollout};
use rollout_controller::decode::Tolerant;
use rollout_controller::owner::owned_by;
use rollout_controller::view::{undecodable_view, view};
use serde_json::json;

mod args;
mod dashboard;
mod render;

use args::{Cli, Command, Output};
use render::Style;

const EXIT_ERROR: u8 = 1;
const EXIT_ABORTED: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;
const EXIT_CONFLICT: u8 = 5;
const EXIT_DEGRADED: u8 = 6;
const EXIT_LINT: u8 = 7;

/// The field manager of the CLI's writes, beside the controller's `sluice` and the API's
/// `sluice-api`: managedFields then say who decided.
const FIELD_MANAGER: &str = "kubectl-sluice";

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let style = Style::for_stdout(std::io::stdout().is_terminal());
    let namespace = cli.namespace.as_deref();
    match cli.command {
        Command::Lint { file, output } => lint(&file, output, style),
        Command::List { kind: _, output } => list(namespace, output, style).await,
        // `get rollouts`: the list, as kubectl lists a kind.
        Command::Get {
            name: None,
            watch: false,
            output,
            ..
        } => list(namespace, output, style).await,
        Command::Get { name: None, .. } => bail!("get -w takes a rollout: `get rollout NAME -w`"),
        Command::Get {
            name: Some(name),
            watch,
            output,
            ..
        } => {
            let cluster = Cluster::connect(namespace).await?;
            let mut last = None;
            loop {
                let current = cluster.view(&name).await?;
                if last.as_ref() != Some(&current) {
                    match output {
                        Output::Text => {
                            if watch && style.colour {
                                // Redraw in place on a terminal, as `watch` does.
                                print!("\x1b[H\x1b[2J");
                            }
                            print!("{}", render::rollout(&current, style));
                        }
                        other => print_structured(&current, other)?,
                    }
                    last = Some(current);
                }
                if !watch {
                    return Ok(0);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::Status {
            name,
            timeout,
            watch,
        } => {
            let timeout = humantime::parse_duration(&timeout)
                .with_context(|| format!("--timeout {timeout:?}"))?;
            // Without watching, the answer is where the rollout is now: a timeout of zero.
            let timeout = if watch { timeout } else { Duration::ZERO };
            status(&Cluster::connect(namespace).await?, &name, timeout).await
        }
        Command::Promote {
            name,
            full,
            skip_current_step: _,
        } => {
            let action = Action::Promote {
                full,
                from_step: None,
            };
            Cluster::connect(namespace).await?.act(&name, action).await
        }
        Command::Abort { name } => act(namespace, &name, Action::Abort).await,
        Command::Retry { words } => {
            act(namespace, args::rollout_name(&words)?, Action::Retry).await
        }
        Command::Restart { name, delay } => {
            let delay = match delay {
                Some(text) => {
                    humantime::parse_duration(&text).with_context(|| format!("--in {text:?}"))?
                }
                None => Duration::ZERO,
            };
            let at = Cluster::connect(namespace)
                .await?
                .restart(&name, delay)
                .await?;
            println!("rollout {name}: restart requested at {at}");
            Ok(0)
        }
        Command::Dashboard {
            port,
            address,
            no_open,
        } => {
            dashboard::serve(
                namespace,
                std::net::SocketAddr::new(address, port),
                !no_open,
            )
            .await
        }
        Command::Version => {
            println!("kubectl-sluice {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Pause { name } => act(namespace, &name, Action::Pause).await,
        Command::Resume { name } => act(namespace, &name, Action::Resume).await,
        Command::Undo { name, to_revision } => {
            act(namespace, &name, Action::Undo { to_revision }).await
        }
        Command::Set {
            what,
            name,
            assignment,
        } => {
            if what != "image" {
                bail!("set takes `image NAME CONTAINER=IMAGE`, not {what:?}");
            }
            let (container, image) = assignment
                .split_once('=')
                .filter(|(c, i)| !c.is_empty() && !i.is_empty())
                .context("expected CONTAINER=IMAGE")?;
            let cluster = Cluster::connect(namespace).await?;
            cluster.set_image(&name, container, image).await?;
            println!("rollout {name}: {container} set to {image}");
            Ok(0)
        }
    }
}

async fn list(namespace: Option<&str>, output: Output, style: Style) -> anyhow::Result<u8> {
    let views = Cluster::connect(namespace).await?.list().await?;
    match output {
        Output::Text => print!("{}", render::table(&views, style)),
        other => print_structured(&views, other)?,
    }
    Ok(0)
}

async fn act(namespace: Option<&str>, name: &str, action: Action) -> anyhow::Result<u8> {
    Cluster::connect(namespace).await?.act(name, action).await
}

/// Waits until the rollout's current generation is Healthy, aborted or Degraded.
async fn status(cluster: &Cluster, name: &str, timeout: Duration) -> anyhow::Result<u8> {
    let deadline = Instant::now() + timeout;
    let generation = cluster.readable.get(name).await?.meta().generation;
    let generation = generation.unwrap_or(0);
    let mut said = String::new();
    loop {
        let current = cluster.view(name).await?;
        if current.observed_generation >= generation {
            let outcome = match current.phase.as_str() {
                "Healthy" => Some(0),
                "Aborted" => Some(EXIT_ABORTED),
                "Degraded" => Some(EXIT_DEGRADED),
                _ => None,
            };
            if let Some(code) = outcome {
                println!("rollout {name} is {}: {}", current.phase, current.message);
                return Ok(code);
            }
        }
        // Progress as it happens, once per change: a pipeline log shows where the time went.
        let line = format!("rollout {name}: {} {}", current.phase, current.message);
        if line != said {
            eprintln!("{line}");
            said = line;
        }
        if Instant::now() >= deadline {
            println!(
                "rollout {name} is still {} after {}: {}",
                current.phase,
                humantime::format_duration(timeout),
                current.message
            );
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn lint(file: &std::path::Path, output: Output, style: Style) -> anyhow::Result<u8> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let reports = rollout_controller::lint::lint(&text)
        .with_context(|| format!("reading {}", file.display()))?;
    let failed = reports.iter().any(|r| r.has_errors());
    match output {
        Output::Text => print!(
            "{}",
            render::lint(&file.display().to_string(), &reports, style)
        ),
        other => print_structured(&reports, other)?,
    }
    Ok(if failed { EXIT_LINT } else { 0 })
}

/// The rollouts of one namespace (or, for reads, of all), with what they own.
struct Cluster {
    rollouts: Api<Rollout>,
    /// The same rollouts read one by one: one the controller cannot decode is shown with its
    /// decode error rather than failing `list` or missing from it.
    readable: Api<Tolerant<Rollout>>,
    replica_sets: Api<ReplicaSet>,
    analysis_runs: Api<AnalysisRun>,
}

impl Cluster {
    /// The user's kubeconfig, in `namespace` or the context's.
    async fn connect(namespace: Option<&str>) -> anyhow::Result<Self> {
        let client = Client::try_default()
            .await
            .context("no kubeconfig (set KUBECONFIG) and not in a cluster")?;
        let namespace = namespace.unwrap_or(client.default_namespace()).to_owned();
        Ok(Self::new(client, Some(&namespace)))
    }

    /// In `namespace`; in all namespaces when `None`, which serves reads only (a write names
    /// its namespace).
    fn new(client: Client, namespace: Option<&str>) -> Self {
        fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
        where
            K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
        {
            match namespace {
                Some(namespace) => Api::namespaced(client.clone(), namespace),
                None => Api::all(client.clone()),
            }
        }
        Self {
            rollouts: api(&client, namespace),
            readable: api(&client, namespace),
            replica_sets: api(&client, namespace),
            analysis_runs: api(&client, namespace),
        }
    }

    async fn view_of(&self, rollout: &Rollout) -> Result<RolloutView, kube::Error> {
        let replica_sets = self.owned_replica_sets(rollout).await?;
        let selector = format!("{ROLLOUT_LABEL}={}", rollout.name_any());
        let runs = self
            .analysis_runs
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|r| owned_by(rollout, r.meta()))
            .collect::<Vec<_>>();
        Ok(view(rollout, &replica_sets, &runs))
    }

    async fn view(&self, name: &str) -> Result<RolloutView, kube::Error> {
        match self.readable.get(name).await? {
            Tolerant::Decoded(rollout) => self.view_of(&rollout).await,
            Tolerant::Undecodable(bad) => Ok(undecodable_view(&bad)),
        }
    }

    /// Every rollout with what it owns, in three reads however many rollouts there are.
    async fn list(&self) -> Result<Vec<RolloutView>, kube::Error> {
        let rollouts = self.readable.list(&ListParams::default()).await?.items;
        let replica_sets = self
            .replica_sets
            .list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL))
            .await?
            .items;
        let runs = self
            .analysis_runs
            .list(&ListParams::default().labels(ROLLOUT_LABEL))
            .await?
            .items;
        let mut views: Vec<RolloutView> = rollouts
            .iter()
            .map(|rollout| match rollout {
                Tolerant::Decoded(rollout) => {
                    let owned_rs: Vec<ReplicaSet> = replica_sets
                        .iter()
                        .filter(|rs| owned_by(rollout, rs.meta()))
                        .cloned()
                        .collect();
                    let owned_runs: Vec<AnalysisRun> = runs
                        .iter()
                        .filter(|r| owned_by(rollout, r.meta()))
                        .cloned()
                        .collect();
                    view(rollout, &owned_rs, &owned_runs)
                }
                Tolerant::Undecodable(bad) => undecodable_view(bad),
            })
            .collect();
        views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(views)
    }

    /// The same decision the REST API makes, through the same loop ([`decide_and_write`]): a
    /// merge patch that carries the resourceVersion it was decided on. A refusal because the
    /// rollout moved on (most often the controller's own status write) decides again on what is
    /// there now, so the caller hears a conflict only when the action no longer applies.
    async fn decide(&self, name: &str, action: Action) -> Result<Acted, ActError> {
        // Every action is decided on the typed rollout; one that does not decode has none. Said
        // as the REST API says it, not as a decode error of the client.
        if let Tolerant::Undecodable(bad) = self.readable.get(name).await.map_err(ActError::Read)? {
            return Err(ActError::Refused(format!(
                "{}; fix it before acting on it",
                undecodable_view(&bad).message
            )));
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        decide_and_write(&self.rollouts, name, &params, self, action).await
    }

    async fn act(&self, name: &str, action: Action) -> anyhow::Result<u8> {
        match self.decide(name, action).await {
            Ok(acted) => {
                println!("rollout {name}: {}", render::requested(&acted.action));
                Ok(0)
            }
            Err(ActError::Refused(why)) => {
                eprintln!("rollout {name}: {why}");
                Ok(EXIT_CONFLICT)
            }
            Err(ActError::KeptChanging) => {
                eprintln!("rollout {name} changed {ACT_TRIES} times while deciding; look again");
                Ok(EXIT_CONFLICT)
            }
            Err(ActError::Read(e) | ActError::Write(e)) => Err(e.into()),
        }
    }

    /// Asks the controller to re-create the stable version's pods that exist `delay` from now
    /// (`spec.restartAt`). The time is rounded up to the next whole second, as the apiserver
    /// keeps it: rounded down, a pod created earlier in the same second would count as new.
    async fn restart(&self, name: &str, delay: Duration) -> anyhow::Result<Timestamp> {
        let at = Timestamp::now()
            .checked_add(delay)
            .context("--in is too far off")?;
        let at = Timestamp::from_second(at.as_second() + 1).context("--in is too far off")?;
        let patch = json!({"spec": {"restartAt": Time(at)}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.rollouts
            .patch(name, &params, &Patch::Merge(&patch))
            .await?;
        Ok(at)
    }

    /// Replaces one container's image, guarded by the resourceVersion it read: containers are a
    /// list, which a merge patch replaces whole, so a concurrent change to another container
    /// must not be overwritten. A write refused because the rollout moved on (most often the
    /// controller's status) is made again on what is there now.
    async fn set_image(&self, name: &str, container: &str, image: &str) -> anyhow::Result<()> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for _ in 0..ACT_TRIES {
            let mut rollout = self.rollouts.get(name).await?;
            let resource_version = rollout.resource_version();
            let spec = rollout
                .spec
                .template
                .spec
                .as_mut()
                .context("the rollout has no pod spec")?;
            let target = spec
                .containers
                .iter_mut()
                .find(|c| c.name == container)
                .with_context(|| format!("no container {container:?} in rollout {name}"))?;
            target.image = Some(image.to_owned());
            let patch = json!({
                "metadata": {"resourceVersion": resource_version},
                "spec": {"template": {"spec": {"containers": spec.containers}}},
            });
            match self
                .rollouts
                .patch(name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("rollout {name} changed {ACT_TRIES} times while its image was set; try again")
    }
}

impl OwnedReplicaSets for Cluster {
    async fn owned_replica_sets(&self, rollout: &Rollout) -> Result<Vec<ReplicaSet>, kube::Error> {
        let list = self
            .replica_sets
            .list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|rs| owned_by(rollout, rs.meta()))
            .collect())
    }
}

fn print_structured<T: serde::Serialize>(value: &T, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_norway::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}
