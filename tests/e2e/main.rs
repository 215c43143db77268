//! Sluice's end-to-end tests, against a real control plane and a real Prometheus.
//!
//! One binary (`harness = false`) so that one control plane serves the whole run: it is started
//! on first use, shared by tests running in parallel (each in a fresh namespace), and stopped at
//! the end, whether the tests passed, failed or panicked, and on Ctrl-C or SIGTERM.

/// A trial named after its module and function: `trial!(smoke::replica_set_endpoints)`.
macro_rules! trial {
    ($module:ident :: $test:ident) => {
        $crate::support::trial(concat!(stringify!($module), "::", stringify!($test)), $test)
    };
}

mod bad_templates;
mod cli;
mod cluster_cleanup;
mod dashboard;
mod dashboard_server;
mod decisions;
mod deploy;
mod examples;
mod fuzz;
mod leader;
mod least_privilege;
mod lint_agreement;
mod pods;
mod prometheus_analysis;
mod proxy;
mod releases;
mod rest_api;
mod restart;
mod rollout_analysis;
mod rollouts;
mod routers;
mod scrape;
mod shards;
mod smoke;
mod support;
mod traffic;
mod undecodable;
mod writes;

use std::process::ExitCode;

use libtest_mimic::{Arguments, Trial};

use support::ENV;

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let trials: Vec<Trial> = [
        smoke::trials(),
        rollouts::trials(),
        bad_templates::trials(),
        restart::trials(),
        leader::trials(),
        shards::trials(),
        scrape::trials(),
        prometheus_analysis::trials(),
        rollout_analysis::trials(),
        routers::trials(),
        rest_api::trials(),
        dashboard::trials(),
        cli::trials(),
        decisions::trials(),
        examples::trials(),
        lint_agreement::trials(),
        fuzz::trials(),
        deploy::trials(),
        least_privilege::trials(),
        undecodable::trials(),
        pods::trials(),
        cluster_cleanup::trials(),
        proxy::trials(),
        traffic::trials(),
        releases::trials(),
        writes::trials(),
        dashboard_server::trials(),
    ]
    .into_iter()
    .flatten()
    .collect();
    ENV.stop_on_signal();
    let conclusion = libtest_mimic::run(&args, trials);
    ENV.teardown(conclusion.has_failed());
    conclusion.exit_code()
}
