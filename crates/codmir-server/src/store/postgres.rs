//! The PostgreSQL backend, for several stateless `codmir serve` nodes on one database.
//!
//! Each unit of work runs in its own transaction on a pooled connection, in a task of its own
//! so that a caller that goes away cannot leave a connection mid-transaction. Due deliveries
//! are claimed with `FOR UPDATE SKIP LOCKED` and a lease; commits that create deliveries
//! `NOTIFY` the other nodes, which `LISTEN` on a dedicated connection.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codmir_core::event::{Event, EventType};
use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    Comment, Member, Principal, Priority, Project, Role, Ticket, TicketStatus, User, Workspace,
};
use codmir_core::webhook::{
    Attempt, Delivery, DeliveryStatus, EndpointUrl, EventFilter, Webhook, WebhookSecret,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{
    ApiKeyRecord, Backend, BoxFuture, Claimed, Job, Outcome, Page, PageRequest, StoreError,
    StoreResult, StoredEvent, Tx,
};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres_0001_init.sql"),
    include_str!("migrations/postgres_0002_webhook_due.sql"),
];
/// Any fixed number: the advisory lock that serializes migrations of nodes starting together.
const MIGRATION_LOCK: i64 = 0x636f_646d_6972;
/// The channel commits that create deliveries notify.
const CHANNEL: &str = "codmir_deliveries";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict(e.to_string())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Database(format!("no database connection: {e}"))
    }
}

pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PgStore {
    pub async fn open(url: &str, pool_size: usize) -> StoreResult<Self> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid PostgreSQL URL: {e}")))?;
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
            .build()
            .map_err(|e| StoreError::Database(format!("cannot build the connection pool: {e}")))?;
        Ok(Self { pool, config })
    }

    async fn run_job(pool: &Pool, mut job: Box<dyn Job>, begin: &str) {
        let conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => return job.finish(Err(e.into())),
        };
        let result: StoreResult<()> = async {
            conn.batch_execute(begin).await?;
            let ok = {
                let mut tx = PgTx { client: &conn };
                job.run(&mut tx).await
            };
            conn.batch_execute(if ok { "COMMIT" } else { "ROLLBACK" })
                .await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = conn.batch_execute("ROLLBACK").await;
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
            return Err(StoreError::Database(format!(
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
        let pool = self.pool.clone();
        tokio::spawn(async move { Self::run_job(&pool, job, "BEGIN").await });
        Box::pin(async { Ok(()) })
    }

    fn submit_read(&self, job: Box<dyn Job>) -> BoxFuture<'_, StoreResult<()>> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            Self::run_job(
                &pool,
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
    while rx.recv().await.is_some() {
        wake.notify_one();
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

struct PgTx<'c> {
    client: &'c Object,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn ts(row: &Row, idx: usize) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_millis(row.try_get(idx)?))
}

fn opt_ts(row: &Row, idx: usize) -> StoreResult<Option<Timestamp>> {
    Ok(row
        .try_get::<_, Option<i64>>(idx)?
        .map(Timestamp::from_millis))
}

const USER_COLS: &str = "id, workspace_id, name, email, created_at";
fn user_row(row: &Row) -> StoreResult<User> {
    Ok(User {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        name: row.try_get(2)?,
        email: row.try_get(3)?,
        created_at: ts(row, 4)?,
    })
}

const PROJECT_COLS: &str = "id, workspace_id, name, created_by, created_at";
fn project_row(row: &Row) -> StoreResult<Project> {
    Ok(Project {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        name: row.try_get(2)?,
        created_by: row.try_get(3)?,
        created_at: ts(row, 4)?,
    })
}

const TICKET_COLS: &str = "id, workspace_id, project_id, title, description, status, priority, \
                           assignee_id, created_by, created_at, updated_at";
fn ticket_row(row: &Row) -> StoreResult<Ticket> {
    let status: String = row.try_get(5)?;
    let priority: String = row.try_get(6)?;
    Ok(Ticket {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        project_id: row.try_get(2)?,
        title: row.try_get(3)?,
        description: row.try_get(4)?,
        status: TicketStatus::parse(&status).map_err(|e| corrupt("tickets.status", e))?,
        priority: Priority::parse(&priority).map_err(|e| corrupt("tickets.priority", e))?,
        assignee_id: row.try_get(7)?,
        created_by: row.try_get(8)?,
        created_at: ts(row, 9)?,
        updated_at: ts(row, 10)?,
    })
}

const MEMBER_COLS: &str =
    "m.project_id, m.role, m.added_at, u.id, u.workspace_id, u.name, u.email, u.created_at";
fn member_row(row: &Row) -> StoreResult<Member> {
    let role: String = row.try_get(1)?;
    Ok(Member {
        project_id: row.try_get(0)?,
        role: Role::parse(&role).map_err(|e| corrupt("project_members.role", e))?,
        added_at: ts(row, 2)?,
        user: User {
            id: row.try_get(3)?,
            workspace_id: row.try_get(4)?,
            name: row.try_get(5)?,
            email: row.try_get(6)?,
            created_at: ts(row, 7)?,
        },
    })
}

const WEBHOOK_COLS: &str = "id, workspace_id, url, events, project_ids, description, secret, \
                            enabled, created_at, updated_at";
fn webhook_row(row: &Row) -> StoreResult<Webhook> {
    let events: String = row.try_get(3)?;
    let events: Vec<String> =
        serde_json::from_str(&events).map_err(|e| corrupt("webhooks.events", e))?;
    let project_ids: String = row.try_get(4)?;
    let secret: String = row.try_get(6)?;
    Ok(Webhook {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        url: EndpointUrl::from_stored(row.try_get(2)?),
        events: EventFilter::parse(&events).map_err(|e| corrupt("webhooks.events", e))?,
        project_ids: serde_json::from_str(&project_ids)
            .map_err(|e| corrupt("webhooks.project_ids", e))?,
        description: row.try_get(5)?,
        secret: WebhookSecret::parse(&secret).map_err(|e| corrupt("webhooks.secret", e))?,
        enabled: row.try_get(7)?,
        created_at: ts(row, 8)?,
        updated_at: ts(row, 9)?,
    })
}

const DELIVERY_COLS: &str = "id, workspace_id, webhook_id, event_id, event_type, status, \
                             attempt_count, next_attempt_at, created_at, updated_at";
fn delivery_row(row: &Row) -> StoreResult<Delivery> {
    let event_type: String = row.try_get(4)?;
    let status: String = row.try_get(5)?;
    let attempts: i32 = row.try_get(6)?;
    Ok(Delivery {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        webhook_id: row.try_get(2)?,
        event_id: row.try_get(3)?,
        event_type: EventType::parse(&event_type)
            .map_err(|e| corrupt("deliveries.event_type", e))?,
        status: DeliveryStatus::parse(&status).map_err(|e| corrupt("deliveries.status", e))?,
        attempt_count: u32::try_from(attempts)
            .map_err(|e| corrupt("deliveries.attempt_count", e))?,
        next_attempt_at: opt_ts(row, 7)?,
        created_at: ts(row, 8)?,
        updated_at: ts(row, 9)?,
    })
}

fn event_row(row: &Row) -> StoreResult<StoredEvent> {
    Ok(StoredEvent {
        id: row.try_get(0)?,
        payload: row.try_get(1)?,
    })
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

impl PgTx<'_> {
    async fn rows(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        let stmt = self.client.prepare_cached(sql).await?;
        Ok(self.client.query(&stmt, params).await?)
    }

    async fn one<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        map: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let stmt = self.client.prepare_cached(sql).await?;
        self.client
            .query_opt(&stmt, params)
            .await?
            .as_ref()
            .map(map)
            .transpose()
    }

    async fn all<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        map: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.rows(sql, params).await?.iter().map(map).collect()
    }

    async fn exec(&self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        let stmt = self.client.prepare_cached(sql).await?;
        Ok(self.client.execute(&stmt, params).await?)
    }

    /// A paged query whose last two parameters are the cursor (`$n::text`) and the limit.
    async fn page<T>(
        &self,
        sql: &str,
        head: &[&(dyn ToSql + Sync)],
        page: &PageRequest,
        map: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        let limit = i64::from(page.limit) + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = head.to_vec();
        params.push(&page.after);
        params.push(&limit);
        let items = self.all(sql, &params, map).await?;
        Ok(Page::from_overfetch(items, page.limit))
    }
}

#[async_trait]
impl Tx for PgTx<'_> {
    async fn workspace_count(&mut self) -> StoreResult<i64> {
        let rows = self.rows("SELECT count(*) FROM workspaces", &[]).await?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
    }

    async fn find_workspace_by_name(&mut self, name: &str) -> StoreResult<Option<Workspace>> {
        self.one(
            "SELECT id, name, created_at FROM workspaces WHERE name = $1",
            &[&name],
            |r| {
                Ok(Workspace {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    created_at: ts(r, 2)?,
                })
            },
        )
        .await
    }

    async fn insert_workspace(&mut self, w: &Workspace) -> StoreResult<()> {
        self.exec(
            "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)",
            &[&w.id, &w.name, &w.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn find_user_by_name(&mut self, ws: &str, name: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = $1 AND name = $2 ORDER BY id LIMIT 1"),
            &[&ws, &name],
            user_row,
        )
        .await
    }

    async fn find_user_by_email(&mut self, ws: &str, email: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = $1 AND email = $2"),
            &[&ws, &email],
            user_row,
        )
        .await
    }

    async fn get_user(&mut self, ws: &str, id: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            user_row,
        )
        .await
    }

    async fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        self.exec(
            "INSERT INTO users (id, workspace_id, name, email, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&u.id, &u.workspace_id, &u.name, &u.email, &u.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> StoreResult<()> {
        self.exec(
            "INSERT INTO api_keys (id, workspace_id, user_id, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&k.id, &k.workspace_id, &k.user_id, &&k.secret_hash[..], &k.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn get_api_key(&mut self, id: &str) -> StoreResult<Option<(ApiKeyRecord, Principal)>> {
        self.one(
            "SELECT k.id, k.workspace_id, k.user_id, k.secret_hash, k.created_at, u.name \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1",
            &[&id],
            |r| {
                let hash: Vec<u8> = r.try_get(3)?;
                let secret_hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| corrupt("api_keys.secret_hash", "not 32 bytes"))?;
                let key = ApiKeyRecord {
                    id: r.try_get(0)?,
                    workspace_id: r.try_get(1)?,
                    user_id: r.try_get(2)?,
                    secret_hash,
                    created_at: ts(r, 4)?,
                };
                let principal = Principal {
                    workspace_id: key.workspace_id.clone(),
                    user_id: key.user_id.clone(),
                    user_name: r.try_get(5)?,
                };
                Ok((key, principal))
            },
        )
        .await
    }

    async fn insert_project(&mut self, p: &Project) -> StoreResult<()> {
        self.exec(
            "INSERT INTO projects (id, workspace_id, name, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&p.id, &p.workspace_id, &p.name, &p.created_by, &p.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn get_project(&mut self, ws: &str, id: &str) -> StoreResult<Option<Project>> {
        self.one(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            project_row,
        )
        .await
    }

    async fn list_projects(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Project>> {
        self.page(
            &format!(
                "SELECT {PROJECT_COLS} FROM projects WHERE workspace_id = $1 \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            &[&ws],
            page,
            project_row,
        )
        .await
    }

    async fn get_member(&mut self, project_id: &str, user_id: &str) -> StoreResult<Option<Member>> {
        self.one(
            &format!(
                "SELECT {MEMBER_COLS} FROM project_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.project_id = $1 AND m.user_id = $2"
            ),
            &[&project_id, &user_id],
            member_row,
        )
        .await
    }

    async fn insert_member(&mut self, m: &Member) -> StoreResult<()> {
        self.exec(
            "INSERT INTO project_members (project_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)",
            &[&m.project_id, &m.user.id, &m.role.as_str(), &m.added_at.as_millis()],
        )
        .await?;
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
                 WHERE m.project_id = $1 AND ($2::text IS NULL OR u.id < $2) ORDER BY u.id DESC LIMIT $3"
            ),
            &[&project_id],
            page,
            member_row,
        )
        .await
    }

    async fn insert_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        self.exec(
            &format!("INSERT INTO tickets ({TICKET_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
            &[
                &t.id,
                &t.workspace_id,
                &t.project_id,
                &t.title,
                &t.description,
                &t.status.as_str(),
                &t.priority.as_str(),
                &t.assignee_id,
                &t.created_by,
                &t.created_at.as_millis(),
                &t.updated_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        self.one(
            &format!("SELECT {TICKET_COLS} FROM tickets WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"),
            &[&ws, &id],
            ticket_row,
        )
        .await
    }

    async fn lock_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        self.one(
            &format!(
                "SELECT {TICKET_COLS} FROM tickets WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE"
            ),
            &[&ws, &id],
            ticket_row,
        )
        .await
    }

    async fn update_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        self.exec(
            "UPDATE tickets SET title = $2, description = $3, status = $4, priority = $5, \
             assignee_id = $6, updated_at = $7 WHERE id = $1",
            &[
                &t.id,
                &t.title,
                &t.description,
                &t.status.as_str(),
                &t.priority.as_str(),
                &t.assignee_id,
                &t.updated_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_ticket(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(
            "UPDATE tickets SET deleted_at = $2 WHERE id = $1",
            &[&id, &at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn list_tickets(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Ticket>> {
        self.page(
            &format!(
                "SELECT {TICKET_COLS} FROM tickets WHERE project_id = $1 AND deleted_at IS NULL \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            &[&project_id],
            page,
            ticket_row,
        )
        .await
    }

    async fn insert_comment(&mut self, c: &Comment) -> StoreResult<()> {
        self.exec(
            "INSERT INTO comments (id, workspace_id, ticket_id, author_id, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &c.id,
                &c.workspace_id,
                &c.ticket_id,
                &c.author_id,
                &c.body,
                &c.created_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn insert_event(&mut self, e: &Event) -> StoreResult<()> {
        self.exec(
            "INSERT INTO events (id, workspace_id, project_id, type, created_at, payload) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &e.id,
                &e.workspace_id,
                &e.project_id,
                &e.event_type.as_str(),
                &e.created_at.as_millis(),
                &e.payload,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_event(&mut self, ws: &str, id: &str) -> StoreResult<Option<StoredEvent>> {
        self.one(
            "SELECT id, payload FROM events WHERE workspace_id = $1 AND id = $2",
            &[&ws, &id],
            event_row,
        )
        .await
    }

    async fn list_events(
        &mut self,
        ws: &str,
        event_type: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<StoredEvent>> {
        self.page(
            "SELECT id, payload FROM events WHERE workspace_id = $1 \
             AND ($2::text IS NULL OR type = $2) AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            &[&ws, &event_type],
            page,
            event_row,
        )
        .await
    }

    async fn insert_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        self.exec(
            &format!("INSERT INTO webhooks ({WEBHOOK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            &[
                &w.id,
                &w.workspace_id,
                &w.url.as_str(),
                &json_list(w.events.patterns()),
                &json_list(&w.project_ids),
                &w.description,
                &w.secret.as_str(),
                &w.enabled,
                &w.created_at.as_millis(),
                &w.updated_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        self.one(
            &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            webhook_row,
        )
        .await
    }

    async fn lock_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        self.one(
            &format!(
                "SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND id = $2 FOR UPDATE"
            ),
            &[&ws, &id],
            webhook_row,
        )
        .await
    }

    async fn list_webhooks(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Webhook>> {
        self.page(
            &format!(
                "SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            &[&ws],
            page,
            webhook_row,
        )
        .await
    }

    async fn enabled_webhooks(&mut self, ws: &str) -> StoreResult<Vec<Webhook>> {
        self.all(
            &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND enabled"),
            &[&ws],
            webhook_row,
        )
        .await
    }

    async fn update_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        self.exec(
            "UPDATE webhooks SET url = $2, events = $3, project_ids = $4, description = $5, \
             secret = $6, enabled = $7, updated_at = $8 WHERE id = $1",
            &[
                &w.id,
                &w.url.as_str(),
                &json_list(w.events.patterns()),
                &json_list(&w.project_ids),
                &w.description,
                &w.secret.as_str(),
                &w.enabled,
                &w.updated_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_webhook(&mut self, id: &str) -> StoreResult<()> {
        self.exec("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    async fn insert_delivery(
        &mut self,
        d: &Delivery,
        lease: Option<(&str, Timestamp)>,
    ) -> StoreResult<()> {
        let (owner, until) = (lease.map(|l| l.0), lease.map(|l| l.1.as_millis()));
        let attempts = d.attempt_count as i32;
        self.exec(
            &format!(
                "INSERT INTO deliveries ({DELIVERY_COLS}, lease_owner, lease_expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            &[
                &d.id,
                &d.workspace_id,
                &d.webhook_id,
                &d.event_id,
                &d.event_type.as_str(),
                &d.status.as_str(),
                &attempts,
                &d.next_attempt_at.map(Timestamp::as_millis),
                &d.created_at.as_millis(),
                &d.updated_at.as_millis(),
                &owner,
                &until,
            ],
        )
        .await?;
        Ok(())
    }

    async fn announce_deliveries(&mut self) -> StoreResult<()> {
        // Delivered to every listening node when this transaction commits, coalesced.
        self.exec(&format!("NOTIFY {CHANNEL}"), &[]).await?;
        Ok(())
    }

    async fn cancel_pending_deliveries(
        &mut self,
        webhook_id: &str,
        at: Timestamp,
    ) -> StoreResult<u64> {
        self.exec(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $2 WHERE webhook_id = $1 AND status = 'pending'",
            &[&webhook_id, &at.as_millis()],
        )
        .await
    }

    async fn claim_due(
        &mut self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Claimed>> {
        let skip: Vec<String> = skip.to_vec();
        let (until, now, limit) = (lease_until.as_millis(), now.as_millis(), i64::from(limit));
        let lease = lease_until;
        let deliveries = self
            .all(
                &format!(
                    "WITH due AS ({}) \
                     UPDATE deliveries d SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE d.id = due.id \
                     RETURNING {}",
                    if skip.is_empty() {
                        // The oldest due deliveries of any webhook, by the due index.
                        "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
                         AND (lease_expires_at IS NULL OR lease_expires_at < $3) AND cardinality($5::text[]) = 0 \
                         ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED"
                    } else {
                        // Some webhooks are busy here: probe each other webhook by the (webhook,
                        // due) index rather than scan past every delivery of the busy ones.
                        "SELECT x.id FROM webhooks w CROSS JOIN LATERAL ( \
                           SELECT id FROM deliveries WHERE webhook_id = w.id AND status = 'pending' \
                           AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
                           ORDER BY next_attempt_at LIMIT greatest(16, $4 / greatest(1, (SELECT count(*) FROM webhooks))) \
                           FOR UPDATE SKIP LOCKED) x \
                         WHERE w.id <> ALL($5::text[]) LIMIT $4"
                    },
                    DELIVERY_COLS.split(", ").map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ")
                ),
                &[&owner, &until, &now, &limit, &skip],
                delivery_row,
            )
            .await?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let webhook_ids: Vec<String> = deliveries.iter().map(|d| d.webhook_id.clone()).collect();
        let event_ids: Vec<String> = deliveries.iter().map(|d| d.event_id.clone()).collect();
        let webhooks = self
            .all(
                &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = ANY($1)"),
                &[&webhook_ids],
                webhook_row,
            )
            .await?;
        let payloads = self
            .all(
                "SELECT id, payload FROM events WHERE id = ANY($1)",
                &[&event_ids],
                |r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)),
            )
            .await?;
        let payloads: std::collections::HashMap<String, Arc<str>> = payloads
            .into_iter()
            .map(|(id, p)| (id, Arc::from(p)))
            .collect();
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let webhook = webhooks
                    .iter()
                    .find(|w| w.id == delivery.webhook_id)?
                    .clone();
                let payload = payloads.get(&delivery.event_id).cloned()?;
                Some(Claimed {
                    delivery,
                    webhook,
                    payload,
                    lease_until: lease,
                })
            })
            .collect())
    }

    async fn record_outcome(&mut self, o: &Outcome) -> StoreResult<bool> {
        let a = &o.attempt;
        let attempt = a.attempt as i32;
        let updated = self
            .exec(
                "UPDATE deliveries SET status = $2, attempt_count = $3, next_attempt_at = $4, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
                 WHERE id = $1 AND status = 'pending' AND attempt_count = $3 - 1 AND lease_owner = $6",
                &[
                    &a.delivery_id,
                    &o.new_status.as_str(),
                    &attempt,
                    &o.next_attempt_at.map(Timestamp::as_millis),
                    &(a.attempted_at.as_millis() + a.duration_ms as i64),
                    &o.lease_owner,
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        let status_code = a.status_code.map(i32::from);
        self.exec(
            "INSERT INTO attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &a.delivery_id,
                &attempt,
                &a.attempted_at.as_millis(),
                &(a.duration_ms as i64),
                &status_code,
                &a.error,
                &a.response_body,
            ],
        )
        .await?;
        Ok(true)
    }

    /// One statement for the whole batch: the fenced updates, then the attempts of the
    /// deliveries they updated (row-at-a-time statements cost ~10× as much here).
    async fn record_outcomes(&mut self, outcomes: &[Outcome]) -> StoreResult<usize> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        // One statement sees each delivery once: a delivery twice in a batch (attempted again
        // after its lease ran out before the first outcome was written) is recorded row by
        // row, where the second outcome meets the fence the first one moved.
        let mut seen = std::collections::HashSet::with_capacity(outcomes.len());
        if !outcomes
            .iter()
            .all(|o| seen.insert(o.attempt.delivery_id.as_str()))
        {
            let mut recorded = 0;
            for o in outcomes {
                recorded += usize::from(self.record_outcome(o).await?);
            }
            return Ok(recorded);
        }
        let n = outcomes.len();
        let mut ids = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut next = Vec::with_capacity(n);
        let mut updated = Vec::with_capacity(n);
        let mut owners = Vec::with_capacity(n);
        let mut attempted = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        for o in outcomes {
            let a = &o.attempt;
            ids.push(a.delivery_id.as_str());
            statuses.push(o.new_status.as_str());
            attempts.push(a.attempt as i32);
            next.push(o.next_attempt_at.map(Timestamp::as_millis));
            updated.push(a.attempted_at.as_millis() + a.duration_ms as i64);
            owners.push(o.lease_owner.as_str());
            attempted.push(a.attempted_at.as_millis());
            durations.push(a.duration_ms as i64);
            codes.push(a.status_code.map(i32::from));
            errors.push(a.error.as_deref());
            bodies.push(a.response_body.as_deref());
        }
        let recorded = self
            .exec(
                "WITH o AS ( \
                   SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int8[], \
                     $6::text[], $7::int8[], $8::int8[], $9::int4[], $10::text[], $11::text[]) \
                   AS o(delivery_id, new_status, attempt, next_attempt_at, updated_at, lease_owner, \
                        attempted_at, duration_ms, status_code, error, response_body)), \
                 u AS ( \
                   UPDATE deliveries d SET status = o.new_status, attempt_count = o.attempt, \
                     next_attempt_at = o.next_attempt_at, lease_owner = NULL, lease_expires_at = NULL, \
                     updated_at = o.updated_at \
                   FROM o WHERE d.id = o.delivery_id AND d.status = 'pending' \
                     AND d.attempt_count = o.attempt - 1 AND d.lease_owner = o.lease_owner \
                   RETURNING d.id) \
                 INSERT INTO attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body) \
                 SELECT o.delivery_id, o.attempt, o.attempted_at, o.duration_ms, o.status_code, o.error, o.response_body \
                 FROM o JOIN u ON u.id = o.delivery_id",
                &[
                    &ids, &statuses, &attempts, &next, &updated, &owners, &attempted, &durations,
                    &codes, &errors, &bodies,
                ],
            )
            .await?;
        Ok(recorded as usize)
    }

    async fn release_leases(&mut self, owner: Option<&str>) -> StoreResult<u64> {
        self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE lease_owner IS NOT NULL AND ($1::text IS NULL OR lease_owner = $1)",
            &[&owner],
        )
        .await
    }

    async fn release_lease(&mut self, delivery_id: &str, owner: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2",
            &[&delivery_id, &owner],
        )
        .await?;
        Ok(())
    }

    async fn next_due_at(
        &mut self,
        now: Timestamp,
        skip: &[String],
    ) -> StoreResult<Option<Timestamp>> {
        let skip: Vec<String> = skip.to_vec();
        let rows = self
            .rows(
                if skip.is_empty() {
                    "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' \
                     AND (lease_expires_at IS NULL OR lease_expires_at < $1) AND cardinality($2::text[]) = 0"
                } else {
                    // Per webhook, by the (webhook, due) index, as in `claim_due`.
                    "SELECT min((SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.webhook_id = w.id \
                       AND d.status = 'pending' AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $1))) \
                     FROM webhooks w WHERE w.id <> ALL($2::text[])"
                },
                &[&now.as_millis(), &skip],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(Timestamp::from_millis))
    }

    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>> {
        self.one(
            &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            delivery_row,
        )
        .await
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
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE webhook_id = $1 \
                 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            ),
            &[&webhook_id, &status],
            page,
            delivery_row,
        )
        .await
    }

    async fn list_attempts(&mut self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        self.all(
            "SELECT delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body \
             FROM attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery_id],
            |r| {
                let attempt: i32 = r.try_get(1)?;
                let status: Option<i32> = r.try_get(4)?;
                Ok(Attempt {
                    delivery_id: r.try_get(0)?,
                    attempt: u32::try_from(attempt).map_err(|e| corrupt("attempts.attempt", e))?,
                    attempted_at: ts(r, 2)?,
                    duration_ms: r.try_get::<_, i64>(3)?.max(0) as u64,
                    status_code: status.and_then(|s| u16::try_from(s).ok()),
                    error: r.try_get(5)?,
                    response_body: r.try_get(6)?,
                })
            },
        )
        .await
    }
}
