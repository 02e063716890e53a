//! The events codmir sends, typed: the contract's eight, codmir's two about webhooks, and
//! [`Data::Unknown`] for any type added later, so that a new type never breaks a receiver.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One event: `{"id", "type", "timestamp", "resource_id", "sequence", "data"}` (the two about
/// the resource on events about a ticket or a project).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_…`, the same in every delivery and attempt of the event (and in the
    /// `webhook-id` header): the key to de-duplicate on.
    pub id: String,
    /// When the change happened, RFC 3339 in UTC with milliseconds. Deliveries can arrive out
    /// of order (retries, parallel attempts): order by `sequence` per resource, or by this.
    pub timestamp: String,
    /// The ticket (`tkt_…`, for ticket and comment events) or project (`proj_…`, for project
    /// and member events) the event is about; `None` for the events about webhooks.
    pub resource_id: Option<String>,
    /// The event's number among the events about `resource_id`: 1 for the first, then one
    /// more for each, in the order the changes committed. A receiver that last saw `n` and
    /// gets `n + 2` knows one is still to come; one that gets `n` or less knows it is stale
    /// ([`crate::Sequences`] keeps that account).
    pub sequence: Option<u64>,
    /// What happened, by type.
    pub data: Data,
}

impl Event {
    /// The event's type as sent: `ticket.created`, … (also for [`Data::Unknown`]).
    pub fn event_type(&self) -> &str {
        self.data.event_type()
    }
}

/// What happened, by event type. Non-exhaustive: match with a `_` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Data {
    /// `ticket.created`: a new ticket was created.
    TicketCreated(TicketData),
    /// `ticket.updated`: a ticket was updated; `changes` says which fields.
    TicketUpdated(TicketData),
    /// `ticket.deleted`: a ticket was deleted; `ticket` is as it was.
    TicketDeleted(TicketData),
    /// `ticket.status_changed`: `changes.status` holds the old and new status.
    TicketStatusChanged(TicketData),
    /// `ticket.assigned`: `assignee` is the new assignee.
    TicketAssigned(TicketData),
    /// `comment.created`: a comment was added to a ticket.
    CommentCreated(CommentData),
    /// `project.created`: a new project was created.
    ProjectCreated(ProjectData),
    /// `member.added`: a member was added to a project.
    MemberAdded(MemberData),
    /// `webhook.ping`: a test, sent to one webhook on request.
    WebhookPing(WebhookData),
    /// `webhook.disabled`: a webhook of the workspace was disabled after failing.
    WebhookDisabled(WebhookData),
    /// A type this version does not know; answer 2xx and ignore it, or log it.
    Unknown { event_type: String, data: Value },
}

impl Data {
    /// The wire name of the type.
    pub fn event_type(&self) -> &str {
        match self {
            Data::TicketCreated(_) => "ticket.created",
            Data::TicketUpdated(_) => "ticket.updated",
            Data::TicketDeleted(_) => "ticket.deleted",
            Data::TicketStatusChanged(_) => "ticket.status_changed",
            Data::TicketAssigned(_) => "ticket.assigned",
            Data::CommentCreated(_) => "comment.created",
            Data::ProjectCreated(_) => "project.created",
            Data::MemberAdded(_) => "member.added",
            Data::WebhookPing(_) => "webhook.ping",
            Data::WebhookDisabled(_) => "webhook.disabled",
            Data::Unknown { event_type, .. } => event_type,
        }
    }
}

/// `{"id", "name"}` of a project or user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Ref {
    pub id: String,
    pub name: String,
}

/// A ticket as events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Ticket {
    #[cfg_attr(feature = "schema", schemars(pattern("^tkt_")))]
    pub id: String,
    #[cfg_attr(feature = "schema", schemars(pattern("^proj_")))]
    pub project_id: String,
    pub title: String,
    pub description: Option<String>,
    /// `open`, `in_progress`, `resolved` or `closed`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["open", "in_progress", "resolved", "closed"])))]
    pub status: String,
    /// `low`, `medium`, `high` or `urgent`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["low", "medium", "high", "urgent"])))]
    pub priority: String,
    pub assignee_id: Option<String>,
    #[cfg_attr(feature = "schema", schemars(pattern("^usr_")))]
    pub created_by: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub updated_at: String,
}

/// One changed field: its value before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Change {
    pub from: Value,
    pub to: Value,
}

/// `data` of the `ticket.*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TicketData {
    pub ticket: Ticket,
    pub project: Ref,
    /// Who made the change.
    pub user: Ref,
    /// `ticket.assigned`: the user now assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Ref>,
    /// `ticket.updated`, `ticket.status_changed`, and `ticket.assigned` after an update:
    /// the fields that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<BTreeMap<String, Change>>,
}

/// A comment as events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Comment {
    #[cfg_attr(feature = "schema", schemars(pattern("^cmt_")))]
    pub id: String,
    #[cfg_attr(feature = "schema", schemars(pattern("^tkt_")))]
    pub ticket_id: String,
    #[cfg_attr(feature = "schema", schemars(pattern("^usr_")))]
    pub author_id: String,
    pub body: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
}

/// `data` of `comment.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommentData {
    pub comment: Comment,
    pub ticket: Ticket,
    pub project: Ref,
    pub user: Ref,
}

/// `data` of `project.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProjectData {
    pub project: Ref,
    pub user: Ref,
}

/// A project member as events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Member {
    /// The member's user id.
    #[cfg_attr(feature = "schema", schemars(pattern("^usr_")))]
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    /// `admin`, `member` or `viewer`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["admin", "member", "viewer"])))]
    pub role: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub added_at: String,
}

/// `data` of `member.added`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MemberData {
    pub member: Member,
    pub project: Ref,
    pub user: Ref,
}

/// A webhook as its own events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Webhook {
    #[cfg_attr(feature = "schema", schemars(pattern("^wh_")))]
    pub id: String,
    #[cfg_attr(feature = "schema", schemars(extend("format" = "uri")))]
    pub url: String,
    pub events: Vec<String>,
    /// `webhook.disabled`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// `webhook.disabled`: when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub disabled_at: Option<String>,
}

/// `data` of `webhook.ping` and `webhook.disabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookData {
    pub webhook: Webhook,
}

/// The event as it is on the wire, before `data` is read by its type.
#[derive(Serialize, Deserialize)]
struct Wire<D> {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    data: D,
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        let wire = Wire::<Value>::deserialize(d)?;
        fn typed<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            event_type: &str,
            data: Value,
        ) -> Result<T, E> {
            serde_json::from_value(data)
                .map_err(|e| E::custom(format!("data of {event_type}: {e}")))
        }
        let t = wire.event_type.as_str();
        let data = match t {
            "ticket.created" => Data::TicketCreated(typed(t, wire.data)?),
            "ticket.updated" => Data::TicketUpdated(typed(t, wire.data)?),
            "ticket.deleted" => Data::TicketDeleted(typed(t, wire.data)?),
            "ticket.status_changed" => Data::TicketStatusChanged(typed(t, wire.data)?),
            "ticket.assigned" => Data::TicketAssigned(typed(t, wire.data)?),
            "comment.created" => Data::CommentCreated(typed(t, wire.data)?),
            "project.created" => Data::ProjectCreated(typed(t, wire.data)?),
            "member.added" => Data::MemberAdded(typed(t, wire.data)?),
            "webhook.ping" => Data::WebhookPing(typed(t, wire.data)?),
            "webhook.disabled" => Data::WebhookDisabled(typed(t, wire.data)?),
            "" => return Err(De::Error::custom("the event's `type` is empty")),
            _ => Data::Unknown {
                event_type: wire.event_type,
                data: wire.data,
            },
        };
        Ok(Event {
            id: wire.id,
            timestamp: wire.timestamp,
            resource_id: wire.resource_id,
            sequence: wire.sequence,
            data,
        })
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let data = match &self.data {
            Data::TicketCreated(d)
            | Data::TicketUpdated(d)
            | Data::TicketDeleted(d)
            | Data::TicketStatusChanged(d)
            | Data::TicketAssigned(d) => serde_json::to_value(d),
            Data::CommentCreated(d) => serde_json::to_value(d),
            Data::ProjectCreated(d) => serde_json::to_value(d),
            Data::MemberAdded(d) => serde_json::to_value(d),
            Data::WebhookPing(d) | Data::WebhookDisabled(d) => serde_json::to_value(d),
            Data::Unknown { data, .. } => Ok(data.clone()),
        }
        .map_err(serde::ser::Error::custom)?;
        Wire {
            id: self.id.clone(),
            event_type: self.event_type().to_owned(),
            timestamp: self.timestamp.clone(),
            resource_id: self.resource_id.clone(),
            sequence: self.sequence,
            data,
        }
        .serialize(s)
    }
}
