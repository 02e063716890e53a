//! The store: one interface over SQLite (and, later, PostgreSQL) that every query goes through.
//!
//! Callers describe a unit of work as a closure over [`Tx`], the row-level operations, and
//! hand it to [`Store::write`] or [`Store::read`]. A backend runs each write in its own
//! transaction scope and may group many of them into one commit (group commit): a caller's
//! future resolves only after the commit that made its work durable, and a unit of work that
//! returns an error is rolled back alone, leaving the others of its batch intact.
//!
//! Architecture invariant: SQL lives only in the backend modules; nothing above `store` knows
//! which database it runs on.

mod postgres;
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use codmir_core::event::Event;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Comment, Member, Principal, Project, Ticket, User, Workspace};
use codmir_core::webhook::{Attempt, Delivery, DeliveryStatus, Webhook};
use tokio::sync::oneshot;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What can go wrong below the domain: the database failed, or holds data we cannot read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("a row in the database is invalid: {0}")]
    Corrupt(String),
    /// A uniqueness constraint refused the write (two writers raced for the same thing).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the store is closed")]
    Closed,
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A page request: at most `limit` items older than the cursor `after` (an id), newest first.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Trims a list fetched with `limit + 1` rows to `limit` and records whether more exist.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32) -> Self {
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Self { items, has_more }
    }
}

/// An API key as stored: only the SHA-256 of its secret part is kept.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub workspace_id: String,
    pub user_id: String,
    pub secret_hash: [u8; 32],
    pub created_at: Timestamp,
}

/// An event as stored: the exact bytes that are delivered.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    pub payload: String,
}

/// A delivery claimed for an attempt, with everything needed to send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub webhook: Webhook,
    pub payload: Arc<str>,
    /// When this node's lease on the delivery runs out.
    pub lease_until: Timestamp,
}

/// What one attempt came to, to be recorded. The write is fenced: it applies only while the
/// delivery is still pending, has `attempt - 1` attempts and is leased by `lease_owner`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attempt: Attempt,
    pub lease_owner: String,
    pub new_status: DeliveryStatus,
    pub next_attempt_at: Option<Timestamp>,
}

/// The row-level operations of one transaction. Every method is one or a few statements.
#[async_trait]
pub trait Tx: Send {
    async fn workspace_count(&mut self) -> StoreResult<i64>;
    async fn find_workspace_by_name(&mut self, name: &str) -> StoreResult<Option<Workspace>>;
    async fn insert_workspace(&mut self, w: &Workspace) -> StoreResult<()>;

    async fn find_user_by_name(&mut self, ws: &str, name: &str) -> StoreResult<Option<User>>;
    async fn find_user_by_email(&mut self, ws: &str, email: &str) -> StoreResult<Option<User>>;
    async fn get_user(&mut self, ws: &str, id: &str) -> StoreResult<Option<User>>;
    async fn insert_user(&mut self, u: &User) -> StoreResult<()>;

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> StoreResult<()>;
    async fn get_api_key(&mut self, id: &str) -> StoreResult<Option<(ApiKeyRecord, Principal)>>;

    async fn insert_project(&mut self, p: &Project) -> StoreResult<()>;
    async fn get_project(&mut self, ws: &str, id: &str) -> StoreResult<Option<Project>>;
    async fn list_projects(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Project>>;

    async fn get_member(&mut self, project_id: &str, user_id: &str) -> StoreResult<Option<Member>>;
    async fn insert_member(&mut self, m: &Member) -> StoreResult<()>;
    async fn list_members(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Member>>;

    async fn insert_ticket(&mut self, t: &Ticket) -> StoreResult<()>;
    async fn get_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>>;
    /// Like `get_ticket`, and holds the row against concurrent writers until commit.
    async fn lock_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>>;
    async fn update_ticket(&mut self, t: &Ticket) -> StoreResult<()>;
    async fn delete_ticket(&mut self, id: &str, at: Timestamp) -> StoreResult<()>;
    async fn list_tickets(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Ticket>>;

    async fn insert_comment(&mut self, c: &Comment) -> StoreResult<()>;

    async fn insert_event(&mut self, e: &Event) -> StoreResult<()>;
    async fn get_event(&mut self, ws: &str, id: &str) -> StoreResult<Option<StoredEvent>>;
    async fn list_events(
        &mut self,
        ws: &str,
        event_type: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<StoredEvent>>;

    async fn insert_webhook(&mut self, w: &Webhook) -> StoreResult<()>;
    async fn get_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>>;
    /// Like `get_webhook`, and holds the row against concurrent writers until commit.
    async fn lock_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>>;
    async fn list_webhooks(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Webhook>>;
    /// Every enabled webhook of the workspace, for fan-out.
    async fn enabled_webhooks(&mut self, ws: &str) -> StoreResult<Vec<Webhook>>;
    async fn update_webhook(&mut self, w: &Webhook) -> StoreResult<()>;
    async fn delete_webhook(&mut self, id: &str) -> StoreResult<()>;

    /// Inserts a delivery, leased to `lease` (owner, until) when given.
    async fn insert_delivery(
        &mut self,
        d: &Delivery,
        lease: Option<(&str, Timestamp)>,
    ) -> StoreResult<()>;
    /// Tells other nodes, once this transaction commits, that new deliveries are due.
    async fn announce_deliveries(&mut self) -> StoreResult<()>;
    /// Cancels the pending deliveries of a webhook; returns how many.
    async fn cancel_pending_deliveries(
        &mut self,
        webhook_id: &str,
        at: Timestamp,
    ) -> StoreResult<u64>;
    /// Leases up to `limit` pending deliveries that are due at `now` and not leased by a live
    /// lease, skipping the webhooks in `skip`, to `owner` until `lease_until`.
    async fn claim_due(
        &mut self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Claimed>>;
    /// Records an attempt and moves the delivery on; false when the fence did not hold (the
    /// lease was lost, or the delivery was cancelled meanwhile) and nothing was written.
    async fn record_outcome(&mut self, o: &Outcome) -> StoreResult<bool>;
    /// Records a batch of outcomes, each fenced like [`Tx::record_outcome`]; returns how many
    /// were recorded. A backend may do it in fewer statements than one per outcome.
    async fn record_outcomes(&mut self, outcomes: &[Outcome]) -> StoreResult<usize> {
        let mut recorded = 0;
        for o in outcomes {
            recorded += usize::from(self.record_outcome(o).await?);
        }
        Ok(recorded)
    }
    /// Drops the leases of `owner`, or every lease when `None`; returns how many.
    async fn release_leases(&mut self, owner: Option<&str>) -> StoreResult<u64>;
    /// Drops one lease of `owner` so the delivery can be claimed again at once.
    /// (Also used for deliveries handed off in-process that this node cannot take now.)
    async fn release_lease(&mut self, delivery_id: &str, owner: &str) -> StoreResult<()>;
    /// The earliest `next_attempt_at` of a pending delivery that is not leased at `now` and
    /// not of a webhook in `skip`, if any.
    async fn next_due_at(
        &mut self,
        now: Timestamp,
        skip: &[String],
    ) -> StoreResult<Option<Timestamp>>;
    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>>;
    async fn list_deliveries(
        &mut self,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>>;
    async fn list_attempts(&mut self, delivery_id: &str) -> StoreResult<Vec<Attempt>>;
}

/// A unit of work queued to a backend. `run` executes it inside the backend's transaction
/// scope and says whether it succeeded (false rolls back its scope); `finish` reports the
/// outcome to the caller once the commit is known.
pub trait Job: Send {
    fn run<'a>(&'a mut self, tx: &'a mut dyn Tx) -> BoxFuture<'a, bool>;
    fn finish(self: Box<Self>, commit: StoreResult<()>);
}

struct TypedJob<F, T, E> {
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

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        let result = match (commit, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            // A failed unit of work was rolled back: its own error is the answer.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), None) => {
                Err(StoreError::Database("the unit of work did not run".into()).into())
            }
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { pool_size: 8 }
    }
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
        let backend: Arc<dyn Backend> = if let Some(path) = url.strip_prefix("sqlite://") {
            Arc::new(SqliteStore::open(path).await?)
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            Arc::new(SqliteStore::open(path).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(PgStore::open(url, options.pool_size).await?)
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
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.backend.submit_write(job).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on a read-only snapshot.
    pub async fn read<F, T, E>(&self, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.backend.submit_read(job).await?;
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
