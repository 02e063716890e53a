//! The harness every scenario runs in: fresh databases, `codmir serve` nodes on them, the
//! ceilings and the two-hop floor measured in the same run, and waiting for deliveries.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Args;
use crate::load::{self, Api, Sent, percentile_ms};
use crate::raw;
use crate::receiver::Stats;
use crate::report::{Row, round3};
use crate::server::Server;

/// The two ceilings of one run, in requests per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ceilings {
    /// hyper's HTTP/1.1 connections with nothing on top (`raw.rs`): what the machine's
    /// loopback and the receiver can take.
    pub(crate) raw: f64,
    /// The reqwest client codmir sends with: the floor our client library sets.
    pub(crate) reqwest: f64,
}

impl Ceilings {
    /// The ceiling ratios are reported against: the higher one.
    pub(crate) fn best(&self) -> f64 {
        self.raw.max(self.reqwest)
    }
}

/// Everything a scenario needs.
pub(crate) struct Bench {
    pub(crate) args: Args,
    pub(crate) binary: PathBuf,
    pub(crate) stats: Arc<Stats>,
    pub(crate) receiver: String,
    pub(crate) client: reqwest::Client,
    pub(crate) dir: tempfile_dir::Dir,
    pub(crate) counter: std::sync::atomic::AtomicU64,
}

pub(crate) mod tempfile_dir {
    //! A scratch directory removed at exit.
    pub(crate) struct Dir(pub(crate) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What [`Bench::one_webhook`] set up: `apis` has one entry per node.
pub(crate) struct Setup {
    pub(crate) db: Database,
    pub(crate) servers: Vec<Server>,
    pub(crate) apis: Vec<Api>,
    pub(crate) project: String,
}

/// A fresh database for one scenario and the URL `codmir serve` takes.
pub(crate) struct Database {
    pub(crate) url: String,
    pub(crate) sqlite_path: Option<PathBuf>,
    pg: Option<(String, String)>,
}

impl Bench {
    pub(crate) async fn database(&self) -> Result<Database> {
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

    pub(crate) async fn drop_database(&self, db: Database) {
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
    pub(crate) async fn servers(
        &self,
        db: &Database,
        extra: &[&str],
    ) -> Result<(Vec<Server>, Api)> {
        self.servers_with(db, extra, None).await
    }

    /// Starts the server(s) on a database whose key is `key` (or printed on this first start).
    pub(crate) async fn servers_with(
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
    pub(crate) async fn one_webhook(&self) -> Result<Setup> {
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

    /// Both ceilings at this concurrency, measured now: direct POSTs of an event-sized body
    /// to the same receiver, by a raw hyper client and by the reqwest client codmir sends with.
    pub(crate) async fn ceilings(&self, n: u64) -> Result<Ceilings> {
        let raw = raw::direct(&self.receiver, n, self.args.concurrency).await?;
        let reqwest = load::direct(
            &self.client,
            &self.receiver,
            n,
            self.args.concurrency,
            None,
            &self.stats,
        )
        .await;
        Ok(Ceilings {
            raw: raw.rate(),
            reqwest: reqwest.rate(),
        })
    }

    /// The two-hop floor at this concurrency: `n` tickets through the relay (no database, no
    /// signing), deliveries per second from the first request to the last arrival.
    pub(crate) async fn relay_floor(&self, n: u64) -> Result<f64> {
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
    pub(crate) fn span_since(&self, start_ns: u64) -> Duration {
        let last = self.stats.last_arrival.load(Ordering::Relaxed);
        Duration::from_nanos(last.saturating_sub(start_ns)).max(Duration::from_millis(1))
    }

    /// Waits until `expected` unique deliveries arrived, or nothing arrived for 15 s.
    pub(crate) async fn wait_delivered(&self, expected: u64) -> u64 {
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

    /// The row of a run that sent `sent` from `start_ns` on: waits for its deliveries, then
    /// fills in the rates, both ceilings, the counts and the end-to-end latencies, with the
    /// API round trip's p50 and p99 in `extra` and returned (ms) for the note.
    pub(crate) async fn delivered_row(
        &self,
        scenario: String,
        start_ns: u64,
        sent: &Sent,
        ceilings: &Ceilings,
    ) -> (Row, (f64, f64)) {
        let delivered = self.wait_delivered(sent.accepted).await;
        let mut trips = sent.round_trips.clone();
        let trip = (
            percentile_ms(&mut trips, 50.0),
            percentile_ms(&mut trips, 99.0),
        );
        let mut row = Row {
            scenario,
            events_per_s: sent.rate(),
            deliveries_per_s: delivered as f64 / self.span_since(start_ns).as_secs_f64(),
            ceiling_per_s: ceilings.best(),
            reqwest_ceiling_per_s: ceilings.reqwest,
            expected: sent.accepted,
            delivered,
            duplicates: self.stats.duplicates.load(Ordering::Relaxed),
            extra: serde_json::json!({
                "api_round_trip_ms": {"p50": round3(trip.0), "p99": round3(trip.1)},
            }),
            ..Row::default()
        };
        self.latency_into(&mut row);
        (row, trip)
    }

    pub(crate) fn latency_into(&self, row: &mut Row) {
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

pub(crate) async fn pg_admin(server: &str, sql: &str) -> Result<()> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(sql).await?;
    Ok(())
}

/// Round-robins ticket creation over several API nodes.
pub(crate) async fn tickets_on(
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
