// One webhook, in sections: its health (the outage view: figures, chart, what is retrying and
// when), its deliveries (live, filterable, paged, and a replay), its settings, its secrets
// and a danger zone. Each section is a route of its own, with its own life.

import { answer, badge, bars, button, copyButton, countsText, fill, fromLocalInput, h, latency, legend, notice, query, rate, reroute, say, toLocalInput, urlText, when } from "./lib.js";
import { field, formError, onSubmit } from "./forms.js";
import { retryingTable, stateBadge } from "./webhooks.js";
import { dangerTab, secretsTab, settingsTab } from "./settings.js";

const TABS = [
  ["", "Overview"],
  ["deliveries", "Deliveries"],
  ["settings", "Settings"],
  ["secrets", "Secrets"],
  ["danger", "Danger zone"],
];

export async function webhookPage(main, life, id, tab = "") {
  const w = await life.api("GET", `/v1/webhooks/${id}`);
  const head = h(
    "div",
    { class: "webhook-head" },
    h("p", { class: "crumbs" }, h("a", { href: "#/webhooks" }, "Webhooks"), " / ", w.id),
    h("div", { class: "row" }, urlText(w.url, "h1"), copyButton(w.url, "URL")),
    h("p", {}, stateBadge(w), " · ", w.events.join(", "), w.description ? ` · ${w.description}` : ""),
    h("nav", { class: "tabs", "aria-label": "Webhook sections" },
      TABS.map(([t, label]) => h("a", { href: `#/webhooks/${id}${t ? `/${t}` : ""}`, "aria-current": t === (tab ?? "") ? "page" : undefined }, label))),
  );
  const section = h("div", { class: "tab" });
  const draw = {
    "": overviewTab,
    deliveries: deliveriesTab,
    settings: settingsTab,
    secrets: secretsTab,
    danger: dangerTab,
  }[tab ?? ""];
  await draw(section, life, w);
  fill(main, head, section);
}

// ---- Overview: the outage view of one webhook. ----

async function overviewTab(section, life, w) {
  const id = w.id;
  const status = notice();
  const actions = h(
    "div",
    { class: "actions" },
    button("Send ping", async () => {
      say(status, "Pinging…", "muted");
      const r = await life.api("POST", `/v1/webhooks/${id}/ping`, {});
      const got = r.status_code !== null ? `HTTP ${r.status_code}` : r.error;
      say(status, `Ping ${r.succeeded ? "accepted" : "refused"}: ${got} in ${r.duration_ms} ms.`, r.succeeded ? "ok" : "bad");
    }, status),
    button("Retry pending now", async () => {
      const r = await life.api("POST", `/v1/webhooks/${id}/retry-pending`, {});
      say(status, `${r.due_now} pending deliveries are due now.`);
      await refresh();
    }, status),
    w.enabled ? null : button("Enable", async () => {
      await life.api("PATCH", `/v1/webhooks/${id}`, { enabled: true });
      reroute();
    }, status),
  );
  let window = "1h";
  const choose = h(
    "select",
    { id: "window", "aria-label": "Window" },
    [["1h", "Last hour"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"]].map(([v, t]) => h("option", { value: v, selected: v === window }, t)),
  );
  const chart = h("div");
  const figures = h("dl", { class: "figures" });
  const retrying = h("div");
  const seq = life.sequence();
  let shown = "";
  const refresh = async () => {
    const n = seq.next();
    const [stats, failing] = await Promise.all([
      life.api("GET", `/v1/webhooks/${id}/stats?window=${window}`),
      life.api("GET", `/v1/deliveries${query({ webhook_id: id, status: "retrying", limit: 10 })}`),
    ]);
    if (!seq.is(n)) return;
    // Drawn again only when something changed: a link being read keeps its focus.
    const now = JSON.stringify([window, stats.deliveries, stats.pings, stats.series, failing.data]);
    if (now === shown) return;
    shown = now;
    const d = stats.deliveries;
    fill(chart, bars(stats, { width: 600, height: 120, max: 96, label: `Deliveries per ${stats.bucket_seconds === 60 ? "minute" : "hour"}, by outcome: ${countsText(d)}` }));
    const p = stats.pings;
    fill(
      figures,
      h("dt", {}, "Success rate"), h("dd", {}, rate(stats), h("span", { class: "muted" }, " (succeeded of settled; pings apart)")),
      h("dt", {}, "Latency"), h("dd", {}, latency(stats)),
      h("dt", {}, "Deliveries"), h("dd", {}, countsText(d)),
      h("dt", {}, "Test pings"), h("dd", {}, p.total ? `${p.total}: ${p.succeeded} accepted, ${p.failed} refused` : "none"),
    );
    fill(
      retrying,
      failing.data.length
        ? [retryingTable(failing.data, "Failing now: these deliveries wait for their next attempt"),
            failing.has_more ? h("p", {}, h("a", { href: `#/webhooks/${id}/deliveries` }, "Every retrying delivery")) : null]
        : h("p", { class: "muted" }, "Nothing is retrying."),
    );
  };
  choose.addEventListener("change", () => {
    window = choose.value;
    refresh().catch(() => {});
  });
  await refresh();
  fill(
    section,
    actions,
    status,
    h("section", { class: "card", "aria-labelledby": "health-title" },
      h("div", { class: "row" }, h("h2", { id: "health-title" }, "Health"), choose),
      chart,
      legend(),
      figures),
    h("section", { class: "card", "aria-labelledby": "retrying-title" }, h("h2", { id: "retrying-title" }, "Retrying"), retrying),
  );
  life.every(5000, refresh);
}

// ---- Deliveries: the live list, and a replay. ----

async function deliveriesTab(section, life, w) {
  const id = w.id;
  const catalog = await life.api("GET", "/v1/event-types");
  const filter = { status: "", event_type: "" };
  const statusSel = h("select", { id: "f-status" }, ["", "pending", "retrying", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s }, s || "any status")));
  const families = [...new Set(catalog.data.map((t) => `${t.name.split(".")[0]}.*`))];
  const typeSel = h("select", { id: "f-type" }, h("option", { value: "" }, "any event"), families.map((f) => h("option", { value: f }, f)), catalog.data.map((t) => h("option", { value: t.name }, t.name)));
  const body = h("tbody");
  const more = h("p");
  let pages = 1;
  const rows = new Map(); // delivery id -> [its JSON, its row], to redraw only what changed
  const seq = life.sequence();
  const row = (d) =>
    h("tr", { "data-id": d.id },
      h("td", {}, h("a", { href: `#/deliveries/${d.id}` }, d.id)),
      h("td", {}, d.event_type),
      h("td", {}, badge(d.status), d.status === "retrying" && d.next_attempt_at ? h("span", { class: "muted" }, " next ", when(d.next_attempt_at)) : null,
        d.waiting ? h("span", { class: "muted" }, ` waiting behind an earlier one of ${d.chain.resource_id}`) : null),
      h("td", {}, String(d.attempt_count)),
      h("td", {}, answer(d.last_status_code, d.last_error)),
      h("td", {}, when(d.created_at)));
  /** The rows of `data`, reusing each row whose delivery did not change (a link keeps its
   * focus, nothing flickers). */
  const rowsOf = (data) =>
    data.map((d) => {
      const json = JSON.stringify(d);
      const kept = rows.get(d.id);
      if (kept && kept[0] === json) return kept[1];
      const r = row(d);
      rows.set(d.id, [json, r]);
      return r;
    });
  const load = async (cursor) => {
    const n = cursor ? null : seq.next();
    const page = await life.api("GET", `/v1/deliveries${query({ webhook_id: id, status: filter.status, event_type: filter.event_type, limit: 20, cursor })}`);
    if (n !== null && !seq.is(n)) return; // a newer filter's answer is (or will be) shown
    const drawn = rowsOf(page.data);
    if (cursor) body.append(...drawn);
    else {
      const same = drawn.length === body.children.length && drawn.every((r, i) => body.children[i] === r);
      if (!same) body.replaceChildren(...(drawn.length ? drawn : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No deliveries match."))]));
    }
    fill(more, page.next_cursor ? h("button", { type: "button", class: "secondary", onclick: () => { pages += 1; load(page.next_cursor); } }, "Older deliveries") : null);
  };
  const refilter = () => {
    filter.status = statusSel.value;
    filter.event_type = typeSel.value;
    pages = 1;
    load().catch(() => {});
  };
  statusSel.addEventListener("change", refilter);
  typeSel.addEventListener("change", refilter);
  await load();
  fill(
    section,
    h("section", { "aria-labelledby": "deliveries-title" },
      h("div", { class: "row" }, h("h2", { id: "deliveries-title" }, "Deliveries"),
        h("div", { class: "filters" }, h("label", { for: "f-status" }, "Status"), statusSel, h("label", { for: "f-type" }, "Event"), typeSel)),
      h("div", { class: "table" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Delivery", "Event", "Status", "Attempts", "Last answer", "Created"].map((t) => h("th", { scope: "col" }, t)))),
        body)),
      more),
    replay(life, w),
  );
  // Live: the newest page again every 2 s while the tab is visible (not once older pages are
  // open, so that reading them is not disturbed).
  life.every(2000, () => (pages === 1 ? load() : undefined));
}

function replay(life, w) {
  const status = notice();
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Replay a time window"),
    h("p", {}, "Sends this webhook the events of the window again, as new deliveries."),
    formError(),
    field("since", "From (your time zone)", h("input", { type: "datetime-local", value: toLocalInput(new Date(Date.now() - 3600_000).toISOString()), required: true })),
    field("until", "Until (empty: now)", h("input", { type: "datetime-local" })),
    field("status", "Which events", h("select", {}, [["failed", "those whose delivery failed (and never succeeded)"], ["cancelled", "those whose delivery was cancelled"], ["any", "every event it got"]].map(([v, t]) => h("option", { value: v }, t)))),
    h("div", { class: "choice" }, h("input", { type: "checkbox", id: "include_missed", name: "include_missed" }), h("label", { for: "include_missed" }, "Also events it never got (while disabled)")),
    h("button", { type: "submit" }, "Replay"),
    status,
  );
  onSubmit(form, async () => {
    const body = { since: fromLocalInput(form.elements.since.value), status: form.elements.status.value };
    const until = fromLocalInput(form.elements.until.value);
    if (until) body.until = until;
    if (form.elements.include_missed.checked) body.include_missed = true;
    const r = await life.api("POST", `/v1/webhooks/${w.id}/replay`, body);
    say(status, `Queued ${r.queued} deliveries; ${r.skipped_pending} skipped (already pending).${r.next_since ? ` The window holds more: replay again from ${r.next_since}.` : ""}`);
  });
  return form;
}
