//! Tenants that cannot starve each other: one workspace's hung endpoints hold at most its
//! share of the in-flight slots, one host gets at most its bound across all webhooks, and a
//! workspace has at most so many webhooks.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, new_key, spawn_app_with, test_config};
use crate::receiver::{Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_of_hung_endpoints_does_not_delay_another_workspace() {
    let app = spawn_app_with(codmir_server::Config {
        max_in_flight: 64,
        max_in_flight_per_workspace: 32,
        max_in_flight_per_endpoint: 16,
        // The hung attempts outlast the test.
        request_timeout: Duration::from_secs(300),
        ..test_config()
    })
    .await;
    let hung = Receiver::start().await;
    hung.always(Reply::Hang);
    for _ in 0..10 {
        let r = app
            .post(
                "/v1/webhooks",
                json!({"url": hung.url, "events": ["project.created"]}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    for i in 0..20 {
        app.project(&format!("A{i}")).await;
    }
    // 200 deliveries want 10 × 16 slots; the workspace holds its 32.
    eventually(
        Duration::from_secs(10),
        "the hung workspace at its share",
        || async { hung.count() >= 32 },
    )
    .await;

    let other = new_key(&app.store, "other", "bob").await;
    let fast = Receiver::start().await;
    let post = |path: &str, body: serde_json::Value| {
        let (c, url, key) = (
            app.client.clone(),
            format!("{}{path}", app.base),
            other.clone(),
        );
        async move {
            let r = c
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let w = post(
        "/v1/webhooks",
        json!({"url": fast.url, "events": ["project.created"]}),
    )
    .await;
    for i in 0..200 {
        post("/v1/projects", json!({"name": format!("B{i}")})).await;
    }
    eventually(
        Duration::from_secs(20),
        "all 200 of the other workspace delivered",
        || async { fast.count() == 200 },
    )
    .await;
    assert!(
        hung.count() <= 32 + 32,
        "the hung workspace stayed near its share"
    );
    let stats_url = format!(
        "{}/v1/webhooks/{}/stats",
        app.base,
        w["id"].as_str().unwrap()
    );
    eventually(
        Duration::from_secs(10),
        "every success recorded",
        || async {
            crate::helpers::get_json(&stats_url, &other).await["deliveries"]["succeeded"] == 200
        },
    )
    .await;
    let stats = crate::helpers::get_json(&stats_url, &other).await;
    println!(
        "the other workspace's 200 deliveries beside 10 hung endpoints: {}",
        stats["latency_ms"]
    );
    // Not one of the hung attempts has ended (they hang for the whole request timeout, longer
    // than this test): the other workspace's 200 went through beside them, never after them.
    let hung_log = app.list("/v1/deliveries?limit=100").await;
    assert!(!hung_log.is_empty());
    assert!(
        hung_log.iter().all(|d| d["attempt_count"] == 0),
        "a hung attempt ended before the other workspace was served"
    );
}

#[tokio::test]
async fn one_host_gets_at_most_its_bound_across_webhooks_and_a_workspace_its_webhooks() {
    let app = spawn_app_with(codmir_server::Config {
        max_in_flight_per_host: 20,
        max_webhooks_per_workspace: 300,
        ..test_config()
    })
    .await;
    let host = Receiver::start().await;
    host.always(Reply::Hang);
    for _ in 0..300 {
        let r = app
            .post(
                "/v1/webhooks",
                json!({"url": host.url, "events": ["project.created"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = app
        .post("/v1/webhooks", json!({"url": host.url, "events": ["*"]}))
        .await;
    assert_eq!(r.status, 422, "the 301st: {}", r.text);
    assert_eq!(r.body["error"]["field"], "webhooks");
    assert!(
        r.text.contains("--max-webhooks-per-workspace"),
        "{}",
        r.text
    );

    app.project("P").await; // one event, 300 deliveries, all to one host
    // A hung attempt holds its slot until it times out (3 s); only then may the next start.
    // Unbounded, all 300 would arrive at once. So once a second wave has arrived, no 2.5 s
    // stretch may hold more than 20 arrivals.
    eventually(
        Duration::from_secs(15),
        "a second wave after the timeouts",
        || async { host.count() >= 40 },
    )
    .await;
    let arrivals: Vec<_> = host.hits().iter().map(|h| h.at).collect();
    for (i, at) in arrivals.iter().enumerate() {
        let together = arrivals[..=i]
            .iter()
            .filter(|a| at.duration_since(**a) < Duration::from_millis(2500))
            .count();
        assert!(together <= 20, "{together} in flight to one host at once");
    }
}
