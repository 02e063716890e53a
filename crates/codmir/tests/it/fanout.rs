//! The fan-out reads each workspace's webhooks from a cache (store/fanout.rs): every kind of
//! webhook write must reach the very next event, with no wait, on both backends.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, all_pages, eventually, spawn_app};
use crate::receiver::Receiver;

/// The deliveries `webhook` has: created in the transaction of each event, so counted at once.
async fn deliveries_of(app: &TestApp, webhook: &str) -> usize {
    all_pages(
        &app.base,
        &app.key,
        &format!("/v1/webhooks/{webhook}/deliveries"),
    )
    .await
    .len()
}

#[tokio::test]
async fn every_webhook_write_reaches_the_next_events_fan_out() {
    let app = spawn_app().await;
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let p = app.project("P").await;
    let created = app
        .post(
            "/v1/webhooks",
            json!({"url": first.url, "events": ["ticket.created"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhooks/{id}");
    let mut expected = 0;
    let mut step = async |change: Option<serde_json::Value>, fans_out: bool, what: &str| {
        if let Some(change) = change {
            let r = app.patch(&path, change).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text);
        }
        app.ticket(&p, json!({"title": what})).await;
        expected += usize::from(fans_out);
        assert_eq!(deliveries_of(&app, &id).await, expected, "after: {what}");
    };
    step(None, true, "created").await;
    step(Some(json!({"url": second.url})), true, "moved").await;
    step(Some(json!({"enabled": false})), false, "disabled").await;
    step(Some(json!({"enabled": true})), true, "enabled again").await;
    step(
        Some(json!({"events": ["comment.created"]})),
        false,
        "filtered out",
    )
    .await;
    step(Some(json!({"events": ["ticket.*"]})), true, "filtered in").await;
    // The URL change is in what is sent, not only in what is counted.
    eventually(Duration::from_secs(10), "three at the new URL", || async {
        second.count() == 3
    })
    .await;
    assert_eq!(first.count(), 1, "the old URL got only the first");
    let r = app.delete(&path).await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.ticket(&p, json!({"title": "deleted"})).await;
    let events = app.events().await;
    let last = events.last().unwrap()["id"].as_str().unwrap().to_owned();
    let of_last = all_pages(
        &app.base,
        &app.key,
        &format!("/v1/deliveries?event_id={last}"),
    )
    .await;
    assert!(of_last.is_empty(), "a deleted webhook got {of_last:?}");
}
