//! Routes of the tracker: projects, members, tickets and comments, with their wire types.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use codmir_core::tracker::{
    Comment, CommentBody, Description, Email, Member, NewMember, NewTicket, Priority, Project,
    ProjectName, Role, Ticket, TicketPatch, TicketStatus, TicketTitle, UserName,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Json, ListParams, Query, now, path_id};
use super::{AppState, ListResponse};
use crate::ops;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateProject {
    /// 1–200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProjectResponse {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_at: String,
}

impl From<Project> for ProjectResponse {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_by: p.created_by,
            created_at: p.created_at.to_rfc3339_millis(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddMember {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// `admin`, `member` (default) or `viewer`.
    #[schema(value_type = Option<super::schema::RoleName>, inline)]
    pub role: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MemberResponse {
    /// The member's user id.
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub email: Option<String>,
    pub role: &'static str,
    pub added_at: String,
}

impl From<Member> for MemberResponse {
    fn from(m: Member) -> Self {
        Self {
            id: m.user.id,
            project_id: m.project_id,
            name: m.user.name,
            email: m.user.email,
            role: m.role.as_str(),
            added_at: m.added_at.to_rfc3339_millis(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTicket {
    /// 1–500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub title: String,
    #[schema(max_length = 20000)]
    pub description: Option<String>,
    /// `open` (default), `in_progress`, `resolved` or `closed`.
    #[schema(value_type = Option<super::schema::TicketStatusName>, inline)]
    pub status: Option<String>,
    /// `low`, `medium` (default), `high` or `urgent`.
    #[schema(value_type = Option<super::schema::PriorityName>, inline)]
    pub priority: Option<String>,
    /// A user of the workspace.
    pub assignee_id: Option<String>,
}

/// Every field is optional; `description` and `assignee_id` may be `null` to clear them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTicket {
    #[schema(min_length = 1, max_length = 500)]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "super::extract::present")]
    #[schema(value_type = Option<String>, max_length = 20000)]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<super::schema::TicketStatusName>, inline)]
    pub status: Option<String>,
    #[schema(value_type = Option<super::schema::PriorityName>, inline)]
    pub priority: Option<String>,
    #[serde(default, deserialize_with = "super::extract::present")]
    #[schema(value_type = Option<String>)]
    pub assignee_id: Option<Option<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TicketResponse {
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

impl From<Ticket> for TicketResponse {
    fn from(t: Ticket) -> Self {
        Self {
            id: t.id,
            project_id: t.project_id,
            title: t.title,
            description: t.description,
            status: t.status.as_str(),
            priority: t.priority.as_str(),
            assignee_id: t.assignee_id,
            created_by: t.created_by,
            created_at: t.created_at.to_rfc3339_millis(),
            updated_at: t.updated_at.to_rfc3339_millis(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateComment {
    /// 1–20,000 characters.
    #[schema(min_length = 1, max_length = 20000)]
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CommentResponse {
    pub id: String,
    pub ticket_id: String,
    pub author_id: String,
    pub body: String,
    pub created_at: String,
}

impl From<Comment> for CommentResponse {
    fn from(c: Comment) -> Self {
        Self {
            id: c.id,
            ticket_id: c.ticket_id,
            author_id: c.author_id,
            body: c.body,
            created_at: c.created_at.to_rfc3339_millis(),
        }
    }
}

type Created<T> = Result<(StatusCode, axum::Json<T>), ApiError>;
type Found<T> = Result<axum::Json<T>, ApiError>;

fn parse_assignee(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(id) if !codmir_core::id::is_valid("usr", &id) => Err(ApiError::invalid(
            "assignee_id",
            format!("`{id}` is not a user id (usr_…)"),
        )),
        other => Ok(other),
    }
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = ProjectResponse), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_project(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<CreateProject>,
) -> Created<ProjectResponse> {
    s.within_backlog(&p).await?;
    let name = ProjectName::parse(&body.name)?;
    let project: ProjectResponse = s
        .mutate_answer(StatusCode::CREATED, move |tx, after| {
            Box::pin(async move { ops::create_project(tx, &p, name, now(), after).await })
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(project)))
}

#[utoipa::path(get, path = "/v1/projects", tag = "projects", params(ListParams),
    responses((status = 200, body = ListResponse<ProjectResponse>)), security(("api_key" = [])))]
pub(super) async fn list_projects(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListParams>,
) -> Found<ListResponse<ProjectResponse>> {
    let page = q.page("proj")?;
    let page = s
        .store
        .read(move |tx| Box::pin(async move { tx.list_projects(&p.workspace_id, &page).await }))
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |p| p.id.clone(),
        ProjectResponse::from,
    )))
}

#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects",
    responses((status = 200, body = ProjectResponse), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn get_project(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Found<ProjectResponse> {
    let id = path_id("proj", &id, "project")?;
    let project = s
        .store
        .read(move |tx| Box::pin(async move { ops::project(tx, &p, &id).await }))
        .await?;
    Ok(axum::Json(project.into()))
}

#[utoipa::path(post, path = "/v1/projects/{id}/members", tag = "projects", request_body = AddMember,
    responses((status = 201, body = MemberResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn add_member(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<AddMember>,
) -> Created<MemberResponse> {
    s.within_backlog(&p).await?;
    let id = path_id("proj", &id, "project")?;
    let name = UserName::parse(&body.name)?;
    let email = Email::parse(&body.email)?;
    let role = body
        .role
        .as_deref()
        .map(Role::parse)
        .transpose()?
        .unwrap_or(Role::Member);
    let member: MemberResponse = s
        .mutate_answer(StatusCode::CREATED, move |tx, after| {
            Box::pin(async move {
                ops::add_member(tx, &p, &id, NewMember { name, email, role }, now(), after).await
            })
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(member)))
}

#[utoipa::path(get, path = "/v1/projects/{id}/members", tag = "projects", params(ListParams),
    responses((status = 200, body = ListResponse<MemberResponse>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_members(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Found<ListResponse<MemberResponse>> {
    let id = path_id("proj", &id, "project")?;
    let page = q.page("usr")?;
    let page = s
        .store
        .read(move |tx| {
            Box::pin(async move {
                let project = ops::project(tx, &p, &id).await?;
                Ok::<_, ops::Error>(tx.list_members(&project.id, &page).await?)
            })
        })
        .await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |m| m.user.id.clone(),
        MemberResponse::from,
    )))
}

#[utoipa::path(post, path = "/v1/projects/{id}/tickets", tag = "tickets", request_body = CreateTicket,
    responses((status = 201, body = TicketResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_ticket(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<CreateTicket>,
) -> Created<TicketResponse> {
    s.within_backlog(&p).await?;
    let id = path_id("proj", &id, "project")?;
    let new = NewTicket {
        title: TicketTitle::parse(&body.title)?,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?,
        status: body
            .status
            .as_deref()
            .map(TicketStatus::parse)
            .transpose()?
            .unwrap_or(TicketStatus::Open),
        priority: body
            .priority
            .as_deref()
            .map(Priority::parse)
            .transpose()?
            .unwrap_or(Priority::Medium),
        assignee_id: parse_assignee(body.assignee_id)?,
    };
    let ticket: TicketResponse = if new.assignee_id.is_none() {
        // The project comes from the cache (projects never change), so the writer does not
        // read it, and the ticket and its event JSON are made here, off the writer thread.
        // The event's id and time are still taken inside the unit, in commit order, which
        // is what lets `order=asc` read the event log forward without missing one that
        // committed late.
        let project = s.project(&p, &id).await?;
        s.mutate_checked_answer(
            StatusCode::CREATED,
            ops::prepare_ticket(&p, &project, new, None, now()),
        )
        .await?
    } else {
        s.mutate_checked_answer(
            StatusCode::CREATED,
            ops::CreateTicket {
                principal: p,
                project_id: id,
                new,
            },
        )
        .await?
    };
    Ok((StatusCode::CREATED, axum::Json(ticket)))
}

#[utoipa::path(get, path = "/v1/projects/{id}/tickets", tag = "tickets", params(ListParams),
    responses((status = 200, body = ListResponse<TicketResponse>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_tickets(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Found<ListResponse<TicketResponse>> {
    let id = path_id("proj", &id, "project")?;
    let page = q.page("tkt")?;
    let page = s
        .store
        .read(move |tx| {
            Box::pin(async move {
                let project = ops::project(tx, &p, &id).await?;
                Ok::<_, ops::Error>(tx.list_tickets(&project.id, &page).await?)
            })
        })
        .await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |t| t.id.clone(),
        TicketResponse::from,
    )))
}

#[utoipa::path(get, path = "/v1/tickets/{id}", tag = "tickets",
    responses((status = 200, body = TicketResponse), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn get_ticket(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Found<TicketResponse> {
    let id = path_id("tkt", &id, "ticket")?;
    let ticket = s
        .store
        .read(move |tx| Box::pin(async move { ops::ticket(tx, &p, &id).await }))
        .await?;
    Ok(axum::Json(ticket.into()))
}

#[utoipa::path(patch, path = "/v1/tickets/{id}", tag = "tickets", request_body = UpdateTicket,
    responses((status = 200, body = TicketResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn update_ticket(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<UpdateTicket>,
) -> Found<TicketResponse> {
    s.within_backlog(&p).await?;
    let id = path_id("tkt", &id, "ticket")?;
    let patch = TicketPatch {
        title: body.title.as_deref().map(TicketTitle::parse).transpose()?,
        description: body
            .description
            .map(|d| d.as_deref().map(Description::parse).transpose())
            .transpose()?,
        status: body
            .status
            .as_deref()
            .map(TicketStatus::parse)
            .transpose()?,
        priority: body.priority.as_deref().map(Priority::parse).transpose()?,
        assignee_id: body.assignee_id.map(parse_assignee).transpose()?,
    };
    let ticket = s
        .mutate_checked(ops::UpdateTicket {
            principal: p,
            id,
            patch,
        })
        .await?;
    Ok(axum::Json(ticket.into()))
}

#[utoipa::path(delete, path = "/v1/tickets/{id}", tag = "tickets",
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn delete_ticket(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.within_backlog(&p).await?;
    let id = path_id("tkt", &id, "ticket")?;
    s.mutate_checked(ops::DeleteTicket { principal: p, id })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/tickets/{id}/comments", tag = "tickets", request_body = CreateComment,
    responses((status = 201, body = CommentResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_comment(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(body): Json<CreateComment>,
) -> Created<CommentResponse> {
    s.within_backlog(&p).await?;
    let id = path_id("tkt", &id, "ticket")?;
    let body = CommentBody::parse(&body.body)?;
    let comment: CommentResponse = s
        .mutate_checked_answer(
            StatusCode::CREATED,
            ops::CreateComment {
                principal: p,
                ticket_id: id,
                body,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(comment)))
}

#[utoipa::path(get, path = "/v1/tickets/{id}/comments", tag = "tracker", params(ListParams),
    responses((status = 200, body = ListResponse<CommentResponse>), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn list_comments(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Found<ListResponse<CommentResponse>> {
    let id = path_id("tkt", &id, "ticket")?;
    let page = q.page("cmt")?;
    let page = s
        .store
        .read(move |tx| {
            Box::pin(async move {
                let t = ops::ticket(tx, &p, &id).await?;
                Ok::<_, ops::Error>(tx.list_comments(&t.id, &page).await?)
            })
        })
        .await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |c| c.id.clone(),
        CommentResponse::from,
    )))
}

/// `{"id", "name"}` of the caller's user or workspace.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NamedRef {
    pub id: String,
    pub name: String,
}

/// Who the API key acts as.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Me {
    pub user: NamedRef,
    pub workspace: NamedRef,
}

/// The key's user and workspace: what a script checks before it acts.
#[utoipa::path(get, path = "/v1/me", tag = "tracker",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn me(State(s): State<AppState>, Auth(p): Auth) -> Found<Me> {
    let ws = p.workspace_id.clone();
    let workspace = s
        .store
        .read(move |tx| {
            Box::pin(async move {
                tx.get_workspace(&ws)
                    .await?
                    .ok_or(ops::Error::NotFound("workspace"))
            })
        })
        .await?;
    Ok(axum::Json(Me {
        user: NamedRef {
            id: p.user_id,
            name: p.user_name,
        },
        workspace: NamedRef {
            id: workspace.id,
            name: workspace.name,
        },
    }))
}
