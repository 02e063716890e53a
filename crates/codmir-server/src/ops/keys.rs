//! API keys: creating them (and the workspace and user they act as), the first start's
//! bootstrap, and authenticating a presented key.

use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Principal, User, UserName, Workspace, WorkspaceName};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Result;
use crate::store::{ApiKeyRecord, Tx};

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

/// The principal a presented key acts as, or `None` for a malformed or unknown key. The
/// secret's hash is compared in constant time.
pub async fn authenticate(tx: &mut dyn Tx, presented: &str) -> Result<Option<Principal>> {
    let Some((key_id, secret)) = presented
        .strip_prefix(KEY_PREFIX)
        .and_then(|r| r.split_once('_'))
    else {
        return Ok(None);
    };
    if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some((record, principal)) = tx.get_api_key(key_id).await? else {
        return Ok(None);
    };
    let presented_hash = hash_secret(secret);
    Ok(bool::from(presented_hash.ct_eq(&record.secret_hash)).then_some(principal))
}
