//! `cost`: server instructions per event and per delivery, counted by callgrind over a fixed
//! workload (`--cost-events` ticket creations to one webhook, then a fifth as many to ten),
//! split into the API, the writer, delivery, the engine, readers and the runtime. Slow (the
//! server runs ~50× slower under valgrind) and asked for by name only. The dumps stay in
//! `OUT/callgrind/` (`cg.PID.1-*` the one-webhook run, `cg.PID.2-*` the ten, one file per
//! thread) for `callgrind_annotate`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::callgrind::{self, Split};
use crate::harness::Bench;
use crate::load::{self, Api};
use crate::report::Row;
use crate::server::Server;

/// Events sent, not counted, before each measured run: connections, caches, statements.
const WARM_UP: u64 = 100;

pub(crate) async fn cost(b: &Bench) -> Result<Vec<Row>> {
    // Kept after the run for `callgrind_annotate`: the profile behind each figure.
    let dir = b.args.out.join("callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = b.database().await?;
    let server = Server::start_under(&callgrind::wrapper(&dir), &b.binary, &db.url, &[]).await?;
    let api = Api {
        client: b.client.clone(),
        base: server.base.clone(),
        key: server.key.clone().unwrap_or_default(),
    };
    let project = api.project().await?;
    api.webhook(&b.receiver, 0).await?;
    callgrind::control(server.pid, "--instr=on").await?;
    let n = b.args.cost_events;
    let mut next = 0;
    let mut rows = Vec::new();
    for (phase, (webhooks, events)) in [(1, n), (10, (n / 5).max(1))].into_iter().enumerate() {
        for i in 1..webhooks {
            api.webhook(&b.receiver, i).await?;
        }
        let hooks = webhooks as u64;
        run(b, &api, &project, &mut next, WARM_UP, hooks).await?;
        callgrind::control(server.pid, "--zero").await?;
        let began = Instant::now();
        run(b, &api, &project, &mut next, events, hooks).await?;
        callgrind::control(server.pid, "--dump").await?;
        let split = callgrind::read_dump(&dir, server.pid, phase as u32 + 1).await?;
        if b.args.database == "sqlite" && split.writer == 0 {
            bail!("no thread ran the SQLite writer's loop: its frame was not found in the dumps");
        }
        let duplicates = b.stats.duplicates.load(Ordering::Relaxed);
        let row = row(webhooks, events, &split, began.elapsed(), duplicates);
        eprintln!("{}", row.note);
        rows.push(row);
    }
    server.stop().await;
    b.drop_database(db).await;
    let body = example_payload();
    let native = native_signing_ns(&body);
    eprintln!(
        "  signing natively (this process, SHA-NI where the CPU has it): {native:.0} ns per attempt (both signatures of a {}-byte payload)",
        body.len()
    );
    if let Some(first) = rows.first_mut() {
        first.extra["native_signing_ns_per_attempt"] = json!(native.round());
    }
    Ok(rows)
}

/// A `ticket.created` payload as the server sends it.
fn example_payload() -> Vec<u8> {
    let at = codmir_core::time::Timestamp::now();
    let example = codmir_core::event::example(codmir_core::event::EventType::TicketCreated, at);
    serde_json::to_vec(&example).unwrap_or_default()
}

/// What the two signatures of one attempt of `body` cost outside valgrind, for the
/// instruction counts' signing part to be read against: the same functions the server calls,
/// timed here over 20,000 attempts (the best of three rounds, as the machine is shared).
fn native_signing_ns(body: &[u8]) -> f64 {
    use codmir_core::sign::{codmir_signature, standard_key, standard_signature};
    const ATTEMPTS: u32 = 20_000;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let began = Instant::now();
        let mut bytes = 0;
        for i in 0..ATTEMPTS {
            bytes += codmir_signature(secret, body).len();
            let key = standard_key(secret);
            bytes += standard_signature(&key, "evt_1", i64::from(i), body).len();
        }
        std::hint::black_box(bytes);
        best = best.min(began.elapsed().as_nanos() as f64 / f64::from(ATTEMPTS));
    }
    best
}

/// Sends `events` tickets, waits for every delivery and for every outcome to be recorded.
async fn run(
    b: &Bench,
    api: &Api,
    project: &str,
    next: &mut u64,
    events: u64,
    webhooks: u64,
) -> Result<()> {
    b.stats.reset();
    let seqs = *next..*next + events;
    *next += events;
    let sent = load::tickets(api, project, seqs, b.args.concurrency, None, &b.stats).await;
    if sent.errors > 0 {
        bail!("{} API errors", sent.errors);
    }
    let delivered = b.wait_delivered(webhooks * sent.accepted).await;
    if delivered < webhooks * sent.accepted {
        bail!(
            "{delivered} of {} deliveries arrived",
            webhooks * sent.accepted
        );
    }
    settle(api).await
}

/// Waits until no delivery is pending: the receiver has each one before its outcome is
/// recorded, and the recording belongs to the cost. One scrape a second (each is counted
/// too, a few hundred thousand instructions: noise against the run's billions).
async fn settle(api: &Api) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = api
            .client
            .get(format!("{}/metrics", api.base))
            .send()
            .await?
            .text()
            .await?;
        let pending = text
            .lines()
            .find_map(|l| l.strip_prefix("codmir_queue_pending "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if pending == Some(0.0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("deliveries still pending after 600 s: {pending:?}");
        }
    }
}

fn row(webhooks: usize, events: u64, split: &Split, wall: Duration, duplicates: u64) -> Row {
    let deliveries = events * webhooks as u64;
    let per = |v: u64, by: u64| (v as f64 / by as f64).round();
    let mut per_event = serde_json::Map::new();
    let mut parts = String::new();
    for (name, v) in split.parts() {
        per_event.insert(name.into(), json!(per(v, events)));
        if v > 0 {
            parts.push_str(&format!(" {name} {:.0}k", per(v, events) / 1000.0));
        }
    }
    per_event.insert(
        "writer_outcomes".into(),
        json!(per(split.writer_outcomes, events)),
    );
    per_event.insert(
        "delivery_signing".into(),
        json!(per(split.delivery_signing, events)),
    );
    Row {
        scenario: format!(
            "cost ({webhooks} webhook{})",
            if webhooks > 1 { "s" } else { "" }
        ),
        expected: deliveries,
        delivered: deliveries,
        note: format!(
            "{events} events → {deliveries} deliveries under callgrind ({:.0} s): {:.0}k instructions per event, {:.0}k per delivery; per event:{parts} (of delivery, signing {:.0}k)",
            wall.as_secs_f64(),
            per(split.total, events) / 1000.0,
            per(split.total, deliveries) / 1000.0,
            per(split.delivery_signing, events) / 1000.0,
        ),
        extra: json!({
            "events": events,
            "deliveries": deliveries,
            "instructions": split.total,
            "per_event": per(split.total, events),
            "per_delivery": per(split.total, deliveries),
            "per_event_by_part": Value::Object(per_event),
        }),
        duplicates,
        ..Row::default()
    }
}
