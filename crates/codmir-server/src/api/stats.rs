//! `GET /v1/webhooks/{id}/stats`: a webhook's deliveries over a recent window, by outcome,
//! with latency percentiles and a series to chart; `GET /v1/webhooks/health`: a page of
//! webhooks with their figures and what is failing now, in one request. Per-webhook figures
//! live here, not in `/metrics`, whose labels never carry ids.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::deliveries::DeliveryResponse;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, ListParams, Query, now, path_id};
use super::webhooks::WebhookResponse;
use super::{AppState, ListResponse};
use crate::ops::{self, Counts, Stats, Window};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsParams {
    /// `1h` (default), `24h` or `7d`.
    #[param(value_type = Option<super::schema::WindowName>, inline)]
    pub window: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Not settled yet: waiting for a first attempt, or for a retry.
    pub pending: u64,
    /// Of `pending`, those with a failed attempt: failing now, another attempt planned.
    pub retrying: u64,
    pub cancelled: u64,
}

impl From<Counts> for DeliveryCounts {
    fn from(c: Counts) -> Self {
        DeliveryCounts {
            total: c.total(),
            succeeded: c.succeeded,
            failed: c.failed,
            pending: c.pending,
            retrying: c.retrying,
            cancelled: c.cancelled,
        }
    }
}

/// Milliseconds from a delivery's creation to the end of its successful attempt
/// (nearest-rank percentiles of the succeeded deliveries).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LatencyMs {
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatsBucket {
    /// Start of the bucket (RFC 3339).
    pub start: String,
    pub succeeded: u64,
    pub failed: u64,
    pub pending: u64,
    /// Of `pending`, those with a failed attempt.
    pub retrying: u64,
    pub cancelled: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WebhookStats {
    pub webhook_id: String,
    pub window: &'static str,
    /// The window is `[since, until)`, ending when the request was answered.
    pub since: String,
    pub until: String,
    /// Width of each series bucket: 60 for 1h and 24h, 3600 for 7d.
    pub bucket_seconds: u64,
    /// Deliveries created in the window, by their status now. Test pings are not
    /// deliveries of record: they are counted apart (`pings`), and not in `success_rate`,
    /// `latency_ms` or `series`.
    pub deliveries: DeliveryCounts,
    /// The test pings of the window (`POST /v1/webhooks/{id}/ping`), by their outcome.
    pub pings: DeliveryCounts,
    /// `succeeded / (succeeded + failed)`; null while none has settled.
    pub success_rate: Option<f64>,
    /// Null while none has succeeded.
    pub latency_ms: Option<LatencyMs>,
    /// Every bucket of the window, oldest first, empty ones included.
    pub series: Vec<StatsBucket>,
    /// For a webhook ordered per resource: its chains with a delivery waiting behind an
    /// earlier one, now (a chain stuck behind a failing delivery waits until it settles or is
    /// skipped).
    pub waiting_chains: u64,
}

impl WebhookStats {
    fn new(webhook_id: String, s: Stats) -> Self {
        WebhookStats {
            webhook_id,
            window: s.window.as_str(),
            since: s.since.to_rfc3339_millis(),
            until: s.until.to_rfc3339_millis(),
            bucket_seconds: s.window.bucket().as_secs(),
            deliveries: s.counts.into(),
            pings: s.pings.into(),
            success_rate: s.success_rate,
            waiting_chains: s.waiting_chains,
            latency_ms: s.latency.map(|l| LatencyMs {
                p50: l.p50,
                p90: l.p90,
                p99: l.p99,
            }),
            series: s
                .series
                .into_iter()
                .map(|(start, c)| StatsBucket {
                    start: start.to_rfc3339_seconds(),
                    succeeded: c.succeeded,
                    failed: c.failed,
                    pending: c.pending,
                    retrying: c.retrying,
                    cancelled: c.cancelled,
                })
                .collect(),
        }
    }
}

/// A webhook's deliveries over the last hour, day or week: counts by outcome, success rate,
/// latency percentiles and a per-minute (per-hour for 7d) series.
#[utoipa::path(get, path = "/v1/webhooks/{id}/stats", tag = "webhooks", params(StatsParams),
    responses((status = 200, body = WebhookStats), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn webhook_stats(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<StatsParams>,
) -> Result<axum::Json<WebhookStats>, ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let window = q
        .window
        .as_deref()
        .map(Window::parse)
        .transpose()?
        .unwrap_or(Window::Hour);
    let stats = s
        .store
        .read({
            let id = id.clone();
            move |tx| Box::pin(async move { ops::webhook_stats(tx, &p, &id, window, now()).await })
        })
        .await?;
    Ok(axum::Json(WebhookStats::new(id, stats)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct HealthParams {
    /// `1h`, `24h` (default) or `7d`.
    #[param(value_type = Option<super::schema::WindowName>, inline)]
    pub window: Option<String>,
    /// `true`: only the webhooks failing now (a page may then hold fewer than `limit`, none
    /// even, with more to follow: follow `next_cursor` while it is set).
    pub failing: Option<bool>,
    /// Webhooks per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WebhookHealth {
    pub webhook: WebhookResponse,
    pub stats: WebhookStats,
    /// Failing now: a delivery waits for a retry, the newest delivery failed, or failures
    /// disabled the webhook.
    pub failing: bool,
    /// Its newest retrying deliveries (at most 5), each with its next attempt.
    pub retrying: Vec<DeliveryResponse>,
    /// Whether it has more retrying deliveries than listed
    /// (`GET /v1/deliveries?webhook_id=…&status=retrying`).
    pub more_retrying: bool,
    /// Its newest delivery, test pings included; `null` before the first.
    pub last_delivery: Option<DeliveryResponse>,
}

/// The caller's webhooks, newest first, each with its figures over the window, whether it is
/// failing now, its retrying deliveries and its newest delivery: a list or an outage view in
/// one request.
#[utoipa::path(get, path = "/v1/webhooks/health", tag = "webhooks", params(HealthParams),
    responses((status = 200, body = ListResponse<WebhookHealth>), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn webhooks_health(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<HealthParams>,
) -> Result<axum::Json<ListResponse<WebhookHealth>>, ApiError> {
    let window = q
        .window
        .as_deref()
        .map(Window::parse)
        .transpose()?
        .unwrap_or(Window::Day);
    let page = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page("wh")?;
    let failing = q.failing.unwrap_or(false);
    let (items, next_cursor) = s
        .store
        .read(move |tx| {
            Box::pin(
                async move { ops::webhooks_health(tx, &p, &page, window, failing, now()).await },
            )
        })
        .await?;
    let data = items
        .into_iter()
        .map(|h| WebhookHealth {
            failing: h.failing(),
            stats: WebhookStats::new(h.webhook.id.clone(), h.stats),
            webhook: h.webhook.into(),
            more_retrying: h.retrying.has_more,
            retrying: h.retrying.items.into_iter().map(Into::into).collect(),
            last_delivery: h.last.map(Into::into),
        })
        .collect();
    Ok(axum::Json(ListResponse {
        data,
        has_more: next_cursor.is_some(),
        next_cursor,
    }))
}
