//! Temporary webhooks remove themselves: a background task that deletes the webhooks whose
//! `expires_at` has come (cancelling their pending deliveries), so that one registered by a
//! `codmir listen` that was killed does not outlive it for long. Each node looks every
//! [`LOOK_EVERY`]; a look is a read, and a write only when something expired.

use std::time::Duration;

use codmir_core::time::Timestamp;

use crate::delivery::Engine;
use crate::ops::{self, AfterCommit};
use crate::store::{Store, chain};
use crate::tasks::Tasks;

/// How often expired webhooks are looked for: a webhook outlives its `expires_at` by at most
/// this much.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(5);
/// Most webhooks removed in one unit of work.
const BATCH: u32 = 100;

pub(crate) async fn run(store: Store, engine: Engine, tasks: Tasks) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = tasks.stopping() => return,
        }
        if let Err(e) = pass(&store, &engine).await {
            tracing::warn!(error = %chain(&e), "could not remove expired webhooks; trying again");
        }
    }
}

async fn pass(store: &Store, engine: &Engine) -> Result<(), ops::Error> {
    let now = Timestamp::now();
    let expired = store
        .read(move |tx| {
            Box::pin(async move { Ok::<_, ops::Error>(tx.expired_webhooks(now, BATCH).await?) })
        })
        .await?;
    if expired.is_empty() {
        return Ok(());
    }
    let (removed, after) = store
        .write(move |tx| {
            Box::pin(async move {
                let mut after = AfterCommit::default();
                let n = ops::remove_expired_webhooks(tx, &expired, now, &mut after).await?;
                Ok::<_, ops::Error>((n, after))
            })
        })
        .await?;
    if removed > 0 {
        tracing::info!(removed, "removed expired webhooks");
        engine.after_commit(after).await;
    }
    Ok(())
}
