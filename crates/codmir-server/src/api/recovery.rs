//! Routes for a bad day: redeliver one delivery, replay a window, hurry pending retries, a
//! test ping, and secret rotation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use codmir_core::webhook::WebhookSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::deliveries::DeliveryResponse;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Json, now, path_id};
use super::webhooks::CreatedWebhook;
use crate::ops;

/// Sends a delivery again: a new delivery of the same event bytes, linked to the original,
/// sent now whatever the original's status; while a redelivery of it is still pending, that
/// one (asked for at once, a hundred redeliveries make one request).
#[utoipa::path(post, path = "/v1/deliveries/{id}/redeliver", tag = "webhooks",
    responses((status = 202, body = DeliveryResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn redeliver(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<DeliveryResponse>), ApiError> {
    let id = path_id("dlv", &id, "delivery")?;
    let quota = s.config.max_pending_per_workspace;
    let d: DeliveryResponse = s
        .mutate_answer(StatusCode::ACCEPTED, move |tx, after| {
            Box::pin(async move { ops::redeliver(tx, &p, &id, quota, now(), after).await })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(d)))
}

/// Ends a pending delivery as cancelled (`cancel_reason`: skipped on request), so that the
/// next delivery of its resource goes, for a webhook ordered per resource whose chain waits
/// behind a delivery the endpoint will not take. A settled delivery is a 409.
#[utoipa::path(post, path = "/v1/deliveries/{id}/skip", tag = "webhooks",
    responses((status = 200, body = DeliveryResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn skip(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryResponse>, ApiError> {
    let id = path_id("dlv", &id, "delivery")?;
    let d: DeliveryResponse = s
        .mutate_answer(StatusCode::OK, move |tx, after| {
            Box::pin(async move { ops::skip(tx, &p, &id, now(), after).await })
        })
        .await?;
    Ok(axum::Json(d))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RetryPending {
    /// Pending deliveries that were due later and are due now.
    pub due_now: u64,
}

/// Makes every pending delivery of the webhook due now, for a receiver back from an outage.
#[utoipa::path(post, path = "/v1/webhooks/{id}/retry-pending", tag = "webhooks",
    responses((status = 202, body = RetryPending), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn retry_pending(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<RetryPending>), ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let retried: RetryPending = s
        .mutate_answer(StatusCode::ACCEPTED, move |tx, after| {
            Box::pin(async move { ops::retry_pending(tx, &p, &id, now(), after).await })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(retried)))
}

impl From<u64> for RetryPending {
    fn from(due_now: u64) -> Self {
        Self { due_now }
    }
}

impl From<ops::Replayed> for ReplayResponse {
    fn from(done: ops::Replayed) -> Self {
        Self {
            queued: done.queued,
            skipped_pending: done.skipped_pending,
            next_since: done.next_since.map(|t| t.to_rfc3339_millis()),
        }
    }
}

/// What a test ping came to, as the endpoint answered it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PingResult {
    /// Whether the endpoint answered 2xx.
    pub succeeded: bool,
    /// The ping's delivery, in the delivery log with its attempt.
    pub delivery_id: String,
    pub event_id: String,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// Why no response came (timeout, refused, TLS, …).
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
}

/// Sends a signed `webhook.ping` event to the webhook now (also when it is disabled, to check
/// a fix before enabling it) and answers with the endpoint's answer. Never retried.
#[utoipa::path(post, path = "/v1/webhooks/{id}/ping", tag = "webhooks",
    responses((status = 200, body = PingResult), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn ping(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<PingResult>, ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let work = s
        .mutate(move |tx, after| {
            Box::pin(async move { ops::ping(tx, &p, &id, now(), after).await })
        })
        .await?;
    let (delivery_id, event_id) = (work.delivery.id.clone(), work.delivery.event_id.clone());
    let outcome = s.attempt_now(work).await?;
    let a = outcome.attempt;
    Ok(axum::Json(PingResult {
        succeeded: a.status_code.is_some_and(|c| (200..300).contains(&c)),
        delivery_id,
        event_id,
        status_code: a.status_code,
        duration_ms: a.duration_ms,
        error: a.error,
        response_body: a.response_body,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    /// Events created at or after this RFC 3339 time.
    #[schema(format = DateTime)]
    pub since: String,
    /// Events created before this RFC 3339 time; now when left out.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// `failed` (default): events whose deliveries failed; `cancelled`: cancelled by deleting
    /// or disabling; `any`: every event the webhook got a delivery for.
    #[schema(value_type = Option<super::schema::ReplayStatusName>, inline)]
    pub status: Option<String>,
    /// Also events the webhook matches but never got a delivery for (it was disabled at the
    /// time), created since the webhook was.
    pub include_missed: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReplayResponse {
    /// New deliveries queued, in event order.
    pub queued: u64,
    /// Events left alone because a delivery of them to this webhook is still pending (from an
    /// earlier replay, or retrying): a second replay of the same window queues nothing new.
    pub skipped_pending: u64,
    /// When one call's bound (10,000 deliveries) cut the window: call again with this `since`.
    pub next_since: Option<String>,
}

/// Sends again, as new deliveries in event order, what a window of time did not deliver to
/// the webhook.
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks", request_body = ReplayRequest,
    responses((status = 202, body = ReplayResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn replay(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<ReplayRequest>,
) -> Result<(StatusCode, axum::Json<ReplayResponse>), ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let since = codmir_core::time::Timestamp::parse_rfc3339(&body.since, "since")?;
    let until = match body.until.as_deref() {
        Some(u) => codmir_core::time::Timestamp::parse_rfc3339(u, "until")?,
        None => now(),
    };
    if until <= since {
        return Err(ApiError::invalid("until", "must be later than `since`"));
    }
    let status = match body.status.as_deref() {
        None | Some("failed") => ops::ReplayStatus::Failed,
        Some("cancelled") => ops::ReplayStatus::Cancelled,
        Some("any") => ops::ReplayStatus::Any,
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!("`{other}` is not one of: failed, cancelled, any"),
            ));
        }
    };
    let request = ops::Replay {
        since,
        until,
        status,
        include_missed: body.include_missed.unwrap_or(false),
    };
    let quota = s.config.max_pending_per_workspace;
    let done: ReplayResponse = s
        .mutate_answer(StatusCode::ACCEPTED, move |tx, after| {
            Box::pin(async move { ops::replay(tx, &p, &id, request, quota, now(), after).await })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(done)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateSecret {
    /// The new secret, 16–512 printable characters; generated (`whsec_…`) when left out.
    pub secret: Option<String>,
    /// How long the previous secret keeps signing too: 0 to 604,800 (7 days); 86,400 when
    /// left out.
    pub grace_period_seconds: Option<u64>,
}

/// Replaces the webhook's secret; the new one is shown this once. During the grace period
/// `webhook-signature` carries a signature with each key (new first) and
/// `X-Codmir-Signature` stays on the previous key, which then moves to the new one. While a
/// grace period runs, a rotation with one of its own is refused (409
/// `rotation_in_grace_period`): no rotation ends a secret before its announced expiry.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", request_body = RotateSecret,
    responses((status = 200, body = CreatedWebhook), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn rotate_secret(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<RotateSecret>,
) -> Result<axum::Json<CreatedWebhook>, ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let secret = match &body.secret {
        Some(secret) => WebhookSecret::parse(secret)?,
        None => WebhookSecret::generate(),
    };
    let grace = std::time::Duration::from_secs(body.grace_period_seconds.unwrap_or(86_400));
    if grace > ops::MAX_GRACE {
        return Err(ApiError::invalid(
            "grace_period_seconds",
            format!("must be at most {} (7 days)", ops::MAX_GRACE.as_secs()),
        ));
    }
    let rotated: CreatedWebhook = s
        .mutate_answer(StatusCode::OK, move |tx, _| {
            Box::pin(async move { ops::rotate_secret(tx, &p, &id, secret, grace, now()).await })
        })
        .await?;
    Ok(axum::Json(rotated))
}
