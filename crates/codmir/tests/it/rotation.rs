//! Secret rotation: during the grace period both secrets verify, in both signature schemes;
//! after it, only the new one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT, contract_verifies, eventually, spawn_app, standard_verifies};
use crate::receiver::{Hit, Receiver};

/// Runs `tests/js/verify.js` (the official `standardwebhooks` library, or the contract's
/// `verifySignature`) over `hits` with `secret`; one verdict per hit. Installs the library
/// from `package-lock.json` on first use.
fn js_verify(scheme: &str, secret: &str, hits: &[Hit]) -> Vec<String> {
    use std::io::Write;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/standardwebhooks").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node.js and npm are needed for the receiver checks)");
        assert!(status.success(), "npm ci in {}", dir.display());
    }
    let deliveries: Vec<Value> = hits
        .iter()
        .map(|h| {
            let headers: serde_json::Map<String, Value> = h
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or(""))))
                .collect();
            json!({"headers": headers, "body_base64": STANDARD.encode(&h.body)})
        })
        .collect();
    let input = json!({"scheme": scheme, "secret": secret, "deliveries": deliveries});
    let mut child = std::process::Command::new("node")
        .arg("verify.js")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A verifier: `"ok"` or `"fail…"` for each hit, in a scheme (`standard` or `contract`).
type Verify = fn(&str, &str, &[Hit]) -> Vec<String>;

/// The same checks in Rust (`helpers`): what `cargo test` runs with nothing but Rust.
fn rust_verify(scheme: &str, secret: &str, hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| {
            let ok = match scheme {
                "standard" => standard_verifies(h, secret),
                _ => contract_verifies(h, secret),
            };
            if ok { "ok" } else { "fail" }.to_owned()
        })
        .collect()
}

#[tokio::test]
async fn during_a_rotation_either_secret_verifies_and_after_it_only_the_new_one() {
    rotation_verified_by(rust_verify).await;
}

#[tokio::test]
#[ignore = "needs Node.js and npm (the official standardwebhooks library); .ci/run installs them and runs it"]
async fn the_official_library_verifies_a_rotation_as_we_do() {
    rotation_verified_by(js_verify).await;
}

/// A server and a receiver with a webhook of `secret` for `project.created`: the webhook
/// as registered, its id and its `signing_secret`.
async fn registered(secret: &str) -> (TestApp, Receiver, Value, String, String) {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let webhook = app
        .register(json!({"url": rx.url, "events": ["project.created"], "secret": secret}))
        .await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let signing = webhook["signing_secret"].as_str().unwrap().to_owned();
    (app, rx, webhook, id, signing)
}

async fn rotation_verified_by(js_verify: Verify) {
    let (app, rx, _, wid, old_signing) = registered("the-old-secret-0123").await;
    let r = app
        .post(
            &format!("/v1/webhooks/{wid}/rotate-secret"),
            json!({"secret": "the-new-secret-0123", "grace_period_seconds": 2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["secret"], "the-new-secret-0123");
    let new_signing = r.body["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_signing, old_signing);
    let until = r.body["previous_secret_expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = app.get(&format!("/v1/webhooks/{wid}")).await;
    assert!(
        !read.text.contains("the-new-secret"),
        "shown once: {}",
        read.text
    );
    assert_eq!(read.body["previous_secret_expires_at"], until.as_str());

    app.project("during").await;
    eventually(WAIT, "delivered during the grace period", || async {
        rx.count() == 1
    })
    .await;
    let during = rx.hits();
    assert_eq!(
        during[0].header("webhook-signature").split(' ').count(),
        2,
        "two signatures: {}",
        during[0].header("webhook-signature")
    );
    assert_eq!(js_verify("standard", &old_signing, &during), ["ok"]);
    assert_eq!(js_verify("standard", &new_signing, &during), ["ok"]);
    assert_eq!(
        js_verify("contract", "the-old-secret-0123", &during),
        ["ok"]
    );
    assert!(js_verify("contract", "the-new-secret-0123", &during)[0].starts_with("fail"));

    // After the grace period: only the new secret, in both schemes.
    let until = codmir_core::time::Timestamp::parse_rfc3339(&until, "until").unwrap();
    eventually(WAIT, "the grace period over", || async {
        codmir_core::time::Timestamp::now() > until
    })
    .await;
    app.project("after").await;
    eventually(WAIT, "delivered after it", || async { rx.count() == 2 }).await;
    let mut hits = rx.hits();
    hits.sort_by_key(|h| h.at);
    let after = vec![hits[1].clone()];
    assert_eq!(after[0].header("webhook-signature").split(' ').count(), 1);
    assert_eq!(js_verify("standard", &new_signing, &after), ["ok"]);
    assert!(js_verify("standard", &old_signing, &after)[0].starts_with("fail"));
    assert_eq!(js_verify("contract", "the-new-secret-0123", &after), ["ok"]);
    assert!(js_verify("contract", "the-old-secret-0123", &after)[0].starts_with("fail"));
    assert_eq!(
        app.get(&format!("/v1/webhooks/{wid}")).await.body["previous_secret_expires_at"],
        Value::Null
    );

    // A zero grace period ends the old key at once; a generated secret is whsec_.
    let r = app
        .post(
            &format!("/v1/webhooks/{wid}/rotate-secret"),
            json!({"grace_period_seconds": 0}),
        )
        .await;
    assert!(r.body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(r.body["previous_secret_expires_at"], Value::Null);
    let bad = app
        .post(
            &format!("/v1/webhooks/{wid}/rotate-secret"),
            json!({"grace_period_seconds": 604_801}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["error"]["field"], "grace_period_seconds");
}

#[tokio::test]
async fn a_second_rotation_within_a_grace_period_never_ends_the_first_secret_early() {
    second_rotation_verified_by(rust_verify).await;
}

#[tokio::test]
#[ignore = "needs Node.js and npm (the official standardwebhooks library); .ci/run installs them and runs it"]
async fn the_official_library_verifies_a_second_rotation_as_we_do() {
    second_rotation_verified_by(js_verify).await;
}

/// Two rotations within one grace period (a double click): the receiver still holding the
/// first secret verifies both headers until the first rotation's announced expiry. A second
/// rotation with a grace period of its own is refused (409, saying until when); one with a
/// zero grace replaces the current secret at once and leaves the first secret's promise alone.
async fn second_rotation_verified_by(verify: Verify) {
    let (app, rx, first, wid, first_signing) = registered("the-first-secret-01").await;
    assert_eq!(first["signing"]["x_codmir_signature"], "current");
    let rotate = |body: Value| {
        let path = format!("/v1/webhooks/{wid}/rotate-secret");
        let app = &app;
        async move { app.post(&path, body).await }
    };
    let r = rotate(json!({"secret": "the-second-secret-1", "grace_period_seconds": 3})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let until = r.body["previous_secret_expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        r.body["signing"]["webhook_signature"],
        json!(["current", "previous"])
    );
    assert_eq!(r.body["signing"]["x_codmir_signature"], "previous");
    assert_eq!(
        r.body["signing"]["x_codmir_signature_moves_at"],
        until.as_str()
    );

    // The double click: refused, saying until when, and nothing changed.
    let again = rotate(json!({"grace_period_seconds": 3})).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.body["error"]["code"], "rotation_in_grace_period");
    assert!(again.text.contains(&until), "{}", again.text);
    // A zero grace replaces the second secret at once; the first keeps its announced end.
    let r = rotate(json!({"secret": "the-third-secret-01", "grace_period_seconds": 0})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["previous_secret_expires_at"], until.as_str());
    let third_signing = r.body["signing_secret"].as_str().unwrap().to_owned();
    let read = app.get(&format!("/v1/webhooks/{wid}")).await;
    assert_eq!(read.body["previous_secret_expires_at"], until.as_str());
    assert_eq!(read.body["signing"]["x_codmir_signature"], "previous");

    app.project("during").await;
    eventually(WAIT, "delivered during the grace period", || async {
        rx.count() == 1
    })
    .await;
    let during = rx.hits();
    assert_eq!(verify("standard", &first_signing, &during), ["ok"]);
    assert_eq!(verify("contract", "the-first-secret-01", &during), ["ok"]);
    assert_eq!(verify("standard", &third_signing, &during), ["ok"]);
    assert!(verify("contract", "the-second-secret-1", &during)[0].starts_with("fail"));

    // After the first rotation's announced end: the third secret alone, on both headers.
    let until = codmir_core::time::Timestamp::parse_rfc3339(&until, "until").unwrap();
    eventually(WAIT, "the grace period over", || async {
        codmir_core::time::Timestamp::now() > until
    })
    .await;
    app.project("after").await;
    eventually(WAIT, "delivered after it", || async { rx.count() == 2 }).await;
    let mut hits = rx.hits();
    hits.sort_by_key(|h| h.at);
    let after = vec![hits[1].clone()];
    assert_eq!(verify("standard", &third_signing, &after), ["ok"]);
    assert_eq!(verify("contract", "the-third-secret-01", &after), ["ok"]);
    assert!(verify("standard", &first_signing, &after)[0].starts_with("fail"));
    assert!(verify("contract", "the-first-secret-01", &after)[0].starts_with("fail"));
    let read = app.get(&format!("/v1/webhooks/{wid}")).await;
    assert_eq!(read.body["signing"]["x_codmir_signature"], "current");
    assert_eq!(
        read.body["signing"]["x_codmir_signature_moves_at"],
        Value::Null
    );
    // And with no grace period running, a rotation with one is accepted again.
    let r = rotate(json!({"grace_period_seconds": 60})).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
