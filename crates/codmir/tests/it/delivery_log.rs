//! The delivery log shows each attempt's request as the receiver got it, and finds the
//! deliveries of one event: what the dashboard's delivery and event pages show.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_app};
use crate::receiver::{Receiver, Reply};

#[tokio::test]
async fn each_attempt_shows_the_request_the_receiver_got() {
    let app = spawn_app().await; // retries after 100 ms and 200 ms
    let rx = Receiver::start().await;
    rx.script([Reply::Status(500)]);
    let r = app
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["project.created"], "secret": "your-webhook-secret",
                   "headers": {"X-Tenant": "acme"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    app.project("P").await;
    eventually(Duration::from_secs(10), "two attempts", || async {
        rx.count() == 2
    })
    .await;
    let list = app.get("/v1/deliveries").await;
    let id = list.body["data"][0]["id"].as_str().unwrap().to_owned();
    let event = list.body["data"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/deliveries/{id}");
    eventually(
        Duration::from_secs(10),
        "both attempts recorded",
        || async {
            app.get(&path).await.body["attempts"]
                .as_array()
                .unwrap()
                .len()
                == 2
        },
    )
    .await;
    let detail = app.get(&path).await.body;
    assert_eq!(detail["url"], rx.url.as_str());
    let hits = rx.hits();
    assert_eq!(
        detail["request_body"].as_str().unwrap().as_bytes(),
        &hits[0].body[..],
        "the exact bytes"
    );
    for (attempt, hit) in detail["attempts"].as_array().unwrap().iter().zip(&hits) {
        let shown = attempt["request_headers"].as_object().unwrap();
        for (name, value) in shown {
            assert_eq!(
                hit.header(name),
                value.as_str().unwrap(),
                "attempt {}: {name}",
                attempt["attempt"]
            );
        }
        for name in [
            "x-codmir-signature",
            "webhook-signature",
            "x-tenant",
            "x-codmir-attempt",
        ] {
            assert!(shown.contains_key(name), "{name} shown: {shown:?}");
        }
    }

    // Where an event went: its deliveries, by event id.
    let went = app.get(&format!("/v1/deliveries?event_id={event}")).await;
    assert_eq!(
        went.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        went.text
    );
    let other = app
        .get("/v1/deliveries?event_id=evt_01m8mfwv1zhaevqnr82bqc78pm")
        .await;
    assert_eq!(other.body["data"].as_array().unwrap().len(), 0);
    assert_eq!(app.get("/v1/deliveries?event_id=nope").await.status, 422);
}
