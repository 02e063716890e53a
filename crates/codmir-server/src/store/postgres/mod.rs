//! The PostgreSQL backend's machinery, for several stateless `codmir serve` nodes on one
//! database: migrations under an advisory lock, the connection pool, `LISTEN`, and the row
//! access the shared queries run on (`Conn`); its own claims, retention and set-based
//! outcomes are in `queue.rs`.
//!
//! Each unit of work runs in its own transaction on a pooled connection, in a task of its own
//! so that a caller that goes away cannot leave a connection mid-transaction; checked units
//! (`Store::write_checked`) are grouped into batches with set-based inserts (`batch.rs`). Due deliveries
//! are claimed with `FOR UPDATE SKIP LOCKED` and a lease; commits that create deliveries
//! `NOTIFY` the other nodes, which `LISTEN` on a dedicated connection.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use bytes::BytesMut;
use codmir_core::time::Timestamp;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::Notify;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::conn::{Arg, Conn, Decode, HeldRow, args};
use super::rows::{Columns, corrupt};
use super::seal::KeyRing;
use super::sql::{self, Sql, postgres_only};
use crate::tasks::Tasks;

use super::{
    Backend, BoxFuture, FanoutCache, Job, Lease, Leased, Outcome, Ran, Sharing, StoreError,
    StoreResult,
};

mod batch;
mod queue;

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
        let conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => return job.finish(Err(e.into())),
        };
        let began = std::time::Instant::now();
        // Set once COMMIT is sent: a timeout from then on leaves the outcome unknown.
        let committing = std::sync::atomic::AtomicBool::new(false);
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
            committing.store(ok, std::sync::atomic::Ordering::Relaxed);
            conn.batch_execute(if ok { "COMMIT" } else { "ROLLBACK" })
                .await
                .map_err(|e| match ok {
                    true => StoreError::from(e).at_commit(),
                    false => StoreError::from(e),
                })?;
            Ok(())
        };
        let result: StoreResult<()> = match tokio::time::timeout(JOB_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => {
                // Mid-transaction in an unknown state: closed, never back in the pool. If the
                // COMMIT was sent, whether it took is unknown; the caller is told the database
                // was unreachable, which is what a retry with the same key is for.
                drop(Object::take(conn));
                let e = StoreError::Unreachable {
                    context: format!("no answer from PostgreSQL within {JOB_TIMEOUT:?}"),
                    source: None,
                };
                return job.finish(Err(
                    match committing.load(std::sync::atomic::Ordering::Relaxed) {
                        true => e.at_commit(),
                        false => e,
                    },
                ));
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

impl PgTx<'_> {
    /// Runs a query with its arguments, through the batch's hooks.
    async fn query<P>(&self, sql: &str, args: P) -> StoreResult<Vec<Row>>
    where
        P: ExactSizeIterator,
        P::Item: tokio_postgres::types::BorrowToSql,
    {
        self.before(sql).await?;
        self.query_beside(sql, args).await
    }

    /// [`PgTx::query`] for a read of none of the tables a batch holds rows back for: they
    /// need not go in first.
    async fn query_beside<P>(&self, sql: &str, args: P) -> StoreResult<Vec<Row>>
    where
        P: ExactSizeIterator,
        P::Item: tokio_postgres::types::BorrowToSql,
    {
        let rows = async {
            let stmt = self.client.prepare_cached(sql).await?;
            let stream = self.client.query_raw(&stmt, args).await?;
            Ok(futures_util::TryStreamExt::try_collect(stream).await?)
        };
        self.after(rows.await)
    }

    /// Runs a statement with its arguments, through the batch's hooks; the rows it changed.
    async fn execute<P>(&self, sql: &str, args: P) -> StoreResult<u64>
    where
        P: ExactSizeIterator,
        P::Item: tokio_postgres::types::BorrowToSql,
    {
        self.before(sql).await?;
        let n = async {
            let stmt = self.client.prepare_cached(sql).await?;
            Ok(self.client.execute_raw(&stmt, args).await?)
        };
        self.after(n.await)
    }
}

impl PgTx<'_> {
    /// A statement with arguments the driver binds as they are (arrays for `unnest`), and the
    /// rows it returns.
    async fn query_params(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        self.before(sql).await?;
        let rows = async {
            let stmt = self.client.prepare_cached(sql).await?;
            Ok(self.client.query(&stmt, params).await?)
        };
        self.after(rows.await)
    }
}

impl Conn for PgTx<'_> {
    fn keys(&self) -> Option<&KeyRing> {
        self.keys
    }

    fn fanout(&self) -> &FanoutCache {
        self.fanout
    }

    fn exec(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<u64>> + Send {
        self.execute(sql.postgres, args.iter())
    }

    async fn all<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> StoreResult<Vec<T>> {
        let rows = self.query(sql.postgres, args.iter()).await?;
        rows.iter().map(|r| decode(r)).collect()
    }

    async fn one<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> StoreResult<Option<T>> {
        let rows = self.query(sql.postgres, args.iter()).await?;
        rows.first().map(|r| decode(r)).transpose()
    }

    fn hold(&mut self, row: HeldRow<'_>) -> bool {
        self.hold_row(row)
    }

    async fn webhooks_version(&mut self, ws: &str) -> StoreResult<i64> {
        if let Some(v) = self.batch_version(ws) {
            return Ok(v);
        }
        // The version is in `workspaces`, which no batch holds rows back for.
        let rows = self
            .query_beside(sql::WEBHOOKS_VERSION.postgres, args![ws].iter())
            .await?;
        let v = match rows.first() {
            Some(r) => r.int(0)?,
            None => 0,
        };
        self.remember_version(ws, v);
        Ok(v)
    }

    async fn announce(&mut self) -> StoreResult<()> {
        self.execute(postgres_only::NOTIFY, std::iter::empty::<Arg<'_>>())
            .await?;
        Ok(())
    }

    fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> impl Future<Output = StoreResult<Vec<Leased>>> + Send {
        self.claim(lease, now, limit, skip)
    }

    fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<(u64, u64, u64)>> + Send {
        self.retain(delivery_floor, event_floor, limit)
    }

    fn record_outcomes_at_once(
        &mut self,
        outcomes: &[Outcome],
    ) -> impl Future<Output = StoreResult<Option<Vec<bool>>>> + Send {
        self.outcomes_set_based(outcomes)
    }
}

/// Arguments bind by the parameter's declared type: an integer as the column's INT2, INT4 or
/// INT8 (out of its range is an error, never a silent cut), a list as an array.
impl ToSql for Arg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Text(s) => s.to_sql(ty, out),
            Arg::Int(n) => match *ty {
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Arg::Bool(b) => b.to_sql(ty, out),
            Arg::Bytes(b) => b.to_sql(ty, out),
            Arg::List(items) => items.to_sql(ty, out),
        }
    }

    /// Every type, as far as the driver's static check goes: which types an argument fits
    /// depends on its variant, checked in `to_sql_checked`.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let fits = match self {
            Arg::Null => true,
            Arg::Text(_) => <&str as ToSql>::accepts(ty),
            Arg::Int(_) => matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8),
            Arg::Bool(_) => <bool as ToSql>::accepts(ty),
            Arg::Bytes(_) => <&[u8] as ToSql>::accepts(ty),
            Arg::List(_) => <&[String] as ToSql>::accepts(ty),
        };
        if !fits {
            return Err(format!("{self:?} cannot be bound as {ty}").into());
        }
        self.to_sql(ty, out)
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

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
