//! `Idempotency-Key` on every POST, as Stripe's API has it: a retry with the same key and the
//! same request within 24 hours gets the first answer again (with `Idempotent-Replayed:
//! true`) and the work is not done twice; the same key with another request is a 422; a retry
//! while the first still runs is a 409. Only successes are kept: after a refusal (4xx) or a
//! failure (5xx) the key is free again, for the corrected request or a real retry. Keys are
//! per workspace, and an answer is replayed only to the API key that made the request (the
//! key is part of the request's fingerprint): another key of the workspace gets a 422.
//!
//! Once its key is claimed, a request runs to its end in a task of the server's own
//! (`AppState::tasks`), whatever becomes of the request: one past the API's time bound, or
//! whose client went away, is dropped, but its work still finishes and its answer is kept
//! (or, on a 5xx or a panic, its key is released), so a retry gets that answer or runs the
//! request again — never a key stuck "in progress", never the work done twice.
//!
//! Each claim has a token of its own ([`Claim`], in scope while the request runs). A handler
//! that writes through [`AppState::mutate_answer`] (or `mutate_checked_answer`) keeps its answer
//! **in the transaction of its work**, under that token: the work and its answer commit
//! together or not at all. So a claim left without an answer (its node died, its database
//! crashed or the connection dropped during the commit) did nothing under the key; after
//! `Config::idempotency_takeover` (60 s) a retry takes it over with a new token and runs the request afresh, and
//! the old request, should it still commit, is refused by the token. A retry never meets a
//! 409 for longer than that bound, and never makes the work twice. A failed request (5xx)
//! releases its claim only while it has no answer: one whose commit did take, although its
//! client was told otherwise, keeps its answer for the retry. (Handlers that do not keep their
//! answer in their unit, the test ping, store it after, in a write of its own, as before.)

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codmir_core::time::Timestamp;
use futures_util::FutureExt;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, MAX_BODY};
use crate::store::StoreError;

/// How long a key's first answer is kept.
const KEPT: Duration = Duration::from_secs(24 * 3600);
/// Longest key accepted.
const MAX_KEY: usize = 255;
/// Largest answer kept (creates answer with a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// A claim of an `Idempotency-Key` by the request running now: in scope (task-local) while its
/// handler runs, so that its unit of work keeps the answer under `token`.
#[derive(Clone)]
pub(crate) struct Claim {
    pub(crate) ws: String,
    pub(crate) key: String,
    pub(crate) token: String,
    /// Set once the answer committed with the work.
    pub(crate) answered: Arc<AtomicBool>,
}

tokio::task_local! {
    static CLAIM: Claim;
}

/// The claim of the request running in this task, if it has one.
pub(crate) fn current() -> Option<Claim> {
    CLAIM.try_with(Claim::clone).ok()
}

/// Runs the request, or answers it from what its key already holds.
pub(super) async fn idempotency(state: AppState, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get("idempotency-key").cloned() else {
        return next.run(request).await;
    };
    match replay_or_run(state, key, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn replay_or_run(
    state: AppState,
    key: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1–{MAX_KEY} printable ASCII characters"),
            )
            .into_response()
        })?;
    let (mut parts, body) = request.into_parts();
    let Auth(principal) = Auth::from_request_parts(&mut parts, &state)
        .await
        .map_err(IntoResponse::into_response)?;
    super::extract::refuse_oversized(&parts.headers).map_err(IntoResponse::into_response)?;
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY).into_response())?;
    let mut hash = Sha256::new();
    hash.update(parts.method.as_str());
    hash.update([0]);
    hash.update(parts.uri.to_string());
    hash.update([0]);
    hash.update(&body);
    // The API key is part of the request: an answer (which may show a secret) is replayed
    // only to the key that made it, not to another key of the workspace.
    hash.update([0]);
    if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        hash.update(auth.as_bytes());
    }
    let fingerprint: [u8; 32] = hash.finalize().into();

    let now = Timestamp::now();
    let expired_before = Timestamp::from_millis(now.as_millis() - KEPT.as_millis() as i64);
    let takeover = state.config.idempotency_takeover;
    let stale_before = Timestamp::from_millis(now.as_millis() - takeover.as_millis() as i64);
    let claim = Claim {
        ws: principal.workspace_id.clone(),
        key: key.clone(),
        token: codmir_core::id::new_id("clm", now),
        answered: Arc::default(),
    };
    let (ws, k, token) = (claim.ws.clone(), key.clone(), claim.token.clone());
    let claimed = state
        .store
        .write(move |tx| {
            Box::pin(async move {
                tx.idempotency_claim(
                    &ws,
                    &k,
                    &fingerprint,
                    &token,
                    now,
                    expired_before,
                    stale_before,
                )
                .await
            })
        })
        .await;
    let in_progress = || {
        ApiError::Conflict {
            code: "idempotency_key_in_progress",
            message: format!(
                "a request with this Idempotency-Key is still being answered; retry shortly (a \
                 request that never finishes is taken over by a retry after {} s)",
                takeover.as_secs()
            ),
        }
        .into_response()
    };
    match claimed {
        Ok(None) => {}
        Ok(Some(earlier)) if earlier.fingerprint != fingerprint => {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "this key was used with another request; use a new key for a new request",
            )
            .into_response());
        }
        Ok(Some(earlier)) => {
            let Some(status) = earlier.status else {
                return Err(in_progress());
            };
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                earlier.body.unwrap_or_default(),
            )
                .into_response();
            let headers = response.headers_mut();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        Err(StoreError::Conflict(_)) => return Err(in_progress()),
        Err(e) => return Err(ApiError::from(e).into_response()),
    }

    let request = Request::from_parts(parts, Body::from(body));
    // The request's task runs on under the request's deadline, set by the claim.
    let deadline = crate::store::deadline::current();
    let settled = state.tasks.clone().spawn(crate::store::deadline::scope(
        Some(deadline),
        settle(state, claim, next, request),
    ));
    settled.await.map_err(|e| {
        ApiError::internal(format!("the request's task did not finish: {e}")).into_response()
    })
}

/// Frees a claimed key that has no answer, for a retry to run the request again.
async fn release(
    store: &crate::store::Store,
    ws: &str,
    key: &str,
    token: &str,
) -> Result<(), StoreError> {
    let (ws, key, token) = (ws.to_owned(), key.to_owned(), token.to_owned());
    store
        .write(move |tx| Box::pin(async move { tx.idempotency_release(&ws, &key, &token).await }))
        .await
}

/// Runs a request whose key is claimed and settles the key: keeps the answer (unless its unit
/// of work kept it already, with the work), or releases the key when the request failed (5xx)
/// or its handler panicked and no answer was kept.
async fn settle(state: AppState, claim: Claim, next: Next, request: Request) -> Response {
    let ran = AssertUnwindSafe(CLAIM.scope(claim.clone(), next.run(request)))
        .catch_unwind()
        .await;
    let Claim {
        ws,
        key,
        token,
        answered,
    } = claim;
    // Only what was done is kept: a refusal (4xx) changed nothing, so the key is free for the
    // corrected request; a failure (5xx, a panic) may be retried for real.
    let response = match ran {
        Ok(response) if response.status().is_success() => response,
        failed => {
            // Within the request's deadline; if the database did not take it by then (it was
            // unreachable), once more in a task of its own, with a deadline of its own, which
            // the answer does not wait for.
            let store = state.store.clone();
            if release(&store, &ws, &key, &token).await.is_err() {
                state.tasks.spawn(async move {
                    if let Err(e) = release(&store, &ws, &key, &token).await {
                        tracing::warn!(error = %crate::store::chain(&e), "could not release an idempotency key; a retry takes it over after the bound");
                    }
                });
            }
            return failed
                .unwrap_or_else(|_| ApiError::internal("a handler panicked").into_response());
        }
    };
    if answered.load(Ordering::Acquire) {
        return response;
    }
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ANSWER)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let code = status.as_u16();
    let stored = state
        .store
        .write(move |tx| {
            Box::pin(async move { tx.idempotency_finish(&ws, &key, &token, code, &text).await })
        })
        .await;
    match stored {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("an idempotent answer was not kept: its key was taken over by a retry")
        }
        Err(e) => {
            tracing::warn!(error = %crate::store::chain(&e), "could not keep an idempotent answer")
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}
