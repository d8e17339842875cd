// The only module that talks to the server: the /api/v1 base URL, the token, timeouts and errors.
// The base URL comes from <meta name="autopatch-api-base"> (empty: this page's own origin), so the
// same files can be hosted elsewhere (a bucket) and pointed at the API.

const TOKEN_KEY = "autopatch.token";
const TIMEOUT_MS = 30000;

function apiBase() {
  const meta = document.querySelector('meta[name="autopatch-api-base"]');
  const base = (meta && meta.content.trim()) || "";
  return base.replace(/\/+$/, "") + "/api/v1";
}

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let field = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      field = body.error.field;
    }
  } catch {
    // not JSON (a proxy's page): keep the status line
  }
  return new ApiError(response.status, message, field);
}

/** GET or POST ``path`` under /api/v1 with the session's token; resolves to the JSON body. */
export async function api(path, { method = "GET", body, params, token } = {}) {
  const url = new URL(apiBase() + path, window.location.href);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  const bearer = token || session.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
    });
  } catch (exc) {
    const why = exc.name === "AbortError" ? `no answer within ${TIMEOUT_MS / 1000} s` : "the server cannot be reached";
    throw new ApiError(0, `${method} ${path}: ${why}`);
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

/**
 * The events route answered, but not with a live stream: an error status, another content type, no
 * answer within a few seconds (a gateway that buffers the whole body, as API Gateway does in front of
 * a Lambda), or silence longer than the server's keep-alive. Polling is the way to follow the run then.
 */
export class StreamUnavailable extends ApiError {}

/**
 * Follow a Server-Sent Events stream with the token in the Authorization header. EventSource
 * cannot send headers, and a token in the URL would land in access logs and browser history, so
 * the stream is read with fetch. ``onEvent(name, data)`` gets each event ("message" by default);
 * resolves when the stream ends, rejects with StreamUnavailable when the answer is no live stream
 * (see above) and with ApiError when the server cannot be reached or the connection breaks.
 * ``openMs``: how long to wait for the answer's headers (a streaming server sends them at once);
 * ``idleMs``: how long the stream may be silent (the server sends a keep-alive every 15 s).
 */
export async function streamEvents(path, onEvent, signal, { openMs = 5000, idleMs = 25000 } = {}) {
  const controller = new AbortController();
  const stopped = () => controller.abort();
  if (signal) signal.addEventListener("abort", stopped, { once: true });
  let why = null; // set by a watchdog before it aborts the request
  let timer = null;
  const watch = (ms, reason) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      why = reason;
      controller.abort();
    }, ms);
  };
  const failure = (exc) => {
    if (why) return new StreamUnavailable(0, `${path}: ${why}`);
    return new ApiError(0, `${path}: ${exc.name === "AbortError" ? "stopped" : "the server cannot be reached"}`);
  };
  try {
    watch(openMs, `no answer within ${openMs / 1000} s`);
    let response;
    try {
      response = await fetch(new URL(apiBase() + path, window.location.href), {
        headers: { Accept: "text/event-stream", Authorization: `Bearer ${session.token}` },
        signal: controller.signal,
      });
    } catch (exc) {
      throw failure(exc);
    }
    clearTimeout(timer);
    if (!response.ok) {
      const error = await errorOf(response);
      throw new StreamUnavailable(error.status, error.message, error.field);
    }
    const type = (response.headers.get("Content-Type") || "").split(";")[0].trim().toLowerCase();
    if (type !== "text/event-stream") {
      controller.abort();
      throw new StreamUnavailable(response.status, `${path}: the answer is ${type || "untyped"}, not an event stream`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      watch(idleMs, `nothing received for ${idleMs / 1000} s`);
      let chunk;
      try {
        chunk = await reader.read();
      } catch (exc) {
        throw failure(exc);
      }
      if (chunk.done) return;
      buffer += chunk.value.replaceAll("\r\n", "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // keep-alive comment
          const [field, ...rest] = line.split(":");
          const text = rest.join(":").replace(/^ /, "");
          if (field === "event") name = text;
          else if (field === "data") data.push(text);
        }
        if (data.length || name !== "message") onEvent(name, data.join("\n"));
      }
    }
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener("abort", stopped);
  }
}

let schemaPaths = null;

/** Whether the server serves ``method path`` (read from its OpenAPI schema, which needs no token). */
export async function serves(method, path) {
  if (schemaPaths === null) {
    try {
      const response = await fetch(new URL(apiBase() + "/openapi.json", window.location.href));
      schemaPaths = response.ok ? (await response.json()).paths || {} : {};
    } catch {
      schemaPaths = {};
    }
  }
  // Path parameters are compared by position, not name: "/runs/{}/events" matches "/runs/{run_id}/events".
  const shape = (text) => text.replace(/\{[^}]*\}/g, "{}");
  const wanted = shape("/api/v1" + path);
  return Object.entries(schemaPaths).some(([key, entry]) => shape(key) === wanted && entry[method.toLowerCase()]);
}

/** Every item of a paged list (1000 a page, the API's largest), for lists the page needs whole. */
export async function fetchAll(path, params = {}) {
  const items = [];
  for (;;) {
    const page = await api(path, { params: { ...params, limit: 1000, offset: items.length } });
    items.push(...page.items);
    if (page.items.length === 0 || items.length >= page.total) return { items, total: page.total };
  }
}
