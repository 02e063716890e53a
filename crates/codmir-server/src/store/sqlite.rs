//! The SQLite backend: one writer thread that group-commits units of work, and a small pool
//! of read connections. WAL mode, `synchronous=FULL`: a commit is on disk when it returns.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use async_trait::async_trait;
use codmir_core::event::{Event, EventType};
use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    Comment, Member, Principal, Priority, Project, Role, Ticket, TicketStatus, User, Workspace,
};
use codmir_core::webhook::{
    Attempt, Delivery, DeliveryStatus, EndpointUrl, EventFilter, Webhook, WebhookSecret,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::{Semaphore, mpsc};

use super::{
    ApiKeyRecord, Backend, BoxFuture, Claimed, Job, Outcome, Page, PageRequest, StoreError,
    StoreResult, StoredEvent, Tx,
};

/// Units of work committed together at most; more wait for the next commit.
const MAX_BATCH: usize = 512;
/// Queued units of work before callers wait (backpressure).
const QUEUE_DEPTH: usize = 4096;
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite_0001_init.sql"),
    include_str!("migrations/sqlite_0002_webhook_due.sql"),
];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) if e.to_string().contains("UNIQUE") => {
                StoreError::Conflict(e.to_string())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

pub struct SqliteStore {
    writes: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Readers>,
}

struct Readers {
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

fn open_connection(path: &Path, read_only: bool) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
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

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    // IMMEDIATE takes the write lock first, so two processes starting at once migrate in turn.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Database(format!(
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
/// unit of work over [`SqliteTx`] never waits. `None` means it tried to (a bug).
fn run_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

impl SqliteStore {
    pub async fn open(path: &str) -> StoreResult<Self> {
        let path = Path::new(path).to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
    }

    fn open_blocking(path: &Path) -> StoreResult<Self> {
        let mut writer = open_connection(path, false)
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
        migrate(&mut writer)?;
        let conns = (0..READERS)
            .map(|_| open_connection(path, true))
            .collect::<StoreResult<Vec<_>>>()?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("codmir-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            writes: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(Readers {
                conns: Mutex::new(conns),
                permits: Arc::new(Semaphore::new(READERS)),
            }),
        })
    }
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = rx.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = run_batch(&mut conn, &mut batch);
        if let Err(e) = &result {
            tracing::error!(error = %e, size = batch.len(), "a write batch failed to commit");
        }
        for job in batch.drain(..) {
            job.finish(result.clone());
        }
    }
}

fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn Job>]) -> StoreResult<()> {
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
            let ok = {
                let mut tx = SqliteTx { conn: &mut *conn };
                run_ready(job.run(&mut tx)).unwrap_or(false)
            };
            return exec(conn, if ok { "COMMIT" } else { "ROLLBACK" });
        }
        for job in batch.iter_mut() {
            exec(conn, "SAVEPOINT job")?;
            let ok = {
                let mut tx = SqliteTx { conn: &mut *conn };
                run_ready(job.run(&mut tx)).unwrap_or(false)
            };
            if ok {
                exec(conn, "RELEASE job")?;
            } else {
                exec(conn, "ROLLBACK TO job")?;
                exec(conn, "RELEASE job")?;
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
                        let mut tx = SqliteTx { conn: &mut conn };
                        run_ready(job.run(&mut tx))
                    };
                    conn.execute_batch("COMMIT")?;
                    ok.map(|_| ())
                        .ok_or_else(|| StoreError::Database("a read did not complete".into()))
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
        // Dropping the sender lets the writer drain what is queued, commit it and stop.
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
        })
    }

    fn releases_all_leases_on_start(&self) -> bool {
        true
    }
}

/// A unit of work's view of the connection, inside the transaction the backend opened.
struct SqliteTx<'c> {
    conn: &'c mut Connection,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("{what}: {e}").into(),
    )
}

fn ts(row: &Row, idx: usize) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp::from_millis(row.get(idx)?))
}

fn opt_ts(row: &Row, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(Timestamp::from_millis))
}

const USER_COLS: &str = "id, workspace_id, name, email, created_at";
fn user_row(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        name: row.get(2)?,
        email: row.get(3)?,
        created_at: ts(row, 4)?,
    })
}

const PROJECT_COLS: &str = "id, workspace_id, name, created_by, created_at";
fn project_row(row: &Row) -> rusqlite::Result<Project> {
    Ok(Project {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        name: row.get(2)?,
        created_by: row.get(3)?,
        created_at: ts(row, 4)?,
    })
}

const TICKET_COLS: &str = "id, workspace_id, project_id, title, description, status, priority, \
                           assignee_id, created_by, created_at, updated_at";
fn ticket_row(row: &Row) -> rusqlite::Result<Ticket> {
    let status: String = row.get(5)?;
    let priority: String = row.get(6)?;
    Ok(Ticket {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        project_id: row.get(2)?,
        title: row.get(3)?,
        description: row.get(4)?,
        status: TicketStatus::parse(&status).map_err(|e| corrupt("tickets.status", e))?,
        priority: Priority::parse(&priority).map_err(|e| corrupt("tickets.priority", e))?,
        assignee_id: row.get(7)?,
        created_by: row.get(8)?,
        created_at: ts(row, 9)?,
        updated_at: ts(row, 10)?,
    })
}

const MEMBER_COLS: &str =
    "m.project_id, m.role, m.added_at, u.id, u.workspace_id, u.name, u.email, u.created_at";
fn member_row(row: &Row) -> rusqlite::Result<Member> {
    let role: String = row.get(1)?;
    Ok(Member {
        project_id: row.get(0)?,
        role: Role::parse(&role).map_err(|e| corrupt("project_members.role", e))?,
        added_at: ts(row, 2)?,
        user: User {
            id: row.get(3)?,
            workspace_id: row.get(4)?,
            name: row.get(5)?,
            email: row.get(6)?,
            created_at: ts(row, 7)?,
        },
    })
}

const WEBHOOK_COLS: &str = "id, workspace_id, url, events, project_ids, description, secret, \
                            enabled, created_at, updated_at";
fn webhook_row(row: &Row) -> rusqlite::Result<Webhook> {
    let events: String = row.get(3)?;
    let project_ids: String = row.get(4)?;
    let events: Vec<String> =
        serde_json::from_str(&events).map_err(|e| corrupt("webhooks.events", e))?;
    let secret: String = row.get(6)?;
    Ok(Webhook {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        url: EndpointUrl::from_stored(row.get(2)?),
        events: EventFilter::parse(&events).map_err(|e| corrupt("webhooks.events", e))?,
        project_ids: serde_json::from_str(&project_ids)
            .map_err(|e| corrupt("webhooks.project_ids", e))?,
        description: row.get(5)?,
        secret: WebhookSecret::parse(&secret).map_err(|e| corrupt("webhooks.secret", e))?,
        enabled: row.get(7)?,
        created_at: ts(row, 8)?,
        updated_at: ts(row, 9)?,
    })
}

const DELIVERY_COLS: &str = "id, workspace_id, webhook_id, event_id, event_type, status, \
                             attempt_count, next_attempt_at, created_at, updated_at";
fn delivery_row(row: &Row) -> rusqlite::Result<Delivery> {
    let event_type: String = row.get(4)?;
    let status: String = row.get(5)?;
    Ok(Delivery {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        webhook_id: row.get(2)?,
        event_id: row.get(3)?,
        event_type: EventType::parse(&event_type)
            .map_err(|e| corrupt("deliveries.event_type", e))?,
        status: DeliveryStatus::parse(&status).map_err(|e| corrupt("deliveries.status", e))?,
        attempt_count: row.get(6)?,
        next_attempt_at: opt_ts(row, 7)?,
        created_at: ts(row, 8)?,
        updated_at: ts(row, 9)?,
    })
}

fn event_row(row: &Row) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        id: row.get(0)?,
        payload: row.get(1)?,
    })
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

impl SqliteTx<'_> {
    /// Runs a paged query whose last two parameters are the cursor and the limit.
    fn page<T>(
        &self,
        sql: &str,
        head: &[&dyn rusqlite::ToSql],
        page: &PageRequest,
        map: fn(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Page<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let limit = i64::from(page.limit) + 1;
        let mut params: Vec<&dyn rusqlite::ToSql> = head.to_vec();
        params.push(&page.after);
        params.push(&limit);
        let items = stmt
            .query_map(params.as_slice(), map)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit))
    }

    fn one<T>(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        map: fn(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params, map)
            .optional()?)
    }

    fn exec(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> StoreResult<usize> {
        Ok(self.conn.prepare_cached(sql)?.execute(params)?)
    }
}

#[async_trait]
impl Tx for SqliteTx<'_> {
    async fn workspace_count(&mut self) -> StoreResult<i64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM workspaces", [], |r| r.get(0))?)
    }

    async fn find_workspace_by_name(&mut self, name: &str) -> StoreResult<Option<Workspace>> {
        self.one(
            "SELECT id, name, created_at FROM workspaces WHERE name = ?1",
            &[&name],
            |r| {
                Ok(Workspace {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    created_at: ts(r, 2)?,
                })
            },
        )
    }

    async fn insert_workspace(&mut self, w: &Workspace) -> StoreResult<()> {
        self.exec(
            "INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)",
            params![w.id, w.name, w.created_at.as_millis()],
        )?;
        Ok(())
    }

    async fn find_user_by_name(&mut self, ws: &str, name: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = ?1 AND name = ?2 ORDER BY id LIMIT 1"),
            &[&ws, &name],
            user_row,
        )
    }

    async fn find_user_by_email(&mut self, ws: &str, email: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = ?1 AND email = ?2"),
            &[&ws, &email],
            user_row,
        )
    }

    async fn get_user(&mut self, ws: &str, id: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = ?1 AND id = ?2"),
            &[&ws, &id],
            user_row,
        )
    }

    async fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        self.exec(
            "INSERT INTO users (id, workspace_id, name, email, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![u.id, u.workspace_id, u.name, u.email, u.created_at.as_millis()],
        )?;
        Ok(())
    }

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> StoreResult<()> {
        self.exec(
            "INSERT INTO api_keys (id, workspace_id, user_id, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![k.id, k.workspace_id, k.user_id, &k.secret_hash[..], k.created_at.as_millis()],
        )?;
        Ok(())
    }

    async fn get_api_key(&mut self, id: &str) -> StoreResult<Option<(ApiKeyRecord, Principal)>> {
        self.one(
            "SELECT k.id, k.workspace_id, k.user_id, k.secret_hash, k.created_at, u.name \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?1",
            &[&id],
            |r| {
                let hash: Vec<u8> = r.get(3)?;
                let secret_hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| corrupt("api_keys.secret_hash", "not 32 bytes"))?;
                let key = ApiKeyRecord {
                    id: r.get(0)?,
                    workspace_id: r.get(1)?,
                    user_id: r.get(2)?,
                    secret_hash,
                    created_at: ts(r, 4)?,
                };
                let principal = Principal {
                    workspace_id: key.workspace_id.clone(),
                    user_id: key.user_id.clone(),
                    user_name: r.get(5)?,
                };
                Ok((key, principal))
            },
        )
    }

    async fn insert_project(&mut self, p: &Project) -> StoreResult<()> {
        self.exec(
            "INSERT INTO projects (id, workspace_id, name, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![p.id, p.workspace_id, p.name, p.created_by, p.created_at.as_millis()],
        )?;
        Ok(())
    }

    async fn get_project(&mut self, ws: &str, id: &str) -> StoreResult<Option<Project>> {
        self.one(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE workspace_id = ?1 AND id = ?2"),
            &[&ws, &id],
            project_row,
        )
    }

    async fn list_projects(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Project>> {
        self.page(
            &format!(
                "SELECT {PROJECT_COLS} FROM projects WHERE workspace_id = ?1 \
                 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
            ),
            &[&ws],
            page,
            project_row,
        )
    }

    async fn get_member(&mut self, project_id: &str, user_id: &str) -> StoreResult<Option<Member>> {
        self.one(
            &format!(
                "SELECT {MEMBER_COLS} FROM project_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.project_id = ?1 AND m.user_id = ?2"
            ),
            &[&project_id, &user_id],
            member_row,
        )
    }

    async fn insert_member(&mut self, m: &Member) -> StoreResult<()> {
        self.exec(
            "INSERT INTO project_members (project_id, user_id, role, added_at) VALUES (?1, ?2, ?3, ?4)",
            params![m.project_id, m.user.id, m.role.as_str(), m.added_at.as_millis()],
        )?;
        Ok(())
    }

    async fn list_members(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Member>> {
        self.page(
            &format!(
                "SELECT {MEMBER_COLS} FROM project_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.project_id = ?1 AND (?2 IS NULL OR u.id < ?2) ORDER BY u.id DESC LIMIT ?3"
            ),
            &[&project_id],
            page,
            member_row,
        )
    }

    async fn insert_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        self.exec(
            &format!("INSERT INTO tickets ({TICKET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                t.id,
                t.workspace_id,
                t.project_id,
                t.title,
                t.description,
                t.status.as_str(),
                t.priority.as_str(),
                t.assignee_id,
                t.created_by,
                t.created_at.as_millis(),
                t.updated_at.as_millis()
            ],
        )?;
        Ok(())
    }

    async fn get_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        self.one(
            &format!(
                "SELECT {TICKET_COLS} FROM tickets WHERE workspace_id = ?1 AND id = ?2 AND deleted_at IS NULL"
            ),
            &[&ws, &id],
            ticket_row,
        )
    }

    async fn lock_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        // The single writer already excludes concurrent writers.
        self.get_ticket(ws, id).await
    }

    async fn update_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        self.exec(
            "UPDATE tickets SET title = ?2, description = ?3, status = ?4, priority = ?5, \
             assignee_id = ?6, updated_at = ?7 WHERE id = ?1",
            params![
                t.id,
                t.title,
                t.description,
                t.status.as_str(),
                t.priority.as_str(),
                t.assignee_id,
                t.updated_at.as_millis()
            ],
        )?;
        Ok(())
    }

    async fn delete_ticket(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(
            "UPDATE tickets SET deleted_at = ?2 WHERE id = ?1",
            params![id, at.as_millis()],
        )?;
        Ok(())
    }

    async fn list_tickets(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Ticket>> {
        self.page(
            &format!(
                "SELECT {TICKET_COLS} FROM tickets WHERE project_id = ?1 AND deleted_at IS NULL \
                 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
            ),
            &[&project_id],
            page,
            ticket_row,
        )
    }

    async fn insert_comment(&mut self, c: &Comment) -> StoreResult<()> {
        self.exec(
            "INSERT INTO comments (id, workspace_id, ticket_id, author_id, body, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                c.id,
                c.workspace_id,
                c.ticket_id,
                c.author_id,
                c.body,
                c.created_at.as_millis()
            ],
        )?;
        Ok(())
    }

    async fn insert_event(&mut self, e: &Event) -> StoreResult<()> {
        self.exec(
            "INSERT INTO events (id, workspace_id, project_id, type, created_at, payload) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.id,
                e.workspace_id,
                e.project_id,
                e.event_type.as_str(),
                e.created_at.as_millis(),
                e.payload
            ],
        )?;
        Ok(())
    }

    async fn get_event(&mut self, ws: &str, id: &str) -> StoreResult<Option<StoredEvent>> {
        self.one(
            "SELECT id, payload FROM events WHERE workspace_id = ?1 AND id = ?2",
            &[&ws, &id],
            event_row,
        )
    }

    async fn list_events(
        &mut self,
        ws: &str,
        event_type: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<StoredEvent>> {
        match event_type {
            Some(t) => self.page(
                "SELECT id, payload FROM events WHERE workspace_id = ?1 AND type = ?2 \
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
                &[&ws, &t],
                page,
                event_row,
            ),
            None => self.page(
                "SELECT id, payload FROM events WHERE workspace_id = ?1 \
                 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
                &[&ws],
                page,
                event_row,
            ),
        }
    }

    async fn insert_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        self.exec(
            &format!("INSERT INTO webhooks ({WEBHOOK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![
                w.id,
                w.workspace_id,
                w.url.as_str(),
                json_list(w.events.patterns()),
                json_list(&w.project_ids),
                w.description,
                w.secret.as_str(),
                w.enabled,
                w.created_at.as_millis(),
                w.updated_at.as_millis()
            ],
        )?;
        Ok(())
    }

    async fn get_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        self.one(
            &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = ?1 AND id = ?2"),
            &[&ws, &id],
            webhook_row,
        )
    }

    async fn lock_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        self.get_webhook(ws, id).await
    }

    async fn list_webhooks(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Webhook>> {
        self.page(
            &format!(
                "SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = ?1 \
                 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
            ),
            &[&ws],
            page,
            webhook_row,
        )
    }

    async fn enabled_webhooks(&mut self, ws: &str) -> StoreResult<Vec<Webhook>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = ?1 AND enabled = 1"
        ))?;
        Ok(stmt
            .query_map([ws], webhook_row)?
            .collect::<Result<_, _>>()?)
    }

    async fn update_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        self.exec(
            "UPDATE webhooks SET url = ?2, events = ?3, project_ids = ?4, description = ?5, \
             secret = ?6, enabled = ?7, updated_at = ?8 WHERE id = ?1",
            params![
                w.id,
                w.url.as_str(),
                json_list(w.events.patterns()),
                json_list(&w.project_ids),
                w.description,
                w.secret.as_str(),
                w.enabled,
                w.updated_at.as_millis()
            ],
        )?;
        Ok(())
    }

    async fn delete_webhook(&mut self, id: &str) -> StoreResult<()> {
        self.exec("DELETE FROM webhooks WHERE id = ?1", &[&id])?;
        Ok(())
    }

    async fn insert_delivery(
        &mut self,
        d: &Delivery,
        lease: Option<(&str, Timestamp)>,
    ) -> StoreResult<()> {
        let (owner, until) = (lease.map(|l| l.0), lease.map(|l| l.1.as_millis()));
        self.exec(
            &format!(
                "INSERT INTO deliveries ({DELIVERY_COLS}, lease_owner, lease_expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                d.id,
                d.workspace_id,
                d.webhook_id,
                d.event_id,
                d.event_type.as_str(),
                d.status.as_str(),
                d.attempt_count,
                d.next_attempt_at.map(Timestamp::as_millis),
                d.created_at.as_millis(),
                d.updated_at.as_millis(),
                owner,
                until
            ],
        )?;
        Ok(())
    }

    async fn announce_deliveries(&mut self) -> StoreResult<()> {
        // One node: the API wakes its own engine after the commit.
        Ok(())
    }

    async fn cancel_pending_deliveries(
        &mut self,
        webhook_id: &str,
        at: Timestamp,
    ) -> StoreResult<u64> {
        let n = self.exec(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = ?2 WHERE webhook_id = ?1 AND status = 'pending'",
            params![webhook_id, at.as_millis()],
        )?;
        Ok(n as u64)
    }

    async fn claim_due(
        &mut self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Claimed>> {
        let ids = if skip.is_empty() {
            // The common case: the oldest due deliveries of any webhook, by the due index.
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1 \
                 AND (lease_expires_at IS NULL OR lease_expires_at < ?1) \
                 ORDER BY next_attempt_at LIMIT ?2",
            )?;
            stmt.query_map(params![now.as_millis(), limit], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?
        } else {
            // Some webhooks are busy here. Filtering them out of the due index would scan past
            // all their deliveries (a large backlog of one webhook makes that every row), so
            // probe each other webhook by the (webhook, due) index, a fair share each.
            let others: Vec<String> = self
                .conn
                .prepare_cached(
                    "SELECT id FROM webhooks WHERE id NOT IN (SELECT value FROM json_each(?1))",
                )?
                .query_map([json_list(skip)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let share = (limit as usize / others.len().max(1)).max(16);
            let mut ids = Vec::new();
            let mut probe = self.conn.prepare_cached(
                "SELECT id FROM deliveries WHERE webhook_id = ?1 AND status = 'pending' \
                 AND next_attempt_at <= ?2 AND (lease_expires_at IS NULL OR lease_expires_at < ?2) \
                 ORDER BY next_attempt_at LIMIT ?3",
            )?;
            for webhook in others {
                let room = (limit as usize).saturating_sub(ids.len()).min(share);
                if room == 0 {
                    break;
                }
                let found = probe
                    .query_map(params![webhook, now.as_millis(), room as i64], |r| {
                        r.get::<_, String>(0)
                    })?;
                for id in found {
                    ids.push(id?);
                }
            }
            ids
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let deliveries: Vec<Delivery> = {
            let mut stmt = self.conn.prepare_cached(&format!(
                "UPDATE deliveries SET lease_owner = ?1, lease_expires_at = ?2 \
                 WHERE id IN (SELECT value FROM json_each(?3)) RETURNING {DELIVERY_COLS}"
            ))?;
            stmt.query_map(
                params![owner, lease_until.as_millis(), json_list(&ids)],
                delivery_row,
            )?
            .collect::<Result<_, _>>()?
        };
        let mut webhooks: Vec<Webhook> = Vec::new();
        let mut claimed = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let webhook = match webhooks.iter().find(|w| w.id == delivery.webhook_id) {
                Some(w) => w.clone(),
                None => {
                    let w = self.one(
                        &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = ?1"),
                        &[&delivery.webhook_id],
                        webhook_row,
                    )?;
                    let Some(w) = w else { continue };
                    webhooks.push(w.clone());
                    w
                }
            };
            let payload: String = self
                .conn
                .prepare_cached("SELECT payload FROM events WHERE id = ?1")?
                .query_row([&delivery.event_id], |r| r.get(0))?;
            claimed.push(Claimed {
                delivery,
                webhook,
                payload: payload.into(),
                lease_until,
            });
        }
        Ok(claimed)
    }

    async fn record_outcome(&mut self, o: &Outcome) -> StoreResult<bool> {
        let a = &o.attempt;
        let updated = self.exec(
            "UPDATE deliveries SET status = ?2, attempt_count = ?3, next_attempt_at = ?4, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5 \
             WHERE id = ?1 AND status = 'pending' AND attempt_count = ?3 - 1 AND lease_owner = ?6",
            params![
                a.delivery_id,
                o.new_status.as_str(),
                a.attempt,
                o.next_attempt_at.map(Timestamp::as_millis),
                a.attempted_at.as_millis() + a.duration_ms as i64,
                o.lease_owner
            ],
        )?;
        if updated == 0 {
            return Ok(false);
        }
        self.exec(
            "INSERT INTO attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                a.delivery_id,
                a.attempt,
                a.attempted_at.as_millis(),
                a.duration_ms as i64,
                a.status_code,
                a.error,
                a.response_body
            ],
        )?;
        Ok(true)
    }

    async fn release_leases(&mut self, owner: Option<&str>) -> StoreResult<u64> {
        let n = self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE lease_owner IS NOT NULL AND (?1 IS NULL OR lease_owner = ?1)",
            &[&owner],
        )?;
        Ok(n as u64)
    }

    async fn release_lease(&mut self, delivery_id: &str, owner: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1 AND lease_owner = ?2",
            &[&delivery_id, &owner],
        )?;
        Ok(())
    }

    async fn next_due_at(
        &mut self,
        now: Timestamp,
        skip: &[String],
    ) -> StoreResult<Option<Timestamp>> {
        let sql = if skip.is_empty() {
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' \
             AND (lease_expires_at IS NULL OR lease_expires_at < ?1) AND ?2 IS NOT NULL"
        } else {
            // Per webhook, by the (webhook, due) index, for the reason given in `claim_due`.
            "SELECT min(due) FROM (SELECT (SELECT min(d.next_attempt_at) FROM deliveries d \
               WHERE d.webhook_id = w.id AND d.status = 'pending' \
               AND (d.lease_expires_at IS NULL OR d.lease_expires_at < ?1)) AS due \
             FROM webhooks w WHERE w.id NOT IN (SELECT value FROM json_each(?2)))"
        };
        let v: Option<i64> = self
            .conn
            .prepare_cached(sql)?
            .query_row(params![now.as_millis(), json_list(skip)], |r| r.get(0))?;
        Ok(v.map(Timestamp::from_millis))
    }

    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>> {
        self.one(
            &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE workspace_id = ?1 AND id = ?2"),
            &[&ws, &id],
            delivery_row,
        )
    }

    async fn list_deliveries(
        &mut self,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let status = status.map(DeliveryStatus::as_str);
        self.page(
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE webhook_id = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ),
            &[&webhook_id, &status],
            page,
            delivery_row,
        )
    }

    async fn list_attempts(&mut self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body \
             FROM attempts WHERE delivery_id = ?1 ORDER BY attempt",
        )?;
        let rows = stmt.query_map([delivery_id], |r| {
            Ok(Attempt {
                delivery_id: r.get(0)?,
                attempt: r.get(1)?,
                attempted_at: ts(r, 2)?,
                duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
                status_code: r.get(4)?,
                error: r.get(5)?,
                response_body: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
