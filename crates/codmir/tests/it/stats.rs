//! `GET /v1/webhooks/{id}/stats`: the figures agree with what a real receiver saw.

use std::time::Duration;

use codmir_core::retry::RetrySchedule;
use serde_json::{Value, json};

use crate::helpers::{eventually, id_of, spawn_app, spawn_app_with, test_config};
use crate::receiver::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn stats_count_what_the_receiver_saw_with_latency_and_a_full_series() {
    // One attempt per delivery, so each reply of the receiver decides one delivery's outcome.
    let app = spawn_app_with(codmir_server::Config {
        retry_schedule: RetrySchedule::none(),
        ..test_config()
    })
    .await;
    let rx = Receiver::start().await;
    rx.script([Reply::Status(500), Reply::Status(503)]);
    let r = app
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["project.created"]}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let stats = |q: &str| {
        let path = format!("/v1/webhooks/{id}/stats{q}");
        let app = &app;
        async move { app.get(&path).await }
    };
    let empty = stats("").await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.body["deliveries"]["total"], 0);
    assert_eq!(empty.body["success_rate"], Value::Null);
    assert_eq!(empty.body["latency_ms"], Value::Null);

    for i in 0..7 {
        app.project(&format!("P{i}")).await;
    }
    eventually(WAIT, "all seven settled", || async {
        let s = stats("").await;
        s.body["deliveries"]["pending"] == 0 && s.body["deliveries"]["total"] == 7
    })
    .await;
    let hits = rx.count();
    assert_eq!(hits, 7, "one attempt each");
    let s = stats("?window=1h").await.body;
    assert_eq!(s["webhook_id"], id.as_str());
    assert_eq!(s["window"], "1h");
    assert_eq!(s["bucket_seconds"], 60);
    let d = &s["deliveries"];
    assert_eq!(d["failed"], 2, "the receiver refused two: {s}");
    assert_eq!(d["succeeded"], (hits - 2) as u64);
    assert_eq!(d["cancelled"], 0);
    let rate = s["success_rate"].as_f64().unwrap();
    assert!((rate - 5.0 / 7.0).abs() < 1e-9, "{rate}");
    let l = &s["latency_ms"];
    let (p50, p90, p99) = (
        l["p50"].as_i64().unwrap(),
        l["p90"].as_i64().unwrap(),
        l["p99"].as_i64().unwrap(),
    );
    assert!(0 <= p50 && p50 <= p90 && p90 <= p99, "{l}");

    // Every minute of the hour is there, oldest first, and they add up to the totals.
    let series = s["series"].as_array().unwrap();
    assert!((60..=61).contains(&series.len()), "{}", series.len());
    let starts: Vec<&str> = series
        .iter()
        .map(|b| b["start"].as_str().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    let sum = |k: &str| series.iter().map(|b| b[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("succeeded"), sum("failed"), sum("pending")), (5, 2, 0));
    let last = series.last().unwrap();
    assert!(
        last["succeeded"].as_u64().unwrap() + last["failed"].as_u64().unwrap() > 0
            || series[series.len() - 2]["succeeded"].as_u64().unwrap() > 0,
        "the deliveries are in the last minute or the one before: {last}"
    );

    let week = stats("?window=7d").await.body;
    assert_eq!(week["bucket_seconds"], 3600);
    assert!((168..=169).contains(&week["series"].as_array().unwrap().len()));
    assert_eq!(week["deliveries"]["total"], 7);
    let day = stats("?window=24h").await.body;
    assert!((1440..=1441).contains(&day["series"].as_array().unwrap().len()));

    // Bad input is a clear 4xx.
    let bad = stats("?window=2h").await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("1h, 24h, 7d"), "{}", bad.text);
    assert_eq!(stats("?windw=1h").await.status, 422);
    let missing = app
        .get("/v1/webhooks/wh_01m8mfwv1zhaevqnr82bqc78pm/stats")
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);
}

/// A test ping is a test, not a delivery of record: a failed one is not in the success rate or
/// the delivery counts (it is counted apart), a replay never sends it again, and a webhook
/// cannot subscribe to `webhook.ping` (the catalog says so).
#[tokio::test]
async fn pings_are_tests_counted_apart_never_replayed_and_not_subscribable() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    rx.script([Reply::Status(500)]);
    let since = codmir_core::time::Timestamp::now().to_rfc3339_millis();
    let wid = id_of(
        &app.register(json!({"url": rx.url, "events": ["project.created"]}))
            .await,
    );
    let ping = app
        .post(&format!("/v1/webhooks/{wid}/ping"), json!({}))
        .await;
    assert_eq!(ping.body["status_code"], 500, "{}", ping.text);
    app.project("P").await;
    eventually(WAIT, "the project delivered", || async { rx.count() == 2 }).await;
    let path = format!("/v1/webhooks/{wid}/stats");
    eventually(WAIT, "the delivery settled", || async {
        app.get(&path).await.body["deliveries"]["succeeded"] == 1
    })
    .await;
    let s = app.get(&path).await.body;
    assert_eq!(s["deliveries"]["total"], 1, "{s}");
    assert_eq!(s["deliveries"]["failed"], 0, "{s}");
    assert_eq!(s["success_rate"], 1.0, "{s}");
    assert_eq!(
        (s["pings"]["total"].clone(), s["pings"]["failed"].clone()),
        (json!(1), json!(1)),
        "{s}"
    );

    // Replays: the failed ping is not among the failed events, nor among every event.
    let replay = format!("/v1/webhooks/{wid}/replay");
    let failed = app.post(&replay, json!({"since": since})).await;
    assert_eq!(failed.body["queued"], 0, "{}", failed.text);
    let any = app
        .post(&replay, json!({"since": since, "status": "any"}))
        .await;
    assert_eq!(any.body["queued"], 1, "the project only: {}", any.text);

    let refused = app
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["webhook.ping"]}),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.body["error"]["field"], "events");
    assert!(
        refused.text.contains("cannot be subscribed"),
        "{}",
        refused.text
    );
    let family = app
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["webhook.*"]}),
        )
        .await;
    assert_eq!(family.status, 201, "{}", family.text);
    let catalog = app.list("/v1/event-types").await;
    for t in &catalog {
        let ping = t["name"] == "webhook.ping";
        assert_eq!(t["subscribable"], !ping, "{t}");
    }
}

/// The outage view in one request: of three webhooks (one failing, one healthy, one disabled
/// by hand) `?failing=true` pages over all three and lists the failing one alone, with its
/// retrying deliveries and their next attempts; the figures count them `retrying`.
#[tokio::test]
async fn the_health_view_lists_what_is_failing_now_with_its_retrying_deliveries() {
    let app = spawn_app_with(codmir_server::Config {
        retry_schedule: RetrySchedule::parse("1h").unwrap(),
        ..test_config()
    })
    .await;
    let (down, up) = (Receiver::start().await, Receiver::start().await);
    down.always(Reply::Status(500));
    let register = |url: String| {
        let app = &app;
        async move {
            let body = json!({"url": url, "events": ["project.created"]});
            id_of(&app.post("/v1/webhooks", body).await.body)
        }
    };
    let failing = register(down.url.clone()).await;
    let healthy = register(up.url.clone()).await;
    let off = register(up.url.clone()).await;
    let r = app
        .patch(&format!("/v1/webhooks/{off}"), json!({"enabled": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for i in 0..7 {
        app.project(&format!("P{i}")).await;
    }
    eventually(WAIT, "seven attempts each", || async {
        down.count() == 7 && up.count() == 7
    })
    .await;
    eventually(WAIT, "the failures recorded", || async {
        let all = app.get("/v1/webhooks/health").await.body;
        all["data"].as_array().unwrap().iter().any(|h| {
            h["webhook"]["id"] == failing.as_str() && h["stats"]["deliveries"]["retrying"] == 7
        })
    })
    .await;

    let all = app.get("/v1/webhooks/health?window=1h").await;
    assert_eq!(all.status, 200, "{}", all.text);
    let all = all.body["data"].as_array().unwrap().clone();
    assert_eq!(all.len(), 3);
    let of = |id: &str| {
        all.iter()
            .find(|h| h["webhook"]["id"] == id)
            .unwrap()
            .clone()
    };
    let (f, h, o) = (of(&failing), of(&healthy), of(&off));
    assert_eq!(
        (&f["failing"], &h["failing"], &o["failing"]),
        (&json!(true), &json!(false), &json!(false))
    );
    assert_eq!(f["stats"]["deliveries"]["pending"], 7);
    assert_eq!(f["stats"]["success_rate"], Value::Null, "nothing settled");
    assert_eq!(h["stats"]["deliveries"]["succeeded"], 7);
    assert_eq!(h["stats"]["success_rate"], 1.0);
    let retrying = f["retrying"].as_array().unwrap();
    assert_eq!((retrying.len(), &f["more_retrying"]), (5, &json!(true)));
    for d in retrying {
        assert_eq!(d["status"], "retrying");
        assert!(d["next_attempt_at"].is_string(), "{d}");
    }
    assert_eq!(f["last_delivery"]["status"], "retrying");
    assert_eq!(h["retrying"], json!([]));
    assert_eq!(o["last_delivery"], Value::Null, "disabled before any event");

    // One webhook a page, failing only: every page followed, the failing one alone found.
    let (mut found, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let q = match &cursor {
            Some(c) => format!("?failing=true&limit=1&cursor={c}"),
            None => "?failing=true&limit=1".to_owned(),
        };
        let page = app.get(&format!("/v1/webhooks/health{q}")).await.body;
        pages += 1;
        for h in page["data"].as_array().unwrap() {
            found.push(h["webhook"]["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!((found, pages), (vec![failing], 3));
    for bad in ["?window=2d", "?limit=0", "?failing=maybe", "?cursor=nope"] {
        let r = app.get(&format!("/v1/webhooks/health{bad}")).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
    }
}
