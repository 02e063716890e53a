//! API keys: creating them (and the workspace and user they act as), the first start's
//! bootstrap, and authenticating a presented key.

use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Principal, User, UserName, Workspace, WorkspaceName};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use codmir_core::ValidationError;

use super::{Error, Result};
use crate::store::{ApiKeyRecord, KeyInfo, Tx};

const KEY_PREFIX: &str = "cmk_";

/// A freshly made API key: shown once, stored only as a hash.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: String,
    pub principal: Principal,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    codmir_core::id::random_bytes(&mut buf);
    hex::encode(buf)
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Creates the workspace and user if missing (found by name) and a new API key for the user.
pub async fn create_key(
    tx: &mut dyn Tx,
    workspace: &WorkspaceName,
    user: &UserName,
    now: Timestamp,
) -> Result<NewKey> {
    let ws = match tx.find_workspace_by_name(workspace.as_str()).await? {
        Some(ws) => ws,
        None => {
            let ws = Workspace {
                id: new_id("ws", now),
                name: workspace.as_str().to_owned(),
                created_at: now,
            };
            tx.insert_workspace(&ws).await?;
            ws
        }
    };
    let user = match tx.find_user_by_name(&ws.id, user.as_str()).await? {
        Some(u) => u,
        None => {
            let u = User {
                id: new_id("usr", now),
                workspace_id: ws.id.clone(),
                name: user.as_str().to_owned(),
                email: None,
                created_at: now,
            };
            tx.insert_user(&u).await?;
            u
        }
    };
    let key_id = random_hex(8);
    let secret = random_hex(32);
    tx.insert_api_key(&ApiKeyRecord {
        id: key_id.clone(),
        workspace_id: ws.id.clone(),
        user_id: user.id.clone(),
        secret_hash: hash_secret(&secret),
        created_at: now,
    })
    .await?;
    Ok(NewKey {
        key: format!("{KEY_PREFIX}{key_id}_{secret}"),
        principal: Principal {
            workspace_id: ws.id,
            user_id: user.id,
            user_name: user.name,
        },
    })
}

/// On an empty database, creates the `default` workspace, an `admin` user and their key.
pub async fn bootstrap(tx: &mut dyn Tx, now: Timestamp) -> Result<Option<NewKey>> {
    if tx.workspace_count().await? > 0 {
        return Ok(None);
    }
    let ws = WorkspaceName::parse("default")?;
    let user = UserName::parse("admin")?;
    create_key(tx, &ws, &user, now).await.map(Some)
}

/// The id part of a presented key (`cmk_<id>_<secret>`), and its secret, when well formed.
fn split_key(presented: &str) -> Option<(&str, &str)> {
    let (key_id, secret) = presented
        .strip_prefix(KEY_PREFIX)
        .and_then(|r| r.split_once('_'))?;
    is_key_id(key_id).then_some((key_id, secret))
}

fn is_key_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The id of a presented key, when well formed: what the key list shows and revoke takes.
pub fn key_id(presented: &str) -> Option<&str> {
    split_key(presented).map(|(id, _)| id)
}

/// The principal a presented key acts as, or `None` for a malformed, unknown or revoked key.
/// The secret's hash is compared in constant time.
pub async fn authenticate(tx: &mut dyn Tx, presented: &str) -> Result<Option<Principal>> {
    let Some((key_id, secret)) = split_key(presented) else {
        return Ok(None);
    };
    let found = tx.get_api_key(key_id).await?;
    // The same work whether or not the id exists, so that timing does not tell.
    let stored = found.as_ref().map_or([0u8; 32], |(r, _)| r.secret_hash);
    let matches = bool::from(hash_secret(secret).ct_eq(&stored));
    Ok(found.filter(|_| matches).map(|(_, principal)| principal))
}

/// Every key of every workspace, for the operator on the database.
pub async fn list_keys(tx: &mut dyn Tx) -> Result<Vec<KeyInfo>> {
    Ok(tx.list_api_keys().await?)
}

/// The keys of the caller's workspace.
pub async fn workspace_keys(tx: &mut dyn Tx, p: &Principal) -> Result<Vec<KeyInfo>> {
    let mut keys = tx.list_api_keys().await?;
    keys.retain(|k| k.workspace_id == p.workspace_id);
    Ok(keys)
}

/// Revokes a key of the caller's workspace (by id); another workspace's is not found.
pub async fn revoke_workspace_key(
    tx: &mut dyn Tx,
    p: &Principal,
    id: &str,
    now: Timestamp,
) -> Result<KeyInfo> {
    let keys = workspace_keys(tx, p).await?;
    let Some(key) = keys.iter().find(|k| k.id == id) else {
        return Err(Error::NotFound("API key"));
    };
    let active = keys.iter().filter(|k| k.revoked_at.is_none()).count();
    if key.revoked_at.is_none() && active == 1 {
        // Through the API that would lock the workspace out of it for good; the operator can
        // still revoke it on the server (`codmir keys revoke`).
        return Err(Error::Conflict {
            code: "last_active_key",
            message: format!(
                "API key {id} is the workspace's last active key: create another first (`codmir keys create`), or revoke it on the server with `codmir keys revoke`"
            ),
        });
    }
    revoke_key(tx, id, now).await
}

/// Revokes a key, named by its id or given whole. A revoked key authenticates no more.
pub async fn revoke_key(tx: &mut dyn Tx, id_or_key: &str, now: Timestamp) -> Result<KeyInfo> {
    let id = key_id(id_or_key).unwrap_or(id_or_key);
    if !is_key_id(id) {
        return Err(ValidationError::new(
            "key",
            format!("`{id_or_key}` is not a key id (16 hex digits, as `codmir keys list` shows) or a key"),
        )
        .into());
    }
    let keys = tx.list_api_keys().await?;
    let Some(key) = keys.into_iter().find(|k| k.id == id) else {
        return Err(Error::NotFound("API key"));
    };
    if key.revoked_at.is_some() || !tx.revoke_api_key(id, now).await? {
        return Err(Error::Conflict {
            code: "already_revoked",
            message: format!("API key {id} was already revoked"),
        });
    }
    Ok(KeyInfo {
        revoked_at: Some(now),
        ..key
    })
}

/// Whether anybody ever used a key of this database: on a database with keys, `serve` says
/// how to make one when nobody did (the key printed at the first start may have been lost).
pub async fn any_key_used(tx: &mut dyn Tx) -> Result<bool> {
    Ok(tx
        .list_api_keys()
        .await?
        .iter()
        .any(|k| k.last_used_at.is_some()))
}
