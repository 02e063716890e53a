//! `codmir-bench`: starts a receiver and `codmir serve` on a fresh database, drives load through
//! the public API, and prints each scenario's figures beside the loopback ceiling measured in
//! the same run (table, JSON lines, and an SVG chart).

mod chart;
mod load;
mod receiver;
mod relay;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::json;

use load::{Api, Sent, percentile_ms};
use receiver::{Mode, Stats};
use server::{Server, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Steady,
    Latency,
    Fanout,
    Backlog,
    Isolation,
    Idle,
}

/// Benchmarks of codmir, each beside the loopback ceiling measured in the same run.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Scenarios to run (repeat the flag); all of them when left out.
    #[arg(long, value_enum)]
    scenario: Vec<Scenario>,
    /// `sqlite` (a fresh file per scenario) or a PostgreSQL server URL such as
    /// postgres://postgres@127.0.0.1:5432 (a fresh database per scenario).
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// With PostgreSQL: run this many `codmir serve` nodes on the database (1 or 2).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Events of the `steady` scenario.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Concurrent API requests (and direct requests for the ceiling).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per second of the `latency` scenario.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Seconds of the `latency` scenario.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Deliveries piled up by the `backlog` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// The codmir binary; by default the one built next to this benchmark.
    #[arg(long)]
    codmir: Option<PathBuf>,
    /// Where the JSON lines and the chart are written.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Internal: serve the two-hop relay on this address instead of benchmarking.
    #[arg(long, hide = true, requires = "relay_target")]
    relay_listen: Option<String>,
    /// Internal: where the relay posts.
    #[arg(long, hide = true)]
    relay_target: Option<String>,
}

/// One line of the report.
#[derive(Debug, Clone, Default)]
struct Row {
    scenario: String,
    events_per_s: f64,
    deliveries_per_s: f64,
    ceiling_per_s: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    rss_mib: f64,
    peak_rss_mib: f64,
    cpu_pct: f64,
    note: String,
    extra: serde_json::Value,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.ceiling_per_s > 0.0 {
            self.deliveries_per_s / self.ceiling_per_s
        } else {
            f64::NAN
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "scenario": self.scenario,
            "events_per_s": round(self.events_per_s),
            "deliveries_per_s": round(self.deliveries_per_s),
            "ceiling_per_s": round(self.ceiling_per_s),
            "ratio_to_ceiling": round3(self.ratio()),
            "latency_ms": {"p50": round3(self.p50), "p90": round3(self.p90), "p99": round3(self.p99), "max": round3(self.max)},
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.expected.saturating_sub(self.delivered),
            "duplicates": self.duplicates,
            "rss_mib": round(self.rss_mib),
            "peak_rss_mib": round(self.peak_rss_mib),
            "cpu_pct": round(self.cpu_pct),
            "note": self.note,
            "extra": self.extra,
        })
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        -1.0
    }
}

/// Everything a scenario needs.
struct Bench {
    args: Args,
    binary: PathBuf,
    stats: Arc<Stats>,
    receiver: String,
    client: reqwest::Client,
    dir: tempfile_dir::Dir,
    counter: std::sync::atomic::AtomicU64,
}

mod tempfile_dir {
    //! A scratch directory removed at exit.
    pub(crate) struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What [`Bench::one_webhook`] set up: `apis` has one entry per node.
struct Setup {
    db: Database,
    servers: Vec<Server>,
    apis: Vec<Api>,
    project: String,
}

/// A fresh database for one scenario and the URL `codmir serve` takes.
struct Database {
    url: String,
    sqlite_path: Option<PathBuf>,
    pg: Option<(String, String)>,
}

impl Bench {
    async fn database(&self) -> Result<Database> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if self.args.database == "sqlite" {
            let path = self.dir.0.join(format!("bench-{n}.db"));
            return Ok(Database {
                url: format!("sqlite://{}", path.display()),
                sqlite_path: Some(path),
                pg: None,
            });
        }
        let server = self.args.database.trim_end_matches('/').to_owned();
        let name = format!("codmir_bench_{}_{n}", std::process::id());
        pg_admin(&server, &format!("DROP DATABASE IF EXISTS {name}")).await?;
        pg_admin(&server, &format!("CREATE DATABASE {name}")).await?;
        Ok(Database {
            url: format!("{server}/{name}"),
            sqlite_path: None,
            pg: Some((server, name)),
        })
    }

    async fn drop_database(&self, db: Database) {
        if let Some((server, name)) = db.pg {
            let _ = pg_admin(
                &server,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
        }
        if let Some(path) = db.sqlite_path {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }

    /// Starts the server(s) on `db`; the first prints the key.
    async fn servers(&self, db: &Database, extra: &[&str]) -> Result<(Vec<Server>, Api)> {
        self.servers_with(db, extra, None).await
    }

    /// Starts the server(s) on a database whose key is `key` (or printed on this first start).
    async fn servers_with(
        &self,
        db: &Database,
        extra: &[&str],
        key: Option<&str>,
    ) -> Result<(Vec<Server>, Api)> {
        let mut servers = vec![Server::start(&self.binary, &db.url, extra).await?];
        let key = match key {
            Some(k) => k.to_owned(),
            None => servers[0]
                .key
                .clone()
                .context("the first start prints an API key")?,
        };
        let nodes = if db.pg.is_some() {
            self.args.nodes.max(1)
        } else {
            1
        };
        for _ in 1..nodes {
            servers.push(Server::start(&self.binary, &db.url, extra).await?);
        }
        let api = Api {
            client: self.client.clone(),
            base: servers[0].base.clone(),
            key,
        };
        Ok((servers, api))
    }

    /// A fresh database, the server node(s), a project and one webhook to receiver path 0.
    async fn one_webhook(&self) -> Result<Setup> {
        let db = self.database().await?;
        let (servers, api) = self.servers(&db, &[]).await?;
        let apis: Vec<Api> = servers
            .iter()
            .map(|s| Api {
                base: s.base.clone(),
                ..api.clone()
            })
            .collect();
        let project = api.project().await?;
        api.webhook(&self.receiver, 0).await?;
        Ok(Setup {
            db,
            servers,
            apis,
            project,
        })
    }

    /// The ceiling at this concurrency: direct POSTs of an event-sized body.
    async fn ceiling(&self, n: u64) -> Sent {
        load::direct(
            &self.client,
            &self.receiver,
            n,
            self.args.concurrency,
            None,
            &self.stats,
        )
        .await
    }

    /// The two-hop floor at this concurrency: `n` tickets through the relay (no database, no
    /// signing), deliveries per second from the first request to the last arrival.
    async fn relay_floor(&self, n: u64) -> Result<f64> {
        self.stats.reset();
        let relay = Server::relay(&format!("{}/h/0", self.receiver)).await?;
        let api = Api {
            client: self.client.clone(),
            base: relay.base.clone(),
            key: "none".into(),
        };
        let start_ns = self.stats.now_ns();
        let sent = load::tickets(
            &api,
            "relay",
            0..n,
            self.args.concurrency,
            None,
            &self.stats,
        )
        .await;
        let delivered = self.wait_delivered(sent.accepted).await;
        relay.stop().await;
        Ok(delivered as f64 / self.span_since(start_ns).as_secs_f64())
    }

    /// From `start_ns` (on the receiver's clock) to the last first arrival of a delivery.
    fn span_since(&self, start_ns: u64) -> Duration {
        let last = self.stats.last_arrival.load(Ordering::Relaxed);
        Duration::from_nanos(last.saturating_sub(start_ns)).max(Duration::from_millis(1))
    }

    /// Waits until `expected` unique deliveries arrived, or nothing arrived for 15 s.
    async fn wait_delivered(&self, expected: u64) -> u64 {
        let mut last = (0, Instant::now());
        loop {
            let got = self.stats.unique() as u64;
            if got >= expected {
                return got;
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(15) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn latency_into(&self, row: &mut Row) {
        let mut lat = std::mem::take(
            &mut *self
                .stats
                .latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        row.p50 = percentile_ms(&mut lat, 50.0);
        row.p90 = percentile_ms(&mut lat, 90.0);
        row.p99 = percentile_ms(&mut lat, 99.0);
        row.max = percentile_ms(&mut lat, 100.0);
    }
}

fn usage_into(row: &mut Row, servers: &[Server], before: &[Usage], wall: Duration) {
    let after: Vec<Usage> = servers.iter().map(Server::usage).collect();
    row.rss_mib = after.iter().map(|u| u.rss_kib as f64 / 1024.0).sum();
    row.peak_rss_mib = after.iter().map(|u| u.peak_rss_kib as f64 / 1024.0).sum();
    let cpu: f64 = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.cpu_secs - b.cpu_secs)
        .sum();
    row.cpu_pct = 100.0 * cpu / wall.as_secs_f64().max(1e-9);
}

async fn pg_admin(server: &str, sql: &str) -> Result<()> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(sql).await?;
    Ok(())
}

/// Round-robins ticket creation over several API nodes.
async fn tickets_on(
    apis: &[Api],
    project: &str,
    seqs: std::ops::Range<u64>,
    concurrency: usize,
    rate: Option<f64>,
    stats: &Arc<Stats>,
) -> Sent {
    if apis.len() == 1 {
        return load::tickets(&apis[0], project, seqs, concurrency, rate, stats).await;
    }
    let per = (seqs.end - seqs.start).div_ceil(apis.len() as u64);
    let mut parts = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        let start = seqs.start + per * i as u64;
        let end = (start + per).min(seqs.end);
        let (api, project, stats) = (api.clone(), project.to_owned(), stats.clone());
        let rate = rate.map(|r| r / apis.len() as f64);
        let c = concurrency.div_ceil(apis.len());
        parts.push(tokio::spawn(async move {
            load::tickets(&api, &project, start..end, c, rate, &stats).await
        }));
    }
    let mut total = Sent::default();
    for p in parts {
        if let Ok(s) = p.await {
            total.accepted += s.accepted;
            total.errors += s.errors;
            total.elapsed = total.elapsed.max(s.elapsed);
            total.round_trips.extend(s.round_trips);
        }
    }
    total
}

async fn steady(b: &Bench) -> Result<Row> {
    let n = b.args.events;
    let ceiling = b.ceiling(n.min(50_000)).await;
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
    let mut row = Row {
        scenario: if servers.len() > 1 {
            format!("steady ({} nodes)", servers.len())
        } else {
            "steady".into()
        },
        events_per_s: sent.rate(),
        deliveries_per_s: rate,
        ceiling_per_s: ceiling.rate(),
        expected: sent.accepted,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: format!(
            "{n} events, concurrency {}, API errors {}; two-hop relay floor {:.0}/s ({:.3} of ceiling), codmir at {:.3} of it",
            b.args.concurrency,
            sent.errors,
            floor,
            floor / ceiling.rate(),
            rate / floor
        ),
        extra: json!({
            "relay_floor_per_s": round(floor),
            "relay_floor_to_ceiling": round3(floor / ceiling.rate()),
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

async fn latency(b: &Bench) -> Result<Row> {
    let n = (b.args.rate * b.args.seconds as f64) as u64;
    // The ceiling at the same fixed rate: round trips of direct POSTs.
    let mut ceiling = load::direct(
        &b.client,
        &b.receiver,
        (b.args.rate * 5.0) as u64,
        256,
        Some(b.args.rate),
        &b.stats,
    )
    .await;
    let Setup {
        db,
        servers,
        apis,
        project,
    } = b.one_webhook().await?;
    b.stats.reset();
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    let sent = tickets_on(&apis, &project, 0..n, 256, Some(b.args.rate), &b.stats).await;
    let delivered = b.wait_delivered(sent.accepted).await;
    let mut api_trips = sent.round_trips.clone();
    let mut row = Row {
        scenario: if servers.len() > 1 {
            format!("latency ({} nodes)", servers.len())
        } else {
            "latency".into()
        },
        events_per_s: sent.rate(),
        deliveries_per_s: delivered as f64 / began.elapsed().as_secs_f64(),
        ceiling_per_s: ceiling.rate(),
        expected: sent.accepted,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: format!("{} events/s for {} s", b.args.rate, b.args.seconds),
        extra: json!({
            "direct_round_trip_ms": {"p50": round3(percentile_ms(&mut ceiling.round_trips, 50.0)), "p99": round3(percentile_ms(&mut ceiling.round_trips, 99.0))},
            "api_round_trip_ms": {"p50": round3(percentile_ms(&mut api_trips, 50.0)), "p99": round3(percentile_ms(&mut api_trips, 99.0))},
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

async fn fanout(b: &Bench) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let ceiling = b.ceiling(20_000).await;
    let db = b.database().await?;
    let (servers, api) = b.servers(&db, &[]).await?;
    let project = api.project().await?;
    let mut hooks = Vec::new();
    for i in 0..1000 {
        hooks.push(api.webhook(&b.receiver, i).await?);
    }
    // One event to 1,000 webhooks: time until the last one has it.
    b.stats.reset();
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    let sent = load::tickets(&api, &project, 0..1, 1, None, &b.stats).await;
    let delivered = b.wait_delivered(1000 * sent.accepted).await;
    let all_in = Duration::from_nanos(b.stats.last_arrival.load(Ordering::Relaxed))
        - Duration::from_nanos(b.stats.sent[0].load(Ordering::Relaxed).saturating_sub(1));
    let mut row = Row {
        scenario: "fanout 1×1000".into(),
        deliveries_per_s: delivered as f64 / all_in.as_secs_f64().max(1e-9),
        ceiling_per_s: ceiling.rate(),
        expected: 1000,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: format!(
            "all 1,000 delivered {:.1} ms after the request",
            all_in.as_secs_f64() * 1000.0
        ),
        extra: json!({"all_delivered_ms": round3(all_in.as_secs_f64() * 1000.0)}),
        ..Row::default()
    };
    b.latency_into(&mut row);
    usage_into(&mut row, &servers, &before, began.elapsed());
    rows.push(row);
    // 100 events/s to 100 webhooks for 10 s: disable the other 900 first.
    for id in &hooks[100..] {
        api.client
            .patch(format!("{}/v1/webhooks/{id}", api.base))
            .bearer_auth(&api.key)
            .json(&json!({"enabled": false}))
            .send()
            .await?;
    }
    b.stats.reset();
    let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
    let began = Instant::now();
    let sent = load::tickets(&api, &project, 0..1000, 64, Some(100.0), &b.stats).await;
    let delivered = b.wait_delivered(100 * sent.accepted).await;
    let mut row = Row {
        scenario: "fanout 100/s×100".into(),
        events_per_s: sent.rate(),
        deliveries_per_s: delivered as f64 / began.elapsed().as_secs_f64(),
        ceiling_per_s: ceiling.rate(),
        expected: 100 * sent.accepted,
        delivered,
        duplicates: b.stats.duplicates.load(Ordering::Relaxed),
        note: "100 events/s for 10 s to 100 webhooks".into(),
        ..Row::default()
    };
    b.latency_into(&mut row);
    usage_into(&mut row, &servers, &before, began.elapsed());
    rows.push(row);
    for s in servers {
        s.stop().await;
    }
    b.drop_database(db).await;
    Ok(rows)
}

async fn isolation(b: &Bench) -> Result<Vec<Row>> {
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

/// Writes `n` pending `ticket.created` deliveries to `webhook` straight into the SQLite file
/// (the bulk path: the API would take minutes to make a million).
fn bulk_backlog(path: &Path, webhook: &str, n: u64, status: &str) -> Result<()> {
    use codmir_core::event::{Event, EventData, EventType, Ref, TicketView};
    use codmir_core::id::new_id;
    use codmir_core::time::Timestamp;
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    let (ws, project): (String, String) =
        tx.query_row("SELECT workspace_id, id FROM projects LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let now = Timestamp::now();
    {
        let mut ev = tx.prepare("INSERT INTO events (id, workspace_id, project_id, type, created_at, payload) VALUES (?1, ?2, ?3, 'ticket.created', ?4, ?5)")?;
        let mut dl = tx.prepare(
            "INSERT INTO deliveries (id, workspace_id, webhook_id, event_id, event_type, status, attempt_count, next_attempt_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 'ticket.created', ?5, ?6, ?7, ?8, ?8)",
        )?;
        for seq in 0..n {
            let ticket = TicketView {
                id: new_id("tkt", now),
                project_id: project.clone(),
                title: format!("b{seq}"),
                description: None,
                status: "open",
                priority: "medium",
                assignee_id: None,
                created_by: "usr_bench".into(),
                created_at: now.to_rfc3339_millis(),
                updated_at: now.to_rfc3339_millis(),
            };
            let data = EventData {
                ticket: Some(ticket),
                project: Some(Ref {
                    id: project.clone(),
                    name: "bench".into(),
                }),
                user: Some(Ref {
                    id: "usr_bench".into(),
                    name: "bench".into(),
                }),
                ..EventData::default()
            };
            let e = Event::new(&ws, Some(&project), EventType::TicketCreated, now, &data);
            ev.execute(rusqlite::params![
                e.id,
                ws,
                project,
                now.as_millis(),
                e.payload
            ])?;
            let (attempts, next) = if status == "pending" {
                (0, Some(now.as_millis()))
            } else {
                (1, None)
            };
            dl.execute(rusqlite::params![
                new_id("dlv", now),
                ws,
                webhook,
                e.id,
                status,
                attempts,
                next,
                now.as_millis()
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

async fn backlog(b: &Bench) -> Result<Vec<Row>> {
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
    bulk_backlog(&path, &webhook, n, "pending")?;
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

async fn idle(b: &Bench) -> Result<Row> {
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

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<28} {:>10} {:>12} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>5} {:>7} {:>7} {:>5}",
        "scenario",
        "events/s",
        "deliveries/s",
        "ceiling/s",
        "ratio",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "delivered",
        "dup",
        "RSS MiB",
        "peak",
        "CPU%"
    );
    for r in rows {
        println!(
            "{:<28} {:>10.0} {:>12.0} {:>10.0} {:>7.3} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>5} {:>7.1} {:>7.1} {:>5.0}",
            r.scenario,
            r.events_per_s,
            r.deliveries_per_s,
            r.ceiling_per_s,
            r.ratio(),
            r.p50,
            r.p90,
            r.p99,
            r.max,
            r.delivered,
            r.duplicates,
            r.rss_mib,
            r.peak_rss_mib,
            r.cpu_pct
        );
    }
    for r in rows {
        if !r.note.is_empty() {
            println!("  {}: {}", r.scenario, r.note);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let (Some(listen), Some(target)) = (&args.relay_listen, &args.relay_target) {
        return relay::serve(listen, target.clone()).await;
    }
    let binary = args.codmir.clone().unwrap_or_else(server::default_binary);
    anyhow::ensure!(
        binary.exists(),
        "{} not found: run `cargo build --release` first",
        binary.display()
    );
    let scenarios = if args.scenario.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenario.clone()
    };
    let capacity = (args
        .events
        .max((args.rate * args.seconds as f64) as u64)
        .max(args.backlog)
        + 100_000) as usize;
    let stats = Stats::new(capacity);
    let receiver = receiver::start(stats.clone()).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    let dir = std::env::temp_dir().join(format!("codmir-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&args.out)?;
    let bench = Bench {
        args,
        binary,
        stats,
        receiver,
        client,
        dir: tempfile_dir::Dir(dir),
        counter: Default::default(),
    };
    let backend = if bench.args.database == "sqlite" {
        "sqlite".to_owned()
    } else {
        format!("postgres×{}", bench.args.nodes)
    };
    let mut rows = Vec::new();
    for s in scenarios {
        eprintln!("== {s:?} on {backend}");
        let result = match s {
            Scenario::Steady => steady(&bench).await.map(|r| vec![r]),
            Scenario::Latency => latency(&bench).await.map(|r| vec![r]),
            Scenario::Fanout => fanout(&bench).await,
            Scenario::Backlog if bench.args.database != "sqlite" => {
                eprintln!("   skipped: the backlog bulk path writes SQLite");
                continue;
            }
            Scenario::Backlog => backlog(&bench).await,
            Scenario::Isolation => isolation(&bench).await,
            Scenario::Idle => idle(&bench).await.map(|r| vec![r]),
        };
        for mut row in result.with_context(|| format!("scenario {s:?}"))? {
            row.scenario = format!("{} [{backend}]", row.scenario);
            println!("{}", row.json());
            rows.push(row);
        }
    }
    print_table(&rows);
    let stem = format!("results-{}", backend.replace('×', "x"));
    let lines: String = rows.iter().map(|r| format!("{}\n", r.json())).collect();
    std::fs::write(bench.args.out.join(format!("{stem}.jsonl")), lines)?;
    std::fs::write(
        bench.args.out.join(format!("{stem}.svg")),
        chart::svg(
            &rows
                .iter()
                .map(|r| chart::Bar {
                    label: r.scenario.clone(),
                    codmir: r.deliveries_per_s,
                    ceiling: r.ceiling_per_s,
                    p50: r.p50,
                    p99: r.p99,
                })
                .collect::<Vec<_>>(),
        ),
    )?;
    eprintln!(
        "wrote {}/{stem}.jsonl and {stem}.svg",
        bench.args.out.display()
    );
    Ok(())
}
