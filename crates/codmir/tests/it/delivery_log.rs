//! The delivery log shows each attempt's request as the receiver got it, and finds the
//! deliveries of one event: what the dashboard's delivery and event pages show.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{WAIT, eventually, id_of, spawn_app};
use crate::receiver::{Hit, Receiver, Reply};

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
        let shown = shows_as_received(attempt, hit);
        assert_eq!(hit.header("x-tenant"), "acme");
        assert_eq!(shown["x-tenant"], "********");
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

#[tokio::test]
async fn the_delivery_list_spans_webhooks_filters_and_says_why_each_failed() {
    let app = spawn_app().await; // retries 100 ms, 200 ms: three attempts in all
    let (bad, good) = (Receiver::start().await, Receiver::start().await);
    bad.always(Reply::Status(500));
    let bad_id = id_of(
        &app.register(json!({"url": bad.url, "events": ["project.*"]}))
            .await,
    );
    let good_id = id_of(
        &app.register(json!({"url": good.url, "events": ["*"]}))
            .await,
    );
    app.project("P").await;
    eventually(WAIT, "both deliveries settled", || async {
        let all = app.list("/v1/deliveries?limit=100").await;
        all.len() == 2 && all.iter().all(crate::helpers::settled)
    })
    .await;

    let failed = app.list("/v1/deliveries?status=failed").await;
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f["webhook_id"], bad_id.as_str());
    assert_eq!(f["attempt_count"], 3);
    assert_eq!(f["last_status_code"], 500, "the list says why: {f}");
    assert_eq!(f["last_error"], Value::Null);
    assert!(f["last_attempt_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(f["redelivery_of"], Value::Null);

    let ok = app
        .list(&format!("/v1/deliveries?webhook_id={good_id}"))
        .await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["status"], "succeeded");
    assert_eq!(ok[0]["last_status_code"], 200);
    assert_eq!(
        app.list("/v1/deliveries?event_type=project.*").await.len(),
        2
    );
    assert_eq!(
        app.list("/v1/deliveries?event_type=project.created")
            .await
            .len(),
        2
    );
    assert!(
        app.list("/v1/deliveries?event_type=ticket.*")
            .await
            .is_empty()
    );
    assert!(
        app.list("/v1/deliveries?since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        app.list("/v1/deliveries?until=2999-01-01T00:00:00Z")
            .await
            .len(),
        2
    );
    // Pages like every list.
    let first = app.get("/v1/deliveries?limit=1").await;
    assert_eq!(first.body["has_more"], true);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app
        .list(&format!("/v1/deliveries?limit=1&cursor={cursor}"))
        .await;
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

/// The log shows each attempt's request as sent, also after a rotation and a change of the
/// webhook's own headers between attempts (signatures made with the secret of that moment),
/// and the response's headers as received: the `Retry-After` that moved the retry.
#[tokio::test]
async fn after_a_rotation_each_attempt_shows_the_headers_sent_and_the_answers_headers() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    rx.script([Reply::RetryAfter(503, 1)]);
    let first_tenant = "tenant-0000000000000001";
    let w = app
        .register(
            json!({"url": rx.url, "events": ["project.created"], "secret": "the-first-secret-01",
                         "headers": {"X-Tenant": first_tenant}}),
        )
        .await;
    let wid = id_of(&w);
    app.project("P").await;
    eventually(WAIT, "the first attempt", || async { rx.count() == 1 }).await;
    // Before the retry (1 s later, as Retry-After asked): a new secret at once, new headers.
    let r = app
        .post(
            &format!("/v1/webhooks/{wid}/rotate-secret"),
            json!({"secret": "the-second-secret-1", "grace_period_seconds": 0}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .patch(
            &format!("/v1/webhooks/{wid}"),
            json!({"headers": {"X-Tenant": "tenant-0000000000000002"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually(WAIT, "the retry", || async { rx.count() == 2 }).await;
    let id = id_of(&app.list(&format!("/v1/webhooks/{wid}/deliveries")).await[0]);
    let path = format!("/v1/deliveries/{id}");
    eventually(WAIT, "both attempts recorded", || async {
        app.get(&path).await.body["attempts"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let detail = app.get(&path).await.body;
    let mut hits = rx.hits();
    hits.sort_by_key(|h| h.at);
    assert_ne!(
        hits[0].header("x-codmir-signature"),
        hits[1].header("x-codmir-signature"),
        "signed with two secrets"
    );
    for (attempt, hit) in detail["attempts"].as_array().unwrap().iter().zip(&hits) {
        assert_eq!(attempt["request_headers_as_sent"], true, "{attempt}");
        shows_as_received(attempt, hit);
    }
    let first = &detail["attempts"][0];
    assert_eq!(
        first["request_headers"]["x-tenant"],
        codmir_core::webhook::mask(first_tenant)
    );
    assert_eq!(first["response_headers"]["retry-after"], "1", "{first}");
    assert_eq!(detail["attempts"][1]["status_code"], 200);
}

/// Asserts that `attempt`'s `request_headers` are the ones `hit` received, byte for byte
/// (a custom header's value masked: it is write-only), and that every header received but
/// those of the connection is shown; returns what is shown.
fn shows_as_received<'a>(attempt: &'a Value, hit: &Hit) -> &'a serde_json::Map<String, Value> {
    let shown = attempt["request_headers"].as_object().unwrap();
    for (name, value) in shown {
        let sent = match name.as_str() {
            "x-tenant" => codmir_core::webhook::mask(hit.header(name)),
            _ => hit.header(name).to_owned(),
        };
        let n = &attempt["attempt"];
        assert_eq!(sent, value.as_str().unwrap(), "attempt {n}: {name}");
    }
    for name in hit.headers.keys() {
        let connection = ["host", "content-length"].contains(&name.as_str());
        assert!(
            connection || shown.contains_key(name.as_str()),
            "{name} missing: {shown:?}"
        );
    }
    shown
}
