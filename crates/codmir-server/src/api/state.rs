//! What every handler can reach, and the one after-commit path into the delivery engine.
//!
//! The engine is a private field here, in a module of its own, so that no handler can call
//! it except through [`AppState::mutate`] (and [`AppState::attempt_now`], the synchronous
//! attempt of a test ping).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{Principal, Project};
use serde::Serialize;

use super::error::ApiError;
use super::extract;
use crate::config::Config;
use crate::delivery::Engine;
use crate::ops::{self, AfterCommit};
use crate::store::{BoxFuture, Leased, Outcome, Store, Tx};
use crate::tasks::Tasks;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    /// Learns what each committed mutation changed for delivery; reached only by `mutate`.
    engine: Engine,
    pub(crate) keys: Arc<extract::KeyCache>,
    /// Per API key, when `--api-rate-limit` is set.
    pub(crate) rate_limit: Option<Arc<super::limit::RateLimit>>,
    /// Failed authentications per client address (a /64 for IPv6).
    pub(crate) failed_auth: Arc<super::limit::RateLimit<std::net::IpAddr>>,
    /// Projects as read: a project never changes once created and is never deleted, so a
    /// copy is never stale, on any node.
    projects: Arc<Mutex<HashMap<String, Arc<Project>>>>,
    /// Per workspace, its pending deliveries as last counted, and when
    /// ([`AppState::within_backlog`]).
    backlog: Arc<Mutex<HashMap<String, (u64, Instant)>>>,
    /// The server's tasks: what a request leaves to finish off its path (a key's use, an
    /// idempotency key's release) runs through them, so shutdown waits for it.
    pub(crate) tasks: Tasks,
}

/// More projects than this and the cache starts over (memory stays bounded).
const PROJECTS_CACHED: usize = 4096;
/// How long a workspace's count of pending deliveries (`pending` of `quota`) is taken as still
/// true: a second at least, a minute at most. Far below the quota a stale count cannot matter
/// (a second per 10,000 deliveries of headroom), and a large backlog is counted less often (a
/// second per 50,000 pending: the count costs what is pending), so that a reader spends a
/// small share of its time on it.
fn backlog_fresh(pending: u64, quota: u64) -> Duration {
    let headroom = quota.saturating_sub(pending) / 10_000;
    Duration::from_secs(headroom.max(pending / 50_000).clamp(1, 60))
}

impl AppState {
    pub fn new(store: Store, config: Arc<Config>, engine: Engine, tasks: Tasks) -> Self {
        Self {
            store,
            config: config.clone(),
            engine,
            keys: Arc::new(extract::KeyCache::default()),
            rate_limit: config
                .api_rate_limit
                .map(|n| Arc::new(super::limit::RateLimit::new(n))),
            failed_auth: Arc::new(super::limit::RateLimit::failed_auth()),
            projects: Arc::default(),
            backlog: Arc::default(),
            tasks,
        }
    }

    /// Refuses a tracker change (its events fan out) while `p`'s workspace has
    /// `--max-pending-per-workspace` deliveries pending. The count is taken by a read off the
    /// writer, at most once a second per workspace and less often far from the quota or with
    /// a large backlog ([`backlog_fresh`]), so a burst may pass the quota by what fans out
    /// meanwhile; replays and redeliveries count exactly, in their unit.
    pub async fn within_backlog(&self, p: &Principal) -> Result<(), ApiError> {
        let quota = self.config.max_pending_per_workspace;
        let now = Instant::now();
        let known = self
            .backlog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&p.workspace_id)
            .filter(|(n, at)| now.duration_since(*at) < backlog_fresh(*n, quota))
            .map(|(n, _)| *n);
        let pending = match known {
            Some(n) => n,
            None => {
                let ws = p.workspace_id.clone();
                let n = self
                    .store
                    .read(move |tx| {
                        Box::pin(
                            async move { tx.pending_count(&ws, quota.saturating_add(1)).await },
                        )
                    })
                    .await?;
                let mut backlog = self.backlog.lock().unwrap_or_else(PoisonError::into_inner);
                if backlog.len() >= PROJECTS_CACHED {
                    backlog.clear();
                }
                backlog.insert(p.workspace_id.clone(), (n, now));
                n
            }
        };
        if pending >= quota {
            return Err(ops::Error::QuotaExceeded {
                pending,
                quota,
                adding: 1,
            }
            .into());
        }
        Ok(())
    }

    /// `p`'s project `id`, from the cache or else the database; 404 when `p`'s workspace has
    /// no such project.
    pub async fn project(&self, p: &Principal, id: &str) -> Result<Arc<Project>, ApiError> {
        let cached = self
            .projects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        if let Some(project) = cached {
            return match project.workspace_id == p.workspace_id {
                true => Ok(project),
                false => Err(ops::Error::NotFound("project").into()),
            };
        }
        let (pc, id) = (p.clone(), id.to_owned());
        let project = Arc::new(
            self.store
                .read(move |tx| Box::pin(async move { ops::project(tx, &pc, &id).await }))
                .await?,
        );
        let mut cache = self.projects.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= PROJECTS_CACHED {
            cache.clear();
        }
        cache.insert(project.id.clone(), project.clone());
        Ok(project)
    }

    /// The one after-commit path: runs a write as API work, with its new deliveries leased
    /// to this node, and once the commit holds it tells the engine what it changed (fresh
    /// deliveries to send, webhooks whose queued work to drop).
    pub async fn mutate<F, T>(&self, work: F) -> Result<T, ApiError>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx, &'t mut AfterCommit) -> BoxFuture<'t, ops::Result<T>>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let _busy = self.engine.api_work();
        let mut after = AfterCommit::leased_to(self.engine.lease());
        let (value, after) = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let value = work(&mut *tx, &mut after).await?;
                    Ok::<_, ops::Error>((value, after))
                })
            })
            .await?;
        self.handed_over(after).await;
        Ok(value)
    }

    /// [`AppState::mutate`] for a unit in two phases, checks then writes
    /// ([`ops::Checked`], run by [`crate::store::Store::write_checked`]): the tracker's hot
    /// writes. The unit's time is taken when it runs, so events are stamped in commit order.
    pub async fn mutate_checked<U: ops::Checked>(&self, unit: U) -> Result<U::Output, ApiError> {
        let _busy = self.engine.api_work();
        let mut after = AfterCommit::leased_to(self.engine.lease());
        let lock_key = unit.lock_key();
        let (value, after) = self
            .store
            .write_checked(
                lock_key,
                move |tx| {
                    Box::pin(async move {
                        let now = Timestamp::now();
                        Ok::<_, ops::Error>((unit.check(tx, now).await?, now))
                    })
                },
                move |tx, (plan, now)| {
                    Box::pin(async move {
                        let value = U::write(plan, tx, now, &mut after).await?;
                        Ok((value, after))
                    })
                },
            )
            .await?;
        self.handed_over(after).await;
        Ok(value)
    }

    /// [`AppState::mutate`] for a handler that answers `status` with `R` made from the unit's
    /// value. Under an `Idempotency-Key` claim, the answer is made and kept inside the unit,
    /// so that it commits with the work (`api::idempotency`); otherwise it is made here.
    pub async fn mutate_answer<F, T, R>(&self, status: StatusCode, work: F) -> Result<R, ApiError>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx, &'t mut AfterCommit) -> BoxFuture<'t, ops::Result<T>>
            + Send
            + 'static,
        T: Send + 'static,
        R: From<T> + Serialize + Send + Sync + 'static,
    {
        let claim = super::idempotency::current();
        let answered = claim.as_ref().map(|c| c.answered.clone());
        let answer = self
            .mutate(move |tx, after| {
                Box::pin(async move {
                    let value = work(&mut *tx, after).await?;
                    Ok(answer(tx, claim, status, value).await?)
                })
            })
            .await?;
        Ok(answer.into_answer(answered))
    }

    /// [`AppState::mutate_checked`] for a handler that answers `status` with `R` made from the
    /// unit's output, kept with the work under an `Idempotency-Key` claim (as
    /// [`AppState::mutate_answer`]).
    pub async fn mutate_checked_answer<U, R>(
        &self,
        status: StatusCode,
        unit: U,
    ) -> Result<R, ApiError>
    where
        U: ops::Checked,
        R: From<U::Output> + Serialize + Send + Sync + 'static,
    {
        let claim = super::idempotency::current();
        let answered = claim.as_ref().map(|c| c.answered.clone());
        let answer = self
            .mutate_checked(Answering {
                unit,
                claim,
                status,
                _answer: std::marker::PhantomData::<fn() -> R>,
            })
            .await?;
        Ok(answer.into_answer(answered))
    }

    /// Tells the engine what a committed unit changed.
    async fn handed_over(&self, after: AfterCommit) {
        if !after.is_empty() {
            self.engine.after_commit(after).await;
        }
    }

    /// Whether the delivery engine's loop still runs.
    pub fn engine_running(&self) -> bool {
        self.engine.is_running()
    }

    /// This node's name (its leases' owner).
    pub fn node(&self) -> &str {
        self.engine.node()
    }

    /// Attempts a delivery that a committed unit of work leased to this node (a ping) now,
    /// and answers with its recorded outcome.
    pub async fn attempt_now(&self, work: Leased) -> Result<Outcome, ApiError> {
        Ok(self.engine.attempt_now(work).await?)
    }
}

/// A unit's value, or the answer made of it inside the unit and kept with its work.
pub(crate) enum Answer<T, R> {
    Made(T),
    Kept(R),
}

impl<T, R: From<T>> Answer<T, R> {
    fn into_answer(self, answered: Option<Arc<std::sync::atomic::AtomicBool>>) -> R {
        match self {
            Answer::Made(value) => R::from(value),
            Answer::Kept(r) => {
                if let Some(a) = answered {
                    a.store(true, std::sync::atomic::Ordering::Release);
                }
                r
            }
        }
    }
}

/// A unit's `value` as the handler answers it: under a `claim`, made into `R` and kept with
/// the work; otherwise as it is, made into `R` by the handler off the writer.
async fn answer<T, R: From<T> + Serialize + Sync>(
    tx: &mut dyn Tx,
    claim: Option<super::idempotency::Claim>,
    status: StatusCode,
    value: T,
) -> crate::store::StoreResult<Answer<T, R>> {
    Ok(match claim {
        Some(c) => {
            let r = R::from(value);
            keep(tx, &c, status, &r).await?;
            Answer::Kept(r)
        }
        None => Answer::Made(value),
    })
}

/// Keeps `answer` as the answer of `claim`, in the unit's transaction. A claim taken over by a
/// retry (this request outlived the bound) refuses it, and with it the unit: the retry's run is
/// the one that counts.
async fn keep<R: Serialize + Sync>(
    tx: &mut dyn Tx,
    claim: &super::idempotency::Claim,
    status: StatusCode,
    answer: &R,
) -> crate::store::StoreResult<()> {
    let body = serde_json::to_string(answer)
        .map_err(|e| crate::store::StoreError::failed(format!("an answer as JSON: {e}")))?;
    let kept = tx
        .idempotency_finish(&claim.ws, &claim.key, &claim.token, status.as_u16(), &body)
        .await?;
    if kept {
        Ok(())
    } else {
        Err(crate::store::StoreError::Conflict(Arc::new(
            std::io::Error::other(
                "the request's Idempotency-Key was taken over by a retry: nothing of it is kept",
            ),
        )))
    }
}

/// A checked unit whose output, under an `Idempotency-Key` claim, is made into its answer and
/// kept in its write phase.
struct Answering<U, R> {
    unit: U,
    claim: Option<super::idempotency::Claim>,
    status: StatusCode,
    _answer: std::marker::PhantomData<fn() -> R>,
}

impl<U, R> ops::Checked for Answering<U, R>
where
    U: ops::Checked,
    R: From<U::Output> + Serialize + Send + Sync + 'static,
{
    type Plan = (U::Plan, Option<super::idempotency::Claim>, StatusCode);
    type Output = Answer<U::Output, R>;

    async fn check(
        self,
        tx: &mut dyn crate::store::ReadTx,
        now: Timestamp,
    ) -> ops::Result<Self::Plan> {
        Ok((self.unit.check(tx, now).await?, self.claim, self.status))
    }

    async fn write(
        (plan, claim, status): Self::Plan,
        tx: &mut dyn Tx,
        now: Timestamp,
        after: &mut AfterCommit,
    ) -> crate::store::StoreResult<Self::Output> {
        let value = U::write(plan, tx, now, after).await?;
        answer(tx, claim, status, value).await
    }

    fn lock_key(&self) -> Option<String> {
        self.unit.lock_key()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::backlog_fresh;

    #[test]
    fn a_pending_count_is_taken_again_sooner_near_the_quota() {
        // (pending, quota, seconds the count is taken as true)
        let table = [
            (0, 1_000_000, 60),
            (900_000, 1_000_000, 18),
            (995_000, 1_000_000, 19),
            (1_000_000, 1_000_000, 20),
            (0, 5, 1),
            (5, 5, 1),
            (40_000, 50_000, 1),
        ];
        for (pending, quota, secs) in table {
            assert_eq!(
                backlog_fresh(pending, quota),
                Duration::from_secs(secs),
                "{pending} of {quota}"
            );
        }
    }
}
