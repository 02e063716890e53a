//! How busy this node's API is, and the budget that holds claimed work back while it is:
//! new events before old work.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use codmir_core::time::Timestamp;

/// Attempts of claimed work (retries, backlog) started per second while the API is busy...
pub(super) const BUSY_CLAIMED_PER_SEC: f64 = 1000.0;
/// ...and how many of them may start at once after a pause.
pub(super) const BUSY_CLAIMED_BURST: f64 = 16.0;
/// Mutations in progress at once from which the API counts as busy.
const BUSY_API_IN_FLIGHT: usize = 4;
/// How long the API stays busy after the last time it was seen busy (so that claimed work
/// does not burst in between two requests).
const BUSY_HOLD_MS: i64 = 200;

/// The API's mutations on this node, shared by the engine's handle (which counts them) and
/// its loop (which asks whether the API is busy).
#[derive(Debug, Default)]
pub(super) struct ApiLoad {
    in_flight: AtomicUsize,
    /// Until when (ms since the epoch) the API counts as busy.
    busy_until: AtomicI64,
    /// Mutations started since the engine started.
    started: AtomicU64,
}

impl ApiLoad {
    /// Counts a mutation as in progress until the guard is dropped. From
    /// [`BUSY_API_IN_FLIGHT`] at once, the API is busy until [`BUSY_HOLD_MS`] after `now`.
    pub(super) fn enter(&self, now: Timestamp) -> ApiWork<'_> {
        self.started.fetch_add(1, Ordering::Relaxed);
        if self.in_flight.fetch_add(1, Ordering::Relaxed) + 1 >= BUSY_API_IN_FLIGHT {
            self.busy_until
                .fetch_max(now.as_millis() + BUSY_HOLD_MS, Ordering::Relaxed);
        }
        ApiWork(&self.in_flight)
    }

    pub(super) fn busy(&self, now: Timestamp) -> bool {
        now.as_millis() < self.busy_until.load(Ordering::Relaxed)
    }

    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

/// An API mutation in progress (see [`crate::delivery::Engine::api_work`]).
#[derive(Debug)]
pub struct ApiWork<'a>(&'a AtomicUsize);

impl Drop for ApiWork<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Claimed attempts that may start while the API is busy: a token bucket refilled at
/// [`BUSY_CLAIMED_PER_SEC`] holding at most [`BUSY_CLAIMED_BURST`].
#[derive(Debug)]
pub(super) struct Budget {
    tokens: f64,
    at: Instant,
}

impl Default for Budget {
    fn default() -> Self {
        Self::full_at(Instant::now())
    }
}

impl Budget {
    fn full_at(at: Instant) -> Self {
        Self {
            tokens: BUSY_CLAIMED_BURST,
            at,
        }
    }

    /// Whole tokens available at `now`, after refilling.
    pub(super) fn available(&mut self, now: Instant) -> usize {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * BUSY_CLAIMED_PER_SEC;
        self.tokens = (self.tokens + earned).min(BUSY_CLAIMED_BURST);
        self.at = now;
        self.tokens.floor() as usize
    }

    pub(super) fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// How long until the next whole token.
    pub(super) fn wait(&self) -> Duration {
        Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / BUSY_CLAIMED_PER_SEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_at_its_rate_up_to_its_burst() {
        let start = Instant::now();
        let mut budget = Budget::full_at(start);
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
    fn the_api_is_busy_from_four_mutations_at_once_and_for_a_while_after() {
        let load = ApiLoad::default();
        let t = Timestamp::from_millis(1_000_000);
        let three: Vec<_> = (0..3).map(|_| load.enter(t)).collect();
        assert!(!load.busy(t), "three at once is not busy");
        let fourth = load.enter(t);
        assert!(load.busy(t));
        drop((three, fourth));
        assert!(
            load.busy(t.plus(Duration::from_millis(199))),
            "held after the burst"
        );
        assert!(!load.busy(t.plus(Duration::from_millis(200))));
        assert_eq!(load.started(), 4);
    }
}
