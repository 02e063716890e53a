//! The event catalog and the event payload: the one shape customers' code is written against.
//!
//! Architecture invariant: an event is serialized exactly once, here, and those bytes are what
//! is stored and what every delivery of it sends.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ValidationError;
use crate::id::new_id;
use crate::time::Timestamp;
use crate::tracker::{Comment, FieldChange, Member, Project, Ticket, User};

/// The eight event types of the public contract, and two of codmir's own about webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    TicketCreated,
    TicketUpdated,
    TicketDeleted,
    TicketStatusChanged,
    TicketAssigned,
    CommentCreated,
    ProjectCreated,
    MemberAdded,
    /// A test ping, sent to one webhook on request (`POST /v1/webhooks/{id}/ping`).
    WebhookPing,
    /// A webhook was disabled automatically; delivered to the workspace's other webhooks.
    WebhookDisabled,
}

impl EventType {
    /// Every type, the contract's eight first: the catalog's order.
    pub const ALL: [EventType; 10] = [
        EventType::TicketCreated,
        EventType::TicketUpdated,
        EventType::TicketDeleted,
        EventType::TicketStatusChanged,
        EventType::TicketAssigned,
        EventType::CommentCreated,
        EventType::ProjectCreated,
        EventType::MemberAdded,
        EventType::WebhookPing,
        EventType::WebhookDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TicketCreated => "ticket.created",
            EventType::TicketUpdated => "ticket.updated",
            EventType::TicketDeleted => "ticket.deleted",
            EventType::TicketStatusChanged => "ticket.status_changed",
            EventType::TicketAssigned => "ticket.assigned",
            EventType::CommentCreated => "comment.created",
            EventType::ProjectCreated => "project.created",
            EventType::MemberAdded => "member.added",
            EventType::WebhookPing => "webhook.ping",
            EventType::WebhookDisabled => "webhook.disabled",
        }
    }

    /// The contract's description of the event.
    /// Whether a webhook can subscribe to it: every type but the test ping, which goes to the
    /// webhook it tests.
    pub fn subscribable(self) -> bool {
        self != EventType::WebhookPing
    }

    pub fn description(self) -> &'static str {
        match self {
            EventType::TicketCreated => "A new ticket was created",
            EventType::TicketUpdated => "A ticket was updated",
            EventType::TicketDeleted => "A ticket was deleted",
            EventType::TicketStatusChanged => "A ticket status was changed",
            EventType::TicketAssigned => "A ticket was assigned",
            EventType::CommentCreated => "A comment was added to a ticket",
            EventType::ProjectCreated => "A new project was created",
            EventType::MemberAdded => "A member was added to a project",
            EventType::WebhookPing => "A test ping, sent to one webhook on request",
            EventType::WebhookDisabled => {
                "A webhook was disabled automatically after failing deliveries"
            }
        }
    }

    /// The family before the dot: `ticket`, `comment`, `project`, `member` or `webhook`.
    pub fn family(self) -> &'static str {
        self.as_str().split('.').next().unwrap_or_default()
    }

    /// The kind of resource an event of this type is about, whose id it carries as
    /// `resource_id` with a `sequence` number: the ticket for ticket and comment events, the
    /// project for project and member events; none for the events about webhooks.
    pub fn resource(self) -> Option<&'static str> {
        match self {
            EventType::TicketCreated
            | EventType::TicketUpdated
            | EventType::TicketDeleted
            | EventType::TicketStatusChanged
            | EventType::TicketAssigned
            | EventType::CommentCreated => Some("ticket"),
            EventType::ProjectCreated | EventType::MemberAdded => Some("project"),
            EventType::WebhookPing | EventType::WebhookDisabled => None,
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| {
                ValidationError::new(
                    "type",
                    format!("`{raw}` is not an event type; see GET /v1/event-types"),
                )
            })
    }
}

/// `{"id", "name"}` of a project or user inside an event.
#[derive(Debug, Clone, Serialize)]
pub struct Ref {
    pub id: String,
    pub name: String,
}

/// The ticket as events show it.
#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    pub id: String,
    pub project_id: String,
    pub title: String,
    pub description: Option<String>,
    pub status: &'static str,
    pub priority: &'static str,
    pub assignee_id: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Ticket> for TicketView {
    fn from(t: &Ticket) -> Self {
        Self {
            id: t.id.clone(),
            project_id: t.project_id.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            status: t.status.as_str(),
            priority: t.priority.as_str(),
            assignee_id: t.assignee_id.clone(),
            created_by: t.created_by.clone(),
            created_at: t.created_at.to_rfc3339_millis(),
            updated_at: t.updated_at.to_rfc3339_millis(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CommentView {
    pub id: String,
    pub ticket_id: String,
    pub author_id: String,
    pub body: String,
    pub created_at: String,
}

impl From<&Comment> for CommentView {
    fn from(c: &Comment) -> Self {
        Self {
            id: c.id.clone(),
            ticket_id: c.ticket_id.clone(),
            author_id: c.author_id.clone(),
            body: c.body.clone(),
            created_at: c.created_at.to_rfc3339_millis(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub role: &'static str,
    pub added_at: String,
}

impl From<&Member> for MemberView {
    fn from(m: &Member) -> Self {
        Self {
            id: m.user.id.clone(),
            name: m.user.name.clone(),
            email: m.user.email.clone(),
            role: m.role.as_str(),
            added_at: m.added_at.to_rfc3339_millis(),
        }
    }
}

/// A webhook as its own events show it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// Why it was disabled (`webhook.disabled` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
}

/// `data` of an event. Absent parts are left out, so each type carries only what applies.
/// Field order is the contract's: the subject first, then `project` and `user`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<CommentView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Ref>,
    /// `{"field": {"from": …, "to": …}}` for updates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookView>,
}

#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'static str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    data: &'a EventData,
}

/// A serialized event, ready to store and to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub workspace_id: String,
    pub project_id: Option<String>,
    pub event_type: EventType,
    pub created_at: Timestamp,
    /// The ticket or project the event is about (`None` for the events about webhooks).
    pub resource_id: Option<String>,
    /// Its number among the events about `resource_id`: 1, 2, … in commit order.
    pub sequence: Option<u64>,
    /// Compact UTF-8 JSON: `{"id","type","timestamp","resource_id","sequence","data"}` (the
    /// two about the resource only where it has one). Never re-serialized.
    pub payload: String,
}

impl Event {
    /// Builds and serializes an event of `event_type` at `now`, without a sequence number:
    /// for the events about webhooks, and tests. Events about tickets and projects are
    /// stamped by the unit of work that stores them, which takes their numbers.
    pub fn new(
        workspace_id: &str,
        project_id: Option<&str>,
        event_type: EventType,
        now: Timestamp,
        data: &EventData,
    ) -> Self {
        UnstampedEvent::new(workspace_id, project_id, event_type, data).stamp(now)
    }
}

/// An event whose `data` is serialized but which has no id or time yet. Made before a unit
/// of work, so that the writer only stamps it: the id and time are taken there, in commit
/// order, and spliced around bytes already made.
#[derive(Debug, Clone)]
pub struct UnstampedEvent {
    workspace_id: String,
    project_id: Option<String>,
    /// The ticket or project it is about, read from `data` (see [`EventType::resource`]).
    resource_id: Option<String>,
    event_type: EventType,
    /// `data` as compact JSON.
    data: String,
}

impl UnstampedEvent {
    pub fn new(
        workspace_id: &str,
        project_id: Option<&str>,
        event_type: EventType,
        data: &EventData,
    ) -> Self {
        let resource_id = match event_type.resource() {
            Some("ticket") => data.ticket.as_ref().map(|t| t.id.clone()),
            Some(_) => data.project.as_ref().map(|p| p.id.clone()),
            None => None,
        };
        Self {
            workspace_id: workspace_id.to_owned(),
            project_id: project_id.map(str::to_owned),
            resource_id,
            event_type,
            // Serializing plain structs of strings and JSON values cannot fail.
            data: serde_json::to_string(data).expect("event data serializes"),
        }
    }

    /// The ticket or project it is about.
    pub fn resource_id(&self) -> Option<&str> {
        self.resource_id.as_deref()
    }

    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The event, with an id and time taken now, and no sequence number.
    pub fn stamp(self, now: Timestamp) -> Event {
        self.stamp_with(new_id("evt", now), now, None)
    }

    /// The event, with an id and time taken now, numbered `sequence` among the events about
    /// its resource.
    pub fn stamp_in_sequence(self, now: Timestamp, sequence: u64) -> Event {
        self.stamp_with(new_id("evt", now), now, Some(sequence))
    }

    /// [`UnstampedEvent::stamp`] with an id made by the caller (a bulk writer dating rows in
    /// the past). The payload is `{"id","type","timestamp","resource_id","sequence","data"}`,
    /// the contract's order with the resource's two between; the id and resource id (of
    /// [`crate::id`]'s alphabet), the type, the number and the RFC 3339 time need no JSON
    /// escaping, so they are written as they are.
    pub fn stamp_with(self, id: String, now: Timestamp, sequence: Option<u64>) -> Event {
        debug_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        // Milliseconds: events of one burst, and the two events of one PATCH, would
        // otherwise share a timestamp, and receivers order by it.
        let timestamp = now.to_rfc3339_millis();
        let type_name = self.event_type.as_str();
        let mut payload = String::with_capacity(
            48 + id.len() + type_name.len() + timestamp.len() + self.data.len(),
        );
        for part in [
            r#"{"id":""#,
            &id,
            r#"","type":""#,
            type_name,
            r#"","timestamp":""#,
            &timestamp,
        ] {
            payload.push_str(part);
        }
        let sequence = sequence.filter(|_| self.resource_id.is_some());
        if let (Some(resource), Some(n)) = (&self.resource_id, sequence) {
            debug_assert!(
                resource
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            );
            payload.push_str(r#"","resource_id":""#);
            payload.push_str(resource);
            payload.push_str(r#"","sequence":"#);
            payload.push_str(&n.to_string());
            payload.push_str(r#","data":"#);
        } else {
            payload.push_str(r#"","data":"#);
        }
        payload.push_str(&self.data);
        payload.push('}');
        Event {
            id,
            workspace_id: self.workspace_id,
            project_id: self.project_id,
            event_type: self.event_type,
            created_at: now,
            resource_id: sequence.and(self.resource_id),
            sequence,
            payload,
        }
    }
}

pub fn project_ref(p: &Project) -> Ref {
    Ref {
        id: p.id.clone(),
        name: p.name.clone(),
    }
}

pub fn user_ref(u: &User) -> Ref {
    Ref {
        id: u.id.clone(),
        name: u.name.clone(),
    }
}

pub fn changes_map(changes: &[FieldChange]) -> Map<String, Value> {
    changes
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("from".into(), c.from.clone());
            m.insert("to".into(), c.to.clone());
            (c.field.to_owned(), Value::Object(m))
        })
        .collect()
}

/// An example payload of `event_type` for the catalog, made at `at` with fresh ids of the
/// real forms, so that an example pasted into a receiver's test looks like a delivery.
pub fn example(event_type: EventType, at: Timestamp) -> Value {
    let user = Ref {
        id: new_id("usr", at),
        name: "John Doe".into(),
    };
    let project = Ref {
        id: new_id("proj", at),
        name: "Main App".into(),
    };
    let mut ticket = TicketView {
        id: new_id("tkt", at),
        project_id: project.id.clone(),
        title: "Bug in login flow".into(),
        description: Some("Users are logged out after 5 minutes".into()),
        status: "open",
        priority: "high",
        assignee_id: None,
        created_by: user.id.clone(),
        created_at: at.to_rfc3339_millis(),
        updated_at: at.to_rfc3339_millis(),
    };
    let assignee = Ref {
        id: new_id("usr", at),
        name: "Jane Roe".into(),
    };
    let change = |field: &'static str, from: Value, to: Value| {
        Some(changes_map(&[FieldChange { field, from, to }]))
    };
    let mut data = EventData {
        project: Some(project.clone()),
        user: Some(user.clone()),
        ..EventData::default()
    };
    let webhook = WebhookView {
        id: new_id("wh", at),
        url: "https://your-app.com/webhooks/codmir".into(),
        events: vec!["ticket.created".into(), "ticket.updated".into()],
        disabled_reason: None,
        disabled_at: None,
    };
    match event_type {
        EventType::TicketCreated | EventType::TicketDeleted => data.ticket = Some(ticket),
        EventType::TicketUpdated => {
            ticket.priority = "urgent";
            data.ticket = Some(ticket);
            data.changes = change("priority", "high".into(), "urgent".into());
        }
        EventType::TicketStatusChanged => {
            ticket.status = "in_progress";
            data.ticket = Some(ticket);
            data.changes = change("status", "open".into(), "in_progress".into());
        }
        EventType::TicketAssigned => {
            ticket.assignee_id = Some(assignee.id.clone());
            data.ticket = Some(ticket);
            data.changes = change("assignee_id", Value::Null, assignee.id.clone().into());
            data.assignee = Some(assignee);
        }
        EventType::CommentCreated => {
            data.comment = Some(CommentView {
                id: new_id("cmt", at),
                ticket_id: ticket.id.clone(),
                author_id: user.id.clone(),
                body: "I can reproduce this on Safari.".into(),
                created_at: at.to_rfc3339_millis(),
            });
            data.ticket = Some(ticket);
        }
        EventType::ProjectCreated => {}
        EventType::MemberAdded => {
            data.member = Some(MemberView {
                id: assignee.id.clone(),
                name: assignee.name.clone(),
                email: Some("jane@example.com".into()),
                role: "member",
                added_at: at.to_rfc3339_millis(),
            });
        }
        EventType::WebhookPing => {
            data = EventData {
                webhook: Some(webhook),
                ..EventData::default()
            };
        }
        EventType::WebhookDisabled => {
            data = EventData {
                webhook: Some(WebhookView {
                    disabled_reason: Some(
                        "every delivery failed for 5 days (20 in a row); the last answered 500"
                            .into(),
                    ),
                    disabled_at: Some(at.to_rfc3339_millis()),
                    ..webhook
                }),
                ..EventData::default()
            };
        }
    }
    let id = new_id("evt", at);
    let resource = UnstampedEvent::new("", None, event_type, &data).resource_id;
    let payload = Payload {
        id: &id,
        event_type: event_type.as_str(),
        timestamp: at.to_rfc3339_millis(),
        resource_id: resource.as_deref(),
        sequence: resource.as_ref().map(|_| 3),
        data: &data,
    };
    serde_json::to_value(&payload).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_contract_shape_and_order() {
        let data = EventData {
            project: Some(Ref {
                id: "proj_1".into(),
                name: "Main App".into(),
            }),
            user: Some(Ref {
                id: "usr_1".into(),
                name: "John".into(),
            }),
            ..EventData::default()
        };
        let e = Event::new(
            "ws_1",
            Some("proj_1"),
            EventType::ProjectCreated,
            Timestamp::from_millis(1_705_314_600_999),
            &data,
        );
        let expected = format!(
            r#"{{"id":"{}","type":"project.created","timestamp":"2024-01-15T10:30:00.999Z","data":{{"project":{{"id":"proj_1","name":"Main App"}},"user":{{"id":"usr_1","name":"John"}}}}}}"#,
            e.id
        );
        assert_eq!(e.payload, expected);
    }

    #[test]
    fn a_stamped_payload_is_what_serializing_it_whole_gives() {
        let data = EventData {
            ticket: Some(TicketView {
                id: "tkt_1".into(),
                project_id: "proj_1".into(),
                title: "quote \" backslash \\ newline \n tab \t é 🎫 \u{1}".into(),
                description: None,
                status: "open",
                priority: "high",
                assignee_id: None,
                created_by: "usr_1".into(),
                created_at: "2024-01-15T10:30:00.999Z".into(),
                updated_at: "2024-01-15T10:30:00.999Z".into(),
            }),
            ..EventData::default()
        };
        let at = Timestamp::from_millis(1_705_314_600_001);
        let unstamped =
            UnstampedEvent::new("ws_1", Some("proj_1"), EventType::TicketCreated, &data);
        assert_eq!(unstamped.resource_id(), Some("tkt_1"));
        let e = unstamped.clone().stamp(at);
        let whole = serde_json::to_string(&Payload {
            id: &e.id,
            event_type: "ticket.created",
            timestamp: at.to_rfc3339_millis(),
            resource_id: None,
            sequence: None,
            data: &data,
        })
        .unwrap();
        assert_eq!(e.payload, whole);
        let numbered = unstamped.stamp_in_sequence(at, 42);
        let whole = serde_json::to_string(&Payload {
            id: &numbered.id,
            event_type: "ticket.created",
            timestamp: at.to_rfc3339_millis(),
            resource_id: Some("tkt_1"),
            sequence: Some(42),
            data: &data,
        })
        .unwrap();
        assert_eq!(numbered.payload, whole);
        assert_eq!(
            (numbered.resource_id.as_deref(), numbered.sequence),
            (Some("tkt_1"), Some(42))
        );
        let parsed: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(
            parsed["data"]["ticket"]["title"],
            data.ticket.unwrap().title
        );
        assert_eq!((e.created_at, e.event_type), (at, EventType::TicketCreated));
    }

    #[test]
    fn every_type_parses_back_and_has_an_example() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Ok(t));
            assert_eq!(example(t, Timestamp::now())["type"], t.as_str());
        }
        assert!(EventType::parse("ticket.exploded").is_err());
    }
}
