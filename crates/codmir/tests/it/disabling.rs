//! A webhook that keeps failing is disabled automatically, and says why.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{WAIT, eventually, id_of, spawn_app, spawn_app_with, test_config};
use crate::receiver::{Receiver, Reply};

#[tokio::test]
async fn a_webhook_failing_past_both_thresholds_is_disabled_and_says_so() {
    let config = codmir_server::Config {
        retry_schedule: codmir_core::retry::RetrySchedule::parse(&["50ms"; 12].join(",")).unwrap(),
        disable_policy: codmir_core::webhook::DisablePolicy {
            period: Duration::from_millis(300),
            failures: 3,
        },
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let (bad, watcher) = (Receiver::start().await, Receiver::start().await);
    bad.always(Reply::Status(500));
    let bad_id = id_of(
        &app.register(json!({"url": bad.url, "events": ["project.created"]}))
            .await,
    );
    let watcher_id = id_of(
        &app.register(json!({"url": watcher.url, "events": ["webhook.*"]}))
            .await,
    );
    app.project("P").await;
    let path = format!("/v1/webhooks/{bad_id}");
    eventually(WAIT, "the failing webhook disabled", || async {
        app.get(&path).await.body["enabled"] == false
    })
    .await;
    let w = app.get(&path).await;
    let reason = w.body["disabled_reason"].as_str().unwrap().to_owned();
    assert!(
        reason.starts_with("every attempt failed for 300 ms")
            && reason.contains("the last answered 500"),
        "{reason}"
    );
    assert!(w.body["disabled_at"].as_str().unwrap().ends_with('Z'));
    let attempts = bad.count();
    assert!(attempts >= 3, "{attempts} attempts before disabling");

    // The event, in the log and at the webhook that subscribes to it.
    eventually(WAIT, "webhook.disabled delivered", || async {
        watcher.count() == 1
    })
    .await;
    let event = watcher.hits()[0].json();
    assert_eq!(event["type"], "webhook.disabled");
    assert_eq!(event["data"]["webhook"]["id"], bad_id.as_str());
    assert_eq!(event["data"]["webhook"]["disabled_reason"], reason.as_str());
    assert_eq!(app.list("/v1/events?type=webhook.disabled").await.len(), 1);
    // Its pending delivery was cancelled and no more attempts are made.
    let d = app
        .list(&format!("/v1/deliveries?webhook_id={bad_id}"))
        .await;
    assert_eq!(d[0]["status"], "cancelled");
    app.project("Q").await;
    eventually(WAIT, "the watcher saw nothing of it", || async {
        app.list(&format!("/v1/deliveries?webhook_id={watcher_id}"))
            .await
            .len()
            == 1
    })
    .await;
    assert_eq!(
        bad.count(),
        attempts,
        "nothing attempted to a disabled webhook"
    );

    // Enabled again, it takes new deliveries.
    bad.always(Reply::Status(200));
    let r = app.patch(&path, json!({"enabled": true})).await;
    assert_eq!(r.body["enabled"], true);
    assert_eq!(r.body["disabled_reason"], Value::Null);
    app.project("R").await;
    eventually(WAIT, "delivered after re-enabling", || async {
        bad.hits()
            .iter()
            .any(|h| h.json()["data"]["project"]["name"] == "R")
    })
    .await;
}

#[tokio::test]
async fn a_410_gone_disables_at_once() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    rx.always(Reply::Status(410));
    let id = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"]}))
            .await,
    );
    app.project("P").await;
    let path = format!("/v1/webhooks/{id}");
    eventually(WAIT, "disabled by the 410", || async {
        app.get(&path).await.body["enabled"] == false
    })
    .await;
    assert_eq!(rx.count(), 1, "one attempt, no retries");
    let reason = app.get(&path).await.body["disabled_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("410 Gone"), "{reason}");
    // The delivery the endpoint answered 410 ended failed, with the reason, not cancelled or
    // pending with a next attempt: re-enabling and replaying the failed ones sends it again.
    let deliveries = app.list(&format!("{path}/deliveries")).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["status"], "failed", "{}", deliveries[0]);
    assert_eq!(deliveries[0]["next_attempt_at"], Value::Null);
    let log = app
        .get(&format!("/v1/deliveries/{}", id_of(&deliveries[0])))
        .await;
    let attempt = &log.body["attempts"][0];
    assert_eq!(attempt["status_code"], 410, "{}", log.text);
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("webhook is disabled"),
        "{}",
        log.text
    );
}
