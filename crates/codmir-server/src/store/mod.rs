//! The store: one interface over SQLite and PostgreSQL that every query goes through.
//!
//! Callers describe a unit of work as a closure over [`Tx`], the row-level operations (by
//! area: [`TrackerTx`], [`OutboxTx`], [`QueueTx`]), and hand it to [`Store::write`] or [`Store::read`].
//! A backend runs each write in its own
//! transaction scope and may group many of them into one commit (group commit): a caller's
//! future resolves only after the commit that made its work durable, and a unit of work that
//! returns an error is rolled back alone, leaving the others of its batch intact.
//!
//! Architecture invariant: SQL lives only in the backend modules; nothing above `store` knows
//! which database it runs on.

mod conn;
pub mod deadline;
mod error;
mod fanout;
mod postgres;
mod queries;
mod rows;
pub mod seal;
#[macro_use]
mod sql;
mod sqlite;
mod tx;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

pub use error::{Cause, StoreError, StoreResult, chain};
pub(crate) use fanout::FanoutCache;
pub use fanout::Webhooks;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use tx::{
    ApiKeyRecord, DeliveryQuery, EventQuery, Idempotent, KeyInfo, Lease, Leased, OutboxTx, Outcome,
    Page, PageRequest, QueueFigures, QueueTx, ReadTx, StatusCount, StoredEvent, TrackerTx, Tx,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a unit of work may share a commit with others (SQLite's group commit, PostgreSQL's
/// batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// It may fail at any point, so it is undone alone: in a shared commit SQLite gives it a
    /// savepoint of its own; PostgreSQL gives it a transaction of its own.
    Isolated,
    /// Written in two phases ([`Store::write_checked`]): checks that may refuse but cannot
    /// write, then writes that only the database can fail. It needs no savepoint; should its
    /// writes fail all the same, the whole commit it shares is rolled back.
    Checked,
}

/// How a unit of work ran, as its backend must know it.
#[derive(Debug)]
pub enum Ran {
    /// It succeeded: what it wrote stays.
    Done,
    /// Its checks refused it, before it could write anything: nothing to undo.
    Refused,
    /// It failed after it may have written: undo it. `cause` is the store's error, when the
    /// failure was the database's.
    Failed(Option<StoreError>),
}

/// A unit of work queued to a backend. `run` executes it inside the backend's transaction
/// scope and says how it went; `finish` reports the outcome to the caller once the commit
/// is known.
pub trait Job: Send {
    fn sharing(&self) -> Sharing;
    /// When its caller must be answered by (`deadline`): a backend gives up on it then.
    fn deadline(&self) -> tokio::time::Instant;
    fn run<'a>(&'a mut self, tx: &'a mut dyn Tx) -> BoxFuture<'a, Ran>;
    fn finish(self: Box<Self>, commit: StoreResult<()>);
    /// The resource whose rows it locks (a ticket's id), if one: a PostgreSQL batch runs its
    /// units in the order of these keys, so that two batches never take two resources' locks
    /// in opposite orders (a deadlock, which would roll both back).
    fn lock_key(&self) -> Option<&str> {
        None
    }
}

/// What a unit answers once its commit is known: its own error if it failed (it was undone
/// whatever became of the commit), else the commit's.
fn answer<T, E: From<StoreError>>(
    commit: StoreResult<()>,
    outcome: Option<Result<T, E>>,
) -> Result<T, E> {
    match (commit, outcome) {
        (Ok(()), Some(outcome)) => outcome,
        (Err(_), Some(Err(e))) => Err(e),
        (Err(e), _) => Err(e.into()),
        // It did not run, or did not finish when polled (a SQLite unit may not wait).
        (Ok(()), None) => Err(StoreError::failed("the unit of work did not complete").into()),
    }
}

/// A unit of work in one phase ([`Store::write`], [`Store::read`]).
struct TypedJob<F, T, E> {
    work: Option<F>,
    deadline: tokio::time::Instant,
    outcome: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for TypedJob<F, T, E>
where
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn sharing(&self) -> Sharing {
        Sharing::Isolated
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    fn run<'a>(&'a mut self, tx: &'a mut dyn Tx) -> BoxFuture<'a, Ran> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return Ran::Failed(None);
            };
            let result = work(tx).await;
            let ran = if result.is_ok() {
                Ran::Done
            } else {
                Ran::Failed(None)
            };
            self.outcome = Some(result);
            ran
        })
    }

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        // The caller may have gone away (request cancelled); the work is committed regardless.
        let _ = self.reply.send(answer(commit, self.outcome));
    }
}

/// A unit of work in two phases ([`Store::write_checked`]).
struct CheckedJob<C, W, K, T, E> {
    phases: Option<(C, W)>,
    lock_key: Option<String>,
    deadline: tokio::time::Instant,
    outcome: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
    _checked: std::marker::PhantomData<fn() -> K>,
}

impl<C, W, K, T, E> Job for CheckedJob<C, W, K, T, E>
where
    C: for<'t> FnOnce(&'t mut dyn ReadTx) -> BoxFuture<'t, Result<K, E>> + Send + 'static,
    W: for<'t> FnOnce(&'t mut dyn Tx, K) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    K: Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn sharing(&self) -> Sharing {
        Sharing::Checked
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    fn run<'a>(&'a mut self, tx: &'a mut dyn Tx) -> BoxFuture<'a, Ran> {
        Box::pin(async move {
            let Some((check, write)) = self.phases.take() else {
                return Ran::Failed(None);
            };
            let checked = match check(&mut *tx).await {
                Ok(checked) => checked,
                Err(e) => {
                    self.outcome = Some(Err(e));
                    return Ran::Refused;
                }
            };
            match write(tx, checked).await {
                Ok(value) => {
                    self.outcome = Some(Ok(value));
                    Ran::Done
                }
                Err(e) => {
                    self.outcome = Some(Err(e.clone().into()));
                    Ran::Failed(Some(e))
                }
            }
        })
    }

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        let _ = self.reply.send(answer(commit, self.outcome));
    }

    fn lock_key(&self) -> Option<&str> {
        self.lock_key.as_deref()
    }
}

/// What the other units of a commit that a checked unit spoiled are told: the database's
/// own failure when that was the cause (it was down, or full), else that their commit was
/// rolled back with it.
pub(crate) fn spoiled_by(cause: Option<StoreError>) -> StoreError {
    match cause {
        Some(e) if e.is_transient() => e,
        _ => StoreError::RolledBack {
            context: "a unit of work sharing the commit failed while writing".into(),
        },
    }
}

/// What a database backend provides: somewhere to run units of work.
pub trait Backend: Send + Sync {
    fn submit_write(&self, job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>>;
    fn submit_read(&self, job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>>;
    /// Stops accepting work and waits until queued work is committed.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// Leases held by a previous run of this node that can be dropped at once on start. SQLite
    /// has one node, so all of them; a shared database waits for leases to expire.
    fn releases_all_leases_on_start(&self) -> bool;
    /// Wakes `wake` when another node commits new deliveries. One node alone needs nothing.
    fn subscribe(&self, _wake: Arc<tokio::sync::Notify>) {}
}

/// Options of [`Store::open_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the PostgreSQL pool of this node (SQLite has one writer and 4 readers).
    pub pool_size: usize,
    /// Webhook secrets are sealed under these keys; `None` stores them as given (tests, and
    /// databases opened only for API keys).
    pub keys: Option<Arc<seal::KeyRing>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            keys: None,
        }
    }
}

/// The file of a `sqlite://PATH` (or `sqlite:PATH`) URL; `None` for another database.
pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
}

/// Whether a unit of work reads a snapshot or writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    Read,
    Write,
}

/// A cheap, cloneable handle on the database.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `url`.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_with(url, &StoreOptions::default()).await
    }

    /// Opens the database at `url`: `sqlite://PATH` or `postgres://…` (also `postgresql://`).
    pub async fn open_with(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let backend: Arc<dyn Backend> = if let Some(path) = sqlite_path(url) {
            Arc::new(SqliteStore::open(path, options.keys.clone()).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(PgStore::open(url, options.pool_size, options.keys.clone()).await?)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        Ok(Self { backend })
    }

    /// Runs `work` in a write transaction; resolves after the commit that holds it. A unit
    /// that fails is undone alone (`Sharing::Isolated`).
    pub async fn write<F, T, E>(&self, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(Access::Write, |reply| {
            Box::new(TypedJob {
                work: Some(work),
                deadline: deadline::current(),
                outcome: None,
                reply,
            })
        })
        .await
    }

    /// A write in two phases: `check` reads and may refuse (it is handed reads only, so it
    /// cannot write), then `write` writes what the check decided and can fail only with the
    /// database's own error. Such a unit needs no undo of its own, so it may share a commit
    /// cheaply: SQLite runs it without a savepoint (whose statement journal copies each page
    /// a unit touches, about a fifth of the writer's work in a busy batch), PostgreSQL groups
    /// such units into one transaction per batch with their ticket, event and delivery rows
    /// inserted set-based. Should `write` fail all the same, the whole commit is rolled back
    /// and every other unit of it answered [`StoreError::RolledBack`] (or the database's own
    /// failure), so nothing half-written is ever kept.
    pub async fn write_checked<C, W, K, T, E>(
        &self,
        lock_key: Option<String>,
        check: C,
        write: W,
    ) -> Result<T, E>
    where
        C: for<'t> FnOnce(&'t mut dyn ReadTx) -> BoxFuture<'t, Result<K, E>> + Send + 'static,
        W: for<'t> FnOnce(&'t mut dyn Tx, K) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
        K: Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(Access::Write, |reply| {
            Box::new(CheckedJob {
                phases: Some((check, write)),
                lock_key,
                deadline: deadline::current(),
                outcome: None,
                reply,
                _checked: std::marker::PhantomData,
            })
        })
        .await
    }

    /// Runs `work` on a read-only snapshot.
    pub async fn read<F, T, E>(&self, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(Access::Read, |reply| {
            Box::new(TypedJob {
                work: Some(work),
                deadline: deadline::current(),
                outcome: None,
                reply,
            })
        })
        .await
    }

    /// Queues the job `make` builds around its reply channel; resolves with its answer.
    async fn submit<T, E: From<StoreError>>(
        &self,
        access: Access,
        make: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Box<dyn Job>,
    ) -> Result<T, E> {
        let (reply, answer) = oneshot::channel();
        let job = make(reply);
        match access {
            Access::Read => self.backend.submit_read(job).await?,
            Access::Write => self.backend.submit_write(job).await?,
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn close(&self) {
        self.backend.close().await;
    }

    pub fn releases_all_leases_on_start(&self) -> bool {
        self.backend.releases_all_leases_on_start()
    }

    pub fn subscribe(&self, wake: Arc<tokio::sync::Notify>) {
        self.backend.subscribe(wake);
    }
}
