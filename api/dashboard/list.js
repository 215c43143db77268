// Every rollout the viewer may list, by namespace, kept current by the list's event stream.

import { ApiError, follow } from "./api.js";
import { h, replace } from "./dom.js";
import { age, byNamespace, filterRollouts, readyOf, remove, stepOf, upsert, weightOf } from "./model.js";
import { phaseBadge } from "./rollout.js";

const COLUMNS = ["Name", "Strategy", "Phase", "Step", "Weight", "Ready", "Age"];

/** Shows the list in `container` until the returned function is called. */
export function listView(container, defaultNamespace) {
  const control = new AbortController();
  let views = [];
  let loaded = false;
  const namespace = defaultNamespace || "";
  const filter = h("input", {
    id: "filter",
    type: "search",
    placeholder: "Filter by namespace, name, strategy or phase",
    "aria-label": "Filter",
    on: { input: () => draw() },
  });
  const status = h("p", { id: "list-status", class: "muted" }, "Loading…");
  const body = h("div", { id: "rollouts" });
  const scope = h("span", { class: "muted" });
  replace(container, h("section", { class: "list" }, h("div", { class: "bar" }, h("h1", {}, "Rollouts"), scope, filter), status, body));

  function draw() {
    replace(scope, namespace ? "in " + namespace : "in every namespace you may list");
    if (!loaded) return;
    const shown = filterRollouts(views, filter.value);
    replace(status, views.length === 0 ? "No rollouts." : shown.length === 0 ? "None matches the filter." : "");
    const now = Date.now();
    replace(
      body,
      byNamespace(shown).map(([ns, group]) =>
        h(
          "table",
          { class: "rollouts", "data-namespace": ns },
          h("caption", {}, ns),
          h("thead", {}, h("tr", {}, COLUMNS.map((c, i) => h("th", { class: i >= 3 ? "num" : null }, c)))),
          h(
            "tbody",
            {},
            group.map((v) =>
              h(
                "tr",
                { class: "rollout", "data-name": v.name },
                h("td", {}, h("a", { href: "#/rollouts/" + encodeURIComponent(v.namespace) + "/" + encodeURIComponent(v.name) }, v.name)),
                h("td", {}, v.strategy),
                h("td", {}, phaseBadge(v)),
                h("td", { class: "num col-step" }, stepOf(v)),
                h("td", { class: "num col-weight" }, weightOf(v)),
                h("td", { class: "num col-ready" }, readyOf(v)),
                h("td", { class: "num" }, age(v.createdAt, now)),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function askNamespace(message) {
    const input = h("input", { id: "namespace", type: "text", placeholder: "namespace", "aria-label": "Namespace" });
    replace(
      status,
      h(
        "form",
        {
          class: "inline",
          on: {
            submit: (event) => {
              event.preventDefault();
              if (!input.value.trim()) return;
              location.hash = "#/namespaces/" + encodeURIComponent(input.value.trim());
            },
          },
        },
        h("span", { class: "error" }, message + " "),
        "List one namespace: ",
        input,
        h("button", { type: "submit" }, "List"),
      ),
    );
  }

  function open() {
    draw();
    const query = namespace ? "?namespace=" + encodeURIComponent(namespace) : "";
    follow(
      "/api/v1/rollouts/events" + query,
      control.signal,
      (type, data) => {
        if (type === "list") {
          views = Array.isArray(data) ? data : [];
          loaded = true;
        } else if (type === "upsert") {
          views = upsert(views, data);
        } else if (type === "deleted") {
          views = remove(views, data);
        } else if (type === "error") {
          replace(status, h("span", { class: "error" }, "The cluster cannot be read now: " + (data.message || "")));
          return;
        } else {
          return;
        }
        draw();
      },
      (error) => {
        if (error instanceof ApiError && error.status === 401) return;
        if (error instanceof ApiError && error.status === 403) askNamespace(error.message);
        else replace(status, h("span", { class: "error" }, "Reconnecting: " + error.message));
      },
    );
  }

  open();
  // Ages grow without the cluster saying so.
  const ticker = setInterval(draw, 15000);
  return () => {
    clearInterval(ticker);
    control.abort();
  };
}
