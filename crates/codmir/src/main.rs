//! The `codmir` command: runs the server and manages API keys. Argument parsing and wiring
//! live here, with two checks of `serve`'s own (the lease must outlast a request; a
//! concurrent bootstrap by another node is not an error); everything else is in
//! `codmir-server`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use codmir_core::retry::{RetrySchedule, parse_duration};
use codmir_core::time::Timestamp;
use codmir_core::tracker::{UserName, WorkspaceName};
use codmir_server::store::{StoreError, StoreOptions};
use codmir_server::{Config, Store, ops};
use tokio::net::TcpListener;

/// mimalloc instead of the system allocator: the hot path allocates many small, short-lived
/// buffers on several threads, where glibc's malloc showed up as ~12 % of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// codmir: a ticket tracker that sends signed, reliable webhooks.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log lines as `text` (for people) or `json` (one object per line, for log stacks).
    #[arg(long, global = true, env = "CODMIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server and the webhook delivery engine.
    Serve(ServeArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CODMIR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve `GET /metrics` on this address only (keep it private), not on --listen.
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key, creating the database, workspace and user if needed. Prints the key
    /// alone on the last line of stdout. Works while a server runs on the same database.
    Create {
        /// sqlite://PATH or postgres://USER@HOST:PORT/DB.
        #[arg(
            long,
            env = "CODMIR_DATABASE_URL",
            default_value = "sqlite://codmir.db"
        )]
        database_url: String,
        /// Workspace name.
        #[arg(long)]
        workspace: String,
        /// User name; the key acts as this user.
        #[arg(long)]
        user: String,
    },
}

fn parse_schedule(raw: &str) -> Result<RetrySchedule, String> {
    RetrySchedule::parse(raw).map_err(|e| e.message)
}

fn parse_time(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.message)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Keys {
                command:
                    KeysCommand::Create {
                        database_url,
                        workspace,
                        user,
                    },
            } => create_key(&database_url, &workspace, &user).await,
        }
    })
}

fn init_logging(format: LogFormat) {
    let level = std::env::var("CODMIR_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    // Colour codes only for a person at a terminal who did not ask for none (NO_COLOR), never
    // in a file, a pipe or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    if args.delivery_lease <= args.request_timeout {
        anyhow::bail!(
            "--delivery-lease ({:?}) must be longer than --request-timeout ({:?})",
            args.delivery_lease,
            args.request_timeout
        );
    }
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
    let options = StoreOptions {
        pool_size: args.database_pool_size.into(),
    };
    let store = Store::open_with(&args.database_url, &options)
        .await
        .with_context(|| format!("opening {}", args.database_url))?;
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
    }
    tracing::info!(address = %listener.local_addr()?, database = %args.database_url, "codmir is serving");
    let config = Config {
        allow_private_targets: args.allow_private_targets,
        retry_schedule: args.retry_schedule.unwrap_or_default(),
        connect_timeout: args.connect_timeout,
        request_timeout: args.request_timeout,
        max_in_flight_per_endpoint: args.max_in_flight_per_endpoint.into(),
        max_in_flight: args.max_in_flight.into(),
        lease_duration: args.delivery_lease,
        disable_policy: codmir_core::webhook::DisablePolicy {
            period: args.disable_after,
            failures: args.disable_after_failures,
        },
        retention: args.retention.0,
        ..Config::default()
    };
    codmir_server::start_with_metrics(listener, metrics, store, config, shutdown_signal())?
        .wait()
        .await?;
    tracing::info!("codmir stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight work");
}

async fn create_key(database_url: &str, workspace: &str, user: &str) -> Result<()> {
    let workspace = WorkspaceName::parse(workspace)
        .map_err(|e| anyhow::anyhow!("--workspace {}", e.message))?;
    let user = UserName::parse(user).map_err(|e| anyhow::anyhow!("--user {}", e.message))?;
    let store = Store::open(database_url)
        .await
        .with_context(|| format!("opening {database_url}"))?;
    let key = store
        .write(move |tx| {
            Box::pin(async move { ops::create_key(tx, &workspace, &user, Timestamp::now()).await })
        })
        .await
        .context("creating the key")?;
    store.close().await;
    println!(
        "Created an API key for user \"{}\" ({}) in workspace {}. It will not be shown again:",
        key.principal.user_name, key.principal.user_id, key.principal.workspace_id
    );
    println!("{}", key.key);
    Ok(())
}
