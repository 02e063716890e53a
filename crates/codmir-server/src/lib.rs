//! The codmir server: the HTTP API, the units of work behind it, the store and the delivery
//! engine, assembled by [`run`].

pub mod api;
pub mod config;
pub mod delivery;
mod expiry;
mod listen;
pub mod ops;
mod retention;
pub mod store;
pub mod tasks;
mod telemetry;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::Config;
pub use listen::ConnectionLimits;
pub use store::{Store, chain as error_chain};
pub use tasks::Tasks;

/// Makes ring the process's TLS crypto provider, which the delivery client needs. Calling it
/// again does nothing.
pub fn install_crypto_provider() {
    // `Err` means a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes in-flight requests,
/// lets the delivery engine finish its in-flight attempts (bounded) and closes the store.
pub async fn run(
    listener: TcpListener,
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    start(listener, store, config, shutdown)?.wait().await
}

/// A server started by [`start`].
pub struct Running {
    engine: delivery::Engine,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The engine's handle, for what a test or an embedding program observes of it.
    pub fn engine(&self) -> &delivery::Engine {
        &self.engine
    }

    /// Waits until the server has shut down.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .map_err(|e| std::io::Error::other(format!("the server task failed: {e}")))?
    }
}

/// Like [`run`], in a task of its own; returns at once.
pub fn start(
    listener: TcpListener,
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Running> {
    start_with_metrics(listener, None, store, config, shutdown)
}

/// Like [`start`]; with `metrics`, `GET /metrics` is served on that listener only (keep it on a
/// private address), not on the API's.
pub fn start_with_metrics(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Running> {
    telemetry::install();
    let config = Arc::new(config);
    // Every background task of this server is spawned through `tasks` and told to stop by it.
    let tasks = Tasks::default();
    let (engine, engine_task) = delivery::spawn(store.clone(), config.clone(), tasks.clone())
        .map_err(|e| std::io::Error::other(format!("cannot build the HTTP client: {e}")))?;
    tasks.spawn({
        let tasks = tasks.clone();
        async move {
            tokio::select! {
                () = shutdown => tasks.stop(),
                () = tasks.stopping() => {}
            }
        }
    });
    tasks.spawn(expiry::run(store.clone(), engine.clone(), tasks.clone()));
    if let Some(keep) = config.retention {
        tasks.spawn(retention::run(
            store.clone(),
            keep,
            config.retention_interval,
            config.retention_batch,
            tasks.clone(),
        ));
    }
    let limits = config.connection_limits;
    let grace = config.shutdown_grace;
    let state = api::AppState::new(store.clone(), config, engine.clone(), tasks.clone());
    let with_metrics = metrics.is_none();
    if let Some(metrics) = metrics {
        let app = api::metrics_router(state.clone());
        tasks.spawn(listen::serve(metrics, app, limits, tasks.clone()));
    }
    let task = tokio::spawn(async move {
        let router = api::router(state, with_metrics);
        let served = listen::serve(listener, router, limits, tasks.clone()).await;
        // Whatever ended serving, every task is told to stop. The engine stops claiming and
        // lets its in-flight attempts finish (bounded by the grace); then what is left (a
        // key's use being recorded, leases being released, a connection still draining) is
        // waited for, then the store closes once its units in flight are done.
        tasks.stop();
        let _ = engine_task.await;
        if !tasks.wait(grace).await {
            tracing::warn!(
                running = tasks.running(),
                "background tasks still running after the shutdown grace; closing the store"
            );
        }
        store.close().await;
        served
    });
    Ok(Running { engine, task })
}
