// One delivery: every attempt with the request as sent and the response, Redeliver (with the
// new delivery's outcome shown live), and the event it carried.

import { answer, api, badge, button, codeBlock, fill, h, notice, pretty, say, when } from "./lib.js";

export async function deliveryPage(main, live, id) {
  const render = async () => {
    const d = await api("GET", `/v1/deliveries/${id}`);
    const status = notice();
    const redelivered = h("div", { "aria-live": "polite" });
    fill(
      main,
      h("p", { class: "crumbs" }, h("a", { href: "#/webhooks" }, "Webhooks"), " / ", h("a", { href: `#/webhooks/${d.webhook_id}` }, d.webhook_id), " / ", d.id),
      h("h1", {}, "Delivery ", h("code", {}, d.id)),
      h("dl", { class: "figures" },
        h("dt", {}, "Status"), h("dd", { id: "delivery-status" }, badge(d.status)),
        h("dt", {}, "Event"), h("dd", {}, h("a", { href: `#/events/${d.event_id}` }, d.event_id), " (", d.event_type, ")"),
        h("dt", {}, "Sent to"), h("dd", {}, d.url ? h("code", { class: "url" }, d.url) : "the webhook was deleted"),
        h("dt", {}, "Created"), h("dd", {}, when(d.created_at)),
        d.next_attempt_at ? [h("dt", {}, "Next attempt"), h("dd", {}, when(d.next_attempt_at))] : null,
        d.cancel_reason ? [h("dt", {}, "Cancelled because"), h("dd", {}, d.cancel_reason)] : null,
        d.redelivery_of ? [h("dt", {}, "Redelivery of"), h("dd", {}, h("a", { href: `#/deliveries/${d.redelivery_of}` }, d.redelivery_of))] : null),
      h("div", { class: "actions" }, button("Redeliver", async () => {
        const again = await api("POST", `/v1/deliveries/${id}/redeliver`, {});
        watch(live, again.id, redelivered);
      }, status)),
      status,
      redelivered,
      h("h2", {}, `Attempts (${d.attempts.length})`),
      d.attempts.length ? [...d.attempts].reverse().map((a) => attempt(a, d)) : h("p", { class: "muted" }, "No attempt yet."),
      d.request_body !== null ? h("section", { class: "card" }, h("h2", {}, "Request body"),
        codeBlock("Pretty-printed", pretty(d.request_body), true),
        codeBlock("Exact bytes sent", d.request_body, false)) : h("p", { class: "muted" }, "The event is past retention: its body is gone."),
    );
    return d;
  };
  const d = await render();
  // Live while attempts may still come.
  if (d.status === "pending" || d.status === "retrying") {
    live.every(2000, async () => {
      const now = await api("GET", `/v1/deliveries/${id}`).catch(() => null);
      if (now && (now.status !== d.status || now.attempts.length !== d.attempts.length)) {
        live.stop();
        deliveryPage(main, live, id);
      }
    });
  }
}

/** Shows a redelivery's status, polled until it settles. */
function watch(live, id, slot) {
  const show = (d) =>
    fill(slot, h("p", { class: "card" }, "Redelivered as ", h("a", { href: `#/deliveries/${d.id}` }, d.id), ": ", badge(d.status), " ", answer(d.last_status_code, d.last_error)));
  show({ id, status: "pending", last_status_code: null, last_error: null });
  let done = false;
  live.every(1000, async () => {
    if (done) return;
    const d = await api("GET", `/v1/deliveries/${id}`).catch(() => null);
    if (!d) return;
    show(d);
    done = d.status !== "pending" && d.status !== "retrying";
  });
}

function attempt(a, d) {
  const headers = a.request_headers;
  return h(
    "article",
    { class: "card attempt" },
    h("h3", {}, `Attempt ${a.attempt} `, answer(a.status_code, a.error)),
    h("p", { class: "muted" }, when(a.attempted_at), ` · ${a.duration_ms} ms`),
    h("h4", {}, "Response"),
    a.response_body ? codeBlock("Response body", pretty(a.response_body), true) : h("p", { class: "muted" }, a.status_code === null ? "No response." : "Empty body."),
    h("h4", {}, "Request"),
    h("p", {}, h("code", {}, `POST ${d.url ?? ""}`)),
    headers
      ? h(
          "details",
          { class: "code", open: a.attempt === d.attempts.length },
          h("summary", {}, "Headers (signatures computed with the webhook's current secrets)"),
          h("table", { class: "headers" }, h("tbody", {}, Object.entries(headers).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, h("code", {}, v)))))),
        )
      : h("p", { class: "muted" }, "The webhook was deleted: its headers cannot be shown."),
  );
}
