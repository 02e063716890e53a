//! Row decoding, once for both backends: each backend's row type implements [`Columns`], and
//! the functions here turn a row into a domain value. A value that does not parse (an unknown
//! status, a column of the wrong type) is [`StoreError::Corrupt`] on either backend.
//!
//! Each decoder reads the columns of its list in `sql.rs` (`user` those of `user_cols!()`), in
//! that order.

use codmir_core::event::{Event, EventType};
use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    Comment, Member, Principal, Priority, Project, Role, Ticket, TicketStatus, User, Workspace,
};
use codmir_core::webhook::{
    Attempt, CustomHeaders, Delivery, DeliveryOrder, DeliveryStatus, EndpointUrl, EventFilter,
    Webhook, WebhookSecret,
};

use super::seal::KeyRing;
use super::{
    ApiKeyRecord, Idempotent, KeyInfo, QueueFigures, StatusCount, StoreError, StoreResult,
    StoredEvent,
};

/// The typed reads of one row that the decoders need, by column index.
pub(super) trait Columns {
    fn text(&self, i: usize) -> StoreResult<String>;
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>>;
    /// Any integer column (SQLite's INTEGER, PostgreSQL's INT4 or INT8).
    fn int(&self, i: usize) -> StoreResult<i64>;
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>>;
    fn flag(&self, i: usize) -> StoreResult<bool>;
    fn bytes(&self, i: usize) -> StoreResult<Vec<u8>>;
}

pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn ts(r: &dyn Columns, i: usize) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_millis(r.int(i)?))
}

fn opt_ts(r: &dyn Columns, i: usize) -> StoreResult<Option<Timestamp>> {
    Ok(r.opt_int(i)?.map(Timestamp::from_millis))
}

fn count(r: &dyn Columns, i: usize, what: &str) -> StoreResult<u32> {
    u32::try_from(r.int(i)?).map_err(|e| corrupt(what, e))
}

pub(super) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

pub(super) fn workspace(r: &dyn Columns) -> StoreResult<Workspace> {
    Ok(Workspace {
        id: r.text(0)?,
        name: r.text(1)?,
        created_at: ts(r, 2)?,
    })
}

pub(super) fn user(r: &dyn Columns) -> StoreResult<User> {
    user_at(r, 0)
}

/// A user whose columns (`user_cols!()`) start at `base`.
fn user_at(r: &dyn Columns, base: usize) -> StoreResult<User> {
    Ok(User {
        id: r.text(base)?,
        workspace_id: r.text(base + 1)?,
        name: r.text(base + 2)?,
        email: r.opt_text(base + 3)?,
        created_at: ts(r, base + 4)?,
    })
}

pub(super) fn key_info(r: &dyn Columns) -> StoreResult<KeyInfo> {
    Ok(KeyInfo {
        id: r.text(0)?,
        workspace: r.text(1)?,
        user: r.text(2)?,
        created_at: ts(r, 3)?,
        last_used_at: opt_ts(r, 4)?,
        revoked_at: opt_ts(r, 5)?,
        workspace_id: r.text(6)?,
    })
}

pub(super) fn idempotent(r: &dyn Columns) -> StoreResult<Idempotent> {
    Ok(Idempotent {
        fingerprint: r.bytes(0)?,
        status: r
            .opt_int(1)?
            .map(|s| u16::try_from(s).map_err(|e| corrupt("idempotency_keys.status", e)))
            .transpose()?,
        body: r.opt_text(2)?,
        claimed_at: Timestamp::from_millis(r.int(3)?),
    })
}

pub(super) fn api_key(r: &dyn Columns) -> StoreResult<(ApiKeyRecord, Principal)> {
    let secret_hash: [u8; 32] = r
        .bytes(3)?
        .try_into()
        .map_err(|_| corrupt("api_keys.secret_hash", "not 32 bytes"))?;
    let key = ApiKeyRecord {
        id: r.text(0)?,
        workspace_id: r.text(1)?,
        user_id: r.text(2)?,
        secret_hash,
        created_at: ts(r, 4)?,
    };
    let principal = Principal {
        workspace_id: key.workspace_id.clone(),
        user_id: key.user_id.clone(),
        user_name: r.text(5)?,
    };
    Ok((key, principal))
}

pub(super) fn project(r: &dyn Columns) -> StoreResult<Project> {
    Ok(Project {
        id: r.text(0)?,
        workspace_id: r.text(1)?,
        name: r.text(2)?,
        created_by: r.text(3)?,
        created_at: ts(r, 4)?,
    })
}

pub(super) fn member(r: &dyn Columns) -> StoreResult<Member> {
    Ok(Member {
        project_id: r.text(0)?,
        role: Role::parse(&r.text(1)?).map_err(|e| corrupt("project_members.role", e))?,
        added_at: ts(r, 2)?,
        user: user_at(r, 3)?,
    })
}

pub(super) fn ticket(r: &dyn Columns) -> StoreResult<Ticket> {
    Ok(Ticket {
        id: r.text(0)?,
        workspace_id: r.text(1)?,
        project_id: r.text(2)?,
        title: r.text(3)?,
        description: r.opt_text(4)?,
        status: TicketStatus::parse(&r.text(5)?).map_err(|e| corrupt("tickets.status", e))?,
        priority: Priority::parse(&r.text(6)?).map_err(|e| corrupt("tickets.priority", e))?,
        assignee_id: r.opt_text(7)?,
        created_by: r.text(8)?,
        created_at: ts(r, 9)?,
        updated_at: ts(r, 10)?,
    })
}

pub(super) fn comment(r: &dyn Columns) -> StoreResult<Comment> {
    Ok(Comment {
        id: r.text(0)?,
        workspace_id: r.text(1)?,
        ticket_id: r.text(2)?,
        author_id: r.text(3)?,
        body: r.text(4)?,
        created_at: ts(r, 5)?,
    })
}

pub(super) fn event_full(r: &dyn Columns) -> StoreResult<Event> {
    Ok(Event {
        id: r.text(0)?,
        workspace_id: r.text(1)?,
        project_id: r.opt_text(2)?,
        event_type: EventType::parse(&r.text(3)?).map_err(|e| corrupt("events.type", e))?,
        created_at: ts(r, 4)?,
        // Not columns: the payload carries them, and nothing stored is ordered by them.
        resource_id: None,
        sequence: None,
        payload: r.text(5)?,
    })
}

pub(super) fn queue_gauges(r: &dyn Columns) -> StoreResult<QueueFigures> {
    Ok(QueueFigures {
        pending: r.int(0)?,
        due: r.int(1)?,
        oldest_due: opt_ts(r, 2)?,
        disabled_webhooks: r.int(3)?,
        waiting_chains: r.int(4)?,
        oldest_waiting: opt_ts(r, 5)?,
    })
}

/// `(failing_since, consecutive_failures)` of a webhook.
pub(super) fn failure_run(r: &dyn Columns) -> StoreResult<(Option<Timestamp>, u32)> {
    Ok((opt_ts(r, 0)?, count(r, 1, "webhooks.consecutive_failures")?))
}

/// `(event_id, delivery_id, status)` of a delivery.
pub(super) fn delivery_state(r: &dyn Columns) -> StoreResult<(String, String, DeliveryStatus)> {
    Ok((
        r.text(0)?,
        r.text(1)?,
        DeliveryStatus::parse(&r.text(2)?).map_err(|e| corrupt("deliveries.status", e))?,
    ))
}

/// A row of a statistics query.
pub(super) fn delivery_count(r: &dyn Columns) -> StoreResult<StatusCount> {
    Ok(StatusCount {
        bucket: ts(r, 0)?,
        status: DeliveryStatus::parse(&r.text(1)?).map_err(|e| corrupt("deliveries.status", e))?,
        count: r.int(2)?,
        attempted: r.int(3)?,
    })
}

pub(super) fn first_text(r: &dyn Columns) -> StoreResult<String> {
    r.text(0)
}

pub(super) fn first_int(r: &dyn Columns) -> StoreResult<i64> {
    r.int(0)
}

pub(super) fn event(r: &dyn Columns) -> StoreResult<StoredEvent> {
    Ok(StoredEvent {
        id: r.text(0)?,
        payload: r.text(1)?,
    })
}

/// A webhook's custom headers as stored: a JSON array of `[name, value]` pairs.
pub(super) fn headers_json(h: &CustomHeaders) -> String {
    serde_json::to_string(h.pairs()).unwrap_or_else(|_| "[]".into())
}

fn headers_from(raw: &str) -> StoreResult<CustomHeaders> {
    // The column's default for rows written before headers existed is `{}`.
    if raw == "{}" {
        return Ok(CustomHeaders::default());
    }
    let pairs: Vec<(String, String)> =
        serde_json::from_str(raw).map_err(|e| corrupt("webhooks.headers", e))?;
    CustomHeaders::parse(&pairs).map_err(|e| corrupt("webhooks.headers", e))
}

fn opt_count(r: &dyn Columns, i: usize, what: &str) -> StoreResult<Option<u32>> {
    r.opt_int(i)?
        .map(|n| u32::try_from(n).map_err(|e| corrupt(what, e)))
        .transpose()
}
/// A webhook as read, its secrets and its custom headers (whose values may be credentials)
/// possibly still sealed: [`open_webhook`] makes it a [`Webhook`].
pub(super) struct StoredWebhook {
    webhook: Webhook,
    headers: String,
}

pub(super) fn webhook(r: &dyn Columns) -> StoreResult<StoredWebhook> {
    let events: Vec<String> =
        serde_json::from_str(&r.text(3)?).map_err(|e| corrupt("webhooks.events", e))?;
    let webhook = Webhook {
        id: r.text(0)?,
        workspace_id: r.text(1)?,
        url: EndpointUrl::from_stored(r.text(2)?),
        events: EventFilter::parse(&events).map_err(|e| corrupt("webhooks.events", e))?,
        project_ids: serde_json::from_str(&r.text(4)?)
            .map_err(|e| corrupt("webhooks.project_ids", e))?,
        description: r.opt_text(5)?,
        // Possibly sealed: the backend opens it (`open_webhook`).
        secret: WebhookSecret::from_stored(r.text(6)?),
        enabled: r.flag(7)?,
        created_at: ts(r, 8)?,
        updated_at: ts(r, 9)?,
        disabled_reason: r.opt_text(10)?,
        disabled_at: opt_ts(r, 11)?,
        max_in_flight: opt_count(r, 12, "webhooks.max_in_flight")?,
        rate_limit_per_second: opt_count(r, 13, "webhooks.rate_limit_per_second")?,
        headers: CustomHeaders::default(),
        previous_secret: match (r.opt_text(15)?, opt_ts(r, 16)?) {
            (Some(s), Some(until)) => Some((WebhookSecret::from_stored(s), until)),
            _ => None,
        },
        expires_at: opt_ts(r, 17)?,
        ordering: DeliveryOrder::parse(&r.text(18)?)
            .map_err(|e| corrupt("webhooks.ordering", e))?,
    };
    Ok(StoredWebhook {
        webhook,
        headers: r.text(14)?,
    })
}

/// A webhook as read, with its secrets and headers opened (`keys`: the store's key ring, if it
/// seals; values written before sealing are read as they are).
pub(super) fn open_webhook(stored: StoredWebhook, keys: Option<&KeyRing>) -> StoreResult<Webhook> {
    let StoredWebhook {
        webhook: mut w,
        headers,
    } = stored;
    w.headers = headers_from(&open_text(headers, keys)?)?;
    let Some(keys) = keys else { return Ok(w) };
    w.secret = WebhookSecret::from_stored(keys.open(w.secret.as_str())?);
    if let Some((s, until)) = w.previous_secret.take() {
        w.previous_secret = Some((WebhookSecret::from_stored(keys.open(s.as_str())?), until));
    }
    Ok(w)
}

/// The sealed values of one stored webhook row: `id, secret, previous_secret, headers`.
pub(super) struct SealedRow {
    pub(super) id: String,
    pub(super) secret: String,
    pub(super) previous: Option<String>,
    pub(super) headers: String,
}

/// For re-sealing: the row's sealed values sealed under the current key, when any is not yet;
/// `None` when the row is current (or the store does not seal).
pub(super) fn resealed(keys: Option<&KeyRing>, row: SealedRow) -> StoreResult<Option<SealedRow>> {
    let Some(keys) = keys else { return Ok(None) };
    let current = keys.is_current(&row.secret)
        && row.previous.as_deref().is_none_or(|p| keys.is_current(p))
        && keys.is_current(&row.headers);
    if current {
        return Ok(None);
    }
    let again = |v: &str| keys.open(v).map(|plain| keys.seal(&plain));
    Ok(Some(SealedRow {
        secret: again(&row.secret)?,
        previous: row.previous.as_deref().map(again).transpose()?,
        headers: again(&row.headers)?,
        id: row.id,
    }))
}

pub(super) fn sealed_row(r: &dyn Columns) -> StoreResult<SealedRow> {
    Ok(SealedRow {
        id: r.text(0)?,
        secret: r.text(1)?,
        previous: r.opt_text(2)?,
        headers: r.text(3)?,
    })
}

/// A secret as written: sealed when the store has a key ring.
pub(super) fn seal(secret: &WebhookSecret, keys: Option<&KeyRing>) -> String {
    seal_text(secret.as_str(), keys)
}

/// Any text as written where it may hold a secret: sealed when the store has a key ring.
pub(super) fn seal_text(plain: &str, keys: Option<&KeyRing>) -> String {
    keys.map_or_else(|| plain.to_owned(), |k| k.seal(plain))
}

/// Text read back that [`seal_text`] may have sealed (values written before sealing are
/// plain, and read as they are).
pub(super) fn open_text(stored: String, keys: Option<&KeyRing>) -> StoreResult<String> {
    match keys {
        Some(k) => k.open(&stored),
        None => Ok(stored),
    }
}

pub(super) fn delivery(r: &dyn Columns) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: r.text(0)?,
        workspace_id: r.text(1)?,
        webhook_id: r.text(2)?,
        event_id: r.text(3)?,
        event_type: EventType::parse(&r.text(4)?)
            .map_err(|e| corrupt("deliveries.event_type", e))?,
        status: DeliveryStatus::parse(&r.text(5)?).map_err(|e| corrupt("deliveries.status", e))?,
        attempt_count: count(r, 6, "deliveries.attempt_count")?,
        next_attempt_at: opt_ts(r, 7)?,
        created_at: ts(r, 8)?,
        updated_at: ts(r, 9)?,
        redelivery_of: r.opt_text(10)?,
        last_attempt_at: opt_ts(r, 11)?,
        last_status_code: r
            .opt_int(12)?
            .map(|s| u16::try_from(s).map_err(|e| corrupt("deliveries.last_status_code", e)))
            .transpose()?,
        last_error: r.opt_text(13)?,
        cancel_reason: r.opt_text(14)?,
        chain: match (r.opt_text(15)?, r.opt_int(16)?) {
            (Some(resource), Some(n)) => Some((resource, n.max(0) as u64)),
            _ => None,
        },
    })
}

pub(super) fn attempt(r: &dyn Columns) -> StoreResult<Attempt> {
    let status_code = r
        .opt_int(4)?
        .map(|s| u16::try_from(s).map_err(|e| corrupt("attempts.status_code", e)))
        .transpose()?;
    Ok(Attempt {
        delivery_id: r.text(0)?,
        attempt: count(r, 1, "attempts.attempt")?,
        attempted_at: ts(r, 2)?,
        duration_ms: r.int(3)?.max(0) as u64,
        status_code,
        error: r.opt_text(5)?,
        response_body: r.opt_text(6)?,
        request_headers: r.opt_text(7)?,
        response_headers: r.opt_text(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as plain values, to test the decoders without a database.
    enum V {
        T(&'static str),
        I(i64),
        Null,
    }

    struct Plain(Vec<V>);

    impl Columns for Plain {
        fn text(&self, i: usize) -> StoreResult<String> {
            match self.0.get(i) {
                Some(V::T(t)) => Ok((*t).to_owned()),
                _ => Err(corrupt(&format!("column {i}"), "not text")),
            }
        }
        fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
            match self.0.get(i) {
                Some(V::Null) => Ok(None),
                _ => self.text(i).map(Some),
            }
        }
        fn int(&self, i: usize) -> StoreResult<i64> {
            match self.0.get(i) {
                Some(V::I(n)) => Ok(*n),
                _ => Err(corrupt(&format!("column {i}"), "not an integer")),
            }
        }
        fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
            match self.0.get(i) {
                Some(V::Null) => Ok(None),
                _ => self.int(i).map(Some),
            }
        }
        fn flag(&self, i: usize) -> StoreResult<bool> {
            self.int(i).map(|n| n != 0)
        }
        fn bytes(&self, i: usize) -> StoreResult<Vec<u8>> {
            self.text(i).map(String::into_bytes)
        }
    }

    fn ticket_row(status: &'static str, created_at: V) -> Plain {
        use V::*;
        Plain(vec![
            T("tkt_1"),
            T("ws_1"),
            T("proj_1"),
            T("title"),
            Null,
            T(status),
            T("high"),
            Null,
            T("usr_1"),
            created_at,
            I(2),
        ])
    }

    #[test]
    fn rows_decode_and_bad_values_are_corrupt() {
        let t = ticket(&ticket_row("open", V::I(1))).unwrap();
        assert_eq!((t.status, t.priority), (TicketStatus::Open, Priority::High));
        assert_eq!(t.description, None);
        // (row, what the error must name)
        let bad = [
            (ticket_row("on_fire", V::I(1)), "tickets.status"),
            (ticket_row("open", V::T("yesterday")), "column 9"),
        ];
        for (row, names) in bad {
            match ticket(&row) {
                Err(StoreError::Corrupt(m)) => assert!(m.contains(names), "{m}"),
                other => panic!("expected Corrupt naming {names}, got {other:?}"),
            }
        }
        let negative = Plain(vec![
            V::T("d"),
            V::I(-1),
            V::I(0),
            V::I(0),
            V::Null,
            V::Null,
            V::Null,
        ]);
        assert!(
            matches!(attempt(&negative), Err(StoreError::Corrupt(m)) if m.contains("attempts.attempt"))
        );
    }
}
