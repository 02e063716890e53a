//! Units of work of webhooks: registration, changes, removal, and the delivery log.

use codmir_core::ValidationError;
use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::Principal;
use codmir_core::webhook::{
    Attempt, CustomHeaders, Delivery, DeliveryOrder, DeliveryStatus, EndpointUrl, EventFilter,
    HeadersUpdate, Webhook, WebhookSecret,
};

use super::{AfterCommit, Error, Result};
use crate::store::Tx;

/// A validated registration.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: EndpointUrl,
    pub events: EventFilter,
    pub secret: WebhookSecret,
    pub description: Option<String>,
    pub project_ids: Vec<String>,
    pub max_in_flight: Option<u32>,
    pub rate_limit_per_second: Option<u32>,
    pub headers: CustomHeaders,
    pub expires_at: Option<Timestamp>,
    pub ordering: DeliveryOrder,
}

/// A validated change; `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<EndpointUrl>,
    pub events: Option<EventFilter>,
    pub description: Option<Option<String>>,
    pub project_ids: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub max_in_flight: Option<Option<u32>>,
    pub rate_limit_per_second: Option<Option<u32>>,
    /// A masked value keeps the current value of its header ([`HeadersUpdate::apply`]).
    pub headers: Option<HeadersUpdate>,
    pub ordering: Option<DeliveryOrder>,
    pub expires_at: Option<Option<Timestamp>>,
}

pub async fn webhook(tx: &mut dyn Tx, p: &Principal, id: &str) -> Result<Webhook> {
    tx.get_webhook(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("webhook"))
}

/// Every project id must be a project of the caller's workspace.
async fn check_projects(tx: &mut dyn Tx, p: &Principal, ids: &[String]) -> Result<()> {
    for id in ids {
        if tx.get_project(&p.workspace_id, id).await?.is_none() {
            return Err(ValidationError::new(
                "project_ids",
                format!("there is no project `{id}` in this workspace"),
            )
            .into());
        }
    }
    Ok(())
}

pub async fn create_webhook(
    tx: &mut dyn Tx,
    p: &Principal,
    new: NewWebhook,
    max_per_workspace: usize,
    now: Timestamp,
) -> Result<Webhook> {
    if tx.webhook_count(&p.workspace_id).await? >= max_per_workspace as i64 {
        return Err(ValidationError::new(
            "webhooks",
            format!(
                "this workspace has {max_per_workspace} webhooks, the most it may have \
                 (--max-webhooks-per-workspace); delete one first"
            ),
        )
        .into());
    }
    check_projects(tx, p, &new.project_ids).await?;
    let webhook = Webhook {
        project_ids: new.project_ids,
        description: new.description,
        max_in_flight: new.max_in_flight,
        rate_limit_per_second: new.rate_limit_per_second,
        headers: new.headers,
        expires_at: new.expires_at,
        ordering: new.ordering,
        ..Webhook::new(
            new_id("wh", now),
            p.workspace_id.clone(),
            new.url,
            new.events,
            new.secret,
            now,
        )
    };
    tx.insert_webhook(&webhook).await?;
    Ok(webhook)
}

/// Applies a change. Disabling a webhook cancels its pending deliveries: they are not sent,
/// and enabling it again does not bring them back.
pub async fn update_webhook(
    tx: &mut dyn Tx,
    p: &Principal,
    id: &str,
    patch: WebhookPatch,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<Webhook> {
    let mut w = tx
        .lock_webhook(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    if let Some(ids) = &patch.project_ids {
        check_projects(tx, p, ids).await?;
    }
    let was_enabled = w.enabled;
    if let Some(url) = patch.url {
        w.url = url;
    }
    if let Some(events) = patch.events {
        w.events = events;
    }
    if let Some(description) = patch.description {
        w.description = description;
    }
    if let Some(ids) = patch.project_ids {
        w.project_ids = ids;
    }
    if let Some(enabled) = patch.enabled {
        w.enabled = enabled;
    }
    if w.enabled && !was_enabled {
        // Enabled again: the reason it was disabled no longer holds, and its run of failures
        // starts afresh.
        w.disabled_reason = None;
        w.disabled_at = None;
    }
    if let Some(n) = patch.max_in_flight {
        w.max_in_flight = n;
    }
    if let Some(n) = patch.rate_limit_per_second {
        w.rate_limit_per_second = n;
    }
    if let Some(h) = patch.headers {
        w.headers = h.apply(&w.headers)?;
    }
    if let Some(at) = patch.expires_at {
        w.expires_at = at;
    }
    let was_ordered = w.ordering == DeliveryOrder::PerResource;
    if let Some(o) = patch.ordering {
        w.ordering = o;
    }
    w.updated_at = now;
    tx.update_webhook(&w).await?;
    if was_ordered && w.ordering == DeliveryOrder::None && tx.release_chains(&w.id, now).await? > 0
    {
        // What waited in a chain is due now, on any node.
        tx.announce_deliveries().await?;
        after.wake = true;
    }
    if w.enabled && !was_enabled {
        tx.update_failure_run(&w.id, true, 0, None).await?;
    }
    if was_enabled && !w.enabled {
        tx.cancel_pending_deliveries(&w.id, "the webhook was disabled", now)
            .await?;
        after.cancelled.push(w.id.clone());
    }
    Ok(w)
}

/// Removes the webhooks among `expired` (as (workspace, id)) whose `expires_at` has come by
/// `now` (read again under the row's lock: a renewal may have moved it), cancelling their
/// pending deliveries; returns how many.
pub async fn remove_expired_webhooks(
    tx: &mut dyn Tx,
    expired: &[(String, String)],
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<usize> {
    let mut removed = 0;
    for (ws, id) in expired {
        let Some(w) = tx.lock_webhook(ws, id).await? else {
            continue;
        };
        if w.expires_at.is_none_or(|at| at > now) {
            continue;
        }
        tx.cancel_pending_deliveries(&w.id, "the webhook expired", now)
            .await?;
        after.cancelled.push(w.id.clone());
        tx.delete_webhook(&w.id).await?;
        removed += 1;
    }
    Ok(removed)
}

/// Deletes a webhook and cancels its pending deliveries.
pub async fn delete_webhook(
    tx: &mut dyn Tx,
    p: &Principal,
    id: &str,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<()> {
    let w = webhook(tx, p, id).await?;
    tx.cancel_pending_deliveries(&w.id, "the webhook was deleted", now)
        .await?;
    after.cancelled.push(w.id.clone());
    tx.delete_webhook(&w.id).await?;
    Ok(())
}

/// A delivery of the caller's workspace with its attempts, oldest first.
pub async fn delivery(tx: &mut dyn Tx, p: &Principal, id: &str) -> Result<DeliveryLog> {
    let delivery = tx
        .get_delivery(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("delivery"))?;
    let attempts = tx.list_attempts(&delivery.id).await?;
    let webhook = tx
        .get_webhook(&p.workspace_id, &delivery.webhook_id)
        .await?;
    let payload = tx
        .get_event(&p.workspace_id, &delivery.event_id)
        .await?
        .map(|e| e.payload);
    let behind = match (&delivery.chain, delivery.status) {
        (Some((resource, n)), DeliveryStatus::Pending) => {
            tx.chain_head(&delivery.webhook_id, resource, *n).await?
        }
        _ => None,
    };
    Ok(DeliveryLog {
        delivery,
        attempts,
        webhook,
        payload,
        behind,
    })
}

/// A delivery with its attempts, and what is needed to show the request it sent: its webhook
/// and its event's bytes (either may be gone since: deleted, or past retention).
#[derive(Debug)]
pub struct DeliveryLog {
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
    pub webhook: Option<Webhook>,
    pub payload: Option<String>,
    /// For a delivery waiting in its chain: the one it waits behind.
    pub behind: Option<Delivery>,
}

/// The longest grace period a rotation may give the previous secret.
pub const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Replaces the webhook's secret. For `grace`, the previous secret keeps signing beside it
/// (a second `webhook-signature`, and `X-Codmir-Signature` stays on it until the period
/// ends); a zero grace ends it at once.
///
/// A webhook holds at most two secrets, and a rotation never ends a secret before the expiry
/// an earlier rotation announced: while one is in its grace period, a rotation with a grace
/// of its own is refused (409 `rotation_in_grace_period`, saying until when); one with a
/// zero grace replaces the current secret at once and leaves the retiring one signing until
/// its announced end.
pub async fn rotate_secret(
    tx: &mut dyn Tx,
    p: &Principal,
    id: &str,
    secret: WebhookSecret,
    grace: std::time::Duration,
    now: Timestamp,
) -> Result<Webhook> {
    let mut w = tx
        .lock_webhook(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    let retiring = w
        .previous_secret
        .as_ref()
        .filter(|(_, until)| now < *until)
        .map(|(_, until)| *until);
    match (retiring, grace.is_zero()) {
        (Some(until), false) => {
            return Err(Error::Conflict {
                code: "rotation_in_grace_period",
                message: format!(
                    "the secret replaced by the last rotation signs until {}, as that rotation \
                     announced; rotate again after then, or now with grace_period_seconds: 0 \
                     (the current secret stops signing at once; the one in its grace period \
                     keeps signing until {})",
                    until.to_rfc3339_millis(),
                    until.to_rfc3339_millis()
                ),
            });
        }
        // The current secret goes at once; the retiring one keeps its announced end.
        (Some(_), true) => {
            w.secret = secret;
        }
        (None, _) => {
            let old = std::mem::replace(&mut w.secret, secret);
            w.previous_secret = (!grace.is_zero()).then(|| (old, now.plus(grace)));
        }
    }
    w.updated_at = now;
    tx.update_webhook(&w).await?;
    Ok(w)
}
