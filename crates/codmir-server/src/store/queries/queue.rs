//! The delivery queue's writes (`QueueTx`), once for both backends.

use async_trait::async_trait;
use codmir_core::time::Timestamp;
use codmir_core::webhook::Delivery;

use crate::store::conn::{Conn, HeldRow, args};
use crate::store::rows;
use crate::store::sql;
use crate::store::{Lease, Leased, Outcome, QueueTx, StoreResult};

#[async_trait]
impl<C: Conn> QueueTx for C {
    async fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> StoreResult<(u64, u64, u64)> {
        Conn::delete_old(self, delivery_floor, event_floor, limit).await
    }

    async fn mark_ready(&mut self, node: &str, now: Timestamp) -> StoreResult<()> {
        self.exec(&sql::MARK_READY, args![node, now]).await?;
        Ok(())
    }

    async fn insert_delivery(&mut self, d: &Delivery, lease: Option<&Lease>) -> StoreResult<()> {
        if self.hold(HeldRow::Delivery(d, lease)) {
            return Ok(());
        }
        self.exec(
            &sql::INSERT_DELIVERY,
            args![
                d.id,
                d.workspace_id,
                d.webhook_id,
                d.event_id,
                d.event_type.as_str(),
                d.status.as_str(),
                d.attempt_count,
                d.next_attempt_at,
                d.created_at,
                d.updated_at,
                d.redelivery_of,
                lease.map(|l| l.owner.as_str()),
                lease.map(|l| l.until),
                d.chain.as_ref().map(|(r, _)| r.as_str()),
                d.chain.as_ref().map(|(_, n)| *n as i64),
            ],
        )
        .await?;
        Ok(())
    }

    async fn lock_chain(
        &mut self,
        webhook_id: &str,
        resource_id: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.exec(&sql::LOCK_CHAIN, args![webhook_id, resource_id, now])
            .await?;
        Ok(())
    }

    async fn chain_busy(&mut self, webhook_id: &str, resource_id: &str) -> StoreResult<bool> {
        let busy = self
            .one(
                &sql::CHAIN_BUSY,
                args![webhook_id, resource_id],
                rows::first_int,
            )
            .await?;
        Ok(busy.unwrap_or(0) > 0)
    }

    async fn release_next(
        &mut self,
        webhook_id: &str,
        resource_id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<String>> {
        self.one(
            &sql::RELEASE_NEXT,
            args![webhook_id, resource_id, now],
            rows::first_text,
        )
        .await
    }

    async fn release_chains(&mut self, webhook_id: &str, now: Timestamp) -> StoreResult<u64> {
        let released = self
            .exec(&sql::RELEASE_CHAINS, args![webhook_id, now])
            .await?;
        self.exec(&sql::DELETE_CHAINS, args![webhook_id]).await?;
        Ok(released)
    }

    async fn announce_deliveries(&mut self) -> StoreResult<()> {
        self.announce().await
    }

    async fn make_due_now(&mut self, webhook_id: &str, now: Timestamp) -> StoreResult<u64> {
        self.exec(&sql::MAKE_DUE_NOW, args![webhook_id, now]).await
    }

    async fn cancel_pending_deliveries(
        &mut self,
        webhook_id: &str,
        reason: &str,
        at: Timestamp,
    ) -> StoreResult<u64> {
        let n = self
            .exec(&sql::CANCEL_PENDING, args![webhook_id, at, reason])
            .await?;
        // Nothing of its chains is pending any more.
        self.exec(&sql::DELETE_CHAINS, args![webhook_id]).await?;
        Ok(n)
    }

    async fn cancel_delivery(
        &mut self,
        id: &str,
        reason: &str,
        at: Timestamp,
    ) -> StoreResult<bool> {
        Ok(self
            .exec(&sql::CANCEL_DELIVERY, args![id, at, reason])
            .await?
            > 0)
    }

    async fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> StoreResult<Vec<Leased>> {
        Conn::claim_due(self, lease, now, limit, skip).await
    }

    async fn record_outcome(&mut self, o: &Outcome) -> StoreResult<bool> {
        let a = &o.attempt;
        let ended = a.attempted_at.as_millis() + a.duration_ms as i64;
        if self
            .exec(
                &sql::RECORD_OUTCOME,
                args![
                    a.delivery_id,
                    o.new_status.as_str(),
                    a.attempt,
                    o.next_attempt_at,
                    ended,
                    o.lease_owner,
                    a.attempted_at,
                    a.status_code,
                    a.error,
                ],
            )
            .await?
            == 0
        {
            return Ok(false);
        }
        self.exec(
            &sql::INSERT_ATTEMPT,
            args![
                a.delivery_id,
                a.attempt,
                a.attempted_at,
                a.duration_ms as i64,
                a.status_code,
                a.error,
                a.response_body,
                a.request_headers,
                a.response_headers,
            ],
        )
        .await?;
        Ok(true)
    }

    async fn record_outcomes(&mut self, outcomes: &[Outcome]) -> StoreResult<Vec<bool>> {
        if let Some(recorded) = self.record_outcomes_at_once(outcomes).await? {
            return Ok(recorded);
        }
        let mut recorded = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            recorded.push(self.record_outcome(o).await?);
        }
        Ok(recorded)
    }

    async fn release_leases(&mut self, owner: Option<&str>) -> StoreResult<u64> {
        self.exec(&sql::RELEASE_LEASES, args![owner]).await
    }

    async fn release_lease(&mut self, delivery_id: &str, owner: &str) -> StoreResult<()> {
        self.exec(&sql::RELEASE_LEASE, args![delivery_id, owner])
            .await?;
        Ok(())
    }
}
