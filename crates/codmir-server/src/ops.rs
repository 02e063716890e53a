//! The tracker's units of work: each mutation validates against the current state, writes
//! its rows and its events, and fans the events out to matching webhooks, all through one
//! [`Tx`] so that the caller's transaction holds all of it or none of it (the outbox).
//!
//! Architecture invariant: nothing here knows HTTP or SQL.

use codmir_core::ValidationError;
use codmir_core::event::{
    CommentView, Event, EventData, EventType, MemberView, TicketView, changes_map, project_ref,
    user_ref,
};
use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    Comment, CommentBody, Email, Member, NewTicket, Principal, Project, ProjectName, Role, Ticket,
    TicketPatch, User, UserName, Workspace, WorkspaceName,
};
use codmir_core::webhook::{Delivery, DeliveryStatus};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{ApiKeyRecord, StoreError, Tx};

/// Why a unit of work was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist in the caller's workspace (other workspaces' ids look the same).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, Error>;

const KEY_PREFIX: &str = "cmk_";

/// A freshly made API key: shown once, stored only as a hash.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: String,
    pub principal: Principal,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    codmir_core::id::random_bytes(&mut buf);
    hex::encode(buf)
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Creates the workspace and user if missing (found by name) and a new API key for the user.
pub async fn create_key(
    tx: &mut dyn Tx,
    workspace: &WorkspaceName,
    user: &UserName,
    now: Timestamp,
) -> Result<NewKey> {
    let ws = match tx.find_workspace_by_name(workspace.as_str()).await? {
        Some(ws) => ws,
        None => {
            let ws = Workspace {
                id: new_id("ws", now),
                name: workspace.as_str().to_owned(),
                created_at: now,
            };
            tx.insert_workspace(&ws).await?;
            ws
        }
    };
    let user = match tx.find_user_by_name(&ws.id, user.as_str()).await? {
        Some(u) => u,
        None => {
            let u = User {
                id: new_id("usr", now),
                workspace_id: ws.id.clone(),
                name: user.as_str().to_owned(),
                email: None,
                created_at: now,
            };
            tx.insert_user(&u).await?;
            u
        }
    };
    let key_id = random_hex(8);
    let secret = random_hex(32);
    tx.insert_api_key(&ApiKeyRecord {
        id: key_id.clone(),
        workspace_id: ws.id.clone(),
        user_id: user.id.clone(),
        secret_hash: hash_secret(&secret),
        created_at: now,
    })
    .await?;
    Ok(NewKey {
        key: format!("{KEY_PREFIX}{key_id}_{secret}"),
        principal: Principal {
            workspace_id: ws.id,
            user_id: user.id,
            user_name: user.name,
        },
    })
}

/// On an empty database, creates the `default` workspace, an `admin` user and their key.
pub async fn bootstrap(tx: &mut dyn Tx, now: Timestamp) -> Result<Option<NewKey>> {
    if tx.workspace_count().await? > 0 {
        return Ok(None);
    }
    let ws = WorkspaceName::parse("default")?;
    let user = UserName::parse("admin")?;
    create_key(tx, &ws, &user, now).await.map(Some)
}

/// The principal a presented key acts as, or `None` for a malformed or unknown key. The
/// secret's hash is compared in constant time.
pub async fn authenticate(tx: &mut dyn Tx, presented: &str) -> Result<Option<Principal>> {
    let Some((key_id, secret)) = presented
        .strip_prefix(KEY_PREFIX)
        .and_then(|r| r.split_once('_'))
    else {
        return Ok(None);
    };
    if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some((record, principal)) = tx.get_api_key(key_id).await? else {
        return Ok(None);
    };
    let presented_hash = hash_secret(secret);
    Ok(bool::from(presented_hash.ct_eq(&record.secret_hash)).then_some(principal))
}

/// Stores `events` and creates one pending delivery, due now, per matching enabled webhook.
async fn emit(tx: &mut dyn Tx, workspace_id: &str, events: &[Event], now: Timestamp) -> Result<()> {
    for event in events {
        tx.insert_event(event).await?;
    }
    let webhooks = tx.enabled_webhooks(workspace_id).await?;
    for event in events {
        for webhook in webhooks
            .iter()
            .filter(|w| w.wants(event.event_type, event.project_id.as_deref()))
        {
            tx.insert_delivery(&Delivery {
                id: new_id("dlv", now),
                workspace_id: workspace_id.to_owned(),
                webhook_id: webhook.id.clone(),
                event_id: event.id.clone(),
                event_type: event.event_type,
                status: DeliveryStatus::Pending,
                attempt_count: 0,
                next_attempt_at: Some(now),
                created_at: now,
                updated_at: now,
            })
            .await?;
        }
    }
    Ok(())
}

fn actor(p: &Principal) -> codmir_core::event::Ref {
    codmir_core::event::Ref {
        id: p.user_id.clone(),
        name: p.user_name.clone(),
    }
}

pub async fn project(tx: &mut dyn Tx, p: &Principal, id: &str) -> Result<Project> {
    tx.get_project(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("project"))
}

pub async fn ticket(tx: &mut dyn Tx, p: &Principal, id: &str) -> Result<Ticket> {
    tx.get_ticket(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("ticket"))
}

pub async fn create_project(
    tx: &mut dyn Tx,
    p: &Principal,
    name: ProjectName,
    now: Timestamp,
) -> Result<Project> {
    let project = Project {
        id: new_id("proj", now),
        workspace_id: p.workspace_id.clone(),
        name: name.into_string(),
        created_by: p.user_id.clone(),
        created_at: now,
    };
    tx.insert_project(&project).await?;
    let data = EventData {
        project: Some(project_ref(&project)),
        user: Some(actor(p)),
        ..EventData::default()
    };
    let event = Event::new(
        &p.workspace_id,
        Some(&project.id),
        EventType::ProjectCreated,
        now,
        &data,
    );
    emit(tx, &p.workspace_id, &[event], now).await?;
    Ok(project)
}

/// Adds a member to a project, creating the workspace user when the e-mail is new.
pub async fn add_member(
    tx: &mut dyn Tx,
    p: &Principal,
    project_id: &str,
    name: UserName,
    email: Email,
    role: Role,
    now: Timestamp,
) -> Result<Member> {
    let project = project(tx, p, project_id).await?;
    let user = match tx
        .find_user_by_email(&p.workspace_id, email.as_str())
        .await?
    {
        Some(u) => u,
        None => {
            let u = User {
                id: new_id("usr", now),
                workspace_id: p.workspace_id.clone(),
                name: name.into_string(),
                email: Some(email.as_str().to_owned()),
                created_at: now,
            };
            tx.insert_user(&u).await?;
            u
        }
    };
    if tx.get_member(&project.id, &user.id).await?.is_some() {
        return Err(Error::Conflict {
            code: "already_member",
            message: format!(
                "{} is already a member of project {}",
                email.as_str(),
                project.id
            ),
        });
    }
    let member = Member {
        project_id: project.id.clone(),
        user,
        role,
        added_at: now,
    };
    tx.insert_member(&member).await?;
    let data = EventData {
        member: Some(MemberView::from(&member)),
        project: Some(project_ref(&project)),
        user: Some(actor(p)),
        ..EventData::default()
    };
    let event = Event::new(
        &p.workspace_id,
        Some(&project.id),
        EventType::MemberAdded,
        now,
        &data,
    );
    emit(tx, &p.workspace_id, &[event], now).await?;
    Ok(member)
}

async fn assignee(tx: &mut dyn Tx, p: &Principal, id: &str) -> Result<User> {
    tx.get_user(&p.workspace_id, id).await?.ok_or_else(|| {
        ValidationError::new(
            "assignee_id",
            format!("there is no user `{id}` in this workspace"),
        )
        .into()
    })
}

fn ticket_data(t: &Ticket, project: &Project, p: &Principal) -> EventData {
    EventData {
        ticket: Some(TicketView::from(t)),
        project: Some(project_ref(project)),
        user: Some(actor(p)),
        ..EventData::default()
    }
}

/// Creates a ticket: `ticket.created`, and `ticket.assigned` when it has an assignee.
pub async fn create_ticket(
    tx: &mut dyn Tx,
    p: &Principal,
    project_id: &str,
    new: NewTicket,
    now: Timestamp,
) -> Result<Ticket> {
    let project = project(tx, p, project_id).await?;
    let assigned = match &new.assignee_id {
        Some(id) => Some(assignee(tx, p, id).await?),
        None => None,
    };
    let ticket = Ticket {
        id: new_id("tkt", now),
        workspace_id: p.workspace_id.clone(),
        project_id: project.id.clone(),
        title: new.title.into_string(),
        description: new.description.map(|d| d.into_string()),
        status: new.status,
        priority: new.priority,
        assignee_id: new.assignee_id,
        created_by: p.user_id.clone(),
        created_at: now,
        updated_at: now,
    };
    tx.insert_ticket(&ticket).await?;
    let data = ticket_data(&ticket, &project, p);
    let mut events = vec![Event::new(
        &p.workspace_id,
        Some(&project.id),
        EventType::TicketCreated,
        now,
        &data,
    )];
    if let Some(user) = assigned {
        let data = EventData {
            assignee: Some(user_ref(&user)),
            ..data
        };
        events.push(Event::new(
            &p.workspace_id,
            Some(&project.id),
            EventType::TicketAssigned,
            now,
            &data,
        ));
    }
    emit(tx, &p.workspace_id, &events, now).await?;
    Ok(ticket)
}

/// Applies a patch: `ticket.updated` when anything changed, plus `ticket.status_changed` for
/// a new status and `ticket.assigned` for a new (non-empty) assignee.
pub async fn update_ticket(
    tx: &mut dyn Tx,
    p: &Principal,
    id: &str,
    patch: TicketPatch,
    now: Timestamp,
) -> Result<Ticket> {
    let current = ticket(tx, p, id).await?;
    let assigned = match &patch.assignee_id {
        Some(Some(id)) if Some(id) != current.assignee_id.as_ref() => {
            Some(assignee(tx, p, id).await?)
        }
        _ => None,
    };
    let (next, changes) = patch.apply(&current, now);
    if changes.is_empty() {
        return Ok(current);
    }
    tx.update_ticket(&next).await?;
    let project = project(tx, p, &next.project_id).await?;
    let base = ticket_data(&next, &project, p);
    let pid = Some(project.id.as_str());
    let mut events = vec![Event::new(
        &p.workspace_id,
        pid,
        EventType::TicketUpdated,
        now,
        &EventData {
            changes: Some(changes_map(&changes)),
            ..base.clone()
        },
    )];
    if let Some(change) = changes.iter().find(|c| c.field == "status") {
        let data = EventData {
            changes: Some(changes_map(std::slice::from_ref(change))),
            ..base.clone()
        };
        events.push(Event::new(
            &p.workspace_id,
            pid,
            EventType::TicketStatusChanged,
            now,
            &data,
        ));
    }
    if let (Some(user), Some(change)) =
        (assigned, changes.iter().find(|c| c.field == "assignee_id"))
    {
        let data = EventData {
            assignee: Some(user_ref(&user)),
            changes: Some(changes_map(std::slice::from_ref(change))),
            ..base
        };
        events.push(Event::new(
            &p.workspace_id,
            pid,
            EventType::TicketAssigned,
            now,
            &data,
        ));
    }
    emit(tx, &p.workspace_id, &events, now).await?;
    Ok(next)
}

/// Deletes a ticket: `ticket.deleted` carries the ticket as it was.
pub async fn delete_ticket(tx: &mut dyn Tx, p: &Principal, id: &str, now: Timestamp) -> Result<()> {
    let current = ticket(tx, p, id).await?;
    tx.delete_ticket(&current.id, now).await?;
    let project = project(tx, p, &current.project_id).await?;
    let data = ticket_data(&current, &project, p);
    let event = Event::new(
        &p.workspace_id,
        Some(&project.id),
        EventType::TicketDeleted,
        now,
        &data,
    );
    emit(tx, &p.workspace_id, &[event], now).await
}

pub async fn create_comment(
    tx: &mut dyn Tx,
    p: &Principal,
    ticket_id: &str,
    body: CommentBody,
    now: Timestamp,
) -> Result<Comment> {
    let ticket = ticket(tx, p, ticket_id).await?;
    let comment = Comment {
        id: new_id("cmt", now),
        workspace_id: p.workspace_id.clone(),
        ticket_id: ticket.id.clone(),
        author_id: p.user_id.clone(),
        body: body.into_string(),
        created_at: now,
    };
    tx.insert_comment(&comment).await?;
    let project = project(tx, p, &ticket.project_id).await?;
    let data = EventData {
        comment: Some(CommentView::from(&comment)),
        ..ticket_data(&ticket, &project, p)
    };
    let event = Event::new(
        &p.workspace_id,
        Some(&project.id),
        EventType::CommentCreated,
        now,
        &data,
    );
    emit(tx, &p.workspace_id, &[event], now).await?;
    Ok(comment)
}
