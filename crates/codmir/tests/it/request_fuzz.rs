//! Property test over the API's request types: arbitrary JSON shaped like each route's body
//! (its own field names, with values of every JSON kind, hostile strings, huge numbers,
//! nesting) is never answered with a 5xx, and every refusal is in the error shape. The real
//! server in-process; each case a real HTTP request.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Any JSON value, leaves biased towards what the API parses (patterns, URLs, names).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::from),
        "[ -~]{0,40}".prop_map(Value::from),
        prop::sample::select(vec![
            "",
            " ",
            "*",
            "ticket.*",
            "ticket.created",
            "nope.*",
            "https://x.example.com/h",
            "http://127.0.0.1/",
            "http://[::ffff:10.0.0.1]/",
            "open",
            "urgent",
            "admin",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "2026-12-01T00:00:00Z",
            "\u{0}",
            "a\r\nb",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of `fields` (and now and then one the route does not know).
fn body(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![9 => prop::sample::select(fields), 1 => Just("unknown_field")];
    prop::collection::vec((key, value()), 0..=fields.len()).prop_map(|pairs| {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

async fn check(app: &TestApp, method: &str, path: &str, body: Value) -> Result<(), TestCaseError> {
    let r = app
        .request(method, path, Some(&app.key), Some(body.clone()))
        .await;
    prop_assert!(
        r.status < 500,
        "{method} {path} {body}: {} {}",
        r.status,
        r.text
    );
    if r.status >= 400 {
        prop_assert!(
            r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(),
            "{method} {path} {body}: {}",
            r.text
        );
    }
    Ok(())
}

#[test]
fn arbitrary_bodies_for_every_route_are_never_a_server_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(spawn_app());
    let (project, ticket, webhook) = rt.block_on(async {
        let p = app
            .request(
                "POST",
                "/v1/projects",
                Some(&app.key),
                Some(json!({"name": "P"})),
            )
            .await;
        let p = p.body["id"].as_str().unwrap().to_owned();
        let t = app
            .request(
                "POST",
                &format!("/v1/projects/{p}/tickets"),
                Some(&app.key),
                Some(json!({"title": "T"})),
            )
            .await;
        let t = t.body["id"].as_str().unwrap().to_owned();
        let w = json!({"url": "https://receiver.example.com/h", "events": ["*"]});
        let w = app
            .request("POST", "/v1/webhooks", Some(&app.key), Some(w))
            .await;
        (p, t, w.body["id"].as_str().unwrap().to_owned())
    });
    let routes: Vec<(&str, String, &'static [&'static str])> = vec![
        ("POST", "/v1/projects".into(), &["name"]),
        (
            "POST",
            format!("/v1/projects/{project}/members"),
            &["name", "email", "role"],
        ),
        (
            "POST",
            format!("/v1/projects/{project}/tickets"),
            &["title", "description", "status", "priority", "assignee_id"],
        ),
        (
            "PATCH",
            format!("/v1/tickets/{ticket}"),
            &["title", "description", "status", "priority", "assignee_id"],
        ),
        ("POST", format!("/v1/tickets/{ticket}/comments"), &["body"]),
        (
            "POST",
            "/v1/webhooks".into(),
            &[
                "url",
                "events",
                "secret",
                "description",
                "project_ids",
                "max_in_flight",
                "rate_limit_per_second",
                "headers",
            ],
        ),
        (
            "PATCH",
            format!("/v1/webhooks/{webhook}"),
            &[
                "url",
                "events",
                "description",
                "project_ids",
                "enabled",
                "max_in_flight",
                "rate_limit_per_second",
                "headers",
            ],
        ),
        (
            "POST",
            format!("/v1/webhooks/{webhook}/replay"),
            &["since", "until", "status", "include_missed"],
        ),
        (
            "POST",
            format!("/v1/webhooks/{webhook}/rotate-secret"),
            &["secret", "grace_period_seconds"],
        ),
    ];
    for (method, path, fields) in routes {
        let mut runner = TestRunner::new(Config {
            cases: 200,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&body(fields), |b| {
                rt.block_on(check(&app, method, &path, b))
            })
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    }
}
