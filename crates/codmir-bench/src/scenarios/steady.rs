//! `steady`: one webhook, events as fast as the API takes them, beside both ceilings and
//! the two-hop relay floor.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use crate::harness::{Bench, Setup, tickets_on};
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
    let scenario = if servers.len() > 1 {
        format!("steady ({} nodes)", servers.len())
    } else {
        "steady".into()
    };
    let (mut row, (api_p50, api_p99)) = b.delivered_row(scenario, start_ns, &sent, &ceilings).await;
    let rate = row.deliveries_per_s;
    row.note = format!(
        "{n} events, concurrency {}, API errors {}, API round trip p50 {:.2} ms p99 {:.2} ms; two-hop relay floor {:.0}/s ({:.3} of ceiling), codmir at {:.3} of it",
        b.args.concurrency,
        sent.errors,
        api_p50,
        api_p99,
        floor,
        floor / ceilings.best(),
        rate / floor
    );
    row.extra["relay_floor_per_s"] = json!(round(floor));
    row.extra["relay_floor_to_ceiling"] = json!(round3(floor / ceilings.best()));
    row.extra["ratio_to_relay_floor"] = json!(round3(rate / floor));
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
