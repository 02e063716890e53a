// The dashboard: sign-in, navigation and the router. Every page calls the public /v1 API with
// the key kept in this tab's session storage, so it can do nothing the API cannot.

import { api, fill, h, session } from "./lib.js";
import { Left, Life, resetFreshness, watchConnection } from "./life.js";
import { failingPage, webhooksPage, newWebhookPage } from "./webhooks.js";
import { webhookPage } from "./webhook.js";
import { deliveryPage } from "./delivery.js";
import { eventsPage, eventPage } from "./events.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");

const routes = [
  [/^#\/webhooks\/new$/, newWebhookPage],
  [/^#\/webhooks\/(wh_[0-9a-z]+)(?:\/(deliveries|settings|secrets|danger))?$/, webhookPage],
  [/^#\/failing$/, failingPage],
  [/^#\/deliveries\/(dlv_[0-9a-z]+)$/, deliveryPage],
  [/^#\/events\/(evt_[0-9a-z]+)$/, eventPage],
  [/^#\/events$/, eventsPage],
  [/^#\/webhooks$/, webhooksPage],
];

let life = new Life();
let me = null;
let navigated = false;

async function route() {
  // The page being left ends here: its requests are cancelled, its pollers stopped, and
  // whatever it still awaits is thrown away (Left) instead of drawn over the new page.
  life.end();
  life = new Life();
  const mine = life;
  resetFreshness();
  const hash = location.hash || "#/webhooks";
  if (!session.key() || hash.startsWith("#/signin")) {
    me = null;
    renderNav();
    return signInPage(hash.includes("expired"));
  }
  if (!me) {
    try {
      me = await api("GET", "/v1/me");
    } catch (e) {
      fill(main, h("h1", {}, "The server did not answer"), h("p", { class: "notice bad", role: "alert" }, e.message), h("p", {}, h("button", { type: "button", onclick: route }, "Try again")));
      return;
    }
    if (!mine.alive) return;
  }
  renderNav(hash);
  for (const [pattern, page] of routes) {
    const m = hash.match(pattern);
    if (m) {
      fill(main, h("p", { class: "muted" }, "Loading…"));
      try {
        await page(main, mine, ...m.slice(1));
      } catch (e) {
        if (e instanceof Left || !mine.alive) return;
        fill(main, h("h1", {}, "This page could not be loaded"), h("p", { class: "notice bad", role: "alert" }, e.message), h("p", {}, h("button", { type: "button", onclick: route }, "Try again")));
      }
      if (!mine.alive) return;
      // After a navigation, focus moves to the new content (for keyboard and screen-reader
      // users); on the first load it stays at the top, where the skip link is.
      if (navigated) main.focus({ preventScroll: true });
      navigated = true;
      return;
    }
  }
  fill(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/webhooks" }, "Back to webhooks")));
}

function renderNav(hash = "") {
  if (!me) return fill(nav);
  const link = (href, label) =>
    h("a", { href, "aria-current": hash.startsWith(href) ? "page" : undefined }, label);
  fill(
    nav,
    link("#/webhooks", "Webhooks"),
    link("#/failing", "Failing now"),
    link("#/events", "Events"),
    h("span", { class: "who" }, `${me.user.name} · ${me.workspace.name}`),
    h("button", { type: "button", class: "small", onclick: signOut }, "Sign out"),
  );
}

function signOut() {
  session.signOut();
  me = null;
  location.hash = "#/signin";
}

function signInPage(expired) {
  const error = h("p", { class: "notice", role: "alert" });
  const input = h("input", { id: "key", name: "key", type: "password", required: true, autocomplete: "off", spellcheck: "false", placeholder: "cmk_…" });
  const form = h(
    "form",
    { class: "card narrow", novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", {}, "Use an API key: the one ", h("code", {}, "codmir serve"), " printed on its first start, or one from ", h("code", {}, "codmir keys create"), ". It is kept in this tab only and forgotten when you sign out or close it."),
    h("label", { for: "key" }, "API key"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  if (expired) fill(error, "Your key was refused; sign in again.");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return fill(error, "Enter an API key.");
    session.signIn(key);
    try {
      me = await api("GET", "/v1/me");
      location.hash = "#/webhooks";
    } catch (e) {
      session.signOut();
      error.className = "notice bad";
      fill(error, e.status === 401 ? "That API key was refused: check it, or make one with codmir keys create." : e.message);
      input.focus();
    }
  });
  fill(main, form);
  input.focus();
}

watchConnection(document.getElementById("conn"));
window.addEventListener("hashchange", route);
route();
