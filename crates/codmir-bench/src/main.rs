//! `codmir-bench`: starts a receiver and `codmir serve` on a fresh database, drives load through
//! the public API, and prints each scenario's figures beside the loopback ceilings measured in
//! the same run (table, JSON lines, and an SVG chart).
//!
//! The parts: `callgrind.rs` (instruction counts), `harness.rs` (databases, servers, ceilings, waiting), `scenarios/` (one file
//! each), `report.rs` (rows, table, JSON), `load.rs` (API load and the reqwest ceiling),
//! `raw.rs` (the raw hyper ceiling), `relay.rs` (the two-hop floor), `bulk.rs` (the backlog's
//! bulk path), `receiver.rs`, `server.rs`, `chart.rs`.

mod bulk;
mod callgrind;
mod chart;
mod harness;
mod load;
mod raw;
mod receiver;
mod relay;
mod report;
mod scenarios;
mod server;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use harness::{Bench, tempfile_dir};
use receiver::Stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    Steady,
    Latency,
    Fanout,
    /// Before `backlog`: its bulk rows are made 40 days old, and ids made in one process
    /// never go back in time (`codmir_core::id::new_id`), so after `backlog`'s bulk rows of
    /// today they would be today's too and nothing would be old enough to delete.
    Retention,
    Backlog,
    Isolation,
    /// The last part of `isolation` alone: a host of which a sixth of the requests hang,
    /// beside the same host all answered. Not part of the default set (`isolation` runs it).
    Hangs,
    Idle,
    /// Long and steady (`--seconds 3600 --rate 200`): memory, descriptors, database size
    /// and p99 sampled over time. Not part of the default set.
    Soak,
    /// Server instructions per event and per delivery under valgrind's callgrind, split by
    /// part (`--cost-events`). Slow; not part of the default set.
    Cost,
    /// codmir's `steady`, then svix-server's at the same load (`--svix-url`, `--svix-token`
    /// of one already running). Not part of the default set.
    Svix,
    /// Title changes over 1,000 tickets to a webhook ordered per resource beside the same
    /// load unordered, then one busy ticket ordered. Not part of the default set.
    Ordering,
}

/// Benchmarks of codmir, each beside the loopback ceiling measured in the same run.
#[derive(Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// Scenarios to run (repeat the flag); all of them when left out.
    #[arg(long, value_enum)]
    pub(crate) scenario: Vec<Scenario>,
    /// `sqlite` (a fresh file per scenario) or a PostgreSQL server URL such as
    /// postgres://postgres@127.0.0.1:5432 (a fresh database per scenario).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// With PostgreSQL: run this many `codmir serve` nodes on the database (1 or 2).
    #[arg(long, default_value_t = 1)]
    pub(crate) nodes: usize,
    /// Events of the `steady` scenario.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) events: u64,
    /// Events of the `cost` scenario to one webhook (a fifth as many go to ten).
    #[arg(long, default_value_t = 5_000)]
    pub(crate) cost_events: u64,
    /// Concurrent API requests (and direct requests for the ceiling).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Events per second of the `latency` scenario.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) rate: f64,
    /// Seconds of the `latency` scenario.
    #[arg(long, default_value_t = 30)]
    pub(crate) seconds: u64,
    /// Seconds between two samples of the `soak` scenario.
    #[arg(long, default_value_t = 60)]
    pub(crate) sample_every: u64,
    /// Deliveries piled up by the `backlog` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) backlog: u64,
    /// The codmir binary; by default the one built next to this benchmark.
    #[arg(long)]
    pub(crate) codmir: Option<PathBuf>,
    /// Where the JSON lines and the chart are written.
    #[arg(long, default_value = "target/bench")]
    pub(crate) out: PathBuf,
    /// A running svix-server's base URL, for `--scenario svix`.
    #[arg(long)]
    pub(crate) svix_url: Option<String>,
    /// A bearer token of that svix-server (`svix-server jwt generate`).
    #[arg(long)]
    pub(crate) svix_token: Option<String>,
    /// Internal: serve the two-hop relay on this address instead of benchmarking.
    #[arg(long, hide = true, requires = "relay_target")]
    pub(crate) relay_listen: Option<String>,
    /// Internal: where the relay posts.
    #[arg(long, hide = true)]
    pub(crate) relay_target: Option<String>,
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
        // The soak and the cost are long: asked for by name only.
        Scenario::value_variants()
            .iter()
            .copied()
            .filter(|s| {
                !matches!(
                    s,
                    Scenario::Soak
                        | Scenario::Cost
                        | Scenario::Svix
                        | Scenario::Hangs
                        | Scenario::Ordering
                )
            })
            .collect()
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
            Scenario::Steady => scenarios::steady(&bench).await.map(|r| vec![r]),
            Scenario::Latency => scenarios::latency(&bench).await.map(|r| vec![r]),
            Scenario::Fanout => scenarios::fanout(&bench).await,
            Scenario::Backlog if bench.args.database != "sqlite" => {
                eprintln!("   skipped: the backlog bulk path writes SQLite");
                continue;
            }
            Scenario::Backlog => scenarios::backlog(&bench).await,
            Scenario::Isolation => scenarios::isolation(&bench).await,
            Scenario::Hangs => scenarios::partly_hanging_host(&bench).await,
            Scenario::Idle => scenarios::idle(&bench).await.map(|r| vec![r]),
            Scenario::Retention if bench.args.database != "sqlite" => {
                eprintln!("   skipped: the retention bulk path writes SQLite");
                continue;
            }
            Scenario::Retention => scenarios::retention(&bench).await,
            Scenario::Soak => scenarios::soak(&bench).await.map(|r| vec![r]),
            Scenario::Cost => scenarios::cost(&bench).await,
            Scenario::Svix => scenarios::svix(&bench).await,
            Scenario::Ordering => scenarios::ordering(&bench).await,
        };
        for mut row in result.with_context(|| format!("scenario {s:?}"))? {
            row.scenario = format!("{} [{backend}]", row.scenario);
            println!("{}", row.json());
            rows.push(row);
        }
    }
    report::print_table(&rows);
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
