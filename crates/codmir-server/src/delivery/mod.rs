//! The delivery engine: takes deliveries (handed over in-process by the commit that created
//! them, or claimed from the database with a lease), sends them, records each attempt and
//! schedules retries.
//!
//! The fast path: a unit of work writes its new deliveries already leased to this node, and
//! after the commit the API hands them to [`Engine::hand_off`]; they are sent at once, with no
//! claim query and no polling. The database is claimed from only for retries coming due, for
//! work of other nodes whose lease expired, and on start. Architecture invariant: no
//! transaction is open while a request is in flight — claim or commit (a short write), send,
//! then record the outcome (a short write, batched with other outcomes by the recorder).

mod client;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::webhook::{Attempt, DeliveryStatus};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

pub use client::{AttemptResult, MAX_RESPONSE_LOGGED, MAX_RESPONSE_READ, Sender, USER_AGENT_VALUE};

use crate::config::Config;
use crate::ops::Intake;
use crate::store::{Claimed, Outcome, Store, StoreError};

/// The longest the engine sleeps without looking for due work.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Most deliveries claimed in one statement.
const CLAIM_BATCH: usize = 256;
/// Batches of handed-off deliveries that may wait for the engine loop.
const HANDOFF_DEPTH: usize = 4096;
/// Outcomes that may wait for the recorder before attempts wait for it.
const OUTCOME_DEPTH: usize = 4096;
/// Most outcomes written in one unit of work.
const OUTCOME_BATCH: usize = 512;
/// Attempts of claimed work (retries, backlog) started per second while the API is busy...
const BUSY_CLAIMED_PER_SEC: f64 = 1000.0;
/// ...and how many of them may start at once after a pause.
const BUSY_CLAIMED_BURST: f64 = 16.0;
/// Mutations in progress at once from which the API counts as busy.
const BUSY_API_IN_FLIGHT: usize = 4;
/// How long the API stays busy after the last time it was seen busy (so that claimed work
/// does not burst in between two requests).
const BUSY_HOLD_MS: i64 = 200;

/// The engine, shared by the API (hand-offs) and its own loop.
pub struct Engine {
    store: Store,
    config: Arc<Config>,
    sender: Sender,
    /// This process's lease owner name.
    node: String,
    /// Woken by other nodes' commits (LISTEN/NOTIFY) and by nothing else.
    wake: Arc<Notify>,
    handoff: mpsc::Sender<Vec<Claimed>>,
    inbox: std::sync::Mutex<Option<mpsc::Receiver<Vec<Claimed>>>>,
    /// Webhooks deleted or disabled since the loop last looked: their queued work is dropped.
    forgotten: std::sync::Mutex<Vec<String>>,
    /// Outcomes of finished attempts, written in batches by the recorder task.
    outcomes: mpsc::Sender<Outcome>,
    /// Mutations of the API in progress on this node.
    api_in_flight: AtomicUsize,
    /// Until when (ms since the epoch) the API counts as busy.
    busy_until: AtomicI64,
    recorded: std::sync::Mutex<Option<mpsc::Receiver<Outcome>>>,
}

/// Deliveries this node holds a lease on, waiting for their webhook's share of capacity, and
/// the attempts in flight. Owned by the engine loop alone.
///
/// Two lanes: [`Lane::Fresh`] holds what this node's API just committed (the fast path) and is
/// always started first; [`Lane::Claimed`] holds what came from the database (retries coming
/// due, a backlog, other nodes' expired work). While the API is busy, claimed attempts start at most at
/// [`BUSY_CLAIMED_PER_SEC`] (the [`Budget`]), so that draining a backlog does not take the CPU
/// and the writer from the requests being served and from their fresh deliveries.
#[derive(Default)]
struct Local {
    /// Per lane, per webhook; a queue is removed once empty.
    lanes: [HashMap<String, VecDeque<Claimed>>; 2],
    in_flight: HashMap<String, usize>,
    total_in_flight: usize,
    queued: usize,
    budget: Budget,
}

/// Where a queued delivery came from; the index of its lane in [`Local::lanes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Fresh = 0,
    Claimed = 1,
}

/// Claimed attempts that may start while the API is busy: a token bucket refilled at
/// [`BUSY_CLAIMED_PER_SEC`] holding at most [`BUSY_CLAIMED_BURST`].
struct Budget {
    tokens: f64,
    at: Instant,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            tokens: BUSY_CLAIMED_BURST,
            at: Instant::now(),
        }
    }
}

impl Budget {
    /// Whole tokens available at `now`, after refilling.
    fn available(&mut self, now: Instant) -> usize {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * BUSY_CLAIMED_PER_SEC;
        self.tokens = (self.tokens + earned).min(BUSY_CLAIMED_BURST);
        self.at = now;
        self.tokens.floor() as usize
    }

    fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// How long until the next whole token.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / BUSY_CLAIMED_PER_SEC)
    }
}

/// An API mutation in progress (see [`Engine::api_work`]).
pub struct ApiWork<'a>(&'a AtomicUsize);

impl Drop for ApiWork<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many attempts may be in flight (on the node, per webhook), how many claimed ones may
/// start now, and the lease a queued delivery must still hold to be started.
struct Bounds {
    total: usize,
    per_endpoint: usize,
    claimed: usize,
    lease_deadline: Timestamp,
}

impl Local {
    fn push(&mut self, lane: Lane, c: Claimed) {
        self.queued += 1;
        self.lanes[lane as usize]
            .entry(c.webhook.id.clone())
            .or_default()
            .push_back(c);
    }

    /// Deliveries of `webhook` queued here, in both lanes.
    fn queued_for(&self, webhook: &str) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.get(webhook).map_or(0, VecDeque::len))
            .sum()
    }

    /// Drops what is queued for `webhook`.
    fn forget(&mut self, webhook: &str) {
        for lane in &mut self.lanes {
            if let Some(queue) = lane.remove(webhook) {
                self.queued -= queue.len();
            }
        }
    }

    /// Takes the queued deliveries that may start now within `bounds`, fresh ones first, and
    /// counts them in flight. Each comes with whether it is claimed work.
    fn take_ready(&mut self, bounds: &Bounds) -> Vec<(Claimed, bool)> {
        let mut ready = Vec::new();
        let mut claimed_started = 0;
        for lane in [Lane::Fresh, Lane::Claimed] {
            let claimed = lane == Lane::Claimed;
            self.lanes[lane as usize].retain(|webhook, queue| {
                while self.total_in_flight < bounds.total
                    && (!claimed || claimed_started < bounds.claimed)
                {
                    let busy = self.in_flight.get(webhook).copied().unwrap_or(0);
                    if busy >= bounds.per_endpoint {
                        break;
                    }
                    let Some(c) = queue.pop_front() else { break };
                    self.queued -= 1;
                    if c.lease_until < bounds.lease_deadline {
                        continue;
                    }
                    *self.in_flight.entry(webhook.clone()).or_default() += 1;
                    self.total_in_flight += 1;
                    if claimed {
                        claimed_started += 1;
                    }
                    ready.push((c, claimed));
                }
                !queue.is_empty()
            });
        }
        ready
    }

    /// Webhooks that already hold enough work here: no more claims for them.
    fn full(&self, per_endpoint: usize) -> Vec<String> {
        let [fresh, claimed] = &self.lanes;
        // Each webhook once: those of the fresh lane, then those only in the claimed lane.
        fresh
            .keys()
            .chain(claimed.keys().filter(|id| !fresh.contains_key(*id)))
            .filter(|id| {
                self.queued_for(id) + self.in_flight.get(*id).copied().unwrap_or(0)
                    >= 2 * per_endpoint
            })
            .cloned()
            .collect()
    }
}

impl Engine {
    pub fn new(store: Store, config: Arc<Config>) -> Result<Arc<Self>, reqwest::Error> {
        let sender = Sender::new(
            config.connect_timeout,
            config.request_timeout,
            config.allow_private_targets,
        )?;
        let (handoff, inbox) = mpsc::channel(HANDOFF_DEPTH);
        let (outcomes, recorded) = mpsc::channel(OUTCOME_DEPTH);
        Ok(Arc::new(Self {
            forgotten: std::sync::Mutex::new(Vec::new()),
            outcomes,
            api_in_flight: AtomicUsize::new(0),
            busy_until: AtomicI64::new(0),
            recorded: std::sync::Mutex::new(Some(recorded)),
            store,
            config,
            sender,
            node: new_id("node", Timestamp::now()),
            wake: Arc::new(Notify::new()),
            handoff,
            inbox: std::sync::Mutex::new(Some(inbox)),
        }))
    }

    /// How long a claim lasts: at least one whole attempt and its record, with margin.
    fn lease(&self) -> Duration {
        self.config
            .lease_duration
            .max(self.config.request_timeout + Duration::from_secs(1))
    }

    /// An intake whose deliveries are leased to this node, for a unit of work about to run.
    pub fn intake(&self) -> Intake {
        Intake::leased_to(self.node.clone(), Timestamp::now().plus(self.lease()))
    }

    /// Counts an API mutation as in progress until the guard is dropped. From
    /// [`BUSY_API_IN_FLIGHT`] at once, the API is busy and claimed work yields to it.
    pub fn api_work(&self) -> ApiWork<'_> {
        if self.api_in_flight.fetch_add(1, Ordering::Relaxed) + 1 >= BUSY_API_IN_FLIGHT {
            let until = Timestamp::now().as_millis() + BUSY_HOLD_MS;
            self.busy_until.fetch_max(until, Ordering::Relaxed);
        }
        ApiWork(&self.api_in_flight)
    }

    fn api_busy(&self, now: Timestamp) -> bool {
        now.as_millis() < self.busy_until.load(Ordering::Relaxed)
    }

    /// Takes the deliveries a committed unit of work created. If the engine cannot take
    /// them now, their leases are dropped so that a claim picks them up.
    pub fn hand_off(&self, intake: Intake) {
        if intake.claimed.is_empty() {
            return;
        }
        if let Err(e) = self.handoff.try_send(intake.claimed) {
            let claimed = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            let (store, node) = (self.store.clone(), self.node.clone());
            tokio::spawn(async move { release(&store, &node, claimed).await });
            self.wake.notify_one();
        }
    }

    /// Stops sending what this node holds queued for `webhook`, whose pending deliveries were
    /// just cancelled (it was deleted or disabled). Attempts already in flight finish; their
    /// outcomes are fenced off by the cancellation. Other nodes' queues are not reached: there
    /// a queued delivery may still be sent, within its lease.
    pub fn forget(&self, webhook: &str) {
        self.forgotten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(webhook.to_owned());
        self.wake.notify_one();
    }

    /// Runs until `shutdown` turns true, then stops starting attempts and waits (bounded by
    /// the configured grace) for those in flight; what it still holds is released.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(mut inbox) = self.inbox.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            tracing::error!("the delivery engine is already running");
            return;
        };
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
        let recorder = {
            let recorded = self
                .recorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let (store, wake) = (self.store.clone(), self.wake.clone());
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            recorded.map(|rx| {
                (
                    done_tx,
                    tokio::spawn(record_outcomes(store, wake, rx, done_rx)),
                )
            })
        };
        let per_endpoint = self.config.max_in_flight_per_endpoint;
        let low_water = self.config.max_in_flight;
        let mut local = Local::default();
        let mut attempts: JoinSet<String> = JoinSet::new();
        // `poll`: look in the database now. `more`: the last claim was full, so more due work
        // is likely waiting there. `skipped`: webhooks left out of the last claim because this
        // node already held enough of their work; when one drains, it is worth a claim.
        let (mut poll, mut more) = (true, false);
        let mut skipped: Vec<String> = Vec::new();
        let mut next_poll = tokio::time::Instant::now();
        // Every new `next_poll` arms the timer for exactly one firing, which sets `poll`. (A
        // guard on `is_elapsed` instead lost firings that happened while the loop was busy
        // elsewhere, and then the loop never polled again until something else woke it.)
        let (mut next_poll_changed, mut timer_armed) = (true, false);
        // Both futures live across iterations: re-creating them on every wake-up (a timer
        // registration and a notify registration each time) was ~6 % of the server's CPU.
        let timer = tokio::time::sleep_until(next_poll);
        tokio::pin!(timer);
        let mut woken = std::pin::pin!(self.wake.notified());
        // Armed while claimed work waits for the busy API's budget to refill.
        let refill = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(refill);
        let mut refill_armed = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            for webhook in
                std::mem::take(&mut *self.forgotten.lock().unwrap_or_else(|e| e.into_inner()))
            {
                local.forget(&webhook);
            }
            if let Some(wait) = self.start_ready(&mut local, &mut attempts) {
                if !refill_armed {
                    refill.as_mut().reset(tokio::time::Instant::now() + wait);
                    refill_armed = true;
                }
            }
            let room = (2 * self.config.max_in_flight)
                .saturating_sub(local.queued + local.total_in_flight)
                .min(CLAIM_BATCH);
            // Claim only while little is queued here, and in batches, not one by one.
            if (poll || more) && local.queued < low_water && room >= CLAIM_BATCH.min(low_water) {
                poll = false;
                skipped = local.full(per_endpoint);
                match self.claim(room, skipped.clone()).await {
                    Ok(claimed) => {
                        more = claimed.len() == room;
                        for c in claimed {
                            local.push(Lane::Claimed, c);
                        }
                        if !more {
                            next_poll = tokio::time::Instant::now()
                                + self.time_to_next_due(skipped.clone()).await;
                            next_poll_changed = true;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "claiming deliveries failed; retrying shortly");
                        more = false;
                        next_poll = tokio::time::Instant::now() + MAX_IDLE;
                        next_poll_changed = true;
                    }
                }
                continue;
            }
            if next_poll_changed {
                timer.as_mut().reset(next_poll);
                (next_poll_changed, timer_armed) = (false, true);
            }
            tokio::select! {
                batch = inbox.recv() => {
                    for c in batch.into_iter().flatten() {
                        local.push(Lane::Fresh, c);
                    }
                    // Take whatever else is waiting in one go.
                    while let Ok(batch) = inbox.try_recv() {
                        for c in batch {
                            local.push(Lane::Fresh, c);
                        }
                    }
                }
                Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                    let mut drained = finished(&mut local, done, per_endpoint, &skipped);
                    while let Some(done) = attempts.try_join_next() {
                        drained |= finished(&mut local, done, per_endpoint, &skipped);
                    }
                    if drained {
                        skipped.clear();
                        poll = true;
                    }
                }
                () = woken.as_mut() => {
                    woken.set(self.wake.notified());
                    poll = true;
                }
                () = timer.as_mut(), if timer_armed => {
                    timer_armed = false;
                    poll = true;
                }
                () = refill.as_mut(), if refill_armed => {
                    refill_armed = false;
                }
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
        // The recorder writes what the finished attempts left, then stops.
        if let Some((done, recorder)) = recorder {
            let _ = done.send(());
            let _ = recorder.await;
        }
        // What this node still holds (queued or aborted) goes back at once rather than when
        // its lease expires.
        let node = self.node.clone();
        if let Err(e) = self
            .store
            .write(move |tx| Box::pin(async move { tx.release_leases(Some(&node)).await }))
            .await
        {
            tracing::warn!(error = %e, "could not release this node's leases; they will expire");
        }
    }

    /// Starts queued deliveries while their webhook and the node have capacity: fresh ones
    /// first, then claimed ones (at a bounded rate while the API is busy). Returns how long
    /// to wait before claimed work held back by that rate may start.
    fn start_ready(
        self: &Arc<Self>,
        local: &mut Local,
        attempts: &mut JoinSet<String>,
    ) -> Option<Duration> {
        if local.queued == 0 || local.total_in_flight >= self.config.max_in_flight {
            return None;
        }
        let now = Timestamp::now();
        let busy = self.api_busy(now);
        // The budget refills by itself while the API is quiet, up to its burst.
        let claimed = if busy {
            local.budget.available(Instant::now())
        } else {
            usize::MAX
        };
        let bounds = Bounds {
            total: self.config.max_in_flight,
            per_endpoint: self.config.max_in_flight_per_endpoint,
            claimed,
            // A queued delivery whose lease would run out during its attempt is left for a
            // claim.
            lease_deadline: now.plus(self.config.request_timeout + Duration::from_secs(1)),
        };
        let ready = local.take_ready(&bounds);
        let started_claimed = ready.iter().filter(|(_, claimed)| *claimed).count();
        if busy {
            local.budget.spend(started_claimed);
        }
        for (c, _) in ready {
            let engine = self.clone();
            attempts.spawn(async move {
                engine.attempt(&c).await;
                c.webhook.id
            });
        }
        // Claimed work left waiting because the budget ran out: wake when it refills.
        let held_back =
            busy && started_claimed == claimed && !local.lanes[Lane::Claimed as usize].is_empty();
        held_back.then(|| local.budget.wait())
    }

    async fn claim(&self, limit: usize, skip: Vec<String>) -> Result<Vec<Claimed>, StoreError> {
        let now = Timestamp::now();
        let until = now.plus(self.lease());
        let node = self.node.clone();
        let limit = limit as u32;
        self.store
            .write(move |tx| {
                Box::pin(async move { tx.claim_due(&node, now, until, limit, &skip).await })
            })
            .await
    }

    async fn time_to_next_due(&self, skip: Vec<String>) -> Duration {
        let now = Timestamp::now();
        let next = self
            .store
            .read(move |tx| Box::pin(async move { tx.next_due_at(now, &skip).await }))
            .await;
        match next {
            Ok(Some(at)) => Duration::from_millis((at.as_millis() - now.as_millis()).max(0) as u64)
                .min(MAX_IDLE),
            _ => MAX_IDLE,
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
        // Recorded in a batch with other outcomes by `record_outcomes`, which also wakes the
        // loop for retries. If the recorder is gone (shutdown), the lease expiry retries it.
        if self.outcomes.send(outcome).await.is_err() {
            tracing::warn!(delivery = %c.delivery.id, "outcome not recorded: shutting down; it will be retried");
        }
    }
}

/// Writes outcomes in batches: one unit of work for whatever has queued up while the previous
/// batch was committing. Stops when the engine stops and the queue is empty.
async fn record_outcomes(
    store: Store,
    wake: Arc<Notify>,
    mut rx: mpsc::Receiver<Outcome>,
    mut done: tokio::sync::oneshot::Receiver<()>,
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
            Err(e) => {
                tracing::error!(error = %e, outcomes = count, "could not record attempts; they will be retried when their leases expire")
            }
        }
        if retries {
            // Retries are due later: make sure the loop looks again by then.
            wake.notify_one();
        }
    }
}

/// Accounts for a finished attempt task. True when its webhook was left out of the last
/// claim and now has room for more.
fn finished(
    local: &mut Local,
    done: Result<String, tokio::task::JoinError>,
    per_endpoint: usize,
    skipped: &[String],
) -> bool {
    local.total_in_flight -= 1;
    // An attempt task does not panic (nothing in it unwraps); if one ever did, its webhook's
    // share would stay one lower until the node restarts.
    let Ok(webhook) = done else { return false };
    let busy = match local.in_flight.get_mut(&webhook) {
        Some(n) => {
            *n -= 1;
            let busy = *n;
            if busy == 0 {
                local.in_flight.remove(&webhook);
            }
            busy
        }
        None => 0,
    };
    skipped.contains(&webhook) && busy + local.queued_for(&webhook) < 2 * per_endpoint
}

/// Drops this node's leases on `claimed` so that any node can claim them at once.
async fn release(store: &Store, node: &str, claimed: Vec<Claimed>) {
    let ids: Vec<String> = claimed.into_iter().map(|c| c.delivery.id).collect();
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
        tracing::warn!(error = %e, "could not release leases; they will expire");
    }
}

/// A number in [0, 1) for retry jitter.
fn jitter_unit() -> f64 {
    let mut b = [0u8; 4];
    codmir_core::id::random_bytes(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use codmir_core::event::EventType;
    use codmir_core::webhook::{Delivery, EndpointUrl, EventFilter, Webhook, WebhookSecret};

    use super::*;

    fn queued(webhook: &str, n: u32) -> Claimed {
        let now = Timestamp::from_millis(1_000_000);
        Claimed {
            delivery: Delivery {
                id: format!("dlv_{webhook}_{n}"),
                workspace_id: "ws".into(),
                webhook_id: webhook.into(),
                event_id: format!("evt_{n}"),
                event_type: EventType::TicketCreated,
                status: DeliveryStatus::Pending,
                attempt_count: 0,
                next_attempt_at: Some(now),
                created_at: now,
                updated_at: now,
            },
            webhook: Webhook {
                id: webhook.into(),
                workspace_id: "ws".into(),
                url: EndpointUrl::from_stored("https://example.com/hook".into()),
                events: EventFilter::parse(&["*"]).expect("valid filter"),
                project_ids: Vec::new(),
                description: None,
                secret: WebhookSecret::parse("s3cret-s3cret-s3cret").expect("valid secret"),
                enabled: true,
                created_at: now,
                updated_at: now,
            },
            payload: Arc::from("{}"),
            lease_until: now.plus(Duration::from_secs(60)),
        }
    }

    fn bounds(claimed: usize) -> Bounds {
        Bounds {
            total: 10,
            per_endpoint: 4,
            claimed,
            lease_deadline: Timestamp::from_millis(1_000_000),
        }
    }

    fn ids(ready: &[(Claimed, bool)]) -> Vec<String> {
        ready.iter().map(|(c, _)| c.delivery.id.clone()).collect()
    }

    #[test]
    fn fresh_deliveries_start_before_claimed_ones_of_the_same_webhook() {
        let mut local = Local::default();
        for n in 0..3 {
            local.push(Lane::Claimed, queued("a", n));
        }
        local.push(Lane::Fresh, queued("a", 9));
        let ready = local.take_ready(&bounds(10));
        // Four at most for the webhook: the fresh one first, then three claimed.
        assert_eq!(ids(&ready), ["dlv_a_9", "dlv_a_0", "dlv_a_1", "dlv_a_2"]);
        assert_eq!(
            ready
                .iter()
                .map(|(_, claimed)| *claimed)
                .collect::<Vec<_>>(),
            [false, true, true, true]
        );
        assert_eq!((local.queued, local.total_in_flight), (0, 4));
    }

    #[test]
    fn claimed_work_is_held_to_its_budget_while_fresh_work_is_not() {
        let mut local = Local::default();
        for n in 0..5 {
            local.push(Lane::Claimed, queued("a", n));
            local.push(Lane::Fresh, queued("b", n));
        }
        let ready = local.take_ready(&bounds(1));
        let claimed = ready.iter().filter(|(_, c)| *c).count();
        assert_eq!(claimed, 1, "one claimed attempt for a budget of one");
        assert_eq!(
            ready.len() - claimed,
            4,
            "fresh work up to the webhook's share"
        );
        assert_eq!(local.queued, 5);
        // With the budget spent, claimed work waits; fresh work waits only for its webhook.
        assert!(local.take_ready(&bounds(0)).is_empty());
        finished(&mut local, Ok("b".into()), 4, &[]);
        assert_eq!(ids(&local.take_ready(&bounds(0))), ["dlv_b_4"]);
        assert_eq!(ids(&local.take_ready(&bounds(2))), ["dlv_a_1", "dlv_a_2"]);
    }

    #[test]
    fn the_budget_refills_at_its_rate_up_to_its_burst() {
        let start = Instant::now();
        let mut budget = Budget {
            tokens: BUSY_CLAIMED_BURST,
            at: start,
        };
        assert_eq!(budget.available(start), BUSY_CLAIMED_BURST as usize);
        budget.spend(BUSY_CLAIMED_BURST as usize);
        assert_eq!(budget.available(start), 0);
        let one = Duration::from_secs_f64(1.0 / BUSY_CLAIMED_PER_SEC);
        assert_eq!(budget.wait(), one);
        assert_eq!(budget.available(start + one * 5), 5);
        assert_eq!(
            budget.available(start + Duration::from_secs(60)),
            BUSY_CLAIMED_BURST as usize,
            "no more than the burst is saved up"
        );
    }

    #[test]
    fn a_delivery_whose_lease_runs_out_is_left_for_a_claim() {
        let mut local = Local::default();
        let mut late = queued("a", 0);
        late.lease_until = Timestamp::from_millis(999_999);
        local.push(Lane::Fresh, late);
        local.push(Lane::Fresh, queued("a", 1));
        assert_eq!(ids(&local.take_ready(&bounds(10))), ["dlv_a_1"]);
        assert_eq!((local.queued, local.total_in_flight), (0, 1));
    }
}
