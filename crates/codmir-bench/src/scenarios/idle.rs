//! `idle`: memory of an idle server and its start time.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::harness::Bench;
use crate::report::{Row, round3};

pub(crate) async fn idle(b: &Bench) -> Result<Row> {
    let db = b.database().await?;
    let (servers, api) = b.servers(&db, &[]).await?;
    api.project().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let u = servers[0].usage();
    let row = Row {
        scenario: "idle".into(),
        rss_mib: u.rss_kib as f64 / 1024.0,
        peak_rss_mib: u.peak_rss_kib as f64 / 1024.0,
        note: format!(
            "fresh database; start to first /healthz 200: {:.0} ms",
            servers[0].startup.as_secs_f64() * 1000.0
        ),
        extra: json!({"start_ms": round3(servers[0].startup.as_secs_f64() * 1000.0)}),
        ..Row::default()
    };
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(row)
}
