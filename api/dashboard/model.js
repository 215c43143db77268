// What the page shows, worked out from the API's views: pure functions of a view and `now`, so
// that they can be checked without a cluster (tests/e2e/dashboard.rs runs them in the browser).

/** "45s", "12m", "3h", "2d": how long ago `since` (RFC 3339) was at `now` (ms). */
export function age(since, now) {
  const then = Date.parse(since || "");
  if (Number.isNaN(then)) return "";
  return duration(Math.max(0, now - then));
}

/** A duration in ms, as its largest whole unit. */
export function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

/** "1m05s" left until `until` (RFC 3339), or null when it is not a time. */
export function timeLeft(until, now) {
  const end = Date.parse(until || "");
  if (Number.isNaN(end)) return null;
  const s = Math.max(0, Math.ceil((end - now) / 1000));
  const m = Math.floor(s / 60);
  return m > 0 ? m + "m" + String(s % 60).padStart(2, "0") + "s" : s + "s";
}

/** "2/5" (1-based step of how many), or "" for a rollout without steps. */
export function stepOf(view) {
  if (!view.steps || view.steps.length === 0 || view.currentStep == null) return "";
  return Math.min(view.currentStep + 1, view.steps.length) + "/" + view.steps.length;
}

export function weightOf(view) {
  return view.weight == null ? "" : view.weight + "%";
}

export function readyOf(view) {
  return (view.ready ?? 0) + "/" + (view.desired ?? 0);
}

/** The views whose namespace, name, strategy or phase contains every word of `text`. */
export function filterRollouts(views, text) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  return views.filter((v) => {
    const hay = [v.namespace, v.name, v.strategy, v.phase].join(" ").toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

/** [[namespace, views sorted by name]], namespaces in order. */
export function byNamespace(views) {
  const groups = new Map();
  for (const v of [...views].sort((a, b) => key(a).localeCompare(key(b)))) {
    if (!groups.has(v.namespace)) groups.set(v.namespace, []);
    groups.get(v.namespace).push(v);
  }
  return [...groups.entries()];
}

function key(v) {
  return v.namespace + "\u0000" + v.name;
}

/** Puts `view` into the list in place of the one of its namespace and name. */
export function upsert(views, view) {
  return [...views.filter((v) => key(v) !== key(view)), view];
}

export function remove(views, gone) {
  return views.filter((v) => key(v) !== key(gone));
}

/**
 * The steps as a timeline: each `{index, description, state, note}` with state `done`,
 * `current` or `todo`, and a note for the current pause's time left or an analysis step's
 * verdict.
 */
export function timeline(view, now) {
  const current = view.currentStep;
  const finished = view.phase === "Healthy" && view.stableRevision === view.updatedRevision;
  return (view.steps || []).map((step) => {
    let state = "todo";
    if (finished || (current != null && step.index < current)) state = "done";
    else if (current != null && step.index === current) state = "current";
    let note = "";
    if (step.kind === "analysis" || /^analysis\b/.test(step.description)) {
      const run = (view.analysisRuns || []).find((r) => r.kind === "step-" + step.index);
      if (run) note = run.phase;
    }
    if (state === "current" && (step.kind === "pause" || /^pause\b/.test(step.description))) {
      const left = timeLeft(view.pauseEndsAt, now);
      if (view.aborted) note = "";
      else if (left !== null) note = left + " left";
      else if (step.pauseSeconds == null) note = "waiting for promote";
    }
    return { index: step.index, description: step.description, state, note };
  });
}

/** The traffic split as `[{role, percent}]`, stable first. */
export function split(view) {
  if (view.weight == null) return [];
  const updated = Math.max(0, Math.min(100, view.weight));
  const role = view.strategy === "blueGreen" ? "preview" : view.strategy === "abTest" ? "B" : "canary";
  if (view.stableRevision && view.stableRevision === view.updatedRevision) {
    return [{ role: "stable", percent: 100 }];
  }
  return [
    { role: "stable", percent: 100 - updated },
    { role, percent: updated },
  ];
}

const ACTIONS = [
  { name: "promote", label: "Promote one step", path: "promote", body: (v) => ({ fromStep: v.currentStep }) },
  { name: "promoteFull", label: "Promote fully", path: "promote", body: () => ({ full: true }) },
  { name: "pause", label: "Pause", path: "pause" },
  { name: "resume", label: "Resume", path: "resume" },
  { name: "abort", label: "Abort", path: "abort", danger: true },
  { name: "retry", label: "Retry", path: "retry" },
];

/**
 * The actions to offer: none unless the viewer may update, and of those only the ones that
 * apply now. Each `{name, label, path, body, danger}`.
 */
export function offeredActions(view, mayUpdate) {
  if (!mayUpdate || view.undecodable) return [];
  const applies = view.actions || {};
  return ACTIONS.filter((a) => applies[a.name] && applies[a.name].applies).map((a) => ({
    name: a.name,
    label: a.label,
    path: a.path,
    body: a.body ? a.body(view) : undefined,
    danger: Boolean(a.danger),
  }));
}

/** The revisions one may go back to, when the viewer may update. */
export function undoTargets(view, mayUpdate) {
  if (!mayUpdate || view.undecodable) return [];
  return (view.revisions || []).filter((r) => r.revision != null && r.undo && r.undo.applies);
}

const VERDICTS = ["Pass", "Fail", "Inconclusive", "Error"];

/** A verdict as a class-name suffix: one of the judge's four, or `other`. */
export function verdictKey(verdict) {
  return VERDICTS.includes(verdict) ? verdict : "other";
}

/** Numbers as people read them: 3 significant digits, no exponent for everyday sizes. */
export function num(x) {
  if (x === null || x === undefined) return "–";
  if (typeof x !== "number") return String(x);
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e6 || a < 1e-4) return x.toExponential(2);
  if (Number.isInteger(x)) return String(x);
  return String(Number(x.toPrecision(3)));
}

/** The look that decided `metric`: its index into `looks`, or null while none has. */
export function decidingLook(metric) {
  const looks = metric.looks || [];
  if (metric.decidingLook != null && metric.decidingLook < looks.length) return metric.decidingLook;
  return null;
}

/**
 * One sentence on why a metric stands where it does: its phase, the deciding look, and the
 * numbers the judge had at that look.
 */
export function whySentence(metric) {
  const looks = metric.looks || [];
  const at = decidingLook(metric);
  const look = at != null ? looks[at] : looks[looks.length - 1];
  const parts = [metric.name + ": " + metric.phase];
  if (at != null) parts.push("decided at look " + (at + 1) + " of " + looks.length);
  else if (looks.length > 0) parts.push(looks.length + " look" + (looks.length === 1 ? "" : "s") + " so far");
  if (look) {
    if (look.eValue != null && look.eValueThreshold != null) {
      parts.push(
        "e-value " + num(look.eValue) + (look.eValue >= look.eValueThreshold ? " ≥ " : " < ") +
          "threshold " + num(look.eValueThreshold),
      );
    } else if (look.pValue != null) {
      parts.push("p = " + num(look.pValue));
    }
    if (look.canary != null && look.stable != null) {
      parts.push("canary " + num(look.canary) + " vs stable " + num(look.stable));
    } else if (look.canary != null) {
      parts.push("value " + num(look.canary));
    }
  }
  return parts.join(" · ");
}

/** The run that decided the attempt: the first failed (or errored) run, else none. */
export function decidingRun(view) {
  return (view.analysisRuns || []).find((r) => r.phase === "Failed" || r.phase === "Error") || null;
}

/** A linear scale from [lo, hi] to [a, b], widened so that lo < hi. */
export function linear(lo, hi, a, b) {
  if (!(hi > lo)) {
    hi = lo + (lo === 0 ? 1 : Math.abs(lo));
  }
  return (x) => a + ((x - lo) / (hi - lo)) * (b - a);
}

/** A log10 scale from [lo, hi] (both > 0) to [a, b]. */
export function log(lo, hi, a, b) {
  const l = Math.log10(lo);
  const scale = linear(l, Math.log10(hi), a, b);
  return (x) => scale(Math.log10(Math.max(x, lo)));
}

/** Powers of ten from lo to hi, for a log axis. */
export function decades(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
  return out;
}

/** About `count` round ticks between lo and hi. */
export function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const step10 = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * step10).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step / 1e6; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}
