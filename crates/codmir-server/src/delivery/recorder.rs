//! The recorder: one task that writes attempts' outcomes in batches, one unit of work for
//! whatever queued up while the previous batch was committing, and hands what the batch
//! changed (a webhook disabled automatically) to the engine.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use codmir_core::time::Timestamp;
use codmir_core::webhook::{DeliveryStatus, DisablePolicy};
use tokio::sync::{mpsc, oneshot};

use super::Engine;
use super::attempt::Observed;
use crate::ops::{self, AfterCommit};
use crate::store::{Store, chain};

/// Outcomes that may wait for the recorder before attempts wait for it.
pub(super) const OUTCOME_DEPTH: usize = 4096;
/// Most outcomes written in one unit of work.
const OUTCOME_BATCH: usize = 512;
/// How long the recorder trusts that a webhook has no run of failures, so that its successes
/// write nothing: another node may have recorded failures of it since.
const CLEAN_FOR: Duration = Duration::from_secs(10);

/// Writes outcomes from `rx` until `done` fires and the queue is empty. Wakes the loop after
/// a batch holding retries, so that it sets its timer for them.
pub(super) async fn record_outcomes(
    store: Store,
    engine: Engine,
    policy: DisablePolicy,
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
        let result = store
            .write(move |tx| {
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
                    Ok::<_, ops::Error>((r, after))
                })
            })
            .await;
        match result {
            Ok((recorded, mut after)) => {
                if recorded.not_recorded > 0 {
                    tracing::debug!(
                        outcomes = recorded.not_recorded,
                        "outcomes not recorded: lease lost or delivery cancelled"
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
            Err(e) => tracing::error!(
                error = %chain(&e),
                outcomes = count,
                "could not record attempts; they will be retried when their leases expire"
            ),
        }
        if retries {
            engine.wake.notify_one();
        }
    }
}
