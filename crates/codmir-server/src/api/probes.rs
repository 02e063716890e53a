//! What operators and orchestrators ask the server: readiness, Prometheus metrics, and the
//! layer that counts every API request by route template.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use codmir_core::time::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store::StoreError;
use crate::telemetry::{self, QueueGauges};

/// How long readiness waits for the database before it says no.
const READY_WAIT: Duration = Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// `ok` or `unreachable`: a read answers.
    pub database: &'static str,
    /// `ok`, `disk_full` or `failing`: a write (this node's readiness row) commits.
    pub writes: &'static str,
    pub engine: &'static str,
    /// Why the node is not ready, for a person; left out when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// 200 while the database answers a read and commits a write and the delivery engine runs,
/// 503 otherwise (unlike `/healthz`, which only says the process serves). The write (one row
/// per node) is what makes a node whose database's disk is full unready: every write there is
/// a 507, so a load balancer should send writes elsewhere until one commits again.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub(super) async fn readyz(State(s): State<AppState>) -> (StatusCode, axum::Json<Readiness>) {
    let read = s
        .store
        .read(|tx| Box::pin(async move { tx.workspace_count().await }));
    let database = matches!(tokio::time::timeout(READY_WAIT, read).await, Ok(Ok(_)));
    let (node, now) = (s.node().to_owned(), Timestamp::now());
    let write = s
        .store
        .write(move |tx| Box::pin(async move { tx.mark_ready(&node, now).await }));
    let written = match tokio::time::timeout(READY_WAIT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    };
    let engine = s.engine_running();
    let ready = database && written.is_ok() && engine;
    let reason = if ready {
        None
    } else if !database {
        Some("the database does not answer a read".to_owned())
    } else if let Err(failed) = &written {
        Some(match failed {
            Some(StoreError::Full(_)) => {
                "the database's disk is full: writes are refused (507) until space is freed".into()
            }
            Some(e) => format!("a write does not commit: {}", crate::store::chain(e)),
            None => format!("a write did not commit within {READY_WAIT:?}"),
        })
    } else {
        Some("the delivery engine has stopped".to_owned())
    };
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database: if database { "ok" } else { "unreachable" },
        writes: match &written {
            Ok(()) => "ok",
            Err(Some(StoreError::Full(_))) => "disk_full",
            Err(_) => "failing",
        },
        engine: if engine { "running" } else { "stopped" },
        reason,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Every metric in the Prometheus text format. The queue's figures are read from the
/// database at each scrape (left at zero when it does not answer).
pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let now = Timestamp::now();
    let read = s
        .store
        .read(move |tx| Box::pin(async move { tx.queue_gauges(now).await }));
    let age = |t: Option<Timestamp>| {
        t.map_or(Duration::ZERO, |t| {
            Duration::from_millis((now.as_millis() - t.as_millis()).max(0) as u64)
        })
    };
    let gauges = match tokio::time::timeout(READY_WAIT, read).await {
        Ok(Ok(q)) => QueueGauges {
            pending: q.pending.max(0) as u64,
            due: q.due.max(0) as u64,
            oldest_due_age: age(q.oldest_due),
            disabled_webhooks: q.disabled_webhooks.max(0) as u64,
            waiting_chains: q.waiting_chains.max(0) as u64,
            oldest_waiting_age: age(q.oldest_waiting),
        },
        Ok(Err::<_, StoreError>(_)) | Err(_) => QueueGauges::default(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(gauges),
    )
        .into_response()
}

/// The layer of every route: counts each request by its route template (`/v1/webhooks/{id}`,
/// never the id itself), method and status, and times it, around `Idempotency-Key` handling.
/// One `from_fn` layer rather than one each: a layer clones the service below it and boxes a
/// future per request.
pub(super) async fn per_route(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route: std::sync::Arc<str> = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .into();
    let method = request.method().clone();
    let began = Instant::now();
    let response = super::idempotency::idempotency(state, request, next).await;
    telemetry::request(
        route,
        method.as_str(),
        response.status().as_u16(),
        began.elapsed(),
    );
    response
}
