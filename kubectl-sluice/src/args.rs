//! The command line, with the spellings users of Argo Rollouts' plugin type out of habit
//! (`list rollouts`, `get rollouts`, `status --watch`, `promote --skip-current-step`,
//! `retry rollout NAME`, `restart`, `version`) meaning what they mean there.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};

pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  done (status: the rollout is Healthy; lint: no errors)
  1  error (no cluster, no such rollout, a failed request)
  2  usage
  3  status: the rollout aborted
  4  status: the timeout passed first (with --watch=false: not finished yet)
  5  the action does not apply now (promote a rollout that is not paused, retry one that is
     not aborted, undo to a revision not in history), or the rollout changed while deciding
  6  status: the rollout is Degraded (an invalid spec, or the progress deadline passed)
  7  lint: the file has errors";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-sluice",
    about = "See and steer Sluice rollouts",
    version,
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub(crate) namespace: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
    Yaml,
}

/// The kind a command is about, where kubectl's habit puts one: only rollouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    #[value(alias = "ro")]
    Rollout,
    Rollouts,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// List rollouts: strategy, phase, step, weight (`list` or `list rollouts`).
    List {
        /// `rollouts` (or `rollout`, `ro`): optional, as in `kubectl argo rollouts list rollouts`.
        #[arg(value_enum)]
        kind: Option<Kind>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// One rollout (`get rollout NAME`): phase, steps with the current one marked, traffic,
    /// revisions with their pods, analysis runs with their latest verdicts and evidence. Without
    /// a name (`get rollouts`), the list.
    Get {
        /// `rollout`, `rollouts` or `ro`
        #[arg(value_enum)]
        kind: Kind,
        name: Option<String>,
        /// Keep watching: show each change.
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Wait until the rollout is Healthy (exit 0), aborted (3), Degraded (6) or the timeout
    /// passes (4). Answers for the spec as it is now: right after a change it never reports the
    /// previous revision's Healthy.
    Status {
        name: String,
        #[arg(long, default_value = "10m")]
        timeout: String,
        /// Wait for the outcome (the default, as `--watch` says in Argo Rollouts' plugin);
        /// `--watch=false` reports where the rollout is now and exits at once.
        #[arg(
            short,
            long,
            action = ArgAction::Set,
            num_args = 0..=1,
            default_value_t = true,
            default_missing_value = "true",
            require_equals = true
        )]
        watch: bool,
    },
    /// Approve the current step (`--skip-current-step`, the default), or with `--full` skip all
    /// remaining steps and analyses.
    Promote {
        name: String,
        /// Skip every remaining step and analysis (`--skip-all-steps` is the same).
        #[arg(
            long,
            visible_alias = "skip-all-steps",
            conflicts_with = "skip_current_step"
        )]
        full: bool,
        /// Approve the current step only: what `promote` does without flags.
        #[arg(long)]
        skip_current_step: bool,
    },
    /// Abort the revision rolling out: all traffic back to stable.
    Abort { name: String },
    /// Start an aborted revision again from its first step (`retry NAME` or `retry rollout NAME`).
    Retry {
        /// `rollout NAME`, or the name alone
        #[arg(num_args = 1..=2, required = true, value_names = ["rollout", "NAME"])]
        words: Vec<String>,
    },
    /// Re-create the stable version's pods one at a time, without a new revision: each pod is
    /// replaced and ready before the next goes, within maxUnavailable.
    Restart {
        name: String,
        /// Restart this long from now (`30s`, `5m`) instead of at once.
        #[arg(short = 'i', long = "in")]
        delay: Option<String>,
    },
    /// Hold the rollout where it is.
    Pause { name: String },
    /// Let a paused rollout go on.
    Resume { name: String },
    /// Go back to an older revision's pod template (see the revisions in `get rollout`).
    Undo {
        name: String,
        /// The revision number (default: the one before the current).
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Change a container's image: starts a new revision.
    Set {
        /// `image`
        what: String,
        name: String,
        /// CONTAINER=IMAGE
        assignment: String,
    },
    /// Check Rollouts in a file offline, with the rules the apiserver and the controller apply
    /// (including what a traffic router cannot express). Needs no cluster.
    Lint {
        #[arg(short, long)]
        file: PathBuf,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Serve the web dashboard on this machine, acting with your kubeconfig's credentials:
    /// prints a one-time login link and opens it.
    Dashboard {
        /// Port on the loopback address (0: any free one; the link says which).
        #[arg(long, default_value_t = 3100)]
        port: u16,
        /// A loopback address: the server acts with your credentials.
        #[arg(long, default_value = "127.0.0.1")]
        address: IpAddr,
        /// Print the link only; do not start a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// Print this plugin's version.
    Version,
}

/// The rollout's name in `retry NAME` or `retry rollout NAME`.
pub(crate) fn rollout_name(words: &[String]) -> anyhow::Result<&str> {
    match words {
        [name] => Ok(name),
        [kind, name] if Kind::from_str(kind, false).is_ok() => Ok(name),
        [kind, _] => bail!("expected `rollout NAME` or `NAME`, not {kind:?} first"),
        _ => bail!("expected `rollout NAME` or `NAME`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Command {
        let words = std::iter::once("kubectl-sluice").chain(line.split_whitespace());
        match Cli::try_parse_from(words) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    fn refused(line: &str) -> bool {
        let words = std::iter::once("kubectl-sluice").chain(line.split_whitespace());
        Cli::try_parse_from(words).is_err()
    }

    #[test]
    fn list_takes_an_optional_rollouts() {
        for line in [
            "list",
            "list rollouts",
            "list rollout",
            "list ro",
            "list rollouts -o json",
        ] {
            assert!(matches!(parse(line), Command::List { .. }), "{line}");
        }
        assert!(matches!(
            parse("list rollouts -o json"),
            Command::List {
                kind: Some(Kind::Rollouts),
                output: Output::Json
            }
        ));
        assert!(refused("list deployments"));
    }

    #[test]
    fn get_rollouts_without_a_name_lists_and_get_rollout_name_shows_one() {
        assert!(matches!(
            parse("get rollouts"),
            Command::Get {
                kind: Kind::Rollouts,
                name: None,
                ..
            }
        ));
        match parse("get rollout web -w") {
            Command::Get {
                kind: Kind::Rollout,
                name: Some(name),
                watch: true,
                ..
            } => assert_eq!(name, "web"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("get ro web"),
            Command::Get {
                kind: Kind::Rollout,
                ..
            }
        ));
        assert!(refused("get pods web"));
    }

    #[test]
    fn status_watches_by_default_and_watch_false_does_not() {
        for (line, watch) in [
            ("status web", true),
            ("status web --watch", true),
            ("status web -w", true),
            ("status web --watch=true", true),
            ("status web --watch=false", false),
        ] {
            match parse(line) {
                Command::Status { watch: w, name, .. } => {
                    assert_eq!((w, name.as_str()), (watch, "web"), "{line}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn promote_skip_current_step_is_a_single_step_and_full_skips_all() {
        for (line, full) in [
            ("promote web", false),
            ("promote web --skip-current-step", false),
            ("promote web --full", true),
            ("promote web --skip-all-steps", true),
        ] {
            match parse(line) {
                Command::Promote { full: f, .. } => assert_eq!(f, full, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(refused("promote web --full --skip-current-step"));
    }

    #[test]
    fn retry_takes_rollout_name_or_the_name_alone() {
        for line in ["retry web", "retry rollout web", "retry ro web"] {
            match parse(line) {
                Command::Retry { words } => assert_eq!(rollout_name(&words).unwrap(), "web"),
                other => panic!("{line}: {other:?}"),
            }
        }
        let Command::Retry { words } = parse("retry experiment web") else {
            panic!("not a retry");
        };
        assert!(rollout_name(&words).is_err());
        assert!(refused("retry"));
        assert!(refused("retry rollout web extra"));
    }

    #[test]
    fn restart_and_version_parse() {
        match parse("restart web") {
            Command::Restart { name, delay: None } => assert_eq!(name, "web"),
            other => panic!("{other:?}"),
        }
        match parse("restart web --in 30s") {
            Command::Restart { delay: Some(d), .. } => assert_eq!(d, "30s"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("restart web -i 5m"),
            Command::Restart { .. }
        ));
        assert!(matches!(parse("version"), Command::Version));
        assert!(matches!(
            parse("dashboard --port 0 --no-open"),
            Command::Dashboard {
                port: 0,
                no_open: true,
                ..
            }
        ));
        let version = Cli::try_parse_from(["kubectl-sluice", "--version"]).unwrap_err();
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
    }

    #[test]
    fn the_namespace_goes_anywhere() {
        let cli = Cli::try_parse_from(["kubectl-sluice", "get", "rollouts", "-n", "shop"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("shop"));
    }
}
