//! The dashboard in headless Chromium against the real controller: the login prompt instead of
//! data without a token, a list that follows a canary without a reload, a viewer who sees no
//! action and whose forged action is refused, a deployer whose click moves the rollout exactly
//! one step, an aborted analysis drawn with the look that decided it, and cluster strings
//! carrying markup that stay text. Screenshots go to a directory under the target directory,
//! printed by the tests, with the page weight and the time from a status change to the page.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, Locator};
use kube::api::{Api, PostParams};
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use rollout_controller::crd::analysis::AnalysisTemplate;
use serde_json::{Value, json};
use sluice_tests::BackfilledPrometheus;
use sluice_tests::browser::{Browser, WINDOW};
use sluice_tests::tokens::service_account_token;

use crate::cli::{FOUR_STEPS, built_binary};
use crate::dashboard_server::grant_view_reads;
use crate::prometheus_analysis::openmetrics;
use crate::rest_api::web_with_deployer_and_viewer;
use crate::rollouts::{create_rollout, create_service, rollout_manifest, set_image, status_until};
use crate::support::{
    DEADLINE, Env, RunningController, TestNamespace, watch_rollout, watch_step_history,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(dashboard::view_models_charts_and_escaping_in_the_browser),
        trial!(dashboard::the_list_follows_a_canary_viewers_cannot_act_and_a_deployer_promotes_one_step),
        trial!(dashboard::an_aborted_canary_shows_the_deciding_look_and_cluster_strings_stay_text),
        trial!(dashboard::kubectl_sluice_dashboard_acts_with_the_users_own_rights),
    ]
}

/// Where screenshots go: under the target directory, kept after the run.
fn artifacts() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn epoch_millis() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One browser on the dashboard of one controller.
struct Page {
    browser: Browser,
    base: String,
}

impl Page {
    /// A browser on the controller's dashboard, its chromedriver logging to
    /// `<artifacts>/<name>/`.
    async fn open(controller: &RunningController, name: &str) -> anyhow::Result<Self> {
        Self::at(controller.api_url()?, name).await
    }

    async fn at(base: String, name: &str) -> anyhow::Result<Self> {
        let logs = artifacts()?.join(name);
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let browser = Browser::start(&logs).await?;
        Ok(Self { browser, base })
    }

    fn client(&self) -> &Client {
        self.browser.client()
    }

    /// Loads the dashboard at `route` (the part after `#`) afresh.
    async fn goto(&self, route: &str) -> anyhow::Result<()> {
        self.client()
            .goto(&format!("{}/dashboard/#{route}", self.base))
            .await?;
        Ok(())
    }

    /// The value of a JavaScript expression.
    async fn eval(&self, expression: &str) -> anyhow::Result<Value> {
        Ok(self
            .client()
            .execute(&format!("return ({expression});"), vec![])
            .await?)
    }

    /// The value of an async function body, awaited in the page.
    async fn eval_async(&self, body: &str) -> anyhow::Result<Value> {
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             (async () => {{ {body} }})().then(done, (e) => done({{thrown: String(e && e.stack || e)}}));"
        );
        let value = self.client().execute_async(&script, vec![]).await?;
        if let Some(thrown) = value.get("thrown") {
            bail!("the page threw: {thrown}");
        }
        Ok(value)
    }

    /// Waits until `expression` is truthy; returns its value.
    async fn until(&self, what: &str, expression: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let value = self.eval(expression).await?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return Ok(value);
            }
            if tokio::time::Instant::now() >= deadline {
                let body = self
                    .eval("document.body.innerText")
                    .await
                    .unwrap_or_default();
                bail!("the page never showed {what}; it shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `css` selects. The page draws itself again on every event, so an
    /// element found a moment ago may be gone; it is found again, a few times.
    async fn click(&self, css: &str) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            let clicked = async { self.client().find(Locator::Css(css)).await?.click().await };
            match clicked.await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 => {
                    tries += 1;
                    eprintln!("clicking {css} again: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn sign_in(&self, token: &str) -> anyhow::Result<()> {
        self.until("the login prompt", "document.getElementById('token')")
            .await?;
        let input = self.client().find(Locator::Css("#token")).await?;
        input.send_keys(token).await?;
        self.click("#login button[type=submit]").await?;
        self.until("the signed-in user", "document.getElementById('user')")
            .await?;
        Ok(())
    }

    async fn sign_out(&self) -> anyhow::Result<()> {
        self.click("#sign-out").await?;
        self.until("the login prompt", "document.getElementById('token')")
            .await?;
        Ok(())
    }

    /// A screenshot of the whole page (the window grown to its height), saved as `name`.png.
    async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        // The window's height is the page's plus what the browser keeps for itself.
        let height = self
            .eval("(window.scrollTo(0, 0), document.documentElement.scrollHeight + window.outerHeight - window.innerHeight)")
            .await?
            .as_u64()
            .unwrap_or(u64::from(WINDOW.1));
        let height = u32::try_from(height.clamp(400, 3000)).unwrap_or(WINDOW.1);
        self.client().set_window_size(WINDOW.0, height).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client().screenshot().await?;
        self.client().set_window_size(WINDOW.0, WINDOW.1).await?;
        let path = artifacts()?.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("dashboard screenshot: {}", path.display());
        Ok(path)
    }

    /// KiB transferred for the page as loaded: the document, its assets and the API answers that
    /// have ended (an event stream is counted once it ends, so not here).
    async fn weight(&self) -> anyhow::Result<Value> {
        self.eval(
            "(() => {
                const entries = [...performance.getEntriesByType('navigation'),
                                 ...performance.getEntriesByType('resource')];
                const kib = (f) => Math.round(entries.reduce((s, e) => s + (e[f] || 0), 0) / 102.4) / 10;
                return {transferredKiB: kib('transferSize'), bodyKiB: kib('encodedBodySize'),
                        requests: entries.map((e) => e.name.replace(location.origin, '') + ' ' + e.transferSize)};
            })()",
        )
        .await
    }

    async fn stop(self) {
        self.browser.stop().await;
    }
}

/// The pure parts of the page (model.js, charts.js, dom.js, api.js's stream parser), checked in
/// the browser that runs them; no rollout needed, only the served assets.
async fn view_models_charts_and_escaping_in_the_browser(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("dash-unit", |ns: TestNamespace| async move {
        let controller = RunningController::with_api(ns.client.clone(), &ns.name);
        let page = Page::open(&controller, "unit").await?;
        let outcome = async {
            page.goto("/").await?;
            page.until("the login prompt", "document.getElementById('token')")
                .await?;
            let failures = page.eval_async(VIEW_MODEL_CHECKS).await?;
            ensure!(
                failures == json!([]),
                "view-model checks failed: {failures:#}"
            );
            Ok(())
        }
        .await;
        page.stop().await;
        outcome
    })
    .await
}

/// Each check pushes a message to `failures` when it does not hold.
const VIEW_MODEL_CHECKS: &str = r#"
const m = await import("/dashboard/model.js");
const c = await import("/dashboard/charts.js");
const d = await import("/dashboard/dom.js");
const api = await import("/dashboard/api.js");
const failures = [];
const eq = (what, got, want) => {
  if (JSON.stringify(got) !== JSON.stringify(want)) failures.push(what + ": got " + JSON.stringify(got) + ", want " + JSON.stringify(want));
};
const now = Date.parse("2026-12-01T10:00:00Z");

// Markup from the cluster stays text, in content and in attributes.
const evil = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>';
const p = d.h("p", { title: evil, "data-x": '"><b>' }, evil, 3);
eq("text child", p.textContent, evil + "3");
eq("no element made of text", p.children.length, 0);
eq("attribute kept whole", p.getAttribute("title"), evil);
const svg = d.s("text", {}, evil);
eq("svg text", [svg.namespaceURI, svg.textContent, svg.children.length], ["http://www.w3.org/2000/svg", evil, 0]);

// Steps as a timeline: done, current with time left, to come; analysis verdicts.
const steps = [
  { index: 0, description: "setWeight 20", kind: "setWeight" },
  { index: 1, description: "analysis errors", kind: "analysis" },
  { index: 2, description: "pause 2m", kind: "pause", pauseSeconds: 120 },
  { index: 3, description: "pause (until promoted)", kind: "pause", pauseSeconds: null },
];
const view = { namespace: "shop", name: "web", phase: "Paused", steps, currentStep: 2, stableRevision: "a", updatedRevision: "b",
  pauseEndsAt: "2026-12-01T10:01:05Z", analysisRuns: [{ kind: "step-1", phase: "Successful" }], weight: 20, strategy: "canary" };
eq("timeline", m.timeline(view, now).map((s) => [s.state, s.note]),
  [["done", ""], ["done", "Successful"], ["current", "1m05s left"], ["todo", ""]]);
eq("until promoted", m.timeline({ ...view, currentStep: 3, pauseEndsAt: null }, now)[3].note, "waiting for promote");
eq("finished", m.timeline({ ...view, phase: "Healthy", stableRevision: "b" }, now).map((s) => s.state), ["done", "done", "done", "done"]);
eq("step", m.stepOf(view), "3/4");
eq("step past the end", m.stepOf({ ...view, currentStep: 4 }), "4/4");
eq("split", m.split(view), [{ role: "stable", percent: 80 }, { role: "canary", percent: 20 }]);
eq("split done", m.split({ ...view, stableRevision: "b", weight: 100 }), [{ role: "stable", percent: 100 }]);
eq("age", [m.age("2026-12-01T09:59:15Z", now), m.age("2026-12-01T07:00:00Z", now), m.age("2026-11-28T10:00:00Z", now), m.age(null, now)], ["45s", "3h", "3d", ""]);

// Actions: none without update; with it, only those that apply now.
const actions = { promote: { applies: true }, promoteFull: { applies: true }, abort: { applies: true }, retry: { applies: false, reason: "not aborted" }, pause: { applies: true }, resume: { applies: false } };
eq("no update, no actions", m.offeredActions({ ...view, actions }, false), []);
eq("applicable actions", m.offeredActions({ ...view, actions }, true).map((a) => [a.name, a.path, a.body]),
  [["promote", "promote", { fromStep: 2 }], ["promoteFull", "promote", { full: true }], ["pause", "pause", undefined], ["abort", "abort", undefined]]);
eq("undecodable, no actions", m.offeredActions({ ...view, actions, undecodable: "spec.replicas: bad" }, true), []);
const revisions = [{ revision: 3, undo: { applies: false } }, { revision: 2, undo: { applies: true } }, { revision: null, undo: { applies: true } }];
eq("undo targets", m.undoTargets({ ...view, revisions }, true).map((r) => r.revision), [2]);
eq("no undo without update", m.undoTargets({ ...view, revisions }, false), []);

// The list: filter, grouping, live changes.
const list = [{ namespace: "b", name: "y", strategy: "canary", phase: "Healthy" }, { namespace: "a", name: "x", strategy: "blueGreen", phase: "Paused" }, { namespace: "b", name: "a", strategy: "canary", phase: "Aborted" }];
eq("filter", m.filterRollouts(list, "  canary   b ").map((v) => v.name), ["y", "a"]);
eq("filter phase", m.filterRollouts(list, "PAUSED").map((v) => v.name), ["x"]);
eq("by namespace", m.byNamespace(list).map(([ns, vs]) => [ns, vs.map((v) => v.name)]), [["a", ["x"]], ["b", ["a", "y"]]]);
eq("upsert", m.upsert(list, { namespace: "a", name: "x", phase: "Healthy" }).filter((v) => v.name === "x").map((v) => v.phase), ["Healthy"]);
eq("remove", m.remove(list, { namespace: "b", name: "y" }).length, 2);

// Why a sequential test failed, and its chart: threshold, log scale, the deciding look.
const looks = [0.5, 2, 8, 40, 90].map((e, i) => ({ verdict: i === 3 ? "Fail" : "Inconclusive", canary: 0.01 * (i + 1), stable: 0.004, eValue: e, eValueThreshold: 20, message: "look " + i }));
const metric = { name: "errors", phase: "Failed", looks, decidingLook: 3 };
eq("why", m.whySentence(metric), "errors: Failed · decided at look 4 of 5 · e-value 40 ≥ threshold 20 · canary 0.04 vs stable 0.004");
eq("sequential", c.isSequential(metric), true);
const chart = c.eValueChart(metric, "errors");
document.body.append(chart);
const y = (el) => Number(el.getAttribute("y1"));
const threshold = chart.querySelector("line.threshold");
if (!threshold) failures.push("no threshold line");
const dots = [...chart.querySelectorAll("circle.dot")];
eq("one dot per look", dots.length, 5);
const decided = chart.querySelector(".decided line");
if (!decided) failures.push("the deciding look is not marked");
else eq("mark on look 4", Number(decided.getAttribute("x1")), Number(dots[3].getAttribute("cx")));
eq("the deciding dot is larger", dots.map((d) => d.getAttribute("r")), ["4", "4", "4", "6", "4"]);
// Log scale: 40 is above 20 by as much as 8 is above 4 would be; 90 above the line, 8 below.
const cy = (i) => Number(dots[i].getAttribute("cy"));
if (threshold && !(cy(4) < y(threshold) && cy(2) > y(threshold))) failures.push("the threshold line is not between looks 3 and 5");
const gap = (a, b) => Math.log10(b / a);
const ratio = (cy(2) - cy(3)) / (cy(1) - cy(2));
if (Math.abs(ratio - gap(8, 40) / gap(2, 8)) > 0.01) failures.push("the e-value axis is not logarithmic: " + ratio);
eq("deciding label", chart.querySelector(".decided text").textContent, "decided: Fail");
const values = c.valuesChart(metric, "errors");
eq("values chart lines", [...values.querySelectorAll("polyline")].map((l) => l.getAttribute("class")), ["line stable", "line canary"]);
eq("no looks decided yet", m.decidingLook({ looks, decidingLook: null }), null);

// The event-stream parser: events split anywhere, CRLF, comments, multi-line data.
const events = [];
const feed = api.sseParser((type, data) => events.push([type, data]));
feed(": keep-alive\n\nevent: li");
feed("st\r\ndata: [1,\ndata: 2]\r\n\r\nevent: upsert\ndata: {\"name\":\"a\"}\n");
feed("\ndata: plain\n\n");
eq("sse", events, [["list", [1, 2]], ["upsert", { name: "a" }], ["message", "plain"]]);

// Numbers as people read them.
eq("num", [0.0123456, 1234.5, 2e-7, 5, null, NaN].map(m.num), ["0.0123", "1230", "2.00e-7", "5", "–", "NaN"]);
eq("ticks", m.ticks(0, 0.05, 4), [0, 0.02, 0.04]);
return failures;
"#;

/// (ms since the epoch, "phase|step" as the list shows them) of rollout `name` at each event a
/// watch sees; until the task is aborted.
type Seen = Arc<Mutex<Vec<(f64, String)>>>;

fn watch_list_cells(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> (Seen, tokio::task::JoinHandle<()>) {
    watch_rollout(client, ns, name, |r| {
        let at = epoch_millis();
        let steps = r.spec.strategy.canary.as_ref().map_or(0, |c| c.steps.len());
        let status = r.status.unwrap_or_default();
        let step = match status.current_step_index {
            Some(i) if steps > 0 => {
                let shown = usize::try_from(i).unwrap_or(0).saturating_add(1).min(steps);
                format!("{shown}/{steps}")
            }
            _ => String::new(),
        };
        Some((at, format!("{}|{step}", status.phase.as_str())))
    })
}

/// Records in the page, with the page's clock, each new "phase|step" the list's row of `name`
/// shows, as the DOM changes.
fn record_row(name: &str) -> String {
    format!(
        "(() => {{
            window.__rows = [];
            const record = () => {{
                const row = document.querySelector('tr.rollout[data-name=\"{name}\"]');
                const cells = row ? row.querySelector('.phase').textContent + '|' + row.querySelector('.col-step').textContent : '';
                const last = window.__rows[window.__rows.length - 1];
                if (!last || last[1] !== cells) window.__rows.push([Date.now(), cells]);
            }};
            new MutationObserver(record).observe(document.getElementById('main'), {{subtree: true, childList: true, characterData: true}});
            record();
            return true;
        }})()"
    )
}

async fn the_list_follows_a_canary_viewers_cannot_act_and_a_deployer_promotes_one_step(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("dash", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::with_api(client.clone(), &ns);
        let (deployer, viewer) = web_with_deployer_and_viewer(&client, &ns, &["get", "list", "update"]).await?;
        create_service(&client, &ns, "worker", "worker").await?;
        create_rollout(&client, &ns, rollout_manifest("worker", 2, "worker:1", serde_json::from_str(FOUR_STEPS)?)).await?;
        status_until(&client, &ns, "worker", "v1 Healthy", |s| s.phase == Phase::Healthy).await?;
        let page = Page::open(&controller, "list").await?;
        let outcome = async {
            // No token: the login prompt, and no rollout; the API says 401 to the page itself.
            page.goto(&format!("/namespaces/{ns}")).await?;
            page.until("the login prompt", "document.getElementById('token')").await?;
            ensure!(page.eval("document.querySelectorAll('tr.rollout').length").await? == json!(0), "rows without a token");
            let answer = page.eval_async(&format!("return (await fetch('/api/v1/rollouts?namespace={ns}')).status;")).await?;
            ensure!(answer == json!(401), "a read without a token answered {answer}");

            // The viewer: the list, live.
            page.sign_in(&viewer).await?;
            page.until("web Healthy in the list", "document.querySelector('tr.rollout[data-name=\"web\"] .phase')?.textContent === 'Healthy'").await?;
            page.until("worker in the list", "document.querySelector('tr.rollout[data-name=\"worker\"]')").await?;
            page.eval(&record_row("web")).await?;
            let (seen, watch) = watch_list_cells(&client, &ns, "web");
            set_image(&client, &ns, "web", "web:2").await?;
            page.until("web paused at step 2 without a reload", "document.querySelector('tr.rollout[data-name=\"web\"]')?.textContent.includes('Paused2/425%')").await?;
            // The MutationObserver ran before the page was reloaded, had it been: it is still there.
            let rows = page.eval("window.__rows").await?;
            watch.abort();
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            // When each "phase|step" first appeared.
            seen.dedup_by(|later, earlier| later.1 == earlier.1);
            let mut latencies = Vec::new();
            for (at, cells) in &seen {
                let shown = rows.as_array().into_iter().flatten().find(|r| r[1].as_str() == Some(cells.as_str()) && r[0].as_f64().is_some_and(|t| t >= *at - 50.0));
                if let Some(shown_at) = shown.and_then(|r| r[0].as_f64()) {
                    latencies.push((cells.clone(), shown_at - at));
                }
            }
            eprintln!("dashboard update latency (status seen by a watch -> list row changed in the page), ms: {latencies:?}");
            ensure!(latencies.iter().any(|(c, _)| c == "Paused|2/4"), "the page never showed Paused|2/4: watch {seen:?}, page {rows}");
            page.screenshot("list").await?;

            // The viewer on the rollout: no action, and a forged one with their token is refused.
            page.goto(&format!("/rollouts/{ns}/web")).await?;
            page.until("the steps", "document.getElementById('steps')").await?;
            page.until("the permissions answer", "document.querySelector('.rollout-page[data-may-update]')").await?;
            let buttons = page.eval("document.querySelectorAll('[data-action]').length").await?;
            ensure!(buttons == json!(0), "a viewer sees {buttons} action buttons");
            let forged = page.eval_async(&format!(
                "const r = await fetch('/api/v1/namespaces/{ns}/rollouts/web/promote', {{method: 'POST',
                    headers: {{Authorization: 'Bearer ' + sessionStorage.getItem('sluice.token'), 'Content-Type': 'application/json'}},
                    body: JSON.stringify({{fromStep: 1}})}});
                 return r.status;"
            )).await?;
            ensure!(forged == json!(403), "a viewer's forged promote answered {forged}");

            // The deployer promotes one step from the page.
            page.sign_out().await?;
            page.sign_in(&deployer).await?;
            page.until("the promote button", "document.querySelector('[data-action=\"promote\"]')").await?;
            // The weight of a first load of the rollout page, the token already in the tab.
            page.client().refresh().await?;
            page.until("the promote button", "document.querySelector('[data-action=\"promote\"]')").await?;
            let weight = page.weight().await?;
            eprintln!("dashboard page weight (rollout page, first load): {weight}");
            page.screenshot("paused-canary").await?;
            let (history, watch) = watch_step_history(&client, &ns, "web");
            page.click("[data-action=\"promote\"]").await?;
            page.until("the promote's answer", "document.getElementById('action-result')?.textContent.includes('done')").await?;
            let at_three = status_until(&client, &ns, "web", "the pause at step 3", |s| s.current_step_index == Some(3)).await?;
            ensure!(at_three.phase == Phase::Paused, "{at_three:?}");
            page.until("step 4 current on the page", "document.querySelector('.step.current')?.dataset.index === '3'").await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            watch.abort();
            let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
            ensure!(history.iter().all(|(step, _)| (1..=3).contains(step)), "the rollout left the steps one promote reaches: {history:?}");
            let now = status_until(&client, &ns, "web", "still paused", |_| true).await?;
            ensure!(now.current_step_index == Some(3) && now.phase == Phase::Paused, "one click moved more than a step: {now:?}");
            Ok(())
        }
        .await;
        page.stop().await;
        outcome
    })
    .await
}

/// Markup in every cluster string the page shows of this rollout that Kubernetes lets carry it:
/// an annotation, and the failure condition that the analysis message quotes. (A name cannot:
/// Kubernetes names are lowercase letters, digits, `-` and `.`.)
const XSS: &str = r#"<script>window.__xss=1</script><img src=x onerror="window.__xss=2">"#;

async fn an_aborted_canary_shows_the_deciding_look_and_cluster_strings_stay_text(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("dash-abort", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let strategy = json!({"canary": {
            "steps": [
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": "error-rate"}],
                              "args": [{"name": "prometheus", "value": "PROMETHEUS"}]}},
                {"pause": {}},
            ],
        }});
        let mut manifest = rollout_manifest("web", 4, "web:1", strategy);
        manifest["metadata"]["annotations"] = json!({"example.com/note": XSS});
        let hash = |image: &str| -> anyhow::Result<String> {
            let mut template = manifest["spec"]["template"].clone();
            template["spec"]["containers"][0]["image"] = json!(image);
            Ok(rollout_controller::hash::pod_template_hash(&serde_json::from_value(template)?))
        };
        let (v1, v2) = (hash("web:1")?, hash("web:2")?);
        // v2 fails 2.5% of its requests: each look fails, the third ends the run.
        let prometheus = BackfilledPrometheus::start(&openmetrics(&[(&v1, 20.0, 0.005), (&v2, 20.0, 0.025)])).await?;
        let query = "sum(rate(http_requests_total{rollouts_pod_template_hash=\"{{args.canary-hash}}\",code=~\"5..\"}[5m])) \
                     / sum(rate(http_requests_total{rollouts_pod_template_hash=\"{{args.canary-hash}}\"}[5m]))";
        let template = json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": "error-rate"},
            "spec": {
                "args": [{"name": "prometheus"}, {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}],
                "metrics": [{
                    "name": "error-rate", "interval": "1s", "count": 5, "failureLimit": 2,
                    "provider": {"prometheus": {"address": "{{args.prometheus}}", "query": query}},
                    "successCondition": "result[0] < 0.01",
                    "failureCondition": format!("result[0] >= 0.02 && '{XSS}' != ''"),
                }],
            },
        });
        let controller = RunningController::with_api(client.clone(), &ns);
        let deployer = service_account_token(&client, &ns, "deployer", &["get", "list", "update"]).await?;
        create_service(&client, &ns, "web", "web").await?;
        let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), &ns);
        templates.create(&PostParams::default(), &serde_json::from_value(template)?).await?;
        let manifest = serde_json::from_str::<Value>(&manifest.to_string().replace("PROMETHEUS", prometheus.url()))?;
        create_rollout(&client, &ns, manifest).await?;
        status_until(&client, &ns, "web", "v1 Healthy", |s| s.phase == Phase::Healthy).await?;
        let page = Page::open(&controller, "abort").await?;
        let outcome = async {
            page.goto(&format!("/rollouts/{ns}/web")).await?;
            page.sign_in(&deployer).await?;
            page.until("the rollout", "document.getElementById('rollout-name')").await?;
            set_image(&client, &ns, "web", "web:2").await?;
            let aborted = status_until(&client, &ns, "web", "v2 Aborted", |s| s.phase == Phase::Aborted && s.updated_revision.as_deref() == Some(v2.as_str())).await?;
            ensure!(aborted.stable_revision.as_deref() == Some(v1.as_str()), "{aborted:?}");
            page.until("Aborted on the page", "document.querySelector('.summary .phase')?.textContent === 'Aborted'").await?;
            page.until("the deciding look in the chart", "document.querySelector('[data-metric=\"error-rate\"] svg.values .decided text')").await?;

            // Why, at a glance: the banner names the metric and the deciding look; the chart marks
            // it, and the table of looks singles it out.
            let why = page.eval("document.getElementById('why').textContent").await?;
            let why = why.as_str().unwrap_or_default();
            ensure!(why.contains("error-rate: Failed") && why.contains("decided at look 3 of 3"), "the banner says: {why}");
            let mark = page.eval("document.querySelector('[data-metric=\"error-rate\"] svg.values .decided text').textContent").await?;
            ensure!(mark == json!("decided: Fail"), "the chart's mark says {mark}");
            let marked_x = page.eval("Number(document.querySelector('[data-metric=\"error-rate\"] svg.values .decided line').getAttribute('x1'))").await?;
            let third_x = page.eval("Number(document.querySelectorAll('[data-metric=\"error-rate\"] svg.values circle.canary')[2].getAttribute('cx'))").await?;
            ensure!(marked_x == third_x, "the mark is at x={marked_x}, the third look at x={third_x}");
            let deciding_row = page.eval("[...document.querySelectorAll('[data-metric=\"error-rate\"] .looks tbody tr')].findIndex((r) => r.classList.contains('deciding'))").await?;
            ensure!(deciding_row == json!(2), "the deciding row is {deciding_row}");
            let retry = page.eval("Boolean(document.querySelector('[data-action=\"retry\"]')) && !document.querySelector('[data-action=\"promote\"]')").await?;
            ensure!(retry == json!(true), "an aborted rollout offers retry and no promote");
            page.click("[data-metric=\"error-rate\"] .looks summary").await?;
            page.click(".annotations summary").await?;
            page.screenshot("aborted-canary").await?;

            // The markup is text: no script ran in this document, which drew it many times, no
            // element was made of it, and it reads as typed. Drawn once more, with an ear for the
            // Content-Security-Policy.
            page.eval(
                "(() => { window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); return true; })()",
            ).await?;
            page.goto(&format!("/namespaces/{ns}")).await?;
            page.until("the list", "document.querySelector('tr.rollout[data-name=\"web\"]')").await?;
            page.goto(&format!("/rollouts/{ns}/web")).await?;
            page.until("the chart again", "document.querySelector('[data-metric=\"error-rate\"] svg.values .decided')").await?;
            let ran = page.eval("[window.__xss ?? null, document.querySelectorAll('img').length, document.querySelectorAll('script').length]").await?;
            ensure!(ran == json!([null, 0, 1]), "[window.__xss, <img>s, <script>s] = {ran}");
            let text = page.eval("document.body.textContent").await?;
            let text = text.as_str().unwrap_or_default();
            ensure!(text.matches(XSS).count() >= 2, "the annotation and the analysis message do not read as typed:\n{text}");
            let csp = page.eval("window.__csp ?? []").await?;
            ensure!(csp == json!([]), "Content-Security-Policy violations: {csp}");
            Ok(())
        }
        .await;
        page.stop().await;
        outcome
    })
    .await
}

/// `kubectl sluice dashboard` as `user`'s kubeconfig runs it: the one-time link it printed, and
/// the process, stopped when dropped.
struct LocalDashboard {
    link: String,
    _process: tokio::process::Child,
}

impl LocalDashboard {
    async fn start(env: &Env, ns: &str, user: &str, token: &str) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let kubeconfig = env
            .cluster()
            .await?
            .token_kubeconfig(&format!("{ns}-{user}"), token)?;
        let mut process = tokio::process::Command::new(built_binary("kubectl-sluice")?)
            .args(["-n", ns, "dashboard", "--port", "0", "--no-open"])
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = process.stdout.take().context("no stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            DEADLINE,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("kubectl sluice dashboard printed no link")??;
        let link = line.trim().to_owned();
        ensure!(
            link.starts_with("http://127.0.0.1:") && link.contains("/dashboard/login?code="),
            "printed {line:?}"
        );
        Ok(Self {
            link,
            _process: process,
        })
    }

    /// `http://127.0.0.1:PORT`.
    fn origin(&self) -> String {
        self.link
            .split("/dashboard/")
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The plugin serves the page on loopback with the user's kubeconfig: a session cookie from
/// the printed link, no token prompt; a viewer sees no action, a deployer's promote (a POST with
/// the CSRF token) moves the rollout one step.
async fn kubectl_sluice_dashboard_acts_with_the_users_own_rights(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("dash-local", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        // The plugin reads and patches as the user: the deployer needs `patch`, and both read
        // what a view is built of.
        let (deployer, viewer) =
            web_with_deployer_and_viewer(&client, &ns, &["get", "list", "update", "patch"]).await?;
        grant_view_reads(&client, &ns, &["deployer", "viewer"]).await?;
        set_image(&client, &ns, "web", "web:2").await?;
        status_until(&client, &ns, "web", "paused at step 1", |s| {
            s.current_step_index == Some(1) && s.phase == Phase::Paused
        })
        .await?;

        for (user, token) in [("viewer", &viewer), ("deployer", &deployer)] {
            let local = LocalDashboard::start(env, &ns, user, token).await?;
            let page = Page::at(local.origin(), &format!("local-{user}")).await?;
            let outcome = async {
                page.client().goto(&local.link).await?;
                page.until(
                    "the list of the kubeconfig's namespace",
                    "document.querySelector('tr.rollout[data-name=\"web\"]')",
                )
                .await?;
                ensure!(
                    page.eval("document.getElementById('token')").await? == Value::Null,
                    "a token prompt in session mode"
                );
                page.goto(&format!("/rollouts/{ns}/web")).await?;
                page.until(
                    "the permissions answer",
                    "document.querySelector('.rollout-page[data-may-update]')",
                )
                .await?;
                let buttons = page
                    .eval("document.querySelectorAll('[data-action]').length")
                    .await?;
                if user == "viewer" {
                    ensure!(
                        buttons == json!(0),
                        "a viewer sees {buttons} action buttons"
                    );
                    return Ok(());
                }
                page.until(
                    "the promote button",
                    "document.querySelector('[data-action=\"promote\"]')",
                )
                .await?;
                page.click("[data-action=\"promote\"]").await?;
                page.until(
                    "the promote's answer",
                    "document.getElementById('action-result')?.textContent.includes('done')",
                )
                .await?;
                let at_three = status_until(&client, &ns, "web", "the pause at step 3", |s| {
                    s.current_step_index == Some(3)
                })
                .await?;
                ensure!(at_three.phase == Phase::Paused, "{at_three:?}");
                Ok(())
            }
            .await;
            page.stop().await;
            outcome?;
        }
        Ok(())
    })
    .await
}
