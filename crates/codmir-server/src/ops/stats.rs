//! A webhook's statistics over a recent window: what the dashboard draws and an operator
//! reads when asking "is this endpoint healthy?". A delivery counts in the window and in the
//! bucket of the time it was created, whatever time its attempts ran.

use std::time::Duration;

use codmir_core::ValidationError;
use codmir_core::time::Timestamp;
use codmir_core::tracker::Principal;
use codmir_core::webhook::{Delivery, DeliveryOrder, DeliveryStatus, Webhook};

use super::{Result, webhook};
use crate::store::{Page, PageRequest, StatusCount, Tx};

/// How far back the statistics look, and how fine their series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    pub fn parse(raw: &str) -> std::result::Result<Self, ValidationError> {
        match raw {
            "1h" => Ok(Window::Hour),
            "24h" => Ok(Window::Day),
            "7d" => Ok(Window::Week),
            _ => Err(ValidationError::new(
                "window",
                format!("`{raw}` is not one of: 1h, 24h, 7d"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    pub fn length(self) -> Duration {
        Duration::from_secs(match self {
            Window::Hour => 3_600,
            Window::Day => 86_400,
            Window::Week => 7 * 86_400,
        })
    }

    /// A minute per bucket, an hour for the week (168 points, not 10,080).
    pub fn bucket(self) -> Duration {
        Duration::from_secs(match self {
            Window::Hour | Window::Day => 60,
            Window::Week => 3_600,
        })
    }
}

/// Deliveries by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every unsettled delivery, those being retried included.
    pub pending: u64,
    /// The pending deliveries with a failed attempt: failing, another attempt planned.
    pub retrying: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.pending + self.succeeded + self.failed + self.cancelled
    }

    fn add(&mut self, row: &StatusCount) {
        let n = row.count.max(0) as u64;
        match row.status {
            DeliveryStatus::Pending => {
                self.pending += n;
                self.retrying += row.attempted.max(0) as u64;
            }
            DeliveryStatus::Succeeded => self.succeeded += n,
            DeliveryStatus::Failed => self.failed += n,
            DeliveryStatus::Cancelled => self.cancelled += n,
        }
    }
}

/// Latency percentiles of the succeeded deliveries, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub window: Window,
    pub since: Timestamp,
    pub until: Timestamp,
    /// Deliveries of record: test pings are not among them.
    pub counts: Counts,
    /// The test pings of the window, apart.
    pub pings: Counts,
    /// Succeeded over settled (succeeded or failed); `None` while nothing has settled.
    pub success_rate: Option<f64>,
    /// `None` while nothing has succeeded.
    pub latency: Option<Latency>,
    /// One entry per bucket from the one holding `since` to the one holding `until`, empty
    /// buckets included, so that a chart needs no gap filling.
    pub series: Vec<(Timestamp, Counts)>,
    /// Its chains (ordered per resource) with a delivery waiting behind an earlier one, now.
    pub waiting_chains: u64,
}

/// The statistics of one of the caller's webhooks over `window`, ending at `now`.
pub async fn webhook_stats(
    tx: &mut dyn Tx,
    p: &Principal,
    id: &str,
    window: Window,
    now: Timestamp,
) -> Result<Stats> {
    let w = webhook(tx, p, id).await?;
    stats_of(tx, &w, window, now).await
}

/// [`webhook_stats`] of a webhook already read.
async fn stats_of(tx: &mut dyn Tx, w: &Webhook, window: Window, now: Timestamp) -> Result<Stats> {
    let since = Timestamp::from_millis(now.as_millis() - window.length().as_millis() as i64);
    let bucket_ms = window.bucket().as_millis() as i64;
    let counts = tx.delivery_counts(&w.id, since, bucket_ms).await?;
    let latencies = tx.success_latencies(&w.id, since).await?;
    let mut pings = Counts::default();
    for row in tx.ping_counts(&w.id, since).await? {
        pings.add(&row);
    }
    let waiting_chains = match w.ordering {
        DeliveryOrder::PerResource => tx.waiting_chains(&w.id).await?.max(0) as u64,
        // Chains may outlive a switch back to none only until released, which is at once.
        DeliveryOrder::None => 0,
    };
    Ok(Stats {
        pings,
        waiting_chains,
        ..summarise(window, since, now, &counts, &latencies)
    })
}

/// One webhook as the health view shows it.
#[derive(Debug, Clone)]
pub struct Health {
    pub webhook: Webhook,
    pub stats: Stats,
    /// Its newest deliveries failing now (another attempt planned), at most
    /// [`HEALTH_RETRYING`], and whether it has more.
    pub retrying: Page<Delivery>,
    /// Its newest delivery, test pings included.
    pub last: Option<Delivery>,
}

/// How many of a webhook's retrying deliveries the health view lists.
pub const HEALTH_RETRYING: u32 = 5;

impl Health {
    /// Failing now: a delivery waits for a retry, the newest one failed, or failures disabled
    /// the webhook.
    pub fn failing(&self) -> bool {
        !self.retrying.items.is_empty()
            || self
                .last
                .as_ref()
                .is_some_and(|d| d.status == DeliveryStatus::Failed)
            || (!self.webhook.enabled && self.webhook.disabled_reason.is_some())
    }
}

/// A page of the caller's webhooks, each with its figures over `window`, what of it is
/// failing now and its newest delivery; with `failing_only`, the page's failing ones (a
/// page may then hold fewer than its limit, none even, and more may follow). With the page,
/// the cursor of the next one: the last webhook read, when there are more.
pub async fn webhooks_health(
    tx: &mut dyn Tx,
    p: &Principal,
    page: &PageRequest,
    window: Window,
    failing_only: bool,
    now: Timestamp,
) -> Result<(Vec<Health>, Option<String>)> {
    let webhooks = tx.list_webhooks(&p.workspace_id, page).await?;
    let next = match webhooks.has_more {
        true => webhooks.items.last().map(|w| w.id.clone()),
        false => None,
    };
    let mut items = Vec::with_capacity(webhooks.items.len());
    for w in webhooks.items {
        let stats = stats_of(tx, &w, window, now).await?;
        let first = |limit| PageRequest { limit, after: None };
        let retrying = (DeliveryStatus::Pending, Some(true));
        let retrying = tx
            .list_deliveries(&w.id, Some(retrying), &first(HEALTH_RETRYING))
            .await?;
        let last = tx.list_deliveries(&w.id, None, &first(1)).await?;
        let health = Health {
            webhook: w,
            stats,
            retrying,
            last: last.items.into_iter().next(),
        };
        if !failing_only || health.failing() {
            items.push(health);
        }
    }
    Ok((items, next))
}

/// The figures from the store's per-bucket counts and sorted latencies.
fn summarise(
    window: Window,
    since: Timestamp,
    until: Timestamp,
    counts: &[StatusCount],
    sorted_latencies: &[i64],
) -> Stats {
    let bucket_ms = window.bucket().as_millis() as i64;
    let first = since.as_millis().div_euclid(bucket_ms);
    let last = until.as_millis().div_euclid(bucket_ms).max(first);
    let mut series: Vec<(Timestamp, Counts)> = (first..=last)
        .map(|b| (Timestamp::from_millis(b * bucket_ms), Counts::default()))
        .collect();
    let mut total = Counts::default();
    for row in counts {
        total.add(row);
        // A delivery created after `until` (a clock step between nodes) lands in the last
        // bucket rather than nowhere.
        let i = (row.bucket.as_millis().div_euclid(bucket_ms) - first).clamp(0, last - first);
        series[i as usize].1.add(row);
    }
    let settled = total.succeeded + total.failed;
    Stats {
        window,
        since,
        until,
        counts: total,
        pings: Counts::default(),
        waiting_chains: 0,
        success_rate: (settled > 0).then(|| total.succeeded as f64 / settled as f64),
        latency: (!sorted_latencies.is_empty()).then(|| Latency {
            p50: percentile(sorted_latencies, 50),
            p90: percentile(sorted_latencies, 90),
            p99: percentile(sorted_latencies, 99),
        }),
        series,
    }
}

/// The nearest-rank percentile of a sorted, non-empty list: the smallest value that at least
/// `p` % of the values are at or below.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(
            (percentile(&v, 50), percentile(&v, 90), percentile(&v, 99)),
            (50, 90, 99)
        );
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
        assert_eq!(percentile(&[1, 2, 3], 99), 3);
    }

    #[test]
    fn the_series_covers_every_bucket_of_the_window_and_sums_to_the_totals() {
        let until = Timestamp::from_millis(10 * 3_600_000 + 30_500);
        let since = Timestamp::from_millis(until.as_millis() - 3_600_000);
        let minute = |m: i64| Timestamp::from_millis(9 * 3_600_000 + m * 60_000);
        let row = |bucket, status, count, attempted| StatusCount {
            bucket,
            status,
            count,
            attempted,
        };
        let counts = [
            row(minute(1), DeliveryStatus::Succeeded, 3, 3),
            row(minute(1), DeliveryStatus::Failed, 1, 1),
            row(minute(59), DeliveryStatus::Pending, 2, 1),
        ];
        let s = summarise(Window::Hour, since, until, &counts, &[5, 9, 40]);
        // 09:00:30.5 to 10:00:30.5 touches 61 minutes.
        assert_eq!(s.series.len(), 61);
        assert_eq!(s.series[0].0, minute(0));
        assert_eq!(s.series[1].1.succeeded, 3);
        assert_eq!(s.series[59].1.pending, 2);
        assert_eq!((s.series[59].1.retrying, s.counts.retrying), (1, 1));
        assert_eq!(s.counts.total(), 6);
        assert_eq!(s.success_rate, Some(0.75));
        assert_eq!(s.latency.map(|l| (l.p50, l.p99)), Some((9, 40)));
        let empty = summarise(Window::Week, since, until, &[], &[]);
        assert_eq!((empty.success_rate, empty.latency), (None, None));
        assert_eq!(empty.series.len(), 2, "an hour across two hour buckets");
    }
}
