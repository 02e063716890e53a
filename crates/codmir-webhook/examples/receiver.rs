//! A complete codmir webhook receiver: verifies each request, answers at once, processes in
//! the background, and does each event once however often it is delivered.
//!
//! ```sh
//! CODMIR_SIGNING_SECRET=whsec_… PORT=3000 cargo run -p codmir-webhook --features axum --example receiver
//! ```
//! Register `http://<this host>:3000/webhooks/codmir` with the same secret.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use codmir_webhook::{Data, Event, Verified, Verifier};
use tokio::sync::mpsc;

/// How many event ids are remembered for de-duplication. codmir retries over about three
/// days, so a real receiver keeps them in its database (a unique key on the event id); a
/// bounded memory is enough for an example.
const REMEMBERED: usize = 100_000;

#[derive(Clone)]
struct App {
    verifier: Verifier,
    seen: Arc<Mutex<Seen>>,
    work: mpsc::Sender<Event>,
}

impl FromRef<App> for Verifier {
    fn from_ref(app: &App) -> Verifier {
        app.verifier.clone()
    }
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True the first time `id` is seen.
    fn first(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }

    fn forget(&mut self, id: &str) {
        self.ids.remove(id);
    }
}

async fn hook(State(app): State<App>, Verified(event): Verified) -> StatusCode {
    let id = event.id.clone();
    if !app.seen.lock().expect("not poisoned").first(&id) {
        return StatusCode::OK; // a duplicate: done already
    }
    match app.work.try_send(event) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => {
            // Full: refuse, so codmir keeps the event and retries later.
            app.seen.lock().expect("not poisoned").forget(&id);
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

fn process(event: &Event) {
    let what = match &event.data {
        Data::TicketCreated(d) => format!("ticket {} created: {}", d.ticket.id, d.ticket.title),
        Data::TicketStatusChanged(d) => {
            format!("ticket {} is now {}", d.ticket.id, d.ticket.status)
        }
        Data::CommentCreated(d) => format!("comment on {}: {}", d.ticket.id, d.comment.body),
        Data::WebhookPing(d) => format!("ping for {}", d.webhook.id),
        other => format!("{} (not handled here)", other.event_type()),
    };
    println!("processed {} {} {what}", event.id, event.event_type());
}

#[tokio::main]
async fn main() {
    let secret = std::env::var("CODMIR_SIGNING_SECRET")
        .expect("set CODMIR_SIGNING_SECRET to the webhook's secret or signing_secret");
    let verifier = Verifier::new(&secret).unwrap_or_else(|e| panic!("CODMIR_SIGNING_SECRET: {e}"));
    let (work, mut queue) = mpsc::channel::<Event>(1024);
    tokio::spawn(async move {
        while let Some(event) = queue.recv().await {
            process(&event);
        }
    });
    let app = App {
        verifier,
        seen: Arc::default(),
        work,
    };
    let router = Router::new()
        .route("/webhooks/codmir", post(hook))
        .with_state(app);
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("the port is free");
    println!(
        "listening on http://{}/webhooks/codmir",
        listener.local_addr().expect("bound")
    );
    axum::serve(listener, router).await.expect("serves");
}
