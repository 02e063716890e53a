// One webhook: its chart, its actions (enable, ping, retry pending, rotate, replay), its
// deliveries (live, filterable, paged) and its settings.

import { answer, api, badge, bars, button, describe, fill, fromLocalInput, h, latency, notice, query, rate, say, when } from "./lib.js";
import { chosenEvents, eventPicker, secretCard, stateBadge } from "./webhooks.js";

export async function webhookPage(main, live, id) {
  const [w, catalog] = await Promise.all([api("GET", `/v1/webhooks/${id}`), api("GET", "/v1/event-types")]);
  const status = notice();
  const reload = () => webhookPage(main, live, id);
  const actions = h(
    "div",
    { class: "actions" },
    button(w.enabled ? "Disable" : "Enable", async () => {
      await api("PATCH", `/v1/webhooks/${id}`, { enabled: !w.enabled });
      await reload();
    }, status),
    button("Send ping", async () => {
      say(status, "Pinging…", "muted");
      const r = await api("POST", `/v1/webhooks/${id}/ping`, {});
      const got = r.status_code !== null ? `HTTP ${r.status_code}` : r.error;
      say(status, `Ping ${r.succeeded ? "accepted" : "refused"}: ${got} in ${r.duration_ms} ms.`, r.succeeded ? "ok" : "bad");
    }, status),
    button("Retry pending now", async () => {
      const r = await api("POST", `/v1/webhooks/${id}/retry-pending`, {});
      say(status, `${r.due_now} pending deliveries are due now.`);
    }, status),
  );
  const deliveries = h("section", { "aria-labelledby": "deliveries-title" });
  const chart = h("section", { class: "card", "aria-labelledby": "chart-title" });
  const secret = h("div");
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/webhooks" }, "Webhooks"), " / ", w.id),
    h("h1", { class: "url" }, w.url),
    h("p", {}, stateBadge(w), " · ", w.events.join(", "), w.description ? ` · ${w.description}` : ""),
    actions,
    status,
    secret,
    chart,
    deliveries,
    settings(w, catalog, reload),
    rotation(w, secret),
    replay(w),
    h("section", { class: "card danger" }, h("h2", {}, "Delete"), h("p", {}, "Deleting a webhook cancels its pending deliveries."),
      button("Delete this webhook", async () => {
        if (!confirm(`Delete the webhook to ${w.url}?`)) return;
        await api("DELETE", `/v1/webhooks/${id}`);
        location.hash = "#/webhooks";
      }, status, { class: "danger" })),
  );
  await Promise.all([drawChart(chart, id, "1h"), deliveryList(deliveries, live, id, catalog)]);
}

async function drawChart(section, id, window) {
  const stats = await api("GET", `/v1/webhooks/${id}/stats?window=${window}`);
  const choose = h(
    "select",
    { id: "window", "aria-label": "Window" },
    [["1h", "Last hour"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"]].map(([v, t]) => h("option", { value: v, selected: v === window }, t)),
  );
  choose.addEventListener("change", () => drawChart(section, id, choose.value));
  const d = stats.deliveries;
  fill(
    section,
    h("div", { class: "row" }, h("h2", { id: "chart-title" }, "Deliveries by outcome"), choose),
    bars(stats, { width: 600, height: 120, max: 96, label: `Deliveries per ${stats.bucket_seconds === 60 ? "minute" : "hour"}, by outcome` }),
    h("p", { class: "legend" }, h("span", { class: "key succeeded" }), " succeeded ", h("span", { class: "key failed" }), " failed ", h("span", { class: "key pending" }), " pending",
      h("span", { class: "muted" }, " · from ", new Date(stats.since).toLocaleString(), " to now")),
    h("dl", { class: "figures" },
      h("dt", {}, "Deliveries"), h("dd", {}, `${d.total} (${d.succeeded} succeeded, ${d.failed} failed, ${d.pending} pending)`),
      h("dt", {}, "Success rate"), h("dd", {}, rate(stats)),
      h("dt", {}, "Latency"), h("dd", {}, latency(stats))),
  );
}

async function deliveryList(section, live, id, catalog) {
  const filter = { status: "", event_type: "" };
  const statusSel = h("select", { id: "f-status" }, ["", "pending", "retrying", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s }, s || "any status")));
  const families = [...new Set(catalog.data.map((t) => `${t.name.split(".")[0]}.*`))];
  const typeSel = h("select", { id: "f-type" }, h("option", { value: "" }, "any event"), families.map((f) => h("option", { value: f }, f)), catalog.data.map((t) => h("option", { value: t.name }, t.name)));
  const body = h("tbody");
  const more = h("p");
  let pages = 1;
  let shown = "";
  const load = async (cursor) => {
    const page = await api("GET", `/v1/deliveries${query({ webhook_id: id, status: filter.status, event_type: filter.event_type, limit: 20, cursor })}`);
    const rows = page.data.map((d) =>
      h("tr", {},
        h("td", {}, h("a", { href: `#/deliveries/${d.id}` }, d.id)),
        h("td", {}, d.event_type),
        h("td", {}, badge(d.status), d.status === "retrying" && d.next_attempt_at ? h("span", { class: "muted" }, " next ", when(d.next_attempt_at)) : null),
        h("td", {}, String(d.attempt_count)),
        h("td", {}, answer(d.last_status_code, d.last_error)),
        h("td", {}, when(d.created_at))));
    if (cursor) body.append(...rows);
    else {
      const now = JSON.stringify(page.data);
      if (now === shown) return;
      shown = now;
      fill(body, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No deliveries match.")));
    }
    fill(more, page.next_cursor ? h("button", { type: "button", onclick: () => { pages += 1; load(page.next_cursor); } }, "Older deliveries") : null);
  };
  const refilter = () => {
    filter.status = statusSel.value;
    filter.event_type = typeSel.value;
    pages = 1;
    shown = "";
    load();
  };
  statusSel.addEventListener("change", refilter);
  typeSel.addEventListener("change", refilter);
  fill(
    section,
    h("div", { class: "row" }, h("h2", { id: "deliveries-title" }, "Deliveries"),
      h("div", { class: "filters" }, h("label", { for: "f-status" }, "Status"), statusSel, h("label", { for: "f-type" }, "Event"), typeSel)),
    h("div", { class: "table" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Delivery", "Event", "Status", "Attempts", "Last answer", "Created"].map((t) => h("th", { scope: "col" }, t)))),
      body)),
    more,
  );
  await load();
  // Live: the newest page again every 2 s while the tab is visible (not once older pages are
  // open, so that reading them is not disturbed).
  live.every(2000, () => pages === 1 && load().catch(() => {}));
}

function settings(w, catalog, reload) {
  const status = notice();
  const form = h(
    "form",
    { class: "card", novalidate: true },
    h("h2", {}, "Settings"),
    h("div", { class: "field" }, h("label", { for: "s-url" }, "Endpoint URL"), h("input", { id: "s-url", name: "url", type: "url", value: w.url, required: true })),
    eventPicker(catalog, w.events),
    h("div", { class: "field" }, h("label", { for: "s-description" }, "Description"), h("input", { id: "s-description", name: "description", value: w.description ?? "" })),
    h("div", { class: "field" }, h("label", { for: "s-mif" }, "Most requests in flight at once (empty: the server's bound)"), h("input", { id: "s-mif", name: "max_in_flight", type: "number", min: 1, value: w.max_in_flight ?? "" })),
    h("div", { class: "field" }, h("label", { for: "s-rate" }, "Most requests per second (empty: no limit)"), h("input", { id: "s-rate", name: "rate_limit_per_second", type: "number", min: 1, value: w.rate_limit_per_second ?? "" })),
    h("button", { type: "submit" }, "Save settings"),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (n) => form.elements[n].value.trim();
    const num = (n) => (v(n) ? Number(v(n)) : null);
    try {
      await api("PATCH", `/v1/webhooks/${w.id}`, {
        url: v("url"),
        events: chosenEvents(form),
        description: v("description") || null,
        max_in_flight: num("max_in_flight"),
        rate_limit_per_second: num("rate_limit_per_second"),
      });
      await reload();
    } catch (e) {
      say(status, describe(e), "bad");
    }
  });
  return form;
}

function rotation(w, secretSlot) {
  const status = notice();
  const grace = h("select", { id: "r-grace", name: "grace" }, [["0", "end the old secret now"], ["3600", "1 hour"], ["86400", "24 hours"], ["604800", "7 days"]].map(([v, t]) => h("option", { value: v, selected: v === "86400" }, t)));
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Rotate the secret"),
    h("p", {}, "The new secret signs webhook-signature from now on; during the grace period the old one still signs it beside the new one, and X-Codmir-Signature stays on the old one until the period ends, so receivers can switch without losing a delivery.",
      w.previous_secret_expires_at ? h("span", {}, " A grace period runs: the previous secret signs until ", when(w.previous_secret_expires_at), ", and a rotation now must end the current secret at once (no grace period).") : ""),
    h("div", { class: "field" }, h("label", { for: "r-grace" }, "Keep the old secret for"), grace),
    h("div", { class: "field" }, h("label", { for: "r-secret" }, "New secret (optional: generated when empty)"), h("input", { id: "r-secret", name: "secret", autocomplete: "off" })),
    h("button", { type: "submit" }, "Rotate secret"),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { grace_period_seconds: Number(grace.value) };
    if (form.elements.secret.value.trim()) body.secret = form.elements.secret.value.trim();
    try {
      const r = await api("POST", `/v1/webhooks/${w.id}/rotate-secret`, body);
      fill(secretSlot, secretCard(r, "The new secret"));
      const moves = r.signing.x_codmir_signature_moves_at;
      say(status, moves
        ? `Rotated. webhook-signature carries the new and the previous secret; X-Codmir-Signature stays on the previous secret until ${new Date(moves).toLocaleString()}, then moves to the new one.`
        : "Rotated. Both headers are signed with the new secret alone.");
      secretSlot.scrollIntoView();
    } catch (e) {
      say(status, describe(e), "bad");
    }
  });
  return form;
}

function replay(w) {
  const status = notice();
  const hourAgo = new Date(Date.now() - 3600_000);
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Replay a time window"),
    h("p", {}, "Sends this webhook the events of the window again, as new deliveries."),
    h("div", { class: "field" }, h("label", { for: "p-since" }, "From (your time zone)"), h("input", { id: "p-since", name: "since", type: "datetime-local", value: local(hourAgo), required: true })),
    h("div", { class: "field" }, h("label", { for: "p-until" }, "Until (empty: now)"), h("input", { id: "p-until", name: "until", type: "datetime-local" })),
    h("div", { class: "field" }, h("label", { for: "p-status" }, "Which events"), h("select", { id: "p-status", name: "status" }, [["failed", "those whose delivery failed (and never succeeded)"], ["cancelled", "those whose delivery was cancelled"], ["any", "every event it got"]].map(([v, t]) => h("option", { value: v }, t)))),
    h("div", { class: "choice" }, h("input", { type: "checkbox", id: "p-missed", name: "include_missed" }), h("label", { for: "p-missed" }, "Also events it never got (while disabled)")),
    h("button", { type: "submit" }, "Replay"),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { since: fromLocalInput(form.elements.since.value) };
    const until = fromLocalInput(form.elements.until.value);
    if (until) body.until = until;
    body.status = form.elements.status.value;
    if (form.elements.include_missed.checked) body.include_missed = true;
    try {
      const r = await api("POST", `/v1/webhooks/${w.id}/replay`, body);
      say(status, `Queued ${r.queued} deliveries; ${r.skipped_pending} skipped (already pending).${r.next_since ? ` The window holds more: replay again from ${r.next_since}.` : ""}`);
    } catch (e) {
      say(status, describe(e), "bad");
    }
  });
  return form;
}
