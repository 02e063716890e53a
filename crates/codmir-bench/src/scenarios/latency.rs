//! `latency`: one webhook at a fixed rate; end-to-end latency beside the round trip of
//! direct POSTs at the same rate.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use crate::harness::{Bench, Setup, tickets_on};
use crate::load::{self, percentile_ms};
use crate::report::{Row, round3, usage_into};
use crate::server::{Server, Usage};

pub(crate) async fn latency(b: &Bench) -> Result<Row> {
    let n = (b.args.rate * b.args.seconds as f64) as u64;
    // The ceiling at the same fixed rate: round trips of direct POSTs.
    let mut ceiling = load::direct(
        &b.client,
        &b.receiver,
        (b.args.rate * 5.0) as u64,
        256,
        Some(b.args.rate),
        &b.stats,
    )
    .await;
    let Setup {
        db,
        servers,
        apis,
        project,
    } = b.one_webhook().await?;
    b.stats.reset();
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    let sent = tickets_on(&apis, &project, 0..n, 256, Some(b.args.rate), &b.stats).await;
    let delivered = b.wait_delivered(sent.accepted).await;
    let mut api_trips = sent.round_trips.clone();
    let mut row = Row {
        scenario: if servers.len() > 1 {
            format!("latency ({} nodes)", servers.len())
        } else {
            "latency".into()
        },
        events_per_s: sent.rate(),
        deliveries_per_s: delivered as f64 / began.elapsed().as_secs_f64(),
        ceiling_per_s: ceiling.rate(),
        expected: sent.accepted,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: format!("{} events/s for {} s", b.args.rate, b.args.seconds),
        extra: json!({
            "direct_round_trip_ms": {"p50": round3(percentile_ms(&mut ceiling.round_trips, 50.0)), "p99": round3(percentile_ms(&mut ceiling.round_trips, 99.0))},
            "api_round_trip_ms": {"p50": round3(percentile_ms(&mut api_trips, 50.0)), "p99": round3(percentile_ms(&mut api_trips, 99.0))},
        }),
        ..Row::default()
    };
    b.latency_into(&mut row);
    usage_into(&mut row, &servers, &before, began.elapsed());
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(row)
}
