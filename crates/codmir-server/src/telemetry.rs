//! Prometheus metrics: the process-wide recorder, the names and labels codmir records, and
//! their rendering for `GET /metrics`. Labels take small fixed sets of values (outcome,
//! status class, route template, backend), never ids or URLs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{SharedString, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Bucket bounds in seconds, 1 ms to 60 s, for every latency histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Units of work per commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The recorder, installed on first use. In a process that already has a global recorder
/// (an embedding program), ours still renders, with nothing in it.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "codmir_store_commit_batch_size".into(),
                    ),
                    BATCH_BUCKETS,
                )
            })
            .unwrap_or_default();
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// Installs the recorder; call once at start so that metrics recorded before the first
/// scrape are kept.
pub(crate) fn install() {
    handle();
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "codmir_connections_refused_total",
        "Connections closed at once because the listener was at --max-connections."
    );
    describe_counter!(
        "codmir_deliveries_total",
        "Attempts' outcomes by what they meant for the delivery: succeeded, failed (retries spent), retry (another attempt scheduled)"
    );
    describe_counter!(
        "codmir_attempts_total",
        "Delivery attempts by status class: 2xx, 3xx, 4xx, 5xx, network, timeout"
    );
    describe_histogram!(
        "codmir_delivery_latency_seconds",
        "From the commit of the event to the 2xx of its delivery"
    );
    describe_histogram!(
        "codmir_attempt_duration_seconds",
        "One attempt, from sending the request to reading the answer"
    );
    describe_gauge!(
        "codmir_attempts_in_flight",
        "Attempts in flight on this node"
    );
    describe_gauge!(
        "codmir_queue_pending",
        "Pending deliveries, in the database"
    );
    describe_gauge!(
        "codmir_queue_due",
        "Pending deliveries due now and not leased to any node"
    );
    describe_gauge!(
        "codmir_queue_oldest_due_age_seconds",
        "How long the oldest due, unleased delivery has been waiting"
    );
    describe_gauge!("codmir_webhooks_disabled", "Webhooks that are disabled");
    describe_gauge!(
        "codmir_chains_waiting",
        "Chains of a webhook ordered per resource with a delivery waiting behind an earlier one"
    );
    describe_gauge!(
        "codmir_chains_oldest_waiting_age_seconds",
        "How long the oldest delivery waiting in a chain has existed"
    );
    describe_counter!(
        "codmir_http_requests_total",
        "API requests by route template, method and status"
    );
    describe_histogram!(
        "codmir_http_request_duration_seconds",
        "API requests' time to answer, by route template"
    );
    describe_counter!("codmir_store_commits_total", "Commits of units of work");
    describe_histogram!(
        "codmir_store_commit_batch_size",
        "Units of work per commit (SQLite groups them)"
    );
    describe_histogram!(
        "codmir_store_commit_duration_seconds",
        "From beginning a write transaction to its commit"
    );
}

/// The Prometheus text of every metric, with the scrape-time gauges set first.
pub(crate) fn render(queue: QueueGauges) -> String {
    let h = handle();
    gauge!("codmir_queue_pending").set(queue.pending as f64);
    gauge!("codmir_queue_due").set(queue.due as f64);
    gauge!("codmir_queue_oldest_due_age_seconds").set(queue.oldest_due_age.as_secs_f64());
    gauge!("codmir_webhooks_disabled").set(queue.disabled_webhooks as f64);
    gauge!("codmir_chains_waiting").set(queue.waiting_chains as f64);
    gauge!("codmir_chains_oldest_waiting_age_seconds").set(queue.oldest_waiting_age.as_secs_f64());
    h.run_upkeep();
    h.render()
}

/// The figures read from the database at each scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueGauges {
    pub(crate) pending: u64,
    pub(crate) due: u64,
    pub(crate) oldest_due_age: Duration,
    pub(crate) disabled_webhooks: u64,
    pub(crate) waiting_chains: u64,
    pub(crate) oldest_waiting_age: Duration,
}

/// The status class of an attempt: `2xx`…`5xx`, or `timeout`/`network` without a response.
pub(crate) fn status_class(status: Option<u16>, error: Option<&str>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None if error.is_some_and(|e| e.starts_with("timed out")) => "timeout",
        None => "network",
    }
}

/// One attempt made: its class, its duration, and what it meant (`succeeded`, `failed`,
/// `retry`); for a success, how long after the event's commit.
pub(crate) fn attempt(
    class: &'static str,
    duration: Duration,
    meaning: &'static str,
    since_commit: Option<Duration>,
) {
    counter!("codmir_attempts_total", "class" => class).increment(1);
    histogram!("codmir_attempt_duration_seconds").record(duration.as_secs_f64());
    counter!("codmir_deliveries_total", "outcome" => meaning).increment(1);
    if let Some(latency) = since_commit {
        histogram!("codmir_delivery_latency_seconds").record(latency.as_secs_f64());
    }
}

pub(crate) fn in_flight(n: usize) {
    gauge!("codmir_attempts_in_flight").set(n as f64);
}

/// One API request answered.
pub(crate) fn request(route: Arc<str>, method: &str, status: u16, took: Duration) {
    // Labels without a copy each: the route shared, the method and the usual statuses static.
    let method: SharedString = match method {
        "GET" => "GET".into(),
        "POST" => "POST".into(),
        "PATCH" => "PATCH".into(),
        "DELETE" => "DELETE".into(),
        other => other.to_owned().into(),
    };
    let status: SharedString = match status {
        200 => "200".into(),
        201 => "201".into(),
        202 => "202".into(),
        204 => "204".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        409 => "409".into(),
        422 => "422".into(),
        429 => "429".into(),
        503 => "503".into(),
        other => other.to_string().into(),
    };
    counter!(
        "codmir_http_requests_total",
        "route" => SharedString::from(route.clone()),
        "method" => method,
        "status" => status
    )
    .increment(1);
    histogram!("codmir_http_request_duration_seconds", "route" => SharedString::from(route))
        .record(took.as_secs_f64());
}

/// One commit of `units` units of work on `backend`.
pub(crate) fn commit(backend: &'static str, units: usize, took: Duration) {
    counter!("codmir_store_commits_total", "backend" => backend).increment(1);
    histogram!("codmir_store_commit_batch_size", "backend" => backend).record(units as f64);
    histogram!("codmir_store_commit_duration_seconds", "backend" => backend)
        .record(took.as_secs_f64());
}

/// A connection closed at once because the listener was at `--max-connections`.
pub(crate) fn connection_refused() {
    counter!("codmir_connections_refused_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_fall_in_their_class() {
        let table = [
            (Some(204), None, "2xx"),
            (Some(302), None, "3xx"),
            (Some(410), None, "4xx"),
            (Some(503), None, "5xx"),
            (None, Some("timed out"), "timeout"),
            (None, Some("connection failed: refused"), "network"),
            (None, None, "network"),
        ];
        for (status, error, class) in table {
            assert_eq!(status_class(status, error), class, "{status:?} {error:?}");
        }
    }
}
