//! The queues and their bounds, without a runtime.

use std::sync::Arc;
use std::time::Duration;

use codmir_core::event::EventType;
use codmir_core::webhook::{Delivery, EndpointUrl, EventFilter, Webhook, WebhookSecret};

use super::*;

fn queued(webhook: &str, n: u32) -> Leased {
    let now = Timestamp::from_millis(1_000_000);
    Leased {
        delivery: Delivery {
            id: format!("dlv_{webhook}_{n}"),
            ..Delivery::new(
                "ws",
                webhook,
                &format!("evt_{n}"),
                EventType::TicketCreated,
                now,
            )
        },
        webhook: Arc::new(Webhook::new(
            webhook.into(),
            "ws".into(),
            EndpointUrl::from_stored("https://example.com/hook".into()),
            EventFilter::parse(&["*"]).expect("valid filter"),
            WebhookSecret::parse("s3cret-s3cret-s3cret").expect("valid secret"),
            now,
        )),
        payload: Arc::from("{}"),
        lease_until: now.plus(Duration::from_secs(60)),
    }
}

fn bounds(claimed: usize) -> Bounds {
    Bounds {
        shares: Shares {
            total: 10,
            per_workspace: None,
            per_endpoint: 4,
            per_destination: 10,
        },
        claimed,
        lease_deadline: Timestamp::from_millis(1_000_000),
        now: t0(),
    }
}

/// The instant the tests' attempts start at, unless a test moves on from it.
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn ids(ready: &[(Leased, bool)]) -> Vec<String> {
    ready.iter().map(|(c, _)| c.delivery.id.clone()).collect()
}

#[test]
fn fresh_deliveries_start_before_claimed_ones_of_the_same_webhook() {
    let mut local = Local::default();
    for n in 0..3 {
        local.push(Lane::Claimed, queued("a", n));
    }
    local.push(Lane::Fresh, queued("a", 9));
    let ready = local.take_ready(&bounds(10));
    // Four at most for the webhook: the fresh one first, then three claimed.
    assert_eq!(ids(&ready), ["dlv_a_9", "dlv_a_0", "dlv_a_1", "dlv_a_2"]);
    assert_eq!(
        ready
            .iter()
            .map(|(_, claimed)| *claimed)
            .collect::<Vec<_>>(),
        [false, true, true, true]
    );
    assert_eq!((local.queued, local.total_in_flight()), (0, 4));
}

#[test]
fn claimed_work_is_held_to_its_budget_while_fresh_work_is_not() {
    let mut local = Local::default();
    for n in 0..5 {
        local.push(Lane::Claimed, queued("a", n));
        local.push(Lane::Fresh, queued("b", n));
    }
    let ready = local.take_ready(&bounds(1));
    let claimed = ready.iter().filter(|(_, c)| *c).count();
    assert_eq!(claimed, 1, "one claimed attempt for a budget of one");
    assert_eq!(
        ready.len() - claimed,
        4,
        "fresh work up to the webhook's share"
    );
    assert_eq!(local.queued, 5);
    // With the budget spent, claimed work waits; fresh work waits only for its webhook.
    assert!(local.take_ready(&bounds(0)).is_empty());
    local.finished(Ok(("b".into(), false, t0())), 4, &[]);
    assert_eq!(ids(&local.take_ready(&bounds(0))), ["dlv_b_4"]);
    assert_eq!(ids(&local.take_ready(&bounds(2))), ["dlv_a_1", "dlv_a_2"]);
}

/// A delivery of `webhook` in workspace `ws` to `url`.
fn of(ws: &str, webhook: &str, n: u32, url: &str) -> Leased {
    let mut c = queued(webhook, n);
    let hook = Arc::make_mut(&mut c.webhook);
    hook.workspace_id = ws.into();
    hook.url = EndpointUrl::from_stored(url.into());
    c
}

fn per_workspace(ready: &[(Leased, bool)]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for (c, _) in ready {
        *n.entry(c.webhook.workspace_id.clone()).or_insert(0) += 1;
    }
    n
}

fn node(total: usize, per_endpoint: usize, per_destination: usize) -> Bounds {
    Bounds {
        shares: Shares {
            total,
            per_workspace: None,
            per_endpoint,
            per_destination,
        },
        ..bounds(usize::MAX)
    }
}

#[test]
fn attackers_hold_their_shares_and_a_newcomer_starts_in_the_reserve() {
    // 64 slots: a reserve of 8, 56 shared. Attacker workspaces, each with far more
    // queued work than slots, on the victim's host; they come all at once, or one after
    // another (the first then holds all 56 shared slots, over the shares that follow,
    // and each later one takes one of the 8 reserved: 7 leave one for the victim).
    for (attackers, orders) in [(1, 2), (2, 2), (5, 2), (7, 2), (56, 1)] {
        for one_by_one in [false, true].into_iter().take(orders) {
            let mut local = Local::default();
            let bounds = node(64, 64, 64);
            for a in 0..attackers {
                for n in 0..100 {
                    let webhook = format!("a{a}_{}", n % 10);
                    let url = "https://victim.example:9/hang";
                    local.push(Lane::Claimed, of(&format!("ws_a{a}"), &webhook, n, url));
                }
                if one_by_one {
                    local.take_ready(&bounds);
                }
            }
            local.take_ready(&bounds);
            let held = local.total_in_flight();
            assert!(held < 64, "{attackers} attackers hold {held} of 64");
            // The attackers' slots are full: nothing more of theirs starts.
            assert!(local.take_ready(&bounds).is_empty());
            // The victim's delivery, to the same host on another port, starts now.
            local.push(
                Lane::Fresh,
                of("ws_victim", "v", 0, "https://victim.example/in"),
            );
            let ready = local.take_ready(&bounds);
            assert_eq!(ids(&ready), ["dlv_v_0"], "{attackers} attackers");
        }
    }
}

#[test]
fn workspaces_take_turns_least_served_first() {
    let mut local = Local::default();
    for n in 0..30 {
        local.push(Lane::Fresh, of("ws1", "a", n, "https://one.example/"));
        local.push(Lane::Fresh, of("ws2", "b", n, "https://two.example/"));
        local.push(Lane::Fresh, of("ws3", "c", n, "https://three.example/"));
    }
    // 17 slots, a reserve of 2, 15 shared: 5 each, whatever the map's order.
    let ready = local.take_ready(&node(17, 64, 64));
    let by = per_workspace(&ready);
    assert_eq!((by["ws1"], by["ws2"], by["ws3"]), (5, 5, 5));
    // Once ws2 has nothing left, the two others share what it held.
    local.forget("b");
    for _ in 0..5 {
        local.finished(Ok(("b".into(), false, t0())), 64, &[]);
    }
    let ready = local.take_ready(&node(17, 64, 64));
    let by = per_workspace(&ready);
    assert_eq!((by["ws1"], by["ws3"]), (2, 2), "7 each now");
}

#[test]
fn a_destination_is_bounded_per_workspace_and_hanging_work_gets_less() {
    let mut local = Local::default();
    for n in 0..6 {
        local.push(Lane::Fresh, queued(&format!("w{n}"), n));
        local.push(
            Lane::Fresh,
            of("other", &format!("o{n}"), n, "https://example.com/hook"),
        );
    }
    // Two per workspace to example.com: the other tenant's two do not count against ws.
    let ready = local.take_ready(&node(100, 64, 2));
    assert_eq!(
        per_workspace(&ready),
        HashMap::from([("ws".into(), 2), ("other".into(), 2)])
    );
    assert_eq!(
        destination_key("ws", "https://A.example:8443/x?y"),
        "ws a.example:8443"
    );
    assert_eq!(destination_key("ws", "http://[::1]:9/"), "ws [::1]:9");

    // A webhook whose attempts were slow gets one in flight; fast ones bring it back.
    let mut local = Local::default();
    for n in 0..10 {
        local.push(Lane::Fresh, queued("h", n));
    }
    let wide = node(100, 4, 100);
    assert_eq!(local.take_ready(&wide).len(), 4, "the webhook's bound");
    for _ in 0..4 {
        local.finished(Ok(("h".into(), true, t0())), 64, &[]);
    }
    assert_eq!(local.take_ready(&wide).len(), 1, "hanging: one at a time");
    local.finished(Ok(("h".into(), false, t0())), 64, &[]);
    assert_eq!(
        local.take_ready(&wide).len(),
        1,
        "still hanging after one fast"
    );
    local.finished(Ok(("h".into(), false, t0())), 64, &[]);
    assert_eq!(local.take_ready(&wide).len(), 4, "recovered after two fast");
}

#[test]
fn a_delivery_whose_lease_runs_out_is_left_for_a_claim() {
    let mut local = Local::default();
    let mut late = queued("a", 0);
    late.lease_until = Timestamp::from_millis(999_999);
    local.push(Lane::Fresh, late);
    local.push(Lane::Fresh, queued("a", 1));
    assert_eq!(ids(&local.take_ready(&bounds(10))), ["dlv_a_1"]);
    assert_eq!((local.queued, local.total_in_flight()), (0, 1));
}

#[test]
fn overdue_attempts_make_room_at_their_destination_up_to_the_bound_again() {
    let mut local = Local::default();
    for n in 0..10 {
        local.push(Lane::Fresh, queued(&format!("w{n}"), n));
    }
    let at = |after_ms: u64| Bounds {
        now: t0() + Duration::from_millis(after_ms),
        ..node(100, 64, 2)
    };
    assert_eq!(local.take_ready(&at(0)).len(), 2, "the destination's bound");
    assert!(local.take_ready(&at(500)).is_empty(), "none overdue yet");
    assert_eq!(
        local.next_look,
        Some(t0() + OVERDUE_AFTER),
        "looked at again when the first turns overdue"
    );
    // A second on, both are overdue: two more may start, for the quick answers.
    assert_eq!(local.take_ready(&at(1000)).len(), 2);
    // Two more seconds on, all four are overdue, but only two count as such: the bound again.
    assert!(
        local.take_ready(&at(3000)).is_empty(),
        "twice the bound at most"
    );
    assert_eq!(local.next_look, None, "nothing to look at before one ends");
    // One of the first two ends: room for one.
    local.finished(Ok(("w0".into(), true, t0())), 64, &[]);
    assert_eq!(local.take_ready(&at(3000)).len(), 1);
    assert_eq!(local.total_in_flight(), 4);
}

#[test]
fn a_hanging_endpoint_starts_one_more_each_time_its_last_turns_overdue_within_its_cap() {
    let mut local = Local::default();
    for n in 0..10 {
        local.push(Lane::Fresh, queued("h", n));
    }
    let at = |after_ms: u64| Bounds {
        now: t0() + Duration::from_millis(after_ms),
        ..node(100, 3, 100)
    };
    assert_eq!(local.take_ready(&at(0)).len(), 3, "the webhook's bound");
    for _ in 0..3 {
        local.finished(Ok(("h".into(), true, t0())), 64, &[]);
    }
    // Hanging: one at a time, and one more once it is overdue, not before.
    assert_eq!(local.take_ready(&at(0)).len(), 1);
    assert!(local.take_ready(&at(999)).is_empty());
    assert_eq!(local.next_look, Some(t0() + OVERDUE_AFTER));
    assert_eq!(local.take_ready(&at(1000)).len(), 1);
    assert_eq!(local.take_ready(&at(2000)).len(), 1);
    // Three in flight, all overdue: the bound while not hanging still holds.
    assert!(local.take_ready(&at(5000)).is_empty());
    assert_eq!(local.total_in_flight(), 3);
}
