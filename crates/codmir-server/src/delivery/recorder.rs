//! The recorder: one task that writes attempts' outcomes in batches, one unit of work for
//! whatever queued up while the previous batch was committing.

use std::sync::Arc;

use codmir_core::webhook::DeliveryStatus;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::{Outcome, Store, StoreError, chain};

/// Outcomes that may wait for the recorder before attempts wait for it.
pub(super) const OUTCOME_DEPTH: usize = 4096;
/// Most outcomes written in one unit of work.
const OUTCOME_BATCH: usize = 512;

/// Writes outcomes from `rx` until `done` fires and the queue is empty. Wakes the loop after
/// a batch holding retries, so that it sets its timer for them.
pub(super) async fn record_outcomes(
    store: Store,
    wake: Arc<Notify>,
    mut rx: mpsc::Receiver<Outcome>,
    mut done: oneshot::Receiver<()>,
) {
    let mut finishing = false;
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
        let retries = batch
            .iter()
            .any(|o| o.new_status == DeliveryStatus::Pending);
        let count = batch.len();
        let result = store
            .write(move |tx| {
                Box::pin(async move {
                    let recorded = tx.record_outcomes(&batch).await?;
                    Ok::<_, StoreError>(batch.len() - recorded)
                })
            })
            .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                outcomes = n,
                "outcomes not recorded: lease lost or delivery cancelled"
            ),
            Err(e) => tracing::error!(
                error = %chain(&e),
                outcomes = count,
                "could not record attempts; they will be retried when their leases expire"
            ),
        }
        if retries {
            wake.notify_one();
        }
    }
}
