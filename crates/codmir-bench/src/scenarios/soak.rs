//! `soak`: events at a moderate steady rate for a long time (`--seconds`, e.g. 3600), the
//! server sampled every `--sample-every` seconds: resident memory, open file descriptors,
//! the database's size on disk, and the deliveries' end-to-end p99 of that interval. Written
//! to `soak.csv` and plotted in `soak.svg`; growth that does not level off shows as a line
//! that keeps climbing.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::harness::{Bench, Setup, tickets_on};
use crate::load::percentile_ms;
use crate::report::{Row, round3};
use crate::server::Usage;

/// One sample of the soak.
pub(crate) struct Sample {
    pub minute: f64,
    pub rss_mib: f64,
    pub fds: usize,
    pub db_mib: f64,
    pub p99_ms: f64,
    pub delivered: u64,
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The SQLite file and its WAL, in MiB (0 on PostgreSQL).
fn db_mib(path: Option<&std::path::Path>) -> f64 {
    let Some(path) = path else { return 0.0 };
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = path.with_extension("db-wal");
    (size(path.to_path_buf()) + size(wal)) as f64 / (1024.0 * 1024.0)
}

pub(crate) async fn soak(b: &Bench) -> Result<Row> {
    let n = (b.args.rate * b.args.seconds as f64) as u64;
    let Setup {
        db,
        servers,
        apis,
        project,
    } = b.one_webhook().await?;
    b.stats.reset();
    let pid = servers[0].pid;
    let began = Instant::now();
    let (stats, rate) = (b.stats.clone(), b.args.rate);
    let load =
        tokio::spawn(
            async move { tickets_on(&apis, &project, 0..n, 32, Some(rate), &stats).await },
        );
    let every = Duration::from_secs(b.args.sample_every.max(1));
    let mut samples = Vec::new();
    let mut next = began + every;
    let mut last_hits = 0;
    while !load.is_finished() {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let mut window =
            std::mem::take(&mut *b.stats.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        let hits = b.stats.hits.load(Ordering::Relaxed);
        let s = Sample {
            minute: began.elapsed().as_secs_f64() / 60.0,
            rss_mib: Usage::of(pid).rss_kib as f64 / 1024.0,
            fds: open_fds(pid),
            db_mib: db_mib(db.sqlite_path.as_deref()),
            p99_ms: percentile_ms(&mut window, 99.0),
            delivered: hits - last_hits,
        };
        last_hits = hits;
        eprintln!(
            "   {:6.1} min  rss {:7.1} MiB  fds {:5}  db {:8.1} MiB  p99 {:7.2} ms  delivered {}",
            s.minute, s.rss_mib, s.fds, s.db_mib, s.p99_ms, s.delivered
        );
        samples.push(s);
    }
    let sent = load.await?;
    let delivered = b.wait_delivered(sent.accepted).await;
    let csv: String = std::iter::once("minute,rss_mib,fds,db_mib,p99_ms,delivered\n".to_owned())
        .chain(samples.iter().map(|s| {
            format!(
                "{:.2},{:.1},{},{:.2},{:.3},{}\n",
                s.minute, s.rss_mib, s.fds, s.db_mib, s.p99_ms, s.delivered
            )
        }))
        .collect();
    std::fs::write(b.args.out.join("soak.csv"), csv)?;
    std::fs::write(
        b.args.out.join("soak.svg"),
        crate::chart::soak_svg(&samples),
    )?;
    let first = samples.first();
    let last = samples.last();
    let peak = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    let row = Row {
        scenario: "soak".into(),
        events_per_s: sent.rate(),
        deliveries_per_s: delivered as f64 / began.elapsed().as_secs_f64(),
        expected: sent.accepted,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        rss_mib: last.map_or(0.0, |s| s.rss_mib),
        peak_rss_mib: peak(|s| s.rss_mib),
        note: format!(
            "{} events/s for {} s, sampled every {} s",
            b.args.rate,
            b.args.seconds,
            every.as_secs()
        ),
        extra: json!({
            "rss_mib": {"first": first.map(|s| round3(s.rss_mib)), "last": last.map(|s| round3(s.rss_mib))},
            "fds": {"first": first.map(|s| s.fds), "last": last.map(|s| s.fds), "max": samples.iter().map(|s| s.fds).max()},
            "db_mib": {"last": last.map(|s| round3(s.db_mib))},
            "p99_ms": {"first": first.map(|s| round3(s.p99_ms)), "last": last.map(|s| round3(s.p99_ms)), "max": round3(peak(|s| s.p99_ms))},
        }),
        ..Row::default()
    };
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(row)
}
