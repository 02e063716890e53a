//! Our own extractors, so that every rejection — a malformed body, a bad query string, a
//! missing key — answers with the API's JSON error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use codmir_core::time::Timestamp;
use codmir_core::tracker::Principal;
use serde::de::DeserializeOwned;
use sha2::Digest;

use super::AppState;
use super::error::ApiError;
use crate::ops;
use crate::store::PageRequest;

/// The largest request body accepted.
pub(super) const MAX_BODY: usize = 1 << 20;

/// How long a request body may take to arrive in full (a 408 after that).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON request body. Malformed JSON is a 400; a well-formed body with unknown fields,
/// missing fields or values of the wrong type is a 422 naming the field.
pub(super) struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Some(ct) = req.headers().get(CONTENT_TYPE) else {
            return Err(ApiError::UnsupportedMediaType(
                "no Content-Type: send the body as application/json".into(),
            ));
        };
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{essence}` is not supported; send application/json"
            )));
        }
        refuse_oversized(req.headers())?;
        // A body that trickles in holds a connection and a task: it gets a deadline.
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::RequestTimeout(BODY_READ_TIMEOUT.as_secs()))?;
        let bytes = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(MAX_BODY)
            } else {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// A body declared larger than [`MAX_BODY`] is refused before any of it is read, rather than
/// waited for.
pub(super) fn refuse_oversized(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY as u64 => Err(ApiError::PayloadTooLarge(MAX_BODY)),
        _ => Ok(()),
    }
}

/// Every request body of the API is a JSON object. serde would also read a struct from an
/// array of its fields in order (`[null, null]`), which no client means: refused.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::Unprocessable {
            field: None,
            message: "the request body must be a JSON object, not an array".into(),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = (path != ".").then_some(path);
                ApiError::Unprocessable {
                    field,
                    message: inner.to_string(),
                }
            }
            _ => ApiError::BadRequest(format!("the request body is not valid JSON: {inner}")),
        }
    })?;
    Ok(value)
}

/// For PATCH bodies: tells a field sent as `null` (`Some(None)`, clear it) from a field left
/// out (`None`, keep it). Use with `#[serde(default, deserialize_with = "present")]`.
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

/// A query string, parsed strictly: a bad value is a 422 naming the parameter.
pub(super) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::Unprocessable {
                    field: (path != ".").then_some(path),
                    message: format!("invalid query string: {}", e.into_inner()),
                }
            })
    }
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Items per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub(super) const DEFAULT_LIMIT: u32 = 20;
pub(super) const MAX_LIMIT: u32 = 100;

impl ListParams {
    /// Validates the page size and that the cursor is an id of the listed kind.
    pub(super) fn page(&self, id_prefix: &str) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        if let Some(c) = &self.cursor
            && !codmir_core::id::is_valid(id_prefix, c)
        {
            return Err(ApiError::invalid(
                "cursor",
                "is not a cursor from this list's next_cursor",
            ));
        }
        Ok(PageRequest {
            limit,
            after: self.cursor.clone(),
        })
    }
}

/// Keys recently seen valid, by the SHA-256 of the whole presented key, so that most requests
/// skip the database. An entry lives [`KEY_CACHE_TTL`]: that bounds how long a key revoked on
/// the database (`codmir keys revoke`) keeps working on a node. Each fill also records the
/// key's use, so `last_used_at` is at most that stale.
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], Cached>>,
}

/// A key seen valid: who it acts as, when it was checked, and its id (to evict it by).
struct Cached {
    principal: Principal,
    at: std::time::Instant,
    key_id: String,
}

pub(super) const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);
const KEY_CACHE_MAX: usize = 10_000;

impl KeyCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Principal> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(digest)
            .filter(|c| c.at.elapsed() < KEY_CACHE_TTL)
            .map(|c| c.principal.clone())
    }

    /// Forgets a key at once (it was revoked through this node).
    pub(super) fn evict(&self, key_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, c| c.key_id != key_id);
    }

    fn put(&self, digest: [u8; 32], principal: Principal, key_id: String) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(
            digest,
            Cached {
                principal,
                at: std::time::Instant::now(),
                key_id,
            },
        );
    }
}

/// The caller, from `Authorization: Bearer <key>`. Once found it is kept in the request's
/// extensions, so that a layer that needed it first (`Idempotency-Key`) and the handler
/// authenticate, and spend a rate-limit token, once.
#[derive(Clone)]
pub(super) struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(known) = parts.extensions.get::<Auth>() {
            return Ok(known.clone());
        }
        let client = client_of(parts);
        let now = std::time::Instant::now();
        let principal = match authenticate(parts, state, client, now).await {
            Ok(p) => p,
            Err(e @ ApiError::Unauthorized(_)) => {
                if let Some(ip) = client {
                    let _ = state.failed_auth.take(&ip, now);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        parts.extensions.insert(Auth(principal.clone()));
        Ok(Auth(principal))
    }
}

/// The client's address as the limits count it ([`crate::listen::client_key`]), when the
/// request came through our listener.
fn client_of(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| crate::listen::client_key(c.0.ip()))
}

/// The principal of the request's key: from the cache, else the database; each call spends a
/// rate-limit token. A client address past its failed authentications is refused (429)
/// before its key is looked up, unless the key is one already known good (in the cache): a
/// guesser is slowed down, its neighbours behind the same address keep working.
async fn authenticate(
    parts: &Parts,
    state: &AppState,
    client: Option<std::net::IpAddr>,
    now: std::time::Instant,
) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing `Authorization: Bearer <API key>` header",
        ))?;
    // The scheme is case-insensitive (RFC 7235).
    let key = header
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <API key>`",
        ))?
        .to_owned();
    let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
    if let Some(principal) = state.keys.get(&digest) {
        limit(state, &digest)?;
        return Ok(principal);
    }
    if let Some(ip) = client {
        state
            .failed_auth
            .peek(&ip, now)
            .map_err(|wait| ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64))?;
    }
    let presented = key.clone();
    let principal = state
        .store
        .read(move |tx| Box::pin(async move { ops::authenticate(tx, &presented).await }))
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::Unauthorized("invalid API key"))?;
    limit(state, &digest)?;
    let key_id = ops::key_id(&key).unwrap_or_default().to_owned();
    state.keys.put(digest, principal.clone(), key_id.clone());
    if !key_id.is_empty() {
        let id = key_id;
        // Off the request's path: the answer does not wait for this write.
        let store = state.store.clone();
        state.tasks.spawn(async move {
            let at = Timestamp::now();
            let touched = store
                .write(move |tx| Box::pin(async move { tx.touch_api_key(&id, at).await }))
                .await;
            if let Err(e) = touched {
                tracing::warn!(error = %crate::store::chain(&e), "could not record an API key's use");
            }
        });
    }
    Ok(principal)
}

/// Spends one of the key's tokens, or answers 429 with when to come back.
fn limit(state: &AppState, digest: &[u8; 32]) -> Result<(), ApiError> {
    match &state.rate_limit {
        Some(limit) => limit
            .take(digest, std::time::Instant::now())
            .map_err(|wait| ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)),
        None => Ok(()),
    }
}

/// Checks that a path id has the shape of an id of its kind; a malformed id cannot exist, so
/// it is a 404 like an unknown one.
pub(super) fn path_id(prefix: &str, id: &str, what: &'static str) -> Result<String, ApiError> {
    if codmir_core::id::is_valid(prefix, id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::NotFound(what))
    }
}

pub(super) fn now() -> Timestamp {
    Timestamp::now()
}
