//! The delivery queue on PostgreSQL: deliveries with their leases and claims (`FOR UPDATE
//! SKIP LOCKED`), `NOTIFY`, outcomes (set-based per batch), the attempt log, and retention.

use std::sync::Arc;

use async_trait::async_trait;
use codmir_core::id;
use codmir_core::time::Timestamp;
use codmir_core::webhook::{Attempt, Delivery, DeliveryStatus};

use super::{CHANNEL, PgTx};
use crate::store::rows::{
    self, ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_INSERT_COLS, EVENT_COLS, WEBHOOK_COLS,
};
use crate::store::{
    DeliveryQuery, Lease, Leased, Outcome, Page, PageRequest, QueueTx, StoreResult,
};

#[async_trait]
impl QueueTx for PgTx<'_> {
    async fn delivery_states(
        &mut self,
        webhook_id: &str,
        event_ids: &[String],
    ) -> StoreResult<Vec<(String, String, DeliveryStatus)>> {
        self.all(
            "SELECT event_id, id, status FROM deliveries WHERE webhook_id = $1 AND event_id = ANY($2)",
            &[&webhook_id, &event_ids],
            rows::delivery_state,
        )
        .await
    }

    async fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> StoreResult<(u64, u64, u64)> {
        let limit = i64::from(limit);
        // Rows another node is deleting (or attempting) right now are skipped, not waited for.
        let rows = self
            .rows(
                "WITH doomed AS (SELECT id FROM deliveries WHERE id < $1 AND status <> 'pending' \
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED), \
                 a AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM doomed) RETURNING 1), \
                 d AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM doomed) RETURNING 1) \
                 SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM a)",
                &[&delivery_floor, &limit],
            )
            .await?;
        let (deliveries, attempts): (i64, i64) =
            rows.first().map_or((0, 0), |r| (r.get(0), r.get(1)));
        let events = self
            .exec(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id < $1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) \
                 ORDER BY e.id LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&event_floor, &limit],
            )
            .await?;
        Ok((deliveries as u64, attempts as u64, events))
    }

    async fn insert_delivery(&mut self, d: &Delivery, lease: Option<&Lease>) -> StoreResult<()> {
        let (owner, until) = (
            lease.map(|l| l.owner.as_str()),
            lease.map(|l| l.until.as_millis()),
        );
        if self.hold_delivery(d, owner.map(|o| (o.to_owned(), until.unwrap_or(0)))) {
            return Ok(());
        }
        let attempts = d.attempt_count as i32;
        self.exec(
            &format!(
                "INSERT INTO deliveries ({DELIVERY_INSERT_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ),
            &[
                &d.id,
                &d.workspace_id,
                &d.webhook_id,
                &d.event_id,
                &d.event_type.as_str(),
                &d.status.as_str(),
                &attempts,
                &d.next_attempt_at.map(Timestamp::as_millis),
                &d.created_at.as_millis(),
                &d.updated_at.as_millis(),
                &d.redelivery_of,
                &owner,
                &until,
            ],
        )
        .await?;
        Ok(())
    }

    async fn announce_deliveries(&mut self) -> StoreResult<()> {
        // Delivered to every listening node when this transaction commits, coalesced.
        self.exec(&format!("NOTIFY {CHANNEL}"), &[]).await?;
        Ok(())
    }

    async fn make_due_now(&mut self, webhook_id: &str, now: Timestamp) -> StoreResult<u64> {
        self.exec(
            "UPDATE deliveries SET next_attempt_at = $2, updated_at = $2 \
             WHERE webhook_id = $1 AND status = 'pending' AND next_attempt_at > $2",
            &[&webhook_id, &now.as_millis()],
        )
        .await
    }

    async fn queue_gauges(
        &mut self,
        now: Timestamp,
    ) -> StoreResult<(i64, i64, Option<Timestamp>, i64)> {
        let due = "FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
                   AND (lease_expires_at IS NULL OR lease_expires_at < $1)";
        let row = self
            .one(
                &format!(
                    "SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'), \
                     (SELECT count(*) {due}), (SELECT min(next_attempt_at) {due}), \
                     (SELECT count(*) FROM webhooks WHERE NOT enabled)"
                ),
                &[&now.as_millis()],
                rows::queue_gauges,
            )
            .await?;
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
            "SELECT (created_at / $4) * $4 AS bucket, status, count(*) FROM deliveries \
             WHERE webhook_id = $1 AND id >= $2 AND created_at >= $3 GROUP BY bucket, status",
            &[
                &webhook_id,
                &id::floor("dlv", since),
                &since.as_millis(),
                &bucket_ms,
            ],
            rows::delivery_count,
        )
        .await
    }

    async fn success_latencies(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<i64>> {
        self.all(
            "SELECT updated_at - created_at AS took FROM deliveries WHERE webhook_id = $1 \
             AND id >= $2 AND created_at >= $3 AND status = 'succeeded' ORDER BY took",
            &[&webhook_id, &id::floor("dlv", since), &since.as_millis()],
            rows::first_int,
        )
        .await
    }

    async fn cancel_pending_deliveries(
        &mut self,
        webhook_id: &str,
        at: Timestamp,
    ) -> StoreResult<u64> {
        self.exec(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $2 WHERE webhook_id = $1 AND status = 'pending'",
            &[&webhook_id, &at.as_millis()],
        )
        .await
    }

    async fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Leased>> {
        let skip: Vec<String> = skip.to_vec();
        let (owner, until) = (lease.owner.as_str(), lease.until.as_millis());
        let (now, limit) = (now.as_millis(), i64::from(limit));
        let deliveries = self
            .all(
                &format!(
                    "WITH due AS ({}) \
                     UPDATE deliveries d SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE d.id = due.id \
                     RETURNING {}",
                    if skip.is_empty() {
                        // The oldest due deliveries of any webhook, by the due index.
                        "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
                         AND (lease_expires_at IS NULL OR lease_expires_at < $3) AND cardinality($5::text[]) = 0 \
                         ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED"
                    } else {
                        // Some webhooks are busy here: probe each other webhook by the (webhook,
                        // due) index rather than scan past every delivery of the busy ones.
                        "SELECT x.id FROM webhooks w CROSS JOIN LATERAL ( \
                           SELECT id FROM deliveries WHERE webhook_id = w.id AND status = 'pending' \
                           AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
                           ORDER BY next_attempt_at LIMIT greatest(16, $4 / greatest(1, (SELECT count(*) FROM webhooks))) \
                           FOR UPDATE SKIP LOCKED) x \
                         WHERE w.id <> ALL($5::text[]) LIMIT $4"
                    },
                    DELIVERY_COLS.split(", ").map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ")
                ),
                &[&owner, &until, &now, &limit, &skip],
                rows::delivery,
            )
            .await?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let webhook_ids: Vec<String> = deliveries.iter().map(|d| d.webhook_id.clone()).collect();
        let event_ids: Vec<String> = deliveries.iter().map(|d| d.event_id.clone()).collect();
        let webhooks = self
            .all(
                &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = ANY($1)"),
                &[&webhook_ids],
                rows::webhook,
            )
            .await?
            .into_iter()
            .map(|w| rows::open_webhook(w, self.keys).map(Arc::new))
            .collect::<StoreResult<Vec<_>>>()?;
        let payloads = self
            .all(
                &format!("SELECT {EVENT_COLS} FROM events WHERE id = ANY($1)"),
                &[&event_ids],
                rows::event,
            )
            .await?;
        let payloads: std::collections::HashMap<String, Arc<str>> = payloads
            .into_iter()
            .map(|e| (e.id, Arc::from(e.payload)))
            .collect();
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let webhook = webhooks
                    .iter()
                    .find(|w| w.id == delivery.webhook_id)?
                    .clone();
                let payload = payloads.get(&delivery.event_id).cloned()?;
                Some(Leased {
                    delivery,
                    webhook,
                    payload,
                    lease_until: lease.until,
                })
            })
            .collect())
    }

    async fn record_outcome(&mut self, o: &Outcome) -> StoreResult<bool> {
        let a = &o.attempt;
        let attempt = a.attempt as i32;
        let status_code = a.status_code.map(i32::from);
        let updated = self
            .exec(
                "UPDATE deliveries SET status = $2, attempt_count = $3, next_attempt_at = $4, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $5, last_attempt_at = $7, \
                 last_status_code = $8, last_error = $9 \
                 WHERE id = $1 AND status = 'pending' AND attempt_count = $3 - 1 AND lease_owner = $6",
                &[
                    &a.delivery_id,
                    &o.new_status.as_str(),
                    &attempt,
                    &o.next_attempt_at.map(Timestamp::as_millis),
                    &(a.attempted_at.as_millis() + a.duration_ms as i64),
                    &o.lease_owner,
                    &a.attempted_at.as_millis(),
                    &status_code,
                    &a.error,
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        self.exec(
            "INSERT INTO attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &a.delivery_id,
                &attempt,
                &a.attempted_at.as_millis(),
                &(a.duration_ms as i64),
                &status_code,
                &a.error,
                &a.response_body,
            ],
        )
        .await?;
        Ok(true)
    }

    /// One statement for the whole batch: the fenced updates, then the attempts of the
    /// deliveries they updated (row-at-a-time statements cost ~10× as much here).
    async fn record_outcomes(&mut self, outcomes: &[Outcome]) -> StoreResult<usize> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        // One statement sees each delivery once: a delivery twice in a batch (attempted again
        // after its lease ran out before the first outcome was written) is recorded row by
        // row, where the second outcome meets the fence the first one moved.
        let mut seen = std::collections::HashSet::with_capacity(outcomes.len());
        if !outcomes
            .iter()
            .all(|o| seen.insert(o.attempt.delivery_id.as_str()))
        {
            let mut recorded = 0;
            for o in outcomes {
                recorded += usize::from(self.record_outcome(o).await?);
            }
            return Ok(recorded);
        }
        let n = outcomes.len();
        let mut ids = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut next = Vec::with_capacity(n);
        let mut updated = Vec::with_capacity(n);
        let mut owners = Vec::with_capacity(n);
        let mut attempted = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        for o in outcomes {
            let a = &o.attempt;
            ids.push(a.delivery_id.as_str());
            statuses.push(o.new_status.as_str());
            attempts.push(a.attempt as i32);
            next.push(o.next_attempt_at.map(Timestamp::as_millis));
            updated.push(a.attempted_at.as_millis() + a.duration_ms as i64);
            owners.push(o.lease_owner.as_str());
            attempted.push(a.attempted_at.as_millis());
            durations.push(a.duration_ms as i64);
            codes.push(a.status_code.map(i32::from));
            errors.push(a.error.as_deref());
            bodies.push(a.response_body.as_deref());
        }
        let recorded = self
            .exec(
                "WITH o AS ( \
                   SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int8[], \
                     $6::text[], $7::int8[], $8::int8[], $9::int4[], $10::text[], $11::text[]) \
                   AS o(delivery_id, new_status, attempt, next_attempt_at, updated_at, lease_owner, \
                        attempted_at, duration_ms, status_code, error, response_body)), \
                 u AS ( \
                   UPDATE deliveries d SET status = o.new_status, attempt_count = o.attempt, \
                     next_attempt_at = o.next_attempt_at, lease_owner = NULL, lease_expires_at = NULL, \
                     updated_at = o.updated_at, last_attempt_at = o.attempted_at, \
                     last_status_code = o.status_code, last_error = o.error \
                   FROM o WHERE d.id = o.delivery_id AND d.status = 'pending' \
                     AND d.attempt_count = o.attempt - 1 AND d.lease_owner = o.lease_owner \
                   RETURNING d.id) \
                 INSERT INTO attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body) \
                 SELECT o.delivery_id, o.attempt, o.attempted_at, o.duration_ms, o.status_code, o.error, o.response_body \
                 FROM o JOIN u ON u.id = o.delivery_id",
                &[
                    &ids, &statuses, &attempts, &next, &updated, &owners, &attempted, &durations,
                    &codes, &errors, &bodies,
                ],
            )
            .await?;
        Ok(recorded as usize)
    }

    async fn release_leases(&mut self, owner: Option<&str>) -> StoreResult<u64> {
        self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND ($1::text IS NULL OR lease_owner = $1)",
            &[&owner],
        )
        .await
    }

    async fn release_lease(&mut self, delivery_id: &str, owner: &str) -> StoreResult<()> {
        self.exec(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2",
            &[&delivery_id, &owner],
        )
        .await?;
        Ok(())
    }

    async fn next_due_at(
        &mut self,
        now: Timestamp,
        skip: &[String],
    ) -> StoreResult<Option<Timestamp>> {
        let skip: Vec<String> = skip.to_vec();
        let rows = self
            .rows(
                if skip.is_empty() {
                    "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' \
                     AND (lease_expires_at IS NULL OR lease_expires_at < $1) AND cardinality($2::text[]) = 0"
                } else {
                    // Per webhook, by the (webhook, due) index, as in `claim_due`.
                    "SELECT min((SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.webhook_id = w.id \
                       AND d.status = 'pending' AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $1))) \
                     FROM webhooks w WHERE w.id <> ALL($2::text[])"
                },
                &[&now.as_millis(), &skip],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(Timestamp::from_millis))
    }

    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>> {
        self.one(
            &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            rows::delivery,
        )
        .await
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
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE webhook_id = $1 \
                 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            ),
            &[&webhook_id, &status],
            page,
            rows::delivery,
        )
        .await
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
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE workspace_id = $1 \
                 AND ($2::text IS NULL OR webhook_id = $2) AND ($3::text IS NULL OR status = $3) \
                 AND ($4::text IS NULL OR event_type LIKE $4) AND ($5::int8 IS NULL OR created_at >= $5) \
                 AND ($6::int8 IS NULL OR created_at < $6) AND ($7::text IS NULL OR event_id = $7) \
                 AND ($8::text IS NULL OR id < $8) ORDER BY id DESC LIMIT $9"
            ),
            &[
                &ws,
                &q.webhook_id,
                &q.status.map(DeliveryStatus::as_str),
                &q.type_like(),
                &since,
                &until,
                &q.event_id,
            ],
            page,
            rows::delivery,
        )
        .await
    }

    async fn list_attempts(&mut self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        self.all(
            &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = $1 ORDER BY attempt"),
            &[&delivery_id],
            rows::attempt,
        )
        .await
    }
}
