// One rollout: what went wrong (when it did), the actions the viewer may take now, the steps as
// a timeline, the traffic split, the revisions and every analysis run with its charts.

import { ApiError, call, follow, rolloutPath } from "./api.js";
import { eValueChart, isSequential, valuesChart } from "./charts.js";
import { h, replace, s } from "./dom.js";
import {
  age,
  decidingLook,
  decidingRun,
  num,
  offeredActions,
  split,
  timeline,
  undoTargets,
  verdictKey,
  whySentence,
} from "./model.js";

const PHASES = ["Progressing", "Paused", "Healthy", "Degraded", "Aborted"];

/** A phase as a coloured badge; the colour comes from a fixed list, never from the cluster. */
export function phaseBadge(view) {
  const phase = PHASES.includes(view.phase) ? view.phase : "other";
  return h("span", { class: "phase p-" + phase }, view.phase || "–");
}

function verdictClass(verdict) {
  return "verdict v-" + verdictKey(verdict);
}

function runClass(phase) {
  const known = ["Pending", "Running", "Successful", "Failed", "Error", "Inconclusive"];
  return "run-phase r-" + (known.includes(phase) ? phase : "other");
}

function clock(rfc3339) {
  const t = new Date(rfc3339 || "");
  return Number.isNaN(t.getTime()) ? "" : t.toLocaleTimeString([], { hour12: false });
}

/** `step-2` is the analysis of the third step; the other kinds read as they are. */
function runTitle(kind) {
  const step = /^step-(\d+)$/.exec(kind || "");
  return step ? "Step " + (Number(step[1]) + 1) + " analysis" : kind;
}

function section(title, id, ...children) {
  return h("section", { class: "panel", id }, h("h2", {}, title), ...children);
}

/** Shows rollout `namespace/name` in `container` until the returned function is called. */
export function rolloutView(container, namespace, name) {
  const control = new AbortController();
  const path = rolloutPath(namespace, name);
  let view = null;
  let mayUpdate = false;
  let busy = false;
  let result = null;
  // Which <details> the viewer opened, kept across redraws: "annotations", or a run/metric.
  const openLooks = new Set();
  const page = h("div", { class: "rollout-page" });
  const status = h("p", { id: "rollout-status", class: "muted" }, "Loading…");
  replace(
    container,
    h(
      "nav",
      { class: "crumbs" },
      h("a", { href: "#/" }, "Rollouts"),
      " / ",
      h("a", { href: "#/namespaces/" + encodeURIComponent(namespace), id: "back" }, namespace),
      " / ",
      name,
    ),
    status,
    page,
  );

  async function act(action) {
    busy = true;
    result = { text: action.label + "…", error: false };
    draw();
    try {
      view = await call("POST", path + "/" + action.path, action.body);
      result = { text: action.label + ": done.", error: false };
    } catch (error) {
      const why = error instanceof ApiError && error.status === 409 ? "does not apply now: " : "failed: ";
      result = { text: action.label + " " + why + error.message, error: true };
    }
    busy = false;
    draw();
  }

  function actionsPanel() {
    const offered = offeredActions(view, mayUpdate);
    if (offered.length === 0 && !result) return null;
    return h(
      "section",
      { class: "actions", id: "actions" },
      offered.map((a) =>
        h(
          "button",
          {
            class: a.danger ? "danger" : "primary",
            "data-action": a.name,
            disabled: busy,
            on: { click: () => act(a) },
          },
          a.label,
        ),
      ),
      result ? h("p", { id: "action-result", class: result.error ? "error" : "muted" }, result.text) : null,
    );
  }

  function verdictBanner() {
    const run = decidingRun(view);
    if (!view.aborted && !run) return null;
    const failed = run ? (run.metrics || []).filter((m) => m.phase === "Failed" || m.phase === "Error") : [];
    return h(
      "section",
      { class: "banner", id: "why" },
      h("h2", {}, view.aborted ? "Aborted" : "Analysis failed"),
      h("p", { class: "message" }, view.message),
      failed.map((m) => h("p", { class: "reason" }, whySentence(m))),
    );
  }

  function stepsPanel() {
    const steps = timeline(view, Date.now());
    if (steps.length === 0) return null;
    return section(
      "Steps",
      "steps",
      h(
        "ol",
        { class: "timeline" },
        steps.map((step) =>
          h(
            "li",
            { class: "step " + step.state, "data-index": step.index },
            h("span", { class: "marker" }, step.state === "done" ? "✓" : String(step.index + 1)),
            h("span", { class: "description" }, step.description),
            step.note ? h("span", { class: "note" }, step.note) : null,
          ),
        ),
      ),
    );
  }

  function trafficPanel() {
    const parts = split(view);
    if (parts.length === 0) return null;
    const bar = h(
      "div",
      { class: "split", role: "img", "aria-label": parts.map((p) => p.role + " " + p.percent + "%").join(", ") },
      parts
        .filter((p) => p.percent > 0)
        .map((p) => {
          const share = h("span", { class: "share " + (p.role === "stable" ? "stable" : "canary") }, p.percent >= 12 ? p.role + " " + p.percent + "%" : "");
          // CSSOM, not a style attribute: the Content-Security-Policy allows only the former.
          share.style.width = p.percent + "%";
          return share;
        }),
    );
    return section(
      "Traffic",
      "traffic",
      bar,
      h("p", { class: "muted" }, parts.map((p) => p.role + " " + p.percent + "%").join(" · ") + (view.trafficRouter ? " · by " + view.trafficRouter : "")),
    );
  }

  function revisionsPanel() {
    const revisions = view.revisions || [];
    if (revisions.length === 0) return null;
    const undo = new Set(undoTargets(view, mayUpdate).map((r) => r.revision));
    return section(
      "Revisions",
      "revisions",
      h(
        "table",
        { class: "revisions" },
        h("thead", {}, h("tr", {}, ["Revision", "Role", "Hash", "Images", "Pods ready", ""].map((c, i) => h("th", { class: i === 0 || i === 4 ? "num" : null }, c)))),
        h(
          "tbody",
          {},
          revisions.map((r) =>
            h(
              "tr",
              { "data-revision": r.revision ?? "" },
              h("td", { class: "num" }, r.revision ?? "–"),
              h("td", {}, h("span", { class: "role" }, r.role)),
              h("td", { class: "mono" }, r.hash),
              h("td", { class: "mono" }, (r.images || []).map((i) => h("div", {}, i))),
              h("td", { class: "num" }, r.ready + "/" + r.desired),
              h(
                "td",
                {},
                undo.has(r.revision)
                  ? h(
                      "button",
                      {
                        "data-action": "undo",
                        disabled: busy,
                        on: { click: () => act({ label: "Undo to revision " + r.revision, path: "undo", body: { toRevision: r.revision } }) },
                      },
                      "Undo to this",
                    )
                  : null,
              ),
            ),
          ),
        ),
      ),
    );
  }

  function looksTable(run, metric) {
    const id = run.name + "/" + metric.name;
    const at = decidingLook(metric);
    const details = h(
      "details",
      { class: "looks", open: openLooks.has(id) },
      h("summary", {}, "Every look (" + (metric.looks || []).length + ")"),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["#", "Finished", "Verdict", "Canary", "Stable", "Samples", "Statistic", "Message"].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          (metric.looks || []).map((l, i) =>
            h(
              "tr",
              { class: i === at ? "deciding" : null },
              h("td", { class: "num" }, i + 1),
              h("td", {}, clock(l.finishedAt)),
              h("td", {}, h("span", { class: verdictClass(l.verdict) }, l.verdict)),
              h("td", { class: "num" }, num(l.canary)),
              h("td", { class: "num" }, num(l.stable)),
              h("td", { class: "num" }, [l.canarySamples, l.stableSamples].filter((n) => n != null).join(" / ")),
              h("td", { class: "num" }, l.eValue != null ? "e " + num(l.eValue) : l.pValue != null ? "p " + num(l.pValue) : num(l.statistic)),
              h("td", { class: "message" }, l.message),
            ),
          ),
        ),
      ),
    );
    details.addEventListener("toggle", () => (details.open ? openLooks.add(id) : openLooks.delete(id)));
    return details;
  }

  function metricBlock(run, metric) {
    const why = whySentence(metric);
    const looks = metric.looks || [];
    return h(
      "div",
      { class: "metric", "data-metric": metric.name },
      h(
        "h4",
        {},
        metric.name,
        " ",
        h("span", { class: runClass(metric.phase) }, metric.phase),
        metric.dryRun ? h("span", { class: "tag" }, "dry run") : null,
        h("span", { class: "tally muted" }, metric.passed + " pass · " + metric.failed + " fail · " + metric.inconclusive + " inconclusive · " + metric.errors + " error"),
      ),
      h("p", { class: "why" }, why),
      looks.length === 0
        ? h("p", { class: "muted" }, "No looks yet.")
        : h(
            "div",
            { class: "charts" },
            valuesChart(metric, metric.name + " values per look. " + why),
            isSequential(metric) ? eValueChart(metric, metric.name + " e-value per look against its threshold. " + why) : null,
          ),
      looks.length === 0 ? null : looksTable(run, metric),
    );
  }

  function analysisPanel() {
    const runs = view.analysisRuns || [];
    if (runs.length === 0) return null;
    return section(
      "Analysis",
      "analysis",
      runs.map((run) =>
        h(
          "article",
          { class: "run", "data-run": run.name },
          h("h3", {}, runTitle(run.kind), " ", h("span", { class: runClass(run.phase) }, run.phase), " ", h("span", { class: "muted mono" }, run.name)),
          run.message ? h("p", { class: "message" }, run.message) : null,
          (run.metrics || []).map((m) => metricBlock(run, m)),
        ),
      ),
    );
  }

  function annotationList(annotations) {
    const details = h(
      "details",
      { class: "annotations", open: openLooks.has("annotations") },
      h("summary", {}, "Annotations (" + annotations.length + ")"),
      h("dl", {}, annotations.map(([k, v]) => [h("dt", { class: "mono" }, k), h("dd", { class: "mono" }, v)])),
    );
    details.addEventListener("toggle", () => (details.open ? openLooks.add("annotations") : openLooks.delete("annotations")));
    return details;
  }

  function summary() {
    const facts = [
      ["Strategy", view.strategy],
      ["Router", view.trafficRouter],
      ["Ready", (view.ready ?? 0) + "/" + (view.desired ?? 0)],
      ["Age", age(view.createdAt, Date.now())],
      ["Generation", view.observedGeneration + "/" + view.generation],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    const annotations = Object.entries(view.annotations || {});
    return h(
      "section",
      { class: "summary" },
      h("h1", {}, h("span", { id: "rollout-name" }, view.name), " ", phaseBadge(view), view.paused ? h("span", { class: "tag" }, "paused by a person") : null),
      // With a verdict banner below, the message is said there.
      h("p", { class: "message", id: "rollout-message", hidden: Boolean(view.aborted || decidingRun(view)) }, view.message),
      view.undecodable ? h("p", { class: "error" }, "Cannot be decoded: " + view.undecodable) : null,
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      annotations.length ? annotationList(annotations) : null,
    );
  }

  let steps = null;
  function draw() {
    if (!view) return;
    steps = stepsPanel();
    replace(
      page,
      summary(),
      verdictBanner(),
      actionsPanel(),
      steps,
      trafficPanel(),
      revisionsPanel(),
      analysisPanel(),
    );
  }

  call("GET", path + "/permissions")
    .then((p) => {
      mayUpdate = Boolean(p && p.update === true);
    })
    .catch(() => {
      mayUpdate = false;
    })
    .finally(() => {
      page.dataset.mayUpdate = String(mayUpdate);
      draw();
    });
  follow(
    path + "/events",
    control.signal,
    (type, data) => {
      if (type === "status") {
        view = data;
        replace(status);
        draw();
      } else if (type === "deleted") {
        replace(status, h("span", { class: "error" }, "This rollout was deleted."));
        control.abort();
      } else if (type === "error") {
        replace(status, h("span", { class: "error" }, "The cluster cannot be read now: " + (data.message || "")));
      }
    },
    (error) => {
      if (error instanceof ApiError && error.status === 401) return;
      replace(status, h("span", { class: "error" }, error instanceof ApiError && error.status !== 503 ? error.message : "Reconnecting: " + error.message));
    },
  );
  // A timed pause counts down without the cluster saying so.
  const ticker = setInterval(() => {
    if (!view || !view.pauseEndsAt || !steps) return;
    const fresh = stepsPanel();
    steps.replaceWith(fresh);
    steps = fresh;
  }, 1000);
  return () => {
    clearInterval(ticker);
    control.abort();
  };
}
