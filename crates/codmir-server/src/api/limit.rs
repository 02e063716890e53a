//! The API's rate limits, token buckets: one per API key (`--api-rate-limit`), refilled at the
//! limit per second and holding two seconds' worth, so a client may burst and then keeps the
//! pace (only authenticated requests spend tokens: probes, metrics and the dashboard's files
//! do not); and one per client address for failed authentications ([`FAILED_AUTH_BURST`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications one client address may make at once...
pub(crate) const FAILED_AUTH_BURST: f64 = 30.0;
/// ...and then per second: a key guesser gets 3,600 an hour, a misconfigured client a 429
/// that says when to try again.
pub(crate) const FAILED_AUTH_PER_SECOND: f64 = 1.0;

/// Buckets kept before the map is cleared (a bound on memory under a key-guessing flood; a
/// cleared bucket starts full, which only forgives).
const MAX_BUCKETS: usize = 100_000;

pub(crate) struct RateLimit<K = [u8; 32]> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// Per API key: `per_second`, in bursts of two seconds' worth.
    pub(crate) fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Self::with(per_second, per_second * 2.0)
    }
}

impl RateLimit<IpAddr> {
    /// Failed authentications per client address.
    pub(crate) fn failed_auth() -> Self {
        Self::with(FAILED_AUTH_PER_SECOND, FAILED_AUTH_BURST)
    }
}

impl<K: Hash + Eq + Copy> RateLimit<K> {
    fn with(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `key`, or says how long until one is there.
    pub(super) fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.bucket(key, now, true)
    }

    /// Whether `key` has a token, without taking it.
    pub(super) fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.bucket(key, now, false)
    }

    fn bucket(&self, key: &K, now: Instant, take: bool) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !take && !buckets.contains_key(key) {
            return Ok(());
        }
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.clear();
        }
        let b = buckets.entry(*key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second));
        }
        if take {
            b.tokens -= 1.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_bursts_then_keeps_the_pace() {
        let limit = RateLimit::new(10);
        let (key, other, t0) = ([1u8; 32], [2u8; 32], Instant::now());
        for _ in 0..20 {
            assert!(
                limit.take(&key, t0).is_ok(),
                "a burst of two seconds' worth"
            );
        }
        let wait = limit.take(&key, t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(limit.take(&other, t0).is_ok(), "keys do not share a bucket");
        let later = t0 + Duration::from_millis(100);
        assert!(limit.take(&key, later).is_ok(), "one token per 100 ms");
        assert!(limit.take(&key, later).is_err());
    }

    #[test]
    fn failed_authentications_are_counted_per_address() {
        let limit = RateLimit::failed_auth();
        let (a, b, t0): (IpAddr, IpAddr, _) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            Instant::now(),
        );
        for _ in 0..30 {
            assert!(limit.peek(&a, t0).is_ok());
            assert!(limit.take(&a, t0).is_ok());
        }
        let wait = limit.peek(&a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1), "one a second");
        assert!(
            limit.peek(&b, t0).is_ok(),
            "addresses do not share a bucket"
        );
        assert!(limit.peek(&a, t0 + Duration::from_secs(1)).is_ok());
    }
}
