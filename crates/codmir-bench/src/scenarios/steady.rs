//! `steady`: one webhook, events as fast as the API takes them, beside both ceilings and
//! the two-hop relay floor.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use crate::harness::{Bench, Setup, tickets_on};
use crate::load::percentile_ms;
use crate::report::{Row, round, round3, usage_into};
use crate::server::{Server, Usage};

pub(crate) async fn steady(b: &Bench) -> Result<Row> {
    let n = b.args.events;
    let ceilings = b.ceilings(n.min(50_000)).await?;
    let floor = b.relay_floor(n.min(50_000)).await?;
    b.stats.reset();
    let Setup {
        db,
        servers,
        apis,
        project,
    } = b.one_webhook().await?;
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let start_ns = b.stats.now_ns();
    let began = Instant::now();
    let sent = tickets_on(&apis, &project, 0..n, b.args.concurrency, None, &b.stats).await;
    let delivered = b.wait_delivered(sent.accepted).await;
    let rate = delivered as f64 / b.span_since(start_ns).as_secs_f64();
    let mut trips = sent.round_trips.clone();
    let (api_p50, api_p99) = (
        percentile_ms(&mut trips, 50.0),
        percentile_ms(&mut trips, 99.0),
    );
    let mut row = Row {
        scenario: if servers.len() > 1 {
            format!("steady ({} nodes)", servers.len())
        } else {
            "steady".into()
        },
        events_per_s: sent.rate(),
        deliveries_per_s: rate,
        ceiling_per_s: ceilings.best(),
        reqwest_ceiling_per_s: ceilings.reqwest,
        expected: sent.accepted,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: format!(
            "{n} events, concurrency {}, API errors {}, API round trip p50 {:.2} ms p99 {:.2} ms; two-hop relay floor {:.0}/s ({:.3} of ceiling), codmir at {:.3} of it",
            b.args.concurrency,
            sent.errors,
            api_p50,
            api_p99,
            floor,
            floor / ceilings.best(),
            rate / floor
        ),
        extra: json!({
            "api_round_trip_ms": {"p50": round3(api_p50), "p99": round3(api_p99)},
            "relay_floor_per_s": round(floor),
            "relay_floor_to_ceiling": round3(floor / ceilings.best()),
            "ratio_to_relay_floor": round3(rate / floor),
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
