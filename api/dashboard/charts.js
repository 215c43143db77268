// "Why the judge decided", drawn: per metric the canary's and stable's values over the looks,
// and for a sequential test the e-value path against its threshold on a log scale. The look
// that decided is marked in both.

import { append, s } from "./dom.js";
import { decades, decidingLook, linear, log, num, ticks, verdictKey } from "./model.js";

const W = 520;
const H = 170;
const M = { left: 52, right: 14, top: 22, bottom: 26 };

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

function frame(label, className) {
  return s("svg", {
    class: "chart " + className,
    viewBox: "0 0 " + W + " " + H,
    role: "img",
    "aria-label": label,
  });
}

function xScale(n) {
  if (n <= 1) return () => (M.left + W - M.right) / 2;
  return linear(0, n - 1, M.left + 8, W - M.right - 8);
}

/** A polyline through the finite points, broken where a value is missing. */
function lines(points, className) {
  const runs = [[]];
  for (const p of points) {
    if (p) runs[runs.length - 1].push(p);
    else if (runs[runs.length - 1].length > 0) runs.push([]);
  }
  return runs
    .filter((r) => r.length > 1)
    .map((r) => s("polyline", { class: className, points: r.map((p) => p[0] + "," + p[1]).join(" ") }));
}

function lookAxis(n, x) {
  const every = Math.max(1, Math.ceil(n / 12));
  const labels = [];
  for (let i = 0; i < n; i += every) {
    labels.push(s("text", { class: "tick", x: x(i), y: H - M.bottom + 15, "text-anchor": "middle" }, String(i + 1)));
  }
  return [
    s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }),
    labels,
    s("text", { class: "tick", x: M.left - 6, y: H - M.bottom + 15, "text-anchor": "end" }, "look"),
  ];
}

function decidedMark(at, x, verdict) {
  if (at == null) return null;
  const cx = x(at);
  return s(
    "g",
    { class: "decided v-" + verdictKey(verdict) },
    s("line", { x1: cx, x2: cx, y1: M.top - 6, y2: H - M.bottom }),
    s("text", { x: cx, y: M.top - 9, "text-anchor": cx > W - 90 ? "end" : "middle" }, "decided: " + verdict),
  );
}

function legend(entries) {
  let x = M.left;
  return s(
    "g",
    { class: "legend" },
    entries.map(([className, label]) => {
      const g = s(
        "g",
        {},
        s("rect", { class: className, x, y: 4, width: 10, height: 10, rx: 2 }),
        s("text", { x: x + 14, y: 13 }, label),
      );
      x += 24 + label.length * 7;
      return g;
    }),
  );
}

function pointTitle(i, look) {
  const parts = ["look " + (i + 1) + ": " + look.verdict];
  if (look.canary != null) parts.push("canary " + num(look.canary) + (look.canarySamples != null ? " (n=" + look.canarySamples + ")" : ""));
  if (look.stable != null) parts.push("stable " + num(look.stable) + (look.stableSamples != null ? " (n=" + look.stableSamples + ")" : ""));
  if (look.eValue != null) parts.push("e-value " + num(look.eValue));
  if (look.pValue != null) parts.push("p " + num(look.pValue));
  if (look.message) parts.push(look.message);
  return parts.join(" · ");
}

/** The canary's (and stable's) value at each look. */
export function valuesChart(metric, label) {
  const looks = metric.looks || [];
  const n = looks.length;
  const svg = frame(label, "values");
  const values = looks.flatMap((l) => [l.canary, l.stable]).filter(finite);
  const hasStable = looks.some((l) => finite(l.stable));
  const hi = values.length ? Math.max(...values) : 1;
  const lo = values.length ? Math.min(0, ...values) : 0;
  const top = hi > lo ? hi + (hi - lo) * 0.1 : lo + 1;
  const y = linear(lo, top, H - M.bottom, M.top);
  const x = xScale(n);
  const grid = ticks(lo, top, 4).map((t) => [
    s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }),
    s("text", { class: "tick", x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, num(t)),
  ]);
  const at = decidingLook(metric);
  const series = (field) => looks.map((l, i) => (finite(l[field]) ? [x(i), y(l[field])] : null));
  const canary = series("canary");
  const stable = series("stable");
  append(svg, [
    grid,
    lookAxis(n, x),
    legend(hasStable ? [["canary", "canary"], ["stable", "stable"]] : [["canary", "value"]]),
    lines(stable, "line stable"),
    lines(canary, "line canary"),
  ]);
  looks.forEach((look, i) => {
    const title = s("title", {}, pointTitle(i, look));
    if (stable[i]) svg.append(s("circle", { class: "dot stable", cx: stable[i][0], cy: stable[i][1], r: 3 }, title.cloneNode(true)));
    if (canary[i]) svg.append(s("circle", { class: "dot canary v-" + verdictKey(look.verdict), cx: canary[i][0], cy: canary[i][1], r: i === at ? 6 : 4 }, title));
  });
  const mark = decidedMark(at, x, at != null ? looks[at].verdict : "");
  if (mark) svg.append(mark);
  return svg;
}

/** The e-value after each look against the threshold at which the test fails, log scale. */
export function eValueChart(metric, label) {
  const looks = metric.looks || [];
  const n = looks.length;
  const svg = frame(label, "evalue");
  const es = looks.map((l) => l.eValue).filter((e) => finite(e) && e > 0);
  const threshold = looks.map((l) => l.eValueThreshold).find(finite);
  const marks = threshold ? [...es, threshold] : es;
  const lo = 10 ** Math.floor(Math.log10(Math.min(1, ...marks)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(10, ...marks) * 1.5));
  const y = log(lo, hi, H - M.bottom, M.top);
  const x = xScale(n);
  const grid = decades(lo, hi).map((t) => [
    s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }),
    s("text", { class: "tick", x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, num(t)),
  ]);
  const at = decidingLook(metric);
  const path = looks.map((l, i) => (finite(l.eValue) && l.eValue > 0 ? [x(i), y(l.eValue)] : null));
  append(svg, [grid, lookAxis(n, x), legend([["evalue", "e-value"], ["threshold", "fails at " + num(threshold)]])]);
  if (threshold) {
    svg.append(
      s("line", { class: "threshold", x1: M.left, x2: W - M.right, y1: y(threshold), y2: y(threshold) }),
      s("text", { class: "threshold-label", x: M.left + 4, y: y(threshold) - 4 }, "threshold " + num(threshold)),
    );
  }
  append(svg, [lines(path, "line evalue")]);
  looks.forEach((look, i) => {
    if (!path[i]) return;
    svg.append(
      s("circle", { class: "dot evalue v-" + verdictKey(look.verdict), cx: path[i][0], cy: path[i][1], r: i === at ? 6 : 4 }, s("title", {}, pointTitle(i, look))),
    );
  });
  const mark = decidedMark(at, x, at != null ? looks[at].verdict : "");
  if (mark) svg.append(mark);
  return svg;
}

export function isSequential(metric) {
  return (metric.looks || []).some((l) => finite(l.eValue));
}
