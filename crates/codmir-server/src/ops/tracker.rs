//! Units of work of the tracker: projects, members, tickets and comments, each with its events.

use codmir_core::ValidationError;
use codmir_core::event::{
    CommentView, EventData, EventType, MemberView, TicketView, UnstampedEvent, changes_map,
    project_ref, user_ref,
};
use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    Comment, CommentBody, Member, NewMember, NewTicket, Principal, Project, ProjectName, Ticket,
    TicketPatch, User,
};

use super::{AfterCommit, Checked, Error, Result, emit};
use crate::store::{ReadTx, StoreResult, Tx};

/// An event of `t` about `project`, caused by `p`: serialized now, stamped (id, time,
/// sequence number) by the unit of work that stores it.
fn event(p: &Principal, project: &Project, t: EventType, data: &EventData) -> UnstampedEvent {
    UnstampedEvent::new(&p.workspace_id, Some(&project.id), t, data)
}

fn actor(p: &Principal) -> codmir_core::event::Ref {
    codmir_core::event::Ref {
        id: p.user_id.clone(),
        name: p.user_name.clone(),
    }
}

pub async fn project(tx: &mut dyn ReadTx, p: &Principal, id: &str) -> Result<Project> {
    tx.get_project(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("project"))
}

pub async fn ticket(tx: &mut dyn ReadTx, p: &Principal, id: &str) -> Result<Ticket> {
    tx.get_ticket(&p.workspace_id, id)
        .await?
        .ok_or(Error::NotFound("ticket"))
}

async fn locked_ticket(tx: &mut dyn ReadTx, p: &Principal, id: &str) -> Result<Ticket> {
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
    // Its one event, `project.created`, is number 1.
    tx.insert_project(&project, 1).await?;
    let data = EventData {
        project: Some(project_ref(&project)),
        user: Some(actor(p)),
        ..EventData::default()
    };
    let event = event(p, &project, EventType::ProjectCreated, &data);
    emit(tx, &p.workspace_id, vec![event], now, after).await?;
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
    let event = event(p, &project, EventType::MemberAdded, &data);
    emit(tx, &p.workspace_id, vec![event], now, after).await?;
    Ok(member)
}

async fn assignee(tx: &mut dyn ReadTx, p: &Principal, id: &str) -> Result<User> {
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

/// Creates a ticket: `ticket.created`, and `ticket.assigned` when it has an assignee. Its
/// checks read the project and the assignee.
#[derive(Debug)]
pub struct CreateTicket {
    pub principal: Principal,
    pub project_id: String,
    pub new: NewTicket,
}

impl Checked for CreateTicket {
    type Plan = PreparedTicket;
    type Output = Ticket;

    async fn check(self, tx: &mut dyn ReadTx, now: Timestamp) -> Result<PreparedTicket> {
        let p = &self.principal;
        let project = project(tx, p, &self.project_id).await?;
        let assigned = match &self.new.assignee_id {
            Some(id) => Some(assignee(tx, p, id).await?),
            None => None,
        };
        Ok(prepare_ticket(p, &project, self.new, assigned, now))
    }

    async fn write(
        plan: PreparedTicket,
        tx: &mut dyn Tx,
        now: Timestamp,
        after: &mut AfterCommit,
    ) -> StoreResult<Ticket> {
        PreparedTicket::write(plan, tx, now, after).await
    }
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

/// A ticket already prepared has nothing left to check: the project's existence is the
/// foreign key's to check (a ticket of a project that is not there is refused by the insert,
/// before anything is written). Its events are stamped when it is written, in commit order.
impl Checked for PreparedTicket {
    type Plan = Self;
    type Output = Ticket;

    fn lock_key(&self) -> Option<String> {
        Some(self.ticket.id.clone())
    }

    async fn check(self, _: &mut dyn ReadTx, _: Timestamp) -> Result<Self> {
        Ok(self)
    }

    async fn write(
        plan: Self,
        tx: &mut dyn Tx,
        now: Timestamp,
        after: &mut AfterCommit,
    ) -> StoreResult<Ticket> {
        let PreparedTicket { ticket, events } = plan;
        // Every event of the unit is about the new ticket: numbers 1 to their count.
        tx.insert_ticket(&ticket, events.len() as u64).await?;
        emit(tx, &ticket.workspace_id, events, now, after).await?;
        Ok(ticket)
    }
}

/// A row a checked unit decided to write, with the events it causes.
#[derive(Debug)]
pub struct Planned<T> {
    row: T,
    events: Vec<UnstampedEvent>,
}

/// Applies a patch: `ticket.updated` when anything changed, plus `ticket.status_changed` for
/// a new status and `ticket.assigned` for a new (non-empty) assignee.
#[derive(Debug)]
pub struct UpdateTicket {
    pub principal: Principal,
    pub id: String,
    pub patch: TicketPatch,
}

/// What an [`UpdateTicket`]'s checks decided.
#[derive(Debug)]
pub enum TicketUpdate {
    /// The patch changes nothing: the ticket as it is, and nothing to write.
    Unchanged(Ticket),
    Changed(Planned<Ticket>),
}

impl Checked for UpdateTicket {
    type Plan = TicketUpdate;
    type Output = Ticket;

    fn lock_key(&self) -> Option<String> {
        Some(self.id.clone())
    }

    async fn check(self, tx: &mut dyn ReadTx, now: Timestamp) -> Result<TicketUpdate> {
        let p = &self.principal;
        let current = locked_ticket(tx, p, &self.id).await?;
        let assigned = match &self.patch.assignee_id {
            Some(Some(id)) if Some(id) != current.assignee_id.as_ref() => {
                Some(assignee(tx, p, id).await?)
            }
            _ => None,
        };
        let (next, changes) = self.patch.apply(&current, now);
        if changes.is_empty() {
            return Ok(TicketUpdate::Unchanged(current));
        }
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
        )];
        if let Some(change) = changes.iter().find(|c| c.field == "status") {
            let data = EventData {
                changes: Some(changes_map(std::slice::from_ref(change))),
                ..base.clone()
            };
            let status_changed = EventType::TicketStatusChanged;
            events.push(event(p, &project, status_changed, &data));
        }
        if let (Some(user), Some(change)) =
            (assigned, changes.iter().find(|c| c.field == "assignee_id"))
        {
            let data = EventData {
                assignee: Some(user_ref(&user)),
                changes: Some(changes_map(std::slice::from_ref(change))),
                ..base
            };
            events.push(event(p, &project, EventType::TicketAssigned, &data));
        }
        Ok(TicketUpdate::Changed(Planned { row: next, events }))
    }

    async fn write(
        plan: TicketUpdate,
        tx: &mut dyn Tx,
        now: Timestamp,
        after: &mut AfterCommit,
    ) -> StoreResult<Ticket> {
        let Planned { row, events } = match plan {
            TicketUpdate::Unchanged(ticket) => return Ok(ticket),
            TicketUpdate::Changed(planned) => planned,
        };
        tx.update_ticket(&row).await?;
        emit(tx, &row.workspace_id, events, now, after).await?;
        Ok(row)
    }
}

/// Deletes a ticket: `ticket.deleted` carries the ticket as it was.
#[derive(Debug)]
pub struct DeleteTicket {
    pub principal: Principal,
    pub id: String,
}

impl Checked for DeleteTicket {
    type Plan = Planned<Ticket>;
    type Output = ();

    fn lock_key(&self) -> Option<String> {
        Some(self.id.clone())
    }

    async fn check(self, tx: &mut dyn ReadTx, _: Timestamp) -> Result<Planned<Ticket>> {
        let p = &self.principal;
        let current = locked_ticket(tx, p, &self.id).await?;
        let project = project(tx, p, &current.project_id).await?;
        let data = ticket_data(&current, &project, p);
        let event = event(p, &project, EventType::TicketDeleted, &data);
        Ok(Planned {
            row: current,
            events: vec![event],
        })
    }

    async fn write(
        plan: Planned<Ticket>,
        tx: &mut dyn Tx,
        now: Timestamp,
        after: &mut AfterCommit,
    ) -> StoreResult<()> {
        tx.delete_ticket(&plan.row.id, now).await?;
        emit(tx, &plan.row.workspace_id, plan.events, now, after).await
    }
}

/// Comments on a ticket: `comment.created`.
#[derive(Debug)]
pub struct CreateComment {
    pub principal: Principal,
    pub ticket_id: String,
    pub body: CommentBody,
}

impl Checked for CreateComment {
    type Plan = Planned<Comment>;
    type Output = Comment;

    fn lock_key(&self) -> Option<String> {
        Some(self.ticket_id.clone())
    }

    async fn check(self, tx: &mut dyn ReadTx, now: Timestamp) -> Result<Planned<Comment>> {
        let p = &self.principal;
        let ticket = ticket(tx, p, &self.ticket_id).await?;
        let project = project(tx, p, &ticket.project_id).await?;
        let comment = Comment {
            id: new_id("cmt", now),
            workspace_id: p.workspace_id.clone(),
            ticket_id: ticket.id.clone(),
            author_id: p.user_id.clone(),
            body: self.body.into_string(),
            created_at: now,
        };
        let data = EventData {
            comment: Some(CommentView::from(&comment)),
            ..ticket_data(&ticket, &project, p)
        };
        let event = event(p, &project, EventType::CommentCreated, &data);
        Ok(Planned {
            row: comment,
            events: vec![event],
        })
    }

    async fn write(
        plan: Planned<Comment>,
        tx: &mut dyn Tx,
        now: Timestamp,
        after: &mut AfterCommit,
    ) -> StoreResult<Comment> {
        tx.insert_comment(&plan.row).await?;
        emit(tx, &plan.row.workspace_id, plan.events, now, after).await?;
        Ok(plan.row)
    }
}
