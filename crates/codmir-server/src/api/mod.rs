//! The HTTP API: routing, wire types, authentication and errors.
//!
//! Architecture invariant: only this module knows HTTP on the way in; handlers parse the
//! request into validated domain values, run one unit of work from [`crate::ops`] through the
//! store, and convert the result to a wire type. Every write runs through
//! [`AppState::mutate`], the only caller of the delivery engine from here (`state.rs`, where
//! the engine is a private field).

mod dashboard;
mod deliveries;
mod error;
mod events;
mod extract;
mod idempotency;
mod keys;
mod limit;
mod probes;
mod recovery;
mod schema;
mod state;
mod stats;
mod tracker;
mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use error::{ApiError, ErrorBody, ErrorDetail, MAX_URI};
pub use state::AppState;

use crate::store::Page;

/// The page shape of every list: `{"data": [...], "has_more", "next_cursor"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    pub fn from_page<R>(
        page: Page<R>,
        id: impl Fn(&R) -> String,
        convert: impl Fn(R) -> T,
    ) -> Self {
        let next_cursor = if page.has_more {
            page.items.last().map(&id)
        } else {
            None
        };
        Self {
            data: page.items.into_iter().map(convert).collect(),
            has_more: page.has_more,
            next_cursor,
        }
    }
}

struct BearerAuth;

/// The answers every operation can give besides its own, in the JSON error shape, so that a
/// client (or a schema checker) finds each status it may meet documented: 401 and 429 where a
/// key is needed, 400/408/413/415/422 where a body is read, 404 where a path names a thing,
/// 500 and 503 (with Retry-After) everywhere, 507 where something is written.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder, Responses};
        fn add(responses: &mut Responses, code: &str, description: &str) {
            responses.responses.entry(code.into()).or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                        )
                        .build(),
                )
            });
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names_a_thing = path.contains('{');
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.patch, true),
                (&mut item.put, true),
                (&mut item.delete, true),
            ];
            for (op, writes) in operations {
                let Some(op) = op else { continue };
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let body = op.request_body.is_some();
                let r = &mut op.responses;
                if secured {
                    add(r, "401", "No API key, or one that is unknown or revoked.");
                    add(r, "429", "Past the key's rate limit; see Retry-After.");
                }
                if body {
                    add(r, "400", "The body is not valid JSON.");
                    add(r, "408", "The body did not arrive within 10 s.");
                    add(r, "413", "The body is over 1 MiB.");
                    add(r, "415", "The body is not application/json.");
                    add(
                        r,
                        "422",
                        "A field is missing, unknown or invalid (it is named).",
                    );
                }
                if names_a_thing {
                    add(r, "404", "No such thing in the caller's workspace.");
                }
                if secured && !body {
                    add(
                        r,
                        "422",
                        "A query parameter or path id is invalid (it is named).",
                    );
                }
                add(
                    r,
                    "500",
                    "Internal error (logged with its cause; the body says nothing internal).",
                );
                add(
                    r,
                    "503",
                    "Shutting down, or the database is unreachable; see Retry-After.",
                );
                if writes {
                    add(r, "507", "The database's disk is full; nothing was stored.");
                }
            }
        }
    }
}

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "codmir", description = "The codmir tracker and webhooks API. Request bodies are \
        `application/json`, at most 1 MiB, nested at most 128 levels; request URIs at most 8 KiB; \
        request heads at most 64 KiB and 100 headers. Every error has the `ErrorBody` shape."),
    paths(
        health, probes::readyz,
        tracker::create_project, tracker::list_projects, tracker::get_project,
        tracker::add_member, tracker::list_members,
        tracker::create_ticket, tracker::list_tickets, tracker::get_ticket,
        tracker::update_ticket, tracker::delete_ticket, tracker::create_comment,
        tracker::list_comments, tracker::me,
        events::list_events, events::get_event, events::event_types,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook,
        webhooks::update_webhook, webhooks::delete_webhook, deliveries::list_deliveries,
        deliveries::get_delivery, deliveries::list_workspace_deliveries, recovery::redeliver, recovery::skip,
        recovery::retry_pending, recovery::ping, recovery::replay, recovery::rotate_secret,
        stats::webhook_stats, stats::webhooks_health, keys::list_keys, keys::revoke_key,
    ),
    modifiers(&BearerAuth, &CommonErrors),
)]
pub struct ApiDoc;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Answers 200 while the server is serving.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on this route"))
}

/// `GET /metrics` and the probes, for `--metrics-listen`: its own listener, so the probes
/// answer there even while the API's connections are at their bound.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(probes::metrics))
        .route("/healthz", get(health))
        .route("/readyz", get(probes::readyz))
        .fallback(not_found)
        .with_state(state)
}

/// The API; with `with_metrics`, `GET /metrics` too (left out when it has a listener of its
/// own, [`metrics_router`]).
pub fn router(state: AppState, with_metrics: bool) -> Router {
    use axum::routing::post;
    let routes = if with_metrics {
        Router::new().route("/metrics", get(probes::metrics))
    } else {
        Router::new()
    };
    routes
        .route("/", get(dashboard::index))
        .route("/dashboard/{name}", get(dashboard::asset))
        .route("/healthz", get(health))
        .route("/readyz", get(probes::readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/event-types", get(events::event_types))
        .route("/v1/events", get(events::list_events))
        .route("/v1/events/{id}", get(events::get_event))
        .route(
            "/v1/projects",
            post(tracker::create_project).get(tracker::list_projects),
        )
        .route("/v1/projects/{id}", get(tracker::get_project))
        .route(
            "/v1/projects/{id}/members",
            post(tracker::add_member).get(tracker::list_members),
        )
        .route(
            "/v1/projects/{id}/tickets",
            post(tracker::create_ticket).get(tracker::list_tickets),
        )
        .route(
            "/v1/tickets/{id}",
            get(tracker::get_ticket)
                .patch(tracker::update_ticket)
                .delete(tracker::delete_ticket),
        )
        .route(
            "/v1/tickets/{id}/comments",
            post(tracker::create_comment).get(tracker::list_comments),
        )
        .route("/v1/me", get(tracker::me))
        .route("/v1/api-keys", get(keys::list_keys))
        .route("/v1/api-keys/{id}", axum::routing::delete(keys::revoke_key))
        .route(
            "/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get_webhook)
                .patch(webhooks::update_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(deliveries::list_deliveries),
        )
        .route("/v1/deliveries", get(deliveries::list_workspace_deliveries))
        .route("/v1/deliveries/{id}/redeliver", post(recovery::redeliver))
        .route("/v1/deliveries/{id}/skip", post(recovery::skip))
        .route(
            "/v1/webhooks/{id}/retry-pending",
            post(recovery::retry_pending),
        )
        .route("/v1/webhooks/{id}/ping", post(recovery::ping))
        .route("/v1/webhooks/{id}/stats", get(stats::webhook_stats))
        .route("/v1/webhooks/health", get(stats::webhooks_health))
        .route("/v1/webhooks/{id}/replay", post(recovery::replay))
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            post(recovery::rotate_secret),
        )
        .route("/v1/deliveries/{id}", get(deliveries::get_delivery))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            probes::per_route,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("a handler panicked"))
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.config.api_timeout,
            error::edge,
        ))
        .with_state(state)
}
