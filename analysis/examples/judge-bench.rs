//! How fast and how safely the judges decide (issue 4, section 4).
//!
//! `cargo run --release -p analysis --example judge-bench [-- --aa-runs N --regression-runs N
//! --seed S --threads T]`
//!
//! Three judges see the same simulated streams (common random numbers):
//! - **threshold**: the crate's CEL `ThresholdJudge` per interval on the canary alone, with a 25%
//!   margin over the baseline (`result[0] <= 0.0125` for errors, `result[0] <= 0.125` for the
//!   share of requests above the baseline's p90), and the crate's lifecycle with failureLimit 2:
//!   the metric fails on the 3rd failing interval (Argo Rollouts counts failures, not streaks);
//! - **MW 30 min**: the crate's `compare` judge (Mann–Whitney, `stats::mann_whitney`) once at
//!   the 30-minute horizon on the 30 per-interval rates of canary and baseline, tolerance 0, bad
//!   = increase; Kayenta decides from the two-sided interval, so the confidence is 1 − 2α, which
//!   makes it a one-sided test at level α;
//! - **sequential**: the crate's `sequential::start` / `sequential::look` (the judge the
//!   controller calls, sample-ratio check included) on cumulative counters, θ0 = 1, one metric, α.
//!
//! Traffic: Poisson requests at 50 or 500 req/s split at a constant canary share, a look every
//! 60 s for 30 min; per look the request counts are Poisson draws and the event counts Binomial
//! draws on them (equivalent to simulating each request). Events: errors (1% on stable, 1.5% on
//! a regressed canary) or requests slower than the baseline's p90 (10% on stable; a lognormal
//! latency with σ = 0.5 shifted by +10% exceeds it with probability 1 − Φ(z₀.₉ − ln 1.1 / σ)).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use analysis::compare;
use analysis::counters::CounterSnapshot;
use analysis::lifecycle::{Phase, Tally, metric_phase};
use analysis::sequential::{self, CounterReadings};
use analysis::spec::{
    Bad, CanaryStable, ComparePlan, CompareTest, Direction, MetricLimits, SequentialPlan,
};
use analysis::threshold::ThresholdJudge;
use analysis::verdict::Verdict;
use anyhow::{Context, Result, anyhow, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, Poisson};
use statrs::distribution::{Beta, ContinuousCDF, Normal};

/// Looks in the 30-minute horizon, one every 60 s.
const LOOKS: usize = 30;
const LOOK_SECONDS: f64 = 60.0;
const ALPHAS: [f64; 2] = [0.05, 0.01];
const RATES: [f64; 2] = [50.0, 500.0];
const SHARES: [f64; 3] = [0.05, 0.2, 0.5];
const LOGNORMAL_SIGMA: f64 = 0.5;
const LATENCY_FACTOR: f64 = 1.1;
const ERROR_RATE: f64 = 0.01;
const REGRESSED_ERROR_RATE: f64 = 0.015;
const BASELINE_EXCEED: f64 = 0.1;
/// The threshold judge's margin over the baseline.
const THRESHOLD_MARGIN: f64 = 1.25;
const FAILURE_LIMIT: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    Errors,
    Latency,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Errors => "errors",
            Metric::Latency => "latency",
        }
    }

    fn baseline_probability(self) -> f64 {
        match self {
            Metric::Errors => ERROR_RATE,
            Metric::Latency => BASELINE_EXCEED,
        }
    }
}

/// The probability that a request of the +10% canary is slower than the baseline's p90.
fn regressed_exceed_probability() -> Result<f64> {
    let normal = Normal::standard();
    let z90 = normal.inverse_cdf(1.0 - BASELINE_EXCEED);
    let p = normal.sf(z90 - LATENCY_FACTOR.ln() / LOGNORMAL_SIGMA);
    if !(p > 0.0 && p < 1.0) {
        bail!("exceed probability {p} out of range");
    }
    Ok(p)
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    metric: Metric,
    rate: f64,
    share: f64,
    /// The canary's event probability (equal to the baseline's in an A/A cell).
    canary_probability: f64,
    aa: bool,
    runs: usize,
    seed: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Look {
    canary_requests: u64,
    stable_requests: u64,
    canary_events: u64,
    stable_events: u64,
}

/// The minute at which a judge aborted, per run (`None`: not within 30 min).
type Outcomes = Vec<Option<u32>>;

#[derive(Debug, Default)]
struct CellResult {
    threshold: Outcomes,
    /// Per α, in the order of `ALPHAS`.
    mann_whitney: Vec<Outcomes>,
    sequential: Vec<Outcomes>,
}

fn binomial(rng: &mut StdRng, n: u64, p: f64) -> Result<u64> {
    Ok(Binomial::new(n, p)?.sample(rng))
}

fn simulate(
    rng: &mut StdRng,
    cell: &Cell,
    canary: &Poisson<f64>,
    stable: &Poisson<f64>,
) -> Result<Vec<Look>> {
    let baseline = cell.metric.baseline_probability();
    (0..LOOKS)
        .map(|_| {
            let canary_requests = canary.sample(rng) as u64;
            let stable_requests = stable.sample(rng) as u64;
            Ok(Look {
                canary_requests,
                stable_requests,
                canary_events: binomial(rng, canary_requests, cell.canary_probability)?,
                stable_events: binomial(rng, stable_requests, baseline)?,
            })
        })
        .collect()
}

fn ratio(events: u64, requests: u64) -> f64 {
    if requests == 0 {
        f64::NAN
    } else {
        events as f64 / requests as f64
    }
}

/// The judges, built once per worker.
struct Judges {
    threshold: BTreeMap<&'static str, ThresholdJudge>,
    limits: MetricLimits,
}

impl Judges {
    fn new() -> Result<Self> {
        let mut threshold = BTreeMap::new();
        for metric in [Metric::Errors, Metric::Latency] {
            let bound = metric.baseline_probability() * THRESHOLD_MARGIN;
            let condition = format!("result[0] <= {bound}");
            let judge = ThresholdJudge::new(Some(&condition), None, metric.name())
                .map_err(|error| anyhow!("{condition}: {error}"))?;
            threshold.insert(metric.name(), judge);
        }
        Ok(Self {
            threshold,
            limits: MetricLimits {
                interval: Duration::from_secs(60),
                initial_delay: Duration::ZERO,
                count: Some(LOOKS as u32),
                failure_limit: FAILURE_LIMIT,
                // An interval without canary requests is left out rather than ending the run.
                inconclusive_limit: LOOKS as u32,
                consecutive_error_limit: 0,
            },
        })
    }

    fn threshold(&self, metric: Metric, looks: &[Look]) -> Result<Option<u32>> {
        let judge = self
            .threshold
            .get(metric.name())
            .context("no threshold judge")?;
        let mut tally = Tally::default();
        for (index, look) in looks.iter().enumerate() {
            let value = ratio(look.canary_events, look.canary_requests);
            let judgement = judge.judge(&[value]);
            if judgement.verdict == Verdict::Error {
                bail!("threshold judge errored: {}", judgement.message);
            }
            tally.add(judgement.verdict);
            if metric_phase(&self.limits, &tally, false) == Phase::Failed {
                return Ok(Some(index as u32 + 1));
            }
        }
        Ok(None)
    }

    fn mann_whitney(&self, looks: &[Look], alpha: f64) -> Result<Option<u32>> {
        let plan = ComparePlan {
            baseline_query: String::new(),
            test: CompareTest::MannWhitney,
            bad: Direction::Increase,
            tolerance: 0.0,
            confidence: 1.0 - 2.0 * alpha,
            step: Duration::from_secs(60),
            min_samples: 5,
        };
        let canary: Vec<f64> = looks
            .iter()
            .map(|l| ratio(l.canary_events, l.canary_requests))
            .collect();
        let baseline: Vec<f64> = looks
            .iter()
            .map(|l| ratio(l.stable_events, l.stable_requests))
            .collect();
        let judgement = compare::judge(&plan, &canary, &baseline);
        match judgement.verdict {
            Verdict::Fail => Ok(Some(LOOKS as u32)),
            Verdict::Pass | Verdict::Inconclusive => Ok(None),
            Verdict::Error => bail!("compare judge errored: {}", judgement.message),
        }
    }

    fn sequential(&self, looks: &[Look], share: f64, alpha: f64) -> Option<u32> {
        let plan = SequentialPlan {
            events: CanaryStable {
                canary: String::new(),
                stable: String::new(),
            },
            exposure: CanaryStable {
                canary: String::new(),
                stable: String::new(),
            },
            bad: Bad::Increase,
            theta0: 1.0,
            confidence: 1.0 - alpha,
        };
        let alpha = sequential::alpha_per_metric(plan.confidence, 1);
        let snapshot = |value: u64| CounterSnapshot::from([("{}".to_owned(), value as f64)]);
        let readings = |totals: &Look| CounterReadings {
            canary_events: snapshot(totals.canary_events),
            stable_events: snapshot(totals.stable_events),
            canary_exposure: snapshot(totals.canary_requests),
            stable_exposure: snapshot(totals.stable_requests),
        };
        let mut totals = Look::default();
        let mut state = sequential::start(&plan, readings(&totals), alpha);
        for (index, look) in looks.iter().enumerate() {
            totals.canary_requests += look.canary_requests;
            totals.stable_requests += look.stable_requests;
            totals.canary_events += look.canary_events;
            totals.stable_events += look.stable_events;
            let (next, judgement) = sequential::look(&state, readings(&totals), Some(share));
            if judgement.verdict == Verdict::Fail {
                return Some(index as u32 + 1);
            }
            state = next;
        }
        None
    }
}

fn run_cell(cell: &Cell, judges: &Judges) -> Result<CellResult> {
    let mut rng = StdRng::seed_from_u64(cell.seed);
    let per_look = cell.rate * LOOK_SECONDS;
    let canary = Poisson::new(per_look * cell.share)?;
    let stable = Poisson::new(per_look * (1.0 - cell.share))?;
    let mut result = CellResult {
        mann_whitney: vec![Vec::with_capacity(cell.runs); ALPHAS.len()],
        sequential: vec![Vec::with_capacity(cell.runs); ALPHAS.len()],
        ..CellResult::default()
    };
    for _ in 0..cell.runs {
        let looks = simulate(&mut rng, cell, &canary, &stable)?;
        result
            .threshold
            .push(judges.threshold(cell.metric, &looks)?);
        for (index, alpha) in ALPHAS.iter().enumerate() {
            result.mann_whitney[index].push(judges.mann_whitney(&looks, *alpha)?);
            result.sequential[index].push(judges.sequential(&looks, cell.share, *alpha));
        }
    }
    Ok(result)
}

/// Share of runs that aborted within the horizon.
fn abort_rate(outcomes: &Outcomes) -> f64 {
    aborted(outcomes) as f64 / outcomes.len() as f64
}

fn aborted(outcomes: &Outcomes) -> usize {
    outcomes.iter().filter(|o| o.is_some()).count()
}

/// The q-quantile of minutes to detect over all runs, a run without detection counting as
/// "later than 30 min" (`None`).
fn quantile_minutes(outcomes: &Outcomes, q: f64) -> Option<u32> {
    let mut minutes: Vec<u32> = outcomes.iter().map(|o| o.unwrap_or(u32::MAX)).collect();
    minutes.sort_unstable();
    let rank = ((q * minutes.len() as f64).ceil() as usize).clamp(1, minutes.len());
    minutes.get(rank - 1).copied().filter(|m| *m != u32::MAX)
}

/// Exact (Clopper–Pearson) two-sided 95% upper bound for a binomial proportion.
fn clopper_pearson_upper(successes: usize, trials: usize) -> Result<f64> {
    if successes >= trials {
        return Ok(1.0);
    }
    let beta = Beta::new(successes as f64 + 1.0, (trials - successes) as f64)?;
    Ok(beta.inverse_cdf(0.975))
}

fn minutes(value: Option<u32>) -> String {
    value.map_or_else(|| ">30".to_owned(), |m| m.to_string())
}

struct Options {
    aa_runs: usize,
    regression_runs: usize,
    seed: u64,
    threads: usize,
}

fn options() -> Result<Options> {
    let mut options = Options {
        aa_runs: 10_000,
        regression_runs: 10_000,
        seed: 20_260_401,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> Result<u64> {
            let text = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            text.parse()
                .with_context(|| format!("{flag}: not a number: {text}"))
        };
        match flag.as_str() {
            "--aa-runs" => options.aa_runs = usize::try_from(value()?)?,
            "--regression-runs" => options.regression_runs = usize::try_from(value()?)?,
            "--seed" => options.seed = value()?,
            "--threads" => options.threads = usize::try_from(value()?)?.max(1),
            "-h" | "--help" => {
                println!(
                    "judge-bench [--aa-runs N (10000)] [--regression-runs N (10000)] [--seed S] [--threads T]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; try --help"),
        }
    }
    if options.aa_runs == 0 || options.regression_runs == 0 {
        bail!("run counts must be positive");
    }
    Ok(options)
}

fn cells(options: &Options) -> Result<Vec<Cell>> {
    let latency_regressed = regressed_exceed_probability()?;
    let mut cells = Vec::new();
    for aa in [false, true] {
        for metric in [Metric::Errors, Metric::Latency] {
            for rate in RATES {
                for share in SHARES {
                    let canary_probability = match (aa, metric) {
                        (true, _) => metric.baseline_probability(),
                        (false, Metric::Errors) => REGRESSED_ERROR_RATE,
                        (false, Metric::Latency) => latency_regressed,
                    };
                    let index = cells.len() as u64;
                    cells.push(Cell {
                        metric,
                        rate,
                        share,
                        canary_probability,
                        aa,
                        runs: if aa {
                            options.aa_runs
                        } else {
                            options.regression_runs
                        },
                        seed: options
                            .seed
                            .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    });
                }
            }
        }
    }
    Ok(cells)
}

fn run_all(cells: &[Cell], threads: usize) -> Result<Vec<CellResult>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<CellResult>>>> =
        Mutex::new((0..cells.len()).map(|_| None).collect());
    // Largest cells first would balance better; cells are similar enough that order suffices.
    std::thread::scope(|scope| {
        for _ in 0..threads.min(cells.len()) {
            scope.spawn(|| {
                let judges = Judges::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(cell) = cells.get(index) else { break };
                    let outcome = match &judges {
                        Ok(judges) => run_cell(cell, judges),
                        Err(error) => Err(anyhow!("building the judges: {error}")),
                    };
                    if let Ok(mut slots) = results.lock()
                        && let Some(slot) = slots.get_mut(index)
                    {
                        *slot = Some(outcome);
                    }
                }
            });
        }
    });
    let slots = results
        .into_inner()
        .map_err(|_| anyhow!("a worker panicked"))?;
    slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| slot.with_context(|| format!("cell {index} was not run"))?)
        .collect()
}

fn row_label(cell: &Cell) -> String {
    format!(
        "{:<8}{:>6}{:>6.0}%",
        cell.metric.name(),
        cell.rate,
        cell.share * 100.0
    )
}

fn print_regressions(cells: &[Cell], results: &[CellResult], alpha_index: usize) {
    let runs = cells.iter().find(|c| !c.aa).map_or(0, |c| c.runs);
    println!(
        "Regressions (errors 1% → 1.5%; latency +10%, P(slower than baseline p90) 10% → {:.2}%), N = {runs} runs per row",
        cells
            .iter()
            .find(|c| !c.aa && c.metric == Metric::Latency)
            .map_or(f64::NAN, |c| c.canary_probability * 100.0)
    );
    println!(
        "{:<21} | {:^23}| {:^23}| {:^23}",
        "", "threshold (fL 2)", "MW fixed 30 min", "sequential"
    );
    println!(
        "{:<8}{:>6}{:>7} | {:>7}{:>7}{:>7}  | {:>7}{:>7}{:>7}  | {:>7}{:>7}{:>7}",
        "metric",
        "req/s",
        "share",
        "P(det)",
        "med",
        "p90",
        "P(det)",
        "med",
        "p90",
        "P(det)",
        "med",
        "p90"
    );
    for (cell, result) in cells.iter().zip(results).filter(|(c, _)| !c.aa) {
        let mut line = row_label(cell);
        for outcomes in [
            &result.threshold,
            &result.mann_whitney[alpha_index],
            &result.sequential[alpha_index],
        ] {
            line.push_str(&format!(
                " | {:>7.3}{:>7}{:>7} ",
                abort_rate(outcomes),
                minutes(quantile_minutes(outcomes, 0.5)),
                minutes(quantile_minutes(outcomes, 0.9))
            ));
        }
        println!("{}", line.trim_end());
    }
}

fn print_aa(cells: &[Cell], results: &[CellResult], alpha_index: usize) -> Result<()> {
    let runs = cells.iter().find(|c| c.aa).map_or(0, |c| c.runs);
    println!(
        "A/A (canary = stable), N = {runs} runs per row: false-abort rate [95% upper bound, Clopper–Pearson]"
    );
    println!(
        "{:<21} | {:^23}| {:^23}| {:^23}",
        "", "threshold (fL 2)", "MW fixed 30 min", "sequential"
    );
    for (cell, result) in cells.iter().zip(results).filter(|(c, _)| c.aa) {
        let mut line = row_label(cell);
        for outcomes in [
            &result.threshold,
            &result.mann_whitney[alpha_index],
            &result.sequential[alpha_index],
        ] {
            let upper = clopper_pearson_upper(aborted(outcomes), outcomes.len())?;
            line.push_str(&format!(
                " | {:>8.4} [{:>7.4}]   ",
                abort_rate(outcomes),
                upper
            ));
        }
        println!("{}", line.trim_end());
    }
    Ok(())
}

/// Checks the targets for the sequential judge at α = 0.05.
fn print_targets(cells: &[Cell], results: &[CellResult]) -> Result<()> {
    let alpha = ALPHAS[0];
    let find = |metric: Metric, rate: f64, share: f64, aa: bool| {
        cells
            .iter()
            .zip(results)
            .find(|(c, _)| c.metric == metric && c.rate == rate && c.share == share && c.aa == aa)
            .map(|(_, r)| r)
            .with_context(|| format!("no cell {metric:?} {rate} {share} {aa}"))
    };
    let verdict = |ok: bool| if ok { "MET   " } else { "MISSED" };
    println!("Targets for the sequential judge at α = {alpha}:");

    let mut worst = (0.0_f64, String::new());
    let mut all_ok = true;
    for (cell, result) in cells.iter().zip(results).filter(|(c, _)| c.aa) {
        let rate = abort_rate(&result.sequential[0]);
        all_ok &= rate <= alpha;
        if rate >= worst.0 {
            worst = (
                rate,
                format!(
                    "{} {} req/s {:.0}%",
                    cell.metric.name(),
                    cell.rate,
                    cell.share * 100.0
                ),
            );
        }
    }
    println!(
        "  [{}] A/A false aborts ≤ α at every share (both metrics and rates); highest {:.4} ({})",
        verdict(all_ok),
        worst.0,
        worst.1
    );

    for (metric, target) in [(Metric::Errors, 10), (Metric::Latency, 3)] {
        let regression = find(metric, 50.0, 0.2, false)?;
        let aa = find(metric, 50.0, 0.2, true)?;
        let sequential = quantile_minutes(&regression.sequential[0], 0.5);
        let mw = quantile_minutes(&regression.mann_whitney[0], 0.5);
        let fast = sequential.is_some_and(|m| m <= target);
        // The fixed-horizon test never decides before minute 30; undetected counts as > 30.
        let speedup_ok = match (sequential, mw) {
            (Some(s), Some(m)) => m >= 3 * s,
            (Some(s), None) => LOOKS as u32 >= 3 * s,
            (None, _) => false,
        };
        let (fa_sequential, fa_mw) = (
            abort_rate(&aa.sequential[0]),
            abort_rate(&aa.mann_whitney[0]),
        );
        let fa_ok = fa_sequential <= fa_mw;
        println!(
            "  [{}] {} at 20% share, 50 req/s: median {} min ≤ {target} min",
            verdict(fast),
            metric.name(),
            minutes(sequential)
        );
        println!(
            "  [{}] {} at 20% share, 50 req/s: ≥ 3× faster than MW (median {} vs {} min) at equal or lower false-abort rate ({:.4} vs MW {:.4}: {})",
            verdict(speedup_ok && fa_ok),
            metric.name(),
            minutes(sequential),
            minutes(mw),
            fa_sequential,
            fa_mw,
            if fa_ok { "ok" } else { "higher" }
        );
    }

    for metric in [Metric::Errors, Metric::Latency] {
        for rate in RATES {
            let mut misses = Vec::new();
            for (cell, result) in cells
                .iter()
                .zip(results)
                .filter(|(c, _)| c.aa && c.metric == metric && c.rate == rate)
            {
                let (s, t) = (
                    abort_rate(&result.sequential[0]),
                    abort_rate(&result.threshold),
                );
                if s >= t {
                    misses.push(format!("{:.0}%: {s:.4} vs {t:.4}", cell.share * 100.0));
                }
            }
            let detail = if misses.is_empty() {
                String::new()
            } else {
                format!(" (not at {})", misses.join("; "))
            };
            println!(
                "  [{}] {} at {rate} req/s: fewer A/A false aborts than threshold at every share{detail}",
                verdict(misses.is_empty()),
                metric.name()
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let options = options()?;
    let cells = cells(&options)?;
    let started = Instant::now();
    let results = run_all(&cells, options.threads)?;
    let elapsed = started.elapsed();

    println!("judge-bench: threshold vs fixed-horizon Mann–Whitney vs sequential (issue 4, §4)");
    println!(
        "Poisson traffic, a look every {LOOK_SECONDS} s, {LOOKS}-minute horizon, constant canary share per run; one metric, θ0 = 1."
    );
    println!(
        "Seed {}, N = {} A/A runs and {} regression runs per row; {} threads, {:.1} s.",
        options.seed,
        options.aa_runs,
        options.regression_runs,
        options.threads,
        elapsed.as_secs_f64()
    );
    println!(
        "P(det): share of runs aborted within 30 min; med/p90: minutes to abort over all runs (>30 = not within the horizon)."
    );
    println!(
        "threshold: per-interval canary error rate ≤ 1.25% / share above baseline p90 ≤ 12.5%, aborts on the 3rd failing interval; it ignores α (same numbers in both tables)."
    );
    println!(
        "MW fixed 30 min: compare judge on 30 per-interval rates, one-sided at level α (Kayenta's interval at confidence 1 − 2α)."
    );
    for (alpha_index, alpha) in ALPHAS.iter().enumerate() {
        println!();
        println!("===================== α = {alpha} =====================");
        print_regressions(&cells, &results, alpha_index);
        println!();
        print_aa(&cells, &results, alpha_index)?;
    }
    println!();
    print_targets(&cells, &results)?;
    Ok(())
}
