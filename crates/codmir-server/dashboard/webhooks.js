// The webhooks list (each with its last 24 hours, in one request a page), the account's
// "failing now" view, and the form that registers a webhook.

import { answer, badge, bars, button, codeBlock, copyButton, fill, h, latency, legend, notice, query, rate, say, urlText, when } from "./lib.js";
import { field, formError, onSubmit } from "./forms.js";
import { snippets } from "./snippets.js";

export function stateBadge(w) {
  if (w.enabled) return badge("enabled");
  return h(
    "span",
    {},
    badge("disabled"),
    w.disabled_reason ? h("span", { class: "muted" }, " ", w.disabled_reason, " · ", when(w.disabled_at)) : null,
  );
}

/** A webhook's newest delivery, linked. */
function lastDelivery(d) {
  return d ? h("a", { href: `#/deliveries/${d.id}` }, badge(d.status), " ", when(d.created_at)) : h("span", { class: "muted" }, "none yet");
}

function healthRow(x) {
  const w = x.webhook;
  const s = x.stats;
  return h(
    "tr",
    { "data-id": w.id },
    h("td", { class: "endpoint" }, urlText(w.url, "a", { href: `#/webhooks/${w.id}` }), w.description ? h("div", { class: "muted small" }, w.description) : null),
    h("td", {}, w.events.join(", ")),
    h("td", {}, stateBadge(w), x.failing ? h("div", {}, badge("failing")) : null),
    h("td", {}, rate(s), h("br"), h("span", { class: "muted small" }, latency(s))),
    h("td", {}, bars(s, { width: 120, height: 24, max: 48 })),
    h("td", {}, lastDelivery(x.last_delivery)),
  );
}

export async function webhooksPage(main, life) {
  const header = h("div", { class: "row" }, h("h1", {}, "Webhooks"), h("a", { href: "#/webhooks/new", class: "button" }, "New webhook"));
  const body = h("tbody");
  const more = h("p");
  const load = async (cursor) => {
    const page = await life.api("GET", `/v1/webhooks/health${query({ window: "24h", limit: 20, cursor })}`);
    return page;
  };
  const first = await load();
  if (first.data.length === 0) {
    return fill(main, header, h("p", { class: "card" }, "No webhooks yet. ", h("a", { href: "#/webhooks/new" }, "Register your first endpoint"), " to receive events."));
  }
  const show = (page, append) => {
    const rows = page.data.map(healthRow);
    if (append) body.append(...rows);
    else fill(body, rows);
    fill(more, page.next_cursor ? h("button", { type: "button", class: "secondary", onclick: async (ev) => {
      ev.target.disabled = true;
      show(await load(page.next_cursor), true);
    } }, "More webhooks") : null);
  };
  show(first, false);
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
        body,
      ),
    ),
    legend(),
    more,
  );
}

/** The account's outage view: every webhook failing now, with its retrying deliveries and
 * when each is tried next. Live while the page is open. */
export async function failingPage(main, life) {
  const list = h("div", { "aria-live": "polite" });
  const seq = life.sequence();
  let shown = "";
  const load = async () => {
    const n = seq.next();
    const found = [];
    let cursor;
    // Follow every page: a page of failing ones may be short, even empty, with more after.
    do {
      const page = await life.api("GET", `/v1/webhooks/health${query({ window: "24h", failing: true, limit: 100, cursor })}`);
      found.push(...page.data);
      cursor = page.next_cursor;
    } while (cursor);
    if (!seq.is(n)) return;
    // Drawn again only when something changed: a focused button stays focused.
    const now = JSON.stringify(found.map((x) => [x.webhook, x.retrying, x.last_delivery, x.stats.deliveries]));
    if (now === shown) return;
    shown = now;
    fill(
      list,
      found.length === 0
        ? h("p", { class: "card ok-card" }, "Nothing is failing: every webhook's newest delivery succeeded or is on its first try.")
        : found.map((x) => failingCard(life, x)),
    );
  };
  await load();
  fill(
    main,
    h("h1", {}, "Failing now"),
    h("p", { class: "muted" }, "Webhooks with deliveries waiting for a retry, whose newest delivery failed, or that failures disabled. codmir keeps retrying with exponential backoff; fix the endpoint, then retry now."),
    list,
  );
  life.every(5000, load);
}

/** Deliveries failing now, each with its last answer and when it is tried next. */
export function retryingTable(deliveries, caption) {
  return h("div", { class: "table" }, h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, ["Delivery", "Event", "Attempts", "Last answer", "Next attempt"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, deliveries.map((d) => h("tr", {},
      h("td", {}, h("a", { href: `#/deliveries/${d.id}` }, d.id)),
      h("td", {}, d.event_type),
      h("td", {}, String(d.attempt_count)),
      h("td", {}, answer(d.last_status_code, d.last_error)),
      h("td", {}, when(d.next_attempt_at)))))));
}

function failingCard(life, x) {
  const w = x.webhook;
  const status = notice();
  return h(
    "section",
    { class: "card failing", "aria-label": `Failing: ${w.url}` },
    h("div", { class: "row" }, h("h2", {}, urlText(w.url, "a", { href: `#/webhooks/${w.id}` })), stateBadge(w)),
    h("p", {}, `Success rate (24 h): ${rate(x.stats)} · `, `${x.stats.deliveries.retrying} retrying`, " · last delivery ", lastDelivery(x.last_delivery)),
    x.retrying.length ? retryingTable(x.retrying) : null,
    x.more_retrying ? h("p", {}, h("a", { href: `#/webhooks/${w.id}/deliveries` }, "Every retrying delivery of this webhook")) : null,
    x.retrying.length
      ? h("div", { class: "actions" }, button("Retry pending now", async () => {
          const r = await life.api("POST", `/v1/webhooks/${w.id}/retry-pending`, {});
          say(status, `${r.due_now} pending deliveries of this webhook are due now.`);
        }, status, { "aria-label": `Retry pending now: ${w.url}` }))
      : null,
    status,
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
    { class: "events", "data-field": "events" },
    h("legend", {}, "Events"),
    h("p", { class: "field-error", id: "events-error", role: "alert" }),
    box("*", "*", "every event type, present and future"),
    catalog.data.filter((t) => t.subscribable !== false).map((t) => box(t.name, t.name, t.description, t.example)),
  );
}

export function chosenEvents(form) {
  return [...form.querySelectorAll("input[name=events]:checked")].map((i) => i.value);
}

/** Checkboxes for the workspace's projects; none chosen means every project. */
export function projectPicker(projects, chosen = []) {
  return h(
    "fieldset",
    { "data-field": "project_ids" },
    h("legend", {}, "Projects"),
    h("p", { class: "hint" }, "None chosen: events of every project, present and future."),
    h("p", { class: "field-error", id: "project_ids-error", role: "alert" }),
    projects.data.length
      ? projects.data.map((p) => h("div", { class: "choice" }, h("input", { type: "checkbox", name: "projects", value: p.id, id: `pr-${p.id}`, checked: chosen.includes(p.id) }), h("label", { for: `pr-${p.id}` }, p.name)))
      : h("p", { class: "muted" }, "No project yet."),
  );
}

export function chosenProjects(form) {
  return [...form.querySelectorAll("input[name=projects]:checked")].map((i) => i.value);
}

export async function newWebhookPage(main, life) {
  const [catalog, projects] = await Promise.all([life.api("GET", "/v1/event-types"), life.api("GET", "/v1/projects?limit=100")]);
  const form = h(
    "form",
    { class: "card" },
    h("h1", {}, "New webhook"),
    formError(),
    field("url", "Endpoint URL", h("input", { type: "url", required: true, placeholder: "https://your-app.com/webhooks/codmir" }), "Where codmir POSTs each event. Use https:// in production."),
    eventPicker(catalog),
    field("secret", "Secret (optional)", h("input", { type: "text", autocomplete: "off" }), "Signs every delivery (X-Codmir-Signature). Leave empty to have a strong one generated."),
    field("description", "Description (optional)", h("input", { type: "text" })),
    projectPicker(projects),
    h(
      "details",
      {},
      h("summary", {}, "Delivery settings"),
      field("max_in_flight", "Most requests in flight at once", h("input", { type: "number", min: 1, inputmode: "numeric" })),
      field("rate_limit_per_second", "Most requests per second", h("input", { type: "number", min: 1, inputmode: "numeric" })),
    ),
    h("button", { type: "submit" }, "Create webhook"),
  );
  onSubmit(form, async () => {
    const v = (name) => form.elements[name].value.trim();
    const body = { url: v("url"), events: chosenEvents(form) };
    if (v("secret")) body.secret = v("secret");
    if (v("description")) body.description = v("description");
    const projectIds = chosenProjects(form);
    if (projectIds.length) body.project_ids = projectIds;
    if (v("max_in_flight")) body.max_in_flight = Number(v("max_in_flight"));
    if (v("rate_limit_per_second")) body.rate_limit_per_second = Number(v("rate_limit_per_second"));
    const created = await life.api("POST", "/v1/webhooks", body);
    createdPage(main, created);
  });
  fill(main, form);
}

/** A webhook's secret, shown once after creation or rotation, with copy buttons and code that
 * verifies with it. `previousUntil`: X-Codmir-Signature stays on the previous secret until
 * then (a rotation's grace period). */
export function secretCard(w, title, previousUntil) {
  return h(
    "section",
    { class: "card secret", "aria-labelledby": "secret-title" },
    h("h2", { id: "secret-title" }, title),
    h("p", {}, "This is the only time the secret is shown. Keep it now."),
    h("dl", {}, h("dt", {}, "secret (X-Codmir-Signature, the contract's verifySignature)"), h("dd", {}, h("code", { class: "secret-value" }, w.secret), " ", copyButton(w.secret, "secret")),
      h("dt", {}, "signing_secret (webhook-signature, Standard Webhooks libraries)"), h("dd", {}, h("code", {}, w.signing_secret), " ", copyButton(w.signing_secret, "signing secret"))),
    snippets(w.secret, previousUntil),
  );
}

function createdPage(main, w) {
  fill(
    main,
    h("h1", {}, "Webhook created"),
    h("p", {}, "codmir now sends ", w.events.join(", "), " to ", h("code", { class: "url", title: w.url }, w.url), "."),
    secretCard(w, "Its secret"),
    h("p", {}, h("a", { href: `#/webhooks/${w.id}`, class: "button" }, "Go to the webhook")),
  );
}
