//! Every read, of all areas (`ReadTx`), once for both backends.

use std::sync::Arc;

use async_trait::async_trait;
use codmir_core::event::Event;
use codmir_core::id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Comment, Member, Principal, Project, Ticket, User, Workspace};
use codmir_core::webhook::{Attempt, Delivery, DeliveryStatus, Webhook};

use super::{overfetch, paged};
use crate::store::conn::{Conn, args};
use crate::store::rows::{self};
use crate::store::sql;
use crate::store::{
    ApiKeyRecord, DeliveryQuery, EventQuery, KeyInfo, Page, PageRequest, QueueFigures, ReadTx,
    StatusCount, StoreResult, StoredEvent, Webhooks,
};

#[async_trait]
impl<C: Conn> ReadTx for C {
    async fn workspace_count(&mut self) -> StoreResult<i64> {
        let n = self
            .one(&sql::WORKSPACE_COUNT, &[], rows::first_int)
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn get_workspace(&mut self, id: &str) -> StoreResult<Option<Workspace>> {
        self.one(&sql::GET_WORKSPACE, args![id], rows::workspace)
            .await
    }

    async fn find_workspace_by_name(&mut self, name: &str) -> StoreResult<Option<Workspace>> {
        self.one(&sql::FIND_WORKSPACE_BY_NAME, args![name], rows::workspace)
            .await
    }

    async fn find_user_by_name(&mut self, ws: &str, name: &str) -> StoreResult<Option<User>> {
        self.one(&sql::FIND_USER_BY_NAME, args![ws, name], rows::user)
            .await
    }

    async fn find_user_by_email(&mut self, ws: &str, email: &str) -> StoreResult<Option<User>> {
        self.one(&sql::FIND_USER_BY_EMAIL, args![ws, email], rows::user)
            .await
    }

    async fn get_user(&mut self, ws: &str, id: &str) -> StoreResult<Option<User>> {
        self.one(&sql::GET_USER, args![ws, id], rows::user).await
    }

    async fn get_api_key(&mut self, id: &str) -> StoreResult<Option<(ApiKeyRecord, Principal)>> {
        self.one(&sql::GET_API_KEY, args![id], rows::api_key).await
    }

    async fn list_api_keys(&mut self) -> StoreResult<Vec<KeyInfo>> {
        self.all(&sql::LIST_API_KEYS, &[], rows::key_info).await
    }

    async fn get_project(&mut self, ws: &str, id: &str) -> StoreResult<Option<Project>> {
        self.one(&sql::GET_PROJECT, args![ws, id], rows::project)
            .await
    }

    async fn list_projects(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Project>> {
        paged(
            self,
            &sql::LIST_PROJECTS,
            args![ws, page.after, overfetch(page)],
            page,
            rows::project,
        )
        .await
    }

    async fn get_member(&mut self, project_id: &str, user_id: &str) -> StoreResult<Option<Member>> {
        self.one(&sql::GET_MEMBER, args![project_id, user_id], rows::member)
            .await
    }

    async fn list_members(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Member>> {
        paged(
            self,
            &sql::LIST_MEMBERS,
            args![project_id, page.after, overfetch(page)],
            page,
            rows::member,
        )
        .await
    }

    async fn get_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        self.one(&sql::GET_TICKET, args![ws, id], rows::ticket)
            .await
    }

    async fn lock_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        self.one(&sql::LOCK_TICKET, args![ws, id], rows::ticket)
            .await
    }

    async fn list_tickets(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Ticket>> {
        paged(
            self,
            &sql::LIST_TICKETS,
            args![project_id, page.after, overfetch(page)],
            page,
            rows::ticket,
        )
        .await
    }

    async fn list_comments(
        &mut self,
        ticket_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Comment>> {
        paged(
            self,
            &sql::LIST_COMMENTS,
            args![ticket_id, page.after, overfetch(page)],
            page,
            rows::comment,
        )
        .await
    }

    async fn get_event(&mut self, ws: &str, id: &str) -> StoreResult<Option<StoredEvent>> {
        self.one(&sql::GET_EVENT, args![ws, id], rows::event).await
    }

    async fn events_between(
        &mut self,
        ws: &str,
        since: Timestamp,
        until: Timestamp,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let (from, to) = (id::floor("evt", since), id::floor("evt", until));
        self.all(
            &sql::EVENTS_BETWEEN,
            args![ws, since, until, after, limit, from, to],
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
        let statement = if q.ascending {
            &sql::LIST_EVENTS_FORWARD
        } else {
            &sql::LIST_EVENTS_BACK
        };
        paged(
            self,
            statement,
            args![
                ws,
                q.type_like(),
                q.project_id,
                q.since,
                q.until,
                page.after,
                overfetch(page)
            ],
            page,
            rows::event,
        )
        .await
    }

    async fn get_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        let w = self
            .one(&sql::GET_WEBHOOK, args![ws, id], rows::webhook)
            .await?;
        w.map(|w| rows::open_webhook(w, self.keys())).transpose()
    }

    async fn expired_webhooks(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>> {
        self.all(&sql::EXPIRED_WEBHOOKS, args![now, limit], |r| {
            Ok((r.text(0)?, r.text(1)?))
        })
        .await
    }

    async fn lock_webhook(&mut self, ws: &str, id: &str) -> StoreResult<Option<Webhook>> {
        let w = self
            .one(&sql::LOCK_WEBHOOK, args![ws, id], rows::webhook)
            .await?;
        w.map(|w| rows::open_webhook(w, self.keys())).transpose()
    }

    async fn webhook_count(&mut self, ws: &str) -> StoreResult<i64> {
        let n = self
            .one(&sql::WEBHOOK_COUNT, args![ws], rows::first_int)
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn list_webhooks(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Webhook>> {
        let items = self
            .all(
                &sql::LIST_WEBHOOKS,
                args![ws, page.after, overfetch(page)],
                rows::webhook,
            )
            .await?;
        Page::from_overfetch(items, page.limit).try_map(|w| rows::open_webhook(w, self.keys()))
    }

    async fn enabled_webhooks(&mut self, ws: &str) -> StoreResult<Webhooks> {
        let version = self.webhooks_version(ws).await?;
        if let Some(hooks) = self.fanout().get(ws, version) {
            return Ok(hooks);
        }
        let hooks = self
            .all(&sql::ENABLED_WEBHOOKS, args![ws], rows::webhook)
            .await?;
        let hooks = hooks
            .into_iter()
            .map(|w| rows::open_webhook(w, self.keys()).map(Arc::new))
            .collect::<StoreResult<Webhooks>>()?;
        self.fanout().put(ws, version, hooks.clone());
        Ok(hooks)
    }

    async fn delivery_states(
        &mut self,
        webhook_id: &str,
        event_ids: &[String],
    ) -> StoreResult<Vec<(String, String, DeliveryStatus)>> {
        self.all(
            &sql::DELIVERY_STATES,
            args![webhook_id, event_ids],
            rows::delivery_state,
        )
        .await
    }

    async fn queue_gauges(&mut self, now: Timestamp) -> StoreResult<QueueFigures> {
        let row = self
            .one(&sql::QUEUE_GAUGES, args![now], rows::queue_gauges)
            .await?;
        Ok(row.unwrap_or_default())
    }

    async fn delivery_counts(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
        bucket_ms: i64,
    ) -> StoreResult<Vec<StatusCount>> {
        self.all(
            &sql::DELIVERY_COUNTS,
            args![webhook_id, id::floor("dlv", since), since, bucket_ms],
            rows::delivery_count,
        )
        .await
    }

    async fn waiting_chains(&mut self, webhook_id: &str) -> StoreResult<i64> {
        let n = self
            .one(&sql::WAITING_CHAINS, args![webhook_id], rows::first_int)
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn chain_head(
        &mut self,
        webhook_id: &str,
        resource_id: &str,
        before: u64,
    ) -> StoreResult<Option<Delivery>> {
        let before = before as i64;
        self.one(
            &sql::CHAIN_HEAD,
            args![webhook_id, resource_id, before],
            rows::delivery,
        )
        .await
    }

    async fn ping_counts(
        &mut self,
        webhook_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<StatusCount>> {
        self.all(
            &sql::PING_COUNTS,
            args![webhook_id, id::floor("dlv", since), since],
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
            &sql::SUCCESS_LATENCIES,
            args![webhook_id, id::floor("dlv", since), since],
            rows::first_int,
        )
        .await
    }

    async fn next_due_at(
        &mut self,
        now: Timestamp,
        skip: &[String],
    ) -> StoreResult<Option<Timestamp>> {
        let due = if skip.is_empty() {
            self.one(&sql::NEXT_DUE_AT, args![now], |r| r.opt_int(0))
                .await?
        } else {
            self.one(&sql::NEXT_DUE_AT_SKIPPING, args![now, skip], |r| {
                r.opt_int(0)
            })
            .await?
        };
        Ok(due.flatten().map(Timestamp::from_millis))
    }

    async fn pending_count(&mut self, ws: &str, up_to: u64) -> StoreResult<u64> {
        let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
        let n = self
            .one(&sql::PENDING_COUNT, args![ws, up_to], rows::first_int)
            .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>> {
        self.one(&sql::GET_DELIVERY, args![ws, id], rows::delivery)
            .await
    }

    async fn list_deliveries(
        &mut self,
        webhook_id: &str,
        status: Option<(DeliveryStatus, Option<bool>)>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let attempted = status.and_then(|(_, a)| a).map(i64::from);
        let status = status.map(|(s, _)| s.as_str());
        paged(
            self,
            &sql::LIST_DELIVERIES,
            args![webhook_id, status, page.after, overfetch(page), attempted],
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
        let statement = &sql::LIST_WORKSPACE_DELIVERIES;
        paged(
            self,
            statement,
            args![
                ws,
                q.webhook_id,
                q.status.map(DeliveryStatus::as_str),
                q.type_like(),
                q.since,
                q.until,
                q.event_id,
                page.after,
                overfetch(page),
                q.attempted.map(i64::from),
            ],
            page,
            rows::delivery,
        )
        .await
    }

    async fn list_attempts(&mut self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        self.all(&sql::LIST_ATTEMPTS, args![delivery_id], rows::attempt)
            .await
    }
}
