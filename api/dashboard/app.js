// The dashboard's entry: who the viewer is, the login prompt, and which view the address shows
// (`#/` the list, `#/namespaces/NS` the list of one namespace, `#/rollouts/NS/NAME` one rollout). The token never appears in an address.

import { ApiError, currentSession, loadSession, onUnauthorized, setToken } from "./api.js";
import { h, replace } from "./dom.js";
import { listView } from "./list.js";
import { rolloutView } from "./rollout.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
let stopView = () => {};

function stop() {
  stopView();
  stopView = () => {};
}

function showLogin(message) {
  stop();
  replace(who);
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    placeholder: "Kubernetes bearer token",
    "aria-label": "Kubernetes bearer token",
  });
  const error = h("p", { id: "login-error", class: "error" }, message || "");
  const form = h(
    "form",
    {
      id: "login",
      class: "login",
      on: {
        submit: (event) => {
          event.preventDefault();
          const value = input.value.trim();
          if (!value) return;
          setToken(value);
          begin();
        },
      },
    },
    h("h1", {}, "Sign in"),
    h(
      "p",
      { class: "muted" },
      "Paste a Kubernetes token (for example `kubectl create token NAME`). " +
        "It is kept in this tab only and sent as a bearer token; you see and may do what its RBAC allows.",
    ),
    input,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    error,
  );
  replace(main, form);
  input.focus();
}

function showSessionHint() {
  stop();
  replace(
    main,
    h(
      "section",
      { class: "login" },
      h("h1", {}, "Not signed in"),
      h("p", {}, "Open the link `kubectl sluice dashboard` printed; each link signs in once."),
    ),
  );
}

function showHeader(session) {
  const parts = [];
  if (session.user) parts.push(h("span", { id: "user" }, session.user));
  if (session.mode === "token") {
    parts.push(
      h(
        "button",
        {
          id: "sign-out",
          class: "link",
          on: {
            click: () => {
              setToken(null);
              showLogin("");
            },
          },
        },
        "Sign out",
      ),
    );
  }
  replace(who, ...parts);
}

function route() {
  stop();
  const session = currentSession();
  const one = /^#\/rollouts\/([^/]+)\/([^/]+)$/.exec(location.hash);
  const namespace = /^#\/namespaces\/([^/]+)$/.exec(location.hash);
  if (one) {
    stopView = rolloutView(main, decodeURIComponent(one[1]), decodeURIComponent(one[2]));
  } else if (namespace) {
    stopView = listView(main, decodeURIComponent(namespace[1]));
  } else {
    stopView = listView(main, session.namespace);
  }
}

async function begin() {
  let session;
  try {
    session = await loadSession();
  } catch (error) {
    // A 401 has shown the login prompt already.
    if (!(error instanceof ApiError && error.status === 401)) {
      replace(main, h("p", { class: "error" }, "Cannot reach the API: " + error.message));
    }
    return;
  }
  if (session.mode === "token" && !session.user) return showLogin("");
  if (session.mode === "session" && !session.user) return showSessionHint();
  showHeader(session);
  route();
}

onUnauthorized((message) => {
  if (currentSession().mode === "session") showSessionHint();
  else showLogin(message);
});
window.addEventListener("hashchange", () => {
  if (currentSession().user) route();
});
begin();
