// The event log with its filters, and one event: its exact payload and where it went.

import { answer, badge, codeBlock, fill, fromLocalInput, h, pretty, query, urlText, when } from "./lib.js";

/** What an event is about, in a line: the ticket's title, the comment, the project or the
 * member, from its payload. */
export function summary(e) {
  const d = e.data ?? {};
  const what = d.comment?.body ?? d.ticket?.title ?? d.member?.name ?? d.project?.name ?? d.webhook?.url ?? "";
  return what.length > 90 ? `${what.slice(0, 89)}…` : what;
}

export async function eventsPage(main, life) {
  const [catalog, projects] = await Promise.all([life.api("GET", "/v1/event-types"), life.api("GET", "/v1/projects?limit=100")]);
  const families = [...new Set(catalog.data.map((t) => `${t.name.split(".")[0]}.*`))];
  const form = h(
    "form",
    { class: "filters card" },
    h("label", { for: "e-type" }, "Type"),
    h("select", { id: "e-type", name: "type" }, h("option", { value: "" }, "any"), families.map((f) => h("option", { value: f }, f)), catalog.data.map((t) => h("option", { value: t.name }, t.name))),
    h("label", { for: "e-project" }, "Project"),
    h("select", { id: "e-project", name: "project_id" }, h("option", { value: "" }, "any"), projects.data.map((p) => h("option", { value: p.id }, p.name))),
    h("label", { for: "e-since" }, "From"),
    h("input", { id: "e-since", name: "since", type: "datetime-local" }),
    h("label", { for: "e-until" }, "Until"),
    h("input", { id: "e-until", name: "until", type: "datetime-local" }),
    h("button", { type: "submit" }, "Filter"),
  );
  const body = h("tbody");
  const more = h("p");
  const seq = life.sequence();
  const load = async (cursor) => {
    const el = form.elements;
    const n = cursor ? null : seq.next();
    const page = await life.api("GET", `/v1/events${query({ type: el.type.value, project_id: el.project_id.value, since: fromLocalInput(el.since.value), until: fromLocalInput(el.until.value), limit: 25, cursor })}`);
    if (n !== null && !seq.is(n)) return;
    const rows = page.data.map((e) => h("tr", {},
      h("td", {}, h("a", { href: `#/events/${e.id}` }, e.type)),
      h("td", { class: "summary" }, summary(e)),
      h("td", {}, e.data?.project?.name ?? ""),
      h("td", {}, e.data?.user?.name ?? ""),
      h("td", {}, when(e.timestamp))));
    if (cursor) body.append(...rows);
    else fill(body, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No events match.")));
    fill(more, page.next_cursor ? h("button", { type: "button", onclick: () => load(page.next_cursor) }, "Older events") : null);
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });
  fill(
    main,
    h("h1", {}, "Events"),
    form,
    h("div", { class: "table" }, h("table", {}, h("thead", {}, h("tr", {}, ["Event", "About", "Project", "By", "Time"].map((t) => h("th", { scope: "col" }, t)))), body)),
    more,
  );
  await load();
}

export async function eventPage(main, life, id) {
  const [raw, went, webhooks] = await Promise.all([
    life.text(`/v1/events/${id}`),
    life.api("GET", `/v1/deliveries${query({ event_id: id, limit: 100 })}`),
    life.api("GET", "/v1/webhooks?limit=100"),
  ]);
  const event = JSON.parse(raw);
  const urls = new Map(webhooks.data.map((w) => [w.id, w.url]));
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/events" }, "Events"), " / ", id),
    h("h1", {}, event.type, " ", h("code", {}, id)),
    h("p", {}, summary(event), event.data?.project ? ` · ${event.data.project.name}` : "", event.data?.user ? ` · by ${event.data.user.name}` : "", " · ", when(event.timestamp)),
    h("section", { class: "card" }, h("h2", {}, "Payload"), codeBlock("Pretty-printed", pretty(raw), true), codeBlock("Exact bytes delivered", raw, false)),
    h("section", {}, h("h2", {}, "Where it went"),
      went.data.length
        ? h("div", { class: "table" }, h("table", {},
            h("thead", {}, h("tr", {}, ["Delivery", "Webhook", "Status", "Attempts", "Last answer"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, went.data.map((d) => h("tr", {},
              h("td", {}, h("a", { href: `#/deliveries/${d.id}` }, d.id)),
              h("td", { class: "endpoint" }, urls.has(d.webhook_id) ? urlText(urls.get(d.webhook_id), "a", { href: `#/webhooks/${d.webhook_id}` }) : h("a", { href: `#/webhooks/${d.webhook_id}` }, d.webhook_id)),
              h("td", {}, badge(d.status)),
              h("td", {}, String(d.attempt_count)),
              h("td", {}, answer(d.last_status_code, d.last_error)))))))
        : h("p", { class: "muted" }, "No webhook was subscribed to it.")),
  );
}
