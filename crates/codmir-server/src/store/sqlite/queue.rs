//! The delivery queue on SQLite: deliveries with their leases and claims, outcomes, the
//! attempt log, and retention.

use std::sync::Arc;

use async_trait::async_trait;
use codmir_core::id;
use codmir_core::time::Timestamp;
use codmir_core::webhook::{Attempt, Delivery, DeliveryStatus, Webhook};
use rusqlite::params;

use super::SqliteTx;
use crate::store::rows::{
    self, ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_INSERT_COLS, WEBHOOK_COLS, json_list,
};
use crate::store::{
    DeliveryQuery, Lease, Leased, Outcome, Page, PageRequest, QueueTx, StoreResult,
};

#[async_trait]
impl QueueTx for SqliteTx<'_> {
    async fn delivery_states(
        &mut self,
        webhook_id: &str,
        event_ids: &[String],
    ) -> StoreResult<Vec<(String, String, DeliveryStatus)>> {
        self.all(
            "SELECT event_id, id, status FROM deliveries WHERE webhook_id = ?1 \
             AND event_id IN (SELECT value FROM json_each(?2))",
            params![webhook_id, json_list(event_ids)],
            rows::delivery_state,
        )
    }

    async fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> StoreResult<(u64, u64, u64)> {
        let ids: Vec<String> = self.all(
            "SELECT id FROM deliveries WHERE id < ?1 AND status <> 'pending' ORDER BY id LIMIT ?2",
            params![delivery_floor, limit],
            |r| r.text(0),
        )?;
        let (mut deliveries, mut attempts) = (0, 0);
        if !ids.is_empty() {
            let ids = json_list(&ids);
            attempts = self.exec(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?1))",
                &[&ids],
            )?;
            deliveries = self.exec(
                "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))",
                &[&ids],
            )?;
        }
        let events = self.exec(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id < ?1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) ORDER BY e.id LIMIT ?2)",
            params![event_floor, limit],
        )?;
        Ok((deliveries as u64, attempts as u64, events as u64))
    }

    async fn insert_delivery(&mut self, d: &Delivery, lease: Option<&Lease>) -> StoreResult<()> {
        let (owner, until) = (
            lease.map(|l| l.owner.as_str()),
            lease.map(|l| l.until.as_millis()),
        );
        self.exec(
            &format!(
                "INSERT INTO deliveries ({DELIVERY_INSERT_COLS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                d.id,
                d.workspace_id,
                d.webhook_id,
                d.event_id,
                d.event_type.as_str(),
                d.status.as_str(),
                d.attempt_count,
                d.next_attempt_at.map(Timestamp::as_millis),
                d.created_at.as_millis(),
                d.updated_at.as_millis(),
                d.redelivery_of,
                owner,
                until
            ],
        )?;
        Ok(())
    }

    async fn announce_deliveries(&mut self) -> StoreResult<()> {
        // One node: the API wakes its own engine after the commit.
        Ok(())
    }

    async fn make_due_now(&mut self, webhook_id: &str, now: Timestamp) -> StoreResult<u64> {
        let n = self.exec(
            "UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?2 \
             WHERE webhook_id = ?1 AND status = 'pending' AND next_attempt_at > ?2",
            params![webhook_id, now.as_millis()],
        )?;
        Ok(n as u64)
    }

    async fn queue_gauges(
        &mut self,
        now: Timestamp,
    ) -> StoreResult<(i64, i64, Option<Timestamp>, i64)> {
        let due = "FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1 \
                   AND (lease_expires_at IS NULL OR lease_expires_at < ?1)";
        let row = self.one(
            &format!(
                "SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'), \
                 (SELECT count(*) {due}), (SELECT min(next_attempt_at) {due}), \
                 (SELECT count(*) FROM webhooks WHERE enabled = 0)"
            ),
            params![now.as_millis()],
            rows::queue_gauges,
        )?;
        Ok(row.unwrap_or_default())
    }

    async fn delivery_counts(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
        bucket_ms: i64,
    ) -> StoreResult<Vec<(Timestamp, DeliveryStatus, i64)>> {
        // Ids start with their creation time, so the id floor keeps the scan to the window.
        self.all(
            "SELECT (created_at / ?4) * ?4 AS bucket, status, count(*) FROM deliveries \
             WHERE webhook_id = ?1 AND id >= ?2 AND created_at >= ?3 GROUP BY bucket, status",
            params![
                webhook_id,
                id::floor("dlv", since),
                since.as_millis(),
                bucket_ms
            ],
            rows::delivery_count,
        )
    }

    async fn success_latencies(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<i64>> {
        self.all(
            "SELECT updated_at - created_at AS took FROM deliveries WHERE webhook_id = ?1 \
             AND id >= ?2 AND created_at >= ?3 AND status = 'succeeded' ORDER BY took",
            params![webhook_id, id::floor("dlv", since), since.as_millis()],
            rows::first_int,
        )
    }

    async fn cancel_pending_deliveries(
        &mut self,
        webhook_id: &str,
        at: Timestamp,
    ) -> StoreResult<u64> {
        let n = self.exec(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = ?2 WHERE webhook_id = ?1 AND status = 'pending'",
            params![webhook_id, at.as_millis()],
        )?;
        Ok(n as u64)
    }

    async fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Leased>> {
        let ids = if skip.is_empty() {
            // The common case: the oldest due deliveries of any webhook, by the due index.
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1 \
                 AND (lease_expires_at IS NULL OR lease_expires_at < ?1) \
                 ORDER BY next_attempt_at LIMIT ?2",
            )?;
            stmt.query_map(params![now.as_millis(), limit], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?
        } else {
            // Some webhooks are busy here. Filtering them out of the due index would scan past
            // all their deliveries (a large backlog of one webhook makes that every row), so
            // probe each other webhook by the (webhook, due) index, a fair share each.
            let others: Vec<String> = self
                .conn
                .prepare_cached(
                    "SELECT id FROM webhooks WHERE id NOT IN (SELECT value FROM json_each(?1))",
                )?
                .query_map([json_list(skip)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let share = (limit as usize / others.len().max(1)).max(16);
            let mut ids = Vec::new();
            let mut probe = self.conn.prepare_cached(
                "SELECT id FROM deliveries WHERE webhook_id = ?1 AND status = 'pending' \
                 AND next_attempt_at <= ?2 AND (lease_expires_at IS NULL OR lease_expires_at < ?2) \
                 ORDER BY next_attempt_at LIMIT ?3",
            )?;
            for webhook in others {
                let room = (limit as usize).saturating_sub(ids.len()).min(share);
                if room == 0 {
                    break;
                }
                let found = probe
                    .query_map(params![webhook, now.as_millis(), room as i64], |r| {
                        r.get::<_, String>(0)
                    })?;
                for id in found {
                    ids.push(id?);
                }
            }
            ids
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let deliveries = self.all(
            &format!(
                "UPDATE deliveries SET lease_owner = ?1, lease_expires_at = ?2 \
                 WHERE id IN (SELECT value FROM json_each(?3)) RETURNING {DELIVERY_COLS}"
            ),
            params![lease.owner, lease.until.as_millis(), json_list(&ids)],
            rows::delivery,
        )?;
        let mut webhooks: Vec<Arc<Webhook>> = Vec::new();
        let mut claimed = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let webhook = match webhooks.iter().find(|w| w.id == delivery.webhook_id) {
                Some(w) => w.clone(),
                None => {
                    let w = self.one(
                        &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = ?1"),
                        &[&delivery.webhook_id],
                        rows::webhook,
                    )?;
                    let Some(w) = w else { continue };
                    let w = Arc::new(rows::open_webhook(w, self.keys)?);
                    webhooks.push(w.clone());
                    w
                }
            };
            let payload: String = self
                .conn
                .prepare_cached("SELECT payload FROM events WHERE id = ?1")?
                .query_row([&delivery.event_id], |r| r.get(0))?;
            claimed.push(Leased {
                delivery,
                webhook,
                payload: payload.into(),
                lease_until: lease.until,
            });
        }
        Ok(claimed)
    }

    async fn record_outcome(&mut self, o: &Outcome) -> StoreResult<bool> {
        let a = &o.attempt;
        let updated = self.exec(
            "UPDATE deliveries SET status = ?2, attempt_count = ?3, next_attempt_at = ?4, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5, last_attempt_at = ?7, \
             last_status_code = ?8, last_error = ?9 \
             WHERE id = ?1 AND status = 'pending' AND attempt_count = ?3 - 1 AND lease_owner = ?6",
            params![
                a.delivery_id,
                o.new_status.as_str(),
                a.attempt,
                o.next_attempt_at.map(Timestamp::as_millis),
                a.attempted_at.as_millis() + a.duration_ms as i64,
                o.lease_owner,
                a.attempted_at.as_millis(),
                a.status_code,
                a.error
            ],
        )?;
        if updated == 0 {
            return Ok(false);
        }
        self.exec(
            "INSERT INTO attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                a.delivery_id,
                a.attempt,
                a.attempted_at.as_millis(),
                a.duration_ms as i64,
                a.status_code,
                a.error,
                a.response_body
            ],
        )?;
        Ok(true)
    }

    async fn release_leases(&mut self, owner: Option<&str>) -> StoreResult<u64> {
        let n = self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND (?1 IS NULL OR lease_owner = ?1)",
            &[&owner],
        )?;
        Ok(n as u64)
    }

    async fn release_lease(&mut self, delivery_id: &str, owner: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1 AND lease_owner = ?2",
            &[&delivery_id, &owner],
        )?;
        Ok(())
    }

    async fn next_due_at(
        &mut self,
        now: Timestamp,
        skip: &[String],
    ) -> StoreResult<Option<Timestamp>> {
        let sql = if skip.is_empty() {
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' \
             AND (lease_expires_at IS NULL OR lease_expires_at < ?1) AND ?2 IS NOT NULL"
        } else {
            // Per webhook, by the (webhook, due) index, for the reason given in `claim_due`.
            "SELECT min(due) FROM (SELECT (SELECT min(d.next_attempt_at) FROM deliveries d \
               WHERE d.webhook_id = w.id AND d.status = 'pending' \
               AND (d.lease_expires_at IS NULL OR d.lease_expires_at < ?1)) AS due \
             FROM webhooks w WHERE w.id NOT IN (SELECT value FROM json_each(?2)))"
        };
        let v: Option<i64> = self
            .conn
            .prepare_cached(sql)?
            .query_row(params![now.as_millis(), json_list(skip)], |r| r.get(0))?;
        Ok(v.map(Timestamp::from_millis))
    }

    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>> {
        self.one(
            &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE workspace_id = ?1 AND id = ?2"),
            &[&ws, &id],
            rows::delivery,
        )
    }

    async fn list_deliveries(
        &mut self,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let status = status.map(DeliveryStatus::as_str);
        self.page(
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE webhook_id = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ),
            &[&webhook_id, &status],
            page,
            rows::delivery,
        )
    }

    async fn list_workspace_deliveries(
        &mut self,
        ws: &str,
        q: &DeliveryQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let (since, until) = (
            q.since.map(Timestamp::as_millis),
            q.until.map(Timestamp::as_millis),
        );
        self.page(
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE workspace_id = ?1 \
                 AND (?2 IS NULL OR webhook_id = ?2) AND (?3 IS NULL OR status = ?3) \
                 AND (?4 IS NULL OR event_type LIKE ?4) AND (?5 IS NULL OR created_at >= ?5) \
                 AND (?6 IS NULL OR created_at < ?6) AND (?7 IS NULL OR event_id = ?7) \
                 AND (?8 IS NULL OR id < ?8) ORDER BY id DESC LIMIT ?9"
            ),
            params![
                ws,
                q.webhook_id,
                q.status.map(DeliveryStatus::as_str),
                q.type_like(),
                since,
                until,
                q.event_id
            ],
            page,
            rows::delivery,
        )
    }

    async fn list_attempts(&mut self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        self.all(
            &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = ?1 ORDER BY attempt"),
            &[&delivery_id],
            rows::attempt,
        )
    }
}
