//! The outbox's writes: events and webhooks (`OutboxTx`), once for both backends.

use async_trait::async_trait;
use codmir_core::event::Event;
use codmir_core::time::Timestamp;
use codmir_core::webhook::Webhook;

use crate::store::conn::{Conn, HeldRow, args};
use crate::store::rows::{self, headers_json, json_list};
use crate::store::sql;
use crate::store::{OutboxTx, StoreResult};

/// A webhook's values in `INSERT_WEBHOOK`'s and `UPDATE_WEBHOOK`'s order after `id` (the
/// insert also takes `workspace_id` and `created_at`), with its secrets sealed.
struct WebhookRow {
    events: String,
    project_ids: String,
    secret: String,
    headers: String,
    previous_secret: Option<String>,
}

impl WebhookRow {
    fn of(w: &Webhook, keys: Option<&crate::store::seal::KeyRing>) -> Self {
        Self {
            events: json_list(w.events.patterns()),
            project_ids: json_list(&w.project_ids),
            secret: rows::seal(&w.secret, keys),
            // Header values may be credentials (`Authorization: Bearer …`): sealed too.
            headers: rows::seal_text(&headers_json(&w.headers), keys),
            previous_secret: w.previous_secret.as_ref().map(|(s, _)| rows::seal(s, keys)),
        }
    }
}

#[async_trait]
impl<C: Conn> OutboxTx for C {
    async fn insert_event(&mut self, e: &Event) -> StoreResult<()> {
        if self.hold(HeldRow::Event(e)) {
            return Ok(());
        }
        self.exec(
            &sql::INSERT_EVENT,
            args![
                e.id,
                e.workspace_id,
                e.project_id,
                e.event_type.as_str(),
                e.created_at,
                e.payload
            ],
        )
        .await?;
        Ok(())
    }

    async fn take_sequence(&mut self, resource_id: &str, count: u64) -> StoreResult<Option<u64>> {
        let count = count as i64;
        let statement = match resource_id.starts_with("tkt_") {
            true => &sql::TAKE_TICKET_SEQUENCE,
            false => &sql::TAKE_PROJECT_SEQUENCE,
        };
        let last = self
            .one(statement, args![resource_id, count], rows::first_int)
            .await?;
        Ok(last.map(|n| n.max(0) as u64))
    }

    async fn insert_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        let r = WebhookRow::of(w, self.keys());
        self.exec(
            &sql::INSERT_WEBHOOK,
            args![
                w.id,
                w.workspace_id,
                w.url.as_str(),
                r.events,
                r.project_ids,
                w.description,
                r.secret,
                w.enabled,
                w.created_at,
                w.updated_at,
                w.disabled_reason,
                w.disabled_at,
                w.max_in_flight,
                w.rate_limit_per_second,
                r.headers,
                r.previous_secret,
                w.previous_secret.as_ref().map(|(_, t)| *t),
                w.expires_at,
                w.ordering.as_str(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn reseal_secrets(&mut self) -> StoreResult<u64> {
        let stored = self
            .all(&sql::SECRETS_TO_RESEAL, &[], rows::sealed_row)
            .await?;
        let mut changed = 0;
        for row in stored {
            if let Some(r) = rows::resealed(self.keys(), row)? {
                let a = args![r.id, r.secret, r.previous, r.headers];
                self.exec(&sql::RESEAL_SECRET, a).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn update_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        let r = WebhookRow::of(w, self.keys());
        self.exec(
            &sql::UPDATE_WEBHOOK,
            args![
                w.id,
                w.url.as_str(),
                r.events,
                r.project_ids,
                w.description,
                r.secret,
                w.enabled,
                w.updated_at,
                w.disabled_reason,
                w.disabled_at,
                w.max_in_flight,
                w.rate_limit_per_second,
                r.headers,
                r.previous_secret,
                w.previous_secret.as_ref().map(|(_, t)| *t),
                w.expires_at,
                w.ordering.as_str(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_webhook(&mut self, id: &str) -> StoreResult<()> {
        self.exec(&sql::DELETE_WEBHOOK, args![id]).await?;
        Ok(())
    }

    async fn update_failure_run(
        &mut self,
        webhook_id: &str,
        reset: bool,
        failures: u32,
        first_failure_at: Option<Timestamp>,
    ) -> StoreResult<Option<(Option<Timestamp>, u32)>> {
        self.one(
            &sql::UPDATE_FAILURE_RUN,
            args![webhook_id, reset, failures, first_failure_at],
            rows::failure_run,
        )
        .await
    }
}
