//! The API's one error type and its one mapping to HTTP: every error is a JSON body
//! `{"error": {"code", "message", "field"?}}`. A 5xx says nothing internal; its cause rides
//! on the response to [`edge`], the layer that logs it once with its cause chain.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use codmir_core::ValidationError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ops;
use crate::store::{Cause, StoreError, chain};

/// `Retry-After` (seconds) of a 503: a restart or a failover takes seconds.
const RETRY_UNAVAILABLE: u64 = 2;
/// `Retry-After` of a 507: freeing space takes an operator.
const RETRY_FULL: u64 = 30;
/// Retry-After of a 429 for the pending-delivery quota, in seconds.
const RETRY_QUOTA: u64 = 60;

/// The longest request URI (path and query) the API reads: far above any route's need, far
/// below what hyper would buffer, so a long one gets our JSON 414 rather than hyper's own.
pub const MAX_URI: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Unprocessable {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body did not arrive within {0} seconds")]
    RequestTimeout(u64),
    #[error("the request's URI is {0} bytes; the server takes at most {MAX_URI} bytes")]
    UriTooLong(usize),
    #[error("too many requests with this API key; retry in {0} s")]
    RateLimited(u64),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("the server is shutting down or overloaded; retry later")]
    Unavailable,
    #[error(
        "the database cannot be reached; retry in a few seconds (a create retried with the same \
         Idempotency-Key is made once)"
    )]
    DatabaseUnreachable(#[source] Cause),
    #[error(
        "another write committed together with this request failed, so nothing of this request \
         was stored; retry (a create retried with the same Idempotency-Key is made once)"
    )]
    RolledBack(#[source] Cause),
    #[error(
        "the connection to the database was lost while this change was being committed: it may \
         or may not be stored. Retry with the same Idempotency-Key (you get its answer if it was \
         stored, or it is made once if not); without a key, read before retrying"
    )]
    OutcomeUnknown(#[source] Cause),
    #[error("the database's disk is full; nothing was stored (free space, then retry)")]
    InsufficientStorage(#[source] Cause),
    #[error("internal error")]
    Internal(#[source] Cause),
}

/// The cause of a 5xx, carried from [`ApiError::into_response`] to [`edge`] in the
/// response's extensions (never in its body).
#[derive(Clone)]
struct Failure(Option<Cause>);

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `validation_failed` or `not_found`.
    pub code: &'static str,
    /// What went wrong and how to fix it, for people.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// A 500 whose cause is only a message of ours.
    pub fn internal(message: impl Into<String>) -> Self {
        let cause: Box<dyn std::error::Error + Send + Sync> = message.into().into();
        ApiError::Internal(Arc::from(cause))
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::Unprocessable { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "pending_quota_exceeded"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::DatabaseUnreachable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            ApiError::RolledBack(_) => (StatusCode::SERVICE_UNAVAILABLE, "rolled_back"),
            ApiError::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            ApiError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let failure = match &self {
            ApiError::Internal(cause)
            | ApiError::DatabaseUnreachable(cause)
            | ApiError::RolledBack(cause)
            | ApiError::OutcomeUnknown(cause)
            | ApiError::InsufficientStorage(cause) => Some(Failure(Some(cause.clone()))),
            ApiError::Unavailable => Some(Failure(None)),
            _ => None,
        };
        let field = match &self {
            ApiError::Unprocessable { field, .. } => field.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                field,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match &self {
            ApiError::RateLimited(secs) => Some(*secs),
            // Deliveries end at the endpoints' pace: a minute is a guess worth waiting.
            ApiError::QuotaExceeded(_) => Some(RETRY_QUOTA),
            // A node restarting, a database failing over: seconds, usually.
            ApiError::Unavailable
            | ApiError::DatabaseUnreachable(_)
            | ApiError::OutcomeUnknown(_) => Some(RETRY_UNAVAILABLE),
            // A neighbour's failure: running it again now is expected to succeed.
            ApiError::RolledBack(_) => Some(1),
            ApiError::InsufficientStorage(_) => Some(RETRY_FULL),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: say which scheme the API takes.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"codmir\""),
            );
        }
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

/// Logs every 5xx once, with its cause chain: `error` for a 500, `warn` for a 503 (shutting
/// down, overloaded, a request over its time limit).
fn log_failure(method: &axum::http::Method, path: &str, response: &mut Response) {
    let status = response.status();
    if status.is_server_error() {
        let cause = response
            .extensions_mut()
            .remove::<Failure>()
            .and_then(|f| f.0)
            .map(|c| chain(&*c));
        let cause = cause.as_deref().unwrap_or("-");
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%method, %path, status = status.as_u16(), cause, "request failed");
        } else {
            tracing::warn!(%method, %path, status = status.as_u16(), cause, "request not served");
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => ApiError::Unavailable,
            StoreError::Unreachable { .. } => ApiError::DatabaseUnreachable(Arc::new(e)),
            StoreError::OutcomeUnknown { .. } => ApiError::OutcomeUnknown(Arc::new(e)),
            StoreError::RolledBack { .. } => ApiError::RolledBack(Arc::new(e)),
            StoreError::Full(_) => ApiError::InsufficientStorage(Arc::new(e)),
            StoreError::Conflict(_) => ApiError::Conflict {
                code: "conflict",
                message: "a concurrent request changed the same thing; retry".into(),
            },
            other => ApiError::Internal(Arc::new(other)),
        }
    }
}

impl From<ops::Error> for ApiError {
    fn from(e: ops::Error) -> Self {
        match e {
            ops::Error::NotFound(what) => ApiError::NotFound(what),
            ops::Error::Invalid(v) => v.into(),
            ops::Error::Conflict { code, message } => ApiError::Conflict { code, message },
            e @ ops::Error::QuotaExceeded { .. } => ApiError::QuotaExceeded(e.to_string()),
            ops::Error::Store(s) => s.into(),
        }
    }
}

/// What every request gets at the edge, in one layer (each `from_fn` layer clones the inner
/// service and boxes a future per request): the URI bound, the time bound (a request past
/// `Config::api_timeout` is answered 503), the log line of a 5xx ([`log_failure`]), and
/// the API's JSON shape for every error, also those made below our handlers
/// ([`json_shaped`]). Panics are caught inside it, so their 500 is logged and shaped too.
pub(super) async fn edge(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI {
        return ApiError::UriTooLong(uri_len).into_response();
    }
    // `Uri` and `Method` clone by reference count: nothing is copied unless a 5xx is logged.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    // One deadline for the request's database work (`store::deadline`), whatever it waits for.
    let run = crate::store::deadline::scope(None, next.run(request));
    let mut response = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| ApiError::Unavailable.into_response());
    log_failure(&method, uri.path(), &mut response);
    let mut response = json_shaped(response).await;
    // No answer is to be read as anything but its declared type.
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// A 4xx or 5xx whose body is not JSON (a path that does not percent-decode, another
/// extractor's rejection) answered again as `{"error": {"code", "message"}}`, its text as
/// the message.
async fn json_shaped(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "validation_failed",
        429 => "rate_limited",
        431 => "headers_too_large",
        500..=599 => "internal_error",
        _ => "error",
    };
    let message = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message,
            field: None,
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_spoiled_by_a_neighbour_is_a_503_that_says_so_and_when_to_retry() {
        let spoiled = StoreError::RolledBack {
            context: "a unit of work sharing the commit failed while writing".into(),
        };
        assert!(spoiled.is_transient());
        let response = ApiError::from(spoiled).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "rolled_back");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("nothing of this request was stored"),
            "{message}"
        );
        assert!(
            !message.contains("unit of work"),
            "nothing internal: {message}"
        );
    }
}
