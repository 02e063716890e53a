//! The unit of work of the delivery recorder: a batch of attempts' outcomes, and what they
//! say about each webhook — a run of failures that disables it automatically, or a `410 Gone`
//! that disables it at once.

use std::collections::HashSet;

use codmir_core::event::{EventData, EventType, UnstampedEvent, WebhookView};
use codmir_core::time::Timestamp;
use codmir_core::webhook::{DeliveryStatus, DisablePolicy};

use super::{AfterCommit, chain_moved, emit};
use crate::store::{Outcome, StoreResult, Tx};

/// The webhook an attempt went to.
#[derive(Debug, Clone)]
pub struct Target {
    pub workspace_id: String,
    pub webhook_id: String,
    /// The resource whose chain the delivery is in (a webhook ordered per resource).
    pub chain: Option<String>,
}

/// What a batch came to.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The outcomes the fence refused (lease lost, delivery cancelled meanwhile), by index.
    pub fenced: Vec<usize>,
    /// Webhooks whose run of failures is now empty.
    pub clean: Vec<String>,
    /// Webhooks with failures in this batch.
    pub failing: Vec<String>,
    /// Webhooks this batch disabled, with the reason.
    pub disabled: Vec<(String, String)>,
}

/// Records `outcomes` (each fenced), whose webhooks are `targets` (one each, in order), and
/// moves each webhook's run of failures on. Every attempt counts, recorded or fenced off:
/// each is something the endpoint answered. Webhooks in `clean` are known to have no run, so
/// their successes write nothing.
pub async fn record_outcomes(
    tx: &mut dyn Tx,
    outcomes: &[Outcome],
    targets: &[Target],
    policy: &DisablePolicy,
    clean: &HashSet<String>,
    now: Timestamp,
    after: &mut AfterCommit,
) -> StoreResult<Recorded> {
    let recorded = tx.record_outcomes(outcomes).await?;
    let mut out = Recorded {
        fenced: (0..outcomes.len())
            .filter(|i| !recorded.get(*i).copied().unwrap_or(false))
            .collect(),
        ..Recorded::default()
    };
    // A chained delivery settled: the next of its resource goes. Only outcomes recorded: one
    // the fence refused settled nothing. In the order of the chains' keys, as batches take
    // them (`Job::lock_key`).
    let mut moved: Vec<(&str, &str)> = outcomes
        .iter()
        .zip(targets)
        .enumerate()
        .filter(|(i, (o, _))| {
            o.new_status != DeliveryStatus::Pending && recorded.get(*i).copied().unwrap_or(false)
        })
        .filter_map(|(_, (_, t))| Some((t.chain.as_deref()?, t.webhook_id.as_str())))
        .collect();
    moved.sort_unstable();
    moved.dedup();
    for (resource, webhook) in moved {
        chain_moved(tx, webhook, resource, now, after).await?;
    }
    // Each webhook of the batch once, in the order first seen.
    let mut webhooks: Vec<(&str, &str)> = Vec::new();
    for t in targets {
        if !webhooks.iter().any(|(w, _)| *w == t.webhook_id) {
            webhooks.push((&t.webhook_id, &t.workspace_id));
        }
    }
    for (webhook, workspace) in webhooks {
        let mine: Vec<&Outcome> = outcomes
            .iter()
            .zip(targets)
            .filter(|(_, t)| t.webhook_id == webhook)
            .map(|(o, _)| o)
            .collect();
        if let Some(gone) = mine.iter().find(|o| o.attempt.status_code == Some(410)) {
            let reason = format!(
                "the endpoint answered 410 Gone (delivery {})",
                gone.attempt.delivery_id
            );
            if disable(tx, workspace, webhook, &reason, now, after).await? {
                out.disabled.push((webhook.to_owned(), reason));
            }
            continue;
        }
        let ok = |o: &&Outcome| o.new_status == DeliveryStatus::Succeeded;
        let last_ok = mine.iter().rposition(ok);
        let failures_after = &mine[last_ok.map_or(0, |i| i + 1)..];
        if failures_after.is_empty() {
            if !clean.contains(webhook) {
                tx.update_failure_run(webhook, true, 0, None).await?;
            }
            out.clean.push(webhook.to_owned());
            continue;
        }
        out.failing.push(webhook.to_owned());
        let first = failures_after[0].attempt.attempted_at;
        let run = tx
            .update_failure_run(
                webhook,
                last_ok.is_some(),
                failures_after.len() as u32,
                Some(first),
            )
            .await?;
        let Some((Some(since), consecutive)) = run else {
            continue;
        };
        if policy.disables(since, consecutive, now) {
            let last = failures_after.last().and_then(|o| o.attempt.status_code);
            let reason = policy.reason(consecutive, last);
            if disable(tx, workspace, webhook, &reason, now, after).await? {
                out.disabled.push((webhook.to_owned(), reason));
            }
        }
    }
    Ok(out)
}

/// Disables an enabled webhook with `reason`: its pending deliveries are cancelled (the engine
/// drops what it holds queued), and a `webhook.disabled` event goes to the workspace's other
/// webhooks that subscribe to it. False when it was already disabled or is gone.
pub async fn disable(
    tx: &mut dyn Tx,
    workspace: &str,
    webhook: &str,
    reason: &str,
    now: Timestamp,
    after: &mut AfterCommit,
) -> StoreResult<bool> {
    let Some(mut w) = tx.lock_webhook(workspace, webhook).await? else {
        return Ok(false);
    };
    if !w.enabled {
        return Ok(false);
    }
    w.enabled = false;
    w.disabled_reason = Some(reason.to_owned());
    w.disabled_at = Some(now);
    w.updated_at = now;
    tx.update_webhook(&w).await?;
    let why = format!("the webhook was disabled: {reason}");
    tx.cancel_pending_deliveries(&w.id, &why, now).await?;
    after.cancelled.push(w.id.clone());
    let data = EventData {
        webhook: Some(WebhookView {
            id: w.id.clone(),
            url: w.url.as_str().to_owned(),
            events: w.events.patterns().to_vec(),
            disabled_reason: w.disabled_reason.clone(),
            disabled_at: Some(now.to_rfc3339_millis()),
        }),
        ..EventData::default()
    };
    let event = UnstampedEvent::new(workspace, None, EventType::WebhookDisabled, &data);
    tracing::warn!(webhook_id = %w.id, reason, "webhook disabled automatically");
    emit(tx, workspace, vec![event], now, after).await?;
    Ok(true)
}
