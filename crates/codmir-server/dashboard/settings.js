// A webhook's settings (every one the API has, in one form), its secrets (which signs which
// header until when, and rotation) and its danger zone (disable, delete). Every change that
// alters what receivers get asks first, saying what will happen.

import { button, fill, fromLocalInput, h, notice, reroute, say, toLocalInput, when } from "./lib.js";
import { confirmAction, field, formError, onSubmit } from "./forms.js";
import { chosenEvents, chosenProjects, eventPicker, projectPicker, secretCard } from "./webhooks.js";

/** Said once on the settings drawn again after a save (the page's header shows the change). */
let saved = null;

export async function settingsTab(section, life, w) {
  const [catalog, projects] = await Promise.all([life.api("GET", "/v1/event-types"), life.api("GET", "/v1/projects?limit=100")]);
  const status = notice();
  const headers = headerEditor(w.headers);
  const form = h(
    "form",
    { class: "card settings" },
    h("h2", {}, "Settings"),
    formError(),
    field("url", "Endpoint URL", h("input", { type: "url", value: w.url, required: true })),
    eventPicker(catalog, w.events),
    projectPicker(projects, w.project_ids),
    field("description", "Description", h("input", { type: "text", value: w.description ?? "" })),
    headers.el,
    field("max_in_flight", "Most requests in flight at once", h("input", { type: "number", min: 1, inputmode: "numeric", value: w.max_in_flight ?? "" }), "Empty: the server's bound per endpoint."),
    field("rate_limit_per_second", "Most requests per second", h("input", { type: "number", min: 1, inputmode: "numeric", value: w.rate_limit_per_second ?? "" }), "Empty: no limit."),
    field("ordering", "Order of deliveries", h("select", {}, [["none", "none: each delivery as soon as it is due"], ["per_resource", "per resource: each ticket's (or project's) deliveries one at a time, in order"]]
      .map(([v, t]) => h("option", { value: v, selected: v === w.ordering }, t))), "Per resource, a delivery waits until the one before it about the same ticket succeeded, failed for good or was skipped; different tickets still go in parallel."),
    field("expires_at", "Remove this webhook at (your time zone)", h("input", { type: "datetime-local", value: toLocalInput(w.expires_at) }), "Empty: kept until deleted. A temporary webhook (as codmir listen makes) is removed by the server at this time."),
    h("div", { class: "choice", "data-field": "enabled" }, h("input", { type: "checkbox", id: "enabled", name: "enabled", checked: w.enabled }), h("label", { for: "enabled" }, "Enabled: deliver events to this endpoint")),
    h("button", { type: "submit" }, "Save settings"),
    status,
  );
  onSubmit(form, async () => {
    const v = (n) => form.elements[n].value.trim();
    const num = (n) => (v(n) ? Number(v(n)) : null);
    const enabled = form.elements.enabled.checked;
    if (w.enabled && !enabled && !(await confirmDisable(w))) return;
    const body = {
      url: v("url"),
      events: chosenEvents(form),
      project_ids: chosenProjects(form),
      description: v("description") || null,
      headers: headers.value(),
      max_in_flight: num("max_in_flight"),
      rate_limit_per_second: num("rate_limit_per_second"),
      ordering: form.elements.ordering.value,
      enabled,
    };
    // Sent only when changed: the input holds minutes, and the expiry may have seconds.
    if (v("expires_at") !== toLocalInput(w.expires_at)) body.expires_at = fromLocalInput(v("expires_at")) ?? null;
    await life.api("PATCH", `/v1/webhooks/${w.id}`, body);
    saved = `Saved at ${new Date().toLocaleTimeString()}.`;
    reroute();
  });
  if (saved) say(status, saved);
  saved = null;
  fill(section, form);
}

/** Custom headers: each a name and a value. A value as a read shows it (masked) keeps the
 * value the server has; type a new one to replace it. */
function headerEditor(current) {
  const list = h("div", { class: "headers-list" });
  let n = 0;
  const addRow = (name = "", value = "") => {
    n += 1;
    const nameInput = h("input", { type: "text", class: "h-name", "aria-label": `Header ${n} name`, value: name, placeholder: "X-Tenant", autocomplete: "off", spellcheck: "false" });
    const valueInput = h("input", { type: "text", class: "h-value", "aria-label": `Header ${n} value`, value, placeholder: "value", autocomplete: "off", spellcheck: "false" });
    const row = h("div", { class: "header-row" }, nameInput, valueInput);
    row.append(h("button", { type: "button", class: "small secondary", "aria-label": `Remove header ${n}`, onclick: () => row.remove() }, "Remove"));
    list.append(row);
  };
  for (const [name, value] of Object.entries(current)) addRow(name, value);
  const el = h(
    "fieldset",
    { "data-field": "headers" },
    h("legend", {}, "Custom headers"),
    h("p", { class: "hint" }, "Sent with every delivery. Values are write-only: they show masked, and a masked value is kept as it is. Type a new value to replace one."),
    h("p", { class: "field-error", id: "headers-error", role: "alert" }),
    list,
    h("button", { type: "button", class: "small secondary", onclick: () => addRow() }, "Add a header"),
  );
  const value = () => {
    const out = {};
    for (const row of list.querySelectorAll(".header-row")) {
      const name = row.querySelector(".h-name").value.trim();
      if (name) out[name] = row.querySelector(".h-value").value.trim();
    }
    return out;
  };
  return { el, value };
}

function confirmDisable(w) {
  return confirmAction({
    title: "Disable this webhook?",
    body: h("p", {}, "codmir stops sending to ", h("code", {}, w.url), ". Its pending deliveries are cancelled, and events that happen while it is disabled are not sent. After enabling it again, replay the window with “Also events it never got” to catch up."),
    confirm: "Disable",
    danger: true,
  });
}

// ---- Secrets ----

/** Which secret signs which header, until when. */
function signingTable(w) {
  const s = w.signing;
  const until = s.x_codmir_signature_moves_at;
  return h(
    "table",
    { class: "signing" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Header"), h("th", { scope: "col" }, "Signed with"))),
    h("tbody", {},
      h("tr", {}, h("th", { scope: "row" }, h("code", {}, "X-Codmir-Signature")),
        h("td", {}, s.x_codmir_signature === "previous" ? ["the previous secret until ", when(until), ", then the current one"] : "the current secret")),
      h("tr", {}, h("th", { scope: "row" }, h("code", {}, "webhook-signature")),
        h("td", {}, s.webhook_signature.includes("previous") ? ["the current secret and, until ", when(w.previous_secret_expires_at), ", the previous one"] : "the current secret"))),
  );
}

export async function secretsTab(section, life, w) {
  const status = notice();
  const shown = h("div");
  const table = h("div", {}, signingTable(w));
  const inGrace = Boolean(w.previous_secret_expires_at);
  const grace = h("select", {}, [["0", "none: the current secret ends now"], ["3600", "1 hour"], ["86400", "24 hours"], ["604800", "7 days"]]
    .map(([v, t]) => h("option", { value: v, selected: v === (inGrace ? "0" : "86400"), disabled: inGrace && v !== "0" }, t)));
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Rotate the secret"),
    h("p", {}, "The new secret signs webhook-signature at once; during the grace period the current one still signs it beside the new one, and X-Codmir-Signature stays on the current one until the period ends, so receivers can switch without refusing a delivery."),
    inGrace ? h("p", { class: "notice" }, "A grace period runs until ", when(w.previous_secret_expires_at), ": a rotation now keeps that promise and must end the current secret at once (no grace period of its own).") : null,
    formError(),
    field("grace_period_seconds", "Grace period", grace),
    field("secret", "New secret (optional)", h("input", { type: "text", autocomplete: "off" }), "Leave empty to have a strong one generated."),
    h("button", { type: "submit" }, "Rotate secret"),
    status,
  );
  onSubmit(form, async () => {
    const seconds = Number(grace.value);
    const ends = new Date(Date.now() + seconds * 1000).toLocaleString();
    const ok = await confirmAction({
      title: "Rotate this webhook's secret?",
      body: seconds
        ? h("p", {}, `webhook-signature is signed with the new secret and the current one until ${ends}. X-Codmir-Signature stays on the current secret until ${ends}, then moves to the new one: receivers must accept the new secret before then.`)
        : h("p", {}, "Both headers are signed with the new secret alone from now on: a receiver holding the current secret refuses every delivery until it has the new one."),
      confirm: "Rotate secret",
      danger: seconds === 0,
    });
    if (!ok) return;
    const body = { grace_period_seconds: seconds };
    if (form.elements.secret.value.trim()) body.secret = form.elements.secret.value.trim();
    const r = await life.api("POST", `/v1/webhooks/${w.id}/rotate-secret`, body);
    const moves = r.signing.x_codmir_signature_moves_at;
    const movesAt = moves ? new Date(moves).toLocaleString() : null;
    fill(shown, secretCard(r, "The new secret", movesAt));
    fill(table, signingTable(r));
    say(status, moves
      ? `Rotated. webhook-signature carries the new and the previous secret; X-Codmir-Signature stays on the previous secret until ${movesAt}, then moves to the new one.`
      : "Rotated. Both headers are signed with the new secret alone.");
    shown.scrollIntoView();
  });
  fill(
    section,
    h("section", { class: "card", "aria-labelledby": "signing-title" }, h("h2", { id: "signing-title" }, "Which secret signs what"), table,
      h("p", { class: "muted" }, "A secret is shown only when the webhook is created or its secret rotated.")),
    shown,
    form,
  );
}

// ---- Danger zone ----

export async function dangerTab(section, life, w) {
  const status = notice();
  fill(
    section,
    status,
    h("section", { class: "card danger" },
      h("h2", {}, w.enabled ? "Disable" : "Enable"),
      w.enabled
        ? [h("p", {}, "Stops deliveries to this endpoint and cancels its pending ones; enable it again at any time."),
          button("Disable this webhook", async () => {
            if (!(await confirmDisable(w))) return;
            await life.api("PATCH", `/v1/webhooks/${w.id}`, { enabled: false });
            reroute();
          }, status, { class: "danger" })]
        : [h("p", {}, "Deliveries are stopped. Enabling sends new events again; replay a window to catch up."),
          button("Enable this webhook", async () => {
            await life.api("PATCH", `/v1/webhooks/${w.id}`, { enabled: true });
            reroute();
          }, status)]),
    h("section", { class: "card danger" },
      h("h2", {}, "Delete"),
      h("p", {}, "Deleting a webhook cancels its pending deliveries; its delivery log goes with it."),
      button("Delete this webhook", async () => {
        const ok = await confirmAction({
          title: "Delete this webhook?",
          body: h("p", {}, "codmir stops sending to ", h("code", {}, w.url), " and cancels its pending deliveries. This cannot be undone."),
          confirm: "Delete",
          danger: true,
        });
        if (!ok) return;
        await life.api("DELETE", `/v1/webhooks/${w.id}`);
        location.hash = "#/webhooks";
      }, status, { class: "danger" })),
  );
}
