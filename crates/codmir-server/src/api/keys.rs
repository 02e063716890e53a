//! `GET /v1/api-keys` and `DELETE /v1/api-keys/{id}`: the workspace's keys (never a secret),
//! and revocation that this node honours at once (it drops the key from its cache); other
//! nodes refuse the key within the cache's 5 s.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use codmir_core::time::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, now};
use crate::ops;
use crate::store::KeyInfo;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApiKeyResponse {
    /// The key's public part: `cmk_<id>_…`.
    pub id: String,
    pub user: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<KeyInfo> for ApiKeyResponse {
    fn from(k: KeyInfo) -> Self {
        Self {
            id: k.id,
            user: k.user,
            created_at: k.created_at.to_rfc3339_seconds(),
            last_used_at: k.last_used_at.map(Timestamp::to_rfc3339_seconds),
            revoked_at: k.revoked_at.map(Timestamp::to_rfc3339_seconds),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApiKeyList {
    pub data: Vec<ApiKeyResponse>,
}

/// The workspace's API keys, revoked ones included, oldest first.
#[utoipa::path(get, path = "/v1/api-keys", tag = "keys",
    responses((status = 200, body = ApiKeyList), (status = 401, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_keys(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> Result<axum::Json<ApiKeyList>, ApiError> {
    let keys = s
        .store
        .read(move |tx| Box::pin(async move { ops::workspace_keys(tx, &p).await }))
        .await?;
    Ok(axum::Json(ApiKeyList {
        data: keys.into_iter().map(ApiKeyResponse::from).collect(),
    }))
}

/// Revokes one of the workspace's keys: refused at once by this node, within 5 s by others.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "keys",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn revoke_key(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key_id = id.clone();
    s.store
        .write(move |tx| {
            Box::pin(async move { ops::revoke_workspace_key(tx, &p, &key_id, now()).await })
        })
        .await?;
    s.keys.evict(&id);
    Ok(StatusCode::NO_CONTENT)
}
