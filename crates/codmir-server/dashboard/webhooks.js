// The webhooks list, with each one's last 24 hours, and the form that registers one.

import { answer, api, badge, bars, codeBlock, copyButton, describe, fill, h, latency, notice, rate, say, when } from "./lib.js";

export function stateBadge(w) {
  if (w.enabled) return badge("enabled");
  return h(
    "span",
    {},
    badge("disabled"),
    w.disabled_reason ? h("span", { class: "muted" }, " ", w.disabled_reason, " · ", when(w.disabled_at)) : null,
  );
}

export async function webhooksPage(main) {
  const list = await api("GET", "/v1/webhooks?limit=50");
  const header = h("div", { class: "row" }, h("h1", {}, "Webhooks"), h("a", { href: "#/webhooks/new", class: "button" }, "New webhook"));
  if (list.data.length === 0) {
    return fill(main, header, h("p", { class: "card" }, "No webhooks yet. ", h("a", { href: "#/webhooks/new" }, "Register your first endpoint"), " to receive events."));
  }
  const rows = list.data.map((w) => {
    const health = h("td", {}, h("span", { class: "muted" }, "…"));
    const spark = h("td", {});
    const last = h("td", {});
    Promise.all([
      api("GET", `/v1/webhooks/${w.id}/stats?window=24h`),
      api("GET", `/v1/webhooks/${w.id}/deliveries?limit=1`),
    ]).then(([stats, recent]) => {
      fill(health, rate(stats), h("br"), h("span", { class: "muted small" }, latency(stats)));
      fill(spark, bars(stats, { width: 120, height: 24, max: 48 }));
      const d = recent.data[0];
      fill(last, d ? h("a", { href: `#/deliveries/${d.id}` }, badge(d.status), " ", when(d.created_at)) : h("span", { class: "muted" }, "none yet"));
    }, () => fill(health, "—"));
    return h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/webhooks/${w.id}`, class: "url" }, w.url), w.description ? h("div", { class: "muted small" }, w.description) : null),
      h("td", {}, w.events.join(", ")),
      h("td", {}, stateBadge(w)),
      health,
      spark,
      last,
    );
  });
  fill(
    main,
    header,
    h(
      "div",
      { class: "table" },
      h(
        "table",
        {},
        h("caption", {}, "Your endpoints, with their last 24 hours"),
        h("thead", {}, h("tr", {}, ["Endpoint", "Events", "State", "Success rate · latency (24 h)", "Deliveries (24 h)", "Last delivery"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows),
      ),
    ),
  );
}

/** Checkboxes for the event catalog, each with its description and example payload. */
export function eventPicker(catalog, chosen = []) {
  const box = (value, label, description, example) =>
    h(
      "div",
      { class: "choice" },
      h("input", { type: "checkbox", name: "events", value, id: `ev-${value}`, checked: chosen.includes(value) }),
      h("label", { for: `ev-${value}` }, h("code", {}, label), description ? h("span", { class: "muted" }, ` — ${description}`) : null),
      example ? codeBlock("Example payload", JSON.stringify(example, null, 2), false) : null,
    );
  return h(
    "fieldset",
    { class: "events" },
    h("legend", {}, "Events"),
    box("*", "*", "every event type, present and future"),
    catalog.data.map((t) => box(t.name, t.name, t.description, t.example)),
  );
}

export function chosenEvents(form) {
  return [...form.querySelectorAll("input[name=events]:checked")].map((i) => i.value);
}

function field(id, label, input, hint) {
  input.id = id;
  input.name = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null);
}

/** `Name: value` lines as a headers object. */
function parseHeaders(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const i = line.indexOf(":");
    if (i < 1) throw new Error(`"${line}" is not a "Name: value" header line`);
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

export async function newWebhookPage(main) {
  const [catalog, projects] = await Promise.all([api("GET", "/v1/event-types"), api("GET", "/v1/projects?limit=100")]);
  const status = notice();
  const projectPicker = projects.data.length
    ? h(
        "fieldset",
        {},
        h("legend", {}, "Projects (none chosen: every project)"),
        projects.data.map((p) => h("div", { class: "choice" }, h("input", { type: "checkbox", name: "projects", value: p.id, id: `pr-${p.id}` }), h("label", { for: `pr-${p.id}` }, p.name))),
      )
    : null;
  const form = h(
    "form",
    { class: "card", novalidate: true },
    h("h1", {}, "New webhook"),
    field("url", "Endpoint URL", h("input", { type: "url", required: true, placeholder: "https://your-app.com/webhooks/codmir", "aria-describedby": "url-hint" }), "Where codmir POSTs each event. Use https:// in production."),
    eventPicker(catalog),
    field("secret", "Secret (optional)", h("input", { type: "text", autocomplete: "off", "aria-describedby": "secret-hint" }), "Signs every delivery (X-Codmir-Signature). Leave empty to have a strong one generated."),
    field("description", "Description (optional)", h("input", { type: "text" })),
    projectPicker,
    h(
      "details",
      {},
      h("summary", {}, "Delivery settings"),
      field("max_in_flight", "Most requests in flight at once", h("input", { type: "number", min: 1, inputmode: "numeric" })),
      field("rate_limit_per_second", "Most requests per second", h("input", { type: "number", min: 1, inputmode: "numeric" })),
      field("headers", "Extra headers, one \"Name: value\" per line", h("textarea", { rows: 3 })),
    ),
    h("button", { type: "submit" }, "Create webhook"),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (name) => form.elements[name].value.trim();
    const body = { url: v("url"), events: chosenEvents(form) };
    if (v("secret")) body.secret = v("secret");
    if (v("description")) body.description = v("description");
    const projectIds = [...form.querySelectorAll("input[name=projects]:checked")].map((i) => i.value);
    if (projectIds.length) body.project_ids = projectIds;
    if (v("max_in_flight")) body.max_in_flight = Number(v("max_in_flight"));
    if (v("rate_limit_per_second")) body.rate_limit_per_second = Number(v("rate_limit_per_second"));
    try {
      if (v("headers")) body.headers = parseHeaders(form.elements.headers.value);
      const created = await api("POST", "/v1/webhooks", body);
      created_(main, created);
    } catch (e) {
      say(status, describe(e), "bad");
      const bad = e.field && form.elements[e.field.split(/[.[]/)[0]];
      if (bad?.focus) bad.focus();
    }
  });
  fill(main, form);
}

/** The contract's verification snippet, with this webhook's secret filled in. */
export function verifySnippet(secret) {
  return `const crypto = require('node:crypto');

const secret = ${JSON.stringify(secret)};

// The contract's check. Pass the raw body as received (a Buffer: express.raw, not
// re-serialized JSON) and the X-Codmir-Signature header. Lengths are compared as bytes:
// timingSafeEqual throws on buffers of different lengths (a 500, not a refusal).
function verifySignature(payload, signature, secret) {
  const expected = Buffer.from(
    'sha256=' + crypto.createHmac('sha256', secret).update(payload).digest('hex')
  );
  const given = Buffer.from(signature);
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

// e.g. verifySignature(req.body, req.get('X-Codmir-Signature') ?? '', secret)`;
}

/** A webhook's secret, shown once after creation or rotation, with copy buttons. */
export function secretCard(w, title) {
  return h(
    "section",
    { class: "card secret", "aria-labelledby": "secret-title" },
    h("h2", { id: "secret-title" }, title),
    h("p", {}, "This is the only time the secret is shown. Keep it now."),
    h("dl", {}, h("dt", {}, "secret"), h("dd", {}, h("code", { class: "secret-value" }, w.secret), " ", copyButton(w.secret, "secret")),
      h("dt", {}, "signing_secret (Standard Webhooks libraries)"), h("dd", {}, h("code", {}, w.signing_secret), " ", copyButton(w.signing_secret, "signing secret"))),
    codeBlock("Verify deliveries (Node.js)", verifySnippet(w.secret), true),
  );
}

function created_(main, w) {
  fill(
    main,
    h("h1", {}, "Webhook created"),
    h("p", {}, "codmir now sends ", w.events.join(", "), " to ", h("code", {}, w.url), "."),
    secretCard(w, "Its secret"),
    h("p", {}, h("a", { href: `#/webhooks/${w.id}`, class: "button" }, "Go to the webhook")),
  );
}

export { answer };
