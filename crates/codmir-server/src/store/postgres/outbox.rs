//! The outbox's queries on PostgreSQL: events and webhooks (the delivery queue is
//! `queue.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use codmir_core::event::Event;
use codmir_core::id;
use codmir_core::time::Timestamp;
use codmir_core::webhook::Webhook;

use super::PgTx;
use crate::store::rows::{self, EVENT_FULL_COLS, WEBHOOK_COLS, headers_json, json_list};
use crate::store::{EventQuery, OutboxTx, Page, PageRequest, StoreResult, StoredEvent, Webhooks};

#[async_trait]
impl OutboxTx for PgTx<'_> {
    async fn insert_event(&mut self, e: &Event) -> StoreResult<()> {
        if self.hold_event(e) {
            return Ok(());
        }
        self.exec(
            "INSERT INTO events (id, workspace_id, project_id, type, created_at, payload) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &e.id,
                &e.workspace_id,
                &e.project_id,
                &e.event_type.as_str(),
                &e.created_at.as_millis(),
                &e.payload,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_event(&mut self, ws: &str, id: &str) -> StoreResult<Option<StoredEvent>> {
        self.one(
            "SELECT id, payload FROM events WHERE workspace_id = $1 AND id = $2",
            &[&ws, &id],
            rows::event,
        )
        .await
    }

    async fn events_between(
        &mut self,
        ws: &str,
        since: Timestamp,
        until: Timestamp,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        self.all(
            &format!(
                "SELECT {EVENT_FULL_COLS} FROM events WHERE workspace_id = $1 AND id >= $6 \
                 AND id < $7 AND created_at >= $2 AND created_at < $3 \
                 AND ($4::text IS NULL OR id > $4) ORDER BY id LIMIT $5"
            ),
            // The id bounds let the (workspace_id, id) index hold the window: an event's id
            // starts with its creation time.
            &[
                &ws,
                &since.as_millis(),
                &until.as_millis(),
                &after,
                &i64::from(limit),
                &id::floor("evt", since),
                &id::floor("evt", until),
            ],
            rows::event_full,
        )
        .await
    }

    async fn list_events(
        &mut self,
        ws: &str,
        q: &EventQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<StoredEvent>> {
        let sql = if q.ascending {
            "SELECT id, payload FROM events WHERE workspace_id = $1 AND ($2::text IS NULL OR type LIKE $2) \
             AND ($3::text IS NULL OR project_id = $3) AND ($4::int8 IS NULL OR created_at >= $4) \
             AND ($5::int8 IS NULL OR created_at < $5) AND ($6::text IS NULL OR id > $6) ORDER BY id LIMIT $7"
        } else {
            "SELECT id, payload FROM events WHERE workspace_id = $1 AND ($2::text IS NULL OR type LIKE $2) \
             AND ($3::text IS NULL OR project_id = $3) AND ($4::int8 IS NULL OR created_at >= $4) \
             AND ($5::int8 IS NULL OR created_at < $5) AND ($6::text IS NULL OR id < $6) ORDER BY id DESC LIMIT $7"
        };
        let (since, until) = (
            q.since.map(Timestamp::as_millis),
            q.until.map(Timestamp::as_millis),
        );
        self.page(
            sql,
            &[&ws, &q.type_like(), &q.project_id, &since, &until],
            page,
            rows::event,
        )
        .await
    }

    async fn insert_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        self.exec(
            &format!(
                "INSERT INTO webhooks ({WEBHOOK_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
            ),
            &[
                &w.id,
                &w.workspace_id,
                &w.url.as_str(),
                &json_list(w.events.patterns()),
                &json_list(&w.project_ids),
                &w.description,
                &rows::seal(&w.secret, self.keys),
                &w.enabled,
                &w.created_at.as_millis(),
                &w.updated_at.as_millis(),
                &w.disabled_reason,
                &w.disabled_at.map(Timestamp::as_millis),
                &w.max_in_flight.map(|n| n as i32),
                &w.rate_limit_per_second.map(|n| n as i32),
                &headers_json(&w.headers),
                &w.previous_secret.as_ref().map(|(s, _)| rows::seal(s, self.keys)),
                &w.previous_secret.as_ref().map(|(_, t)| t.as_millis()),
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        self.one(
            &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            rows::webhook,
        )
        .await?
        .map(|w| rows::open_webhook(w, self.keys))
        .transpose()
    }

    async fn lock_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        self.one(
            &format!(
                "SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND id = $2 FOR UPDATE"
            ),
            &[&ws, &id],
            rows::webhook,
        )
        .await?
        .map(|w| rows::open_webhook(w, self.keys))
        .transpose()
    }

    async fn reseal_secrets(&mut self) -> StoreResult<u64> {
        let stored = self
            .all(
                "SELECT id, secret, previous_secret FROM webhooks FOR UPDATE",
                &[],
                rows::stored_secrets,
            )
            .await?;
        let mut changed = 0;
        for (id, secret, previous) in stored {
            if let Some((secret, previous)) =
                rows::resealed(self.keys, &secret, previous.as_deref())?
            {
                self.exec(
                    "UPDATE webhooks SET secret = $2, previous_secret = $3 WHERE id = $1",
                    &[&id, &secret, &previous],
                )
                .await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn webhook_count(&mut self, ws: &str) -> StoreResult<i64> {
        Ok(self
            .one(
                "SELECT count(*) FROM webhooks WHERE workspace_id = $1",
                &[&ws],
                rows::first_int,
            )
            .await?
            .unwrap_or(0))
    }

    async fn list_webhooks(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Webhook>> {
        self.page(
            &format!(
                "SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            &[&ws],
            page,
            rows::webhook,
        )
        .await?
        .try_map(|w| rows::open_webhook(w, self.keys))
    }

    async fn enabled_webhooks(&mut self, ws: &str) -> StoreResult<Webhooks> {
        let version = match self.batch_version(ws) {
            Some(v) => v,
            None => {
                let v = self
                    .one_beside(
                        "SELECT webhooks_version FROM workspaces WHERE id = $1",
                        &[&ws],
                        |r| r.int(0),
                    )
                    .await?
                    .unwrap_or(0);
                self.remember_version(ws, v);
                v
            }
        };
        if let Some(hooks) = self.fanout.get(ws, version) {
            return Ok(hooks);
        }
        let hooks = self
            .all(
                &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND enabled"),
                &[&ws],
                rows::webhook,
            )
            .await?
            .into_iter()
            .map(|w| rows::open_webhook(w, self.keys).map(Arc::new))
            .collect::<StoreResult<Webhooks>>()?;
        self.fanout.put(ws, version, hooks.clone());
        Ok(hooks)
    }

    async fn update_webhook(&mut self, w: &Webhook) -> StoreResult<()> {
        self.exec(
            "UPDATE webhooks SET url = $2, events = $3, project_ids = $4, description = $5, \
             secret = $6, enabled = $7, updated_at = $8, disabled_reason = $9, disabled_at = $10, \
             max_in_flight = $11, rate_limit_per_second = $12, headers = $13, previous_secret = $14, \
             previous_secret_until = $15 WHERE id = $1",
            &[
                &w.id,
                &w.url.as_str(),
                &json_list(w.events.patterns()),
                &json_list(&w.project_ids),
                &w.description,
                &rows::seal(&w.secret, self.keys),
                &w.enabled,
                &w.updated_at.as_millis(),
                &w.disabled_reason,
                &w.disabled_at.map(Timestamp::as_millis),
                &w.max_in_flight.map(|n| n as i32),
                &w.rate_limit_per_second.map(|n| n as i32),
                &headers_json(&w.headers),
                &w.previous_secret.as_ref().map(|(s, _)| rows::seal(s, self.keys)),
                &w.previous_secret.as_ref().map(|(_, t)| t.as_millis()),
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_webhook(&mut self, id: &str) -> StoreResult<()> {
        self.exec("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await?;
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
            "UPDATE webhooks SET \
               consecutive_failures = CASE WHEN $2 THEN $3 ELSE consecutive_failures + $3 END, \
               failing_since = CASE WHEN $2 AND $3 = 0 THEN NULL \
                 WHEN $2 OR failing_since IS NULL THEN $4 ELSE failing_since END \
             WHERE id = $1 AND enabled RETURNING failing_since, consecutive_failures",
            &[
                &webhook_id,
                &reset,
                &(failures as i32),
                &first_failure_at.map(Timestamp::as_millis),
            ],
            rows::failure_run,
        )
        .await
    }
}
