//! Webhooks and the delivery engine against real receivers: signatures, retries, the log,
//! isolation, cancellation.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use codmir_core::retry::RetrySchedule;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, WAIT, contract_verifies, eventually, spawn_app, spawn_app_with, standard_verifies,
    test_config,
};
use crate::receiver::{Receiver, Reply};

async fn deliveries(app: &TestApp, webhook: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/webhooks/{webhook}/deliveries?limit=100"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

async fn wait_status(app: &TestApp, delivery: &str, status: &str) -> Value {
    let path = format!("/v1/deliveries/{delivery}");
    eventually(WAIT, &format!("delivery {delivery} {status}"), || async {
        app.get(&path).await.body["status"] == status
    })
    .await;
    app.get(&path).await.body
}

/// Waits until no delivery of `webhook` is pending: from then on nothing more is sent to it
/// (deliveries are the only source of requests, and events create them in their commit).
async fn wait_settled(app: &TestApp, webhook: &str) {
    eventually(WAIT, "every delivery of the webhook settled", || async {
        deliveries(app, webhook)
            .await
            .iter()
            .all(crate::helpers::settled)
    })
    .await;
}

/// The id of the newest delivery of `webhook`.
async fn first_delivery(app: &TestApp, webhook: &str) -> String {
    deliveries(app, webhook).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_contract_registration_delivers_signed_exact_bytes() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    // Exactly the contract's request body.
    let wh = app.register(json!({"url": rx.url, "events": ["ticket.created", "ticket.updated"], "secret": "your-webhook-secret"}),
    )
    .await;
    assert_eq!(wh["secret"], "your-webhook-secret");
    let signing = wh["signing_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        signing,
        format!("whsec_{}", STANDARD.encode("your-webhook-secret"))
    );

    let project = app.project("Main App").await;
    let ticket = app
        .ticket(
            &project,
            json!({"title": "Bug in login flow", "priority": "high"}),
        )
        .await;
    let tid = ticket["id"].as_str().unwrap();
    app.patch(
        &format!("/v1/tickets/{tid}"),
        json!({"status": "in_progress"}),
    )
    .await;

    eventually(
        WAIT,
        "ticket.created and ticket.updated delivered",
        || async { rx.count() >= 2 },
    )
    .await;
    wait_settled(&app, wh["id"].as_str().unwrap()).await;
    let hits = rx.hits();
    let types: Vec<&str> = hits.iter().map(|h| h.header("x-codmir-event")).collect();
    assert_eq!(
        types,
        ["ticket.created", "ticket.updated"],
        "status_changed and project.created are not subscribed"
    );

    for hit in &hits {
        let event_id = hit.header("webhook-id");
        // The body is exactly the stored event.
        let stored = app.get(&format!("/v1/events/{event_id}")).await;
        assert_eq!(hit.body.as_ref(), stored.text.as_bytes());
        assert_eq!(hit.json()["id"], event_id);
        assert_eq!(hit.header("content-type"), "application/json");
        assert!(hit.header("user-agent").starts_with("codmir-webhooks/"));
        assert_eq!(
            hit.header("x-codmir-webhook-id"),
            wh["id"].as_str().unwrap()
        );
        assert_eq!(hit.header("x-codmir-attempt"), "1");
        assert!(hit.header("x-codmir-delivery").starts_with("dlv_"));

        // The contract's verifySignature, and Standard Webhooks' one signature (the helpers
        // spell out both computations), with a timestamp of now.
        assert!(contract_verifies(hit, "your-webhook-secret"));
        assert!(standard_verifies(hit, &signing));
        assert_eq!(hit.header("webhook-id"), event_id);
        assert_eq!(hit.header("webhook-signature").split(' ').count(), 1);
        let ts = hit.header("webhook-timestamp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ts.parse::<u64>().unwrap().abs_diff(now) < 60);
    }
    let updated = hits[1].json();
    assert_eq!(updated["data"]["changes"]["status"]["to"], "in_progress");

    let list = deliveries(&app, wh["id"].as_str().unwrap()).await;
    assert_eq!(list.len(), 2);
    for d in list {
        assert_eq!(d["status"], "succeeded");
        assert_eq!(d["attempt_count"], 1);
        assert_eq!(d["next_attempt_at"], Value::Null);
    }
}

#[tokio::test]
async fn a_generated_secret_is_whsec_and_is_never_shown_again() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let wh = app
        .register(json!({"url": rx.url, "events": ["*"], "description": "all"}))
        .await;
    let secret = wh["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
    assert_eq!(wh["signing_secret"], secret);
    let id = wh["id"].as_str().unwrap();
    let read = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(read.body["secret_set"], true);
    assert!(
        !read.text.contains(secret),
        "secret must not be readable: {}",
        read.text
    );
    let list = app.get("/v1/webhooks").await;
    assert!(!list.text.contains(secret));

    app.project("P").await;
    eventually(WAIT, "project.created delivered", || async {
        rx.count() == 1
    })
    .await;
    let hit = &rx.hits()[0];
    // Both schemes verify with the generated secret.
    assert!(contract_verifies(hit, secret));
    assert!(standard_verifies(hit, secret));
}

#[tokio::test]
async fn bad_registrations_are_422_naming_the_problem() {
    let app = spawn_app().await;
    for (body, field, needle) in [
        (
            json!({"url": "ftp://x.com/", "events": ["*"]}),
            "url",
            "scheme",
        ),
        (
            json!({"url": "not a url", "events": ["*"]}),
            "url",
            "absolute",
        ),
        (
            json!({"url": "https://u:p@x.com/", "events": ["*"]}),
            "url",
            "credentials",
        ),
        (
            json!({"url": format!("https://x.com/{}", "a".repeat(3000)), "events": ["*"]}),
            "url",
            "2048",
        ),
        (
            json!({"url": "https://x.com/", "events": ["ticket.created", "ticket.exploded"]}),
            "events",
            "ticket.exploded",
        ),
        (
            json!({"url": "https://x.com/", "events": []}),
            "events",
            "at least one",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "secret": "short"}),
            "secret",
            "16",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "secret": "sixteen-chars-ok\u{7}"}),
            "secret",
            "printable",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "secret": "aaaaaaaaaaaaaaaa"}),
            "secret",
            "different characters",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "headers": {"Cookie": "s=1"}}),
            "headers",
            "Cookie",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "headers": {"X-Forwarded-For": "1.2.3.4"}}),
            "headers",
            "X-Forwarded-For",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "project_ids": ["proj_01m8mfwv1zhaevqnr82bqc78pm"]}),
            "project_ids",
            "no project",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "project_ids": ["nope"]}),
            "project_ids",
            "not a project id",
        ),
        (
            json!({"url": "https://x.com/", "events": "*"}),
            "events",
            "",
        ),
        (
            json!({"url": "https://x.com/", "events": ["*"], "colour": "red"}),
            "colour",
            "unknown field",
        ),
    ] {
        let r = app.post("/v1/webhooks", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}: {}", r.text);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{body}: {}",
            r.text
        );
    }
    // Without --allow-private-targets, loopback and private targets are refused, naming the flag.
    let strict = spawn_app_with(codmir_server::Config {
        allow_private_targets: false,
        ..test_config()
    })
    .await;
    for url in [
        "http://127.0.0.1:9/",
        "http://localhost/x",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://169.254.169.254/",
    ] {
        let r = strict
            .post("/v1/webhooks", json!({"url": url, "events": ["*"]}))
            .await;
        assert_eq!(r.status, 422, "{url}");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--allow-private-targets"),
            "{}",
            r.text
        );
    }
    assert_eq!(
        strict
            .post(
                "/v1/webhooks",
                json!({"url": "https://example.com/hook", "events": ["*"]})
            )
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_until_a_2xx() {
    let config = codmir_server::Config {
        retry_schedule: RetrySchedule::parse("300ms,600ms").unwrap(),
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let rx = Receiver::start().await;
    rx.script([Reply::Status(500), Reply::Status(500), Reply::Status(200)]);
    let wh = app
        .register(json!({"url": rx.url, "events": ["project.created"]}))
        .await;
    app.project("P").await;
    let list = deliveries(&app, wh["id"].as_str().unwrap()).await;
    let id = list[0]["id"].as_str().unwrap();
    let d = wait_status(&app, id, "succeeded").await;
    assert_eq!(d["attempt_count"], 3);
    let codes: Vec<&Value> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)]);
    assert_eq!(d["attempts"][0]["response_body"], "answered 500");
    assert_eq!(d["attempts"][0]["attempt"], 1);

    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    let attempts: Vec<&str> = hits.iter().map(|h| h.header("x-codmir-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let ids: Vec<&str> = hits.iter().map(|h| h.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "webhook-id is stable across retries"
    );
    assert!(
        hits.iter().all(|h| h.body == hits[0].body),
        "every attempt sends the same bytes"
    );
    // Gaps follow the schedule within its ±20% jitter (plus a little for the work around it).
    for (i, base) in [(1, 300.0), (2, 600.0)] {
        let gap = (hits[i].at - hits[i - 1].at).as_secs_f64() * 1000.0;
        assert!(
            gap >= base * 0.8 - 5.0 && gap <= base * 1.2 + 250.0,
            "gap {i}: {gap:.0} ms for {base} ms"
        );
    }
}

#[tokio::test]
async fn a_receiver_that_never_succeeds_ends_failed_with_every_attempt_logged() {
    let app = spawn_app().await; // schedule 100ms,200ms
    let rx = Receiver::start().await;
    rx.always(Reply::Status(503));
    let wh = app.register(json!({"url": rx.url, "events": ["*"]})).await;
    app.project("P").await;
    let id = first_delivery(&app, wh["id"].as_str().unwrap()).await;
    let d = wait_status(&app, &id, "failed").await;
    assert_eq!(d["attempt_count"], 3, "one attempt and two retries");
    assert_eq!(d["next_attempt_at"], Value::Null);
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a["status_code"] == 503 && a["duration_ms"].is_u64())
    );
    // `failed` is final and each attempt reached the receiver before it was recorded.
    assert_eq!(rx.count(), 3, "nothing after the last retry");

    // Connection errors are failures too, logged with their cause.
    let dead = app
        .register(
            json!({"url": "http://127.0.0.1:9/nothing-listens", "events": ["project.created"]}),
        )
        .await;
    app.project("Q").await;
    let id = first_delivery(&app, dead["id"].as_str().unwrap()).await;
    let d = wait_status(&app, &id, "failed").await;
    assert_eq!(d["attempts"][0]["status_code"], Value::Null);
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connection"),
        "{d}"
    );
}

#[tokio::test]
async fn redirects_are_failures_and_retry_after_is_honoured() {
    let app = spawn_app().await; // schedule 100ms,200ms
    let rx = Receiver::start().await;
    rx.script([
        Reply::Status(302),
        Reply::RetryAfter(429, 1),
        Reply::Status(204),
    ]);
    let wh = app
        .register(json!({"url": rx.url, "events": ["project.created"]}))
        .await;
    app.project("P").await;
    let id = first_delivery(&app, wh["id"].as_str().unwrap()).await;
    let d = wait_status(&app, &id, "succeeded").await;
    let codes: Vec<&Value> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(302), &json!(429), &json!(204)]);
    let hits = rx.hits();
    let gap = hits[2].at - hits[1].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 asked for a second, waited {gap:?}"
    );
}

#[tokio::test]
async fn filters_by_type_and_project_and_only_later_events() {
    let app = spawn_app().await;
    let p1 = app.project("One").await; // before any webhook: not delivered
    let p2 = app.project("Two").await;
    let rx = Receiver::start().await;
    let wh = app
        .register(json!({"url": rx.url, "events": ["ticket.*"], "project_ids": [p1]}))
        .await;
    app.ticket(&p2, json!({"title": "other project"})).await;
    let t = app.ticket(&p1, json!({"title": "mine"})).await;
    app.post(
        &format!("/v1/tickets/{}/comments", t["id"].as_str().unwrap()),
        json!({"body": "c"}),
    )
    .await;
    app.delete(&format!("/v1/tickets/{}", t["id"].as_str().unwrap()))
        .await;
    eventually(WAIT, "two deliveries", || async { rx.count() >= 2 }).await;
    wait_settled(&app, wh["id"].as_str().unwrap()).await;
    let types: Vec<String> = rx
        .hits()
        .iter()
        .map(|h| h.header("x-codmir-event").to_owned())
        .collect();
    assert_eq!(types, ["ticket.created", "ticket.deleted"]);
    assert!(
        rx.hits()
            .iter()
            .all(|h| h.json()["data"]["project"]["id"] == p1.as_str())
    );
}

#[tokio::test]
async fn deleting_or_disabling_a_webhook_cancels_its_pending_deliveries() {
    let config = codmir_server::Config {
        retry_schedule: RetrySchedule::parse("400ms,400ms,400ms").unwrap(),
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let rx_del = Receiver::start().await;
    let rx_off = Receiver::start().await;
    rx_del.always(Reply::Status(500));
    rx_off.always(Reply::Status(500));
    let del = app
        .register(json!({"url": rx_del.url, "events": ["project.created"]}))
        .await;
    let off = app
        .register(json!({"url": rx_off.url, "events": ["project.created"]}))
        .await;
    let (del, off) = (
        del["id"].as_str().unwrap().to_owned(),
        off["id"].as_str().unwrap().to_owned(),
    );
    app.project("P").await;
    eventually(WAIT, "first attempts", || async {
        rx_del.count() == 1 && rx_off.count() == 1
    })
    .await;
    let off_delivery = first_delivery(&app, &off).await;
    let del_delivery = first_delivery(&app, &del).await;

    assert_eq!(app.delete(&format!("/v1/webhooks/{del}")).await.status, 204);
    let r = app
        .patch(&format!("/v1/webhooks/{off}"), json!({"enabled": false}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["enabled"], false);
    let off_cancelled = wait_status(&app, &off_delivery, "cancelled").await;
    let del_cancelled = wait_status(&app, &del_delivery, "cancelled").await;
    // Nothing is due any more: no claim can pick them up again.
    assert_eq!(off_cancelled["next_attempt_at"], Value::Null);
    assert_eq!(del_cancelled["next_attempt_at"], Value::Null);
    assert_eq!(off_cancelled["cancel_reason"], "the webhook was disabled");
    assert_eq!(del_cancelled["cancel_reason"], "the webhook was deleted");
    assert_eq!(app.get(&format!("/v1/webhooks/{del}")).await.status, 404);

    // No more attempts, and new events are not delivered to the disabled webhook.
    app.project("Q").await;
    assert_eq!(rx_del.count(), 1);
    assert_eq!(rx_off.count(), 1);
    assert_eq!(deliveries(&app, &off).await.len(), 1);

    // Enabled again, it receives new events.
    rx_off.always(Reply::Status(200));
    app.patch(&format!("/v1/webhooks/{off}"), json!({"enabled": true}))
        .await;
    app.project("R").await;
    eventually(WAIT, "delivered after re-enabling", || async {
        rx_off.count() == 2
    })
    .await;
}

/// Deliveries the engine holds queued (behind one in flight, the webhook's whole share) are
/// dropped when their webhook is deleted or disabled: the commit's after-commit value tells
/// the engine, and none of them is sent.
#[tokio::test]
async fn deleting_or_disabling_a_webhook_drops_what_the_engine_holds_queued_for_it() {
    let config = codmir_server::Config {
        max_in_flight_per_endpoint: 1,
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let (rx_del, rx_off, rx_ctl) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    rx_del.script([Reply::Delay(500, 200)]);
    rx_off.script([Reply::Delay(500, 200)]);
    // The control webhook's first answer comes last: once its queue has drained, the other
    // two would have sent theirs too.
    rx_ctl.script([Reply::Delay(800, 200)]);
    let mut ids = Vec::new();
    for rx in [&rx_del, &rx_off, &rx_ctl] {
        let w = app
            .register(json!({"url": rx.url, "events": ["project.created"]}))
            .await;
        ids.push(w["id"].as_str().unwrap().to_owned());
    }
    for i in 0..5 {
        app.project(&format!("P{i}")).await;
    }
    eventually(WAIT, "one attempt in flight to each webhook", || async {
        rx_del.count() == 1 && rx_off.count() == 1 && rx_ctl.count() == 1
    })
    .await;
    // Four deliveries of each webhook are queued in the engine behind the one in flight.
    assert_eq!(
        app.delete(&format!("/v1/webhooks/{}", ids[0])).await.status,
        204
    );
    let r = app
        .patch(
            &format!("/v1/webhooks/{}", ids[1]),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, 200);
    eventually(WAIT, "the control webhook's five deliveries", || async {
        rx_ctl.count() == 5
    })
    .await;
    assert_eq!(
        rx_del.count(),
        1,
        "nothing queued for the deleted webhook was sent"
    );
    assert_eq!(
        rx_off.count(),
        1,
        "nothing queued for the disabled webhook was sent"
    );
    let off = deliveries(&app, &ids[1]).await;
    assert_eq!(off.len(), 5);
    assert!(off.iter().all(|d| d["status"] == "cancelled"), "{off:?}");
}

/// Webhook writes are API work like every other mutation (the engine's claimed work yields to
/// them while the API is busy); reads are not.
#[tokio::test]
async fn webhook_writes_are_counted_as_api_work() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let before = app.engine.api_mutations();
    let w = app.register(json!({"url": rx.url, "events": ["*"]})).await;
    let id = w["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/webhooks/{id}")).await.status, 200);
    let r = app
        .patch(&format!("/v1/webhooks/{id}"), json!({"description": "d"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.delete(&format!("/v1/webhooks/{id}")).await.status, 204);
    assert_eq!(
        app.engine.api_mutations() - before,
        3,
        "create, update and delete counted; the read not"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_slow_a_healthy_one() {
    let app = spawn_app_with(codmir_server::Config {
        // The hanging attempts outlast the test.
        request_timeout: Duration::from_secs(300),
        ..test_config()
    })
    .await;
    let hanging = Receiver::start().await;
    hanging.always(Reply::Hang);
    let healthy = Receiver::start().await;
    let hung = app
        .register(json!({"url": hanging.url, "events": ["ticket.created"]}))
        .await;
    app.register(json!({"url": healthy.url, "events": ["ticket.created"]}))
        .await;
    let project = app.project("P").await;
    for i in 0..100 {
        app.ticket(&project, json!({"title": format!("t{i}")}))
            .await;
        eventually(WAIT, "healthy delivery", || async { healthy.count() > i }).await;
    }
    // While every event reached the healthy endpoint, not one attempt at the hanging one
    // ended: the healthy deliveries never waited for a hanging one.
    assert!(hanging.count() >= 1);
    let hung_log = deliveries(&app, hung["id"].as_str().unwrap()).await;
    assert_eq!(hung_log.len(), 100);
    assert!(hung_log.iter().all(|d| d["attempt_count"] == 0));
}

#[tokio::test]
async fn webhooks_of_another_workspace_are_404() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let wh = app.register(json!({"url": rx.url, "events": ["*"]})).await;
    let id = wh["id"].as_str().unwrap();
    app.project("P").await;
    eventually(WAIT, "delivered", || async { rx.count() == 1 }).await;
    let dlv = first_delivery(&app, id).await;
    let other = crate::helpers::new_key(&app.store, "other", "eve").await;
    let k = Some(other.as_str());
    for (method, path, body) in [
        ("GET", format!("/v1/webhooks/{id}"), None),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            Some(json!({"enabled": false})),
        ),
        ("DELETE", format!("/v1/webhooks/{id}"), None),
        ("GET", format!("/v1/webhooks/{id}/deliveries"), None),
        ("GET", format!("/v1/deliveries/{dlv}"), None),
    ] {
        assert_eq!(
            app.request(method, &path, k, body).await.status,
            404,
            "{method} {path}"
        );
    }
    assert!(
        app.request("GET", "/v1/webhooks", k, None).await.body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Another workspace's events are not delivered to this webhook.
    app.request("POST", "/v1/projects", k, Some(json!({"name": "theirs"})))
        .await;
    // Its delivery would have been created in the event's commit: there is none.
    assert_eq!(deliveries(&app, id).await.len(), 1);
    assert_eq!(rx.count(), 1);
}

#[tokio::test]
async fn graceful_shutdown_waits_for_attempts_in_flight() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    rx.always(Reply::Delay(700, 200));
    app.register(json!({"url": rx.url, "events": ["project.created"]}))
        .await;
    app.project("P").await;
    eventually(WAIT, "the attempt is in flight", || async {
        rx.count() == 1
    })
    .await;
    let stopped = app.stop().await;
    // The attempt finished and was recorded before the server stopped.
    let store = codmir_server::Store::open(&stopped.db_url).await.unwrap();
    let pending = store
        .read(|tx| {
            Box::pin(async move {
                tx.next_due_at(codmir_core::time::Timestamp::from_millis(i64::MAX / 2), &[])
                    .await
            })
        })
        .await
        .unwrap();
    assert_eq!(
        pending, None,
        "nothing left pending: the in-flight attempt was recorded"
    );
    store.close().await;
}

/// Regression: with more due work in the database than one webhook's share, the engine used
/// to wait for its one-second poll after each batch instead of claiming again as the webhook
/// drained.
#[tokio::test]
async fn a_backlog_larger_than_the_bounds_drains_without_waiting_for_the_poll() {
    let config = codmir_server::Config {
        max_in_flight: 4,
        max_in_flight_per_endpoint: 2,
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let rx = Receiver::start().await;
    app.register(json!({"url": rx.url, "events": ["project.created"]}))
        .await;
    // Deliveries written without a lease for this node: only claims can pick them up.
    let key = app.key.clone();
    app.store
        .write(move |tx| {
            Box::pin(async move {
                let p = codmir_server::ops::authenticate(tx, &key).await?.unwrap();
                for i in 0..300 {
                    let name = codmir_core::tracker::ProjectName::parse(&format!("p{i}")).unwrap();
                    let mut intake = codmir_server::ops::AfterCommit::default();
                    codmir_server::ops::create_project(
                        tx,
                        &p,
                        name,
                        codmir_core::time::Timestamp::now(),
                        &mut intake,
                    )
                    .await?;
                }
                Ok::<_, codmir_server::ops::Error>(())
            })
        })
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    eventually(Duration::from_secs(20), "300 deliveries", || async {
        rx.count() >= 300
    })
    .await;
    // 300 deliveries, at most 2 at a time: milliseconds each, not a second per claim.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}
