//! The receiving side: the `codmir-webhook` crate, as a receiver built with its axum
//! extractor, verifies every request the real server sends and reads every event typed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use codmir_webhook::{Data, Event, Verified, Verifier};
use serde_json::json;

use codmir_core::sign::codmir_signature;

use crate::helpers::{TestApp, client, eventually, spawn_app};
use crate::receiver::Receiver;

/// A receiver whose verifier the test can swap between phases.
#[derive(Clone)]
struct Crate {
    verifier: Arc<Mutex<Verifier>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl FromRef<Crate> for Verifier {
    fn from_ref(r: &Crate) -> Verifier {
        r.verifier.lock().unwrap().clone()
    }
}

async fn hook(State(r): State<Crate>, Verified(event): Verified) -> StatusCode {
    r.events.lock().unwrap().push(event);
    StatusCode::NO_CONTENT
}

impl Crate {
    async fn start(secret: &str) -> (Self, String) {
        let me = Self {
            verifier: Arc::new(Mutex::new(Verifier::new(secret).unwrap())),
            events: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (me, url)
    }

    fn types(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events.iter().map(|e| e.event_type().to_owned()).collect()
    }

    async fn wait_for(&self, n: usize) {
        eventually(Duration::from_secs(10), "verified deliveries", || async {
            self.events.lock().unwrap().len() >= n
        })
        .await;
    }
}

async fn post_json(app: &TestApp, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = app.request("POST", path, Some(&app.key), Some(body)).await;
    assert!(r.status < 300, "{path}: {}", r.text);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crate_verifies_every_request_and_reads_every_event_typed() {
    let app = spawn_app().await;
    let secret = "a-customers-own-secret-1";
    let (receiver, url) = Crate::start(secret).await;
    let webhook = post_json(
        &app,
        "/v1/webhooks",
        json!({"url": url, "events": ["*"], "secret": secret}),
    )
    .await;
    let w = webhook["id"].as_str().unwrap().to_owned();
    // The same events to a receiver that keeps the raw bodies, to check them against the
    // catalog's schemas.
    let raw = Receiver::start().await;
    let raw_webhook = json!({"url": raw.url, "events": ["*"]});
    let raw_webhook = post_json(&app, "/v1/webhooks", raw_webhook).await;
    let raw_id = raw_webhook["id"].as_str().unwrap();

    // One of each event the API makes.
    let project = post_json(&app, "/v1/projects", json!({"name": "Main App"})).await;
    let p = project["id"].as_str().unwrap();
    let member = post_json(
        &app,
        &format!("/v1/projects/{p}/members"),
        json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await;
    let ticket = post_json(
        &app,
        &format!("/v1/projects/{p}/tickets"),
        json!({"title": "Bug in login flow", "assignee_id": member["id"]}),
    )
    .await;
    let t = ticket["id"].as_str().unwrap();
    let r = app
        .request(
            "PATCH",
            &format!("/v1/tickets/{t}"),
            Some(&app.key),
            Some(json!({"status": "resolved"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    post_json(
        &app,
        &format!("/v1/tickets/{t}/comments"),
        json!({"body": "Fixed"}),
    )
    .await;
    let r = app
        .request("DELETE", &format!("/v1/tickets/{t}"), Some(&app.key), None)
        .await;
    assert!(r.status < 300, "{}", r.text);
    post_json(&app, &format!("/v1/webhooks/{w}/ping"), json!({})).await;
    receiver.wait_for(9).await;
    let mut types = receiver.types();
    types.sort();
    assert_eq!(
        types,
        [
            "comment.created",
            "member.added",
            "project.created",
            "ticket.assigned",
            "ticket.created",
            "ticket.deleted",
            "ticket.status_changed",
            "ticket.updated",
            "webhook.ping",
        ]
    );
    {
        let events = receiver.events.lock().unwrap();
        assert!(
            events
                .iter()
                .all(|e| !matches!(e.data, Data::Unknown { .. }))
        );
        let changed = events.iter().find_map(|e| match &e.data {
            Data::TicketStatusChanged(d) => Some(d.clone()),
            _ => None,
        });
        let changed = changed.expect("a status change");
        let status = &changed.changes.as_ref().unwrap()["status"];
        assert_eq!(
            (status.from.as_str(), status.to.as_str()),
            (Some("open"), Some("resolved"))
        );
        let assigned = events.iter().find_map(|e| match &e.data {
            Data::TicketAssigned(d) => d.assignee.clone(),
            _ => None,
        });
        assert_eq!(assigned.unwrap().id, member["id"].as_str().unwrap());
    }

    // What docs/receiving.md's Rust receiver (this extractor) answers to a real event's body
    // with a bad signature: a 4xx each, never a 5xx, and nothing handed to the handler.
    let events = receiver.events.lock().unwrap().len();
    let event_id = receiver.events.lock().unwrap()[0].id.clone();
    let body = app.get(&format!("/v1/events/{event_id}")).await.text;
    let right = codmir_signature(secret, body.as_bytes());
    for (what, signature) in [
        ("truncated", right[..right.len() - 4].to_owned()),
        ("non-ASCII", format!("{}é", &right[..right.len() - 1])),
        ("empty", String::new()),
        (
            "wrong",
            codmir_signature("another-secret-entirely", body.as_bytes()),
        ),
    ] {
        let status = client()
            .post(&url)
            .header("content-type", "application/json")
            .header("x-codmir-signature", signature.as_bytes())
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_client_error(), "a {what} signature: {status}");
    }
    let status = client()
        .post(&url)
        .header("x-codmir-signature", right)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204, "the right signature");
    assert_eq!(receiver.events.lock().unwrap().len(), events + 1);

    // A rotation: during the grace period the receiver verifies with the new secret alone,
    // and with the old one alone.
    let rotated = post_json(&app, &format!("/v1/webhooks/{w}/rotate-secret"), json!({})).await;
    let new_secret = rotated["signing_secret"].as_str().unwrap();
    for (n, holds) in [(11, new_secret), (12, secret)] {
        *receiver.verifier.lock().unwrap() = Verifier::new(holds).unwrap();
        post_json(&app, "/v1/projects", json!({"name": format!("P{n}")})).await;
        receiver.wait_for(n).await;
    }

    // The two events about webhooks: a ping, and a webhook disabled by a 410 Gone.
    post_json(&app, &format!("/v1/webhooks/{raw_id}/ping"), json!({})).await;
    let gone = Receiver::start().await;
    gone.always(crate::receiver::Reply::Status(410));
    let body = json!({"url": gone.url, "events": ["project.created"]});
    post_json(&app, "/v1/webhooks", body).await;
    post_json(&app, "/v1/projects", json!({"name": "The last one"})).await;
    receiver.wait_for(14).await;
    // Every event type reached the raw receiver, and each body matches its schema.
    let schemas = Catalog::fetch(&app).await;
    eventually(Duration::from_secs(10), "all ten types", || async {
        let mut seen: Vec<String> = raw
            .hits()
            .iter()
            .map(|h| h.json()["type"].to_string())
            .collect();
        seen.sort();
        seen.dedup();
        seen.len() == 10
    })
    .await;
    for hit in raw.hits() {
        schemas.check(&hit.json());
    }
    // Nothing was refused on the way: each delivery succeeded at its first attempt.
    let path = format!("/v1/webhooks/{w}/deliveries?limit=100");
    eventually(Duration::from_secs(10), "outcomes recorded", || async {
        let r = app.get(&path).await;
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(crate::helpers::settled)
    })
    .await;
    let r = app.get(&path).await;
    for d in r.body["data"].as_array().unwrap() {
        let outcome = (d["status"].as_str(), d["attempt_count"].as_u64());
        assert_eq!(outcome, (Some("succeeded"), Some(1)), "{d}");
    }
}

/// The catalog's schemas, compiled, made strict for the test: an object the server sends may
/// carry no field the schema (the crate's types) does not describe.
struct Catalog {
    schemas: boon::Schemas,
    index: std::collections::HashMap<String, boon::SchemaIndex>,
}

fn strict(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), json!(false));
            }
            map.values_mut().for_each(strict);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

impl Catalog {
    async fn fetch(app: &TestApp) -> Self {
        let catalog = app.get("/v1/event-types").await.body;
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        let mut schemas = boon::Schemas::new();
        let mut index = std::collections::HashMap::new();
        for t in catalog["data"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let mut schema = t["schema"].clone();
            assert_eq!(
                schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{name}"
            );
            strict(&mut schema);
            let loc = format!("https://schemas.invalid/{name}.json");
            compiler.add_resource(&loc, schema).unwrap();
            let i = compiler
                .compile(&loc, &mut schemas)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            index.insert(name.to_owned(), i);
            // The catalog's own example validates too.
            let me = Self { schemas, index };
            me.check(&t["example"]);
            (schemas, index) = (me.schemas, me.index);
        }
        assert_eq!(index.len(), 10);
        Self { schemas, index }
    }

    fn check(&self, event: &serde_json::Value) {
        let t = event["type"].as_str().unwrap();
        let i = self
            .index
            .get(t)
            .unwrap_or_else(|| panic!("no schema for {t}"));
        if let Err(e) = self.schemas.validate(event, *i) {
            panic!("{t} does not match its schema: {e:#}\n{event}");
        }
    }
}
