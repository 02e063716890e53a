// The dashboard end to end, in headless Chromium against a real `codmir serve` (started by the
// Rust test, which passes BASE and KEY) and a real receiver started here. Every page is
// checked with axe-core and saved as a screenshot in SHOTS. Exits non-zero on the first
// failed check, saying which.

import http from "node:http";
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Runs the dashboard's verification snippet, as a user pastes it into a CommonJS file,
 * followed by checks of its verifySignature: true for the right signature, false (not an
 * exception) for a wrong, a truncated and a non-ASCII one. */
function runsAsPrinted(snippet) {
  const dir = mkdtempSync(join(tmpdir(), "codmir-snippet-"));
  const file = join(dir, "verify.cjs");
  writeFileSync(file, `${snippet}
const body = Buffer.from('{"id":"evt_1","type":"ticket.created"}');
const right = 'sha256=' + require('node:crypto').createHmac('sha256', secret).update(body).digest('hex');
const results = [
  verifySignature(body, right, secret) === true,
  verifySignature(body, 'sha256=' + '0'.repeat(64), secret) === false,
  verifySignature(body, right.slice(0, -4), secret) === false,
  verifySignature(body, right.slice(0, -1) + 'é', secret) === false,
  verifySignature(body, '', secret) === false,
];
if (!results.every(Boolean)) { console.error(results); process.exit(1); }
`);
  try {
    execFileSync(process.execPath, [file], { stdio: "pipe" });
    return true;
  } catch (e) {
    console.error(String(e.stderr ?? e));
    return false;
  }
}

const { BASE, KEY, SHOTS = "shots", CHROMIUM = "/usr/bin/chromium" } = process.env;
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
mkdirSync(SHOTS, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

// The receiver: answers 500 with a body while `failing`, 200 otherwise.
let failing = true;
const received = [];
const receiver = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    received.push({ headers: req.headers, body });
    if (failing) {
      res.writeHead(500, { "content-type": "application/json" });
      res.end('{"error":"the receiver is down for maintenance"}');
    } else {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("thanks");
    }
  });
});
await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
const receiverUrl = `http://127.0.0.1:${receiver.address().port}/hooks`;

async function apiCall(method, path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
const page = await context.newPage();
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
// A refused request (the wrong key's 401) is logged by the browser as an error; it is not a
// problem of the page. Policy violations ("Refused to …") and script errors are.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
});
// No network beyond the server: anything else is refused and remembered.
const elsewhere = [];
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith(BASE)) return route.continue();
  elsewhere.push(url);
  return route.abort();
});

/** axe-core on the page as it is: no serious or critical violation. */
async function accessible(name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) console.log(`  ${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  check(bad.length === 0, `${name}: no serious or critical accessibility violation`);
}

async function shot(name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

async function visit(name, hash, ready) {
  await page.goto(`${BASE}/${hash}`);
  await ready();
  await accessible(name);
  await shot(name);
}

try {
  const first = await page.goto(`${BASE}/`);
  const csp = first.headers()["content-security-policy"] ?? "";
  check(csp.includes("script-src 'self'") && !csp.includes("unsafe-inline"), "the page is served with a strict Content-Security-Policy");

  // A wrong key is refused with a clear message, and nothing is kept.
  await page.getByLabel("API key").fill("cmk_0000000000000000_wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("That API key was refused").waitFor();
  check(await page.evaluate(() => sessionStorage.length === 0), "a refused key is not kept");
  await accessible("sign-in");
  await shot("sign-in");

  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Webhooks" }).waitFor();
  check(await page.evaluate(() => sessionStorage.getItem("codmir.apiKey")) === KEY, "the key is in session storage");
  check(await page.evaluate(() => localStorage.length === 0 && document.cookie === ""), "and nowhere else");

  // Create a webhook with the contract's three fields.
  await page.getByRole("link", { name: "New webhook" }).click();
  await page.getByLabel("Endpoint URL").fill(receiverUrl);
  await page.locator('input[value="ticket.created"]').check();
  await page.locator('input[value="ticket.updated"]').check();
  await page.getByLabel("Secret (optional)").fill("your-webhook-secret");
  await accessible("create-webhook");
  await shot("create-webhook");
  await page.getByRole("button", { name: "Create webhook" }).click();
  await page.getByRole("heading", { name: "Webhook created" }).waitFor();
  check(await page.locator(".secret-value").innerText() === "your-webhook-secret", "the secret is shown once");
  await page.getByRole("button", { name: "Copy secret" }).click();
  check(await page.evaluate(() => navigator.clipboard.readText()) === "your-webhook-secret", "the copy button copies the secret");
  const snippet = await page.locator("details.code pre").first().innerText();
  check(snippet.includes('"your-webhook-secret"'), "the verification snippet has the secret filled in");
  check(runsAsPrinted(snippet), "the verification snippet runs in Node as printed: a right signature passes; a wrong, truncated or non-ASCII one is refused without throwing");
  await accessible("webhook-created");
  await shot("webhook-created");
  await page.getByRole("link", { name: "Go to the webhook" }).click();
  await page.getByRole("heading", { name: "Deliveries", exact: true }).waitFor();
  const webhookUrl = page.url();

  // A failing delivery: the receiver answers 500 to both attempts.
  const project = await apiCall("POST", "/v1/projects", { name: "Main App" });
  await apiCall("POST", `/v1/projects/${project.id}/tickets`, { title: "Login fails on Safari" });
  const failedRow = page.locator("tbody tr", { has: page.locator(".badge.failed") });
  await failedRow.first().waitFor({ timeout: 15000 });
  check(true, "the failed delivery appears in the list without a reload");
  await page.locator("#f-status").selectOption("failed");
  await page.locator("tbody tr", { has: page.locator(".badge.failed") }).first().waitFor();
  await accessible("webhook");
  await shot("webhook");

  await failedRow.first().locator("a").first().click();
  await page.getByRole("heading", { name: /Attempts/ }).waitFor();
  check((await page.locator(".attempt h3").first().innerText()).includes("HTTP 500"), "the delivery page shows the 500");
  check((await page.locator(".attempt").first().innerText()).includes("the receiver is down for maintenance"), "and the response body");
  const headers = await page.locator(".attempt table.headers").first().innerText();
  check(headers.includes("x-codmir-signature") && headers.includes("sha256="), "the request's signature is visible");
  await accessible("delivery");
  await shot("delivery");
  const deliveryUrl = page.url();

  // Heal the receiver and redeliver: success appears without a reload.
  failing = false;
  await page.getByRole("button", { name: "Redeliver" }).click();
  await page.getByText(/Redelivered as dlv_\w+: succeeded/).waitFor({ timeout: 15000 });
  check(true, "the redelivery succeeds, shown without a reload");

  // Ping, rotate, replay, on the webhook's page.
  await page.goto(webhookUrl);
  await page.getByRole("button", { name: "Send ping" }).click();
  await page.getByText(/Ping accepted: HTTP 200/).waitFor();
  check(true, "ping shows its outcome");
  await page.getByRole("button", { name: "Rotate secret" }).click();
  await page.getByRole("heading", { name: "The new secret" }).waitFor();
  const rotated = await page.locator(".secret-value").innerText();
  check(rotated.startsWith("whsec_") && rotated !== "your-webhook-secret", "rotation shows the new secret once");
  await page.getByText(/X-Codmir-Signature stays on the previous secret until/).waitFor();
  check(true, "rotation says which secret signs which header until when");
  const before = received.length;
  await page.getByLabel("Which events").selectOption("any");
  await page.getByRole("button", { name: "Replay", exact: true }).click();
  await page.getByText(/Queued [1-9]\d* deliveries/).waitFor();
  const until = Date.now() + 10000;
  while (received.length === before && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  check(received.length > before, "the replay reached the receiver");

  await visit("webhooks", "#/webhooks", () => page.locator("svg.bars").first().waitFor());
  await visit("events", "#/events", () => page.locator("tbody tr a").first().waitFor());
  await page.locator("tbody tr a").first().click();
  await page.getByRole("heading", { name: "Where it went" }).waitFor();
  await accessible("event");
  await shot("event");
  await visit("delivery-after", deliveryUrl.slice(deliveryUrl.indexOf("#")), () => page.getByRole("heading", { name: /Attempts/ }).waitFor());

  // Narrow and dark.
  await page.setViewportSize({ width: 360, height: 780 });
  await page.goto(webhookUrl);
  await page.getByRole("heading", { name: "Deliveries", exact: true }).waitFor();
  check(await page.evaluate(() => document.documentElement.scrollWidth <= 360), "readable at 360 px: nothing wider than the screen");
  await shot("webhook-360px");
  await page.emulateMedia({ colorScheme: "dark" });
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(deliveryUrl);
  await page.getByRole("heading", { name: /Attempts/ }).waitFor();
  await accessible("delivery-dark");
  await shot("delivery-dark");

  // Keyboard: on a fresh load, the skip link is the first stop.
  await page.reload();
  await page.getByRole("heading", { name: /Attempts/ }).waitFor();
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement?.classList.contains("skip")), "the first Tab reaches the skip link");

  // Sign out: the key is gone.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API key").waitFor();
  check(await page.evaluate(() => sessionStorage.getItem("codmir.apiKey")) === null, "signing out forgets the key");

  check(elsewhere.length === 0, `no request left the server (${elsewhere.join(", ")})`);
  check(problems.length === 0, `no script error or policy violation (${problems.join("; ")})`);
} catch (e) {
  await page.screenshot({ path: `${SHOTS}/failure.png`, fullPage: true }).catch(() => {});
  console.error(e.message);
  console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
  receiver.close();
}
