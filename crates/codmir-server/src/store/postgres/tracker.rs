//! The tracker's queries on PostgreSQL: workspaces, users, API keys, projects, members,
//! tickets and comments.

use async_trait::async_trait;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Comment, Member, Principal, Project, Ticket, User, Workspace};

use super::PgTx;
use crate::store::rows::{
    self, API_KEY_COLS, COMMENT_COLS, KEY_INFO_COLS, KEY_INFO_FROM, MEMBER_COLS, PROJECT_COLS,
    TICKET_COLS, USER_COLS, WORKSPACE_COLS,
};
use crate::store::{ApiKeyRecord, Idempotent, KeyInfo, Page, PageRequest, StoreResult, TrackerTx};

#[async_trait]
impl TrackerTx for PgTx<'_> {
    async fn workspace_count(&mut self) -> StoreResult<i64> {
        let rows = self.rows("SELECT count(*) FROM workspaces", &[]).await?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
    }

    async fn get_workspace(&mut self, id: &str) -> StoreResult<Option<Workspace>> {
        self.one(
            &format!("SELECT {WORKSPACE_COLS} FROM workspaces WHERE id = $1"),
            &[&id],
            rows::workspace,
        )
        .await
    }

    async fn find_workspace_by_name(&mut self, name: &str) -> StoreResult<Option<Workspace>> {
        self.one(
            &format!("SELECT {WORKSPACE_COLS} FROM workspaces WHERE name = $1"),
            &[&name],
            rows::workspace,
        )
        .await
    }

    async fn insert_workspace(&mut self, w: &Workspace) -> StoreResult<()> {
        self.exec(
            "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)",
            &[&w.id, &w.name, &w.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn find_user_by_name(&mut self, ws: &str, name: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = $1 AND name = $2 ORDER BY id LIMIT 1"),
            &[&ws, &name],
            rows::user,
        )
        .await
    }

    async fn find_user_by_email(&mut self, ws: &str, email: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = $1 AND email = $2"),
            &[&ws, &email],
            rows::user,
        )
        .await
    }

    async fn get_user(&mut self, ws: &str, id: &str) -> StoreResult<Option<User>> {
        self.one(
            &format!("SELECT {USER_COLS} FROM users WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            rows::user,
        )
        .await
    }

    async fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        self.exec(
            "INSERT INTO users (id, workspace_id, name, email, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&u.id, &u.workspace_id, &u.name, &u.email, &u.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> StoreResult<()> {
        self.exec(
            "INSERT INTO api_keys (id, workspace_id, user_id, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&k.id, &k.workspace_id, &k.user_id, &&k.secret_hash[..], &k.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn get_api_key(&mut self, id: &str) -> StoreResult<Option<(ApiKeyRecord, Principal)>> {
        self.one(
            &format!(
                "SELECT {API_KEY_COLS} FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1 AND k.revoked_at IS NULL"
            ),
            &[&id],
            rows::api_key,
        )
        .await
    }

    async fn list_api_keys(&mut self) -> StoreResult<Vec<KeyInfo>> {
        self.all(
            &format!("SELECT {KEY_INFO_COLS} FROM {KEY_INFO_FROM} ORDER BY k.created_at, k.id"),
            &[],
            rows::key_info,
        )
        .await
    }

    async fn revoke_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<bool> {
        let n = self
            .exec(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &at.as_millis()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn touch_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1",
            &[&id, &at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn idempotency_claim(
        &mut self,
        ws: &str,
        key: &str,
        fingerprint: &[u8; 32],
        now: Timestamp,
        expired_before: Timestamp,
    ) -> StoreResult<Option<Idempotent>> {
        self.exec(
            "DELETE FROM idempotency_keys WHERE workspace_id = $1 AND created_at < $2",
            &[&ws, &expired_before.as_millis()],
        )
        .await?;
        let found = self
            .one(
                "SELECT fingerprint, status, body FROM idempotency_keys WHERE workspace_id = $1 AND key = $2",
                &[&ws, &key],
                rows::idempotent,
            )
            .await?;
        if found.is_none() {
            // A concurrent claim of the same key fails here on the primary key: a conflict.
            self.exec(
                "INSERT INTO idempotency_keys (workspace_id, key, fingerprint, created_at) VALUES ($1, $2, $3, $4)",
                &[&ws, &key, &&fingerprint[..], &now.as_millis()],
            )
            .await?;
        }
        Ok(found)
    }

    async fn idempotency_finish(
        &mut self,
        ws: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()> {
        self.exec(
            "UPDATE idempotency_keys SET status = $3, body = $4 WHERE workspace_id = $1 AND key = $2",
            &[&ws, &key, &i64::from(status), &body],
        )
        .await?;
        Ok(())
    }

    async fn idempotency_release(&mut self, ws: &str, key: &str) -> StoreResult<()> {
        self.exec(
            "DELETE FROM idempotency_keys WHERE workspace_id = $1 AND key = $2",
            &[&ws, &key],
        )
        .await?;
        Ok(())
    }

    async fn insert_project(&mut self, p: &Project) -> StoreResult<()> {
        self.exec(
            "INSERT INTO projects (id, workspace_id, name, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&p.id, &p.workspace_id, &p.name, &p.created_by, &p.created_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn get_project(&mut self, ws: &str, id: &str) -> StoreResult<Option<Project>> {
        self.one(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE workspace_id = $1 AND id = $2"),
            &[&ws, &id],
            rows::project,
        )
        .await
    }

    async fn list_projects(&mut self, ws: &str, page: &PageRequest) -> StoreResult<Page<Project>> {
        self.page(
            &format!(
                "SELECT {PROJECT_COLS} FROM projects WHERE workspace_id = $1 \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            &[&ws],
            page,
            rows::project,
        )
        .await
    }

    async fn get_member(&mut self, project_id: &str, user_id: &str) -> StoreResult<Option<Member>> {
        self.one(
            &format!(
                "SELECT {MEMBER_COLS} FROM project_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.project_id = $1 AND m.user_id = $2"
            ),
            &[&project_id, &user_id],
            rows::member,
        )
        .await
    }

    async fn insert_member(&mut self, m: &Member) -> StoreResult<()> {
        self.exec(
            "INSERT INTO project_members (project_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)",
            &[&m.project_id, &m.user.id, &m.role.as_str(), &m.added_at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn list_members(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Member>> {
        self.page(
            &format!(
                "SELECT {MEMBER_COLS} FROM project_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.project_id = $1 AND ($2::text IS NULL OR u.id < $2) ORDER BY u.id DESC LIMIT $3"
            ),
            &[&project_id],
            page,
            rows::member,
        )
        .await
    }

    async fn insert_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        if self.hold_ticket(t) {
            return Ok(());
        }
        self.exec(
            &format!("INSERT INTO tickets ({TICKET_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
            &[
                &t.id,
                &t.workspace_id,
                &t.project_id,
                &t.title,
                &t.description,
                &t.status.as_str(),
                &t.priority.as_str(),
                &t.assignee_id,
                &t.created_by,
                &t.created_at.as_millis(),
                &t.updated_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        self.one(
            &format!("SELECT {TICKET_COLS} FROM tickets WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"),
            &[&ws, &id],
            rows::ticket,
        )
        .await
    }

    async fn lock_ticket(&mut self, ws: &str, id: &str) -> StoreResult<Option<Ticket>> {
        self.one(
            &format!(
                "SELECT {TICKET_COLS} FROM tickets WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE"
            ),
            &[&ws, &id],
            rows::ticket,
        )
        .await
    }

    async fn update_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        self.exec(
            "UPDATE tickets SET title = $2, description = $3, status = $4, priority = $5, \
             assignee_id = $6, updated_at = $7 WHERE id = $1",
            &[
                &t.id,
                &t.title,
                &t.description,
                &t.status.as_str(),
                &t.priority.as_str(),
                &t.assignee_id,
                &t.updated_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_ticket(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(
            "UPDATE tickets SET deleted_at = $2 WHERE id = $1",
            &[&id, &at.as_millis()],
        )
        .await?;
        Ok(())
    }

    async fn list_tickets(
        &mut self,
        project_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Ticket>> {
        self.page(
            &format!(
                "SELECT {TICKET_COLS} FROM tickets WHERE project_id = $1 AND deleted_at IS NULL \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            &[&project_id],
            page,
            rows::ticket,
        )
        .await
    }

    async fn insert_comment(&mut self, c: &Comment) -> StoreResult<()> {
        self.exec(
            "INSERT INTO comments (id, workspace_id, ticket_id, author_id, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &c.id,
                &c.workspace_id,
                &c.ticket_id,
                &c.author_id,
                &c.body,
                &c.created_at.as_millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn list_comments(
        &mut self,
        ticket_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<Comment>> {
        self.page(
            &format!(
                "SELECT {COMMENT_COLS} FROM comments WHERE ticket_id = $1 \
                 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            &[&ticket_id],
            page,
            rows::comment,
        )
        .await
    }
}
