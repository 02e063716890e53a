//! The engine's handle: what the API holds to feed the loop. Cheap to clone; it owns only
//! senders and counters, never the loop's state.

use std::sync::Arc;
use std::time::Duration;

use codmir_core::time::Timestamp;
use tokio::sync::{Notify, mpsc, watch};

use super::attempt::Attempter;
use super::budget::{ApiLoad, ApiWork};
use crate::ops::AfterCommit;
use crate::store::{Lease, Leased, Outcome, Store, StoreError, chain};
use crate::tasks::Tasks;

/// What the handle tells the loop, in commit order.
#[derive(Debug)]
pub(super) enum Handoff {
    /// Deliveries a commit of this node created leased to it: send them now.
    Fresh(Vec<Leased>),
    /// Webhooks deleted or disabled by a commit: drop what is queued for them.
    Cancelled(Vec<String>),
}

/// The delivery engine as the API sees it.
#[derive(Clone)]
pub struct Engine {
    pub(super) store: Store,
    /// This process's lease owner name.
    pub(super) node: Arc<str>,
    /// How long a lease lasts (see [`super::lease_duration`]).
    pub(super) lease: Duration,
    pub(super) inbox: mpsc::Sender<Handoff>,
    /// Wakes the loop: released work, another node's commit (LISTEN/NOTIFY), a recorded retry.
    pub(super) wake: Arc<Notify>,
    pub(super) load: Arc<ApiLoad>,
    /// For attempts made at a caller's request and answered synchronously (pings).
    pub(super) attempter: Arc<Attempter>,
    pub(super) cut_off: Arc<watch::Sender<bool>>,
    /// The server's tasks: releases of work handed over but not taken run through them.
    pub(super) tasks: Tasks,
}

impl Engine {
    /// This process's name as a lease owner (and in the readiness table).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease under which a unit of work about to run writes its new deliveries.
    pub fn lease(&self) -> Lease {
        Lease {
            owner: self.node.to_string(),
            until: Timestamp::now().plus(self.lease),
        }
    }

    /// Counts an API mutation as in progress until the guard is dropped. While several are,
    /// the API is busy and claimed work yields to it.
    pub fn api_work(&self) -> ApiWork<'_> {
        self.load.enter(Timestamp::now())
    }

    /// Stops waiting for the attempts in flight (during shutdown, before the grace ends: a
    /// second signal): each ends now and is recorded as an interrupted attempt.
    pub fn cut_off(&self) {
        self.cut_off.send_replace(true);
    }

    /// Whether the loop still runs (it holds the receiving end of the hand-offs).
    pub fn is_running(&self) -> bool {
        !self.inbox.is_closed()
    }

    /// How many API mutations this node has counted since it started.
    pub fn api_mutations(&self) -> u64 {
        self.load.started()
    }

    /// Attempts `work` (leased to this node, not queued) now, records the outcome, and returns
    /// it: a test ping, answered to its caller with what the endpoint said. It is not retried.
    pub async fn attempt_now(&self, work: Leased) -> Result<Outcome, StoreError> {
        let outcome = self.attempter.probe(&work).await;
        let recorded = outcome.clone();
        self.store
            .write(move |tx| Box::pin(async move { tx.record_outcome(&recorded).await }))
            .await?;
        Ok(outcome)
    }

    /// Tells the loop what a committed unit of work changed for it. Cancellations always
    /// arrive (the call waits for room), so that a deleted or disabled webhook's queued work is
    /// not sent; attempts already in flight finish and their outcomes are fenced off by the
    /// cancellation. Other nodes' queues are not reached: there a queued delivery may still be
    /// sent, within its lease. Fresh deliveries the loop cannot take now have their leases
    /// dropped instead, so that a claim picks them up.
    pub async fn after_commit(&self, after: AfterCommit) {
        let AfterCommit {
            fresh,
            cancelled,
            wake,
            ..
        } = after;
        if wake {
            self.wake.notify_one();
        }
        if !cancelled.is_empty()
            && self
                .inbox
                .send(Handoff::Cancelled(cancelled))
                .await
                .is_err()
        {
            // The loop has stopped: nothing of this node will be sent any more.
            return;
        }
        if fresh.is_empty() {
            return;
        }
        if let Err(e) = self.inbox.try_send(Handoff::Fresh(fresh)) {
            let fresh = match e {
                mpsc::error::TrySendError::Full(Handoff::Fresh(f))
                | mpsc::error::TrySendError::Closed(Handoff::Fresh(f)) => f,
                _ => return,
            };
            let (store, node) = (self.store.clone(), self.node.clone());
            self.tasks
                .spawn(async move { release(&store, &node, fresh).await });
            self.wake.notify_one();
        }
    }
}

/// Drops this node's leases on `work` so that any node can claim it at once.
async fn release(store: &Store, node: &str, work: Vec<Leased>) {
    let ids: Vec<String> = work.into_iter().map(|w| w.delivery.id).collect();
    let node = node.to_owned();
    let result = store
        .write(move |tx| {
            Box::pin(async move {
                for id in &ids {
                    tx.release_lease(id, &node).await?;
                }
                // Any node may take them now.
                tx.announce_deliveries().await?;
                Ok::<_, StoreError>(())
            })
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %chain(&e), "could not release leases; they will expire");
    }
}
