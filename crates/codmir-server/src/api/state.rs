//! What every handler can reach, and the one after-commit path into the delivery engine.
//!
//! The engine is a private field here, in a module of its own, so that no handler can call
//! it except through [`AppState::mutate`] (and [`AppState::attempt_now`], the synchronous
//! attempt of a test ping).

use std::sync::Arc;

use super::error::ApiError;
use super::extract;
use crate::config::Config;
use crate::delivery::Engine;
use crate::ops::{self, AfterCommit};
use crate::store::{BoxFuture, Leased, Outcome, Store, Tx};

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
}

impl AppState {
    pub fn new(store: Store, config: Arc<Config>, engine: Engine) -> Self {
        Self {
            store,
            config: config.clone(),
            engine,
            keys: Arc::new(extract::KeyCache::default()),
            rate_limit: config
                .api_rate_limit
                .map(|n| Arc::new(super::limit::RateLimit::new(n))),
        }
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
        self.mutate_as(true, work).await
    }

    /// [`AppState::mutate`] for a unit whose refusals all come before its first write
    /// ([`crate::store::Store::write_checked`]): the tracker's hot writes.
    pub async fn mutate_checked<F, T>(&self, work: F) -> Result<T, ApiError>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx, &'t mut AfterCommit) -> BoxFuture<'t, ops::Result<T>>
            + Send
            + 'static,
        T: Send + 'static,
    {
        self.mutate_as(false, work).await
    }

    async fn mutate_as<F, T>(&self, guarded: bool, work: F) -> Result<T, ApiError>
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
            .write_as(guarded, move |tx| {
                Box::pin(async move {
                    let value = work(&mut *tx, &mut after).await?;
                    Ok::<_, ops::Error>((value, after))
                })
            })
            .await?;
        if !after.is_empty() {
            self.engine.after_commit(after).await;
        }
        Ok(value)
    }

    /// Whether the delivery engine's loop still runs.
    pub fn engine_running(&self) -> bool {
        self.engine.is_running()
    }

    /// Attempts a delivery that a committed unit of work leased to this node (a ping) now,
    /// and answers with its recorded outcome.
    pub async fn attempt_now(&self, work: Leased) -> Result<Outcome, ApiError> {
        Ok(self.engine.attempt_now(work).await?)
    }
}
