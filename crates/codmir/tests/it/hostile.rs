//! Hostile input answered consistently: every error in the JSON shape, a body without a JSON
//! Content-Type refused, control characters refused in every free text field.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// Sends a raw request; returns the status and the body parsed as the JSON error shape.
async fn raw(
    app: &crate::helpers::TestApp,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method.parse().unwrap(), format!("{}{path}", app.base))
        .bearer_auth(&app.key)
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
    assert!(
        body["error"]["message"].is_string(),
        "{method} {path}: {body}"
    );
    (status, body)
}

#[tokio::test]
async fn every_error_has_the_json_shape() {
    let app = spawn_app().await;
    let (s, _) = raw(&app, "GET", "/v1/webhooks/%ff%fe", None, "").await;
    assert!((400..500).contains(&s), "bad percent-encoding: {s}");
    let (s, b) = raw(&app, "GET", "/v1/nothing-here", None, "").await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = raw(&app, "PUT", "/v1/projects", Some("application/json"), "{}").await;
    assert_eq!(s, 405);
    let (s, b) = raw(&app, "POST", "/v1/projects", None, r#"{"name":"P"}"#).await;
    assert_eq!(s, 415, "no Content-Type is not JSON: {b}");
    let (s, _) = raw(
        &app,
        "POST",
        "/v1/projects",
        Some("text/plain"),
        r#"{"name":"P"}"#,
    )
    .await;
    assert_eq!(s, 415);
    let (s, _) = raw(&app, "POST", "/v1/projects", Some("application/json"), "{").await;
    assert_eq!(s, 400);
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(2 << 20));
    let (s, _) = raw(&app, "POST", "/v1/projects", Some("application/json"), &big).await;
    assert_eq!(s, 413);
    let (s, _) = raw(&app, "GET", "/v1/events?limit=abc", None, "").await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn control_characters_are_refused_in_every_text_field() {
    let app = spawn_app().await;
    for bad in ["nul\u{0}", "esc\u{1b}[31m", "bell\u{7}"] {
        let r = app
            .post(
                "/v1/webhooks",
                json!({"url": "https://example.com/", "events": ["*"], "description": bad}),
            )
            .await;
        assert_eq!(r.status, 422, "{bad:?}: {}", r.text);
        assert_eq!(r.body["error"]["field"], "description");
        let r = app.post("/v1/projects", json!({"name": bad})).await;
        assert_eq!(r.status, 422, "{bad:?}");
    }
    let ok = app
        .post(
            "/v1/webhooks",
            json!({"url": "https://example.com/", "events": ["*"], "description": "two\nlines\tok"}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}
