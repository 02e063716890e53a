//! The tracker's domain: workspaces, users, projects, members, tickets and comments, the
//! validated values they are made of, and how a ticket patch turns into field changes.

use serde_json::Value;

use crate::ValidationError;
use crate::time::Timestamp;

/// Declares a trimmed, length-bounded text newtype whose only constructor validates.
macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            #[allow(unused_comparisons, clippy::absurd_extreme_comparisons)]
            pub fn parse(raw: &str) -> Result<Self, ValidationError> {
                let text = raw.trim();
                let chars = text.chars().count();
                if chars < $min {
                    return Err(ValidationError::new($field, "must not be empty"));
                }
                if chars > $max {
                    return Err(ValidationError::new(
                        $field,
                        format!("must be at most {} characters (got {chars})", $max),
                    ));
                }
                if crate::has_control_chars(text) {
                    return Err(ValidationError::new($field, "must not contain control characters"));
                }
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }
    };
}

bounded_text!(
    /// A workspace's name: 1–200 characters.
    WorkspaceName, "workspace", 1, 200);
bounded_text!(
    /// A person's display name: 1–200 characters.
    UserName, "name", 1, 200);
bounded_text!(
    /// A project's name: 1–200 characters.
    ProjectName, "name", 1, 200);
bounded_text!(
    /// A ticket's title: 1–500 characters.
    TicketTitle, "title", 1, 500);
bounded_text!(
    /// A ticket's description: up to 20,000 characters, may be empty.
    Description, "description", 0, 20_000);
bounded_text!(
    /// A comment's body: 1–20,000 characters.
    CommentBody, "body", 1, 20_000);

/// An e-mail address, lower-cased: `local@domain`, no spaces, at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let text = raw.trim().to_lowercase();
        let invalid = || {
            ValidationError::new(
                "email",
                format!("`{raw}` is not an e-mail address like name@example.com"),
            )
        };
        if text.len() > 254 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = text.split_once('@').ok_or_else(invalid)?;
        if local.is_empty() || domain.is_empty() || domain.contains('@') || !domain.contains('.') {
            return Err(invalid());
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Declares a closed set of lower-case names, parsed from and shown as their wire strings.
macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Result<Self, ValidationError> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ValidationError::new(
                        $field,
                        format!("`{raw}` is not one of: {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }
    };
}

name_enum!(
    /// Where a ticket is in its life.
    TicketStatus, "status", {
    Open => "open", InProgress => "in_progress", Resolved => "resolved", Closed => "closed",
});
name_enum!(
    /// How urgent a ticket is.
    Priority, "priority", { Low => "low", Medium => "medium", High => "high", Urgent => "urgent" });
name_enum!(
    /// What a member may do in a project.
    Role, "role", { Admin => "admin", Member => "member", Viewer => "viewer" });

/// Who is acting: the user an API key belongs to, in its workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub workspace_id: String,
    pub user_id: String,
    pub user_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// Users made by `codmir keys create` have no e-mail; members always have one.
    pub email: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub project_id: String,
    pub user: User,
    pub role: Role,
    pub added_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: String,
    pub workspace_id: String,
    pub project_id: String,
    pub title: String,
    pub description: Option<String>,
    pub status: TicketStatus,
    pub priority: Priority,
    pub assignee_id: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: String,
    pub workspace_id: String,
    pub ticket_id: String,
    pub author_id: String,
    pub body: String,
    pub created_at: Timestamp,
}

/// A validated request to add a member to a project.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub name: UserName,
    pub email: Email,
    pub role: Role,
}

/// A validated request to create a ticket.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub title: TicketTitle,
    pub description: Option<Description>,
    pub status: TicketStatus,
    pub priority: Priority,
    pub assignee_id: Option<String>,
}

/// A validated partial update of a ticket. `None` leaves a field alone; for the nullable
/// fields `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct TicketPatch {
    pub title: Option<TicketTitle>,
    pub description: Option<Option<Description>>,
    pub status: Option<TicketStatus>,
    pub priority: Option<Priority>,
    pub assignee_id: Option<Option<String>>,
}

/// One field of a ticket that a patch changed, with its old and new wire values.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: &'static str,
    pub from: Value,
    pub to: Value,
}

fn opt_value(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

impl TicketPatch {
    /// The ticket after this patch at `now`, and the fields that really changed (setting a
    /// field to its current value is not a change). `updated_at` moves only if something changed.
    pub fn apply(&self, current: &Ticket, now: Timestamp) -> (Ticket, Vec<FieldChange>) {
        let mut next = current.clone();
        let mut changes = Vec::new();
        if let Some(title) = &self.title
            && title.as_str() != current.title
        {
            changes.push(FieldChange {
                field: "title",
                from: Value::String(current.title.clone()),
                to: Value::String(title.as_str().to_owned()),
            });
            next.title = title.as_str().to_owned();
        }
        if let Some(description) = &self.description {
            let new = description.as_ref().map(|d| d.as_str().to_owned());
            if new != current.description {
                changes.push(FieldChange {
                    field: "description",
                    from: opt_value(&current.description),
                    to: opt_value(&new),
                });
                next.description = new;
            }
        }
        if let Some(status) = self.status
            && status != current.status
        {
            changes.push(FieldChange {
                field: "status",
                from: current.status.as_str().into(),
                to: status.as_str().into(),
            });
            next.status = status;
        }
        if let Some(priority) = self.priority
            && priority != current.priority
        {
            changes.push(FieldChange {
                field: "priority",
                from: current.priority.as_str().into(),
                to: priority.as_str().into(),
            });
            next.priority = priority;
        }
        if let Some(assignee) = &self.assignee_id
            && *assignee != current.assignee_id
        {
            changes.push(FieldChange {
                field: "assignee_id",
                from: opt_value(&current.assignee_id),
                to: opt_value(assignee),
            });
            next.assignee_id = assignee.clone();
        }
        if !changes.is_empty() {
            next.updated_at = now;
        }
        (next, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            id: "tkt_1".into(),
            workspace_id: "ws_1".into(),
            project_id: "proj_1".into(),
            title: "Bug".into(),
            description: None,
            status: TicketStatus::Open,
            priority: Priority::Medium,
            assignee_id: None,
            created_by: "usr_1".into(),
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(1),
        }
    }

    #[test]
    fn patch_reports_only_real_changes() {
        let patch = TicketPatch {
            title: Some(TicketTitle::parse("Bug").unwrap()),
            status: Some(TicketStatus::InProgress),
            assignee_id: Some(Some("usr_2".into())),
            ..TicketPatch::default()
        };
        let (next, changes) = patch.apply(&ticket(), Timestamp::from_millis(5));
        let fields: Vec<_> = changes.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["status", "assignee_id"]);
        assert_eq!(next.status, TicketStatus::InProgress);
        assert_eq!(next.updated_at, Timestamp::from_millis(5));
        assert_eq!(changes[1].from, Value::Null);
    }

    #[test]
    fn empty_patch_changes_nothing() {
        let (next, changes) = TicketPatch::default().apply(&ticket(), Timestamp::from_millis(5));
        assert!(changes.is_empty());
        assert_eq!(next, ticket());
    }

    #[test]
    fn text_bounds_and_enums_are_enforced() {
        assert!(TicketTitle::parse("   ").is_err());
        assert!(TicketTitle::parse(&"x".repeat(501)).is_err());
        assert_eq!(TicketTitle::parse("  ok ").unwrap().as_str(), "ok");
        assert!(TicketTitle::parse("a\u{0}b").is_err());
        assert!(
            TicketStatus::parse("done")
                .unwrap_err()
                .message
                .contains("in_progress")
        );
        assert!(Email::parse("a@b").is_err());
        assert_eq!(
            Email::parse(" Ann@Example.com ").unwrap().as_str(),
            "ann@example.com"
        );
    }
}
