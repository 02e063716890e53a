//! The API's rate limit: a token bucket per API key (`--api-rate-limit`), refilled at the
//! limit per second and holding two seconds' worth, so a client may burst and then keeps the
//! pace. Only authenticated requests spend tokens: probes, metrics and the dashboard's files
//! do not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before the map is cleared (a bound on memory under a key-guessing flood; a
/// cleared bucket starts full, which only forgives).
const MAX_BUCKETS: usize = 100_000;

pub(crate) struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Self {
            per_second,
            burst: per_second * 2.0,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for the key with this digest, or says how long until one is there.
    pub(super) fn take(&self, key: &[u8; 32], now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
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
}
