//! The engine loop: owns the queues, the attempts in flight and the poll timer; takes
//! hand-offs, claims due work, starts attempts within the bounds, and stops on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codmir_core::time::Timestamp;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::Engine;
use super::attempt::Attempter;
use super::attempt::Observed;
use super::budget::{ApiLoad, Budget};
use super::handle::Handoff;
use super::poll::PollTimer;
use super::queues::{Bounds, Finished, Lane, Local};
use super::recorder::{Health, record_outcomes};
use crate::config::Config;
use crate::store::{Lease, Leased, Store, StoreError, chain};
use crate::tasks::Tasks;

/// The longest the engine sleeps without looking for due work.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// How soon queued work is looked at again while the recorder holds attempts back.
const RECORDER_LOOK: Duration = Duration::from_millis(200);
/// Most deliveries claimed in one statement.
const CLAIM_BATCH: usize = 256;

/// The loop's state; see [`Dispatcher::run`].
pub(super) struct Dispatcher {
    pub(super) store: Store,
    pub(super) config: Arc<Config>,
    pub(super) node: Arc<str>,
    pub(super) lease: Duration,
    pub(super) inbox: mpsc::Receiver<Handoff>,
    pub(super) wake: Arc<Notify>,
    pub(super) load: Arc<ApiLoad>,
    pub(super) attempter: Arc<Attempter>,
    /// Where attempts' outcomes go; handed to the recorder when the loop starts.
    pub(super) recorded: mpsc::Receiver<Observed>,
    /// The engine's own handle, for the recorder's after-commit values.
    pub(super) engine: Engine,
}

/// What the loop owns while it runs.
struct State {
    local: Local,
    budget: Budget,
    attempts: JoinSet<Finished>,
    timer: PollTimer,
    /// Webhooks left out of the last claim because this node already held enough of their
    /// work; when one drains, a claim is worth it.
    skipped: Vec<String>,
    /// The recorder's: while it cannot record, no attempt starts.
    recording: Arc<Health>,
}

impl Dispatcher {
    /// Runs until `shutdown` turns true, then stops starting attempts and waits (bounded by
    /// the configured grace) for those in flight; what it still holds is released.
    pub(super) async fn run(self, tasks: Tasks) {
        let Dispatcher {
            store,
            config,
            node,
            lease,
            mut inbox,
            wake,
            load,
            attempter,
            recorded,
            engine,
        } = self;
        if store.releases_all_leases_on_start() {
            release_all(&store).await;
        }
        store.subscribe(wake.clone());
        let cut_off = engine.cut_off.clone();
        let (recorder_done, done_rx) = oneshot::channel::<()>();
        let recording = Arc::new(Health::default());
        let recorder = tasks.spawn(record_outcomes(
            store.clone(),
            engine,
            config.disable_policy,
            recording.clone(),
            recorded,
            done_rx,
        ));
        let claims = Claims {
            store: &store,
            node: &node,
            lease,
        };
        let mut s = State {
            local: Local::default(),
            budget: Budget::default(),
            attempts: JoinSet::new(),
            timer: PollTimer::new(),
            skipped: Vec::new(),
            recording,
        };
        let per_endpoint = config.max_in_flight_per_endpoint;
        let low_water = config.max_in_flight;
        // The futures live across iterations: re-creating them on every wake-up (a timer
        // registration and a notify registration each time) was ~6 % of the server's CPU.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut woken = std::pin::pin!(wake.notified());
        // Armed while claimed work waits for the busy API's budget to refill, or a webhook for
        // its rate limit's next slot; `refill_at` is its deadline.
        let refill = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(refill);
        let mut refill_at: Option<tokio::time::Instant> = None;
        loop {
            if tasks.is_stopping() {
                break;
            }
            if let Some(wait) = start_ready(&mut s, &config, &load, &attempter) {
                let at = tokio::time::Instant::now() + wait;
                if refill_at.is_none_or(|armed| at < armed) {
                    refill.as_mut().reset(at);
                    refill_at = Some(at);
                }
            }
            let room = (2 * config.max_in_flight)
                .saturating_sub(s.local.queued + s.local.total_in_flight())
                .min(CLAIM_BATCH);
            // Claim only while little is queued here, and in batches, not one by one.
            if s.timer.claim_due()
                && s.local.queued < low_water
                && room >= CLAIM_BATCH.min(low_water)
            {
                claim(&mut s, &claims, room, per_endpoint).await;
                continue;
            }
            if let Some(at) = s.timer.take_reset() {
                timer.as_mut().reset(at);
            }
            tokio::select! {
                first = inbox.recv() => take_handoffs(&mut s.local, first, &mut inbox),
                Some(done) = s.attempts.join_next(), if !s.attempts.is_empty() => {
                    let mut drained = s.local.finished(done, per_endpoint, &s.skipped);
                    while let Some(done) = s.attempts.try_join_next() {
                        drained |= s.local.finished(done, per_endpoint, &s.skipped);
                    }
                    crate::telemetry::in_flight(s.local.total_in_flight());
                    if drained {
                        s.skipped.clear();
                        s.timer.poke();
                    }
                }
                () = woken.as_mut() => {
                    woken.set(wake.notified());
                    s.timer.poke();
                }
                () = timer.as_mut(), if s.timer.armed() => {
                    s.timer.fired();
                }
                () = refill.as_mut(), if refill_at.is_some() => {
                    refill_at = None;
                }
                () = tasks.stopping() => {}
            }
        }
        finish(&mut s.attempts, config.shutdown_grace, &cut_off).await;
        // The recorder writes what the finished attempts left, then stops.
        let _ = recorder_done.send(());
        let _ = recorder.await;
        release_own(&store, &node).await;
    }
}

/// Claims up to `room` due deliveries into the claimed lane, leaving out the webhooks this
/// node already holds enough of, and tells the timer when to look again.
async fn claim(s: &mut State, claims: &Claims<'_>, room: usize, per_endpoint: usize) {
    s.timer.claiming();
    s.skipped = s.local.full(per_endpoint);
    match claims.claim(room, s.skipped.clone()).await {
        Ok(claimed) => {
            let full = claimed.len() == room;
            s.timer.claimed(full);
            for work in claimed {
                s.local.push(Lane::Claimed, work);
            }
            if !full {
                let wait = claims.time_to_next_due(s.skipped.clone()).await;
                s.timer.look_at(tokio::time::Instant::now() + wait);
            }
        }
        Err(e) => {
            tracing::error!(error = %chain(&e), "claiming deliveries failed; retrying shortly");
            s.timer.failed(tokio::time::Instant::now() + MAX_IDLE);
        }
    }
}

/// Applies `first` and whatever other hand-offs are waiting, in commit order.
fn take_handoffs(local: &mut Local, first: Option<Handoff>, inbox: &mut mpsc::Receiver<Handoff>) {
    let mut next = first;
    while let Some(handoff) = next {
        match handoff {
            Handoff::Fresh(work) => {
                for w in work {
                    local.push(Lane::Fresh, w);
                }
            }
            Handoff::Cancelled(webhooks) => {
                for webhook in webhooks {
                    local.forget(&webhook);
                }
            }
        }
        next = inbox.try_recv().ok();
    }
}

/// Gives back what this node still holds (queued or aborted) at once, rather than when its
/// leases expire.
async fn release_own(store: &Store, node: &str) {
    let owner = node.to_owned();
    if let Err(e) = store
        .write(move |tx| Box::pin(async move { tx.release_leases(Some(&owner)).await }))
        .await
    {
        tracing::warn!(error = %chain(&e), "could not release this node's leases; they will expire");
    }
}

/// Starts queued deliveries while their webhook and the node have capacity: fresh ones
/// first, then claimed ones (at a bounded rate while the API is busy). Returns how long to
/// wait before work held back by that rate, or by a webhook's own rate limit, may start.
fn start_ready(
    s: &mut State,
    config: &Config,
    load: &ApiLoad,
    attempter: &Arc<Attempter>,
) -> Option<Duration> {
    if s.local.queued == 0 || s.local.total_in_flight() >= config.max_in_flight {
        return None;
    }
    if s.recording.holding() {
        // Looked at again on the recorder's wake-up once it writes, or at the next poll.
        return Some(RECORDER_LOOK);
    }
    let now = Timestamp::now();
    let instant = Instant::now();
    let busy = load.busy(now);
    // The budget refills by itself while the API is quiet, up to its burst.
    let claimed = if busy {
        s.budget.available(instant)
    } else {
        usize::MAX
    };
    let bounds = Bounds {
        shares: config.shares(),
        claimed,
        // A queued delivery whose lease would run out during its attempt is left for a claim.
        lease_deadline: now.plus(config.request_timeout + Duration::from_secs(1)),
        now: instant,
    };
    let ready = s.local.take_ready(&bounds);
    if !ready.is_empty() {
        crate::telemetry::in_flight(s.local.total_in_flight());
    }
    let started_claimed = ready.iter().filter(|(_, claimed)| *claimed).count();
    if busy {
        s.budget.spend(started_claimed);
    }
    let timeout = config.request_timeout;
    for (work, _) in ready {
        let attempter = attempter.clone();
        s.attempts.spawn(async move {
            let started = Instant::now();
            attempter.attempt(&work).await;
            let slow = codmir_core::share::is_slow(started.elapsed(), timeout);
            (work.webhook.id.clone(), slow, instant)
        });
    }
    // Claimed work left waiting because the budget ran out: wake when it refills; a webhook
    // held back by its rate limit: wake when its next slot comes.
    let held_back = busy && started_claimed == claimed && s.local.claimed_waiting();
    let budget = held_back.then(|| s.budget.wait());
    let rate = s
        .local
        .next_look
        .map(|at| at.saturating_duration_since(instant));
    match (budget, rate) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The loop's two reads of the queue in the database.
struct Claims<'a> {
    store: &'a Store,
    node: &'a str,
    lease: Duration,
}

impl Claims<'_> {
    async fn claim(&self, limit: usize, skip: Vec<String>) -> Result<Vec<Leased>, StoreError> {
        let now = Timestamp::now();
        let lease = Lease {
            owner: self.node.to_owned(),
            until: now.plus(self.lease),
        };
        let limit = limit as u32;
        self.store
            .write(move |tx| Box::pin(async move { tx.claim_due(&lease, now, limit, &skip).await }))
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
}

/// How long cut-off attempts may take to hand their outcomes over.
const CUT_OFF_WAIT: Duration = Duration::from_secs(2);

/// On a single-node database, leases left by an earlier run are dropped at once, so that
/// deliveries in flight at a crash are retried now rather than when their leases expire.
async fn release_all(store: &Store) {
    match store
        .write(|tx| Box::pin(async move { tx.release_leases(None).await }))
        .await
    {
        Ok(n) if n > 0 => tracing::info!(
            deliveries = n,
            "resuming deliveries that were in flight when the last run stopped"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %chain(&e), "could not release old leases"),
    }
}

/// Waits up to `grace` (or until cut off sooner) for the attempts in flight, then cuts off
/// the rest: each ends at once and its outcome, interrupted, goes to the recorder, so that the
/// log shows the attempt the endpoint may have seen and the next one carries the next number.
async fn finish(attempts: &mut JoinSet<Finished>, grace: Duration, cut_off: &watch::Sender<bool>) {
    let mut cut = cut_off.subscribe();
    let drained = tokio::select! {
        () = async { while attempts.join_next().await.is_some() {} } => true,
        () = tokio::time::sleep(grace) => false,
        _ = cut.wait_for(|cut| *cut) => false,
    };
    if drained {
        return;
    }
    tracing::warn!(
        left = attempts.len(),
        "cutting off the deliveries still in flight; they are recorded as interrupted and will be retried"
    );
    cut_off.send_replace(true);
    // Cut-off attempts return at once; the bound is for one stuck in something else.
    let ended = tokio::time::timeout(CUT_OFF_WAIT, async {
        while attempts.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        attempts.abort_all();
    }
}
