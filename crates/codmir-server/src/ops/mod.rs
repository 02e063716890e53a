//! The tracker's units of work: each mutation validates against the current state, writes
//! its rows and its events, and fans the events out to matching webhooks, all through one
//! [`Tx`] so that the caller's transaction holds all of it or none of it (the outbox).
//!
//! Architecture invariant: nothing here knows HTTP or SQL.

use codmir_core::ValidationError;
use codmir_core::event::Event;
use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Principal, User, UserName, Workspace, WorkspaceName};
use codmir_core::webhook::{Delivery, DeliveryStatus};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::sync::Arc;

use crate::store::{ApiKeyRecord, Claimed, StoreError, Tx};

mod tracker;
mod webhooks;

pub use tracker::*;
pub use webhooks::*;

/// Why a unit of work was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist in the caller's workspace (other workspaces' ids look the same).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, Error>;

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

/// Where the deliveries a unit of work creates go. With a lease, they are written already
/// leased to this node and collected in `claimed`, so that after the commit they are handed
/// straight to this node's engine (no claim query, no polling); without one they wait for a
/// claim.
#[derive(Debug, Default)]
pub struct Intake {
    lease: Option<(String, Timestamp)>,
    pub claimed: Vec<Claimed>,
}

impl Intake {
    /// New deliveries will be leased to `owner` until `until`.
    pub fn leased_to(owner: String, until: Timestamp) -> Self {
        Self {
            lease: Some((owner, until)),
            claimed: Vec::new(),
        }
    }
}

/// Stores `events` and creates one pending delivery, due now, per matching enabled webhook.
pub(crate) async fn emit(
    tx: &mut dyn Tx,
    workspace_id: &str,
    events: &[Event],
    now: Timestamp,
    intake: &mut Intake,
) -> Result<()> {
    for event in events {
        tx.insert_event(event).await?;
    }
    let webhooks = tx.enabled_webhooks(workspace_id).await?;
    let mut any = false;
    for event in events {
        let mut payload: Option<Arc<str>> = None;
        for webhook in webhooks
            .iter()
            .filter(|w| w.wants(event.event_type, event.project_id.as_deref()))
        {
            let delivery = Delivery {
                id: new_id("dlv", now),
                workspace_id: workspace_id.to_owned(),
                webhook_id: webhook.id.clone(),
                event_id: event.id.clone(),
                event_type: event.event_type,
                status: DeliveryStatus::Pending,
                attempt_count: 0,
                next_attempt_at: Some(now),
                created_at: now,
                updated_at: now,
            };
            let lease = intake
                .lease
                .as_ref()
                .map(|(owner, until)| (owner.as_str(), *until));
            tx.insert_delivery(&delivery, lease).await?;
            any = true;
            if let Some((_, lease_until)) = intake.lease {
                let payload = payload
                    .get_or_insert_with(|| Arc::from(event.payload.as_str()))
                    .clone();
                intake.claimed.push(Claimed {
                    delivery,
                    webhook: webhook.clone(),
                    payload,
                    lease_until,
                });
            }
        }
    }
    // Deliveries leased to this node go to its engine in-process; waking the other nodes
    // would only make each of them run a claim that finds nothing (with two PostgreSQL
    // nodes, one per commit of the other).
    if any && intake.lease.is_none() {
        tx.announce_deliveries().await?;
    }
    Ok(())
}
