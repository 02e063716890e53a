//! Hostile input answered consistently: every error in the JSON shape, a body without a JSON
//! Content-Type refused, control characters refused in every free text field.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    // Nesting past serde_json's 128 levels (inside `headers`, the one free-form field) is a
    // 400, not a stack overflow.
    let deep = format!(
        r#"{{"url":"https://x.example.com/","events":["*"],"headers":{{"a":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (s, b) = raw(
        &app,
        "POST",
        "/v1/webhooks",
        Some("application/json"),
        &deep,
    )
    .await;
    assert_eq!(s, 400, "{b}");
}

/// Writes `request` on a new connection and reads the answer to its end; returns the status
/// and the body parsed as JSON.
async fn raw_bytes(app: &crate::helpers::TestApp, request: &[u8]) -> (u16, Value) {
    let addr = app.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = conn.read_to_end(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the server answers and closes")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn errors_made_before_the_router_have_the_json_shape_too() {
    let app = spawn_app().await;
    let code = |b: &Value| b["error"]["code"].as_str().unwrap().to_owned();
    // A URI past ours (8 KiB), below hyper's: refused by our layer.
    let long = format!("/v1/events?type={}", "a".repeat(9000));
    let (s, b) = raw(&app, "GET", &long, None, "").await;
    assert_eq!((s, code(&b).as_str()), (414, "uri_too_long"), "{b}");
    // What hyper answers by itself: a head past its 64 KiB buffer, too many headers, a
    // request line it cannot parse, a header without a colon.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    let (s, b) = raw_bytes(&app, huge.as_bytes()).await;
    assert_eq!((s, code(&b).as_str()), (431, "headers_too_large"), "{b}");
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let (s, b) = raw_bytes(&app, many.as_bytes()).await;
    assert_eq!((s, code(&b).as_str()), (431, "headers_too_large"), "{b}");
    let (s, b) = raw_bytes(&app, b"GET /he\x01lthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!((s, code(&b).as_str()), (400, "bad_request"), "{b}");
    let (s, b) = raw_bytes(&app, b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n").await;
    assert_eq!((s, code(&b).as_str()), (400, "bad_request"), "{b}");
    // The connection was closed after each; the server still serves.
    let ok = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
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
