//! `ordering`: what ordered delivery per resource costs. The same load — `--events` title
//! changes spread over 1,000 tickets (one `ticket.updated` each) — to a webhook with
//! `"ordering": "none"` and, on a fresh server, to one with `"per_resource"`, in the same
//! invocation; then one busy ticket with `per_resource`, bounded by the receiver's round trip.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::harness::Bench;
use crate::load::{self, Api};
use crate::report::{Row, round3};

/// Tickets the spread runs change, round-robin.
const TICKETS: usize = 1_000;

pub(crate) async fn ordering(b: &Bench) -> Result<Vec<Row>> {
    let n = b.args.events;
    let ceilings = b.ceilings(n.min(50_000)).await?;
    let unordered = run(b, "none", TICKETS, n, &ceilings).await?;
    let ordered = run(b, "per_resource", TICKETS, n, &ceilings).await?;
    let one = run(b, "per_resource", 1, n.min(2_000), &ceilings).await?;
    let ratio = ordered.deliveries_per_s / unordered.deliveries_per_s.max(1.0);
    let mut rows = vec![unordered, ordered, one];
    rows[1].note.push_str(&format!(
        "; {ratio:.3} of the unordered rate measured just before"
    ));
    rows[1].extra["ratio_to_unordered"] = json!(round3(ratio));
    Ok(rows)
}

/// One run: a fresh server, a webhook for `ticket.updated` with `ordering`, `tickets`
/// tickets made first (not delivered), then `n` title changes over them.
async fn run(
    b: &Bench,
    ordering: &str,
    tickets: usize,
    n: u64,
    ceilings: &crate::harness::Ceilings,
) -> Result<Row> {
    let db = b.database().await?;
    let (servers, api) = b.servers(&db, &[]).await?;
    let project = api.project().await?;
    let receiver = format!("{}/h/0", b.receiver);
    let body = json!({"url": receiver, "events": ["ticket.updated"], "ordering": ordering});
    api.post("/v1/webhooks", body).await?;
    let ids = make_tickets(&api, &project, tickets).await?;
    b.stats.reset();
    let start_ns = b.stats.now_ns();
    let began = Instant::now();
    let sent = load::retitles(&api, Arc::new(ids), 0..n, b.args.concurrency, &b.stats).await;
    let name = format!("ordering {ordering}, {tickets} ticket(s)");
    let (mut row, (p50, p99)) = b.delivered_row(name, start_ns, &sent, ceilings).await;
    row.note = format!(
        "{n} title changes over {tickets} ticket(s), ordering {ordering}, concurrency {}, API errors {}, API round trip p50 {p50:.2} ms p99 {p99:.2} ms, {:.1} s",
        b.args.concurrency,
        sent.errors,
        began.elapsed().as_secs_f64()
    );
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(row)
}

async fn make_tickets(api: &Api, project: &str, n: usize) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let t = api
            .post(
                &format!("/v1/projects/{project}/tickets"),
                json!({"title": format!("t{i}")}),
            )
            .await?;
        ids.push(t["id"].as_str().context("ticket id")?.to_owned());
    }
    Ok(ids)
}
