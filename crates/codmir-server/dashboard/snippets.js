// Verification code for the contract's X-Codmir-Signature, with a webhook's secret filled in:
// Node.js (CommonJS, as `node file.js` runs it) and Python. Both compare bytes, so a header
// of any length or alphabet is refused, never a crash. The browser test runs each as printed.

import { codeBlock, h } from "./lib.js";

/** `previousUntil`: during a rotation's grace period, when X-Codmir-Signature moves from the
 * secret the receiver has to `secret`; until then the code also accepts the previous one. */
export function nodeSnippet(secret, previousUntil) {
  const previous = previousUntil
    ? `
// X-Codmir-Signature stays on your previous secret until ${previousUntil}: keep accepting it
// until then (set CODMIR_PREVIOUS_SECRET to it).
const previous = process.env.CODMIR_PREVIOUS_SECRET ?? '';
`
    : `
const previous = ''; // during a rotation's grace period: the secret being retired
`;
  return `const crypto = require('node:crypto');

const secret = ${JSON.stringify(secret)};
${previous}
// The contract's check. Pass the raw body as received (a Buffer: express.raw, not
// re-serialized JSON) and the X-Codmir-Signature header. Lengths are compared as bytes:
// timingSafeEqual throws on buffers of different lengths (a 500, not a refusal).
function verifySignature(payload, signature, secret) {
  const expected = Buffer.from(
    'sha256=' + crypto.createHmac('sha256', secret).update(payload).digest('hex')
  );
  const given = Buffer.from(signature);
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

function verified(payload, signature) {
  return [secret, previous].some((s) => s !== '' && verifySignature(payload, signature, s));
}

// e.g. if (!verified(req.body, req.get('X-Codmir-Signature') ?? '')) return res.sendStatus(400);
`;
}

export function pythonSnippet(secret, previousUntil) {
  const previous = previousUntil
    ? `# X-Codmir-Signature stays on your previous secret until ${previousUntil}: keep accepting
# it until then (set CODMIR_PREVIOUS_SECRET to it).
PREVIOUS = os.environ.get("CODMIR_PREVIOUS_SECRET", "")`
    : `PREVIOUS = ""  # during a rotation's grace period: the secret being retired`;
  return `import hashlib
import hmac
import os

SECRET = ${JSON.stringify(secret)}
${previous}


def verify_signature(payload: bytes, signature: str, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    # Bytes: compare_digest raises on a non-ASCII str (a 500, not a refusal).
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))


def verified(payload: bytes, signature: str) -> bool:
    return any(s and verify_signature(payload, signature, s) for s in (SECRET, PREVIOUS))


# e.g. Flask: if not verified(request.get_data(), request.headers.get("X-Codmir-Signature", "")): abort(400)
`;
}

/** Both snippets, as collapsible blocks. */
export function snippets(secret, previousUntil) {
  return h(
    "div",
    { class: "snippets" },
    codeBlock("Verify deliveries (Node.js)", nodeSnippet(secret, previousUntil), true),
    codeBlock("Verify deliveries (Python)", pythonSnippet(secret, previousUntil), false),
  );
}
