//! What PostgreSQL does its own way in the delivery queue: claims with `FOR UPDATE SKIP
//! LOCKED`, retention in one statement, and a batch of outcomes as one set-based statement.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use codmir_core::time::Timestamp;

use super::{Params, PgTx};
use crate::store::conn::args;
use crate::store::rows::{self, Columns};
use crate::store::sql::postgres_only as q;
use crate::store::{Lease, Leased, Outcome, StoreError, StoreResult};

impl PgTx<'_> {
    pub(super) async fn claim(
        &self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Leased>> {
        let (owner, until) = (lease.owner.as_str(), lease.until);
        let rows = if skip.is_empty() {
            let a = args![owner, until, now, limit];
            self.query(q::CLAIM_DUE, a.iter()).await?
        } else {
            let a = args![owner, until, now, limit, skip];
            self.query(q::CLAIM_DUE_SKIPPING, a.iter()).await?
        };
        let deliveries = decode(&rows, rows::delivery)?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let webhook_ids: Vec<String> = deliveries.iter().map(|d| d.webhook_id.clone()).collect();
        let event_ids: Vec<String> = deliveries.iter().map(|d| d.event_id.clone()).collect();
        let rows = self
            .query(q::WEBHOOKS_BY_IDS, args![webhook_ids].iter())
            .await?;
        let webhooks = decode(&rows, rows::webhook)?
            .into_iter()
            .map(|w| rows::open_webhook(w, self.keys).map(Arc::new))
            .collect::<StoreResult<Vec<_>>>()?;
        let rows = self
            .query(q::PAYLOADS_BY_IDS, args![event_ids].iter())
            .await?;
        let payloads: HashMap<String, Arc<str>> = decode(&rows, rows::event)?
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

    pub(super) async fn retain(
        &self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> StoreResult<(u64, u64, u64)> {
        let rows = self
            .query(q::DELETE_OLD, args![delivery_floor, limit].iter())
            .await?;
        let (deliveries, attempts) = match rows.first() {
            Some(r) => (r.int(0)?, r.int(1)?),
            None => (0, 0),
        };
        let events = self
            .execute(q::DELETE_OLD_EVENTS, args![event_floor, limit].iter())
            .await?;
        Ok((deliveries as u64, attempts as u64, events))
    }

    /// One statement for the whole batch: the fenced updates, then the attempts of the
    /// deliveries they updated (row-at-a-time statements cost ~10× as much here). `None`
    /// when a delivery is in the batch twice.
    pub(super) async fn outcomes_set_based(
        &self,
        outcomes: &[Outcome],
    ) -> StoreResult<Option<Vec<bool>>> {
        if outcomes.is_empty() {
            return Ok(Some(Vec::new()));
        }
        // One statement sees each delivery once: a delivery twice in a batch (attempted again
        // after its lease ran out before the first outcome was written) is recorded row by
        // row, where the second outcome meets the fence the first one moved.
        let mut seen = HashSet::with_capacity(outcomes.len());
        if !outcomes
            .iter()
            .all(|o| seen.insert(o.attempt.delivery_id.as_str()))
        {
            return Ok(None);
        }
        let col = |f: fn(&Outcome) -> Option<i64>| outcomes.iter().map(f).collect::<Vec<_>>();
        let text = |f: for<'o> fn(&'o Outcome) -> Option<&'o str>| {
            outcomes.iter().map(f).collect::<Vec<_>>()
        };
        let int4 =
            |f: fn(&Outcome) -> Option<i32>| outcomes.iter().map(f).collect::<Vec<Option<i32>>>();
        let params: Params<'_> = &[
            &text(|o| Some(o.attempt.delivery_id.as_str())),
            &text(|o| Some(o.new_status.as_str())),
            &int4(|o| Some(o.attempt.attempt as i32)),
            &col(|o| o.next_attempt_at.map(Timestamp::as_millis)),
            &col(|o| Some(o.attempt.attempted_at.as_millis() + o.attempt.duration_ms as i64)),
            &text(|o| Some(o.lease_owner.as_str())),
            &col(|o| Some(o.attempt.attempted_at.as_millis())),
            &col(|o| Some(o.attempt.duration_ms as i64)),
            &int4(|o| o.attempt.status_code.map(i32::from)),
            &text(|o| o.attempt.error.as_deref()),
            &text(|o| o.attempt.response_body.as_deref()),
            &text(|o| o.attempt.request_headers.as_deref()),
            &text(|o| o.attempt.response_headers.as_deref()),
        ];
        let rows = self.query_params(q::RECORD_OUTCOMES, params).await?;
        let recorded: HashSet<String> = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Corrupt(format!("a recorded outcome's id: {e}")))?;
        Ok(Some(
            outcomes
                .iter()
                .map(|o| recorded.contains(&o.attempt.delivery_id))
                .collect(),
        ))
    }
}

/// Rows decoded, or the first error.
fn decode<T>(
    rows: &[tokio_postgres::Row],
    f: crate::store::conn::Decode<T>,
) -> StoreResult<Vec<T>> {
    rows.iter().map(|r| f(r)).collect()
}
