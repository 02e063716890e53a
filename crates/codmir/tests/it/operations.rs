//! The operator's tools for a bad day: queries that find what failed and why, the event log
//! read forward, and (as they land) redelivery, replay, pings, disabling and rotation.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, hmac, spawn_app, spawn_app_with, test_config};
use crate::receiver::{Hit, Receiver, Reply};

/// The contract's `verifySignature`: the whole header against HMAC-SHA256 hex of the body.
fn contract_verifies(hit: &Hit, secret: &str) -> bool {
    let expected = format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &hit.body)));
    hit.header("x-codmir-signature") == expected
}

/// Standard Webhooks: one of the space-separated `v1,` signatures is the HMAC of
/// `{id}.{timestamp}.{body}` under the base64 key of `whsec_…`.
fn standard_verifies(hit: &Hit, signing_secret: &str) -> bool {
    let key = STANDARD
        .decode(signing_secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut msg = format!(
        "{}.{}.",
        hit.header("webhook-id"),
        hit.header("webhook-timestamp")
    )
    .into_bytes();
    msg.extend_from_slice(&hit.body);
    let expected = format!("v1,{}", STANDARD.encode(hmac(&key, &msg)));
    hit.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

const WAIT: Duration = Duration::from_secs(10);

async fn register(app: &TestApp, body: Value) -> String {
    let r = app.post("/v1/webhooks", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

/// The `data` of a GET that must answer 200.
async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    let r = app.get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_delivery_list_spans_webhooks_filters_and_says_why_each_failed() {
    let app = spawn_app().await; // retries 100 ms, 200 ms: three attempts in all
    let (bad, good) = (Receiver::start().await, Receiver::start().await);
    bad.always(Reply::Status(500));
    let bad_id = register(&app, json!({"url": bad.url, "events": ["project.*"]})).await;
    let good_id = register(&app, json!({"url": good.url, "events": ["*"]})).await;
    app.project("P").await;
    eventually(WAIT, "both deliveries settled", || async {
        let all = list(&app, "/v1/deliveries?limit=100").await;
        all.len() == 2 && all.iter().all(|d| d["status"] != "pending")
    })
    .await;

    let failed = list(&app, "/v1/deliveries?status=failed").await;
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f["webhook_id"], bad_id.as_str());
    assert_eq!(f["attempt_count"], 3);
    assert_eq!(f["last_status_code"], 500, "the list says why: {f}");
    assert_eq!(f["last_error"], Value::Null);
    assert!(f["last_attempt_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(f["redelivery_of"], Value::Null);

    let ok = list(&app, &format!("/v1/deliveries?webhook_id={good_id}")).await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["status"], "succeeded");
    assert_eq!(ok[0]["last_status_code"], 200);
    assert_eq!(
        list(&app, "/v1/deliveries?event_type=project.*")
            .await
            .len(),
        2
    );
    assert_eq!(
        list(&app, "/v1/deliveries?event_type=project.created")
            .await
            .len(),
        2
    );
    assert!(
        list(&app, "/v1/deliveries?event_type=ticket.*")
            .await
            .is_empty()
    );
    assert!(
        list(&app, "/v1/deliveries?since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        list(&app, "/v1/deliveries?until=2999-01-01T00:00:00Z")
            .await
            .len(),
        2
    );
    // Pages like every list.
    let first = app.get("/v1/deliveries?limit=1").await;
    assert_eq!(first.body["has_more"], true);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = list(&app, &format!("/v1/deliveries?limit=1&cursor={cursor}")).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0]["id"], first.body["data"][0]["id"]);

    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2024-13-01T00:00:00Z", "until"),
        ("status=lost", "status"),
        ("event_type=ticket.exploded", "event_type"),
        ("webhook_id=nope", "webhook_id"),
    ] {
        let r = app.get(&format!("/v1/deliveries?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{query}");
    }
    // Another workspace sees none of them.
    let other = crate::helpers::new_key(&app.store, "other", "eve").await;
    let r = app
        .request("GET", "/v1/deliveries", Some(&other), None)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn the_event_log_filters_by_pattern_project_and_time_and_reads_forward() {
    let app = spawn_app().await;
    let p1 = app.project("One").await;
    let p2 = app.project("Two").await;
    for (p, title) in [(&p1, "a"), (&p2, "b"), (&p1, "c")] {
        app.ticket(p, json!({"title": title})).await;
    }
    // Newest first by default; `order=asc` reads the log forward, page by page.
    let all = list(&app, "/v1/events?limit=100").await;
    assert_eq!(all.len(), 5);
    let mut forward = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?order=asc&limit=2&cursor={c}"),
            None => "/v1/events?order=asc&limit=2".to_owned(),
        };
        let r = app.get(&path).await;
        forward.extend(r.body["data"].as_array().unwrap().clone());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut reversed = ids(&all);
    reversed.reverse();
    assert_eq!(ids(&forward), reversed, "ascending is the log forward");

    let tickets = list(&app, "/v1/events?type=ticket.*").await;
    assert_eq!(tickets.len(), 3);
    assert!(tickets.iter().all(|e| e["type"] == "ticket.created"));
    let of_p1 = list(
        &app,
        &format!("/v1/events?project_id={p1}&type=ticket.created"),
    )
    .await;
    assert_eq!(of_p1.len(), 2);
    assert_eq!(
        list(&app, &format!("/v1/events?project_id={p2}"))
            .await
            .len(),
        2
    );
    assert_eq!(list(&app, "/v1/events?type=*").await.len(), 5);
    // A time window: since the second event's timestamp, until the fourth's (exclusive).
    let ts = |e: &Value| e["timestamp"].as_str().unwrap().to_owned();
    let (from, to) = (ts(&forward[1]), ts(&forward[3]));
    let window = list(
        &app,
        &format!("/v1/events?order=asc&since={from}&until={to}"),
    )
    .await;
    assert!(!window.is_empty());
    assert!(
        window.iter().all(|e| ts(e) >= from && ts(e) < to),
        "{window:?}"
    );
    assert!(
        list(&app, "/v1/events?since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    for (query, field) in [
        ("type=ticket.exploded", "type"),
        ("order=sideways", "order"),
        ("since=2024-01-15", "since"),
        ("project_id=p1", "project_id"),
    ] {
        let r = app.get(&format!("/v1/events?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn comments_are_listed_newest_first_and_me_names_the_key() {
    let app = spawn_app().await;
    let p = app.project("P").await;
    let t = app.ticket(&p, json!({"title": "T"})).await;
    let t = t["id"].as_str().unwrap();
    let mut made = Vec::new();
    for body in ["first", "second", "third"] {
        let r = app
            .post(&format!("/v1/tickets/{t}/comments"), json!({"body": body}))
            .await;
        assert_eq!(r.status, 201);
        made.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let page = app.get(&format!("/v1/tickets/{t}/comments?limit=2")).await;
    assert_eq!(page.status, 200);
    let bodies: Vec<&str> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["third", "second"]);
    assert_eq!(page.body["has_more"], true);
    let missing = app
        .get("/v1/tickets/tkt_01m8mfwv1zhaevqnr82bqc78pm/comments")
        .await;
    assert_eq!(missing.status, 404);

    let me = app.get("/v1/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["user"]["name"], "admin");
    assert!(me.body["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(me.body["workspace"]["name"], "default");
    let anonymous = app.request("GET", "/v1/me", Some("cmk_nope"), None).await;
    assert_eq!(anonymous.status, 401);
}

/// The gaps between consecutive arrivals at `rx`, sorted by arrival.
fn arrival_gaps(rx: &Receiver) -> Vec<Duration> {
    let mut at: Vec<_> = rx.hits().into_iter().map(|h| h.at).collect();
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn a_rate_limit_of_five_per_second_holds_over_a_hundred_events() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let id = register(
        &app,
        json!({"url": rx.url, "events": ["ticket.created"], "rate_limit_per_second": 5}),
    )
    .await;
    let w = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(w.body["rate_limit_per_second"], 5);
    let p = app.project("P").await;
    for i in 0..100 {
        app.ticket(&p, json!({"title": format!("t{i}")})).await;
    }
    eventually(Duration::from_secs(40), "100 deliveries at 5/s", || async {
        rx.count() == 100
    })
    .await;
    let gaps = arrival_gaps(&rx);
    let min = gaps.iter().min().copied().unwrap();
    let span: Duration = gaps.iter().sum();
    // Attempts start 1/5 s apart; what the receiver sees adds each request's own transit
    // time, which on a loaded machine differs by tens of ms between two requests. So: no
    // burst (a broken limit gives gaps near zero), and no second holds more than the five
    // plus the one on its boundary.
    assert!(
        min >= Duration::from_millis(120),
        "closest arrivals {min:?} apart"
    );
    let mut at: Vec<_> = rx.hits().into_iter().map(|h| h.at).collect();
    at.sort();
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t - at[i] <= Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 6, "{busiest} arrivals within one second");
    assert!(
        span >= Duration::from_millis(99 * 195),
        "100 arrivals over {span:?}"
    );
}

#[tokio::test]
async fn max_in_flight_of_one_never_has_two_requests_at_the_receiver() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    rx.always(Reply::Delay(60, 200));
    register(
        &app,
        json!({"url": rx.url, "events": ["ticket.created"], "max_in_flight": 1}),
    )
    .await;
    let p = app.project("P").await;
    for i in 0..15 {
        app.ticket(&p, json!({"title": format!("t{i}")})).await;
    }
    eventually(WAIT, "15 deliveries", || async { rx.count() == 15 }).await;
    // Each answer takes 60 ms: with one in flight, no request arrives before the previous
    // one was answered.
    let min = arrival_gaps(&rx).into_iter().min().unwrap();
    assert!(
        min >= Duration::from_millis(55),
        "two requests {min:?} apart"
    );
}

#[tokio::test]
async fn custom_headers_arrive_and_reserved_ones_are_refused() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let id = register(
        &app,
        json!({"url": rx.url, "events": ["project.created"],
               "headers": {"X-Tenant": "acme", "Authorization": "Bearer s3cret"}}),
    )
    .await;
    app.project("P").await;
    eventually(WAIT, "delivered", || async { rx.count() == 1 }).await;
    let hit = &rx.hits()[0];
    assert_eq!(hit.header("x-tenant"), "acme");
    assert_eq!(hit.header("authorization"), "Bearer s3cret");
    assert!(hit.header("x-codmir-signature").starts_with("sha256="));
    // PATCH replaces them.
    let r = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            json!({"headers": {"X-Other": "1"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["headers"], json!({"X-Other": "1"}));
    for bad in [
        "Host",
        "Content-Type",
        "Transfer-Encoding",
        "Connection",
        "X-Codmir-Event",
        "webhook-signature",
    ] {
        let r = app
            .post(
                "/v1/webhooks",
                json!({"url": rx.url, "events": ["*"], "headers": {bad: "x"}}),
            )
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert_eq!(r.body["error"]["field"], "headers");
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(bad),
            "{bad}: the message names the header: {}",
            r.text
        );
    }
    for (body, field) in [
        (json!({"max_in_flight": 0}), "max_in_flight"),
        (json!({"max_in_flight": 65}), "max_in_flight"),
        (json!({"rate_limit_per_second": 0}), "rate_limit_per_second"),
        (json!({"headers": {"X-A": 1}}), "headers"),
    ] {
        let r = app.patch(&format!("/v1/webhooks/{id}"), body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }
}

/// Registers a webhook and returns the whole create response (with the secrets).
async fn register_full(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/webhooks", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

#[tokio::test]
async fn redeliver_sends_the_same_bytes_as_a_new_linked_delivery_signed_afresh() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let w = register_full(
        &app,
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
    let original = list(&app, &format!("/v1/deliveries?webhook_id={wid}")).await[0].clone();
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
    let wid = register(&app, json!({"url": rx.url, "events": ["project.created"]})).await;
    app.project("P").await;
    eventually(WAIT, "the first attempt failed", || async {
        let d = list(&app, &format!("/v1/deliveries?webhook_id={wid}")).await;
        d.first().is_some_and(|d| d["attempt_count"] == 1)
    })
    .await;
    let d = list(&app, &format!("/v1/deliveries?webhook_id={wid}")).await[0].clone();
    assert_eq!(d["status"], "pending");
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
    let w = register_full(&app, json!({"url": rx.url, "events": ["ticket.created"]})).await;
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
    let wid = register(
        &app,
        json!({"url": rx.url, "events": ["project.created"], "max_in_flight": 1}),
    )
    .await;
    let since = codmir_core::time::Timestamp::now().to_rfc3339_millis();
    for i in 0..5 {
        app.project(&format!("P{i}")).await;
    }
    eventually(WAIT, "five deliveries failed", || async {
        list(
            &app,
            &format!("/v1/deliveries?webhook_id={wid}&status=failed"),
        )
        .await
        .len()
            == 5
    })
    .await;
    let events: Vec<String> = {
        let mut e = ids(&list(&app, "/v1/events?type=project.created&order=asc").await);
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
        list(
            &app,
            &format!("/v1/deliveries?webhook_id={wid}&status=succeeded"),
        )
        .await
        .len()
            == 5
    })
    .await;
    let replayed = list(
        &app,
        &format!("/v1/deliveries?webhook_id={wid}&status=succeeded"),
    )
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
    let wid = register(&app, json!({"url": rx.url, "events": ["project.created"]})).await;
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

#[tokio::test]
async fn during_a_rotation_either_secret_verifies_and_after_it_only_the_new_one() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let old = register_full(
        &app,
        json!({"url": rx.url, "events": ["project.created"], "secret": "the-old-secret-0123"}),
    )
    .await;
    let wid = old["id"].as_str().unwrap().to_owned();
    let old_signing = old["signing_secret"].as_str().unwrap().to_owned();
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
    let bad_id = register(&app, json!({"url": bad.url, "events": ["project.created"]})).await;
    let watcher_id = register(&app, json!({"url": watcher.url, "events": ["webhook.*"]})).await;
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
    assert_eq!(
        list(&app, "/v1/events?type=webhook.disabled").await.len(),
        1
    );
    // Its pending delivery was cancelled and no more attempts are made.
    let d = list(&app, &format!("/v1/deliveries?webhook_id={bad_id}")).await;
    assert_eq!(d[0]["status"], "cancelled");
    app.project("Q").await;
    eventually(WAIT, "the watcher saw nothing of it", || async {
        list(&app, &format!("/v1/deliveries?webhook_id={watcher_id}"))
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
    let id = register(&app, json!({"url": rx.url, "events": ["project.created"]})).await;
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
}

#[tokio::test]
async fn retention_deletes_old_rows_in_batches_under_load_and_keeps_pending_work() {
    let config = codmir_server::Config {
        retry_schedule: codmir_core::retry::RetrySchedule::parse("10m").unwrap(),
        retention: Some(Duration::from_millis(1500)),
        retention_interval: Duration::from_millis(100),
        retention_batch: 7,
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let (ok, down) = (Receiver::start().await, Receiver::start().await);
    down.always(Reply::Status(503));
    let ok_id = register(&app, json!({"url": ok.url, "events": ["project.created"]})).await;
    let down_id = register(
        &app,
        json!({"url": down.url, "events": ["project.created"]}),
    )
    .await;
    for i in 0..30 {
        app.project(&format!("old{i}")).await;
    }
    eventually(WAIT, "the healthy webhook's deliveries settled", || async {
        list(
            &app,
            &format!("/v1/deliveries?webhook_id={ok_id}&status=succeeded&limit=100"),
        )
        .await
        .len()
            == 30
    })
    .await;
    let pending = list(
        &app,
        &format!("/v1/deliveries?webhook_id={down_id}&limit=100"),
    )
    .await;
    assert_eq!(pending.len(), 30);
    // A load through the API while retention deletes the old rows, 7 of each kind at a time:
    // one request per check, until the old settled deliveries are gone.
    let answered = std::sync::Mutex::new(Vec::new());
    eventually(
        WAIT,
        "the old settled deliveries deleted under load",
        || async {
            let n = answered.lock().unwrap().len();
            let r = app
                .post("/v1/projects", json!({"name": format!("new{n}")}))
                .await;
            answered.lock().unwrap().push(r.status);
            list(
                &app,
                &format!("/v1/deliveries?webhook_id={ok_id}&limit=100"),
            )
            .await
            .iter()
            .all(|d| d["created_at"].as_str() > pending[0]["created_at"].as_str())
        },
    )
    .await;
    let answered = answered.into_inner().unwrap();
    assert!(answered.len() > 1, "the load ran during the pass");
    assert!(
        answered.iter().all(|s| *s == 201),
        "the API kept answering: {answered:?}"
    );
    // The pending deliveries, their events and their attempts are all still there.
    let still = list(
        &app,
        &format!("/v1/deliveries?webhook_id={down_id}&status=pending&limit=100"),
    )
    .await;
    let old_pending: Vec<&Value> = still
        .iter()
        .filter(|d| pending.iter().any(|p| p["id"] == d["id"]))
        .collect();
    assert_eq!(old_pending.len(), 30, "pending work is never deleted");
    for d in old_pending {
        let event = app
            .get(&format!("/v1/events/{}", d["event_id"].as_str().unwrap()))
            .await;
        assert_eq!(event.status, 200, "the events pending work needs are kept");
        let detail = app
            .get(&format!("/v1/deliveries/{}", d["id"].as_str().unwrap()))
            .await;
        assert_eq!(detail.body["attempts"].as_array().unwrap().len(), 1);
    }
    // Only the events nothing needs went: the 30 old ones still have pending deliveries.
    let events = list(&app, "/v1/events?type=project.created&limit=100").await;
    assert!(events.len() >= 30, "{} events left", events.len());
}
