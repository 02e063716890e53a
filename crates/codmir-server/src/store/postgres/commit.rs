//! A commit whose answer was lost, found out before the caller is answered.
//!
//! When the connection drops (or nothing answers) after `COMMIT` was sent, the transaction may
//! or may not have committed. PostgreSQL can tell afterwards from another connection: a
//! transaction's id (`pg_current_xact_id_if_assigned`, asked just before `COMMIT`, one round
//! trip per write transaction) has a status (`pg_xact_status`: committed, aborted or in
//! progress). So a unit of work whose commit answer was lost is answered as what it became
//! when the database answers before the request's deadline — success, or unreachable with
//! nothing stored — and `outcome_unknown` only when it does not.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::super::sql::postgres_only as q;
use super::super::{StoreError, StoreResult};
use super::no_answer;

/// How often a transaction's status is asked for while it is still in progress.
const ASK_EVERY: Duration = Duration::from_millis(100);
/// Failures to ask at all before giving up.
const MAX_FAILURES: u32 = 3;

/// What is known of a write transaction's commit: its id once it wrote, and whether `COMMIT`
/// was sent.
#[derive(Default)]
pub(super) struct Commit {
    xid: OnceLock<u64>,
    sent: AtomicBool,
}

impl Commit {
    /// Commits the transaction open on `conn`, its id noted first.
    pub(super) async fn send(&self, conn: &Client) -> StoreResult<()> {
        let asked = conn.simple_query(q::XACT_ID).await?;
        let xid = asked.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|x| x.parse().ok()),
            _ => None,
        });
        if let Some(xid) = xid {
            let _ = self.xid.set(xid);
        }
        self.sent.store(true, Ordering::Relaxed);
        conn.batch_execute("COMMIT")
            .await
            .map_err(|e| StoreError::from(e).at_commit())
    }

    /// The error of a transaction cut off at its deadline: the outcome is unknown if `COMMIT`
    /// was sent.
    pub(super) fn cut_off(&self) -> StoreError {
        no_answer(self.sent.load(Ordering::Relaxed))
    }

    /// `result`, or what the commit became when its outcome was unknown and the database says
    /// so by `deadline`.
    pub(super) async fn settle(
        &self,
        pool: &Pool,
        deadline: Instant,
        result: StoreResult<()>,
    ) -> StoreResult<()> {
        let unknown = match result {
            Err(e @ StoreError::OutcomeUnknown { .. }) => e,
            other => return other,
        };
        // A transaction that wrote nothing has no id: whatever became of it, nothing was lost.
        let Some(&xid) = self.xid.get() else {
            return Ok(());
        };
        let xid = xid.to_string();
        // Asked again while the transaction is still in progress; given up after a few
        // failures to ask at all (the database refusing connections, down): then nobody can
        // tell before it is back, and the answer must not wait for it.
        let mut failures = 0;
        while Instant::now() + ASK_EVERY < deadline && failures < MAX_FAILURES {
            let status = tokio::time::timeout_at(deadline, async {
                let conn = pool.get().await.ok()?;
                let row = conn.query_one(q::XACT_STATUS, &[&xid]).await.ok()?;
                Some(row.get::<_, Option<String>>(0))
            })
            .await;
            match status {
                Ok(Some(Some(s))) if s == "committed" => return Ok(()),
                Ok(Some(Some(s))) if s == "aborted" => {
                    return Err(StoreError::Unreachable {
                        context: "the connection to PostgreSQL was lost during COMMIT, which \
                                  did not take"
                            .into(),
                        source: None,
                    });
                }
                // In progress: the server has not finished it yet.
                Ok(Some(Some(_))) => tokio::time::sleep(ASK_EVERY).await,
                // Too old for its status to be kept: it cannot be told.
                Ok(Some(None)) => break,
                // No connection, or no answer (a stale pooled connection fails once).
                Ok(None) => failures += 1,
                Err(_) => break,
            }
        }
        Err(unknown)
    }
}
