//! The SQLite backend's machinery: opening and migrating the file, one writer thread that
//! group-commits units of work, a small pool of read connections, and the row access the
//! shared queries run on (`Conn`). WAL mode, `synchronous=FULL`: a commit is on disk when it
//! returns. SQLite's own claims and retention are in `queue.rs`.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use codmir_core::time::Timestamp;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags, Row};
use tokio::sync::{Semaphore, mpsc};

use super::conn::{Arg, Conn, Decode, args};
use super::rows::{Columns, corrupt, json_list};
use super::seal::KeyRing;
use super::sql::{self, Sql};
use super::{
    Access, Backend, BoxFuture, FanoutCache, Job, Lease, Leased, Ran, Sharing, StoreError,
    StoreResult,
};

mod queue;

/// Units of work committed together at most; more wait for the next commit.
const MAX_BATCH: usize = 512;
/// Queued units of work before callers wait (backpressure).
const QUEUE_DEPTH: usize = 4096;
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite_0001_init.sql"),
    include_str!("../migrations/sqlite_0002_webhook_due.sql"),
    include_str!("../migrations/sqlite_0003_operations.sql"),
    include_str!("../migrations/sqlite_0004_key_use.sql"),
    include_str!("../migrations/sqlite_0005_idempotency.sql"),
    include_str!("../migrations/sqlite_0006_fanout_cache.sql"),
    include_str!("../migrations/sqlite_0007_events_by_id.sql"),
    include_str!("../migrations/sqlite_0008_readiness.sql"),
    include_str!("../migrations/sqlite_0009_idempotency_claims.sql"),
    include_str!("../migrations/sqlite_0010_cancel_reason.sql"),
    include_str!("../migrations/sqlite_0011_webhook_expiry.sql"),
    include_str!("../migrations/sqlite_0012_attempt_headers.sql"),
    include_str!("../migrations/sqlite_0013_sequences.sql"),
    include_str!("../migrations/sqlite_0014_ordering.sql"),
];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) if e.to_string().contains("UNIQUE") => {
                StoreError::Conflict(std::sync::Arc::new(e))
            }
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(std::sync::Arc::new(e)),
            _ => StoreError::database("SQLite", e),
        }
    }
}

pub struct SqliteStore {
    writes: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Readers>,
}

struct Readers {
    keys: Option<Arc<KeyRing>>,
    fanout: Arc<FanoutCache>,
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

fn open_connection(path: &Path, access: Access) -> StoreResult<Connection> {
    let flags = match access {
        Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        Access::Write => {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA cache_size = -16000; \
         PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates a new database file readable by its owner only (SQLite gives its `-wal` and `-shm`
/// files the same mode): it holds every webhook's secret. An existing file is left as it is.
fn create_private(path: &Path) -> StoreResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::database(
            format!("cannot create {}", path.display()),
            e,
        )),
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    // IMMEDIATE takes the write lock first, so two processes starting at once migrate in turn.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::failed(format!(
            "the database has schema version {version}, newer than this codmir ({known}); upgrade codmir"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()?;
    Ok(())
}

/// Polls a future that must be ready at once: every SQLite operation is synchronous, so a
/// unit of work over [`SqliteTx`] never waits. `None` means it tried to (a bug), or panicked:
/// a unit's panic must not end the writer thread, which every later write needs.
fn run_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    }));
    match polled {
        Ok(Poll::Ready(v)) => Some(v),
        Ok(Poll::Pending) => None,
        Err(_) => {
            tracing::error!("a unit of work panicked; it was rolled back");
            None
        }
    }
}

impl SqliteStore {
    pub async fn open(path: &str, keys: Option<Arc<KeyRing>>) -> StoreResult<Self> {
        let path = Path::new(path).to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, keys))
            .await
            .map_err(|e| StoreError::database("opening the SQLite database", e))?
    }

    fn open_blocking(path: &Path, keys: Option<Arc<KeyRing>>) -> StoreResult<Self> {
        create_private(path)?;
        let mut writer = open_connection(path, Access::Write).map_err(|e| match e {
            StoreError::Database { source, .. } => StoreError::Database {
                context: format!("cannot open {}", path.display()),
                source,
            },
            other => other,
        })?;
        migrate(&mut writer)?;
        let conns = (0..READERS)
            .map(|_| open_connection(path, Access::Read))
            .collect::<StoreResult<Vec<_>>>()?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let fanout = Arc::new(FanoutCache::default());
        let handle = std::thread::Builder::new()
            .name("codmir-sqlite-writer".into())
            .spawn({
                let (keys, fanout) = (keys.clone(), fanout.clone());
                move || writer_loop(writer, rx, keys, &fanout)
            })
            .map_err(|e| StoreError::database("cannot start the writer thread", e))?;
        Ok(Self {
            writes: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(Readers {
                keys,
                fanout,
                conns: Mutex::new(conns),
                permits: Arc::new(Semaphore::new(READERS)),
            }),
        })
    }
}

// Never inlined into the thread's closure: profiles (`codmir-bench --scenario cost`) find
// the writer thread by this frame. Called once per store.
#[inline(never)]
fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    keys: Option<Arc<KeyRing>>,
    fanout: &FanoutCache,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = rx.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = std::time::Instant::now();
        let result = run_batch(&mut conn, &mut batch, keys.as_deref(), fanout);
        crate::telemetry::commit("sqlite", batch.len(), began.elapsed());
        if let Err(e) = &result {
            tracing::error!(error = %super::chain(e), size = batch.len(), "a write batch failed to commit");
        }
        for job in batch.drain(..) {
            job.finish(result.clone());
        }
    }
}

fn run_batch(
    conn: &mut Connection,
    batch: &mut [Box<dyn Job>],
    keys: Option<&KeyRing>,
    fanout: &FanoutCache,
) -> StoreResult<()> {
    // Cached statements: the same few are run for every unit of work.
    fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }
    exec(conn, "BEGIN IMMEDIATE")?;
    let result = (|| {
        if let [job] = batch {
            // Alone in its transaction, a unit needs no savepoint (whose statement journal
            // copies every page it touches): a failure rolls the transaction back.
            let ran = {
                let mut tx = SqliteTx {
                    conn: &mut *conn,
                    keys,
                    fanout,
                };
                run_ready(job.run(&mut tx)).unwrap_or(Ran::Failed(None))
            };
            return exec(
                conn,
                if matches!(ran, Ran::Done) {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                },
            );
        }
        for job in batch.iter_mut() {
            let sharing = job.sharing();
            if sharing == Sharing::Isolated {
                exec(conn, "SAVEPOINT job")?;
            }
            let changes = conn.total_changes();
            let ran = {
                let mut tx = SqliteTx {
                    conn: &mut *conn,
                    keys,
                    fanout,
                };
                run_ready(job.run(&mut tx)).unwrap_or(Ran::Failed(None))
            };
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (it may on SQLITE_FULL, an I/O
                // error, out of memory): nothing of this commit is stored, and the units
                // after this one must not run outside a transaction, each committing alone.
                return Err(match ran {
                    Ran::Failed(Some(e)) if e.is_transient() => e,
                    _ => StoreError::Unreachable {
                        context: "the database rolled the commit back (disk full or I/O error); nothing of it was kept".into(),
                        source: None,
                    },
                });
            }
            match (sharing, ran) {
                (Sharing::Isolated, Ran::Done) => exec(conn, "RELEASE job")?,
                (Sharing::Isolated, _) => {
                    exec(conn, "ROLLBACK TO job")?;
                    exec(conn, "RELEASE job")?;
                }
                (Sharing::Checked, Ran::Done) => {}
                // Its checks could only read (`ReadTx`).
                (Sharing::Checked, Ran::Refused) => {
                    debug_assert_eq!(conn.total_changes(), changes, "a check wrote");
                }
                (Sharing::Checked, Ran::Failed(cause)) => return Err(super::spoiled_by(cause)),
            }
        }
        exec(conn, "COMMIT")
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

impl Backend for SqliteStore {
    fn submit_write(&self, job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>> {
        let sender = self
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            let sender = sender.ok_or(StoreError::Closed)?;
            sender.send(job).await.map_err(|_| StoreError::Closed)
        })
    }

    fn submit_read(&self, mut job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>> {
        let readers = self.readers.clone();
        Box::pin(async move {
            let permit = readers
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Closed)?;
            tokio::task::spawn_blocking(move || {
                let conn = readers
                    .conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop();
                let Some(mut conn) = conn else {
                    job.finish(Err(StoreError::Closed));
                    return;
                };
                let result = (|| {
                    conn.execute_batch("BEGIN")?;
                    let ok = {
                        let mut tx = SqliteTx {
                            conn: &mut conn,
                            keys: readers.keys.as_deref(),
                            fanout: &readers.fanout,
                        };
                        run_ready(job.run(&mut tx))
                    };
                    conn.execute_batch("COMMIT")?;
                    ok.map(|_| ())
                        .ok_or_else(|| StoreError::failed("a read did not complete"))
                })();
                job.finish(result);
                readers
                    .conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
                drop(permit);
            });
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // Dropping the sender lets the writer drain what is queued, commit it and stop (units
        // submitted from now on are refused).
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Box::pin(async move {
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
            // Reads in flight finish first: every reader's permit comes back; then reads are
            // refused.
            if let Ok(all) = self.readers.permits.acquire_many(READERS as u32).await {
                all.forget();
            }
            self.readers.permits.close();
        })
    }

    fn releases_all_leases_on_start(&self) -> bool {
        true
    }
}

/// A unit of work's view of the connection, inside the transaction the backend opened.
struct SqliteTx<'c> {
    conn: &'c mut Connection,
    /// Seals webhook secrets written and opens those read, when the store has keys.
    keys: Option<&'c KeyRing>,
    /// The fan-out's webhooks, shared by the writer's units of work.
    fanout: &'c FanoutCache,
}

impl SqliteTx<'_> {
    fn run_all<T>(&self, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> StoreResult<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(decode(r)?);
        }
        Ok(out)
    }

    fn run_one<T>(&self, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> StoreResult<Option<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        rows.next()?.map(|r| decode(r)).transpose()
    }

    fn run_exec(&self, sql: &str, args: &[Arg<'_>]) -> StoreResult<u64> {
        let n = self
            .conn
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }
}

/// Every SQLite call is synchronous: each future is ready when made, so a unit of work over
/// [`SqliteTx`] never waits (`run_ready`).
impl Conn for SqliteTx<'_> {
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
        std::future::ready(self.run_exec(sql.sqlite, args))
    }

    fn all<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send {
        std::future::ready(self.run_all(sql.sqlite, args, decode))
    }

    fn one<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> impl Future<Output = StoreResult<Option<T>>> + Send {
        std::future::ready(self.run_one(sql.sqlite, args, decode))
    }

    fn webhooks_version(&mut self, ws: &str) -> impl Future<Output = StoreResult<i64>> + Send {
        let v = self.run_one(sql::WEBHOOKS_VERSION.sqlite, args![ws], |r| r.int(0));
        std::future::ready(v.map(|v| v.unwrap_or(0)))
    }

    fn announce(&mut self) -> impl Future<Output = StoreResult<()>> + Send {
        // One node: the API wakes its own engine after the commit.
        std::future::ready(Ok(()))
    }

    fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> impl Future<Output = StoreResult<Vec<Leased>>> + Send {
        std::future::ready(self.claim_due_now(lease, now, limit, skip))
    }

    fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<(u64, u64, u64)>> + Send {
        std::future::ready(self.delete_old_now(delivery_floor, event_floor, limit))
    }
}

/// Arguments bind as they are; a list as its JSON array, which `json_each` reads.
impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Null => ToSqlOutput::Owned(Value::Null),
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Int(n) => ToSqlOutput::Owned(Value::Integer(n)),
            Arg::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(b))),
            Arg::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Arg::List(items) => ToSqlOutput::Owned(Value::Text(json_list(items))),
        })
    }
}

/// A value that is not what the column should hold is corrupt data, not a failed database.
fn column<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize) -> StoreResult<T> {
    row.get(i).map_err(|e| corrupt(&format!("column {i}"), e))
}

impl Columns for Row<'_> {
    fn text(&self, i: usize) -> StoreResult<String> {
        column(self, i)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        column(self, i)
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        column(self, i)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        column(self, i)
    }
    fn flag(&self, i: usize) -> StoreResult<bool> {
        column(self, i)
    }
    fn bytes(&self, i: usize) -> StoreResult<Vec<u8>> {
        match self
            .get_ref(i)
            .map_err(|e| corrupt(&format!("column {i}"), e))?
        {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            other => Err(corrupt(
                &format!("column {i}"),
                format!("{:?} where a blob was expected", other.data_type()),
            )),
        }
    }
}

/// Prepares each statement on a new database at `path`, migrated to the current schema;
/// the names of those that do not prepare, with SQLite's reason.
#[cfg(test)]
pub(super) fn unpreparable(path: &Path, statements: &[(&str, &str)]) -> Vec<String> {
    let mut conn = open_connection(path, Access::Write).expect("open");
    migrate(&mut conn).expect("migrate");
    statements
        .iter()
        .filter_map(|(name, text)| conn.prepare(text).err().map(|e| format!("{name}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::store::{Store, StoreError};

    /// The writer polls each unit once: a unit that waits for anything (a network call, a
    /// timer) cannot hold the transaction, and every other unit of the batch, while it waits.
    #[tokio::test]
    async fn a_unit_of_work_that_waits_is_refused_and_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db").display());
        let store = Store::open(&url).await.unwrap();
        let waited: Result<(), StoreError> = store
            .write(|_| {
                Box::pin(async {
                    std::future::pending::<()>().await;
                    Ok(())
                })
            })
            .await;
        assert!(
            matches!(&waited, Err(StoreError::Database { context, .. }) if context.contains("did not complete")),
            "{waited:?}"
        );
        // A unit that panics is answered likewise, and the writer goes on.
        let panicked: Result<(), StoreError> = store
            .write(|_| Box::pin(async { panic!("a bug in a unit of work") }))
            .await;
        assert!(panicked.is_err(), "{panicked:?}");
        let count = store
            .read(|tx| Box::pin(async move { tx.workspace_count().await }))
            .await;
        assert_eq!(count.unwrap(), 0, "the store still serves");
        store.close().await;
    }
}
