//! `backlog`: a million pending deliveries drained, API ingest during the drain against
//! ingest without one, and the start time on the resulting database.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::harness::Bench;
use crate::load::{self, Api};
use crate::receiver::Stats;
use crate::report::{Row, round, round3, usage_into};
use crate::server::{Server, Usage};

pub(crate) async fn backlog(b: &Bench) -> Result<Vec<Row>> {
    let db = b.database().await?;
    let path = db
        .sqlite_path
        .clone()
        .context("the backlog scenario uses the SQLite bulk path")?;
    let n = b.args.backlog;
    // Set up, and measure API ingest without a backlog for comparison.
    b.stats.reset();
    let (servers, api) = b.servers(&db, &[]).await?;
    let project = api.project().await?;
    let webhook = api.webhook(&b.receiver, 0).await?;
    // Ingest is probed in three rounds of 10,000 tickets each time, and the median kept: one
    // round swung by ±40 % on this shared machine.
    let (probe, rounds) = (10_000, 3);
    let base_seq = n + 1;
    let baseline = ingest_rounds(&api, &project, base_seq, probe, rounds, &b.stats).await;
    b.wait_delivered(probe * rounds).await;
    for s in servers {
        s.stop().await;
    }
    // Pile up the backlog (while no server runs: the receiver's 503s would only add retries).
    let piled = Instant::now();
    crate::bulk::bulk_backlog(&path, &webhook, n, "pending")?;
    let pile_secs = piled.elapsed().as_secs_f64();
    b.stats.reset();
    let (servers, api) = b.servers_with(&db, &[], Some(&api.key)).await?;
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    // API ingest while the backlog drains.
    let during = ingest_rounds(
        &api,
        &project,
        base_seq + probe * rounds,
        probe,
        rounds,
        &b.stats,
    )
    .await;
    let delivered = b.wait_delivered(n + probe * rounds).await;
    let drain = began.elapsed();
    let mut row = Row {
        scenario: "backlog drain".into(),
        events_per_s: during,
        deliveries_per_s: delivered as f64 / drain.as_secs_f64(),
        expected: n + probe * rounds,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: format!(
            "{n} pending deliveries written by the bulk path in {pile_secs:.1} s; API ingest {:.0}/s during the drain vs {:.0}/s without",
            during, baseline
        ),
        extra: json!({
            "backlog": n,
            "drain_secs": round3(drain.as_secs_f64()),
            "ingest_per_s_without_backlog": round(baseline),
            "ingest_per_s_during_drain": round(during),
            "ingest_slowdown": round3(1.0 - during / baseline),
        }),
        ..Row::default()
    };
    usage_into(&mut row, &servers, &before, drain);
    for s in servers {
        s.stop().await;
    }
    // Start time on a database holding every one of those delivered rows.
    let restart = Server::start(&b.binary, &db.url, &[]).await?;
    let start_ms = restart.startup.as_secs_f64() * 1000.0;
    let mut idle = Row {
        scenario: "idle start on backlog db".into(),
        rss_mib: restart.usage().rss_kib as f64 / 1024.0,
        note: format!(
            "start to first /healthz 200 on a database with {} delivered rows: {start_ms:.0} ms",
            n + 2 * probe * rounds
        ),
        extra: json!({"start_ms": round3(start_ms), "rows": n + 2 * probe * rounds}),
        ..Row::default()
    };
    idle.peak_rss_mib = restart.usage().peak_rss_kib as f64 / 1024.0;
    restart.stop().await;
    b.drop_database(db).await;
    Ok(vec![row, idle])
}

/// Median API ingest rate (tickets/s at concurrency 16) over `rounds` rounds of `probe`
/// tickets, numbered from `first`.
async fn ingest_rounds(
    api: &Api,
    project: &str,
    first: u64,
    probe: u64,
    rounds: u64,
    stats: &Arc<Stats>,
) -> f64 {
    let mut rates = Vec::new();
    for r in 0..rounds {
        let start = first + r * probe;
        let sent = load::tickets(api, project, start..start + probe, 16, None, stats).await;
        rates.push(sent.rate());
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
