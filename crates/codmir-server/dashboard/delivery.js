// One delivery: every attempt as the request that was sent beside the answer that came back
// (headers and bytes), Redeliver (with the new delivery's outcome shown live), and the event.
// While attempts may still come it updates in place: open sections, focus and scroll stay.

import { answer, badge, button, codeBlock, fill, h, notice, pretty, reroute, urlText, when } from "./lib.js";
import { confirmAction } from "./forms.js";

export async function deliveryPage(main, life, id) {
  const d = await life.api("GET", `/v1/deliveries/${id}`);
  const status = notice();
  const redelivered = h("div", { "aria-live": "polite" });
  const figures = h("dl", { class: "figures" });
  const attempts = h("div", { class: "attempts" });
  const count = h("span");
  const drawn = new Map(); // attempt number -> its card, drawn once (an attempt never changes)
  const update = (d) => {
    fill(
      figures,
      h("dt", {}, "Status"), h("dd", { id: "delivery-status" }, badge(d.status), d.status === "retrying" ? h("span", { class: "muted" }, " another attempt is planned") : null),
      h("dt", {}, "Event"), h("dd", {}, h("a", { href: `#/events/${d.event_id}` }, d.event_id), " (", d.event_type, ")"),
      h("dt", {}, "Webhook's URL now"), h("dd", {}, d.url ? urlText(d.url, "code") : "the webhook was deleted"),
      h("dt", {}, "Created"), h("dd", {}, when(d.created_at)),
      d.next_attempt_at ? [h("dt", {}, "Next attempt"), h("dd", {}, when(d.next_attempt_at))] : null,
      d.cancel_reason ? [h("dt", {}, "Cancelled because"), h("dd", {}, d.cancel_reason)] : null,
      d.chain ? [h("dt", {}, "In order"), h("dd", {}, `event ${d.chain.sequence} of ${d.chain.resource_id}`)] : null,
      d.waiting_behind ? [h("dt", {}, "Waiting behind"), h("dd", { class: "waiting" },
        h("a", { href: `#/deliveries/${d.waiting_behind.id}` }, d.waiting_behind.id), ` for ${d.chain.resource_id}: `,
        badge(d.waiting_behind.status), ` after ${d.waiting_behind.attempt_count} attempt${d.waiting_behind.attempt_count === 1 ? "" : "s"}`,
        d.waiting_behind.next_attempt_at ? [", next at ", when(d.waiting_behind.next_attempt_at)] : "",
        " ", skipButton(life, d.waiting_behind.id, "Skip it"))] : null,
      d.redelivery_of ? [h("dt", {}, "Redelivery of"), h("dd", {}, h("a", { href: `#/deliveries/${d.redelivery_of}` }, d.redelivery_of))] : null,
    );
    fill(count, String(d.attempts.length));
    // Newest first; only new attempts are drawn, so open details stay open.
    for (const a of d.attempts) {
      if (drawn.has(a.attempt)) continue;
      const card = attempt(a, d, a.attempt === d.attempts.length);
      drawn.set(a.attempt, card);
      attempts.prepend(card);
    }
    if (!d.attempts.length && !attempts.children.length) attempts.append(h("p", { class: "muted", "data-empty": "" }, "No attempt yet."));
    if (d.attempts.length) attempts.querySelector("[data-empty]")?.remove();
  };
  update(d);
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/webhooks" }, "Webhooks"), " / ", h("a", { href: `#/webhooks/${d.webhook_id}` }, d.webhook_id), " / ", d.id),
    h("h1", {}, "Delivery ", h("code", {}, d.id)),
    figures,
    h("div", { class: "actions" }, button("Redeliver", async () => {
      const again = await life.api("POST", `/v1/deliveries/${id}/redeliver`, {});
      watch(life, again.id, redelivered);
    }, status), d.chain && (d.status === "pending" || d.status === "retrying") ? skipButton(life, id, "Skip this delivery") : null),
    status,
    redelivered,
    h("h2", {}, "Attempts (", count, ")"),
    attempts,
    d.request_body !== null
      ? h("section", { class: "card" }, h("h2", {}, "Request body"),
          codeBlock("Pretty-printed", pretty(d.request_body), true),
          codeBlock("Exact bytes sent (every attempt sends these)", d.request_body, false))
      : h("p", { class: "muted" }, "The event is past retention: its body is gone."),
  );
  // Live while attempts may still come.
  let last = JSON.stringify([d.status, d.attempts.length, d.next_attempt_at]);
  if (d.status === "pending" || d.status === "retrying") {
    life.every(2000, async () => {
      const now = await life.api("GET", `/v1/deliveries/${id}`);
      const key = JSON.stringify([now.status, now.attempts.length, now.next_attempt_at]);
      if (key !== last) {
        last = key;
        update(now);
      }
    });
  }
}

/** Ends a pending delivery as cancelled so that the next of its chain goes, after asking. */
function skipButton(life, id, label) {
  const status = notice();
  return h("span", {}, button(label, async () => {
    const ok = await confirmAction({
      title: `Skip ${id}?`,
      body: h("p", {}, "It ends cancelled and is not sent again (unless redelivered); the next delivery of its resource goes now, so the receiver gets that one without this one."),
      confirm: "Skip",
      danger: true,
    });
    if (!ok) return;
    await life.api("POST", `/v1/deliveries/${id}/skip`, {});
    reroute();
  }, status, { class: "small danger" }), status);
}

/** Shows a redelivery's status, polled until it settles. */
function watch(life, id, slot) {
  const show = (d) =>
    fill(slot, h("p", { class: "card" }, "Redelivered as ", h("a", { href: `#/deliveries/${d.id}` }, d.id), ": ", badge(d.status), " ", answer(d.last_status_code, d.last_error)));
  show({ id, status: "pending", last_status_code: null, last_error: null });
  let done = false;
  life.every(1000, async () => {
    if (done) return;
    const d = await life.api("GET", `/v1/deliveries/${id}`);
    show(d);
    done = d.status !== "pending" && d.status !== "retrying";
  });
}

function headerTable(headers, caption) {
  return h("table", { class: "headers" }, h("caption", {}, caption),
    h("tbody", {}, Object.entries(headers).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, h("code", {}, v))))));
}

function attempt(a, d, open) {
  const sent = a.request_headers;
  const request = h(
    "div",
    { class: "half" },
    h("h4", {}, "Request"),
    h("p", {}, h("code", { class: "url", title: `POST to the webhook's URL now: ${d.url ?? "deleted"}` }, `POST ${d.url ?? ""}`)),
    sent
      ? h("details", { class: "code", open },
          h("summary", {}, a.request_headers_as_sent ? "Headers, as sent" : "Headers (signed again with the webhook's current secrets: this attempt predates kept headers)"),
          headerTable(sent, "Request headers"))
      : h("p", { class: "muted" }, "The webhook was deleted: its headers cannot be shown."),
  );
  const received = a.response_headers;
  const response = h(
    "div",
    { class: "half" },
    h("h4", {}, "Response"),
    h("p", {}, answer(a.status_code, a.error), h("span", { class: "muted" }, ` in ${a.duration_ms} ms`)),
    received ? h("details", { class: "code", open }, h("summary", {}, "Headers, as received"), headerTable(received, "Response headers")) : null,
    a.response_body ? codeBlock("Body (first 4 KiB)", pretty(a.response_body), open) : h("p", { class: "muted" }, a.status_code === null ? "No response." : "Empty body."),
  );
  return h(
    "article",
    { class: "card attempt", "data-attempt": a.attempt },
    h("h3", {}, `Attempt ${a.attempt} `, answer(a.status_code, a.error), " ", h("span", { class: "muted small" }, when(a.attempted_at))),
    h("div", { class: "pair" }, request, response),
  );
}
