//! The units of work: each validates against the current state and writes its rows, its
//! events and their deliveries through one [`Tx`], so that the caller's transaction holds all
//! of it or none of it (the outbox). What the delivery engine must learn from a committed
//! unit is collected in an [`AfterCommit`].
//!
//! Architecture invariant: nothing here knows HTTP or SQL.

use std::future::Future;
use std::sync::Arc;

use codmir_core::ValidationError;
use codmir_core::event::{Event, EventType, UnstampedEvent};
use codmir_core::time::Timestamp;
use codmir_core::webhook::{Delivery, DeliveryOrder, Webhook};

use crate::store::{Lease, Leased, ReadTx, StoreError, StoreResult, Tx};

mod keys;
mod outcomes;
mod recovery;
mod stats;
mod tracker;
mod webhooks;

pub use keys::{
    NewKey, any_key_used, authenticate, bootstrap, create_key, key_id, list_keys, revoke_key,
    revoke_workspace_key, workspace_keys,
};
pub use outcomes::{Recorded, Target, disable, record_outcomes};
pub use recovery::{
    MAX_REPLAY, Replay, ReplayStatus, Replayed, ping, redeliver, replay, retry_pending, skip,
};
pub use stats::{
    Counts, HEALTH_RETRYING, Health, Latency, Stats, Window, webhook_stats, webhooks_health,
};
pub use tracker::{
    CreateComment, CreateTicket, DeleteTicket, Planned, PreparedTicket, TicketUpdate, UpdateTicket,
    add_member, create_project, prepare_ticket, project, ticket,
};
pub use webhooks::{
    DeliveryLog, MAX_GRACE, NewWebhook, WebhookPatch, create_webhook, delete_webhook, delivery,
    remove_expired_webhooks, rotate_secret, update_webhook, webhook,
};

/// Why a unit of work was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist in the caller's workspace (other workspaces' ids look the same).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The workspace's pending deliveries would pass its quota.
    #[error(
        "the workspace has {pending} deliveries pending, and at most {quota} may be \
         (--max-pending-per-workspace); this would queue {adding} more at least. Wait for them to be \
         delivered, or cancel some (disable the webhook), then retry"
    )]
    QuotaExceeded {
        pending: u64,
        quota: u64,
        adding: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses to queue `adding` more deliveries in `ws` when its pending ones would pass `quota`.
pub async fn within_quota(tx: &mut dyn ReadTx, ws: &str, quota: u64, adding: u64) -> Result<()> {
    let pending = tx.pending_count(ws, quota.saturating_add(1)).await?;
    if pending.saturating_add(adding) > quota {
        return Err(Error::QuotaExceeded {
            pending,
            quota,
            adding,
        });
    }
    Ok(())
}

pub type Result<T> = std::result::Result<T, Error>;

/// A unit of work that may share its commit with others (`Store::write_checked`): its checks
/// may read and refuse but cannot write (they get a [`ReadTx`]); its writes cannot refuse
/// (they fail only with the database's own error). So the rule that lets such units share a
/// commit without a savepoint of their own is kept by the compiler. `now` is taken when the
/// unit runs, in commit order.
pub trait Checked: Send + Sized + 'static {
    /// What the checks decided to write.
    type Plan: Send + 'static;
    /// What the unit answers.
    type Output: Send + 'static;

    fn check(
        self,
        tx: &mut dyn ReadTx,
        now: Timestamp,
    ) -> impl Future<Output = Result<Self::Plan>> + Send;

    fn write(
        plan: Self::Plan,
        tx: &mut dyn Tx,
        now: Timestamp,
        after: &mut AfterCommit,
    ) -> impl Future<Output = StoreResult<Self::Output>> + Send;

    /// The existing resource whose rows it locks (see `Job::lock_key`).
    fn lock_key(&self) -> Option<String> {
        None
    }
}

/// Runs a checked unit inside a unit of work that is not shared (`Store::write`): both
/// phases, one after the other.
pub async fn run<U: Checked>(
    tx: &mut dyn Tx,
    unit: U,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<U::Output> {
    let plan = unit.check(&mut *tx, now).await?;
    Ok(U::write(plan, tx, now, after).await?)
}

/// What the delivery engine must learn from a unit of work once it has committed, collected
/// while the unit runs and handed to the engine after the commit (by the API's `mutate`, the
/// one after-commit path). With a lease, new deliveries are written already leased to this
/// node and collected in `fresh`, to be sent at once (no claim query, no polling); without
/// one they wait for a claim.
#[derive(Debug, Default)]
pub struct AfterCommit {
    lease: Option<Lease>,
    /// Deliveries created leased to this node.
    pub fresh: Vec<Leased>,
    /// Webhooks whose pending deliveries were cancelled (deleted or disabled): what the engine
    /// holds queued for them must not be sent.
    pub cancelled: Vec<String>,
    /// Deliveries became due that no lease of this node holds (`retry-pending`): the engine
    /// should look in the database now rather than at its next poll.
    pub wake: bool,
}

impl AfterCommit {
    /// New deliveries will be held by `lease`.
    pub fn leased_to(lease: Lease) -> Self {
        Self {
            lease: Some(lease),
            ..Self::default()
        }
    }

    /// Nothing for the engine to learn.
    pub fn is_empty(&self) -> bool {
        self.fresh.is_empty() && self.cancelled.is_empty() && !self.wake
    }
}

/// Stamps `events` (ids and times now; each event about a ticket or project numbered in its
/// resource's sequence), stores them, and creates one pending delivery, due now, per matching
/// enabled webhook.
pub(crate) async fn emit(
    tx: &mut dyn Tx,
    workspace_id: &str,
    events: Vec<UnstampedEvent>,
    now: Timestamp,
    after: &mut AfterCommit,
) -> StoreResult<()> {
    let events = stamp(tx, events, now).await?;
    for event in &events {
        tx.insert_event(event).await?;
    }
    let webhooks = tx.enabled_webhooks(workspace_id).await?;
    let mut any = false;
    for event in &events {
        let mut payload: Option<Arc<str>> = None;
        for webhook in webhooks
            .iter()
            .filter(|w| w.wants(event.event_type, event.project_id.as_deref()))
        {
            let mut delivery =
                Delivery::new(workspace_id, &webhook.id, &event.id, event.event_type, now);
            if let (DeliveryOrder::PerResource, Some(resource), Some(n)) =
                (webhook.ordering, &event.resource_id, event.sequence)
            {
                delivery.chain = Some((resource.clone(), n));
                if join_chain(tx, &webhook.id, resource, now).await? {
                    // Behind an earlier one of its resource: not due until that one settles.
                    delivery.next_attempt_at = None;
                    tx.insert_delivery(&delivery, None).await?;
                    continue;
                }
            }
            let payload = payload
                .get_or_insert_with(|| Arc::from(event.payload.as_str()))
                .clone();
            enqueue(tx, delivery, webhook, payload, after).await?;
            any = true;
        }
    }
    if any {
        announce(tx, after).await?;
    }
    Ok(())
}

/// `events` stamped in order: those about one resource take consecutive numbers of its
/// sequence, the others none. A resource created by this unit (its `ticket.created` or
/// `project.created` is among them) numbers from 1, and its row is inserted with the count
/// (`insert_ticket`, `insert_project`): no statement; any other takes its numbers from its
/// row (one statement per resource, usually one per unit).
async fn stamp(
    tx: &mut dyn Tx,
    events: Vec<UnstampedEvent>,
    now: Timestamp,
) -> StoreResult<Vec<Event>> {
    // (resource, next number to give), in order of first appearance.
    let mut next: Vec<(String, u64)> = Vec::with_capacity(1);
    for e in &events {
        let Some(resource) = e.resource_id() else {
            continue;
        };
        if next.iter().any(|(r, _)| r == resource) {
            continue;
        }
        let mine = || events.iter().filter(|o| o.resource_id() == Some(resource));
        let count = mine().count() as u64;
        let created = mine().any(|o| {
            matches!(
                o.event_type(),
                EventType::TicketCreated | EventType::ProjectCreated
            )
        });
        let first = match created {
            true => 1,
            false => match tx.take_sequence(resource, count).await? {
                Some(last) => last + 1 - count,
                // No row: nothing to number from (the unit's checks read the resource, so
                // only a row gone meanwhile; its events go without numbers).
                None => continue,
            },
        };
        next.push((resource.to_owned(), first));
    }
    Ok(events
        .into_iter()
        .map(|e| {
            let numbered = e
                .resource_id()
                .and_then(|r| next.iter_mut().find(|(id, _)| id == r));
            match numbered {
                Some((_, n)) => {
                    *n += 1;
                    e.stamp_in_sequence(now, *n - 1)
                }
                None => e.stamp(now),
            }
        })
        .collect())
}

/// Takes `webhook_id`'s chain for `resource`; true when a delivery of it is pending, so that
/// a new one must wait behind it.
async fn join_chain(
    tx: &mut dyn Tx,
    webhook_id: &str,
    resource: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    tx.lock_chain(webhook_id, resource, now).await?;
    tx.chain_busy(webhook_id, resource).await
}

/// A delivery of `webhook_id`'s chain for `resource` settled (succeeded, failed for good, or
/// was cancelled): the next waiting one goes, unless another of the chain is still active.
pub(crate) async fn chain_moved(
    tx: &mut dyn Tx,
    webhook_id: &str,
    resource: &str,
    now: Timestamp,
    after: &mut AfterCommit,
) -> StoreResult<()> {
    tx.lock_chain(webhook_id, resource, now).await?;
    if tx.release_next(webhook_id, resource, now).await?.is_some() {
        after.wake = true;
    }
    Ok(())
}

/// Writes a new delivery; with a lease it is also collected in `after.fresh`, to be sent by
/// this node's engine once committed.
pub(crate) async fn enqueue(
    tx: &mut dyn Tx,
    delivery: Delivery,
    webhook: &Arc<Webhook>,
    payload: Arc<str>,
    after: &mut AfterCommit,
) -> StoreResult<()> {
    tx.insert_delivery(&delivery, after.lease.as_ref()).await?;
    if let Some(lease) = &after.lease {
        after.fresh.push(Leased {
            delivery,
            webhook: webhook.clone(),
            payload,
            lease_until: lease.until,
        });
    }
    Ok(())
}

/// Tells other nodes that deliveries they may take are due, unless they are all leased to
/// this node: those go to its engine in-process, and waking the other nodes would only make
/// each of them run a claim that finds nothing (with two PostgreSQL nodes, one per commit of
/// the other).
pub(crate) async fn announce(tx: &mut dyn Tx, after: &AfterCommit) -> StoreResult<()> {
    if after.lease.is_none() {
        tx.announce_deliveries().await?;
    }
    Ok(())
}
