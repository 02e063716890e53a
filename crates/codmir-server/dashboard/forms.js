// Forms and actions that are safe to click: one request per click however fast the clicks,
// errors beside the field they are about, and a confirmation that says what will happen.

import { fill, h } from "./lib.js";
import { Left } from "./life.js";

/** A labelled field; `hint` below it; its error (see `showErrors`) goes between them. */
export function field(id, label, input, hint) {
  input.id = id;
  if (!input.getAttribute("name")) input.setAttribute("name", id);
  const described = [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" ");
  input.setAttribute("aria-describedby", described);
  return h(
    "div",
    { class: "field", "data-field": input.getAttribute("name") },
    h("label", { for: id }, label),
    input,
    h("p", { class: "field-error", id: `${id}-error`, role: "alert" }),
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
  );
}

/** Clears every error a form shows. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) fill(el);
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const top = form.querySelector(".form-error");
  if (top) fill(top);
}

/** Shows an error beside the field the API named (`headers`, `project_ids[0]`: the part
 * before any index or dot), or at the top of the form when it names none, and moves focus to
 * it. */
export function showError(form, e) {
  const name = e.field ? e.field.split(/[.[]/)[0] : null;
  const box = name ? form.querySelector(`[data-field="${CSS.escape(name)}"]`) : null;
  if (box) {
    const slot = box.querySelector(".field-error");
    fill(slot, e.message);
    const input = box.querySelector("input, select, textarea");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    return;
  }
  const top = form.querySelector(".form-error");
  fill(top, e.message);
  top.scrollIntoView({ block: "nearest" });
}

/** The line at the top of a form for errors that name no field. */
export function formError() {
  return h("p", { class: "form-error notice bad", role: "alert" });
}

/** Runs `submit` on the form's submission, once at a time: its buttons are disabled while it
 * runs (a double click sends one request), errors are shown beside their fields. */
export function onSubmit(form, submit) {
  let running = false;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (running) return;
    running = true;
    clearErrors(form);
    const buttons = [...form.querySelectorAll("button")];
    buttons.forEach((b) => (b.disabled = true));
    try {
      await submit();
    } catch (e) {
      if (!(e instanceof Left)) showError(form, e);
    } finally {
      running = false;
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

/** Asks before an action that cannot be undone or changes what receivers get. Resolves true
 * when confirmed. `body` says what will happen. */
export function confirmAction({ title, body, confirm, danger = false }) {
  return new Promise((resolve) => {
    const ok = h("button", { type: "button", class: danger ? "danger" : "" }, confirm);
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title", "aria-describedby": "confirm-body" },
      h("h2", { id: "confirm-title" }, title),
      h("div", { id: "confirm-body" }, body),
      h("div", { class: "actions" }, ok, cancel),
    );
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dialog.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
