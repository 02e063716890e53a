//! A real, scriptable HTTP receiver for tests: records every request and answers as told.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Status(u16),
    /// A status with a `Retry-After` header.
    RetryAfter(u16, u64),
    /// Answers with a status after a delay.
    Delay(u64, u16),
    /// Never answers (until the client gives up).
    Hang,
}

#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Inner {
    hits: Mutex<Vec<Hit>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    inner.hits.lock().unwrap().push(Hit {
        headers,
        body,
        at: Instant::now(),
    });
    let reply = inner
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| inner.default.lock().unwrap().clone())
        .unwrap_or(Reply::Status(200));
    match reply {
        Reply::Status(s) => {
            (StatusCode::from_u16(s).unwrap(), format!("answered {s}")).into_response()
        }
        Reply::RetryAfter(s, secs) => (
            StatusCode::from_u16(s).unwrap(),
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Delay(ms, s) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::from_u16(s).unwrap().into_response()
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        Self::start_at("127.0.0.1").await
    }

    /// A receiver on a free port of `ip`, an address of this machine.
    pub(crate) async fn start_at(ip: &str) -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let url = format!("http://{}/webhooks/codmir", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// Answers the next requests with `replies`, in order, then with the default.
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    pub(crate) fn always(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = Some(reply);
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.inner.hits.lock().unwrap().len()
    }

    /// Hits whose `X-Codmir-Event` is `event_type`.
    pub(crate) fn of_type(&self, event_type: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.header("x-codmir-event") == event_type)
            .collect()
    }
}
