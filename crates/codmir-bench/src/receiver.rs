//! The benchmark's receiver: counts deliveries per webhook, records when each event arrived,
//! spots duplicates, and answers 2xx, 503 or never, as each scenario needs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;

/// Most webhooks a scenario registers.
pub(crate) const MAX_HOOKS: usize = 1024;

/// How the receiver answers one webhook's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    Ok = 0,
    Unavailable = 1,
    Hang = 2,
    /// Every sixth request of the webhook never answers; the others are answered at once.
    SixthHangs = 3,
}

pub(crate) struct Stats {
    start: Instant,
    /// When event `seq` was sent to the API, in ns since `start` plus one (0: not sent).
    pub sent: Vec<AtomicU64>,
    pub hits: AtomicU64,
    pub per_hook: Vec<AtomicU64>,
    modes: Vec<AtomicU8>,
    seen: Mutex<HashSet<(u16, u64)>>,
    pub duplicates: AtomicU64,
    /// End-to-end latencies in µs (first arrival of each event at each webhook).
    pub latencies: Mutex<Vec<u32>>,
    /// ns since `start` of the latest first arrival.
    pub last_arrival: AtomicU64,
    pub direct_hits: AtomicU64,
}

impl Stats {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            hits: AtomicU64::new(0),
            per_hook: (0..MAX_HOOKS).map(|_| AtomicU64::new(0)).collect(),
            modes: (0..MAX_HOOKS)
                .map(|_| AtomicU8::new(Mode::Ok as u8))
                .collect(),
            seen: Mutex::new(HashSet::new()),
            duplicates: AtomicU64::new(0),
            latencies: Mutex::new(Vec::new()),
            last_arrival: AtomicU64::new(0),
            direct_hits: AtomicU64::new(0),
        })
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub(crate) fn mark_sent(&self, seq: u64) {
        if let Some(slot) = self.sent.get(seq as usize) {
            slot.store(self.now_ns() + 1, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_mode(&self, hook: usize, mode: Mode) {
        self.modes[hook].store(mode as u8, Ordering::Relaxed);
    }

    /// Forgets everything received, for the next scenario (sent times are overwritten anyway).
    pub(crate) fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.direct_hits.store(0, Ordering::Relaxed);
        self.last_arrival.store(0, Ordering::Relaxed);
        for c in &self.per_hook {
            c.store(0, Ordering::Relaxed);
        }
        for m in &self.modes {
            m.store(Mode::Ok as u8, Ordering::Relaxed);
        }
        for s in &self.sent {
            s.store(0, Ordering::Relaxed);
        }
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(crate) fn unique(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The sequence number the bench put in the ticket title (`"title":"b123"`).
fn seq_of(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"title\":\"b";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = &body[at..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

async fn hook(
    State(stats): State<Arc<Stats>>,
    Path(index): Path<usize>,
    body: Bytes,
) -> StatusCode {
    let now = stats.now_ns();
    stats.hits.fetch_add(1, Ordering::Relaxed);
    let index = index.min(MAX_HOOKS - 1);
    let before = stats.per_hook[index].fetch_add(1, Ordering::Relaxed);
    let mode = stats.modes[index].load(Ordering::Relaxed);
    if mode == Mode::Hang as u8 || (mode == Mode::SixthHangs as u8 && before % 6 == 5) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return StatusCode::OK;
    }
    if mode == Mode::Unavailable as u8 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(seq) = seq_of(&body) {
        let first = stats
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((index as u16, seq));
        if !first {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.last_arrival.fetch_max(now, Ordering::Relaxed);
            let sent = stats
                .sent
                .get(seq as usize)
                .map_or(0, |s| s.load(Ordering::Relaxed));
            if sent > 0 {
                let micros = now.saturating_sub(sent - 1) / 1000;
                stats
                    .latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(micros.min(u32::MAX as u64) as u32);
            }
        }
    }
    StatusCode::OK
}

async fn direct(State(stats): State<Arc<Stats>>, _body: Bytes) -> StatusCode {
    stats.direct_hits.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

/// Starts the receiver on 127.0.0.1; returns its base URL.
pub(crate) async fn start(stats: Arc<Stats>) -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/h/{index}", post(hook))
        .route("/direct", post(direct))
        .with_state(stats);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_sequence_number() {
        assert_eq!(
            super::seq_of(br#"{"data":{"ticket":{"id":"t","title":"b1234","x":1}}}"#),
            Some(1234)
        );
        assert_eq!(super::seq_of(br#"{"title":"x"}"#), None);
    }
}
