//! `isolation`: ten webhooks, once all healthy and once with one that never answers.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;

use crate::harness::Bench;
use crate::load::{self};
use crate::receiver::Mode;
use crate::report::{Row, usage_into};
use crate::server::{Server, Usage};

pub(crate) async fn isolation(b: &Bench) -> Result<Vec<Row>> {
    let n = (b.args.events / 5).max(1000);
    let mut rows = Vec::new();
    let mut healthy_rate = 0.0;
    for hanging in [false, true] {
        b.stats.reset();
        let db = b.database().await?;
        let (servers, api) = b
            .servers(&db, &["--request-timeout", "5s", "--delivery-lease", "30s"])
            .await?;
        let project = api.project().await?;
        for i in 0..10 {
            api.webhook(&b.receiver, i).await?;
        }
        if hanging {
            b.stats.set_mode(0, Mode::Hang);
        }
        let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
        let start_ns = b.stats.now_ns();
        let began = Instant::now();
        let sent = load::tickets(&api, &project, 0..n, b.args.concurrency, None, &b.stats).await;
        // Only the nine other webhooks are expected to complete.
        let expected = 9 * sent.accepted + if hanging { 0 } else { sent.accepted };
        let delivered = b.wait_delivered(expected).await;
        let span = b.span_since(start_ns);
        let nine: u64 = (1..10)
            .map(|i| b.stats.per_hook[i].load(Ordering::Relaxed))
            .sum();
        let rate = nine as f64 / span.as_secs_f64();
        if !hanging {
            healthy_rate = rate;
        }
        let mut row = Row {
            scenario: if hanging {
                "isolation (1 of 10 hangs)".into()
            } else {
                "isolation (10 healthy)".into()
            },
            events_per_s: sent.rate(),
            deliveries_per_s: rate,
            ceiling_per_s: healthy_rate,
            expected,
            delivered,
            duplicates: b.stats.duplicates.load(Ordering::Relaxed),
            note: format!(
                "{n} events to 10 webhooks; deliveries/s of the nine others; ceiling = the all-healthy run"
            ),
            ..Row::default()
        };
        b.latency_into(&mut row);
        usage_into(&mut row, &servers, &before, began.elapsed());
        rows.push(row);
        for s in servers {
            s.stop().await;
        }
        b.stats.set_mode(0, Mode::Ok);
        b.drop_database(db).await;
    }
    Ok(rows)
}
