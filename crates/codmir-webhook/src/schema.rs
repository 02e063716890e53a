//! The JSON Schema (draft 2020-12) of each event type, generated from this crate's types: the
//! schemas codmir publishes in `GET /v1/event-types` are these, so the published schemas, the
//! types receivers deserialize into, and (by codmir's tests) the events it sends cannot drift.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::event::{CommentData, MemberData, ProjectData, TicketData, WebhookData};

/// The envelope of the events about webhooks, around their type's `data`.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct Envelope<D> {
    /// `evt_…`: the same in every delivery and attempt (and in `webhook-id`).
    #[schemars(pattern("^evt_"))]
    id: String,
    #[schemars(rename = "type")]
    event_type: String,
    /// When the change happened (UTC, milliseconds).
    #[schemars(extend("format" = "date-time"))]
    timestamp: String,
    data: D,
}

/// The envelope of the events about a ticket or a project: numbered per resource.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct Sequenced<D> {
    /// `evt_…`: the same in every delivery and attempt (and in `webhook-id`).
    #[schemars(pattern("^evt_"))]
    id: String,
    #[schemars(rename = "type")]
    event_type: String,
    /// When the change happened (UTC, milliseconds).
    #[schemars(extend("format" = "date-time"))]
    timestamp: String,
    /// The ticket (ticket and comment events) or project (project and member events) the
    /// event is about.
    #[schemars(pattern("^(tkt|proj)_"))]
    resource_id: String,
    /// The event's number among the events about `resource_id`: 1, 2, … in commit order,
    /// without gaps.
    #[schemars(range(min = 1))]
    sequence: u64,
    data: D,
}

/// Every event type this crate knows, in the catalog's order.
pub const EVENT_TYPES: [&str; 10] = [
    "ticket.created",
    "ticket.updated",
    "ticket.deleted",
    "ticket.status_changed",
    "ticket.assigned",
    "comment.created",
    "project.created",
    "member.added",
    "webhook.ping",
    "webhook.disabled",
];

/// The schema of a whole event of `event_type` (`None` for a type this crate does not know).
///
/// ```
/// let schema = codmir_webhook::schema("ticket.created").unwrap();
/// assert_eq!(schema["properties"]["type"]["const"], "ticket.created");
/// assert!(codmir_webhook::schema("nope.nope").is_none());
/// ```
pub fn schema(event_type: &str) -> Option<Value> {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let root = match event_type {
        "ticket.created"
        | "ticket.updated"
        | "ticket.deleted"
        | "ticket.status_changed"
        | "ticket.assigned" => generator.into_root_schema_for::<Sequenced<TicketData>>(),
        "comment.created" => generator.into_root_schema_for::<Sequenced<CommentData>>(),
        "project.created" => generator.into_root_schema_for::<Sequenced<ProjectData>>(),
        "member.added" => generator.into_root_schema_for::<Sequenced<MemberData>>(),
        "webhook.ping" | "webhook.disabled" => {
            generator.into_root_schema_for::<Envelope<WebhookData>>()
        }
        _ => return None,
    };
    let mut root = root.to_value();
    root["title"] = json!(event_type);
    root["properties"]["type"] = json!({"const": event_type});
    Some(root)
}
