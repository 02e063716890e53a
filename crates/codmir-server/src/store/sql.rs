//! Every SQL statement of the store, each written once.
//!
//! A statement both backends run is one text in SQLite's numbered form (`?1`, `?2`, …);
//! PostgreSQL's `$1` form is derived from it at compile time (`both!`), so the two cannot
//! drift. Such a text keeps to what reads the same in both dialects: `CAST(?1 AS TEXT)` where
//! PostgreSQL must learn a parameter's type from somewhere (`?1 IS NULL` alone does not tell
//! it), `TRUE`/`FALSE` for booleans, no `::`. The derivation refuses, at compile time, a text
//! with `::` or `$` in it. Where the dialects really differ (row locks, `json_each` against
//! `ANY`), `each!` takes both texts side by side; what only one backend runs (claims,
//! retention, PostgreSQL's set-based batches) is in `sqlite_only` and `postgres_only`.
//!
//! Column lists are macros, not constants, so that `concat!` can join them into a statement
//! at compile time: no SQL text is built at run time. Each list sits beside its decoder's name
//! in `rows.rs` order: a query selects `webhook_cols!()` exactly when it decodes with
//! `rows::webhook`.

/// A statement both backends run, in each one's text.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sql {
    pub(super) sqlite: &'static str,
    pub(super) postgres: &'static str,
}

/// SQLite's `?N` parameters as PostgreSQL's `$N`, the rest unchanged (the same length).
/// Fails the build on `::` or `$`, which would read differently in the two dialects.
pub(super) const fn dollars<const N: usize>(sqlite: &str) -> [u8; N] {
    let b = sqlite.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        let c = b[i];
        assert!(
            c != b'$',
            "a shared statement uses `$`: write `?N` parameters"
        );
        assert!(
            !(c == b':' && i + 1 < N && b[i + 1] == b':'),
            "a shared statement uses `::`: write CAST(… AS …)"
        );
        out[i] = if c == b'?' && i + 1 < N && b[i + 1].is_ascii_digit() {
            b'$'
        } else {
            c
        };
        i += 1;
    }
    out
}

/// Bytes made by [`dollars`] as text (they are ASCII-for-ASCII, so always UTF-8).
pub(super) const fn text(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => panic!("not UTF-8"),
    }
}

/// One text for both dialects, joined from literals and column-list macros.
macro_rules! both {
    ($($part:expr),+ $(,)?) => {{
        const SQLITE: &str = concat!($($part),+);
        const POSTGRES: [u8; SQLITE.len()] = $crate::store::sql::dollars::<{ SQLITE.len() }>(SQLITE);
        $crate::store::sql::Sql { sqlite: SQLITE, postgres: $crate::store::sql::text(&POSTGRES) }
    }};
}

/// Two texts, where the dialects differ.
macro_rules! each {
    (sqlite: [$($s:expr),+ $(,)?], postgres: [$($p:expr),+ $(,)?] $(,)?) => {
        $crate::store::sql::Sql { sqlite: concat!($($s),+), postgres: concat!($($p),+) }
    };
}

/// Declares statements and the list of them that the prepare test walks.
macro_rules! statements {
    ($list:ident: $ty:ty; $($(#[doc = $doc:literal])* $name:ident = $value:expr;)*) => {
        $($(#[doc = $doc])* pub(in crate::store) const $name: $ty = $value;)*
        /// Every statement declared here, by name.
        #[cfg_attr(not(test), allow(dead_code))]
        pub(in crate::store) const $list: &[(&str, $ty)] = &[$((stringify!($name), $name)),*];
    };
}

macro_rules! workspace_cols {
    () => {
        "id, name, created_at"
    };
}
macro_rules! user_cols {
    () => {
        "id, workspace_id, name, email, created_at"
    };
}
macro_rules! key_info_cols {
    () => {
        "k.id, w.name, u.name, k.created_at, k.last_used_at, k.revoked_at, k.workspace_id"
    };
}
macro_rules! api_key_cols {
    () => {
        "k.id, k.workspace_id, k.user_id, k.secret_hash, k.created_at, u.name"
    };
}
macro_rules! project_cols {
    () => {
        "id, workspace_id, name, created_by, created_at"
    };
}
macro_rules! member_cols {
    () => {
        "m.project_id, m.role, m.added_at, u.id, u.workspace_id, u.name, u.email, u.created_at"
    };
}
macro_rules! ticket_cols {
    () => {
        "id, workspace_id, project_id, title, description, status, priority, assignee_id, \
         created_by, created_at, updated_at"
    };
}
macro_rules! comment_cols {
    () => {
        "id, workspace_id, ticket_id, author_id, body, created_at"
    };
}
macro_rules! event_cols {
    () => {
        "id, payload"
    };
}
macro_rules! event_full_cols {
    () => {
        "id, workspace_id, project_id, type, created_at, payload"
    };
}
macro_rules! webhook_cols {
    () => {
        "id, workspace_id, url, events, project_ids, description, secret, enabled, created_at, \
         updated_at, disabled_reason, disabled_at, max_in_flight, rate_limit_per_second, \
         headers, previous_secret, previous_secret_until, expires_at, ordering"
    };
}
macro_rules! delivery_cols {
    () => {
        "id, workspace_id, webhook_id, event_id, event_type, status, attempt_count, \
         next_attempt_at, created_at, updated_at, redelivery_of, last_attempt_at, \
         last_status_code, last_error, cancel_reason, chain_resource, chain_sequence"
    };
}
/// The columns an insert of a delivery sets, in this order (the `last_*` start empty).
macro_rules! delivery_insert_cols {
    () => {
        "id, workspace_id, webhook_id, event_id, event_type, status, attempt_count, \
         next_attempt_at, created_at, updated_at, redelivery_of, lease_owner, lease_expires_at, \
         chain_resource, chain_sequence"
    };
}
macro_rules! attempt_cols {
    () => {
        "delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body, \
         request_headers, response_headers"
    };
}
/// `delivery_cols!()` of the table aliased `d`, for PostgreSQL's `UPDATE … FROM … RETURNING`.
macro_rules! delivery_cols_of_d {
    () => {
        "d.id, d.workspace_id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempt_count, \
         d.next_attempt_at, d.created_at, d.updated_at, d.redelivery_of, d.last_attempt_at, \
         d.last_status_code, d.last_error, d.cancel_reason, d.chain_resource, d.chain_sequence"
    };
}
/// A due delivery: pending, due at `?N`, and not held by a live lease.
macro_rules! due_at {
    ($n:literal) => {
        concat!(
            "status = 'pending' AND next_attempt_at <= ?",
            $n,
            " AND (lease_expires_at IS NULL OR lease_expires_at < ?",
            $n,
            ")"
        )
    };
}

/// The webhook columns the fan-out's cache triggers must watch: every column delivery reads
/// except the row's identity and its own timestamps.
#[cfg(test)]
pub(super) const WEBHOOK_COLS: &str = webhook_cols!();

// The tracker's rows.
statements! { TRACKER: Sql;
    WORKSPACE_COUNT = both!("SELECT count(*) FROM workspaces");
    GET_WORKSPACE = both!("SELECT ", workspace_cols!(), " FROM workspaces WHERE id = ?1");
    FIND_WORKSPACE_BY_NAME = both!("SELECT ", workspace_cols!(), " FROM workspaces WHERE name = ?1");
    INSERT_WORKSPACE = both!("INSERT INTO workspaces (", workspace_cols!(), ") VALUES (?1, ?2, ?3)");
    FIND_USER_BY_NAME = both!("SELECT ", user_cols!(), " FROM users WHERE workspace_id = ?1 AND name = ?2 ORDER BY id LIMIT 1");
    FIND_USER_BY_EMAIL = both!("SELECT ", user_cols!(), " FROM users WHERE workspace_id = ?1 AND email = ?2");
    GET_USER = both!("SELECT ", user_cols!(), " FROM users WHERE workspace_id = ?1 AND id = ?2");
    INSERT_USER = both!("INSERT INTO users (", user_cols!(), ") VALUES (?1, ?2, ?3, ?4, ?5)");
    INSERT_API_KEY = both!("INSERT INTO api_keys (id, workspace_id, user_id, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)");
    GET_API_KEY = both!("SELECT ", api_key_cols!(), " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?1 AND k.revoked_at IS NULL");
    LIST_API_KEYS = both!("SELECT ", key_info_cols!(), " FROM api_keys k JOIN users u ON u.id = k.user_id \
        JOIN workspaces w ON w.id = k.workspace_id ORDER BY k.created_at, k.id");
    REVOKE_API_KEY = both!("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL");
    TOUCH_API_KEY = both!("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1");
    IDEMPOTENCY_EXPIRE = both!("DELETE FROM idempotency_keys WHERE workspace_id = ?1 AND created_at < ?2");
    IDEMPOTENCY_GET = both!("SELECT fingerprint, status, body, created_at FROM idempotency_keys \
        WHERE workspace_id = ?1 AND key = ?2");
    IDEMPOTENCY_INSERT = both!("INSERT INTO idempotency_keys (workspace_id, key, fingerprint, created_at, claim) \
        VALUES (?1, ?2, ?3, ?4, ?5)");
    /// A claim without an answer, made before `?5`: taken over under a new token.
    IDEMPOTENCY_TAKE_OVER = both!("UPDATE idempotency_keys SET claim = ?3, created_at = ?4 \
        WHERE workspace_id = ?1 AND key = ?2 AND status IS NULL AND created_at < ?5");
    /// Fenced: only under the claim's own token, and only once.
    IDEMPOTENCY_FINISH = both!("UPDATE idempotency_keys SET status = ?4, body = ?5 \
        WHERE workspace_id = ?1 AND key = ?2 AND claim = ?3 AND status IS NULL");
    IDEMPOTENCY_RELEASE = both!("DELETE FROM idempotency_keys WHERE workspace_id = ?1 AND key = ?2 \
        AND claim = ?3 AND status IS NULL");
    /// A new project, with the numbers its creating unit gave its events (`?6`).
    INSERT_PROJECT = both!("INSERT INTO projects (", project_cols!(), ", last_sequence) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    GET_PROJECT = both!("SELECT ", project_cols!(), " FROM projects WHERE workspace_id = ?1 AND id = ?2");
    LIST_PROJECTS = both!("SELECT ", project_cols!(), " FROM projects WHERE workspace_id = ?1 \
        AND (CAST(?2 AS TEXT) IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3");
    GET_MEMBER = both!("SELECT ", member_cols!(), " FROM project_members m JOIN users u ON u.id = m.user_id \
        WHERE m.project_id = ?1 AND m.user_id = ?2");
    INSERT_MEMBER = both!("INSERT INTO project_members (project_id, user_id, role, added_at) VALUES (?1, ?2, ?3, ?4)");
    LIST_MEMBERS = both!("SELECT ", member_cols!(), " FROM project_members m JOIN users u ON u.id = m.user_id \
        WHERE m.project_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR u.id < ?2) ORDER BY u.id DESC LIMIT ?3");
    /// A new ticket, with the numbers its creating unit gave its events (`?12`).
    INSERT_TICKET = both!("INSERT INTO tickets (", ticket_cols!(), ", last_sequence) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
    GET_TICKET = both!("SELECT ", ticket_cols!(), " FROM tickets WHERE workspace_id = ?1 AND id = ?2 AND deleted_at IS NULL");
    /// SQLite's single writer already excludes concurrent writers.
    LOCK_TICKET = each!(
        sqlite: ["SELECT ", ticket_cols!(), " FROM tickets WHERE workspace_id = ?1 AND id = ?2 AND deleted_at IS NULL"],
        postgres: ["SELECT ", ticket_cols!(), " FROM tickets WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE"],
    );
    UPDATE_TICKET = both!("UPDATE tickets SET title = ?2, description = ?3, status = ?4, priority = ?5, \
        assignee_id = ?6, updated_at = ?7 WHERE id = ?1");
    DELETE_TICKET = both!("UPDATE tickets SET deleted_at = ?2 WHERE id = ?1");
    LIST_TICKETS = both!("SELECT ", ticket_cols!(), " FROM tickets WHERE project_id = ?1 AND deleted_at IS NULL \
        AND (CAST(?2 AS TEXT) IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3");
    INSERT_COMMENT = both!("INSERT INTO comments (", comment_cols!(), ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    LIST_COMMENTS = both!("SELECT ", comment_cols!(), " FROM comments WHERE ticket_id = ?1 \
        AND (CAST(?2 AS TEXT) IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3");
}

// The outbox: events and webhooks.
statements! { OUTBOX: Sql;
    INSERT_EVENT = both!("INSERT INTO events (", event_full_cols!(), ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    GET_EVENT = both!("SELECT ", event_cols!(), " FROM events WHERE workspace_id = ?1 AND id = ?2");
    /// The id bounds (?6, ?7) let the (workspace_id, id) index hold the window: an event's id
    /// starts with its creation time.
    EVENTS_BETWEEN = both!("SELECT ", event_full_cols!(), " FROM events WHERE workspace_id = ?1 AND id >= ?6 \
        AND id < ?7 AND created_at >= ?2 AND created_at < ?3 AND (CAST(?4 AS TEXT) IS NULL OR id > ?4) \
        ORDER BY id LIMIT ?5");
    LIST_EVENTS_FORWARD = both!("SELECT ", event_cols!(), " FROM events WHERE workspace_id = ?1 \
        AND (CAST(?2 AS TEXT) IS NULL OR type LIKE ?2) AND (CAST(?3 AS TEXT) IS NULL OR project_id = ?3) \
        AND (CAST(?4 AS BIGINT) IS NULL OR created_at >= ?4) AND (CAST(?5 AS BIGINT) IS NULL OR created_at < ?5) \
        AND (CAST(?6 AS TEXT) IS NULL OR id > ?6) ORDER BY id LIMIT ?7");
    LIST_EVENTS_BACK = both!("SELECT ", event_cols!(), " FROM events WHERE workspace_id = ?1 \
        AND (CAST(?2 AS TEXT) IS NULL OR type LIKE ?2) AND (CAST(?3 AS TEXT) IS NULL OR project_id = ?3) \
        AND (CAST(?4 AS BIGINT) IS NULL OR created_at >= ?4) AND (CAST(?5 AS BIGINT) IS NULL OR created_at < ?5) \
        AND (CAST(?6 AS TEXT) IS NULL OR id < ?6) ORDER BY id DESC LIMIT ?7");
    INSERT_WEBHOOK = both!("INSERT INTO webhooks (", webhook_cols!(), ") \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)");
    GET_WEBHOOK = both!("SELECT ", webhook_cols!(), " FROM webhooks WHERE workspace_id = ?1 AND id = ?2");
    LOCK_WEBHOOK = each!(
        sqlite: ["SELECT ", webhook_cols!(), " FROM webhooks WHERE workspace_id = ?1 AND id = ?2"],
        postgres: ["SELECT ", webhook_cols!(), " FROM webhooks WHERE workspace_id = $1 AND id = $2 FOR UPDATE"],
    );
    SECRETS_TO_RESEAL = each!(
        sqlite: ["SELECT id, secret, previous_secret, headers FROM webhooks"],
        postgres: ["SELECT id, secret, previous_secret, headers FROM webhooks FOR UPDATE"],
    );
    RESEAL_SECRET = both!("UPDATE webhooks SET secret = ?2, previous_secret = ?3, headers = ?4 WHERE id = ?1");
    WEBHOOK_COUNT = both!("SELECT count(*) FROM webhooks WHERE workspace_id = ?1");
    LIST_WEBHOOKS = both!("SELECT ", webhook_cols!(), " FROM webhooks WHERE workspace_id = ?1 \
        AND (CAST(?2 AS TEXT) IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3");
    WEBHOOKS_VERSION = both!("SELECT webhooks_version FROM workspaces WHERE id = ?1");
    ENABLED_WEBHOOKS = both!("SELECT ", webhook_cols!(), " FROM webhooks WHERE workspace_id = ?1 AND enabled = TRUE");
    UPDATE_WEBHOOK = both!("UPDATE webhooks SET url = ?2, events = ?3, project_ids = ?4, description = ?5, \
        secret = ?6, enabled = ?7, updated_at = ?8, disabled_reason = ?9, disabled_at = ?10, \
        max_in_flight = ?11, rate_limit_per_second = ?12, headers = ?13, previous_secret = ?14, \
        previous_secret_until = ?15, expires_at = ?16, ordering = ?17 WHERE id = ?1");
    /// Webhooks past their `expires_at`, oldest first (few: only temporary ones have one).
    EXPIRED_WEBHOOKS = both!("SELECT workspace_id, id FROM webhooks WHERE expires_at IS NOT NULL \
        AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2");
    DELETE_WEBHOOK = both!("DELETE FROM webhooks WHERE id = ?1");
    UPDATE_FAILURE_RUN = both!("UPDATE webhooks SET \
        consecutive_failures = CASE WHEN ?2 THEN ?3 ELSE consecutive_failures + ?3 END, \
        failing_since = CASE WHEN ?2 AND ?3 = 0 THEN NULL \
          WHEN ?2 OR failing_since IS NULL THEN ?4 ELSE failing_since END \
        WHERE id = ?1 AND enabled = TRUE RETURNING failing_since, consecutive_failures");
}

// The delivery queue.
statements! { QUEUE: Sql;
    DELIVERY_STATES = each!(
        sqlite: ["SELECT event_id, id, status FROM deliveries WHERE webhook_id = ?1 \
            AND event_id IN (SELECT value FROM json_each(?2))"],
        postgres: ["SELECT event_id, id, status FROM deliveries WHERE webhook_id = $1 AND event_id = ANY($2)"],
    );
    /// The next `?2` numbers of a ticket's events (deleted ones too: their last event).
    TAKE_TICKET_SEQUENCE = both!("UPDATE tickets SET last_sequence = last_sequence + ?2 \
        WHERE id = ?1 RETURNING last_sequence");
    /// The next `?2` numbers of a project's events.
    TAKE_PROJECT_SEQUENCE = both!("UPDATE projects SET last_sequence = last_sequence + ?2 \
        WHERE id = ?1 RETURNING last_sequence");
    INSERT_DELIVERY = both!("INSERT INTO deliveries (", delivery_insert_cols!(), ") \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
    /// Takes the lock of a webhook's chain for a resource (its row, made on first use): the
    /// fan-out joining the chain and a settlement letting its next delivery go take turns.
    LOCK_CHAIN = both!("INSERT INTO chains (webhook_id, resource_id, touched_at) VALUES (?1, ?2, ?3) \
        ON CONFLICT (webhook_id, resource_id) DO UPDATE SET touched_at = excluded.touched_at");
    /// Whether a chain has a delivery not settled (one to wait behind).
    CHAIN_BUSY = both!("SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE webhook_id = ?1 \
        AND chain_resource = ?2 AND status = 'pending' LIMIT 1) busy");
    /// Lets a chain's next delivery go (due at `?3`) when none of it is active (pending and
    /// due at some time): the waiting one with the lowest number.
    RELEASE_NEXT = both!("UPDATE deliveries SET next_attempt_at = ?3, updated_at = ?3 WHERE id = ( \
        SELECT id FROM deliveries WHERE webhook_id = ?1 AND chain_resource = ?2 AND status = 'pending' \
        AND next_attempt_at IS NULL ORDER BY chain_sequence LIMIT 1) \
        AND NOT EXISTS (SELECT 1 FROM deliveries WHERE webhook_id = ?1 AND chain_resource = ?2 \
        AND status = 'pending' AND next_attempt_at IS NOT NULL) RETURNING id");
    /// A webhook no longer ordered: every delivery waiting in a chain is due at `?2`.
    RELEASE_CHAINS = both!("UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?2 \
        WHERE webhook_id = ?1 AND status = 'pending' AND next_attempt_at IS NULL");
    DELETE_CHAINS = both!("DELETE FROM chains WHERE webhook_id = ?1");
    /// A webhook's chains with a delivery waiting behind an earlier one.
    WAITING_CHAINS = both!("SELECT count(*) FROM (SELECT DISTINCT chain_resource FROM deliveries \
        WHERE webhook_id = ?1 AND chain_resource IS NOT NULL AND status = 'pending' \
        AND next_attempt_at IS NULL) c");
    /// The delivery a chained one waits behind: the earliest of its chain not settled.
    CHAIN_HEAD = both!("SELECT ", delivery_cols!(), " FROM deliveries WHERE webhook_id = ?1 \
        AND chain_resource = ?2 AND status = 'pending' AND chain_sequence < ?3 \
        ORDER BY chain_sequence LIMIT 1");
    MAKE_DUE_NOW = both!("UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?2 \
        WHERE webhook_id = ?1 AND status = 'pending' AND next_attempt_at > ?2");
    QUEUE_GAUGES = both!("SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'), \
        (SELECT count(*) FROM deliveries WHERE ", due_at!("1"), "), \
        (SELECT min(next_attempt_at) FROM deliveries WHERE ", due_at!("1"), "), \
        (SELECT count(*) FROM webhooks WHERE enabled = FALSE), \
        (SELECT count(*) FROM (SELECT DISTINCT webhook_id, chain_resource FROM deliveries \
            WHERE chain_resource IS NOT NULL AND status = 'pending' AND next_attempt_at IS NULL) w), \
        (SELECT min(created_at) FROM deliveries WHERE chain_resource IS NOT NULL \
            AND status = 'pending' AND next_attempt_at IS NULL)");
    /// Ids start with their creation time, so the id floor (?2) keeps the scan to the window.
    /// Test pings are counted apart (`PING_COUNTS`): they are not deliveries of record.
    DELIVERY_COUNTS = both!("SELECT (created_at / ?4) * ?4 AS bucket, status, count(*), \
        sum(CASE WHEN attempt_count > 0 THEN 1 ELSE 0 END) FROM deliveries \
        WHERE webhook_id = ?1 AND id >= ?2 AND created_at >= ?3 AND event_type <> 'webhook.ping' \
        GROUP BY bucket, status");
    SUCCESS_LATENCIES = both!("SELECT updated_at - created_at AS took FROM deliveries WHERE webhook_id = ?1 \
        AND id >= ?2 AND created_at >= ?3 AND status = 'succeeded' AND event_type <> 'webhook.ping' \
        ORDER BY took");
    /// The webhook's test pings in the window, by status (in `DELIVERY_COUNTS`'s row shape).
    PING_COUNTS = both!("SELECT 0 AS bucket, status, count(*), \
        sum(CASE WHEN attempt_count > 0 THEN 1 ELSE 0 END) FROM deliveries WHERE webhook_id = ?1 \
        AND id >= ?2 AND created_at >= ?3 AND event_type = 'webhook.ping' GROUP BY status");
    CANCEL_PENDING = both!("UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL, \
        lease_expires_at = NULL, updated_at = ?2, cancel_reason = ?3 WHERE webhook_id = ?1 AND status = 'pending'");
    /// One pending delivery cancelled (an attempt of it under way is fenced off).
    CANCEL_DELIVERY = both!("UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL, \
        lease_expires_at = NULL, updated_at = ?2, cancel_reason = ?3 WHERE id = ?1 AND status = 'pending'");
    /// Fenced: only while the delivery is pending, has `attempt - 1` attempts and is leased
    /// by the writer.
    RECORD_OUTCOME = both!("UPDATE deliveries SET status = ?2, attempt_count = ?3, next_attempt_at = ?4, \
        lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5, last_attempt_at = ?7, \
        last_status_code = ?8, last_error = ?9 \
        WHERE id = ?1 AND status = 'pending' AND attempt_count = ?3 - 1 AND lease_owner = ?6");
    INSERT_ATTEMPT = both!("INSERT INTO attempts (", attempt_cols!(), ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    MARK_READY = both!("INSERT INTO readiness (node, checked_at) VALUES (?1, ?2) \
        ON CONFLICT (node) DO UPDATE SET checked_at = excluded.checked_at");
    RELEASE_LEASES = both!("UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
        WHERE status = 'pending' AND lease_owner IS NOT NULL AND (CAST(?1 AS TEXT) IS NULL OR lease_owner = ?1)");
    RELEASE_LEASE = both!("UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL \
        WHERE id = ?1 AND lease_owner = ?2");
    NEXT_DUE_AT = both!("SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' \
        AND (lease_expires_at IS NULL OR lease_expires_at < ?1)");
    /// Per webhook, by the (webhook, due) index: filtering busy webhooks out of the due index
    /// would scan past every delivery of theirs (see the claims).
    NEXT_DUE_AT_SKIPPING = each!(
        sqlite: ["SELECT min((SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.webhook_id = w.id \
            AND d.status = 'pending' AND (d.lease_expires_at IS NULL OR d.lease_expires_at < ?1))) \
            FROM webhooks w WHERE w.id NOT IN (SELECT value FROM json_each(?2))"],
        postgres: ["SELECT min((SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.webhook_id = w.id \
            AND d.status = 'pending' AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $1))) \
            FROM webhooks w WHERE w.id <> ALL($2)"],
    );
    /// Up to `?2`: what a quota needs, whatever is pending beyond it. A workspace's pending
    /// deliveries are those of its webhooks (a deleted webhook's are cancelled), read through
    /// the (webhook, due) index of pending ones: the count costs what is pending, and the
    /// deliveries need no index more to keep up on every write.
    PENDING_COUNT = both!("SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE status = 'pending' \
        AND webhook_id IN (SELECT id FROM webhooks WHERE workspace_id = ?1) LIMIT ?2) AS p");
    GET_DELIVERY = both!("SELECT ", delivery_cols!(), " FROM deliveries WHERE workspace_id = ?1 AND id = ?2");
    LIST_DELIVERIES = both!("SELECT ", delivery_cols!(), " FROM deliveries WHERE webhook_id = ?1 \
        AND (CAST(?2 AS TEXT) IS NULL OR status = ?2) AND (CAST(?3 AS TEXT) IS NULL OR id < ?3) \
        AND (CAST(?5 AS BIGINT) IS NULL OR (attempt_count > 0) = (?5 = 1)) \
        ORDER BY id DESC LIMIT ?4");
    LIST_WORKSPACE_DELIVERIES = both!("SELECT ", delivery_cols!(), " FROM deliveries WHERE workspace_id = ?1 \
        AND (CAST(?2 AS TEXT) IS NULL OR webhook_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR status = ?3) \
        AND (CAST(?4 AS TEXT) IS NULL OR event_type LIKE ?4) AND (CAST(?5 AS BIGINT) IS NULL OR created_at >= ?5) \
        AND (CAST(?6 AS BIGINT) IS NULL OR created_at < ?6) AND (CAST(?7 AS TEXT) IS NULL OR event_id = ?7) \
        AND (CAST(?8 AS TEXT) IS NULL OR id < ?8) \
        AND (CAST(?10 AS BIGINT) IS NULL OR (attempt_count > 0) = (?10 = 1)) ORDER BY id DESC LIMIT ?9");
    LIST_ATTEMPTS = both!("SELECT ", attempt_cols!(), " FROM attempts WHERE delivery_id = ?1 ORDER BY attempt");
}

/// What only the SQLite backend runs: claims and retention, in several short statements.
pub(super) mod sqlite_only {
    statements! { ALL: &str;
        /// The common case: the oldest due deliveries of any webhook, by the due index.
        CLAIM_DUE_IDS = concat!("SELECT id FROM deliveries WHERE ", due_at!("1"), " ORDER BY next_attempt_at LIMIT ?2");
        CLAIM_OTHER_WEBHOOKS = "SELECT id FROM webhooks WHERE id NOT IN (SELECT value FROM json_each(?1))";
        CLAIM_PROBE = concat!("SELECT id FROM deliveries WHERE webhook_id = ?1 AND ", due_at!("2"),
            " ORDER BY next_attempt_at LIMIT ?3");
        CLAIM_LEASE = concat!("UPDATE deliveries SET lease_owner = ?1, lease_expires_at = ?2 \
            WHERE id IN (SELECT value FROM json_each(?3)) RETURNING ", delivery_cols!());
        /// A claimed delivery's webhook and payload, read one by one (PostgreSQL reads them
        /// for a whole claim at once).
        WEBHOOK_BY_ID = concat!("SELECT ", webhook_cols!(), " FROM webhooks WHERE id = ?1");
        EVENT_PAYLOAD = "SELECT payload FROM events WHERE id = ?1";
        OLD_DELIVERIES = "SELECT id FROM deliveries WHERE id < ?1 AND status <> 'pending' ORDER BY id LIMIT ?2";
        DELETE_ATTEMPTS_OF = "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?1))";
        DELETE_DELIVERIES = "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))";
        DELETE_OLD_EVENTS = "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id < ?1 \
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) ORDER BY e.id LIMIT ?2)";
    }
}

/// What only the PostgreSQL backend runs: claims with `SKIP LOCKED`, retention in one
/// statement, `NOTIFY`, and the set-based inserts and outcomes of its batches.
pub(super) mod postgres_only {
    statements! { ALL: &str;
        /// The oldest due deliveries of any webhook, by the due index.
        CLAIM_DUE = concat!("WITH due AS (SELECT id FROM deliveries WHERE status = 'pending' \
            AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
            ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
            UPDATE deliveries d SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE d.id = due.id \
            RETURNING ", delivery_cols_of_d!());
        /// Some webhooks are busy here: probe each other webhook by the (webhook, due) index
        /// rather than scan past every delivery of the busy ones.
        CLAIM_DUE_SKIPPING = concat!("WITH due AS (SELECT x.id FROM webhooks w CROSS JOIN LATERAL ( \
            SELECT id FROM deliveries WHERE webhook_id = w.id AND status = 'pending' \
            AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
            ORDER BY next_attempt_at LIMIT greatest(16, $4 / greatest(1, (SELECT count(*) FROM webhooks))) \
            FOR UPDATE SKIP LOCKED) x WHERE w.id <> ALL($5::text[]) LIMIT $4) \
            UPDATE deliveries d SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE d.id = due.id \
            RETURNING ", delivery_cols_of_d!());
        WEBHOOKS_BY_IDS = concat!("SELECT ", webhook_cols!(), " FROM webhooks WHERE id = ANY($1)");
        PAYLOADS_BY_IDS = concat!("SELECT ", event_cols!(), " FROM events WHERE id = ANY($1)");
        /// Rows another node is deleting (or attempting) right now are skipped, not waited for.
        DELETE_OLD = "WITH doomed AS (SELECT id FROM deliveries WHERE id < $1 AND status <> 'pending' \
            ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED), \
            a AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM doomed) RETURNING 1), \
            d AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM doomed) RETURNING 1) \
            SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM a)";
        DELETE_OLD_EVENTS = "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id < $1 \
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) \
            ORDER BY e.id LIMIT $2 FOR UPDATE SKIP LOCKED)";
        /// Delivered to every listening node when the transaction commits, coalesced.
        NOTIFY = "NOTIFY codmir_deliveries";
        /// The id of the open transaction if it wrote (asked just before `COMMIT`).
        XACT_ID = "SELECT pg_current_xact_id_if_assigned()::text";
        /// What became of a transaction whose `COMMIT` answer was lost.
        XACT_STATUS = "SELECT pg_xact_status($1::text::xid8)";
        /// One statement for a batch of outcomes: the fenced updates, then the attempts of the
        /// deliveries they updated.
        RECORD_OUTCOMES = "WITH o AS ( \
            SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int8[], \
              $6::text[], $7::int8[], $8::int8[], $9::int4[], $10::text[], $11::text[], $12::text[], \
              $13::text[]) \
            AS o(delivery_id, new_status, attempt, next_attempt_at, updated_at, lease_owner, \
                 attempted_at, duration_ms, status_code, error, response_body, request_headers, \
                 response_headers)), \
            u AS ( \
              UPDATE deliveries d SET status = o.new_status, attempt_count = o.attempt, \
                next_attempt_at = o.next_attempt_at, lease_owner = NULL, lease_expires_at = NULL, \
                updated_at = o.updated_at, last_attempt_at = o.attempted_at, \
                last_status_code = o.status_code, last_error = o.error \
              FROM o WHERE d.id = o.delivery_id AND d.status = 'pending' \
                AND d.attempt_count = o.attempt - 1 AND d.lease_owner = o.lease_owner \
              RETURNING d.id) \
            INSERT INTO attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error, response_body, \
              request_headers, response_headers) \
            SELECT o.delivery_id, o.attempt, o.attempted_at, o.duration_ms, o.status_code, o.error, o.response_body, \
              o.request_headers, o.response_headers \
            FROM o JOIN u ON u.id = o.delivery_id RETURNING delivery_id";
        INSERT_TICKETS = concat!("INSERT INTO tickets (", ticket_cols!(), ", last_sequence) SELECT * FROM \
            unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
            $8::text[], $9::text[], $10::int8[], $11::int8[], $12::int8[])");
        INSERT_EVENTS = concat!("INSERT INTO events (", event_full_cols!(), ") SELECT * FROM unnest($1::text[], \
            $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])");
        INSERT_DELIVERIES = concat!("INSERT INTO deliveries (", delivery_insert_cols!(), ") SELECT * FROM \
            unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[], \
            $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::text[], $13::int8[], $14::text[], \
            $15::int8[])");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> impl Iterator<Item = (&'static str, Sql)> {
        TRACKER.iter().chain(OUTBOX).chain(QUEUE).copied()
    }

    #[test]
    fn every_statement_prepares_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let texts: Vec<(&str, &str)> = shared()
            .map(|(name, s)| (name, s.sqlite))
            .chain(sqlite_only::ALL.iter().copied())
            .collect();
        assert!(texts.len() > 60, "the lists hold every statement");
        let failed = super::super::sqlite::unpreparable(&dir.path().join("db"), &texts);
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at CODMIR_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432)"]
    async fn every_statement_prepares_on_postgres() {
        let server = std::env::var("CODMIR_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let texts: Vec<(&str, &str)> = shared()
            .map(|(name, s)| (name, s.postgres))
            .chain(postgres_only::ALL.iter().copied())
            .collect();
        let failed = super::super::postgres::unpreparable(&server, &texts).await;
        assert!(failed.is_empty(), "{failed:#?}");
    }

    /// The columns a migration's `AFTER … UPDATE OF a, b, … ON webhooks` trigger watches.
    fn watched(migration: &str) -> Vec<String> {
        let after = migration
            .split("UPDATE OF")
            .nth(1)
            .expect("an UPDATE OF trigger");
        let list = after.split(" ON webhooks").next().unwrap();
        list.split(',').map(|c| c.trim().to_owned()).collect()
    }

    #[test]
    fn the_fanout_cache_triggers_watch_every_webhook_column_delivery_reads() {
        // The row's identity and its own timestamps do not change what a delivery does; the
        // failure-run counters (not in the list) are written by every outcome and must not
        // empty the cache. Nor does `expires_at` until it comes, and then the webhook is
        // deleted (the delete trigger bumps the version): renewals, every few minutes, must not
        // empty it either.
        let read: Vec<&str> = WEBHOOK_COLS
            .split(',')
            .map(str::trim)
            .filter(|c| !matches!(*c, "id" | "created_at" | "updated_at" | "expires_at"))
            .collect();
        // The latest migration that made each backend's trigger.
        for migration in [
            include_str!("migrations/sqlite_0014_ordering.sql"),
            include_str!("migrations/postgres_0014_ordering.sql"),
        ] {
            let watched = watched(migration);
            let missing: Vec<_> = read
                .iter()
                .filter(|c| !watched.iter().any(|w| w == *c))
                .collect();
            assert!(missing.is_empty(), "not watched: {missing:?}");
            assert!(
                !watched.iter().any(|w| w.contains("failures")),
                "{watched:?}"
            );
        }
    }

    #[test]
    fn a_shared_text_becomes_postgres_by_its_parameter_marks_only() {
        assert_eq!(
            GET_USER.postgres,
            "SELECT id, workspace_id, name, email, created_at FROM users \
             WHERE workspace_id = $1 AND id = $2"
        );
    }
}
