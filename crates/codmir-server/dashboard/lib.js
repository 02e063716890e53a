// What every page uses: building DOM safely, the API client, times, badges and charts.
// No innerHTML anywhere: every value from the API reaches the page as text.

const KEY = "codmir.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

/** An element with attributes (`on…` are listeners) and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "g", "title", "line", "polyline"].includes(tag);
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** Calls the public API with the session's key and returns the answer's text as it came
 * (an event's exact bytes). */
export async function apiText(path) {
  const { text } = await call("GET", path);
  return text;
}

/** Calls the public API with the session's key. A refused key ends the session. */
export async function api(method, path, body) {
  return (await call(method, path, body)).data;
}

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${session.key() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "unreachable", `The server could not be reached (${e.message}).`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = data?.error ?? {};
    const e = new ApiError(res.status, err.code ?? "error", err.message ?? (text || res.statusText), err.field);
    if (res.status === 401 && path !== "/v1/me") {
      session.signOut();
      location.hash = "#/signin?expired";
    }
    throw e;
  }
  return { data, text };
}

/** A query string from the set values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A time in the browser's zone, the UTC value on hover. */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: `${iso} (UTC)` }, d.toLocaleString());
}

export function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

/** The last answer of a delivery or attempt: its status, or its error. */
export function answer(code, error) {
  if (code !== null && code !== undefined) return h("span", { class: code < 300 ? "ok" : "bad" }, `HTTP ${code}`);
  if (error) return h("span", { class: "bad" }, error);
  return h("span", { class: "muted" }, "—");
}

/** A status line for the result of an action, read out by screen readers. */
export function notice() {
  return h("p", { class: "notice", role: "status", "aria-live": "polite" });
}

export function say(el, text, kind = "ok") {
  el.className = `notice ${kind}`;
  fill(el, text);
}

/** The message of an error, with the field the API named. */
export function describe(e) {
  return e.field ? `${e.message} (field: ${e.field})` : e.message;
}

/** A button that runs `action` once at a time, reporting failures into `status`. */
export function button(label, action, status, attrs = {}) {
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
    } catch (e) {
      if (status) say(status, describe(e), "bad");
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** A copy-to-clipboard button for `text`. */
export function copyButton(text, what) {
  const b = h("button", { type: "button", class: "small" }, `Copy ${what}`);
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied";
    } catch {
      b.textContent = "Select and copy";
    }
    setTimeout(() => (b.textContent = `Copy ${what}`), 2000);
  });
  return b;
}

/** JSON, pretty when it parses, as it is otherwise. */
export function pretty(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw;
  }
}

/** A collapsible block of code; long ones start closed. */
export function codeBlock(summary, text, open) {
  return h(
    "details",
    { class: "code", open: open ?? text.length < 1500 },
    h("summary", {}, summary),
    h("pre", { tabindex: "0" }, h("code", {}, text)),
  );
}

/** Sums the series' buckets in groups so that at most `max` remain. */
function grouped(series, max) {
  const size = Math.max(1, Math.ceil(series.length / max));
  const out = [];
  for (let i = 0; i < series.length; i += size) {
    const part = series.slice(i, i + size);
    const sum = (k) => part.reduce((n, b) => n + b[k], 0);
    out.push({ start: part[0].start, succeeded: sum("succeeded"), failed: sum("failed"), pending: sum("pending") + sum("cancelled") });
  }
  return out;
}

/** Stacked bars of deliveries by outcome (succeeded, failed, pending) over a stats series. */
export function bars(stats, { width = 120, height = 24, max = 48, label }) {
  const groups = grouped(stats.series, max);
  const top = Math.max(1, ...groups.map((g) => g.succeeded + g.failed + g.pending));
  const w = width / groups.length;
  const d = stats.deliveries;
  const summary = label ?? `${d.total} deliveries: ${d.succeeded} succeeded, ${d.failed} failed, ${d.pending} pending`;
  const svg = h(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": summary, class: "bars", preserveAspectRatio: "none" },
    h("title", {}, summary),
  );
  groups.forEach((g, i) => {
    let y = height;
    for (const k of ["succeeded", "failed", "pending"]) {
      if (!g[k]) continue;
      const bh = Math.max(1, (g[k] / top) * height);
      y -= bh;
      svg.append(h("rect", { x: (i * w).toFixed(2), y: y.toFixed(2), width: Math.max(0.5, w - 0.5).toFixed(2), height: bh.toFixed(2), class: k }));
    }
  });
  return svg;
}

export function rate(stats) {
  return stats.success_rate === null ? "—" : `${(stats.success_rate * 100).toFixed(1)} %`;
}

export function latency(stats) {
  const l = stats.latency_ms;
  return l ? `p50 ${l.p50} ms · p90 ${l.p90} ms · p99 ${l.p99} ms` : "—";
}

/** An RFC 3339 time from a `datetime-local` input's value (in the browser's zone). */
export function fromLocalInput(value) {
  return value ? new Date(value).toISOString() : undefined;
}
