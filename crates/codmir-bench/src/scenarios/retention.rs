//! `retention`: a fifth of `--backlog` delivered rows 40 days old, written by the bulk path;
//! the server's retention pass deletes them while API load runs at a fixed rate, and the
//! API's latency during the pass is compared with the same load once it is over.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::harness::Bench;
use crate::load::{self, percentile_ms};
use crate::report::{Row, round, round3, usage_into};
use crate::server::{Server, Usage};

/// API requests per second during and after the pass.
const RATE: f64 = 200.0;

/// Old deliveries left in the file (read-only, beside the running server).
fn old_rows(path: &std::path::Path, floor: &str) -> Result<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn.query_row(
        "SELECT count(*) FROM deliveries WHERE id < ?1",
        [floor],
        |r| r.get(0),
    )?)
}

pub(crate) async fn retention(b: &Bench) -> Result<Vec<Row>> {
    let db = b.database().await?;
    let path = db
        .sqlite_path
        .clone()
        .context("the retention scenario uses the SQLite bulk path")?;
    let n = (b.args.backlog / 5).max(1000);
    let (servers, api) = b.servers(&db, &["--retention", "off"]).await?;
    let project = api.project().await?;
    let webhook = api.webhook(&b.receiver, 0).await?;
    for s in servers {
        s.stop().await;
    }
    let old = codmir_core::time::Timestamp::from_millis(
        codmir_core::time::Timestamp::now().as_millis() - 40 * 86_400_000,
    );
    crate::bulk::bulk_at(&path, &webhook, n, "succeeded", old)?;
    let floor = codmir_core::id::floor("dlv", old.plus(Duration::from_secs(1)));
    // A pass that finds nothing to delete would report an absurd rate: the rows must be old.
    let written = old_rows(&path, &floor)?;
    anyhow::ensure!(
        written >= n as i64,
        "only {written} of {n} bulk rows have ids older than the floor (ids made earlier in \
         this process at a later time hold the clock back)"
    );
    // The pass starts with the server.
    let (servers, api) = b.servers_with(&db, &[], Some(&api.key)).await?;
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    let probe = (RATE * 5.0) as u64;
    let mut during = Vec::new();
    let mut seq = 0;
    while old_rows(&path, &floor)? > 0 {
        let sent = load::tickets(&api, &project, seq..seq + probe, 64, Some(RATE), &b.stats).await;
        seq += probe;
        during.extend(sent.round_trips);
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(600),
            "the pass took over 10 minutes"
        );
    }
    let pass = began.elapsed();
    let mut row = Row {
        scenario: "retention pass".into(),
        deliveries_per_s: n as f64 / pass.as_secs_f64(),
        expected: n,
        delivered: n,
        note: String::new(),
        ..Row::default()
    };
    usage_into(&mut row, &servers, &before, pass);
    let after = load::tickets(&api, &project, seq..seq + probe, 64, Some(RATE), &b.stats).await;
    let mut quiet = after.round_trips;
    row.p50 = percentile_ms(&mut during, 50.0);
    row.p90 = percentile_ms(&mut during, 90.0);
    row.p99 = percentile_ms(&mut during, 99.0);
    row.max = percentile_ms(&mut during, 100.0);
    let (quiet_p50, quiet_p99) = (
        percentile_ms(&mut quiet, 50.0),
        percentile_ms(&mut quiet, 99.0),
    );
    row.note = format!(
        "{n} delivered rows 40 days old deleted in {:.1} s ({:.0}/s) while the API took {RATE}/s; \
         API round trip during the pass p50 {:.2} / p99 {:.2} ms, after it p50 {quiet_p50:.2} / p99 {quiet_p99:.2} ms",
        pass.as_secs_f64(),
        row.deliveries_per_s,
        row.p50,
        row.p99
    );
    row.extra = json!({
        "rows": n,
        "pass_secs": round3(pass.as_secs_f64()),
        "deleted_per_s": round(row.deliveries_per_s),
        "api_ms_during": {"p50": round3(row.p50), "p99": round3(row.p99)},
        "api_ms_after": {"p50": round3(quiet_p50), "p99": round3(quiet_p99)},
    });
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(vec![row])
}
