//! The row-level operations (`TrackerTx`, `OutboxTx`, `QueueTx`), written once for any
//! backend's transaction ([`Conn`]). The statements are in `sql.rs`; what differs per dialect
//! is behind `Conn`'s own methods.

use std::sync::Arc;

use async_trait::async_trait;
use codmir_core::event::Event;
use codmir_core::id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Comment, Member, Principal, Project, Ticket, User, Workspace};
use codmir_core::webhook::{Attempt, Delivery, DeliveryStatus, Webhook};

use super::conn::{Arg, Conn, Decode, HeldRow, args};
use super::rows::{self, headers_json, json_list};
use super::sql::{self, Sql};
use super::{
    ApiKeyRecord, DeliveryQuery, EventQuery, Idempotent, KeyInfo, Lease, Leased, OutboxTx, Outcome,
    Page, PageRequest, QueueTx, ReadTx, StoreResult, StoredEvent, TrackerTx, Webhooks,
};

/// The `LIMIT` of a page's query: one more than asked, to learn whether more exist.
fn overfetch(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

/// A page of a list query whose last two arguments are the cursor and [`overfetch`].
async fn paged<C: Conn, T: Send>(
    c: &mut C,
    sql: &'static Sql,
    args: &[Arg<'_>],
    page: &PageRequest,
    decode: Decode<T>,
) -> StoreResult<Page<T>> {
    let items = c.all(sql, args, decode).await?;
    Ok(Page::from_overfetch(items, page.limit))
}

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

    async fn queue_gauges(
        &mut self,
        now: Timestamp,
    ) -> StoreResult<(i64, i64, Option<Timestamp>, i64)> {
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
    ) -> StoreResult<Vec<(Timestamp, DeliveryStatus, i64)>> {
        self.all(
            &sql::DELIVERY_COUNTS,
            args![webhook_id, id::floor("dlv", since), since, bucket_ms],
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

    async fn get_delivery(&mut self, ws: &str, id: &str) -> StoreResult<Option<Delivery>> {
        self.one(&sql::GET_DELIVERY, args![ws, id], rows::delivery)
            .await
    }

    async fn list_deliveries(
        &mut self,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let status = status.map(DeliveryStatus::as_str);
        paged(
            self,
            &sql::LIST_DELIVERIES,
            args![webhook_id, status, page.after, overfetch(page)],
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

#[async_trait]
impl<C: Conn> TrackerTx for C {
    async fn insert_workspace(&mut self, w: &Workspace) -> StoreResult<()> {
        self.exec(&sql::INSERT_WORKSPACE, args![w.id, w.name, w.created_at])
            .await?;
        Ok(())
    }

    async fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        self.exec(
            &sql::INSERT_USER,
            args![u.id, u.workspace_id, u.name, u.email, u.created_at],
        )
        .await?;
        Ok(())
    }

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> StoreResult<()> {
        let hash = &k.secret_hash[..];
        self.exec(
            &sql::INSERT_API_KEY,
            args![k.id, k.workspace_id, k.user_id, hash, k.created_at],
        )
        .await?;
        Ok(())
    }

    async fn revoke_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<bool> {
        Ok(self.exec(&sql::REVOKE_API_KEY, args![id, at]).await? > 0)
    }

    async fn touch_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(&sql::TOUCH_API_KEY, args![id, at]).await?;
        Ok(())
    }

    async fn idempotency_claim(
        &mut self,
        ws: &str,
        key: &str,
        fingerprint: &[u8; 32],
        now: Timestamp,
        expired_before: Timestamp,
    ) -> StoreResult<Option<Idempotent>> {
        self.exec(&sql::IDEMPOTENCY_EXPIRE, args![ws, expired_before])
            .await?;
        let found = self
            .one(&sql::IDEMPOTENCY_GET, args![ws, key], rows::idempotent)
            .await?;
        // The answer kept may show a secret (a webhook's create): sealed at rest.
        let found = found
            .map(|mut f| {
                f.body = f
                    .body
                    .map(|b| rows::open_text(b, self.keys()))
                    .transpose()?;
                Ok::<_, super::StoreError>(f)
            })
            .transpose()?;
        if found.is_none() {
            // A concurrent claim of the same key (PostgreSQL) fails here on the primary key:
            // a conflict.
            let fingerprint = &fingerprint[..];
            self.exec(&sql::IDEMPOTENCY_INSERT, args![ws, key, fingerprint, now])
                .await?;
        }
        Ok(found)
    }

    async fn idempotency_finish(
        &mut self,
        ws: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()> {
        let body = rows::seal_text(body, self.keys());
        self.exec(&sql::IDEMPOTENCY_FINISH, args![ws, key, status, body])
            .await?;
        Ok(())
    }

    async fn idempotency_release(&mut self, ws: &str, key: &str) -> StoreResult<()> {
        self.exec(&sql::IDEMPOTENCY_RELEASE, args![ws, key]).await?;
        Ok(())
    }

    async fn insert_project(&mut self, p: &Project) -> StoreResult<()> {
        self.exec(
            &sql::INSERT_PROJECT,
            args![p.id, p.workspace_id, p.name, p.created_by, p.created_at],
        )
        .await?;
        Ok(())
    }

    async fn insert_member(&mut self, m: &Member) -> StoreResult<()> {
        self.exec(
            &sql::INSERT_MEMBER,
            args![m.project_id, m.user.id, m.role.as_str(), m.added_at],
        )
        .await?;
        Ok(())
    }

    async fn insert_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        if self.hold(HeldRow::Ticket(t)) {
            return Ok(());
        }
        self.exec(
            &sql::INSERT_TICKET,
            args![
                t.id,
                t.workspace_id,
                t.project_id,
                t.title,
                t.description,
                t.status.as_str(),
                t.priority.as_str(),
                t.assignee_id,
                t.created_by,
                t.created_at,
                t.updated_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn update_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        self.exec(
            &sql::UPDATE_TICKET,
            args![
                t.id,
                t.title,
                t.description,
                t.status.as_str(),
                t.priority.as_str(),
                t.assignee_id,
                t.updated_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_ticket(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(&sql::DELETE_TICKET, args![id, at]).await?;
        Ok(())
    }

    async fn insert_comment(&mut self, c: &Comment) -> StoreResult<()> {
        self.exec(
            &sql::INSERT_COMMENT,
            args![
                c.id,
                c.workspace_id,
                c.ticket_id,
                c.author_id,
                c.body,
                c.created_at
            ],
        )
        .await?;
        Ok(())
    }
}

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
    fn of(w: &Webhook, keys: Option<&super::seal::KeyRing>) -> Self {
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
            ],
        )
        .await?;
        Ok(())
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
        at: Timestamp,
    ) -> StoreResult<u64> {
        self.exec(&sql::CANCEL_PENDING, args![webhook_id, at]).await
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
            ],
        )
        .await?;
        Ok(true)
    }

    async fn record_outcomes(&mut self, outcomes: &[Outcome]) -> StoreResult<usize> {
        if let Some(recorded) = self.record_outcomes_at_once(outcomes).await? {
            return Ok(recorded);
        }
        let mut recorded = 0;
        for o in outcomes {
            recorded += usize::from(self.record_outcome(o).await?);
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
