//! What SQLite does its own way in the delivery queue: claims (probing each webhook when
//! some are busy) and retention, each in a few short statements.

use std::sync::Arc;

use codmir_core::time::Timestamp;
use codmir_core::webhook::Webhook;

use super::SqliteTx;
use crate::store::conn::args;
use crate::store::rows::{self, json_list};
use crate::store::sql::sqlite_only as q;
use crate::store::{Lease, Leased, StoreResult};

impl SqliteTx<'_> {
    pub(super) fn claim_due_now(
        &self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Leased>> {
        let ids = if skip.is_empty() {
            self.run_all(q::CLAIM_DUE_IDS, args![now, limit], |r| r.text(0))?
        } else {
            // Some webhooks are busy here. Filtering them out of the due index would scan past
            // all their deliveries (a large backlog of one webhook makes that every row), so
            // probe each other webhook by the (webhook, due) index, a fair share each.
            let others = self.run_all(q::CLAIM_OTHER_WEBHOOKS, args![skip], |r| r.text(0))?;
            let share = (limit as usize / others.len().max(1)).max(16);
            let mut ids = Vec::new();
            for webhook in others {
                let room = (limit as usize).saturating_sub(ids.len()).min(share);
                if room == 0 {
                    break;
                }
                let room = room as i64;
                ids.extend(self.run_all(q::CLAIM_PROBE, args![webhook, now, room], |r| r.text(0))?);
            }
            ids
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let deliveries = self.run_all(
            q::CLAIM_LEASE,
            args![lease.owner, lease.until, ids],
            rows::delivery,
        )?;
        let mut webhooks: Vec<Arc<Webhook>> = Vec::new();
        let mut claimed = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let webhook = match webhooks.iter().find(|w| w.id == delivery.webhook_id) {
                Some(w) => w.clone(),
                None => {
                    let by_id = q::WEBHOOK_BY_ID;
                    let w = self.run_one(by_id, args![delivery.webhook_id], rows::webhook)?;
                    let Some(w) = w else { continue };
                    let w = Arc::new(rows::open_webhook(w, self.keys)?);
                    webhooks.push(w.clone());
                    w
                }
            };
            let payload = q::EVENT_PAYLOAD;
            let payload = self.run_one(payload, args![delivery.event_id], |r| r.text(0))?;
            let Some(payload) = payload else { continue };
            claimed.push(Leased {
                delivery,
                webhook,
                payload: payload.into(),
                lease_until: lease.until,
            });
        }
        Ok(claimed)
    }

    pub(super) fn delete_old_now(
        &self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> StoreResult<(u64, u64, u64)> {
        let ids = self.run_all(q::OLD_DELIVERIES, args![delivery_floor, limit], |r| {
            r.text(0)
        })?;
        let (mut deliveries, mut attempts) = (0, 0);
        if !ids.is_empty() {
            let ids = json_list(&ids);
            attempts = self.run_exec(q::DELETE_ATTEMPTS_OF, args![ids])?;
            deliveries = self.run_exec(q::DELETE_DELIVERIES, args![ids])?;
        }
        let events = self.run_exec(q::DELETE_OLD_EVENTS, args![event_floor, limit])?;
        Ok((deliveries, attempts, events))
    }
}
