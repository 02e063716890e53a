//! Recovering from a bad day: redelivery, retrying what is pending now, pings, replays of an
//! outage, and a webhook disabled, fixed and enabled again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    WAIT, contract_verifies, eventually, id_of, ids, spawn_app, spawn_app_with, standard_verifies,
    test_config,
};
use crate::receiver::{Receiver, Reply};

#[tokio::test]
async fn redeliver_sends_the_same_bytes_as_a_new_linked_delivery_signed_afresh() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let w = app
        .register(
            json!({"url": rx.url, "events": ["project.created"], "secret": "your-webhook-secret"}),
        )
        .await;
    let (secret, signing) = (
        w["secret"].as_str().unwrap().to_owned(),
        w["signing_secret"].as_str().unwrap().to_owned(),
    );
    let wid = w["id"].as_str().unwrap().to_owned();
    app.project("P").await;
    eventually(WAIT, "first delivery", || async { rx.count() == 1 }).await;
    let original = app.list(&format!("/v1/deliveries?webhook_id={wid}")).await[0].clone();
    let original_id = original["id"].as_str().unwrap().to_owned();
    // Once the clock has passed the first attempt's second, a fresh timestamp shows.
    let first_second: i64 = rx.hits()[0].header("webhook-timestamp").parse().unwrap();
    eventually(WAIT, "the next second", || async {
        codmir_core::time::Timestamp::now().as_secs() > first_second
    })
    .await;
    let r = app
        .post(
            &format!("/v1/deliveries/{original_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let new_id = r.body["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, original_id);
    assert_eq!(r.body["redelivery_of"], original_id.as_str());
    assert_eq!(r.body["event_id"], original["event_id"]);
    eventually(WAIT, "redelivered", || async { rx.count() == 2 }).await;
    let hits = rx.hits();
    let (first, again) = (&hits[0], &hits[1]);
    assert_eq!(first.body, again.body, "the same event bytes");
    assert_eq!(again.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(again.header("x-codmir-delivery"), new_id.as_str());
    assert!(
        again.header("webhook-timestamp").parse::<u64>().unwrap()
            > first.header("webhook-timestamp").parse::<u64>().unwrap(),
        "a fresh signature timestamp"
    );
    for hit in [first, again] {
        assert!(contract_verifies(hit, &secret));
        assert!(standard_verifies(hit, &signing));
    }
    eventually(WAIT, "the redelivery recorded", || async {
        app.get(&format!("/v1/deliveries/{new_id}")).await.body["status"] == "succeeded"
    })
    .await;
    let d = app.get(&format!("/v1/deliveries/{new_id}")).await;
    assert_eq!(d.body["redelivery_of"], original_id.as_str());

    let missing = app
        .post(
            "/v1/deliveries/dlv_01m8mfwv1zhaevqnr82bqc78pm/redeliver",
            json!({}),
        )
        .await;
    assert_eq!(missing.status, 404);
    app.patch(&format!("/v1/webhooks/{wid}"), json!({"enabled": false}))
        .await;
    let off = app
        .post(
            &format!("/v1/deliveries/{original_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(off.status, 409, "{}", off.text);
    assert_eq!(off.body["error"]["code"], "webhook_disabled");
}

#[tokio::test]
async fn retry_pending_delivers_at_once_what_was_minutes_away() {
    let config = codmir_server::Config {
        retry_schedule: codmir_core::retry::RetrySchedule::parse("10m").unwrap(),
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let rx = Receiver::start().await;
    rx.script([Reply::Status(503)]);
    let wid = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"]}))
            .await,
    );
    app.project("P").await;
    eventually(WAIT, "the first attempt failed", || async {
        let d = app.list(&format!("/v1/deliveries?webhook_id={wid}")).await;
        d.first().is_some_and(|d| d["attempt_count"] == 1)
    })
    .await;
    let d = app.list(&format!("/v1/deliveries?webhook_id={wid}")).await[0].clone();
    assert_eq!(
        d["status"], "retrying",
        "attempted, failing, another attempt planned"
    );
    assert!(d["next_attempt_at"].is_string(), "{d}");
    let retrying = app
        .list(&format!("/v1/deliveries?webhook_id={wid}&status=retrying"))
        .await;
    assert_eq!(crate::helpers::ids(&retrying), [id_of(&d)]);
    let unsettled = app
        .list(&format!("/v1/webhooks/{wid}/deliveries?status=pending"))
        .await;
    assert_eq!(
        crate::helpers::ids(&unsettled),
        [id_of(&d)],
        "pending: every delivery not settled, retrying ones too"
    );
    let settled = app
        .list(&format!("/v1/webhooks/{wid}/deliveries?status=succeeded"))
        .await;
    assert!(settled.is_empty());
    let r = app
        .post(&format!("/v1/webhooks/{wid}/retry-pending"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["due_now"], 1);
    eventually(
        Duration::from_secs(5),
        "delivered now, not in 10 minutes",
        || async { rx.count() == 2 },
    )
    .await;
    let path = format!("/v1/deliveries/{}", d["id"].as_str().unwrap());
    eventually(WAIT, "recorded", || async {
        app.get(&path).await.body["status"] == "succeeded"
    })
    .await;
    let again = app
        .post(&format!("/v1/webhooks/{wid}/retry-pending"), json!({}))
        .await;
    assert_eq!(again.body["due_now"], 0, "nothing left to hurry");
}

#[tokio::test]
async fn a_ping_answers_with_the_endpoints_reply_and_is_in_the_log() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let w = app
        .register(json!({"url": rx.url, "events": ["ticket.created"]}))
        .await;
    let wid = w["id"].as_str().unwrap().to_owned();
    let r = app
        .post(&format!("/v1/webhooks/{wid}/ping"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["succeeded"], true);
    assert_eq!(r.body["status_code"], 200);
    assert_eq!(r.body["response_body"], "answered 200");
    assert_eq!(rx.count(), 1, "answered after the endpoint did");
    let hit = &rx.hits()[0];
    assert_eq!(hit.header("x-codmir-event"), "webhook.ping");
    let body = hit.json();
    assert_eq!(body["type"], "webhook.ping");
    assert_eq!(body["data"]["webhook"]["id"], wid.as_str());
    assert_eq!(body["data"]["webhook"]["url"], rx.url.as_str());
    assert_eq!(body["data"]["webhook"]["events"], json!(["ticket.created"]));
    assert!(standard_verifies(
        hit,
        w["signing_secret"].as_str().unwrap()
    ));
    let d = app
        .get(&format!(
            "/v1/deliveries/{}",
            r.body["delivery_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(d.body["status"], "succeeded");
    assert_eq!(d.body["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(d.body["event_type"], "webhook.ping");

    // A failing endpoint: the answer says so, and the ping is not retried.
    rx.always(Reply::Status(500));
    let r = app
        .post(&format!("/v1/webhooks/{wid}/ping"), json!({}))
        .await;
    assert_eq!(r.body["succeeded"], false);
    assert_eq!(r.body["status_code"], 500);
    let d = app
        .get(&format!(
            "/v1/deliveries/{}",
            r.body["delivery_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(d.body["status"], "failed");
    assert_eq!(d.body["attempt_count"], 1);
    assert_eq!(
        app.post("/v1/webhooks/wh_01m8mfwv1zhaevqnr82bqc78pm/ping", json!({}))
            .await
            .status,
        404
    );
}

/// The event ids of what `rx` received, in arrival order, from hit `from` on.
fn event_ids_from(rx: &Receiver, from: usize) -> Vec<String> {
    let mut hits = rx.hits();
    hits.sort_by_key(|h| h.at);
    hits[from..]
        .iter()
        .map(|h| h.header("webhook-id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_replay_of_an_outage_brings_every_failed_event_once_more_in_order() {
    let config = codmir_server::Config {
        retry_schedule: codmir_core::retry::RetrySchedule::parse("").unwrap(),
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let rx = Receiver::start().await;
    rx.always(Reply::Status(503));
    let wid = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"], "max_in_flight": 1}))
            .await,
    );
    let since = codmir_core::time::Timestamp::now().to_rfc3339_millis();
    for i in 0..5 {
        app.project(&format!("P{i}")).await;
    }
    eventually(WAIT, "five deliveries failed", || async {
        app.list(&format!("/v1/deliveries?webhook_id={wid}&status=failed"))
            .await
            .len()
            == 5
    })
    .await;
    let events: Vec<String> = {
        let mut e = ids(&app.list("/v1/events?type=project.created&order=asc").await);
        e.truncate(5);
        e
    };
    // The receiver is back, slowly: the replay's deliveries stay pending for a while.
    rx.always(Reply::Delay(150, 200));
    let path = format!("/v1/webhooks/{wid}/replay");
    let r = app.post(&path, json!({"since": since})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["queued"], 5);
    assert_eq!(r.body["next_since"], Value::Null);
    let again = app.post(&path, json!({"since": since})).await;
    assert_eq!(
        again.body["queued"], 0,
        "nothing new while the first is pending: {}",
        again.text
    );
    assert!(
        again.body["skipped_pending"].as_u64().unwrap() >= 4,
        "{}",
        again.text
    );
    eventually(WAIT, "five failed, then five replayed", || async {
        rx.count() == 10
    })
    .await;
    assert_eq!(
        event_ids_from(&rx, 5),
        events,
        "once more each, in event order"
    );
    eventually(WAIT, "the replay recorded", || async {
        app.list(&format!("/v1/deliveries?webhook_id={wid}&status=succeeded"))
            .await
            .len()
            == 5
    })
    .await;
    let replayed = app
        .list(&format!("/v1/deliveries?webhook_id={wid}&status=succeeded"))
        .await;
    assert!(
        replayed.iter().all(|d| d["redelivery_of"]
            .as_str()
            .is_some_and(|o| o.starts_with("dlv_"))),
        "each linked to the delivery it replays"
    );
    // Everything delivered: a replay of failures now has nothing to do.
    let after = app.post(&path, json!({"since": since})).await;
    assert_eq!(after.body["queued"], 0);
    assert_eq!(after.body["skipped_pending"], 0);
    for (body, field) in [
        (json!({"since": "yesterday"}), "since"),
        (json!({"since": since, "until": since}), "until"),
        (json!({"since": since, "status": "lost"}), "status"),
    ] {
        let r = app.post(&path, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }
}

#[tokio::test]
async fn disable_fix_enable_replay_loses_nothing() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let wid = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"]}))
            .await,
    );
    let since = codmir_core::time::Timestamp::now().to_rfc3339_millis();
    app.project("before").await;
    eventually(WAIT, "delivered", || async { rx.count() == 1 }).await;
    let w = format!("/v1/webhooks/{wid}");
    app.patch(&w, json!({"enabled": false})).await;
    app.project("while-off-1").await;
    app.project("while-off-2").await;
    let r = app.patch(&w, json!({"enabled": true})).await;
    assert_eq!(r.body["enabled"], true);
    app.project("after").await;
    eventually(WAIT, "the new event delivered", || async {
        rx.count() == 2
    })
    .await;
    // Without include_missed there is nothing to replay: nothing failed.
    let path = format!("{w}/replay");
    let r = app.post(&path, json!({"since": since})).await;
    assert_eq!(r.body["queued"], 0, "{}", r.text);
    let r = app
        .post(&path, json!({"since": since, "include_missed": true}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["queued"], 2, "{}", r.text);
    eventually(WAIT, "the missed events", || async { rx.count() == 4 }).await;
    let mut names: Vec<String> = rx
        .hits()
        .iter()
        .map(|h| {
            h.json()["data"]["project"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["after", "before", "while-off-1", "while-off-2"]);
}

/// A hundred redeliveries of one delivery asked for at once, while the first is still being
/// sent, are one: every answer names the same new delivery and the receiver gets one request.
/// Once it has gone, a redelivery is a new one again.
#[tokio::test]
async fn concurrent_redeliveries_of_one_delivery_make_one_request() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let w = app
        .register(json!({"url": rx.url, "events": ["project.created"]}))
        .await;
    let wid = id_of(&w);
    app.project("P").await;
    eventually(WAIT, "the first delivery", || async { rx.count() == 1 }).await;
    let original = id_of(&app.list(&format!("/v1/deliveries?webhook_id={wid}")).await[0]);
    // The redelivery takes a while at the receiver: it is pending throughout the burst.
    rx.script([Reply::Delay(1500, 200)]);
    let path = format!("/v1/deliveries/{original}/redeliver");
    let asks: Vec<_> = (0..100)
        .map(|_| {
            let (client, url, key) = (
                app.client.clone(),
                format!("{}{path}", app.base),
                app.key.clone(),
            );
            tokio::spawn(async move {
                let r = client.post(url).bearer_auth(key).send().await.unwrap();
                assert_eq!(r.status(), 202);
                id_of(&r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut named = Vec::new();
    for ask in asks {
        named.push(ask.await.unwrap());
    }
    named.dedup();
    assert_eq!(named.len(), 1, "one redelivery: {named:?}");
    assert_ne!(named[0], original);
    eventually(WAIT, "the redelivery answered", || async {
        app.get(&format!("/v1/deliveries/{}", named[0])).await.body["status"] == "succeeded"
    })
    .await;
    assert_eq!(rx.count(), 2, "one request for the hundred asks");

    // Settled, it is not pending any more: the next redelivery is a new one.
    let again = app.post(&path, json!({})).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_ne!(id_of(&again.body), named[0]);
    eventually(WAIT, "sent again", || async { rx.count() == 3 }).await;
}

/// At the workspace's quota of pending deliveries, a replay, a redelivery and a tracker change
/// that would fan out are refused with a 429 that says so, and nothing is queued.
#[tokio::test]
async fn past_the_pending_quota_replay_redeliver_and_fan_out_get_429_and_queue_nothing() {
    let config = codmir_server::Config {
        max_pending_per_workspace: 5,
        // Each failed attempt leaves its delivery pending for an hour.
        retry_schedule: codmir_core::retry::RetrySchedule::parse("1h").unwrap(),
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let rx = Receiver::start().await;
    rx.always(Reply::Status(503));
    let wid = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"]}))
            .await,
    );
    let fine = Receiver::start().await;
    let other = id_of(
        &app.register(json!({"url": fine.url, "events": ["project.created"]}))
            .await,
    );
    let since = codmir_core::time::Timestamp::now().to_rfc3339_millis();
    for i in 0..5 {
        app.project(&format!("P{i}")).await;
    }
    eventually(WAIT, "five attempts failed, five delivered", || async {
        rx.count() == 5 && fine.count() == 5
    })
    .await;
    let pending = || async {
        app.list(&format!(
            "/v1/deliveries?webhook_id={wid}&status=pending&limit=100"
        ))
        .await
    };
    assert_eq!(pending().await.len(), 5);
    let refused = |r: &crate::helpers::Resp| {
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "pending_quota_exceeded");
        assert!(r.text.contains("--max-pending-per-workspace"), "{}", r.text);
        assert_eq!(r.headers["retry-after"], "60");
    };
    // A replay of the window to the second webhook (which got the five events) would queue
    // five more.
    let r = app
        .post(
            &format!("/v1/webhooks/{other}/replay"),
            json!({"since": since, "status": "any"}),
        )
        .await;
    refused(&r);
    let dlv = pending().await[0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(&format!("/v1/deliveries/{dlv}/redeliver"), json!({}))
        .await;
    refused(&r);
    // A tracker change fans out: refused once the count is taken again (at most a second).
    // The quota is looked at before the request is, so an invalid one (422, nothing made)
    // tells when it is.
    eventually(WAIT, "the pending count taken again", || async {
        let r = app.post("/v1/projects", json!({"name": ""})).await;
        assert!(matches!(r.status, 422 | 429), "{}", r.text);
        r.status == 429
    })
    .await;
    let r = app.post("/v1/projects", json!({"name": "Over"})).await;
    refused(&r);
    assert_eq!(pending().await.len(), 5, "nothing queued");
    assert_eq!(
        app.list(&format!("/v1/deliveries?webhook_id={other}"))
            .await
            .len(),
        5,
        "the replay queued nothing"
    );
    assert_eq!(
        app.list("/v1/projects").await.len(),
        5,
        "the project was not made"
    );
}

/// Redelivering a delivery that is still retrying supersedes it: the original is cancelled
/// with a reason naming the redelivery, and its next attempt never comes, so the receiver does
/// not get the event once from the redelivery and again from the original's retries.
#[tokio::test]
async fn a_redelivery_supersedes_a_pending_original_and_says_so() {
    let app = spawn_app_with(codmir_server::Config {
        retry_schedule: codmir_core::retry::RetrySchedule::parse("10m,10m").unwrap(),
        ..test_config()
    })
    .await;
    let rx = Receiver::start().await;
    rx.script([Reply::Status(500)]);
    let wid = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"]}))
            .await,
    );
    app.project("P").await;
    eventually(WAIT, "the first attempt failed", || async {
        let d = app.list(&format!("/v1/webhooks/{wid}/deliveries")).await;
        d.first().is_some_and(|d| d["status"] == "retrying")
    })
    .await;
    let original = id_of(&app.list(&format!("/v1/webhooks/{wid}/deliveries")).await[0]);
    let r = app
        .post(&format!("/v1/deliveries/{original}/redeliver"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let again = id_of(&r.body);
    eventually(WAIT, "the redelivery arrived", || async { rx.count() == 2 }).await;
    let o = app.get(&format!("/v1/deliveries/{original}")).await;
    assert_eq!(o.body["status"], "cancelled", "{}", o.text);
    assert_eq!(
        o.body["cancel_reason"],
        format!("superseded by redelivery {again}"),
        "{}",
        o.text
    );
    assert_eq!(o.body["next_attempt_at"], Value::Null);
    // Its retry would have come in 10 minutes: nothing of it is pending to make due now.
    let r = app
        .post(&format!("/v1/webhooks/{wid}/retry-pending"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["due_now"], 0, "nothing of it pending");
    let settled = app.get(&format!("/v1/deliveries/{again}")).await;
    assert_eq!(settled.body["status"], "succeeded", "{}", settled.text);
    assert_eq!(settled.body["cancel_reason"], Value::Null);
    assert_eq!(rx.count(), 2, "the original was not sent again");
}
