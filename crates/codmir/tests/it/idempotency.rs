//! `Idempotency-Key`: a retried create returns the first answer and does the work once.

use serde_json::{Value, json};

use crate::helpers::{TestApp, new_key, spawn_app};

async fn post(app: &TestApp, key: &str, idem: &str, path: &str, body: Value) -> (u16, Value, bool) {
    let r = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), r.json().await.unwrap(), replayed)
}

#[tokio::test]
async fn a_repeated_create_returns_the_same_resource_and_makes_one_event() {
    let app = spawn_app().await;
    let k = app.key.clone();
    let (s1, first, replayed) =
        post(&app, &k, "create-p-1", "/v1/projects", json!({"name": "P"})).await;
    assert_eq!((s1, replayed), (201, false));
    let (s2, second, replayed) =
        post(&app, &k, "create-p-1", "/v1/projects", json!({"name": "P"})).await;
    assert_eq!((s2, replayed), (201, true), "{second}");
    assert_eq!(first, second, "the same resource, byte for byte");
    let projects = app.get("/v1/projects").await;
    assert_eq!(projects.body["data"].as_array().unwrap().len(), 1);
    let events = app.events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "project.created")
            .count(),
        1,
        "one event"
    );

    // The same key with another request is refused; another key is another request.
    let (s, body, _) = post(&app, &k, "create-p-1", "/v1/projects", json!({"name": "Q"})).await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request")
    );
    let (s, _, replayed) = post(&app, &k, "create-p-2", "/v1/projects", json!({"name": "P"})).await;
    assert_eq!((s, replayed), (201, false));
    // Keys are per workspace: another workspace's same key is its own.
    let other = new_key(&app.store, "other", "bob").await;
    let (s, _, replayed) = post(
        &app,
        &other,
        "create-p-1",
        "/v1/projects",
        json!({"name": "P"}),
    )
    .await;
    assert_eq!((s, replayed), (201, false));
    // A refused request's answer is kept too (it is not a 5xx).
    let (s, _, _) = post(&app, &k, "bad", "/v1/projects", json!({"name": ""})).await;
    assert_eq!(s, 422);
    let (s, _, replayed) = post(&app, &k, "bad", "/v1/projects", json!({"name": ""})).await;
    assert_eq!((s, replayed), (422, true));
    // A key that is not printable ASCII is refused before anything runs.
    let (s, body, _) = post(&app, &k, "", "/v1/projects", json!({"name": "Z"})).await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["field"], "Idempotency-Key");
    assert_eq!(
        app.get("/v1/projects").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
