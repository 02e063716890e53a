//! Units of work for a bad day: send one delivery again, hurry a webhook's pending retries,
//! and a test ping.

use std::sync::Arc;

use codmir_core::event::{Event, EventData, EventType, WebhookView};
use codmir_core::time::Timestamp;
use codmir_core::tracker::Principal;
use codmir_core::webhook::{Delivery, Webhook};

use super::{AfterCommit, Error, Result, announce, enqueue, webhook};
use crate::store::{Leased, StoreError, Tx};

/// A webhook that may be sent to now: enabled.
fn sendable(w: Webhook) -> Result<Webhook> {
    if w.enabled {
        Ok(w)
    } else {
        Err(Error::Conflict {
            code: "webhook_disabled",
            message: format!(
                "webhook {} is disabled; enable it (PATCH {{\"enabled\": true}}) first",
                w.id
            ),
        })
    }
}

/// A new delivery of the same event to the same webhook, linked to the original
/// (`redelivery_of`), sent now whatever the original's status. The event's stored bytes are
/// sent; the signature is made afresh at the attempt.
pub async fn redeliver(
    tx: &mut dyn Tx,
    p: &Principal,
    delivery_id: &str,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<Delivery> {
    let original = tx
        .get_delivery(&p.workspace_id, delivery_id)
        .await?
        .ok_or(Error::NotFound("delivery"))?;
    let webhook = sendable(webhook(tx, p, &original.webhook_id).await?)?;
    let event = tx
        .get_event(&p.workspace_id, &original.event_id)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "delivery {} names event {}, which is missing",
                original.id, original.event_id
            ))
        })?;
    let delivery = Delivery {
        redelivery_of: Some(original.id.clone()),
        ..Delivery::new(
            &p.workspace_id,
            &webhook.id,
            &event.id,
            original.event_type,
            now,
        )
    };
    enqueue(
        tx,
        delivery.clone(),
        &webhook,
        Arc::from(event.payload),
        after,
    )
    .await?;
    announce(tx, after).await?;
    Ok(delivery)
}

/// Makes every pending delivery of the webhook due now: a receiver back from an outage should
/// not wait for the schedule. Returns how many were due later.
pub async fn retry_pending(
    tx: &mut dyn Tx,
    p: &Principal,
    webhook_id: &str,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<u64> {
    let w = sendable(webhook(tx, p, webhook_id).await?)?;
    let n = tx.make_due_now(&w.id, now).await?;
    if n > 0 {
        // They are not leased to anyone: every node's engine may claim them, this one first.
        tx.announce_deliveries().await?;
        after.wake = true;
    }
    Ok(n)
}

/// Writes a `webhook.ping` event for the webhook and its delivery, leased to this node, and
/// returns it to be attempted at once by the caller (not queued for the engine).
pub async fn ping(
    tx: &mut dyn Tx,
    p: &Principal,
    webhook_id: &str,
    now: Timestamp,
    after: &AfterCommit,
) -> Result<Leased> {
    let webhook = webhook(tx, p, webhook_id).await?;
    let lease = after.lease.clone().ok_or(Error::Conflict {
        code: "no_lease",
        message: "a ping needs a lease of this node".into(),
    })?;
    let data = EventData {
        webhook: Some(WebhookView {
            id: webhook.id.clone(),
            url: webhook.url.as_str().to_owned(),
            events: webhook.events.patterns().to_vec(),
            disabled_reason: None,
            disabled_at: None,
        }),
        ..EventData::default()
    };
    let event = Event::new(&p.workspace_id, None, EventType::WebhookPing, now, &data);
    tx.insert_event(&event).await?;
    let delivery = Delivery::new(
        &p.workspace_id,
        &webhook.id,
        &event.id,
        EventType::WebhookPing,
        now,
    );
    tx.insert_delivery(&delivery, Some(&lease)).await?;
    Ok(Leased {
        delivery,
        webhook,
        payload: Arc::from(event.payload),
        lease_until: lease.until,
    })
}
