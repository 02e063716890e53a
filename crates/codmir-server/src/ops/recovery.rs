//! Units of work for a bad day: send one delivery again, replay a window, hurry a webhook's
//! pending retries, and a test ping.

use std::sync::Arc;

use codmir_core::event::{Event, EventData, EventType, WebhookView};
use codmir_core::time::Timestamp;
use codmir_core::tracker::Principal;
use codmir_core::webhook::{Delivery, DeliveryStatus, Webhook};

use super::{AfterCommit, Error, Result, announce, chain_moved, enqueue, webhook, within_quota};
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
/// sent; the signature is made afresh at the attempt. Refused when the workspace has `quota`
/// deliveries pending.
pub async fn redeliver(
    tx: &mut dyn Tx,
    p: &Principal,
    delivery_id: &str,
    quota: u64,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<Delivery> {
    let original = tx
        .get_delivery(&p.workspace_id, delivery_id)
        .await?
        .ok_or(Error::NotFound("delivery"))?;
    // Redeliveries of one delivery asked for at once are one: the webhook's row is held until
    // the commit (PostgreSQL; SQLite's writer runs one unit at a time), so each sees the one
    // before it, and a redelivery of this delivery still pending is the answer.
    let webhook = tx
        .lock_webhook(&p.workspace_id, &original.webhook_id)
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    let webhook = sendable(webhook)?;
    let same_event = tx
        .delivery_states(&webhook.id, std::slice::from_ref(&original.event_id))
        .await?;
    for (_, id, status) in same_event {
        if status != DeliveryStatus::Pending || id == original.id {
            continue;
        }
        if let Some(pending) = tx.get_delivery(&p.workspace_id, &id).await?
            && pending.redelivery_of.as_deref() == Some(original.id.as_str())
        {
            return Ok(pending);
        }
    }
    within_quota(&mut *tx, &p.workspace_id, quota, 1).await?;
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
        &Arc::new(webhook),
        Arc::from(event.payload),
        after,
    )
    .await?;
    // The redelivery supersedes a pending original: its remaining retries would send the same
    // event again.
    if original.status == DeliveryStatus::Pending {
        let why = format!("superseded by redelivery {}", delivery.id);
        tx.cancel_delivery(&original.id, &why, now).await?;
        if let Some((resource, _)) = &original.chain {
            chain_moved(tx, &original.webhook_id, resource, now, after).await?;
        }
    }
    announce(tx, after).await?;
    Ok(delivery)
}

/// Ends a pending delivery as cancelled, so that the one behind it in its chain (a webhook
/// ordered per resource) goes: an operator unblocking a chain stuck on a delivery the endpoint
/// will never take. Any pending delivery may be skipped; a settled one is a conflict. An
/// attempt of it already under way may still reach the endpoint, and is not recorded.
pub async fn skip(
    tx: &mut dyn Tx,
    p: &Principal,
    delivery_id: &str,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<Delivery> {
    let d = tx
        .get_delivery(&p.workspace_id, delivery_id)
        .await?
        .ok_or(Error::NotFound("delivery"))?;
    let settled = || Error::Conflict {
        code: "delivery_settled",
        message: format!(
            "delivery {} is {}: only a pending delivery can be skipped",
            d.id,
            d.status.as_str()
        ),
    };
    if d.status != DeliveryStatus::Pending {
        return Err(settled());
    }
    if !tx.cancel_delivery(&d.id, "skipped on request", now).await? {
        return Err(settled());
    }
    if let Some((resource, _)) = &d.chain {
        chain_moved(tx, &d.webhook_id, resource, now, after).await?;
    }
    tx.get_delivery(&p.workspace_id, &d.id)
        .await?
        .ok_or(Error::NotFound("delivery"))
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
        webhook: Arc::new(webhook),
        payload: Arc::from(event.payload),
        lease_until: lease.until,
    })
}

/// Which of a webhook's past deliveries a replay sends again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    /// Events whose deliveries to the webhook ended failed (none succeeded).
    Failed,
    /// Events whose deliveries were cancelled (by deleting or disabling; none succeeded).
    Cancelled,
    /// Every event the webhook got a delivery for, whatever came of it.
    Any,
}

/// A validated replay request: events created in `[since, until)`.
#[derive(Debug, Clone)]
pub struct Replay {
    pub since: Timestamp,
    pub until: Timestamp,
    pub status: ReplayStatus,
    /// Also the events the webhook matches but never got a delivery for (it was disabled,
    /// or filtered them out at the time), created since the webhook was.
    pub include_missed: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub queued: u64,
    /// Events left alone because a delivery of them to this webhook is still pending (a
    /// previous replay, or retries): replaying twice queues nothing new.
    pub skipped_pending: u64,
    /// The window holds more to replay than one call queues: call again from `next_since`.
    pub next_since: Option<Timestamp>,
}

/// The most deliveries one replay queues.
pub const MAX_REPLAY: u64 = 10_000;
/// Events read per step of a replay.
const REPLAY_BATCH: u32 = 500;

/// Queues a new delivery, in event order, of every event of the window that `r` selects
/// and that has no pending delivery to the webhook. Refused whole (nothing queued) when the
/// workspace's pending deliveries would pass `quota`.
pub async fn replay(
    tx: &mut dyn Tx,
    p: &Principal,
    webhook_id: &str,
    r: Replay,
    quota: u64,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<Replayed> {
    let webhook = Arc::new(sendable(webhook(tx, p, webhook_id).await?)?);
    let pending = tx
        .pending_count(&p.workspace_id, quota.saturating_add(1))
        .await?;
    let room = quota.saturating_sub(pending);
    let mut out = Replayed::default();
    let mut cursor: Option<String> = None;
    'window: loop {
        let events = tx
            .events_between(
                &p.workspace_id,
                r.since,
                r.until,
                cursor.as_deref(),
                REPLAY_BATCH,
            )
            .await?;
        let Some(last) = events.last() else { break };
        cursor = Some(last.id.clone());
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let states = tx.delivery_states(&webhook.id, &ids).await?;
        let done = events.len() < REPLAY_BATCH as usize;
        for event in events {
            // A test ping is not a delivery of record: never sent again.
            if event.event_type == EventType::WebhookPing {
                continue;
            }
            let mine: Vec<_> = states.iter().filter(|(e, _, _)| *e == event.id).collect();
            let has = |s: DeliveryStatus| mine.iter().any(|(_, _, st)| *st == s);
            if has(DeliveryStatus::Pending) {
                out.skipped_pending += 1;
                continue;
            }
            let selected = if mine.is_empty() {
                r.include_missed
                    && event.created_at >= webhook.created_at
                    && webhook.events.matches(event.event_type)
                    && (webhook.project_ids.is_empty()
                        || event
                            .project_id
                            .as_ref()
                            .is_some_and(|id| webhook.project_ids.contains(id)))
            } else {
                match r.status {
                    ReplayStatus::Failed => {
                        has(DeliveryStatus::Failed) && !has(DeliveryStatus::Succeeded)
                    }
                    ReplayStatus::Cancelled => {
                        has(DeliveryStatus::Cancelled) && !has(DeliveryStatus::Succeeded)
                    }
                    ReplayStatus::Any => true,
                }
            };
            if !selected {
                continue;
            }
            if out.queued == MAX_REPLAY {
                out.next_since = Some(event.created_at);
                break 'window;
            }
            if out.queued == room {
                // The unit fails, so what it queued so far is rolled back with it.
                return Err(Error::QuotaExceeded {
                    pending,
                    quota,
                    adding: room + 1,
                });
            }
            // Linked to the latest delivery it replays (ids sort by creation).
            let latest = mine.iter().map(|(_, d, _)| d.clone()).max();
            let delivery = Delivery {
                redelivery_of: latest,
                ..Delivery::new(
                    &p.workspace_id,
                    &webhook.id,
                    &event.id,
                    event.event_type,
                    now,
                )
            };
            enqueue(tx, delivery, &webhook, Arc::from(event.payload), after).await?;
            out.queued += 1;
        }
        if done {
            break;
        }
    }
    if out.queued > 0 {
        announce(tx, after).await?;
    }
    Ok(out)
}
