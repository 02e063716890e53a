//! The codmir server: the HTTP API, the units of work behind it, the store and the delivery
//! engine, assembled by [`run`].

pub mod api;
pub mod config;
pub mod delivery;
mod listen;
pub mod ops;
mod retention;
pub mod store;
mod telemetry;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
pub use listen::ConnectionLimits;
pub use store::{Store, chain as error_chain};

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
    let (stop_tx, stop_rx) = watch::channel(false);
    let (engine, engine_task) = delivery::spawn(store.clone(), config.clone(), stop_rx.clone())
        .map_err(|e| std::io::Error::other(format!("cannot build the HTTP client: {e}")))?;
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let Some(keep) = config.retention {
        tokio::spawn(retention::run(
            store.clone(),
            keep,
            config.retention_interval,
            config.retention_batch,
            stop_rx.clone(),
        ));
    }
    let limits = config.connection_limits;
    let state = api::AppState::new(store.clone(), config, engine.clone());
    let with_metrics = metrics.is_none();
    if let Some(metrics) = metrics {
        let app = api::metrics_router(state.clone());
        tokio::spawn(listen::serve(metrics, app, limits, stop_rx.clone()));
    }
    let task = tokio::spawn(async move {
        let served =
            listen::serve(listener, api::router(state, with_metrics), limits, stop_rx).await;
        // The engine sees the same signal and stops claiming; wait for its in-flight attempts.
        let _ = engine_task.await;
        store.close().await;
        served
    });
    Ok(Running { engine, task })
}
