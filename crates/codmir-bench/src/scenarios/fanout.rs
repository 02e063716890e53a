//! `fanout`: one event to 1,000 webhooks, then a steady rate to 100 of them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::harness::Bench;
use crate::load::{self};
use crate::report::{Row, round3, usage_into};
use crate::server::{Server, Usage};

pub(crate) async fn fanout(b: &Bench) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let ceilings = b.ceilings(20_000).await?;
    let db = b.database().await?;
    let (servers, api) = b.servers(&db, &[]).await?;
    let project = api.project().await?;
    let mut hooks = Vec::new();
    for i in 0..1000 {
        hooks.push(api.webhook(&b.receiver, i).await?);
    }
    // One event to 1,000 webhooks: time until the last one has it.
    b.stats.reset();
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    let sent = load::tickets(&api, &project, 0..1, 1, None, &b.stats).await;
    let delivered = b.wait_delivered(1000 * sent.accepted).await;
    let all_in = Duration::from_nanos(b.stats.last_arrival.load(Ordering::Relaxed))
        - Duration::from_nanos(b.stats.sent[0].load(Ordering::Relaxed).saturating_sub(1));
    let mut row = Row {
        scenario: "fanout 1×1000".into(),
        deliveries_per_s: delivered as f64 / all_in.as_secs_f64().max(1e-9),
        ceiling_per_s: ceilings.best(),
        reqwest_ceiling_per_s: ceilings.reqwest,
        expected: 1000,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: format!(
            "all 1,000 delivered {:.1} ms after the request",
            all_in.as_secs_f64() * 1000.0
        ),
        extra: json!({"all_delivered_ms": round3(all_in.as_secs_f64() * 1000.0)}),
        ..Row::default()
    };
    b.latency_into(&mut row);
    usage_into(&mut row, &servers, &before, began.elapsed());
    rows.push(row);
    // 100 events/s to 100 webhooks for 10 s: disable the other 900 first.
    for id in &hooks[100..] {
        api.client
            .patch(format!("{}/v1/webhooks/{id}", api.base))
            .bearer_auth(&api.key)
            .json(&json!({"enabled": false}))
            .send()
            .await?;
    }
    b.stats.reset();
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    let sent = load::tickets(&api, &project, 0..1000, 64, Some(100.0), &b.stats).await;
    let delivered = b.wait_delivered(100 * sent.accepted).await;
    let mut row = Row {
        scenario: "fanout 100/s×100".into(),
        events_per_s: sent.rate(),
        deliveries_per_s: delivered as f64 / began.elapsed().as_secs_f64(),
        ceiling_per_s: ceilings.best(),
        reqwest_ceiling_per_s: ceilings.reqwest,
        expected: 100 * sent.accepted,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: "100 events/s for 10 s to 100 webhooks".into(),
        ..Row::default()
    };
    b.latency_into(&mut row);
    usage_into(&mut row, &servers, &before, began.elapsed());
    rows.push(row);
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(rows)
}
