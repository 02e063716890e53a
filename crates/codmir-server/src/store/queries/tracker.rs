//! The tracker's writes (`TrackerTx`), once for both backends.

use async_trait::async_trait;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Comment, Member, Project, Ticket, User, Workspace};

use crate::store::conn::{Conn, HeldRow, args};
use crate::store::rows::{self};
use crate::store::sql;
use crate::store::{ApiKeyRecord, Idempotent, StoreResult, TrackerTx};

#[async_trait]
impl<C: Conn> TrackerTx for C {
    async fn insert_workspace(&mut self, w: &Workspace) -> StoreResult<()> {
        self.exec(&sql::INSERT_WORKSPACE, args![w.id, w.name, w.created_at])
            .await?;
        Ok(())
    }

    async fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        self.exec(
            &sql::INSERT_USER,
            args![u.id, u.workspace_id, u.name, u.email, u.created_at],
        )
        .await?;
        Ok(())
    }

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> StoreResult<()> {
        let hash = &k.secret_hash[..];
        self.exec(
            &sql::INSERT_API_KEY,
            args![k.id, k.workspace_id, k.user_id, hash, k.created_at],
        )
        .await?;
        Ok(())
    }

    async fn revoke_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<bool> {
        Ok(self.exec(&sql::REVOKE_API_KEY, args![id, at]).await? > 0)
    }

    async fn touch_api_key(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(&sql::TOUCH_API_KEY, args![id, at]).await?;
        Ok(())
    }

    async fn idempotency_claim(
        &mut self,
        ws: &str,
        key: &str,
        fingerprint: &[u8; 32],
        token: &str,
        now: Timestamp,
        expired_before: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<Option<Idempotent>> {
        self.exec(&sql::IDEMPOTENCY_EXPIRE, args![ws, expired_before])
            .await?;
        let found = self
            .one(&sql::IDEMPOTENCY_GET, args![ws, key], rows::idempotent)
            .await?;
        if let Some(f) = &found
            && f.status.is_none()
            && f.claimed_at < stale_before
            && f.fingerprint == fingerprint[..]
        {
            // Its request is over (its node died, its database crashed): nothing it did under
            // the key committed, since its answer commits with its work. This request runs
            // afresh, and the old one can no longer commit under the key.
            let taken = self
                .exec(
                    &sql::IDEMPOTENCY_TAKE_OVER,
                    args![ws, key, token, now, stale_before],
                )
                .await?;
            if taken > 0 {
                return Ok(None);
            }
        }
        // The answer kept may show a secret (a webhook's create): sealed at rest.
        let found = found
            .map(|mut f| {
                f.body = f
                    .body
                    .map(|b| rows::open_text(b, self.keys()))
                    .transpose()?;
                Ok::<_, crate::store::StoreError>(f)
            })
            .transpose()?;
        if found.is_none() {
            // A concurrent claim of the same key (PostgreSQL) fails here on the primary key:
            // a conflict.
            let fingerprint = &fingerprint[..];
            self.exec(
                &sql::IDEMPOTENCY_INSERT,
                args![ws, key, fingerprint, now, token],
            )
            .await?;
        }
        Ok(found)
    }

    async fn idempotency_finish(
        &mut self,
        ws: &str,
        key: &str,
        token: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<bool> {
        let body = rows::seal_text(body, self.keys());
        let n = self
            .exec(
                &sql::IDEMPOTENCY_FINISH,
                args![ws, key, token, status, body],
            )
            .await?;
        Ok(n > 0)
    }

    async fn idempotency_release(&mut self, ws: &str, key: &str, token: &str) -> StoreResult<()> {
        self.exec(&sql::IDEMPOTENCY_RELEASE, args![ws, key, token])
            .await?;
        Ok(())
    }

    async fn insert_project(&mut self, p: &Project, last_sequence: u64) -> StoreResult<()> {
        let last_sequence = last_sequence as i64;
        self.exec(
            &sql::INSERT_PROJECT,
            args![
                p.id,
                p.workspace_id,
                p.name,
                p.created_by,
                p.created_at,
                last_sequence
            ],
        )
        .await?;
        Ok(())
    }

    async fn insert_member(&mut self, m: &Member) -> StoreResult<()> {
        self.exec(
            &sql::INSERT_MEMBER,
            args![m.project_id, m.user.id, m.role.as_str(), m.added_at],
        )
        .await?;
        Ok(())
    }

    async fn insert_ticket(&mut self, t: &Ticket, last_sequence: u64) -> StoreResult<()> {
        if self.hold(HeldRow::Ticket(t, last_sequence)) {
            return Ok(());
        }
        let last_sequence = last_sequence as i64;
        self.exec(
            &sql::INSERT_TICKET,
            args![
                t.id,
                t.workspace_id,
                t.project_id,
                t.title,
                t.description,
                t.status.as_str(),
                t.priority.as_str(),
                t.assignee_id,
                t.created_by,
                t.created_at,
                t.updated_at,
                last_sequence,
            ],
        )
        .await?;
        Ok(())
    }

    async fn update_ticket(&mut self, t: &Ticket) -> StoreResult<()> {
        self.exec(
            &sql::UPDATE_TICKET,
            args![
                t.id,
                t.title,
                t.description,
                t.status.as_str(),
                t.priority.as_str(),
                t.assignee_id,
                t.updated_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_ticket(&mut self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.exec(&sql::DELETE_TICKET, args![id, at]).await?;
        Ok(())
    }

    async fn insert_comment(&mut self, c: &Comment) -> StoreResult<()> {
        self.exec(
            &sql::INSERT_COMMENT,
            args![
                c.id,
                c.workspace_id,
                c.ticket_id,
                c.author_id,
                c.body,
                c.created_at
            ],
        )
        .await?;
        Ok(())
    }
}
