// What every page uses: building DOM safely, the API client, times, badges and charts.
// No innerHTML anywhere: every value from the API reaches the page as text.

import { heard } from "./life.js";

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

/** Calls the public API with the session's key, outside any page (signing in). */
export async function api(method, path, body) {
  return (await call(method, path, body)).data;
}

/** A fresh Idempotency-Key: the server then makes each POST once, however often the request
 * reaches it. Made with getRandomValues, which works on plain http too (randomUUID needs a
 * secure context, and a self-hosted server is often reached over http on a private network). */
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dash_${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Calls the public API with the session's key; `signal` cancels it. A refused key ends the
 * session. Every answer tells the connection notice whether the server was reached. */
export async function call(method, path, body, signal) {
  const headers = { Authorization: `Bearer ${session.key() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method === "POST") headers["Idempotency-Key"] = idempotencyKey();
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (signal?.aborted) throw e;
    heard(false, false);
    throw new ApiError(0, "unreachable", "The server could not be reached. Check that it is running, then try again.");
  }
  const gateway = res.status >= 502 && res.status <= 504;
  const text = await res.text();
  heard(!gateway, res.ok);
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = data?.error ?? {};
    const e = new ApiError(res.status, err.code ?? "error", words(err.message ?? (text || res.statusText)), err.field);
    if (res.status === 401 && path !== "/v1/me") {
      session.signOut();
      location.hash = "#/signin?expired";
    }
    throw e;
  }
  return { data, text };
}

/** A server message in words a person reads: `name` quoted as “name”, an empty one said. */
export function words(message) {
  return String(message)
    .replace(/``/g, "an empty value")
    .replace(/`([^`]*)`/g, "“$1”");
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
  return e.field ? `${e.message} (${e.field.replaceAll("_", " ")})` : e.message;
}

/** A button that runs `action` once at a time (disabled while it runs: a double click is one
 * request), reporting failures into `status`. */
export function button(label, action, status, attrs = {}) {
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    if (b.disabled) return;
    b.disabled = true;
    try {
      await action();
    } catch (e) {
      if (status && e.name !== "Left") say(status, describe(e), "bad");
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

/** What a chart draws, bottom up, with the words of its legend. Retrying is apart from
 * pending (waiting for a first attempt): it is what is failing now. */
export const OUTCOMES = [
  ["succeeded", "succeeded"],
  ["failed", "failed"],
  ["retrying", "retrying"],
  ["waiting", "waiting for a first attempt"],
  ["cancelled", "cancelled"],
];

/** Sums the series' buckets in groups so that at most `max` remain. */
function grouped(series, max) {
  const size = Math.max(1, Math.ceil(series.length / max));
  const out = [];
  for (let i = 0; i < series.length; i += size) {
    const part = series.slice(i, i + size);
    const sum = (k) => part.reduce((n, b) => n + (b[k] ?? 0), 0);
    out.push({
      start: part[0].start,
      succeeded: sum("succeeded"),
      failed: sum("failed"),
      retrying: sum("retrying"),
      waiting: sum("pending") - sum("retrying"),
      cancelled: sum("cancelled"),
    });
  }
  return out;
}

/** Words for a stats object's counts. */
export function countsText(d) {
  return `${d.total} ${d.total === 1 ? "delivery" : "deliveries"}: ${d.succeeded} succeeded, ${d.failed} failed, ${d.retrying ?? 0} retrying, ${d.pending - (d.retrying ?? 0)} waiting, ${d.cancelled} cancelled`;
}

/** Stacked bars of deliveries by outcome over a stats series. */
export function bars(stats, { width = 120, height = 24, max = 48, label }) {
  const groups = grouped(stats.series, max);
  const sum = (g) => OUTCOMES.reduce((n, [k]) => n + g[k], 0);
  const top = Math.max(1, ...groups.map(sum));
  const w = width / groups.length;
  const summary = label ?? countsText(stats.deliveries);
  const svg = h(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": summary, class: "bars", preserveAspectRatio: "none" },
    h("title", {}, summary),
  );
  groups.forEach((g, i) => {
    let y = height;
    for (const [k] of OUTCOMES) {
      if (!g[k]) continue;
      const bh = Math.max(1, (g[k] / top) * height);
      y -= bh;
      svg.append(h("rect", { x: (i * w).toFixed(2), y: y.toFixed(2), width: Math.max(0.5, w - 0.5).toFixed(2), height: bh.toFixed(2), class: k }));
    }
  });
  return svg;
}

/** The colours of `bars`, said. */
export function legend(extra) {
  return h("p", { class: "legend" }, OUTCOMES.map(([k, words]) => h("span", { class: "legend-item" }, h("span", { class: `key ${k}` }), ` ${words}`)), extra);
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

/** An endpoint URL on one line, cut with an ellipsis where it does not fit (never broken
 * mid-word); the whole of it on hover and when copied. */
export function urlText(url, tag = "span", attrs = {}) {
  return h(tag, { class: "url", title: url, ...attrs }, url);
}

/** A datetime-local input's value for an RFC 3339 time (in the browser's zone). */
export function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Draws the current route again (after a change the page's header shows). */
export function reroute() {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}
