//! A webhook's own settings: its rate limit, its bound on requests in flight, and custom
//! headers.

use std::time::Duration;

use codmir_core::time::Timestamp;
use serde_json::json;

use crate::helpers::{WAIT, all_pages, eventually, id_of, spawn_app};
use crate::receiver::{Receiver, Reply};

#[tokio::test]
async fn a_rate_limit_of_five_per_second_holds_over_a_hundred_events() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let id = id_of(
        &app.register(
            json!({"url": rx.url, "events": ["ticket.created"], "rate_limit_per_second": 5}),
        )
        .await,
    );
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
    // What the server decided, on its own clock, so that it holds on a machine of any speed:
    // the k-th attempt started no earlier than k/5 s after the first delivery was made (its
    // slot follows the one before by 1/5 s at least), so there was never a burst.
    let at = |d: &serde_json::Value, field: &'static str| {
        Timestamp::parse_rfc3339(d[field].as_str().unwrap(), field)
            .unwrap()
            .as_millis()
    };
    let deliveries = all_pages(
        &app.base,
        &app.key,
        &format!("/v1/webhooks/{id}/deliveries"),
    )
    .await;
    assert_eq!(deliveries.len(), 100);
    let first_made = deliveries
        .iter()
        .map(|d| at(d, "created_at"))
        .min()
        .unwrap();
    let mut started: Vec<i64> = deliveries
        .iter()
        .map(|d| at(d, "last_attempt_at"))
        .collect();
    started.sort();
    for (k, start) in started.iter().enumerate() {
        // Times are whole milliseconds: one of slack for the rounding of each.
        let earliest = first_made + 200 * k as i64 - 2;
        assert!(
            *start >= earliest,
            "attempt {k} started {} ms early",
            earliest - start
        );
    }
}

/// The gaps between consecutive arrivals at `rx`, sorted by arrival.
fn arrival_gaps(rx: &Receiver) -> Vec<Duration> {
    let mut at: Vec<_> = rx.hits().into_iter().map(|h| h.at).collect();
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn max_in_flight_of_one_never_has_two_requests_at_the_receiver() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    rx.always(Reply::Delay(60, 200));
    id_of(
        &app.register(json!({"url": rx.url, "events": ["ticket.created"], "max_in_flight": 1}))
            .await,
    );
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
    let id = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"],
               "headers": {"X-Tenant": "acme", "Authorization": "Bearer s3cret"}}))
            .await,
    );
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
    // Values are write-only: names shown, values masked (last four of a long one).
    assert_eq!(r.body["headers"], json!({"X-Other": "********"}));
    let r = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            json!({"headers": {"Authorization": "Bearer a-long-receiver-token-9876"}}),
        )
        .await;
    assert_eq!(
        r.body["headers"],
        json!({"Authorization": "********9876"}),
        "{}",
        r.text
    );
    assert!(
        !app.get(&format!("/v1/webhooks/{id}"))
            .await
            .text
            .contains("receiver-token")
    );
    // A read's headers sent back with one added keep the masked one's value; a masked value
    // that is not what a read shows is refused, not stored in place of the real one.
    let mut shown = app.get(&format!("/v1/webhooks/{id}")).await.body["headers"].clone();
    shown["X-Tenant"] = json!("acme-2");
    let r = app
        .patch(&format!("/v1/webhooks/{id}"), json!({ "headers": shown }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for masked in ["********1234", "********"] {
        let r = app
            .patch(
                &format!("/v1/webhooks/{id}"),
                json!({"headers": {"Authorization": masked}}),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.text.contains("masked"), "{}", r.text);
    }
    app.project("Q").await;
    eventually(WAIT, "delivered again", || async { rx.count() == 2 }).await;
    let hit = &rx.hits()[1];
    assert_eq!(
        hit.header("authorization"),
        "Bearer a-long-receiver-token-9876"
    );
    assert_eq!(hit.header("x-tenant"), "acme-2");
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

/// A temporary webhook (`expires_at`) is removed by the server once that time comes, unless
/// it was renewed; a time in the past is refused, `null` keeps it for good.
#[tokio::test]
async fn a_webhook_with_an_expiry_is_removed_when_it_comes_unless_renewed() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let soon =
        |ms: i64| Timestamp::from_millis(Timestamp::now().as_millis() + ms).to_rfc3339_millis();
    let past = app
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["*"], "expires_at": soon(-1000)}),
        )
        .await;
    assert_eq!(past.status, 422, "{}", past.text);
    assert_eq!(past.body["error"]["field"], "expires_at");

    let at = soon(1000);
    let temporary = app
        .register(json!({"url": rx.url, "events": ["*"], "expires_at": at}))
        .await;
    assert_eq!(temporary["expires_at"], at.as_str());
    let renewed = app
        .register(json!({"url": rx.url, "events": ["*"], "expires_at": soon(1000)}))
        .await;
    let kept = app
        .register(json!({"url": rx.url, "events": ["*"], "expires_at": soon(1000)}))
        .await;
    let (temporary, renewed, kept) = (id_of(&temporary), id_of(&renewed), id_of(&kept));
    let r = app
        .patch(
            &format!("/v1/webhooks/{renewed}"),
            json!({"expires_at": soon(60_000)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .patch(&format!("/v1/webhooks/{kept}"), json!({"expires_at": null}))
        .await;
    assert_eq!(r.body["expires_at"], serde_json::Value::Null, "{}", r.text);

    eventually(
        Duration::from_secs(15),
        "the temporary webhook removed",
        || async { app.get(&format!("/v1/webhooks/{temporary}")).await.status == 404 },
    )
    .await;
    assert_eq!(
        app.get(&format!("/v1/webhooks/{renewed}")).await.status,
        200
    );
    assert_eq!(app.get(&format!("/v1/webhooks/{kept}")).await.status, 200);
}
