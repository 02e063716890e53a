//! What a unit of work sees: the row-level operations of one transaction, by area, and the
//! records they pass. Every SQL statement is behind one of these methods.

use std::sync::Arc;

use async_trait::async_trait;
use codmir_core::event::Event;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Comment, Member, Principal, Project, Ticket, User, Workspace};
use codmir_core::webhook::{Attempt, Delivery, DeliveryStatus, Webhook};

use super::StoreResult;

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
    /// The same page with each item changed by `f`, or its first error.
    pub(crate) fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
            has_more: self.has_more,
        })
    }

    /// Trims a list fetched with `limit + 1` rows to `limit` and records whether more exist.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32) -> Self {
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Self { items, has_more }
    }
}

/// Which events a list shows: by type (exact, `family.*` or `*`), project and creation time
/// (`since` inclusive, `until` exclusive), newest first unless `ascending`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// A pattern as webhooks take them; `None` or `*` for every type.
    pub event_type: Option<String>,
    pub project_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub ascending: bool,
}

/// An event type pattern as a SQL `LIKE` pattern (`ticket.%` for `ticket.*`); `None` for
/// every type.
fn like_pattern(pattern: Option<&str>) -> Option<String> {
    match pattern {
        None | Some("*") => None,
        Some(p) => Some(match p.strip_suffix(".*") {
            Some(family) => format!("{family}.%"),
            None => p.to_owned(),
        }),
    }
}

impl EventQuery {
    /// The `type` filter as a SQL `LIKE` pattern, if any.
    pub(crate) fn type_like(&self) -> Option<String> {
        like_pattern(self.event_type.as_deref())
    }
}

/// Which deliveries a workspace-wide list shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub webhook_id: Option<String>,
    /// The deliveries of one event (to each webhook, and redeliveries).
    pub event_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// With `status`: only those attempted (`retrying`) or only those not (`pending`).
    pub attempted: Option<bool>,
    /// A pattern as webhooks take them; `None` or `*` for every type.
    pub event_type: Option<String>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
}

impl DeliveryQuery {
    pub(crate) fn type_like(&self) -> Option<String> {
        like_pattern(self.event_type.as_deref())
    }
}

/// The queue as `/metrics` shows it, read at each scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueFigures {
    pub pending: i64,
    /// Due now and not leased to a node.
    pub due: i64,
    pub oldest_due: Option<Timestamp>,
    pub disabled_webhooks: i64,
    /// Chains (a webhook ordered per resource, one resource) with a delivery waiting behind
    /// an earlier one.
    pub waiting_chains: i64,
    /// When the oldest delivery waiting in a chain was made.
    pub oldest_waiting: Option<Timestamp>,
}

/// A webhook's deliveries of one status created in one bucket of time: how many, and how
/// many of them have been attempted (a pending one attempted is retrying).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCount {
    pub bucket: Timestamp,
    pub status: DeliveryStatus,
    pub count: i64,
    pub attempted: i64,
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

/// An API key as `codmir keys list` shows it: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub workspace: String,
    pub user: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub workspace_id: String,
}

/// What an earlier request with the same `Idempotency-Key` left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotent {
    /// SHA-256 of its method, path and body.
    pub fingerprint: Vec<u8>,
    /// `None` while it runs.
    pub status: Option<u16>,
    pub body: Option<String>,
    /// When the claim was made (or last taken over).
    pub claimed_at: Timestamp,
}

/// An event as stored: the exact bytes that are delivered.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    pub payload: String,
}

/// A node's hold on a delivery: while `until` is in the future, no other node claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The node's name (`node_…`), unique per process.
    pub owner: String,
    pub until: Timestamp,
}

/// A delivery this node holds a lease on, with everything needed to send it: fresh work
/// written leased by a commit of this node, or work claimed from the database.
#[derive(Debug, Clone)]
pub struct Leased {
    pub delivery: Delivery,
    /// Shared by every delivery of the webhook that the fan-out or a claim made at once.
    pub webhook: Arc<Webhook>,
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

/// Every read, of all areas: what may only read gets this handle (a checked unit's checks),
/// so it cannot write.
#[async_trait]
pub trait ReadTx: Send {
    async fn workspace_count(&mut self) -> StoreResult<i64>;
    async fn get_workspace(&mut self, id: &str) -> StoreResult<Option<Workspace>>;
    async fn find_workspace_by_name(&mut self, name: &str) -> StoreResult<Option<Workspace>>;

    async fn find_user_by_name(&mut self, ws: &str, name: &str) -> StoreResult<Option<User>>;
    async fn find_user_by_email(&mut self, ws: &str, email: &str) -> StoreResult<Option<User>>;
    async fn get_user(&mut self, ws: &str, id: &str) -> StoreResult<Option<User>>;
    /// A key that is not revoked, with the principal it acts as.
    async fn get_api_key(&mut self, id: &str) -> StoreResult<Option<(ApiKeyRecord, Principal)>>;
    /// Every key of every workspace, revoked ones included, oldest first.
    async fn list_api_keys(&mut self) -> StoreResult<Vec<KeyInfo>>;
    async fn get_project(&mut self, ws: &str, id: &str) -> StoreResult<Option<Project>>;
    async fn list_projects(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Project>>;

    async fn get_member(&mut self, project_id: &str, user_id: &str) -> StoreResult<Option<Member>>;
    async fn list_members(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Member>>;
    async fn get_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>>;
    /// Like `get_ticket`, and holds the row against concurrent writers until commit.
    async fn lock_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>>;
    async fn list_tickets(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Ticket>>;
    /// The comments of a ticket, newest first.
    async fn list_comments(
        &mut self,
        ticket_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Comment>>;

    async fn get_event(&mut self, ws: &str, id: &str) -> StoreResult<Option<StoredEvent>>;

    /// Up to `limit` events of the workspace created in `[since, until)` with ids after
    /// `after`, oldest first, whole (type, project, payload): what a replay walks.
    async fn events_between(
        &mut self,
        ws: &str,
        since: Timestamp,
        until: Timestamp,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Event>>;

    /// The workspace's events matching `q`; with `q.ascending` the cursor pages forward.
    async fn list_events(
        &mut self,
        ws: &str,
        q: &EventQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<StoredEvent>>;

    async fn get_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>>;

    /// Up to `limit` webhooks whose `expires_at` has come by `now`, as (workspace, id).
    async fn expired_webhooks(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>>;

    /// Like `get_webhook`, and holds the row against concurrent writers until commit.
    async fn lock_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>>;

    async fn list_webhooks(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Webhook>>;

    /// How many webhooks the workspace has.
    async fn webhook_count(&mut self, ws: &str) -> StoreResult<i64>;

    /// Every enabled webhook of the workspace, for fan-out.
    async fn enabled_webhooks(&mut self, ws: &str) -> StoreResult<super::Webhooks>;

    /// The statuses of the webhook's deliveries of each of `event_ids`, as
    /// `(event_id, delivery_id, status)`.
    async fn delivery_states(
        &mut self,
        webhook_id: &str,
        event_ids: &[String],
    ) -> StoreResult<Vec<(String, String, DeliveryStatus)>>;

    /// For the metrics: the queue as it is at `now`.
    async fn queue_gauges(&mut self, now: Timestamp) -> StoreResult<QueueFigures>;

    /// The webhook's test pings created since `since`, by status (bucket 0).
    async fn ping_counts(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<StatusCount>>;

    /// For a webhook's statistics: its deliveries created at or after `since`, counted per
    /// status and per `bucket_ms` of creation time.
    async fn delivery_counts(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
        bucket_ms: i64,
    ) -> StoreResult<Vec<StatusCount>>;

    /// How many of the webhook's chains have a delivery waiting behind an earlier one.
    async fn waiting_chains(&mut self, webhook_id: &str) -> StoreResult<i64>;

    /// The earliest delivery not settled of `webhook_id`'s chain for `resource_id` numbered
    /// below `before`: what a delivery of the chain waits behind.
    async fn chain_head(
        &mut self,
        webhook_id: &str,
        resource_id: &str,
        before: u64,
    ) -> StoreResult<Option<Delivery>>;

    /// For a webhook's statistics: how long each of its deliveries created at or after
    /// `since` that succeeded took, from creation to the end of the successful attempt, in
    /// milliseconds, ascending.
    async fn success_latencies(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<i64>>;

    /// The earliest `next_attempt_at` of a pending delivery that is not leased at `now` and
    /// not of a webhook in `skip`, if any.
    async fn next_due_at(
        &mut self,
        now: Timestamp,
        skip: &[String],
    ) -> StoreResult<Option<Timestamp>>;

    /// How many of the workspace's deliveries are pending, counted up to `up_to`.
    async fn pending_count(&mut self, ws: &str, up_to: u64) -> StoreResult<u64>;

    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>>;

    /// The webhook's deliveries, newest first; with `status` (and `attempted`, as in
    /// [`DeliveryQuery`]) only those.
    async fn list_deliveries(
        &mut self,
        webhook_id: &str,
        status: Option<(DeliveryStatus, Option<bool>)>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>>;

    /// The workspace's deliveries matching `q`, across its webhooks, newest first.
    async fn list_workspace_deliveries(
        &mut self,
        ws: &str,
        q: &DeliveryQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>>;

    async fn list_attempts(&mut self, delivery_id: &str) -> StoreResult<Vec<Attempt>>;
}

/// The tracker's rows: workspaces, users and their API keys, projects, members, tickets and
/// comments.
#[async_trait]
pub trait TrackerTx: Send {
    async fn insert_workspace(&mut self, w: &Workspace) -> StoreResult<()>;
    async fn insert_user(&mut self, u: &User) -> StoreResult<()>;

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> StoreResult<()>;
    /// Marks a key revoked at `at`; false when there is no such key or it already was.
    async fn revoke_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<bool>;
    /// Records that a key was used at `at`.
    async fn touch_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<()>;

    /// Deletes the workspace's idempotency records created before `expired_before`, then
    /// returns the record of `key` if there is one, or writes a claim of it under `token`
    /// (status NULL: in progress) and returns `None`. A claim without an answer made before
    /// `stale_before`, of the same request, is taken over under `token` (`None` too).
    #[allow(clippy::too_many_arguments)]
    async fn idempotency_claim(
        &mut self,
        ws: &str,
        key: &str,
        fingerprint: &[u8; 32],
        token: &str,
        now: Timestamp,
        expired_before: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<Option<Idempotent>>;
    /// Stores the answer of the request that claimed `key` under `token`; false when the
    /// claim is no longer its own (taken over, or already answered).
    async fn idempotency_finish(
        &mut self,
        ws: &str,
        key: &str,
        token: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<bool>;
    /// Forgets `key` while `token` holds it unanswered (its request failed: a retry should run
    /// it again).
    async fn idempotency_release(&mut self, ws: &str, key: &str, token: &str) -> StoreResult<()>;

    /// A new project, whose creating unit gave its events the numbers up to `last_sequence`.
    async fn insert_project(&mut self, p: &Project, last_sequence: u64) -> StoreResult<()>;
    async fn insert_member(&mut self, m: &Member) -> StoreResult<()>;

    /// A new ticket, whose creating unit gave its events the numbers up to `last_sequence`.
    async fn insert_ticket(&mut self, t: &Ticket, last_sequence: u64) -> StoreResult<()>;
    async fn update_ticket(&mut self, t: &Ticket) -> StoreResult<()>;
    async fn delete_ticket(&mut self, id: &str, at: Timestamp) -> StoreResult<()>;

    async fn insert_comment(&mut self, c: &Comment) -> StoreResult<()>;
}

/// The outbox: events and webhooks.
#[async_trait]
pub trait OutboxTx: Send {
    async fn insert_event(&mut self, e: &Event) -> StoreResult<()>;

    /// Takes the next `count` sequence numbers of the events about `resource_id`, a ticket
    /// (`tkt_…`) or a project; returns the last one taken (`None`: no such resource). The
    /// resource's row stays locked until the unit commits, so numbers follow commit order.
    async fn take_sequence(&mut self, resource_id: &str, count: u64) -> StoreResult<Option<u64>>;

    async fn insert_webhook(&mut self, w: &Webhook) -> StoreResult<()>;

    /// Seals again, under the store's current key, every webhook secret that is not yet (one
    /// written before encryption, or under an older key); returns how many webhooks changed.
    async fn reseal_secrets(&mut self) -> StoreResult<u64>;

    async fn update_webhook(&mut self, w: &Webhook) -> StoreResult<()>;

    async fn delete_webhook(&mut self, id: &str) -> StoreResult<()>;

    /// Moves an enabled webhook's run of failed attempts on: with `reset` (an attempt
    /// succeeded) the run restarts with the `failures` that came after the success, otherwise
    /// they are added to it; `first_failure_at` starts a run that had none. Returns the run as
    /// it now stands, `(failing_since, consecutive_failures)`, or `None` when the webhook is
    /// gone or disabled.
    async fn update_failure_run(
        &mut self,
        webhook_id: &str,
        reset: bool,
        failures: u32,
        first_failure_at: Option<Timestamp>,
    ) -> StoreResult<Option<(Option<Timestamp>, u32)>>;
}

/// The delivery queue: deliveries with their leases and claims, the attempt log, and
/// retention.
#[async_trait]
pub trait QueueTx: Send {
    /// Deletes up to `limit` settled deliveries with ids below `delivery_floor`, with their
    /// attempts, then up to `limit` events with ids below `event_floor` that no delivery
    /// needs any more. Returns `(deliveries, attempts, events)` deleted.
    async fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> StoreResult<(u64, u64, u64)>;

    /// Inserts a delivery, held by `lease` when given.
    async fn insert_delivery(&mut self, d: &Delivery, lease: Option<&Lease>) -> StoreResult<()>;

    /// Takes the lock of `webhook_id`'s chain for `resource_id` until the unit commits: the
    /// fan-out joining it and a settlement letting its next delivery go take turns.
    async fn lock_chain(
        &mut self,
        webhook_id: &str,
        resource_id: &str,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Whether the chain has a delivery not settled yet (a new one waits behind it).
    async fn chain_busy(&mut self, webhook_id: &str, resource_id: &str) -> StoreResult<bool>;

    /// Lets the chain's next waiting delivery go (due at `now`) when none of it is active;
    /// the one let go.
    async fn release_next(
        &mut self,
        webhook_id: &str,
        resource_id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<String>>;

    /// A webhook no longer ordered (or gone): every delivery waiting in its chains is due at
    /// `now`, and the chains' rows go. How many were let go.
    async fn release_chains(&mut self, webhook_id: &str, now: Timestamp) -> StoreResult<u64>;

    /// Writes this node's readiness row: readiness is a write that commits.
    async fn mark_ready(&mut self, node: &str, now: Timestamp) -> StoreResult<()>;

    /// Tells other nodes, once this transaction commits, that new deliveries are due.
    async fn announce_deliveries(&mut self) -> StoreResult<()>;

    /// Makes the pending deliveries of a webhook that are due later due at `now`; returns how
    /// many.
    async fn make_due_now(&mut self, webhook_id: &str, now: Timestamp) -> StoreResult<u64>;

    /// Cancels the pending deliveries of a webhook, saying why; returns how many.
    async fn cancel_pending_deliveries(
        &mut self,
        webhook_id: &str,
        reason: &str,
        at: Timestamp,
    ) -> StoreResult<u64>;

    /// Cancels one delivery if it is pending, saying why; false when it was not.
    async fn cancel_delivery(&mut self, id: &str, reason: &str, at: Timestamp)
    -> StoreResult<bool>;

    /// Leases up to `limit` pending deliveries that are due at `now` and not held by a live
    /// lease, skipping the webhooks in `skip`, to `lease`.
    async fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Leased>>;

    /// Records an attempt and moves the delivery on; false when the fence did not hold (the
    /// lease was lost, or the delivery was cancelled meanwhile) and nothing was written.
    async fn record_outcome(&mut self, o: &Outcome) -> StoreResult<bool>;

    /// Records a batch of outcomes, each fenced like [`QueueTx::record_outcome`]; returns
    /// whether each was recorded, in order. A backend may do it in fewer statements than one
    /// per outcome.
    async fn record_outcomes(&mut self, outcomes: &[Outcome]) -> StoreResult<Vec<bool>> {
        let mut recorded = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            recorded.push(self.record_outcome(o).await?);
        }
        Ok(recorded)
    }

    /// Drops the leases of `owner`, or every lease when `None`; returns how many.
    async fn release_leases(&mut self, owner: Option<&str>) -> StoreResult<u64>;

    /// Drops one lease of `owner` so the delivery can be claimed again at once.
    /// (Also used for deliveries handed off in-process that this node cannot take now.)
    async fn release_lease(&mut self, delivery_id: &str, owner: &str) -> StoreResult<()>;
}

/// One transaction's operations, all areas: what a unit of work takes as `&mut dyn Tx`.
pub trait Tx: ReadTx + TrackerTx + OutboxTx + QueueTx + Send {}

impl<T: ReadTx + TrackerTx + OutboxTx + QueueTx + Send> Tx for T {}
