//! Retention: a background task that deletes events, deliveries and attempts older than the
//! configured age, in small batches with pauses at least as long as each batch, so that it
//! never holds the writer (or a PostgreSQL lock) for long. Pending deliveries, and the events they need, are never deleted.

use std::time::Duration;

use crate::store::{Store, chain};
use crate::tasks::Tasks;
use codmir_core::id;
use codmir_core::time::Timestamp;

/// The least pause between two batches; the pause is also at least as long as the batch took,
/// so that a pass holds the writer (or the database) at most half of the time.
const BREATHE: Duration = Duration::from_millis(10);

/// Deletes what is older than `keep` now, then every `interval`, until `tasks` stop.
pub(crate) async fn run(
    store: Store,
    keep: Duration,
    interval: Duration,
    batch: u32,
    tasks: Tasks,
) {
    loop {
        if tasks.is_stopping() {
            return;
        }
        let cutoff = Timestamp::from_millis(
            Timestamp::now()
                .as_millis()
                .saturating_sub(keep.as_millis().min(i64::MAX as u128) as i64),
        );
        pass(&store, cutoff, batch.max(1), &tasks).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = tasks.stopping() => {}
        }
    }
}

/// One pass: batches until one deletes less than a whole batch of each kind.
async fn pass(store: &Store, cutoff: Timestamp, batch: u32, tasks: &Tasks) {
    let (delivery_floor, event_floor) = (id::floor("dlv", cutoff), id::floor("evt", cutoff));
    let mut total = (0, 0, 0);
    loop {
        let (d, e) = (delivery_floor.clone(), event_floor.clone());
        let started = std::time::Instant::now();
        let deleted = store
            .write(move |tx| Box::pin(async move { tx.delete_old(&d, &e, batch).await }))
            .await;
        match deleted {
            Ok((deliveries, attempts, events)) => {
                total.0 += deliveries;
                total.1 += attempts;
                total.2 += events;
                if deliveries < u64::from(batch) && events < u64::from(batch) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), "retention: a batch failed; trying again at the next pass");
                break;
            }
        }
        if tasks.is_stopping() {
            break;
        }
        tokio::time::sleep(started.elapsed().max(BREATHE)).await;
    }
    if total != (0, 0, 0) {
        tracing::info!(
            deliveries = total.0,
            attempts = total.1,
            events = total.2,
            before = %cutoff.to_rfc3339_millis(),
            "retention: deleted old rows"
        );
    }
}
