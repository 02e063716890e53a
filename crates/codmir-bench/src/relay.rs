//! The two-hop floor: a relay with no database, no signing and no retries, run as its own
//! process like `codmir serve`. It takes the same API request (`POST /v1/projects/{id}/tickets`
//! with a title), answers 201 at once and POSTs a `ticket.created`-sized body carrying that
//! title to the receiver, with the same client library, keep-alive and per-endpoint bound (64
//! in flight) as codmir's engine. What it reaches is what any webhook sender fed by an HTTP API
//! can reach on this machine before it stores or signs anything: every event costs one request
//! in and one request out, where the ceiling costs one.

use std::sync::Arc;

use anyhow::Result;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// In flight to the receiver at once: codmir's default per-endpoint bound.
const IN_FLIGHT: usize = 64;
const EXAMPLE_TITLE: &str = "\"title\":\"Bug in login flow\"";

struct Relay {
    client: reqwest::Client,
    target: String,
    permits: Arc<Semaphore>,
    /// The sample payload split around its title.
    before: String,
    after: String,
}

/// Serves the relay on `listen` until the process is killed.
pub(crate) async fn serve(listen: &str, target: String) -> Result<()> {
    let sample = crate::load::sample_payload();
    let (before, after) = sample
        .split_once(EXAMPLE_TITLE)
        .ok_or_else(|| anyhow::anyhow!("the sample payload has no title"))?;
    let relay = Arc::new(Relay {
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?,
        target,
        permits: Arc::new(Semaphore::new(IN_FLIGHT)),
        before: before.to_owned(),
        after: after.to_owned(),
    });
    let app = axum::Router::new()
        .route("/v1/projects/{id}/tickets", post(ticket))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(relay);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn ticket(
    State(relay): State<Arc<Relay>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let title = body["title"].as_str().unwrap_or_default();
    let payload = format!(
        "{}\"title\":{}{}",
        relay.before,
        Value::from(title),
        relay.after
    );
    let response = json!({"id": "tkt_relay", "title": title});
    tokio::spawn(async move {
        let Ok(_permit) = relay.permits.acquire().await else {
            return;
        };
        if let Ok(r) = relay
            .client
            .post(relay.target.as_str())
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
        {
            let _ = r.bytes().await;
        }
    });
    (StatusCode::CREATED, Json(response))
}
