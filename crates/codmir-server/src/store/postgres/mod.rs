//! The PostgreSQL backend's machinery, for several stateless `codmir serve` nodes on one
//! database: migrations under an advisory lock, the connection pool, the units' transactions
//! and `LISTEN`; the row access the shared queries run on (`Conn`) is in `conn.rs`, its own
//! claims, retention and set-based outcomes in `queue.rs`.
//!
//! Each unit of work runs in its own transaction on a pooled connection, in a task of its own
//! so that a caller that goes away cannot leave a connection mid-transaction; checked units
//! (`Store::write_checked`) are grouped into batches with set-based inserts (`batch.rs`). Due deliveries
//! are claimed with `FOR UPDATE SKIP LOCKED` and a lease; commits that create deliveries
//! `NOTIFY` the other nodes, which `LISTEN` on a dedicated connection.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use super::seal::KeyRing;
use crate::tasks::Tasks;

use super::{Backend, BoxFuture, FanoutCache, Job, Ran, Sharing, StoreError, StoreResult};

mod batch;
mod commit;
mod conn;
mod queue;

use commit::Commit;
use conn::{Params, PgTx};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres_0001_init.sql"),
    include_str!("../migrations/postgres_0002_webhook_due.sql"),
    include_str!("../migrations/postgres_0003_operations.sql"),
    include_str!("../migrations/postgres_0004_key_use.sql"),
    include_str!("../migrations/postgres_0005_idempotency.sql"),
    include_str!("../migrations/postgres_0006_fanout_cache.sql"),
    include_str!("../migrations/postgres_0007_events_by_id.sql"),
    include_str!("../migrations/postgres_0008_readiness.sql"),
    include_str!("../migrations/postgres_0009_idempotency_claims.sql"),
    include_str!("../migrations/postgres_0010_cancel_reason.sql"),
    include_str!("../migrations/postgres_0011_webhook_expiry.sql"),
    include_str!("../migrations/postgres_0012_attempt_headers.sql"),
    include_str!("../migrations/postgres_0013_sequences.sql"),
    include_str!("../migrations/postgres_0014_ordering.sql"),
];
/// Any fixed number: the advisory lock that serializes migrations of nodes starting together.
const MIGRATION_LOCK: i64 = 0x636f_646d_6972;
/// Subscribes to the channel commits that create deliveries notify
/// (`postgres_only::NOTIFY`).
const LISTEN: &str = "LISTEN codmir_deliveries";
/// How long to wait for a connection to open, or for a free one in the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a unit of work may wait for PostgreSQL's answers. A server that went away
/// closes the connection and fails at once; one cut off by the network answers nothing, and
/// without this bound a request would hang until TCP gave up (minutes). Units of work take
/// milliseconds; the slowest (a replay of 10,000 events) well under a second.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a session may sit idle inside a transaction before the server ends it (and
/// its locks): past any unit's deadline.
const IDLE_IN_TRANSACTION: &str = "-c idle_in_transaction_session_timeout=15000";
/// How often the `LISTEN` connection is checked: a connection cut off by the network
/// receives nothing and reports nothing.
const LISTEN_CHECK: Duration = Duration::from_secs(10);

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict(Arc::new(e))
            }
            _ if lost_connection(&e) => StoreError::unreachable("PostgreSQL", e),
            _ => StoreError::database("PostgreSQL", e),
        }
    }
}

/// Whether `e` says the server went away rather than refused the statement: the connection
/// closed or failed (no server error at all, or SQLSTATE class 08), or the server is shutting
/// down, crashed or still starting (57P01, 57P02, 57P03).
fn lost_connection(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        }
        None => e.is_closed() || e.as_db_error().is_none(),
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Closed => StoreError::Closed,
            PoolError::Backend(e) => e.into(),
            // No connection within the pool's timeouts: the server is away or saturated.
            e @ PoolError::Timeout(_) => StoreError::unreachable("no database connection", e),
            e => StoreError::database("no database connection", e),
        }
    }
}

pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    keys: Option<Arc<KeyRing>>,
    fanout: Arc<FanoutCache>,
    /// Checked units of work, run in batches by the batcher tasks (`batch.rs`).
    /// `None` once closed.
    checked: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Box<dyn Job>>>>,
    /// The store's own tasks (batchers, units of work, `LISTEN`), waited for by `close`.
    tasks: Tasks,
}

impl PgStore {
    pub async fn open(
        url: &str,
        pool_size: usize,
        keys: Option<Arc<KeyRing>>,
    ) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::database("invalid PostgreSQL URL", e))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // Sent data not acknowledged for this long (a peer gone without a word): the
        // connection fails instead of waiting for TCP's retransmissions to give up.
        #[cfg(target_os = "linux")]
        config.tcp_user_timeout(JOB_TIMEOUT);
        // The server's side of the same: a node cut off or frozen in the middle of a
        // transaction (its connection still open) would hold that transaction's row locks
        // until it came back, and the other nodes' claims skip locked rows, so what it leased
        // could not be taken over. Our transactions never wait on the client for long.
        config.options(IDLE_IN_TRANSACTION);
        migrate(&config).await?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::database("cannot build the connection pool", e))?;
        let fanout: Arc<FanoutCache> = Arc::default();
        let (checked, queue) = tokio::sync::mpsc::unbounded_channel();
        let queue: batch::Queue = Arc::new(tokio::sync::Mutex::new(queue));
        // A quarter of the pool (2 of the default 8): with fewer batchers each batch is larger
        // (`steady` at 32 publishers: 8.2–8.5 units per commit with 2, 5.0 with 4, the same
        // throughput and a lower p99), and the other connections stay free for reads, claims
        // and the other writes.
        let tasks = Tasks::default();
        for _ in 0..(pool_size / 4).max(1) {
            tasks.spawn(batch::batcher(
                queue.clone(),
                pool.clone(),
                keys.clone(),
                fanout.clone(),
            ));
        }
        Ok(Self {
            pool,
            config,
            keys,
            fanout,
            checked: std::sync::Mutex::new(Some(checked)),
            tasks,
        })
    }

    /// What every unit of work is given besides its connection.
    fn shared(&self) -> (Option<Arc<KeyRing>>, Arc<FanoutCache>) {
        (self.keys.clone(), self.fanout.clone())
    }

    async fn run_job(
        pool: &Pool,
        (keys, fanout): (Option<Arc<KeyRing>>, Arc<FanoutCache>),
        mut job: Box<dyn Job>,
        begin: &str,
    ) {
        let deadline = job.deadline();
        let conn = match connection(pool, deadline).await {
            Ok(c) => c,
            Err(e) => return job.finish(Err(e)),
        };
        let began = std::time::Instant::now();
        let commit = Commit::default();
        let run = async {
            conn.batch_execute(begin).await?;
            let ok = {
                let mut tx = PgTx {
                    client: &conn,
                    keys: keys.as_deref(),
                    fanout: &fanout,
                    batch: None,
                };
                matches!(job.run(&mut tx).await, Ran::Done)
            };
            match ok {
                true => commit.send(&conn).await,
                false => Ok(conn.batch_execute("ROLLBACK").await?),
            }
        };
        let result: StoreResult<()> = match tokio::time::timeout_at(run_until(deadline), run).await
        {
            Ok(result) => result,
            Err(_) => {
                // Mid-transaction in an unknown state: closed, never back in the pool.
                drop(Object::take(conn));
                let result = commit.settle(pool, deadline, Err(commit.cut_off())).await;
                return job.finish(result);
            }
        };
        if result.is_err() {
            let _ = conn.batch_execute("ROLLBACK").await;
        }
        // Its pool slot is free for finding out what became of a lost commit.
        drop(conn);
        let result = commit.settle(pool, deadline, result).await;
        if result.is_ok() && begin == "BEGIN" {
            crate::telemetry::commit("postgres", 1, began.elapsed());
        }
        job.finish(result);
    }
}

/// A connection from the pool by `deadline` (the pool's own bounds could add up past it: a
/// wait for a free slot, then one to open a connection).
async fn connection(pool: &Pool, deadline: tokio::time::Instant) -> StoreResult<Object> {
    let late = || StoreError::Unreachable {
        context: "no database connection before the request's deadline".into(),
        source: None,
    };
    if deadline <= tokio::time::Instant::now() {
        return Err(late());
    }
    match tokio::time::timeout_at(deadline, pool.get()).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(late()),
    }
}

/// Until when a unit of work (or a batch) that started now may run.
fn run_until(deadline: tokio::time::Instant) -> tokio::time::Instant {
    deadline.min(tokio::time::Instant::now() + JOB_TIMEOUT)
}

/// The error of a unit (or batch) cut off at its deadline, with the outcome unknown if its
/// `COMMIT` was sent.
fn no_answer(committing: bool) -> StoreError {
    let e = StoreError::Unreachable {
        context: "no answer from PostgreSQL in time".into(),
        source: None,
    };
    if committing { e.at_commit() } else { e }
}

async fn migrate(config: &tokio_postgres::Config) -> StoreResult<()> {
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .query_one("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS codmir_schema (version INTEGER NOT NULL)")
            .await?;
        let row = client.query_one("SELECT coalesce(max(version), 0) FROM codmir_schema", &[]).await?;
        let version: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if version > known {
            return Err(StoreError::failed(format!(
                "the database has schema version {version}, newer than this codmir ({known}); upgrade codmir"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let v = i as i32 + 1;
            client.batch_execute(&format!("BEGIN; {sql}; INSERT INTO codmir_schema VALUES ({v}); COMMIT;")).await?;
        }
        Ok(())
    }
    .await;
    let _ = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = driver.await;
    result
}

impl Backend for PgStore {
    fn submit_write(&self, job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>> {
        if self.tasks.is_stopping() {
            return Box::pin(async { Err(StoreError::Closed) });
        }
        if job.sharing() == Sharing::Checked {
            let queue = self
                .checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            return Box::pin(async move {
                let queue = queue.ok_or(StoreError::Closed)?;
                queue.send(job).map_err(|_| StoreError::Closed)
            });
        }
        let (pool, shared) = (self.pool.clone(), self.shared());
        self.tasks
            .spawn(async move { Self::run_job(&pool, shared, job, "BEGIN").await });
        Box::pin(async { Ok(()) })
    }

    fn submit_read(&self, job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>> {
        if self.tasks.is_stopping() {
            return Box::pin(async { Err(StoreError::Closed) });
        }
        let (pool, shared) = (self.pool.clone(), self.shared());
        let read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
        self.tasks
            .spawn(async move { Self::run_job(&pool, shared, job, read).await });
        Box::pin(async { Ok(()) })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // New work is refused from now on; the batchers drain what is queued and end, units
        // in flight finish (each bounded by `JOB_TIMEOUT`), `LISTEN` hangs up.
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.tasks.stop();
        Box::pin(async move {
            if !self.tasks.wait(JOB_TIMEOUT + CONNECT_TIMEOUT).await {
                tracing::warn!(
                    running = self.tasks.running(),
                    "units of work still running when the store closed"
                );
            }
            self.pool.close();
        })
    }

    fn releases_all_leases_on_start(&self) -> bool {
        false
    }

    fn subscribe(&self, wake: Arc<Notify>) {
        let (config, tasks) = (self.config.clone(), self.tasks.clone());
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    listened = listen(&config, &wake, &tasks) => if let Err(e) = listened {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    },
                    () = tasks.stopping() => return,
                }
                // Whatever was notified while disconnected is picked up by the engine's poll.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = tasks.stopping() => return,
                }
            }
        });
    }
}

/// Holds a connection that `LISTEN`s and wakes the engine on each notification.
async fn listen(
    config: &tokio_postgres::Config,
    wake: &Notify,
    tasks: &Tasks,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Ends when the client is dropped (the connection closes), also should this future be.
    let driver = tasks.spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute(LISTEN).await?;
    // Deliveries announced while this connection was away were not heard: claim now.
    wake.notify_one();
    let mut check = tokio::time::interval(LISTEN_CHECK);
    check.tick().await;
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(()) => wake.notify_one(),
                None => break,
            },
            _ = check.tick() => {
                let alive = tokio::time::timeout(CONNECT_TIMEOUT, client.simple_query("")).await;
                if !matches!(alive, Ok(Ok(_))) {
                    tracing::warn!("LISTEN connection does not answer; reconnecting");
                    break;
                }
            }
        }
    }
    drop(client);
    driver.abort();
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Prepares each statement on a new database of the server at `server` (a URL without a
/// database name), migrated to the current schema and dropped after; the names of those that
/// do not prepare, with PostgreSQL's reason.
#[cfg(test)]
pub(super) async fn unpreparable(server: &str, statements: &[(&str, &str)]) -> Vec<String> {
    let connect = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("PostgreSQL is reachable");
        tokio::spawn(connection);
        client
    };
    let admin = connect(format!("{server}/postgres")).await;
    let mut suffix = [0u8; 8];
    codmir_core::id::random_bytes(&mut suffix);
    let name = format!("codmir_sql_{}", hex::encode(suffix));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a database");
    let url = format!("{server}/{name}");
    let config = tokio_postgres::Config::from_str(&url).expect("a PostgreSQL URL");
    migrate(&config).await.expect("migrate");
    let client = connect(url).await;
    let mut failed = Vec::new();
    for (name, text) in statements {
        if let Err(e) = client.prepare(text).await {
            failed.push(format!("{name}: {e}"));
        }
    }
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop the database");
    failed
}
