//! Units of work of the tracker: projects, members, tickets and comments, each with its events.

use codmir_core::ValidationError;
use codmir_core::event::{
    CommentView, Event, EventData, EventType, MemberView, TicketView, UnstampedEvent, changes_map,
    project_ref, user_ref,
};
use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    Comment, CommentBody, Member, NewMember, NewTicket, Principal, Project, ProjectName, Ticket,
    TicketPatch, User,
};

use super::{AfterCommit, Error, Result, emit};
use crate::store::Tx;

/// An event of `t` about `project`, caused by `p`.
fn event(
    p: &Principal,
    project: &Project,
    t: EventType,
    data: &EventData,
    now: Timestamp,
) -> Event {
    Event::new(&p.workspace_id, Some(&project.id), t, now, data)
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

async fn locked_ticket(tx: &mut dyn Tx, p: &Principal, id: &str) -> Result<Ticket> {
    tx.lock_ticket(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("ticket"))
}

pub async fn create_project(
    tx: &mut dyn Tx,
    p: &Principal,
    name: ProjectName,
    now: Timestamp,
    after: &mut AfterCommit,
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
    let event = event(p, &project, EventType::ProjectCreated, &data, now);
    emit(tx, &p.workspace_id, &[event], now, after).await?;
    Ok(project)
}

/// Adds a member to a project, creating the workspace user when the e-mail is new.
pub async fn add_member(
    tx: &mut dyn Tx,
    p: &Principal,
    project_id: &str,
    new: NewMember,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<Member> {
    let project = project(tx, p, project_id).await?;
    let NewMember { name, email, role } = new;
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
    let event = event(p, &project, EventType::MemberAdded, &data, now);
    emit(tx, &p.workspace_id, &[event], now, after).await?;
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
    after: &mut AfterCommit,
) -> Result<Ticket> {
    let project = project(tx, p, project_id).await?;
    let assigned = match &new.assignee_id {
        Some(id) => Some(assignee(tx, p, id).await?),
        None => None,
    };
    let prepared = prepare_ticket(p, &project, new, assigned, now);
    insert_ticket(tx, p, prepared, now, after).await
}

/// A new ticket and its events, serialized and ready to store. Made from a project the
/// caller already holds (projects never change once created), so the unit of work need not
/// read it, and before the unit, so the writer neither serializes nor allocates for it: the
/// ticket's id and times are the request's; only the events' ids and times, which must follow
/// commit order (the event log is read forward by id), are taken by the unit.
#[derive(Debug)]
pub struct PreparedTicket {
    ticket: Ticket,
    events: Vec<UnstampedEvent>,
}

/// [`PreparedTicket`] of `new` in `project` (which must be `p`'s), assigned to `assigned`
/// (the user `new.assignee_id` names, read by the caller).
pub fn prepare_ticket(
    p: &Principal,
    project: &Project,
    new: NewTicket,
    assigned: Option<User>,
    now: Timestamp,
) -> PreparedTicket {
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
    let data = ticket_data(&ticket, project, p);
    let unstamped =
        |t, data: &EventData| UnstampedEvent::new(&p.workspace_id, Some(&project.id), t, data);
    let mut events = vec![unstamped(EventType::TicketCreated, &data)];
    if let Some(user) = assigned {
        let data = EventData {
            assignee: Some(user_ref(&user)),
            ..data
        };
        events.push(unstamped(EventType::TicketAssigned, &data));
    }
    PreparedTicket { ticket, events }
}

/// Stores a [`PreparedTicket`], its events stamped at `now`, and fans them out. The project's existence is the
/// foreign key's to check: a ticket of a project that is not there is refused by the insert,
/// before anything is written.
pub async fn insert_ticket(
    tx: &mut dyn Tx,
    p: &Principal,
    prepared: PreparedTicket,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<Ticket> {
    let PreparedTicket { ticket, events } = prepared;
    let events: Vec<Event> = events.into_iter().map(|e| e.stamp(now)).collect();
    tx.insert_ticket(&ticket).await?;
    emit(tx, &p.workspace_id, &events, now, after).await?;
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
    after: &mut AfterCommit,
) -> Result<Ticket> {
    let current = locked_ticket(tx, p, id).await?;
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
    let mut events = vec![event(
        p,
        &project,
        EventType::TicketUpdated,
        &EventData {
            changes: Some(changes_map(&changes)),
            ..base.clone()
        },
        now,
    )];
    if let Some(change) = changes.iter().find(|c| c.field == "status") {
        let data = EventData {
            changes: Some(changes_map(std::slice::from_ref(change))),
            ..base.clone()
        };
        events.push(event(
            p,
            &project,
            EventType::TicketStatusChanged,
            &data,
            now,
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
        events.push(event(p, &project, EventType::TicketAssigned, &data, now));
    }
    emit(tx, &p.workspace_id, &events, now, after).await?;
    Ok(next)
}

/// Deletes a ticket: `ticket.deleted` carries the ticket as it was.
pub async fn delete_ticket(
    tx: &mut dyn Tx,
    p: &Principal,
    id: &str,
    now: Timestamp,
    after: &mut AfterCommit,
) -> Result<()> {
    let current = locked_ticket(tx, p, id).await?;
    tx.delete_ticket(&current.id, now).await?;
    let project = project(tx, p, &current.project_id).await?;
    let data = ticket_data(&current, &project, p);
    let event = event(p, &project, EventType::TicketDeleted, &data, now);
    emit(tx, &p.workspace_id, &[event], now, after).await
}

pub async fn create_comment(
    tx: &mut dyn Tx,
    p: &Principal,
    ticket_id: &str,
    body: CommentBody,
    now: Timestamp,
    after: &mut AfterCommit,
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
    let event = event(p, &project, EventType::CommentCreated, &data, now);
    emit(tx, &p.workspace_id, &[event], now, after).await?;
    Ok(comment)
}
