// Verifies deliveries as receivers do: with the official Standard Webhooks library, or with
// the public contract's verifySignature, copied as the contract shows it.
// Input on stdin: {"scheme": "standard" | "contract", "secret": "...",
//                  "deliveries": [{"headers": {name: value}, "body_base64": "..."}]}
// Output: one line per delivery, "ok" or "fail: <why>".
const crypto = require("crypto");
const { Webhook } = require("standardwebhooks");

function verifySignature(payload, signature, secret) {
  const expected = crypto
    .createHmac("sha256", secret)
    .update(payload)
    .digest("hex");
  return crypto.timingSafeEqual(
    Buffer.from(signature),
    Buffer.from(`sha256=${expected}`)
  );
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { scheme, secret, deliveries } = JSON.parse(input);
  for (const d of deliveries) {
    const body = Buffer.from(d.body_base64, "base64").toString("utf8");
    try {
      if (scheme === "standard") {
        new Webhook(secret).verify(body, d.headers);
        console.log("ok");
      } else {
        const sig = d.headers["x-codmir-signature"] || "";
        // timingSafeEqual throws on a length mismatch: that is a failure too.
        console.log(verifySignature(body, sig, secret) ? "ok" : "fail: no match");
      }
    } catch (e) {
      console.log(`fail: ${e.message}`);
    }
  }
});
