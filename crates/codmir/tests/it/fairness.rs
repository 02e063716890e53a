//! Tenants that cannot starve each other: however many workspaces have hung endpoints, each
//! holds at most its share of the in-flight slots and the reserve stays free for another; one
//! workspace sends at most its bound to one host across its webhooks, and has at most so many
//! webhooks.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, new_key, spawn_app_with, test_config};
use crate::receiver::{Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_attacker_workspaces_on_the_victims_host_do_not_delay_the_victim() {
    attackers_hold_their_shares_and_the_victim_is_served(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_attacker_workspaces_on_the_victims_host_do_not_delay_the_victim() {
    attackers_hold_their_shares_and_the_victim_is_served(5).await;
}

/// `attackers` workspaces, each with ten webhooks on a port of the victim's host that never
/// answers and far more deliveries than slots, fill their shares; the victim's deliveries
/// then start in the reserve while every attacker attempt still hangs.
async fn attackers_hold_their_shares_and_the_victim_is_served(attackers: usize) {
    let app = spawn_app_with(codmir_server::Config {
        max_in_flight: 64,
        max_in_flight_per_endpoint: 16,
        // The hung attempts outlast the test.
        request_timeout: Duration::from_secs(300),
        ..test_config()
    })
    .await;
    let hung = Receiver::start().await;
    hung.always(Reply::Hang);
    for a in 0..attackers {
        let key = new_key(&app.store, &format!("attacker{a}"), "mallory").await;
        for _ in 0..10 {
            let r = app
                .request(
                    "POST",
                    "/v1/webhooks",
                    Some(&key),
                    Some(json!({"url": hung.url, "events": ["project.created"]})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
        for i in 0..20 {
            let r = app
                .request(
                    "POST",
                    "/v1/projects",
                    Some(&key),
                    Some(json!({"name": format!("A{i}")})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
    }
    // 64 slots less a reserve of 8 are shared. The attackers come one after another, so the
    // first may hold all 56 before the others come; each later one may then take one slot
    // of the reserve (a workspace holding fewer than 8 / 8), no more.
    eventually(
        Duration::from_secs(10),
        "the attackers at their shares",
        || async { hung.count() >= 56 - 56 % attackers },
    )
    .await;
    let at_share = hung.count();

    // The victim's receiver is on the same host (127.0.0.1), another port.
    let victim = Receiver::start().await;
    app.register(json!({"url": victim.url, "events": ["project.created"]}))
        .await;
    for i in 0..50 {
        app.project(&format!("V{i}")).await;
    }
    eventually(
        Duration::from_secs(20),
        "all 50 of the victim's delivered",
        || async { victim.count() == 50 },
    )
    .await;
    // Not one attacker attempt has ended (they hang for the whole request timeout, longer
    // than this test), and beside the victim's 50 they never held more than their shares.
    let held = hung.count();
    assert!(
        held >= at_share && held < 56 + attackers,
        "the attackers hold {held}: their shares and a slot of the reserve each at most"
    );
    let victim_log = app.list("/v1/deliveries?limit=100").await;
    assert_eq!(victim_log.len(), 50);
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
    // A hung attempt holds its slot for a second (then it is overdue, and another may start
    // in the overdue allowance, as many again as the bound) and the allowance's until it
    // times out (3 s). Unbounded, all 300 would arrive at once. So once a third wave has
    // arrived, the first second holds at most 20 arrivals, and no 2.5 s stretch more than 40.
    eventually(
        Duration::from_secs(15),
        "a third wave after the timeouts",
        || async { host.count() >= 60 },
    )
    .await;
    let arrivals: Vec<_> = host.hits().iter().map(|h| h.at).collect();
    let first = arrivals[0];
    let early = arrivals
        .iter()
        .filter(|a| a.duration_since(first) < Duration::from_millis(900))
        .count();
    assert_eq!(early, 20, "the bound before any attempt is overdue");
    for (i, at) in arrivals.iter().enumerate() {
        let together = arrivals[..=i]
            .iter()
            .filter(|a| at.duration_since(**a) < Duration::from_millis(2500))
            .count();
        assert!(together <= 40, "{together} in flight to one host at once");
    }
}
