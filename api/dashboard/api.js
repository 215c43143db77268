// The REST API as the page uses it: who the viewer is, reads, actions and live streams. The
// token lives in sessionStorage and travels only in the Authorization header; in session mode
// (`kubectl sluice dashboard`) an HttpOnly cookie the page never sees carries the authority and
// every POST carries the CSRF token the session call gave.

const TOKEN_KEY = "sluice.token";

/** A refused or failed request, with the API's error kind and message. */
export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

let session = { mode: "token", user: null, csrfToken: null, namespace: null };
const unauthorizedListeners = [];

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Called with the message whenever a request answers 401: the page shows its login prompt. */
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

function headers(method, hasBody) {
  const h = { Accept: "application/json" };
  if (session.mode === "token" && token()) h.Authorization = "Bearer " + token();
  if (session.mode === "session" && method !== "GET" && session.csrfToken) {
    h["X-CSRF-Token"] = session.csrfToken;
  }
  if (hasBody) h["Content-Type"] = "application/json";
  return h;
}

async function errorOf(response) {
  let kind = "Error";
  let message = response.status + " " + response.statusText;
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") {
      kind = String(body.error || kind);
      message = body.message;
    }
  } catch {
    // Not a JSON error body: the status line says what there is to say.
  }
  const error = new ApiError(response.status, kind, message);
  if (response.status === 401) {
    if (session.mode === "token") setToken(null);
    for (const listener of unauthorizedListeners) listener(message);
  }
  return error;
}

/** One JSON request; a non-2xx answer throws an ApiError. */
export async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(method, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Asks who the viewer is and how the page authenticates; remembers the answer. */
export async function loadSession() {
  session = await call("GET", "/api/v1/session");
  return session;
}

export function currentSession() {
  return session;
}

/**
 * Reads a server-sent-events stream with fetch (EventSource cannot send a header) and calls
 * `onEvent(type, data)` for each event, data parsed as JSON. Resolves when the server ends the
 * stream; throws an ApiError for a non-2xx answer, and an AbortError when `signal` aborts.
 */
export async function stream(path, signal, onEvent) {
  const response = await fetch(path, {
    headers: { ...headers("GET", false), Accept: "text/event-stream" },
    credentials: "same-origin",
    cache: "no-store",
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = sseParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser(value);
  }
}

/** A parser fed chunks of text/event-stream: calls `onEvent(type, data)` per complete event. */
export function sseParser(onEvent) {
  let buffer = "";
  let type = "";
  let data = [];
  return (chunk) => {
    buffer += chunk;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (data.length > 0) {
          const text = data.join("\n");
          let parsed = null;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
          onEvent(type || "message", parsed);
        }
        type = "";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
      }
    }
  };
}

/**
 * Keeps a stream open until `signal` aborts: a stream the server ends after its events (its
 * timeout) is opened again at once; one that fails, or ends with nothing said, is opened again
 * after a pause that doubles up to 30 s. `onError(error)` hears of each failure; a 400, 401,
 * 403 or 404 is final.
 */
export async function follow(path, signal, onEvent, onError) {
  let pause = 1000;
  while (!signal.aborted) {
    let heard = false;
    try {
      await stream(path, signal, (type, data) => {
        heard = true;
        onEvent(type, data);
      });
    } catch (error) {
      if (signal.aborted) return;
      onError(error);
      if (error instanceof ApiError && [400, 401, 403, 404].includes(error.status)) return;
    }
    if (heard) {
      pause = 1000;
    } else {
      await sleep(pause, signal);
      pause = Math.min(pause * 2, 30000);
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export function rolloutPath(namespace, name) {
  return "/api/v1/namespaces/" + encodeURIComponent(namespace) + "/rollouts/" + encodeURIComponent(name);
}
