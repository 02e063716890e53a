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
    if let Some(commits) = Commits::of(&b.client, &servers[0].base).await {
        row.note.push_str(&format!(
            "; group commit: {:.1} units per commit, {:.2} ms per commit (means over {} commits)",
            commits.units_per_commit, commits.ms_per_commit, commits.commits
        ));
        row.extra["commits"] = json!({
            "count": commits.commits,
            "units_per_commit": round3(commits.units_per_commit),
            "ms_per_commit": round3(commits.ms_per_commit),
        });
    }
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(row)
}

/// The group commit as the server's own metrics saw it: the means of
/// `codmir_store_commit_batch_size` and `codmir_store_commit_duration_seconds` since start.
struct Commits {
    commits: u64,
    units_per_commit: f64,
    ms_per_commit: f64,
}

impl Commits {
    async fn of(client: &reqwest::Client, base: &str) -> Option<Self> {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        // `name{labels} value`, or `name value`.
        let value = |name: &str| {
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        let count = value("codmir_store_commit_batch_size_count");
        if count == 0.0 {
            return None;
        }
        Some(Self {
            commits: count as u64,
            units_per_commit: value("codmir_store_commit_batch_size_sum") / count,
            ms_per_commit: value("codmir_store_commit_duration_seconds_sum") * 1000.0
                / value("codmir_store_commit_duration_seconds_count").max(1.0),
        })
    }
}
