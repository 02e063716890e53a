//! The delivery engine: claims due deliveries with a lease, sends them, records each attempt
//! and schedules retries.
//!
//! The API wakes the engine after every commit, so a new delivery is claimed and sent at once;
//! polling only picks up retries coming due and work whose lease expired. Architecture
//! invariant: no transaction is open while a request is in flight — claim (a short write),
//! send, then record the outcome (another short write, group-committed with others).

mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::webhook::{Attempt, DeliveryStatus};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

pub use client::{AttemptResult, MAX_RESPONSE_LOGGED, MAX_RESPONSE_READ, Sender, USER_AGENT_VALUE};

use crate::config::Config;
use crate::store::{Claimed, Outcome, Store, StoreError};

/// The longest the engine sleeps without looking for due work.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Most deliveries claimed in one statement.
const CLAIM_BATCH: u32 = 256;

/// In-flight attempts per webhook, to keep each endpoint within its share.
#[derive(Default)]
struct InFlight {
    per_webhook: Mutex<HashMap<String, usize>>,
}

impl InFlight {
    fn saturated(&self, limit: usize) -> Vec<String> {
        let map = self
            .per_webhook
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|(_, n)| **n >= limit)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn add(&self, webhook: &str) {
        let mut map = self
            .per_webhook
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *map.entry(webhook.to_owned()).or_default() += 1;
    }

    fn remove(&self, webhook: &str) {
        let mut map = self
            .per_webhook
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(webhook) {
            *n -= 1;
            if *n == 0 {
                map.remove(webhook);
            }
        }
    }

    fn count(&self, webhook: &str) -> usize {
        let map = self
            .per_webhook
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(webhook).copied().unwrap_or(0)
    }
}

/// The engine, shared by its loop and its attempt tasks.
pub struct Engine {
    store: Store,
    config: Arc<Config>,
    sender: Sender,
    /// This process's lease owner name.
    node: String,
    wake: Arc<Notify>,
    /// Signalled whenever an attempt finishes and frees capacity.
    freed: Notify,
    global: Arc<Semaphore>,
    in_flight: InFlight,
}

impl Engine {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        wake: Arc<Notify>,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let sender = Sender::new(
            config.connect_timeout,
            config.request_timeout,
            config.allow_private_targets,
        )?;
        Ok(Arc::new(Self {
            store,
            global: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            sender,
            node: new_id("node", Timestamp::now()),
            wake,
            freed: Notify::new(),
            in_flight: InFlight::default(),
        }))
    }

    /// How long a claim lasts: at least one whole attempt and its record, with margin.
    fn lease(&self) -> Duration {
        self.config
            .lease_duration
            .max(self.config.request_timeout + Duration::from_secs(1))
    }

    /// Runs until `shutdown` turns true, then stops claiming and waits (bounded by the
    /// configured grace) for in-flight attempts.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.store.releases_all_leases_on_start() {
            match self
                .store
                .write(|tx| Box::pin(async move { tx.release_leases(None).await }))
                .await
            {
                Ok(n) if n > 0 => tracing::info!(
                    deliveries = n,
                    "resuming deliveries that were in flight when the last run stopped"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "could not release old leases"),
            }
        }
        self.store.subscribe(self.wake.clone());
        let mut attempts = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while attempts.try_join_next().is_some() {}
            let wait = match self.claim_and_start(&mut attempts).await {
                Ok(true) => continue,
                Ok(false) => self.time_to_next_due().await,
                Err(e) => {
                    tracing::error!(error = %e, "claiming deliveries failed; retrying shortly");
                    MAX_IDLE
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.freed.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        let grace = self.config.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = attempts.len(),
                "in-flight deliveries did not finish within the shutdown grace; they will be retried"
            );
            attempts.abort_all();
        }
        // What this node still holds goes back at once rather than when its lease expires.
        let node = self.node.clone();
        if let Err(e) = self
            .store
            .write(move |tx| Box::pin(async move { tx.release_leases(Some(&node)).await }))
            .await
        {
            tracing::warn!(error = %e, "could not release this node's leases; they will expire");
        }
    }

    /// Claims what capacity allows and starts the attempts. True when the claim was full, so
    /// more due work may be waiting.
    async fn claim_and_start(
        self: &Arc<Self>,
        attempts: &mut JoinSet<()>,
    ) -> Result<bool, StoreError> {
        let free = self.global.available_permits().min(CLAIM_BATCH as usize) as u32;
        if free == 0 {
            return Ok(false);
        }
        let skip = self
            .in_flight
            .saturated(self.config.max_in_flight_per_endpoint);
        let now = Timestamp::now();
        let until = now.plus(self.lease());
        let node = self.node.clone();
        let claimed: Vec<Claimed> = self
            .store
            .write(move |tx| {
                Box::pin(async move { tx.claim_due(&node, now, until, free, &skip).await })
            })
            .await?;
        let full = claimed.len() as u32 == free;
        for c in claimed {
            // A claim may bring more for one webhook than its share; the extra waits its turn
            // in the next claim, released here so another node (or loop) can take it.
            if self.in_flight.count(&c.webhook.id) >= self.config.max_in_flight_per_endpoint {
                self.release(c).await;
                continue;
            }
            let Ok(permit) = self.global.clone().try_acquire_owned() else {
                self.release(c).await;
                continue;
            };
            self.in_flight.add(&c.webhook.id);
            let engine = self.clone();
            attempts.spawn(async move {
                engine.attempt(&c).await;
                engine.in_flight.remove(&c.webhook.id);
                drop(permit);
                engine.freed.notify_one();
            });
        }
        Ok(full)
    }

    async fn release(&self, c: Claimed) {
        let id = c.delivery.id;
        let node = self.node.clone();
        let result = self
            .store
            .write(move |tx| Box::pin(async move { tx.release_lease(&id, &node).await }))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not release a lease; it will expire");
        }
    }

    async fn time_to_next_due(&self) -> Duration {
        let skip = self
            .in_flight
            .saturated(self.config.max_in_flight_per_endpoint);
        let now = Timestamp::now();
        let next = self
            .store
            .read(move |tx| Box::pin(async move { tx.next_due_at(now, &skip).await }))
            .await;
        match next {
            Ok(Some(at)) => Duration::from_millis((at.as_millis() - now.as_millis()).max(0) as u64)
                .min(MAX_IDLE),
            Ok(None) => MAX_IDLE,
            Err(_) => MAX_IDLE,
        }
    }

    /// One attempt: send, then record the outcome and the next attempt time.
    async fn attempt(&self, c: &Claimed) {
        let number = c.delivery.attempt_count + 1;
        let started = Timestamp::now();
        let clock = std::time::Instant::now();
        let result = self.sender.send(c, number, started.as_secs()).await;
        let duration_ms = clock.elapsed().as_millis() as u64;
        let finished = Timestamp::now();
        let (new_status, next_attempt_at) = if result.succeeded() {
            (DeliveryStatus::Succeeded, None)
        } else {
            match self.config.retry_schedule.next_delay(number, jitter_unit()) {
                Some(delay) => {
                    let delay = result.retry_after.map_or(delay, |asked| asked.max(delay));
                    (DeliveryStatus::Pending, Some(finished.plus(delay)))
                }
                None => (DeliveryStatus::Failed, None),
            }
        };
        let outcome = Outcome {
            attempt: Attempt {
                delivery_id: c.delivery.id.clone(),
                attempt: number,
                attempted_at: started,
                duration_ms,
                status_code: result.status_code,
                error: result.error,
                response_body: result.response_body,
            },
            lease_owner: self.node.clone(),
            new_status,
            next_attempt_at,
        };
        match self
            .store
            .write(move |tx| Box::pin(async move { tx.record_outcome(&outcome).await }))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(delivery = %c.delivery.id, "outcome not recorded: lease lost or delivery cancelled")
            }
            Err(e) => {
                tracing::error!(delivery = %c.delivery.id, error = %e, "could not record an attempt; it will be retried when its lease expires")
            }
        }
    }
}

/// A number in [0, 1) for retry jitter.
fn jitter_unit() -> f64 {
    let mut b = [0u8; 4];
    codmir_core::id::random_bytes(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
