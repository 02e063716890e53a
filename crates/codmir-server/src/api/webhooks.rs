//! Routes of webhooks and their delivery log, with their wire types.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use codmir_core::sign::signing_secret;
use codmir_core::webhook::{
    CustomHeaders, DeliveryOrder, EndpointUrl, EventFilter, HeadersUpdate, Webhook, WebhookSecret,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Json, ListParams, Query, now, path_id};
use super::{AppState, ListResponse, schema};
use crate::ops::{self, NewWebhook, WebhookPatch};

const MAX_DESCRIPTION: usize = 500;
const MAX_PROJECT_IDS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateWebhook {
    /// Absolute http(s) URL that receives POSTs, at most 2048 characters.
    #[schema(max_length = 2048, pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub url: String,
    /// Event types (`ticket.created`), families (`ticket.*`) or `*` for all.
    #[schema(value_type = Vec<schema::EventPattern>, inline, min_items = 1, max_items = 32)]
    pub events: Vec<String>,
    /// 16–512 printable characters; generated (`whsec_…`) when left out.
    #[schema(min_length = 16, max_length = 512)]
    pub secret: Option<String>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Only events of these projects; all projects when left out or empty.
    #[schema(max_items = 100)]
    pub project_ids: Option<Vec<String>>,
    /// Most attempts in flight to this webhook at once, from 1 to the server's
    /// `--max-in-flight-per-endpoint` (64 by default, also the default here).
    #[schema(minimum = 1)]
    pub max_in_flight: Option<u32>,
    /// Most attempts started per second (1–10,000); unlimited when left out.
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit_per_second: Option<u32>,
    /// Static headers every request carries, `{"X-Tenant": "acme"}`: at most 20, names of
    /// at most 64 token characters, string values of at most 1024 visible ASCII characters.
    #[schema(value_type = Option<schema::CustomHeaders>, inline)]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the server removes the webhook by itself (RFC 3339, in the future): a temporary
    /// webhook, renewed by `PATCH` while it is wanted (`codmir listen`'s). Kept when left out.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// `none` (default): each delivery is sent as soon as it is due. `per_resource`: the
    /// deliveries about one ticket (or one project) are sent one at a time in the order of
    /// their events' `sequence`, each after the one before it succeeded, failed for good or
    /// was cancelled (skipped); different resources in parallel.
    #[schema(value_type = Option<schema::OrderingName>, inline)]
    pub ordering: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateWebhook {
    #[schema(max_length = 2048, pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<schema::EventPattern>>, inline, min_items = 1, max_items = 32)]
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::extract::present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Option<String>>,
    #[schema(max_items = 100)]
    pub project_ids: Option<Vec<String>>,
    /// `false` stops deliveries: pending ones are cancelled. `true` turns a disabled webhook
    /// back on (what it missed comes back only through a replay).
    pub enabled: Option<bool>,
    /// `null` goes back to the server's bound.
    #[serde(default, deserialize_with = "super::extract::present")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub max_in_flight: Option<Option<u32>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "super::extract::present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub rate_limit_per_second: Option<Option<u32>>,
    /// Replaces every custom header; `{}` removes them. A header sent with the masked value a
    /// read shows of it keeps its value, so a read's `headers` can be sent back with one
    /// changed; any other masked value is refused.
    #[schema(value_type = Option<schema::CustomHeaders>, inline)]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
    /// A new removal time (RFC 3339, in the future); `null` keeps the webhook for good.
    #[serde(default, deserialize_with = "super::extract::present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    /// `none` or `per_resource`. Back to `none`, the deliveries waiting in a chain are sent
    /// at once.
    #[schema(value_type = Option<schema::OrderingName>, inline)]
    pub ordering: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WebhookResponse {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub project_ids: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why it was disabled automatically (`null` while enabled, or when a user disabled it).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    /// `null`: the server's per-endpoint bound.
    pub max_in_flight: Option<u32>,
    /// `null`: no limit.
    pub rate_limit_per_second: Option<u32>,
    /// The custom headers' names, each value masked (`********`, and its last four characters
    /// when it has at least 20): values are write-only.
    #[schema(value_type = Object)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// Always true: a secret is set. Its value is shown only when the webhook is created or
    /// its secret rotated.
    pub secret_set: bool,
    /// While a rotation's grace period runs: when the previous secret stops signing.
    pub previous_secret_expires_at: Option<String>,
    /// Which secret signs which header, and until when.
    pub signing: Signing,
    /// When the server removes it by itself; `null` for a webhook kept until deleted.
    pub expires_at: Option<String>,
    /// `none` or `per_resource` (see the create request).
    pub ordering: &'static str,
    pub created_at: String,
    pub updated_at: String,
}

/// Which of a webhook's secrets sign each header of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Signing {
    /// The secrets `webhook-signature` carries one signature each of: `current`, and
    /// `previous` while it signs (until `previous_secret_expires_at`).
    pub webhook_signature: Vec<&'static str>,
    /// The secret `X-Codmir-Signature` is made with: `previous` during a rotation's grace
    /// period, `current` otherwise.
    pub x_codmir_signature: &'static str,
    /// When `X-Codmir-Signature` moves to the current secret; `null` when it is on it.
    pub x_codmir_signature_moves_at: Option<String>,
}

impl From<Webhook> for WebhookResponse {
    fn from(w: Webhook) -> Self {
        let previous_until = w
            .previous_secret
            .as_ref()
            .filter(|(_, until)| codmir_core::time::Timestamp::now() < *until)
            .map(|(_, until)| until.to_rfc3339_millis());
        Self {
            id: w.id,
            url: w.url.as_str().to_owned(),
            events: w.events.patterns().to_vec(),
            project_ids: w.project_ids,
            description: w.description,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            disabled_at: w.disabled_at.map(|t| t.to_rfc3339_millis()),
            max_in_flight: w.max_in_flight,
            rate_limit_per_second: w.rate_limit_per_second,
            headers: w
                .headers
                .masked()
                .map(|(n, v)| (n.to_owned(), serde_json::Value::String(v)))
                .collect(),
            secret_set: true,
            previous_secret_expires_at: previous_until.clone(),
            signing: Signing {
                webhook_signature: match previous_until {
                    Some(_) => vec!["current", "previous"],
                    None => vec!["current"],
                },
                x_codmir_signature: match previous_until {
                    Some(_) => "previous",
                    None => "current",
                },
                x_codmir_signature_moves_at: previous_until,
            },
            expires_at: w.expires_at.map(|t| t.to_rfc3339_millis()),
            ordering: w.ordering.as_str(),
            created_at: w.created_at.to_rfc3339_millis(),
            updated_at: w.updated_at.to_rfc3339_millis(),
        }
    }
}

/// The webhook with its secret: returned once, by the create call.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// The secret as registered: key of `X-Codmir-Signature`.
    pub secret: String,
    /// The same key in the `whsec_` form that Standard Webhooks libraries take.
    pub signing_secret: String,
}

fn description(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )),
        Some(d) if codmir_core::has_control_chars(&d) => Err(ApiError::invalid(
            "description",
            "must not contain control characters",
        )),
        other => Ok(other),
    }
}

/// The most attempts per second a webhook may be limited to.
const MAX_RATE: u32 = 10_000;

fn max_in_flight(raw: u32, server: usize) -> Result<u32, ApiError> {
    if raw == 0 || raw as usize > server {
        return Err(ApiError::invalid(
            "max_in_flight",
            format!("must be between 1 and {server} (the server's --max-in-flight-per-endpoint)"),
        ));
    }
    Ok(raw)
}

fn rate_limit(raw: u32) -> Result<u32, ApiError> {
    if raw == 0 || raw > MAX_RATE {
        return Err(ApiError::invalid(
            "rate_limit_per_second",
            format!("must be between 1 and {MAX_RATE}; leave it out (or null) for no limit"),
        ));
    }
    Ok(raw)
}

fn headers(raw: serde_json::Map<String, serde_json::Value>) -> Result<HeadersUpdate, ApiError> {
    let mut pairs = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        match value {
            serde_json::Value::String(v) => pairs.push((name, v)),
            _ => {
                return Err(ApiError::invalid(
                    "headers",
                    format!("the value of `{name}` must be a string"),
                ));
            }
        }
    }
    Ok(HeadersUpdate::parse(&pairs)?)
}

fn project_ids(raw: Vec<String>) -> Result<Vec<String>, ApiError> {
    if raw.len() > MAX_PROJECT_IDS {
        return Err(ApiError::invalid(
            "project_ids",
            format!("must list at most {MAX_PROJECT_IDS} projects"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for id in raw {
        if !codmir_core::id::is_valid("proj", &id) {
            return Err(ApiError::invalid(
                "project_ids",
                format!("`{id}` is not a project id (proj_…)"),
            ));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A webhook with its secret, shown at its creation and at a rotation.
impl From<Webhook> for CreatedWebhook {
    fn from(webhook: Webhook) -> Self {
        let secret = webhook.secret.as_str().to_owned();
        Self {
            signing_secret: signing_secret(&secret),
            secret,
            webhook: webhook.into(),
        }
    }
}

/// A webhook's `expires_at`: an RFC 3339 time in the future.
fn expires_at(raw: &str) -> Result<codmir_core::time::Timestamp, ApiError> {
    let at = codmir_core::time::Timestamp::parse_rfc3339(raw, "expires_at")?;
    if at <= codmir_core::time::Timestamp::now() {
        return Err(ApiError::invalid(
            "expires_at",
            format!("`{raw}` is not in the future"),
        ));
    }
    Ok(at)
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 422, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn create_webhook(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<CreateWebhook>,
) -> Result<(StatusCode, axum::Json<CreatedWebhook>), ApiError> {
    let new = NewWebhook {
        url: EndpointUrl::parse(&body.url, &s.config.target_policy())?,
        events: EventFilter::parse_subscription(&body.events)?,
        secret: match &body.secret {
            Some(secret) => WebhookSecret::parse(secret)?,
            None => WebhookSecret::generate(),
        },
        description: description(body.description)?,
        project_ids: project_ids(body.project_ids.unwrap_or_default())?,
        max_in_flight: body
            .max_in_flight
            .map(|n| max_in_flight(n, s.config.max_in_flight_per_endpoint))
            .transpose()?,
        rate_limit_per_second: body.rate_limit_per_second.map(rate_limit).transpose()?,
        headers: match body.headers {
            Some(raw) => headers(raw)?.apply(&CustomHeaders::default())?,
            None => CustomHeaders::default(),
        },
        expires_at: body.expires_at.as_deref().map(expires_at).transpose()?,
        ordering: body
            .ordering
            .as_deref()
            .map(DeliveryOrder::parse)
            .transpose()?
            .unwrap_or_default(),
    };
    let max = s.config.max_webhooks_per_workspace;
    let created: CreatedWebhook = s
        .mutate_answer(StatusCode::CREATED, move |tx, _| {
            Box::pin(async move { ops::create_webhook(tx, &p, new, max, now()).await })
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(ListParams),
    responses((status = 200, body = ListResponse<WebhookResponse>)), security(("api_key" = [])))]
pub(super) async fn list_webhooks(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<ListResponse<WebhookResponse>>, ApiError> {
    let page = q.page("wh")?;
    let page = s
        .store
        .read(move |tx| Box::pin(async move { tx.list_webhooks(&p.workspace_id, &page).await }))
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |w| w.id.clone(),
        WebhookResponse::from,
    )))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = WebhookResponse), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn get_webhook(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookResponse>, ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let w = s
        .store
        .read(move |tx| Box::pin(async move { ops::webhook(tx, &p, &id).await }))
        .await?;
    Ok(axum::Json(w.into()))
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    responses((status = 200, body = WebhookResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn update_webhook(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<UpdateWebhook>,
) -> Result<axum::Json<WebhookResponse>, ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    let patch = WebhookPatch {
        url: body
            .url
            .as_deref()
            .map(|u| EndpointUrl::parse(u, &s.config.target_policy()))
            .transpose()?,
        events: body
            .events
            .as_deref()
            .map(EventFilter::parse_subscription)
            .transpose()?,
        description: body.description.map(description).transpose()?,
        project_ids: body.project_ids.map(project_ids).transpose()?,
        enabled: body.enabled,
        max_in_flight: body
            .max_in_flight
            .map(|n| {
                n.map(|n| max_in_flight(n, s.config.max_in_flight_per_endpoint))
                    .transpose()
            })
            .transpose()?,
        rate_limit_per_second: body
            .rate_limit_per_second
            .map(|n| n.map(rate_limit).transpose())
            .transpose()?,
        headers: body.headers.map(headers).transpose()?,
        ordering: body
            .ordering
            .as_deref()
            .map(DeliveryOrder::parse)
            .transpose()?,
        expires_at: body
            .expires_at
            .map(|at| at.as_deref().map(expires_at).transpose())
            .transpose()?,
    };
    let w = s
        .mutate(move |tx, after| {
            Box::pin(async move { ops::update_webhook(tx, &p, &id, patch, now(), after).await })
        })
        .await?;
    Ok(axum::Json(w.into()))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn delete_webhook(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id("wh", &id, "webhook")?;
    s.mutate(move |tx, after| {
        Box::pin(async move { ops::delete_webhook(tx, &p, &id, now(), after).await })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
