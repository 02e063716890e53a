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
    Page, PageRequest, QueueTx, StoredEvent, TrackerTx, Tx,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A unit of work queued to a backend. `run` executes it inside the backend's transaction
/// scope and says whether it succeeded (false rolls back its scope); `finish` reports the
/// outcome to the caller once the commit is known.
pub trait Job: Send {
    fn run<'a>(&'a mut self, tx: &'a mut dyn Tx) -> BoxFuture<'a, bool>;
    fn finish(self: Box<Self>, commit: StoreResult<()>);
    /// Whether a failure of this unit after it wrote must be undone alone, leaving the rest of
    /// its commit intact (a savepoint around it). False for units written by
    /// [`Store::write_checked`].
    fn guarded(&self) -> bool {
        true
    }
}

struct TypedJob<F, T, E> {
    guarded: bool,
    work: Option<F>,
    outcome: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for TypedJob<F, T, E>
where
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn run<'a>(&'a mut self, tx: &'a mut dyn Tx) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return false;
            };
            let result = work(tx).await;
            let ok = result.is_ok();
            self.outcome = Some(result);
            ok
        })
    }

    fn guarded(&self) -> bool {
        self.guarded
    }

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        let result = match (commit, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            // A failed unit of work was rolled back: its own error is the answer.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), None) => Err(StoreError::failed("the unit of work did not run").into()),
        };
        // The caller may have gone away (request cancelled); the work is committed regardless.
        let _ = self.reply.send(result);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write { guarded: bool },
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

    /// Runs `work` in a write transaction; resolves after the commit that holds it.
    pub async fn write<F, T, E>(&self, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(work, Mode::Write { guarded: true }).await
    }

    /// [`Store::write`] for a unit whose every refusal comes before its first write, so that
    /// only the database itself can fail it after writing. SQLite then runs it without a
    /// savepoint of its own (whose statement journal copies each page the unit touches, about
    /// a fifth of the writer's work in a busy batch); should it fail after writing all the
    /// same, its whole commit is rolled back and every unit of it answered with a transient
    /// error, so nothing half-written is ever kept. PostgreSQL groups such units into one
    /// transaction per batch, with their ticket, event and delivery rows inserted set-based.
    pub async fn write_checked<F, T, E>(&self, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(work, Mode::Write { guarded: false }).await
    }

    /// [`Store::write`] when `guarded`, else [`Store::write_checked`].
    pub async fn write_as<F, T, E>(&self, guarded: bool, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(work, Mode::Write { guarded }).await
    }

    /// Runs `work` on a read-only snapshot.
    pub async fn read<F, T, E>(&self, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(work, Mode::Read).await
    }

    async fn submit<F, T, E>(&self, work: F, mode: Mode) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob {
            guarded: mode != (Mode::Write { guarded: false }),
            work: Some(work),
            outcome: None,
            reply,
        });
        if mode == Mode::Read {
            self.backend.submit_read(job).await?;
        } else {
            self.backend.submit_write(job).await?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
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
