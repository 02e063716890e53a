//! Routes of the event log and the event catalog.

use axum::extract::{Path, State};
use codmir_core::event::{EventType, example};
use codmir_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Query, path_id};
use crate::ops;
use crate::store::{EventQuery, StoreError, StoredEvent};

/// An event type or pattern from a query string (`type=ticket.*`), checked as webhooks'
/// patterns are.
pub(super) fn type_pattern(raw: &str) -> Result<String, ApiError> {
    codmir_core::webhook::EventFilter::parse(&[raw])
        .map(|_| raw.to_owned())
        .map_err(|e| ApiError::invalid("type", e.message))
}

/// An optional RFC 3339 time from a query string.
pub(super) fn time_param(
    raw: Option<&str>,
    field: &'static str,
) -> Result<Option<codmir_core::time::Timestamp>, ApiError> {
    raw.map(|r| codmir_core::time::Timestamp::parse_rfc3339(r, field))
        .transpose()
        .map_err(ApiError::from)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventListParams {
    /// Only events of this type or pattern, as webhooks take them: `ticket.created`,
    /// `ticket.*` or `*`.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<super::schema::EventPattern>, inline)]
    pub event_type: Option<String>,
    /// Only events of this project.
    pub project_id: Option<String>,
    /// Only events created at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only events created before this RFC 3339 time.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// `desc` (newest first, the default) or `asc` (oldest first, to read the log forward).
    #[param(value_type = Option<super::schema::OrderName>, inline)]
    pub order: Option<String>,
    /// Items per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of events, each exactly as it is delivered.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventList {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Box<RawValue>>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

fn raw(e: &StoredEvent) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(e.payload.clone())
        .map_err(|err| StoreError::Corrupt(format!("events.payload of {}: {err}", e.id)).into())
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventListParams),
    responses((status = 200, body = EventList), (status = 422, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_events(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<EventListParams>,
) -> Result<axum::Json<EventList>, ApiError> {
    let query = EventQuery {
        event_type: q.event_type.as_deref().map(type_pattern).transpose()?,
        project_id: q
            .project_id
            .map(|id| {
                if codmir_core::id::is_valid("proj", &id) {
                    Ok(id)
                } else {
                    Err(ApiError::invalid(
                        "project_id",
                        format!("`{id}` is not a project id (proj_…)"),
                    ))
                }
            })
            .transpose()?,
        since: time_param(q.since.as_deref(), "since")?,
        until: time_param(q.until.as_deref(), "until")?,
        ascending: match q.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "order",
                    format!("`{other}` is not one of: asc, desc"),
                ));
            }
        },
    };
    let page = super::extract::ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page("evt")?;
    let page = s
        .store
        .read(move |tx| {
            Box::pin(async move { tx.list_events(&p.workspace_id, &query, &page).await })
        })
        .await
        .map_err(ApiError::from)?;
    let next_cursor = if page.has_more {
        page.items.last().map(|e| e.id.clone())
    } else {
        None
    };
    let data = page.items.iter().map(raw).collect::<Result<_, _>>()?;
    Ok(axum::Json(EventList {
        data,
        has_more: page.has_more,
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    responses((status = 200, description = "The event exactly as delivered", body = Object), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn get_event(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<axum::Json<Box<RawValue>>, ApiError> {
    let id = path_id("evt", &id, "event")?;
    let event = s
        .store
        .read(move |tx| {
            Box::pin(async move {
                tx.get_event(&p.workspace_id, &id)
                    .await?
                    .ok_or(ops::Error::NotFound("event"))
            })
        })
        .await?;
    Ok(axum::Json(raw(&event)?))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventTypeInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// Whether a webhook can list it in its `events`: false for `webhook.ping`, which goes
    /// only to the webhook a ping tests.
    pub subscribable: bool,
    /// The JSON Schema (draft 2020-12) of the whole event, generated from the
    /// `codmir-webhook` crate's types.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
    /// An example, made now with fresh ids.
    #[schema(value_type = Object)]
    pub example: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventTypeList {
    pub data: Vec<EventTypeInfo>,
}

/// The catalog of event types, with the JSON Schema and an example payload of each.
#[utoipa::path(get, path = "/v1/event-types", tag = "events", responses((status = 200, body = EventTypeList)),
    security(("api_key" = [])))]
pub(super) async fn event_types(_caller: Auth) -> axum::Json<EventTypeList> {
    let now = Timestamp::now();
    let data = EventType::ALL
        .into_iter()
        .map(|t| EventTypeInfo {
            name: t.as_str(),
            description: t.description(),
            subscribable: t.subscribable(),
            // Every type has one: a unit test checks the crate knows each of ours.
            schema: codmir_webhook::schema(t.as_str()).unwrap_or_default(),
            example: example(t, now),
        })
        .collect();
    axum::Json(EventTypeList { data })
}
