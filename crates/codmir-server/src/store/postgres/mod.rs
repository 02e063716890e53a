//! The PostgreSQL backend's machinery, for several stateless `codmir serve` nodes on one
//! database: migrations under an advisory lock, the connection pool, `LISTEN`, and the row
//! access the queries (`tracker.rs`, `outbox.rs`, `queue.rs`) share.
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
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::rows::{Columns, corrupt};
use super::seal::KeyRing;
use super::{Backend, BoxFuture, FanoutCache, Job, Page, PageRequest, StoreError, StoreResult};

mod batch;
mod outbox;
mod queue;
mod tracker;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres_0001_init.sql"),
    include_str!("../migrations/postgres_0002_webhook_due.sql"),
    include_str!("../migrations/postgres_0003_operations.sql"),
    include_str!("../migrations/postgres_0004_key_use.sql"),
    include_str!("../migrations/postgres_0005_idempotency.sql"),
    include_str!("../migrations/postgres_0006_fanout_cache.sql"),
    include_str!("../migrations/postgres_0007_events_by_id.sql"),
];
/// Any fixed number: the advisory lock that serializes migrations of nodes starting together.
const MIGRATION_LOCK: i64 = 0x636f_646d_6972;
/// The channel commits that create deliveries notify.
const CHANNEL: &str = "codmir_deliveries";
/// How long to wait for a connection to open, or for a free one in the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a unit of work may wait for PostgreSQL's answers. A server that went away
/// closes the connection and fails at once; one cut off by the network answers nothing, and
/// without this bound a request would hang until TCP gave up (minutes). Units of work take
/// milliseconds; the slowest (a replay of 10,000 events) well under a second.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);
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
    checked: tokio::sync::mpsc::UnboundedSender<Box<dyn Job>>,
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
        for _ in 0..(pool_size / 4).max(1) {
            tokio::spawn(batch::batcher(
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
            checked,
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
        let conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => return job.finish(Err(e.into())),
        };
        let began = std::time::Instant::now();
        let run = async {
            conn.batch_execute(begin).await?;
            let ok = {
                let mut tx = PgTx {
                    client: &conn,
                    keys: keys.as_deref(),
                    fanout: &fanout,
                    batch: None,
                };
                job.run(&mut tx).await
            };
            conn.batch_execute(if ok { "COMMIT" } else { "ROLLBACK" })
                .await?;
            Ok(())
        };
        let result: StoreResult<()> = match tokio::time::timeout(JOB_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => {
                // Mid-transaction in an unknown state: closed, never back in the pool. If the
                // COMMIT was sent, whether it took is unknown; the caller is told the database
                // was unreachable, which is what a retry with the same key is for.
                drop(Object::take(conn));
                return job.finish(Err(StoreError::Unreachable {
                    context: format!("no answer from PostgreSQL within {JOB_TIMEOUT:?}"),
                    source: None,
                }));
            }
        };
        if result.is_err() {
            let _ = conn.batch_execute("ROLLBACK").await;
        } else if begin == "BEGIN" {
            crate::telemetry::commit("postgres", 1, began.elapsed());
        }
        job.finish(result);
    }
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
        if !job.guarded() {
            return Box::pin(async move { self.checked.send(job).map_err(|_| StoreError::Closed) });
        }
        let (pool, shared) = (self.pool.clone(), self.shared());
        tokio::spawn(async move { Self::run_job(&pool, shared, job, "BEGIN").await });
        Box::pin(async { Ok(()) })
    }

    fn submit_read(&self, job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>> {
        let (pool, shared) = (self.pool.clone(), self.shared());
        tokio::spawn(async move {
            Self::run_job(
                &pool,
                shared,
                job,
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            )
            .await
        });
        Box::pin(async { Ok(()) })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.pool.close();
        Box::pin(async {})
    }

    fn releases_all_leases_on_start(&self) -> bool {
        false
    }

    fn subscribe(&self, wake: Arc<Notify>) {
        let config = self.config.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen(&config, &wake).await {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                }
                // Whatever was notified while disconnected is picked up by the engine's poll.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// Holds a connection that `LISTEN`s and wakes the engine on each notification.
async fn listen(
    config: &tokio_postgres::Config,
    wake: &Notify,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let driver = tokio::spawn(async move {
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
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
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

struct PgTx<'c> {
    client: &'c Object,
    /// Seals webhook secrets written and opens those read, when the store has keys.
    keys: Option<&'c KeyRing>,
    /// The fan-out's webhooks, shared by this node's units of work.
    fanout: &'c FanoutCache,
    /// Set when the unit runs in a batch of checked units (`batch.rs`).
    batch: Option<batch::InBatch<'c>>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A row decoder shared by both backends (`super::rows`).
type Decode<T> = fn(&dyn Columns) -> StoreResult<T>;

impl PgTx<'_> {
    async fn rows(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        self.before(sql).await?;
        let rows = async {
            let stmt = self.client.prepare_cached(sql).await?;
            Ok(self.client.query(&stmt, params).await?)
        };
        self.after(rows.await)
    }

    async fn one<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        decode: Decode<T>,
    ) -> StoreResult<Option<T>> {
        self.before(sql).await?;
        self.one_beside(sql, params, decode).await
    }

    /// [`PgTx::one`] for a read of none of the tables a batch holds rows back for: they
    /// need not go in first.
    async fn one_beside<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        decode: Decode<T>,
    ) -> StoreResult<Option<T>> {
        let row = async {
            let stmt = self.client.prepare_cached(sql).await?;
            Ok(self.client.query_opt(&stmt, params).await?)
        };
        self.after(row.await)?
            .as_ref()
            .map(|r| decode(r))
            .transpose()
    }

    async fn all<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        decode: Decode<T>,
    ) -> StoreResult<Vec<T>> {
        self.rows(sql, params)
            .await?
            .iter()
            .map(|r| decode(r))
            .collect()
    }

    async fn exec(&self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        self.before(sql).await?;
        self.after(execute(self.client, sql, params).await)
    }

    /// A paged query whose last two parameters are the cursor (`$n::text`) and the limit.
    async fn page<T>(
        &self,
        sql: &str,
        head: &[&(dyn ToSql + Sync)],
        page: &PageRequest,
        decode: Decode<T>,
    ) -> StoreResult<Page<T>> {
        let limit = i64::from(page.limit) + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = head.to_vec();
        params.push(&page.after);
        params.push(&limit);
        let items = self.all(sql, &params, decode).await?;
        Ok(Page::from_overfetch(items, page.limit))
    }
}

/// Runs a statement prepared once per connection; the rows it changed.
async fn execute(client: &Object, sql: &str, params: Params<'_>) -> StoreResult<u64> {
    let stmt = client.prepare_cached(sql).await?;
    Ok(client.execute(&stmt, params).await?)
}

/// A value that is not what the column should hold is corrupt data, not a failed database.
fn column<'r, T: FromSql<'r>>(row: &'r Row, i: usize) -> StoreResult<T> {
    row.try_get(i)
        .map_err(|e| corrupt(&format!("column {i}"), e))
}

impl Columns for Row {
    fn text(&self, i: usize) -> StoreResult<String> {
        column(self, i)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        column(self, i)
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        self.opt_int(i)?
            .ok_or_else(|| corrupt(&format!("column {i}"), "NULL where a number was expected"))
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        // Counts and status codes are INT4, times INT8 (the schema's choice per column).
        match self.columns().get(i).map(|c| c.type_()) {
            Some(&Type::INT4) => Ok(column::<Option<i32>>(self, i)?.map(i64::from)),
            _ => column(self, i),
        }
    }
    fn flag(&self, i: usize) -> StoreResult<bool> {
        column(self, i)
    }
    fn bytes(&self, i: usize) -> StoreResult<Vec<u8>> {
        column(self, i)
    }
}
