//! Webhooks as the domain sees them: the secret, the event filter, the record, and
//! deliveries with their attempts (the endpoint URL is `endpoint.rs` and the custom headers
//! `headers.rs`, re-exported here).

use crate::ValidationError;
use crate::event::EventType;
use crate::time::Timestamp;

pub use crate::endpoint::{EndpointUrl, MAX_URL_LEN};
pub use crate::headers::{CustomHeaders, HeadersUpdate, MASK, mask};

/// A webhook secret as registered: 16–512 characters, no control characters. Its `Debug`
/// shows only its length, so that a webhook printed in a log or a panic does not carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret(<{} characters>)", self.0.chars().count())
    }
}

impl WebhookSecret {
    /// Fewest different characters a secret chosen by a customer must have.
    pub const MIN_DISTINCT: usize = 6;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let chars = raw.chars().count();
        if chars < 16 {
            return Err(ValidationError::new(
                "secret",
                format!(
                    "must be at least 16 characters (got {chars}); leave it out to have one generated"
                ),
            ));
        }
        if chars > 512 {
            return Err(ValidationError::new(
                "secret",
                "must be at most 512 characters",
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "secret",
                "must contain only printable characters",
            ));
        }
        // Length alone lets `aaaaaaaaaaaaaaaa` through: a guessable secret is no secret.
        let mut distinct: Vec<char> = raw.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < Self::MIN_DISTINCT {
            return Err(ValidationError::new(
                "secret",
                format!(
                    "must have at least {} different characters (got {}); leave it out to have one generated",
                    Self::MIN_DISTINCT,
                    distinct.len()
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A secret read back from the database, where it was validated when it was stored (or
    /// is still sealed, until the store opens it).
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn generate() -> Self {
        Self(crate::sign::generate_secret())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which event types a webhook receives: exact names, `family.*` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter(Vec<String>);

impl EventFilter {
    /// The most patterns a filter lists (there are fewer distinct ones than this).
    pub const MAX: usize = 32;

    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ValidationError> {
        if patterns.is_empty() {
            return Err(ValidationError::new(
                "events",
                "must list at least one event type, or \"*\" for all",
            ));
        }
        if patterns.len() > Self::MAX {
            return Err(ValidationError::new(
                "events",
                format!("must list at most {} patterns", Self::MAX),
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref();
            let known = p == "*"
                || p.strip_suffix(".*")
                    .is_some_and(|fam| EventType::ALL.iter().any(|t| t.family() == fam))
                || EventType::parse(p).is_ok();
            if !known {
                return Err(ValidationError::new(
                    "events",
                    format!(
                        "`{p}` is not an event type or pattern; see GET /v1/event-types (patterns: \"*\", \"ticket.*\")"
                    ),
                ));
            }
            if !out.iter().any(|o| o == p) {
                out.push(p.to_owned());
            }
        }
        Ok(Self(out))
    }

    /// A filter a webhook subscribes with: as [`EventFilter::parse`], and `webhook.ping`
    /// refused by name (a ping goes to the webhook it tests, whatever its filter; patterns
    /// such as `webhook.*` and `*` are fine). Stored filters are read with `parse`, so one
    /// saved before this rule still reads.
    pub fn parse_subscription<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ValidationError> {
        let filter = Self::parse(patterns)?;
        if filter
            .0
            .iter()
            .any(|p| p == EventType::WebhookPing.as_str())
        {
            return Err(ValidationError::new(
                "events",
                "`webhook.ping` cannot be subscribed to: a test ping goes to the webhook it \
                 tests (POST /v1/webhooks/{id}/ping), whatever its events",
            ));
        }
        Ok(filter)
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    pub fn matches(&self, t: EventType) -> bool {
        self.0.iter().any(|p| {
            p == "*" || p == t.as_str() || p.strip_suffix(".*").is_some_and(|fam| fam == t.family())
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub workspace_id: String,
    pub url: EndpointUrl,
    pub events: EventFilter,
    /// Empty means every project of the workspace.
    pub project_ids: Vec<String>,
    pub description: Option<String>,
    pub secret: WebhookSecret,
    pub enabled: bool,
    /// Why and when it was disabled automatically; cleared when it is enabled again.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Timestamp>,
    /// Most attempts in flight to it at once, below the server-wide per-endpoint bound.
    pub max_in_flight: Option<u32>,
    /// Most attempts started per second.
    pub rate_limit_per_second: Option<u32>,
    pub headers: CustomHeaders,
    /// During a secret rotation's grace period: the secret being replaced, and when it stops
    /// signing.
    pub previous_secret: Option<(WebhookSecret, Timestamp)>,
    /// When the server removes it by itself (a temporary webhook, `codmir listen`'s).
    pub expires_at: Option<Timestamp>,
    /// Whether its deliveries about one resource wait for each other.
    pub ordering: DeliveryOrder,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// How a webhook's deliveries are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryOrder {
    /// Each delivery is attempted as soon as it is due, in parallel with the others.
    #[default]
    None,
    /// Deliveries about one resource (a ticket, a project) are attempted one at a time in the
    /// order of their events' sequence numbers: the next waits until the one before it
    /// succeeded, failed for good or was cancelled. Different resources go in parallel.
    PerResource,
}

impl DeliveryOrder {
    pub const ALL: [DeliveryOrder; 2] = [DeliveryOrder::None, DeliveryOrder::PerResource];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOrder::None => "none",
            DeliveryOrder::PerResource => "per_resource",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == raw)
            .ok_or_else(|| {
                ValidationError::new(
                    "ordering",
                    format!("`{raw}` is not an ordering: use `none` or `per_resource`"),
                )
            })
    }
}

impl Webhook {
    /// A new, enabled webhook with no per-webhook settings.
    pub fn new(
        id: String,
        workspace_id: String,
        url: EndpointUrl,
        events: EventFilter,
        secret: WebhookSecret,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            workspace_id,
            url,
            events,
            project_ids: Vec::new(),
            description: None,
            secret,
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            max_in_flight: None,
            rate_limit_per_second: None,
            headers: CustomHeaders::default(),
            previous_secret: None,
            expires_at: None,
            ordering: DeliveryOrder::None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The secret that was replaced, while it still signs at `now`.
    pub fn previous_secret_at(&self, now: Timestamp) -> Option<&WebhookSecret> {
        self.previous_secret
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(s, _)| s)
    }

    /// True when an event of `t` in `project_id` goes to this webhook.
    pub fn wants(&self, t: EventType, project_id: Option<&str>) -> bool {
        self.enabled
            && self.events.matches(t)
            && (self.project_ids.is_empty()
                || project_id.is_some_and(|p| self.project_ids.iter().any(|w| w == p)))
    }
}

/// When a failing webhook is disabled automatically: after every attempt to it failed for
/// `period`, and at least `failures` attempts in a row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisablePolicy {
    pub period: std::time::Duration,
    pub failures: u32,
}

impl Default for DisablePolicy {
    /// Five days and twenty attempts: longer than the default retry schedule (about three
    /// days), so that one bad day never disables a webhook.
    fn default() -> Self {
        Self {
            period: std::time::Duration::from_secs(5 * 86_400),
            failures: 20,
        }
    }
}

impl DisablePolicy {
    /// Whether a run of `consecutive` failed attempts that began at `failing_since` disables
    /// the webhook at `now`.
    pub fn disables(&self, failing_since: Timestamp, consecutive: u32, now: Timestamp) -> bool {
        consecutive >= self.failures && failing_since.plus(self.period) <= now
    }

    /// The reason recorded on a webhook it disables.
    pub fn reason(&self, consecutive: u32, last: Option<u16>) -> String {
        let last = match last {
            Some(code) => format!("the last answered {code}"),
            None => "the last got no answer".to_owned(),
        };
        format!(
            "every attempt failed for {} ({consecutive} in a row); {last}",
            human(self.period)
        )
    }
}

/// `5 days`, `3 hours`, `90 seconds`: a period as the disabling reason says it.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 86_400 && s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minute")
    } else if s >= 1 {
        (s, "second")
    } else {
        return format!("{} ms", d.as_millis());
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    /// The statuses the API shows (`parse_shown`).
    pub const SHOWN: [&'static str; 5] =
        ["pending", "retrying", "succeeded", "failed", "cancelled"];

    /// A status as the API filters deliveries by: the four stored ones, and `retrying`, the
    /// pending deliveries that were attempted and are failing (another attempt is planned).
    /// `pending` keeps its meaning, every delivery not settled yet, retrying ones included.
    /// As `(stored status, attempted)`; `attempted` is `None` where it does not matter.
    pub fn parse_shown(raw: &str) -> Result<(Self, Option<bool>), ValidationError> {
        match raw {
            "retrying" => Ok((Self::Pending, Some(true))),
            _ => Self::parse(raw).map(|s| (s, None)).map_err(|_| {
                ValidationError::new(
                    "status",
                    format!(
                        "`{raw}` is not one of: pending, retrying, succeeded, failed, cancelled"
                    ),
                )
            }),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "pending" => Ok(Self::Pending),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            _ => Err(ValidationError::new(
                "status",
                format!("`{raw}` is not one of: pending, succeeded, failed, cancelled"),
            )),
        }
    }
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub workspace_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub next_attempt_at: Option<Timestamp>,
    /// The delivery this one sends again (`POST /v1/deliveries/{id}/redeliver`, replays).
    pub redelivery_of: Option<String>,
    /// The latest attempt's time, status code and error, so that a list says why without
    /// opening each delivery.
    pub last_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// Why it was cancelled: its webhook disabled or deleted, or a redelivery superseding it.
    pub cancel_reason: Option<String>,
    /// For a delivery of a webhook ordered per resource: the resource whose chain it is in,
    /// and its event's number there. A delivery of the chain waits (pending, not due) while an
    /// earlier one is pending.
    pub chain: Option<(String, u64)>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Delivery {
    /// Its status as the API shows it: `retrying` for a pending delivery that was attempted
    /// (found by the filters `retrying` and `pending`, `DeliveryStatus::parse_shown`).
    pub fn shown_status(&self) -> &'static str {
        match (self.status, self.attempt_count) {
            (DeliveryStatus::Pending, n) if n > 0 => "retrying",
            (status, _) => status.as_str(),
        }
    }

    /// A new pending delivery of `event` to `webhook`, due at `now`.
    pub fn new(
        workspace_id: &str,
        webhook_id: &str,
        event_id: &str,
        event_type: EventType,
        now: Timestamp,
    ) -> Self {
        Self {
            id: crate::id::new_id("dlv", now),
            workspace_id: workspace_id.to_owned(),
            webhook_id: webhook_id.to_owned(),
            event_id: event_id.to_owned(),
            event_type,
            status: DeliveryStatus::Pending,
            attempt_count: 0,
            next_attempt_at: Some(now),
            redelivery_of: None,
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            cancel_reason: None,
            chain: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Waiting in its chain for an earlier delivery: pending, and not due at any time.
    pub fn waits_in_chain(&self) -> bool {
        self.chain.is_some()
            && self.status == DeliveryStatus::Pending
            && self.next_attempt_at.is_none()
    }
}

/// One HTTP attempt of a delivery, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub delivery_id: String,
    pub attempt: u32,
    pub attempted_at: Timestamp,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    /// The request's headers that cannot be rebuilt from the delivery, as sent: both
    /// signatures, their timestamp, the webhook's own headers (values masked). A JSON object.
    pub request_headers: Option<String>,
    /// The response's headers as received (bounded). A JSON object.
    pub response_headers: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_webhook_shows_neither_its_secrets_nor_its_header_values() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let url = EndpointUrl::parse(
            "https://hooks.example.com/in",
            &crate::target::TargetPolicy::default(),
        )
        .unwrap();
        let mut w = Webhook::new(
            "wh_1".into(),
            "ws_1".into(),
            url,
            EventFilter::parse(&["*"]).unwrap(),
            secret,
            Timestamp::from_millis(0),
        );
        w.headers = CustomHeaders::parse(&[("Authorization", "Bearer receiver-token-42")]).unwrap();
        w.previous_secret = Some((
            WebhookSecret::parse("old-secret-0123456789").unwrap(),
            Timestamp::from_millis(1),
        ));
        let printed = format!("{w:?} {w:#?}");
        for hidden in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "receiver-token-42",
            "old-secret-0123456789",
        ] {
            assert!(!printed.contains(hidden), "{hidden} in {printed}");
        }
        assert!(printed.contains("Authorization: <redacted>"), "{printed}");
        assert!(
            printed.contains("WebhookSecret(<38 characters>)"),
            "{printed}"
        );
    }

    #[test]
    fn filters_match_names_families_and_all() {
        let f = EventFilter::parse(&["ticket.*", "comment.created"]).unwrap();
        assert!(f.matches(EventType::TicketStatusChanged));
        assert!(f.matches(EventType::CommentCreated));
        assert!(!f.matches(EventType::ProjectCreated));
        assert!(
            EventFilter::parse(&["*"])
                .unwrap()
                .matches(EventType::MemberAdded)
        );
        let e = EventFilter::parse(&["ticket.created", "ticket.exploded"]).unwrap_err();
        assert!(e.message.contains("ticket.exploded"));
        assert!(EventFilter::parse::<&str>(&[]).is_err());
        assert!(EventFilter::parse(&["nope.*"]).is_err());
    }

    #[test]
    fn a_webhook_is_disabled_after_the_period_and_the_count_both_pass() {
        let policy = DisablePolicy::default();
        let t0 = Timestamp::from_millis(1_700_000_000_000);
        let day = std::time::Duration::from_secs(86_400);
        // (failures in a row, time since the run began, disabled)
        let table = [
            (20, day * 5, true),
            (200, day * 6, true),
            (19, day * 10, false),
            (20, day * 5 - std::time::Duration::from_millis(1), false),
            (1_000, day, false),
            (0, day * 30, false),
        ];
        for (n, since, disabled) in table {
            assert_eq!(
                policy.disables(t0, n, t0.plus(since)),
                disabled,
                "{n} failures over {since:?}"
            );
        }
        assert_eq!(
            policy.reason(20, Some(500)),
            "every attempt failed for 5 days (20 in a row); the last answered 500"
        );
        let short = DisablePolicy {
            period: std::time::Duration::from_millis(300),
            failures: 3,
        };
        assert_eq!(
            short.reason(3, None),
            "every attempt failed for 300 ms (3 in a row); the last got no answer"
        );
    }

    #[test]
    fn secrets_are_bounded_printable_and_not_guessable() {
        assert!(WebhookSecret::parse("your-webhook-secret").is_ok());
        assert!(WebhookSecret::parse("short").is_err());
        assert!(WebhookSecret::parse("sixteen-chars-ok\n").is_err());
        // Long enough but from too few characters: refused, saying how many it has.
        for weak in [
            "aaaaaaaaaaaaaaaa",
            "abababababababababab",
            "abcabcabcabcabcabc12",
        ] {
            let e = WebhookSecret::parse(weak).unwrap_err();
            assert!(
                e.message.contains("different characters"),
                "{weak}: {}",
                e.message
            );
        }
        assert!(WebhookSecret::parse("abcdefgh12345678").is_ok());
        assert!(WebhookSecret::parse("s3cret-s3cret-s3cret").is_ok());
    }
}
