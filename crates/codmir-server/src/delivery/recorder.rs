//! The recorder: one task that writes attempts' outcomes in batches, one unit of work for
//! whatever queued up while the previous batch was committing, and hands what the batch
//! changed (a webhook disabled automatically) to the engine.
//!
//! A batch the database does not take (it is unreachable, its disk is full) is kept and
//! written again until it is taken — outcomes are fenced by lease, so a late write of an
//! attempt whose delivery another node took over changes nothing — and while it waits the
//! engine starts no new attempt ([`Health::holding`]): an attempt whose outcome cannot be
//! recorded is one the receiver may see again from whoever takes the delivery over.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use codmir_core::time::Timestamp;
use codmir_core::webhook::{DeliveryStatus, DisablePolicy};
use tokio::sync::{mpsc, oneshot};

use super::Engine;
use super::attempt::Observed;
use crate::ops::{self, AfterCommit};
use crate::store::{BoxFuture, Outcome, Store, StoreResult, Tx, chain};

/// Outcomes that may wait for the recorder before attempts wait for it.
pub(super) const OUTCOME_DEPTH: usize = 4096;
/// Most outcomes written in one unit of work.
const OUTCOME_BATCH: usize = 512;
/// How long the recorder trusts that a webhook has no run of failures, so that its successes
/// write nothing: another node may have recorded failures of it since.
const CLEAN_FOR: Duration = Duration::from_secs(10);

/// A write slower than this means the database is not answering: new attempts wait.
const STALLED_AFTER: Duration = Duration::from_secs(1);
/// The longest wait between two writes of a batch the database did not take.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a batch refused for another reason than the database being away or full is
/// tried: such an error may not go away, and the recorder must not wedge on it.
const TRIES_OTHERWISE: u32 = 3;
/// How long, once the engine stops, the recorder keeps trying a batch the database does not
/// take before it gives up on it (the deliveries' leases expire and they are attempted again).
const GIVE_UP_WHEN_STOPPING: Duration = Duration::from_secs(5);

/// Whether the recorder is keeping up, shared with the engine loop.
#[derive(Default)]
pub(super) struct Health {
    /// Milliseconds since `origin` when the write in progress began; 0 when idle.
    writing_since: AtomicU64,
    /// The last write failed and its batch waits to be written again.
    failing: AtomicBool,
    origin: std::sync::OnceLock<Instant>,
}

impl Health {
    fn clock(&self) -> u64 {
        let origin = *self.origin.get_or_init(Instant::now);
        origin.elapsed().as_millis() as u64 + 1
    }

    /// True while new attempts should wait: the last batch was not taken, or the write in
    /// progress has taken longer than a healthy database ever does.
    pub(super) fn holding(&self) -> bool {
        if self.failing.load(Ordering::Relaxed) {
            return true;
        }
        let since = self.writing_since.load(Ordering::Relaxed);
        since != 0 && self.clock().saturating_sub(since) > STALLED_AFTER.as_millis() as u64
    }
}

/// Writes outcomes from `rx` until `done` fires and the queue is empty. Wakes the loop after
/// a batch holding retries, so that it sets its timer for them, and once the database takes
/// batches again after a failure.
pub(super) async fn record_outcomes(
    store: Store,
    engine: Engine,
    policy: DisablePolicy,
    health: std::sync::Arc<Health>,
    mut rx: mpsc::Receiver<Observed>,
    mut done: oneshot::Receiver<()>,
) {
    let mut finishing = false;
    // Webhooks known, until the instant, to have no run of failures.
    let mut clean: HashMap<String, Instant> = HashMap::new();
    loop {
        // Once the engine has no attempts left, take what is queued and stop.
        let first = if finishing {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                o = rx.recv() => o,
                _ = &mut done => {
                    finishing = true;
                    continue;
                }
            }
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < OUTCOME_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        // Moved apart, not copied: the outcomes go to the store as they are.
        let (outcomes, targets): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let retries = outcomes
            .iter()
            .any(|o| o.new_status == DeliveryStatus::Pending);
        let count = outcomes.len();
        let now = Instant::now();
        clean.retain(|_, until| *until > now);
        let known: HashSet<String> = targets
            .iter()
            .filter(|t| clean.contains_key(&t.webhook_id))
            .map(|t| t.webhook_id.clone())
            .collect();
        let chained = targets.iter().any(|t| t.chain.is_some());
        let outcomes = std::sync::Arc::new(outcomes);
        let targets = std::sync::Arc::new(targets);
        let known = std::sync::Arc::new(known);
        let mut tries = 0u32;
        let mut backoff = Duration::from_millis(100);
        let mut stopping_since: Option<Instant> = None;
        let result = loop {
            let (outcomes, targets, known) = (outcomes.clone(), targets.clone(), known.clone());
            health
                .writing_since
                .store(health.clock(), Ordering::Relaxed);
            // Outcomes are fenced updates and inserts: nothing to check, and only the database
            // can fail them, so they may share a batch with API units. Not when one settles a
            // chained delivery: letting the next go locks the chain after the outcome, where
            // an API unit of the same batch would then lock its ticket — the opposite order of
            // another batch's unit on that ticket (ticket, then chain), a deadlock.
            let result: StoreResult<(ops::Recorded, AfterCommit)> = if chained {
                store
                    .write(move |tx| record(tx, outcomes, targets, policy, known))
                    .await
            } else {
                store
                    .write_checked(
                        None,
                        |_| Box::pin(async { Ok::<_, crate::store::StoreError>(()) }),
                        move |tx, ()| record(tx, outcomes, targets, policy, known),
                    )
                    .await
            };
            health.writing_since.store(0, Ordering::Relaxed);
            let Err(e) = &result else {
                if health.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(outcomes = count, "recording attempts again");
                    engine.wake.notify_one();
                }
                break result;
            };
            tries += 1;
            finishing |= matches!(
                done.try_recv(),
                Ok(()) | Err(oneshot::error::TryRecvError::Closed)
            );
            let stopping_for = finishing.then(|| *stopping_since.get_or_insert_with(Instant::now));
            let transient = e.is_transient();
            let give_up = if transient {
                stopping_for.is_some_and(|since| since.elapsed() > GIVE_UP_WHEN_STOPPING)
            } else {
                tries >= TRIES_OTHERWISE
            };
            if give_up {
                break result;
            }
            health.failing.store(true, Ordering::Relaxed);
            tracing::warn!(
                error = %chain(e),
                outcomes = count,
                retry_in_ms = backoff.as_millis() as u64,
                "could not record attempts; new attempts wait until they are recorded"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        match result {
            Ok((recorded, mut after)) => {
                for &i in &recorded.fenced {
                    let o = &outcomes[i];
                    // The attempt was sent and is logged as such; its outcome is not this
                    // node's to write any more, and neither is the retry it planned.
                    tracing::warn!(
                        delivery_id = %o.attempt.delivery_id,
                        attempt = o.attempt.attempt,
                        lease_owner = %o.lease_owner,
                        "delivery attempt not recorded: this node's lease on the delivery was lost \
                         (another node took it over after the lease expired) or the delivery was \
                         cancelled; its outcome is discarded and the delivery goes on under its \
                         current holder"
                    );
                }
                for w in recorded.clean {
                    clean.insert(w, now + CLEAN_FOR);
                }
                for w in recorded.failing {
                    clean.remove(&w);
                }
                // While stopping, the loop no longer reads hand-offs (and releases what it
                // holds anyway).
                if !after.is_empty() && !finishing {
                    // A webhook disabled: its queued work dropped; its event's deliveries are
                    // not leased to anyone, so the engine looks for them now.
                    after.wake = true;
                    engine.after_commit(after).await;
                }
            }
            Err(e) => {
                health.failing.store(false, Ordering::Relaxed);
                tracing::error!(
                    error = %chain(&e),
                    outcomes = count,
                    "could not record attempts; gave up on them: they will be attempted again \
                     when their leases expire"
                );
            }
        }
        if retries {
            engine.wake.notify_one();
        }
    }
}

/// One try at recording a batch of outcomes, as a unit of work.
fn record(
    tx: &mut dyn Tx,
    outcomes: Arc<Vec<Outcome>>,
    targets: Arc<Vec<ops::Target>>,
    policy: DisablePolicy,
    known: Arc<HashSet<String>>,
) -> BoxFuture<'_, StoreResult<(ops::Recorded, AfterCommit)>> {
    Box::pin(async move {
        let mut after = AfterCommit::default();
        let r = ops::record_outcomes(
            tx,
            &outcomes,
            &targets,
            &policy,
            &known,
            Timestamp::now(),
            &mut after,
        )
        .await?;
        Ok((r, after))
    })
}
