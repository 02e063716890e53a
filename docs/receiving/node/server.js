// A complete codmir webhook receiver for Node.js and Express. It runs as written:
//
//   npm install            (express and standardwebhooks, from package.json)
//   CODMIR_SECRET='your-webhook-secret' CODMIR_SIGNING_SECRET='whsec_…' PORT=3000 node server.js
//
// CODMIR_SECRET is the webhook's `secret` (what X-Codmir-Signature is keyed with, as text);
// CODMIR_SIGNING_SECRET is its `signing_secret` (the whsec_… form Standard Webhooks libraries
// decode). For a secret codmir generated the two are the same string. CommonJS, as `npm init`
// makes a project.
const crypto = require("node:crypto");
const express = require("express");
const { Webhook } = require("standardwebhooks");

const SECRET = process.env.CODMIR_SECRET;
const SIGNING_SECRET = process.env.CODMIR_SIGNING_SECRET;
const standard = SIGNING_SECRET ? new Webhook(SIGNING_SECRET) : null;

// The contract's verifySignature, safe for any header: crypto.timingSafeEqual throws when the
// two buffers differ in length, so a missing or short signature would otherwise be a 500 (and
// codmir would retry it for three days).
function verifySignature(payload, signature, secret) {
  const expected = Buffer.from(
    "sha256=" + crypto.createHmac("sha256", secret).update(payload).digest("hex")
  );
  const given = Buffer.from(signature);
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

// Standard Webhooks when its headers are there (it also refuses replays older than five
// minutes), the contract's X-Codmir-Signature otherwise.
function verified(req) {
  if (standard && req.get("webhook-signature")) {
    try {
      standard.verify(req.body, req.headers);
      return true;
    } catch {
      return false; // any error of the library: a missing, malformed or wrong signature
    }
  }
  return Boolean(SECRET) && verifySignature(req.body, req.get("x-codmir-signature") ?? "", SECRET);
}

// Event ids already handled. A retry after a lost answer delivers the same event again (same
// id, also in the webhook-id header). Keep them in your database in production: a unique key
// on the event id, inserted in the same transaction as the work.
const seen = new Set();

const app = express();

// express.raw keeps the exact bytes: express.json() would parse and the bytes that were signed
// would be gone. Without a JSON Content-Type, req.body is not a Buffer: refused below.
app.post("/webhooks/codmir", express.raw({ type: "application/json" }), (req, res) => {
  if (!Buffer.isBuffer(req.body) || !verified(req)) {
    return res.status(400).send("invalid signature");
  }
  let event;
  try {
    event = JSON.parse(req.body.toString("utf8"));
  } catch {
    return res.status(400).send("not JSON");
  }
  if (seen.has(event.id)) {
    console.log(`duplicate ${event.id}`);
    return res.sendStatus(200); // done already: say so, or codmir retries
  }
  seen.add(event.id);
  res.sendStatus(204); // answer at once; codmir waits at most 15 s, then retries
  setImmediate(() => handle(event));
});

function handle(event) {
  switch (event.type) {
    case "ticket.created":
      // event.data.ticket, event.data.project, event.data.user
      break;
    case "ticket.status_changed":
      // event.data.changes.status.from → .to. Deliveries can arrive out of order (retries run
      // in parallel with new events): compare event.data.ticket.updated_at with what you
      // stored before you overwrite.
      break;
    default:
    // A type added after this code was written: ignore it (answering 2xx, as above).
  }
  console.log(`processed ${event.id} ${event.type}`);
}

const port = Number(process.env.PORT ?? 3000);
app.listen(port, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${port}/webhooks/codmir`);
});
