// The life of a page: everything a page starts (its requests, its pollers) ends when the user
// leaves it, and nothing it loaded late reaches the page that replaced it. Also the one place
// that knows whether the server answers, and when the page's data was last refreshed.

import { ApiError, call, fill, h } from "./lib.js";

/** Thrown into a page's code when it awaited a request and the page was left meanwhile: the
 * router ignores it, so no page ever draws over the one the user moved to. */
export class Left extends Error {
  constructor() {
    super("the page was left");
    this.name = "Left";
  }
}

/** Every poller of every page, counted where a test (or a curious user) can read it. */
const counted = { pollers: 0 };
window.codmir = counted;

/** One page on screen. Its `api` calls are cancelled when it ends; its pollers stop with it
 * and never run after; a poll does not start while the previous one of the same poller runs,
 * nor while the tab is hidden. */
export class Life {
  constructor() {
    this.controller = new AbortController();
    this.timers = new Set();
    this.ended = false;
  }

  get alive() {
    return !this.ended;
  }

  /** The public API, for this page: cancelled when it ends, and `Left` after. */
  async api(method, path, body) {
    return (await this.call(method, path, body)).data;
  }

  /** The exact text of an answer (an event's bytes), for this page. */
  async text(path) {
    return (await this.call("GET", path)).text;
  }

  async call(method, path, body) {
    if (this.ended) throw new Left();
    try {
      const answer = await call(method, path, body, this.controller.signal);
      if (this.ended) throw new Left();
      return answer;
    } catch (e) {
      if (this.ended) throw new Left();
      throw e;
    }
  }

  /** Runs `fn` every `ms` while the page lives. A failed poll is shown by the connection
   * notice (when the server is unreachable) and retried at the next tick. */
  every(ms, fn) {
    if (this.ended) return;
    let running = false;
    const id = setInterval(async () => {
      if (this.ended || running || document.hidden) return;
      running = true;
      try {
        await fn();
      } catch (e) {
        if (!(e instanceof Left) && !(e instanceof ApiError)) console.error(e);
      } finally {
        running = false;
      }
    }, ms);
    this.timers.add(id);
    counted.pollers += 1;
  }

  /** A counter for "only the newest answer counts": `const n = seq.next()` before a request,
   * `if (!seq.is(n)) return` after it, so a slow old answer never overwrites a newer one. */
  sequence() {
    let last = 0;
    return { next: () => ++last, is: (n) => n === last && !this.ended };
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    this.controller.abort();
    for (const id of this.timers) clearInterval(id);
    counted.pollers -= this.timers.size;
    this.timers.clear();
  }
}

// ---- Whether the server answers, and when the data on screen was fetched. ----

const state = { reachable: true, refreshed: null, since: null };
let slot = null;

/** Called by every API call: `ok` when the server answered (any status but a gateway's), and
 * whether that answer carried page data. */
export function heard(ok, data) {
  const was = state.reachable;
  state.reachable = ok;
  if (!ok && was) state.since = new Date();
  if (ok && data) state.refreshed = new Date();
  render();
}

/** Where the notice lives (in the header, so every page has it), and a heartbeat that notices
 * an unreachable server even on a page that does not poll. */
export function watchConnection(el) {
  slot = el;
  render();
  setInterval(async () => {
    if (document.hidden) return;
    try {
      const res = await fetch("/healthz", { cache: "no-store" });
      heard(res.status < 502 || res.status > 504, false);
    } catch {
      heard(false, false);
    }
  }, 5000);
}

export function resetFreshness() {
  state.refreshed = null;
  render();
}

function render() {
  if (!slot) return;
  const at = (d) => d.toLocaleTimeString();
  if (!state.reachable) {
    slot.className = "conn down";
    fill(
      slot,
      h("strong", {}, "The server cannot be reached"),
      ` since ${at(state.since)}. `,
      state.refreshed ? `What you see was loaded at ${at(state.refreshed)}; ` : "",
      "it updates when the server answers again.",
    );
  } else {
    slot.className = "conn";
    fill(slot, state.refreshed ? h("span", { class: "muted" }, `Updated ${at(state.refreshed)}`) : "");
  }
}
