//! `codmir serve`: binds, takes the SQLite file for itself, opens and bootstraps the
//! database, runs the server, and turns signals into a graceful shutdown (a second signal cuts
//! in-flight attempts short, a third exits at once).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use codmir_core::retry::{RetrySchedule, parse_duration};
use codmir_core::target::Cidr;
use codmir_core::time::Timestamp;
use codmir_server::store::{StoreError, StoreOptions, sqlite_path};
use codmir_server::{Config, Store, ops};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CODMIR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve `GET /metrics` on this address only (keep it private), not on --listen; `/healthz`
    /// and `/readyz` answer there too, also while --listen is at --max-connections.
    #[arg(long, env = "CODMIR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Database to use: sqlite://PATH, or postgres://USER@HOST:PORT/DB to run several nodes on
    /// one database. Created (SQLite) and migrated on start.
    #[arg(
        long,
        env = "CODMIR_DATABASE_URL",
        default_value = "sqlite://codmir.db"
    )]
    database_url: String,
    /// Connections this node keeps to PostgreSQL (plus one for LISTEN). Ignored for SQLite.
    #[arg(long, env = "CODMIR_DATABASE_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    database_pool_size: u16,
    /// Allow webhook URLs on localhost and loopback, private or link-local addresses (for
    /// local development and tests only).
    #[arg(long, env = "CODMIR_ALLOW_PRIVATE_TARGETS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    allow_private_targets: bool,
    /// Allow webhook URLs in this network although it is not public, e.g. a private receiver
    /// network `10.20.0.0/16`; repeatable (comma-separated in the environment).
    #[arg(long = "allow-cidr", env = "CODMIR_ALLOW_CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    allow_cidr: Vec<Cidr>,
    /// Most open connections to the API (and, apart, to --metrics-listen); past it new ones
    /// are closed at once. Default: 90 % of the file-descriptor limit (raised to its hard
    /// limit at start) once outgoing requests (2 × --max-in-flight) and 256 are set aside.
    #[arg(long, env = "CODMIR_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Most open connections from one client address (an IPv6 /64), so that one client cannot
    /// fill --max-connections; past it that client's new ones are closed at once. Default: a
    /// quarter of --max-connections, at least 64. Behind a proxy, all clients are the proxy:
    /// set it to --max-connections.
    #[arg(long, env = "CODMIR_MAX_CONNECTIONS_PER_CLIENT", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_client: Option<u32>,
    /// How long a client may take to send a request's headers, or to start its next request on
    /// a kept-alive connection, before the connection is closed. Bodies get 10 s (then 408).
    #[arg(long, env = "CODMIR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_time)]
    header_read_timeout: Duration,
    /// Requests per second each API key may make (bursts of twice that), then 429 with
    /// Retry-After; `off` for none. Probes, metrics and the dashboard's files are not counted.
    #[arg(long, env = "CODMIR_API_RATE_LIMIT", default_value = "200", value_parser = parse_rate)]
    api_rate_limit: Rate,
    #[command(flatten)]
    master_key: crate::secrets::MasterKeyArgs,
    /// Refuse `http://` webhook URLs (at registration and at each attempt).
    #[arg(long, env = "CODMIR_HTTPS_ONLY", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    https_only: bool,
    /// Delays between delivery attempts, e.g. `1s,2s,4s`; its length is the number of retries.
    /// Default: 5s,5m,30m,2h,5h,10h,14h,20h,24h (about three days), each ±20% jitter.
    #[arg(long, env = "CODMIR_RETRY_SCHEDULE", value_parser = parse_schedule)]
    retry_schedule: Option<RetrySchedule>,
    /// How long to wait for a webhook endpoint to accept a connection.
    #[arg(long, env = "CODMIR_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_time)]
    connect_timeout: Duration,
    /// How long one delivery attempt may take in all.
    #[arg(long, env = "CODMIR_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_time)]
    request_timeout: Duration,
    /// Most delivery attempts in flight to one webhook at once.
    #[arg(long, env = "CODMIR_MAX_IN_FLIGHT_PER_ENDPOINT", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    max_in_flight_per_endpoint: u16,
    /// Most delivery attempts in flight in all.
    #[arg(long, env = "CODMIR_MAX_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..))]
    max_in_flight: u16,
    /// A ceiling on one workspace's delivery attempts in flight. Default: none beyond its fair
    /// share, which is what is left of --max-in-flight after a reserve of an eighth (kept for
    /// a workspace that starts having work), divided among the workspaces that have work; a
    /// quarter of that while most of its recent attempts were slow.
    #[arg(long, env = "CODMIR_MAX_IN_FLIGHT_PER_WORKSPACE", value_parser = clap::value_parser!(u16).range(1..))]
    max_in_flight_per_workspace: Option<u16>,
    /// Most delivery attempts in flight from one workspace to one host and port, across its
    /// webhooks (another workspace's attempts to the same host do not count).
    #[arg(long, env = "CODMIR_MAX_IN_FLIGHT_PER_HOST", default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..))]
    max_in_flight_per_host: u16,
    /// Most webhooks one workspace may register (422 beyond).
    #[arg(long, env = "CODMIR_MAX_WEBHOOKS_PER_WORKSPACE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_webhooks_per_workspace: u32,
    /// Most deliveries one workspace may have pending (retries included): a replay, a
    /// redelivery or a tracker change whose deliveries would pass it is refused with a 429.
    #[arg(long, env = "CODMIR_MAX_PENDING_PER_WORKSPACE", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_pending_per_workspace: u64,
    /// How long a claimed delivery stays leased to this node; must exceed --request-timeout.
    /// When a node dies, the others take its claimed deliveries over once their leases expire.
    #[arg(long, env = "CODMIR_DELIVERY_LEASE", default_value = "60s", value_parser = parse_time)]
    delivery_lease: Duration,
    /// Disable a webhook automatically once every attempt to it has failed for this long...
    #[arg(long, env = "CODMIR_DISABLE_AFTER", default_value = "5d", value_parser = parse_time)]
    disable_after: Duration,
    /// ...and at least this many attempts in a row failed. A 410 Gone disables it at once.
    #[arg(long, env = "CODMIR_DISABLE_AFTER_FAILURES", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    disable_after_failures: u32,
    /// Delete events, deliveries and attempts older than this (pending deliveries and their
    /// events are kept), in small batches in the background; `off` keeps everything.
    #[arg(long, env = "CODMIR_RETENTION", default_value = "30d", value_parser = parse_retention)]
    retention: Retention,
    /// On shutdown, how long to wait for attempts in flight before cutting them off (they are
    /// recorded as interrupted and retried on the next start). A second signal cuts at once.
    #[arg(long, env = "CODMIR_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_time)]
    shutdown_grace: Duration,
}

/// `--retention`: a duration, or `off`.
#[derive(Debug, Clone, Copy)]
struct Retention(Option<Duration>);

fn parse_retention(raw: &str) -> Result<Retention, String> {
    if raw == "off" {
        return Ok(Retention(None));
    }
    parse_duration(raw)
        .map(|d| Retention(Some(d)))
        .map_err(|e| format!("{} (or `off`)", e.message))
}

/// `--api-rate-limit`: requests per second, or `off`.
#[derive(Debug, Clone, Copy)]
struct Rate(Option<u32>);

fn parse_rate(raw: &str) -> Result<Rate, String> {
    if raw == "off" {
        return Ok(Rate(None));
    }
    match raw.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Rate(Some(n))),
        _ => Err(format!(
            "`{raw}` is not a number of requests per second (or `off`)"
        )),
    }
}

fn parse_cidr(raw: &str) -> Result<Cidr, String> {
    Cidr::parse(raw).map_err(|e| e.message)
}

fn parse_schedule(raw: &str) -> Result<RetrySchedule, String> {
    RetrySchedule::parse(raw).map_err(|e| e.message)
}

fn parse_time(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.message)
}

pub(crate) async fn serve(args: ServeArgs) -> Result<()> {
    if args.delivery_lease <= args.request_timeout {
        anyhow::bail!(
            "--delivery-lease ({:?}) must be longer than --request-timeout ({:?})",
            args.delivery_lease,
            args.request_timeout
        );
    }
    // Signals are caught from the start: one during start-up is a shutdown, not a kill.
    let mut signals = Signals::new()?;
    // Bind first: a server that cannot listen must not create the database and print its
    // one-time key to nobody.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?,
        ),
        None => None,
    };
    let max_connections = match args.max_connections {
        Some(n) => n as usize,
        None => default_max_connections(args.max_in_flight.into()),
    };
    // Held until the process exits: one server per SQLite file.
    let _lock = match sqlite_path(&args.database_url) {
        Some(path) => Some(lock_sqlite(Path::new(path))?),
        None => None,
    };
    let keys = args.master_key.ring(&args.database_url, true)?;
    let options = StoreOptions {
        pool_size: args.database_pool_size.into(),
        keys: Some(std::sync::Arc::new(keys)),
    };
    let store = Store::open_with(&args.database_url, &options)
        .await
        .with_context(|| format!("opening {}", args.database_url))?;
    // Secrets written before encryption (or under an older key) are sealed now.
    let resealed = store
        .write(|tx| Box::pin(async move { tx.reseal_secrets().await }))
        .await
        .context("sealing webhook secrets")?;
    if resealed > 0 {
        tracing::info!(
            webhooks = resealed,
            "webhook secrets sealed under the current master key"
        );
    }
    let created = match store
        .write(|tx| Box::pin(async move { ops::bootstrap(tx, Timestamp::now()).await }))
        .await
    {
        // Another node sharing the database bootstrapped it at the same moment.
        Err(ops::Error::Store(StoreError::Conflict(_))) => None,
        other => other.context("creating the default workspace")?,
    };
    if let Some(key) = created {
        println!(
            "Created workspace \"default\" with user \"admin\" ({}).",
            key.principal.user_id
        );
        println!("This API key is shown once and will not be shown again; keep it now:");
        println!("{}", key.key);
    } else if !store
        .read(|tx| Box::pin(async move { ops::any_key_used(tx).await }))
        .await
        .unwrap_or(true)
    {
        // A log line, so that it keeps the chosen log format.
        tracing::warn!(
            "no API key of this database has been used yet; if the key printed when it was \
             created is lost, make another: codmir keys create --database-url {} --workspace default --user admin",
            shown_url(&args.database_url)
        );
    }
    tracing::info!(address = %listener.local_addr()?, database = %shown_url(&args.database_url), max_connections, "codmir is serving");
    let config = Config {
        allow_private_targets: args.allow_private_targets,
        allowed_cidrs: args.allow_cidr,
        https_only: args.https_only,
        retry_schedule: args.retry_schedule.unwrap_or_default(),
        connect_timeout: args.connect_timeout,
        request_timeout: args.request_timeout,
        max_in_flight_per_endpoint: args.max_in_flight_per_endpoint.into(),
        max_in_flight: args.max_in_flight.into(),
        max_in_flight_per_workspace: args.max_in_flight_per_workspace.map(usize::from),
        max_in_flight_per_host: args.max_in_flight_per_host.into(),
        max_webhooks_per_workspace: args.max_webhooks_per_workspace as usize,
        max_pending_per_workspace: args.max_pending_per_workspace,
        lease_duration: args.delivery_lease,
        disable_policy: codmir_core::webhook::DisablePolicy {
            period: args.disable_after,
            failures: args.disable_after_failures,
        },
        retention: args.retention.0,
        shutdown_grace: args.shutdown_grace,
        api_rate_limit: args.api_rate_limit.0,
        connection_limits: codmir_server::ConnectionLimits {
            max_connections,
            max_per_client: args.max_connections_per_client.map_or_else(
                || codmir_server::ConnectionLimits::per_client_default(max_connections),
                |n| n as usize,
            ),
            header_read_timeout: args.header_read_timeout,
        },
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = codmir_server::start_with_metrics(listener, metrics, store, config, async {
        let _ = stopped.await;
    })?;
    let engine = running.engine().clone();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down: finishing in-flight work (a second signal cuts it short)");
        let _ = stop.send(());
        signals.next().await;
        tracing::warn!(
            "second signal: cutting off in-flight deliveries now; they are recorded as interrupted (a third signal exits at once)"
        );
        engine.cut_off();
        signals.next().await;
        std::process::exit(130);
    });
    running.wait().await?;
    tracing::info!("codmir stopped");
    Ok(())
}

/// Raises the file-descriptor limit to its hard limit and derives the connection bound from
/// it: each connection is one descriptor, and outgoing webhook requests (in flight and idle
/// in the pool, about twice `max_in_flight`), the database and the log need their own.
fn default_max_connections(max_in_flight: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit.saturating_sub(2 * max_in_flight + 256) / 10 * 9).max(64)
}

/// A database URL as it may be shown: a SQLite file as an absolute path, a PostgreSQL URL
/// without its password.
pub(crate) fn shown_url(url: &str) -> String {
    if let Some(path) = sqlite_path(url) {
        let path = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
        return format!("sqlite://{}", path.display());
    }
    if let (Some(scheme), Some(at)) = (url.find("://"), url.rfind('@')) {
        let userinfo = url.get(scheme + 3..at).unwrap_or_default();
        if let Some(colon) = userinfo.find(':') {
            return format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]);
        }
    }
    url.to_owned()
}

/// Takes `PATH.lock` beside the database for this process's life, or says who holds it.
/// A lock file of its own, not a lock on the database file, so as not to meddle with
/// SQLite's own locking; `keys` commands do not take it and work beside a running server.
fn lock_sqlite(db: &Path) -> Result<File> {
    let path = PathBuf::from(format!("{}.lock", db.display()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            let db = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
            anyhow::bail!(
                "another codmir server is already serving {} (it holds {}.lock). One server per \
                 SQLite file: stop the other one, or run several nodes on PostgreSQL \
                 (--database-url postgres://…)",
                db.display(),
                db.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// SIGINT and SIGTERM, each delivery of either counted.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt()).context("catching SIGINT")?,
                term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
