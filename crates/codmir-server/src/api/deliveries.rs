//! The delivery log in the API: deliveries and their attempts as answered (each attempt's
//! request as sent, its response's headers), the per-webhook and workspace-wide lists, and
//! one delivery with every attempt.

use axum::extract::{Path, State};
use codmir_core::webhook::{Attempt, Delivery, DeliveryStatus, Webhook};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, ListParams, Query, path_id};
use super::{AppState, ListResponse, schema};
use crate::ops;
use crate::store::DeliveryQuery;
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryResponse {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: &'static str,
    /// `pending` (not attempted yet), `retrying` (attempted and failing: another attempt is
    /// planned at `next_attempt_at`), `succeeded`, `failed` (no retries left) or `cancelled`.
    /// The filter `status=pending` finds the retrying ones too (every delivery not settled).
    pub status: &'static str,
    pub attempt_count: u32,
    /// When the next attempt is due; `null` once the delivery is settled.
    pub next_attempt_at: Option<String>,
    /// The delivery this one sends again (a redelivery or a replay); `null` otherwise.
    pub redelivery_of: Option<String>,
    /// When the latest attempt was made; `null` before the first.
    pub last_attempt_at: Option<String>,
    /// The latest attempt's HTTP status; `null` when no response came or before the first.
    pub last_status_code: Option<u16>,
    /// Why the latest attempt failed without a response (timeout, refused, …).
    pub last_error: Option<String>,
    /// Why it was cancelled: its webhook disabled or deleted, `superseded by redelivery
    /// dlv_…` or `skipped on request`; `null` otherwise.
    pub cancel_reason: Option<String>,
    /// For a webhook ordered per resource: the resource whose events it is in order with,
    /// and its event's `sequence`; `null` otherwise.
    pub chain: Option<ChainPlace>,
    /// True while it waits in its chain behind an earlier delivery (pending, not due until
    /// that one settles; `GET /v1/deliveries/{id}` says which).
    pub waiting: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChainPlace {
    pub resource_id: String,
    pub sequence: u64,
}

impl From<Delivery> for DeliveryResponse {
    fn from(d: Delivery) -> Self {
        let status = d.shown_status();
        let waiting = d.waits_in_chain();
        Self {
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event_id,
            event_type: d.event_type.as_str(),
            status,
            attempt_count: d.attempt_count,
            next_attempt_at: d.next_attempt_at.map(|t| t.to_rfc3339_millis()),
            redelivery_of: d.redelivery_of,
            last_attempt_at: d.last_attempt_at.map(|t| t.to_rfc3339_millis()),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            cancel_reason: d.cancel_reason,
            chain: d.chain.map(|(resource_id, sequence)| ChainPlace {
                resource_id,
                sequence,
            }),
            waiting,
            created_at: d.created_at.to_rfc3339_millis(),
            updated_at: d.updated_at.to_rfc3339_millis(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AttemptResponse {
    pub attempt: u32,
    pub attempted_at: String,
    pub duration_ms: u64,
    /// The endpoint's HTTP status; `null` when no response came (see `error`).
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
    /// The request's headers in the order sent: the signatures and their timestamp exactly as
    /// sent (kept with the attempt), the webhook's own headers as they were, values masked.
    /// For an attempt recorded before codmir kept them (`request_headers_as_sent: false`) the
    /// signatures are computed again with the webhook's secrets as they are now, and `null`
    /// when the webhook is gone.
    #[schema(value_type = Option<Object>)]
    pub request_headers: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether `request_headers` are the ones sent (true for every attempt recorded since
    /// codmir keeps them).
    pub request_headers_as_sent: bool,
    /// The response's headers as received: the first 32 names, each value cut at 256 bytes;
    /// `null` when no response came.
    #[schema(value_type = Option<Object>)]
    pub response_headers: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Headers as sent by attempt `attempt` of `delivery`, from what it kept (`sent`: the
/// signatures, their timestamp and the webhook's own headers) and what the delivery says.
fn as_sent(
    delivery: &Delivery,
    attempt: u32,
    mut sent: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut take = |name: &str| sent.remove(name).unwrap_or(serde_json::Value::Null);
    let signatures = [
        take("x-codmir-signature"),
        take("webhook-timestamp"),
        take("webhook-signature"),
    ];
    // What is left are the webhook's own headers, sent first.
    let mut headers = sent;
    crate::delivery::ordered_headers(delivery, attempt, signatures, |name, value| {
        headers.insert(name.as_str().to_owned(), value);
    });
    headers
}

/// Headers of an attempt recorded before codmir kept them: signed again with the webhook's
/// secrets as they are now, its own headers as they are now.
fn recomputed(
    webhook: &Webhook,
    log: &ops::DeliveryLog,
    a: &Attempt,
) -> serde_json::Map<String, serde_json::Value> {
    let mut headers = serde_json::Map::new();
    for (name, value) in webhook.headers.masked() {
        headers.insert(name.to_ascii_lowercase(), value.into());
    }
    let body = log.payload.as_deref().unwrap_or_default().as_bytes();
    let (delivery, attempt, at) = (&log.delivery, a.attempt, a.attempted_at);
    crate::delivery::signed_headers(webhook, delivery, attempt, at, body, |n, v| {
        headers.insert(n.as_str().to_owned(), v.into());
    });
    headers
}

/// A JSON object kept as text, if it reads as one.
fn object(text: Option<&str>) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(text?) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    }
}

impl AttemptResponse {
    fn new(a: Attempt, log: &ops::DeliveryLog) -> Self {
        let sent = object(a.request_headers.as_deref());
        let request_headers_as_sent = sent.is_some();
        let request_headers = match sent {
            Some(sent) => Some(as_sent(&log.delivery, a.attempt, sent)),
            None => log.webhook.as_ref().map(|w| recomputed(w, log, &a)),
        };
        Self {
            request_headers,
            request_headers_as_sent,
            response_headers: object(a.response_headers.as_deref()),
            attempt: a.attempt,
            attempted_at: a.attempted_at.to_rfc3339_millis(),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error: a.error,
            response_body: a.response_body,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryResponse,
    /// Where the attempts were sent (the webhook's URL now); `null` when the webhook is gone.
    pub url: Option<String>,
    /// The exact bytes every attempt sent; `null` once the event is past retention.
    pub request_body: Option<String>,
    /// For a delivery waiting in its chain: the delivery of the same resource it waits
    /// behind (its attempts and next attempt say when), which `POST /v1/deliveries/{id}/skip`
    /// can end; `null` otherwise.
    pub waiting_behind: Option<DeliveryResponse>,
    pub attempts: Vec<AttemptResponse>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveryListParams {
    /// `pending` (not yet settled), `retrying` (pending after a failed attempt), `succeeded`,
    /// `failed` or `cancelled`.
    #[param(value_type = Option<schema::DeliveryStatusName>, inline)]
    pub status: Option<String>,
    /// Items per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(DeliveryListParams),
    responses((status = 200, body = ListResponse<DeliveryResponse>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_deliveries(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<DeliveryListParams>,
) -> Result<axum::Json<ListResponse<DeliveryResponse>>, ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let status = q
        .status
        .as_deref()
        .map(DeliveryStatus::parse_shown)
        .transpose()?;
    let page = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page("dlv")?;
    let page = s
        .store
        .read(move |tx| {
            Box::pin(async move {
                let w = ops::webhook(tx, &p, &id).await?;
                Ok::<_, ops::Error>(tx.list_deliveries(&w.id, status, &page).await?)
            })
        })
        .await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |d| d.id.clone(),
        DeliveryResponse::from,
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WorkspaceDeliveryParams {
    /// `pending` (not yet settled), `retrying` (pending after a failed attempt), `succeeded`,
    /// `failed` or `cancelled`.
    #[param(value_type = Option<schema::DeliveryStatusName>, inline)]
    pub status: Option<String>,
    /// An event type or pattern: `ticket.created`, `ticket.*`, `*`.
    #[param(value_type = Option<schema::EventPattern>, inline)]
    pub event_type: Option<String>,
    /// Only deliveries to this webhook.
    pub webhook_id: Option<String>,
    /// Only deliveries of this event: where it went.
    pub event_id: Option<String>,
    /// Only deliveries created at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only deliveries created before this RFC 3339 time.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Items per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The workspace's deliveries across its webhooks, newest first: what failed, where and why.
#[utoipa::path(get, path = "/v1/deliveries", tag = "webhooks", params(WorkspaceDeliveryParams),
    responses((status = 200, body = ListResponse<DeliveryResponse>), (status = 422, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_workspace_deliveries(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<WorkspaceDeliveryParams>,
) -> Result<axum::Json<ListResponse<DeliveryResponse>>, ApiError> {
    let webhook_id = match q.webhook_id {
        Some(id) if !codmir_core::id::is_valid("wh", &id) => {
            return Err(ApiError::invalid(
                "webhook_id",
                format!("`{id}` is not a webhook id (wh_…)"),
            ));
        }
        other => other,
    };
    let event_id = match q.event_id {
        Some(id) if !codmir_core::id::is_valid("evt", &id) => {
            return Err(ApiError::invalid(
                "event_id",
                format!("`{id}` is not an event id (evt_…)"),
            ));
        }
        other => other,
    };
    let shown = q
        .status
        .as_deref()
        .map(DeliveryStatus::parse_shown)
        .transpose()?;
    let query = DeliveryQuery {
        webhook_id,
        event_id,
        status: shown.map(|(status, _)| status),
        attempted: shown.and_then(|(_, attempted)| attempted),
        event_type: q
            .event_type
            .as_deref()
            .map(|t| {
                super::events::type_pattern(t).map_err(|_| {
                    ApiError::invalid(
                        "event_type",
                        format!("`{t}` is not an event type or pattern; see GET /v1/event-types"),
                    )
                })
            })
            .transpose()?,
        since: super::events::time_param(q.since.as_deref(), "since")?,
        until: super::events::time_param(q.until.as_deref(), "until")?,
    };
    let page = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page("dlv")?;
    let page = s
        .store
        .read(move |tx| {
            Box::pin(async move {
                tx.list_workspace_deliveries(&p.workspace_id, &query, &page)
                    .await
            })
        })
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |d| d.id.clone(),
        DeliveryResponse::from,
    )))
}

#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "webhooks",
    responses((status = 200, body = DeliveryDetail), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn get_delivery(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryDetail>, ApiError> {
    let id = path_id("dlv", &id, "delivery")?;
    let mut log = s
        .store
        .read(move |tx| Box::pin(async move { ops::delivery(tx, &p, &id).await }))
        .await?;
    let attempts = std::mem::take(&mut log.attempts)
        .into_iter()
        .map(|a| AttemptResponse::new(a, &log))
        .collect();
    Ok(axum::Json(DeliveryDetail {
        url: log.webhook.as_ref().map(|w| w.url.as_str().to_owned()),
        request_body: log.payload.clone(),
        waiting_behind: log.behind.take().map(Into::into),
        attempts,
        delivery: log.delivery.into(),
    }))
}
