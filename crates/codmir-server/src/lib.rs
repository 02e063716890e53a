//! The codmir server: the HTTP API, the units of work behind it, the store and the delivery
//! engine, assembled by [`run`].

pub mod api;
pub mod config;
pub mod ops;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::Config;
pub use store::Store;

/// Makes ring the process's TLS crypto provider, which the delivery client needs. Calling it
/// again does nothing.
pub fn install_crypto_provider() {
    // `Err` means a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes in-flight requests,
/// lets the delivery engine wind down and closes the store.
pub async fn run(
    listener: TcpListener,
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = api::AppState {
        store: store.clone(),
        config: Arc::new(config),
        wake: Arc::new(Notify::new()),
    };
    let app = api::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    store.close().await;
    Ok(())
}
