//! `Idempotency-Key`: a retried create returns the first answer and does the work once.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, new_key, spawn_app, spawn_app_with, test_config};
use crate::receiver::{Receiver, Reply};

async fn post(app: &TestApp, key: &str, idem: &str, path: &str, body: Value) -> (u16, Value, bool) {
    let r = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), r.json().await.unwrap(), replayed)
}

#[tokio::test]
async fn a_repeated_create_returns_the_same_resource_and_makes_one_event() {
    let app = spawn_app().await;
    let k = app.key.clone();
    let (s1, first, replayed) =
        post(&app, &k, "create-p-1", "/v1/projects", json!({"name": "P"})).await;
    assert_eq!((s1, replayed), (201, false));
    let (s2, second, replayed) =
        post(&app, &k, "create-p-1", "/v1/projects", json!({"name": "P"})).await;
    assert_eq!((s2, replayed), (201, true), "{second}");
    assert_eq!(first, second, "the same resource, byte for byte");
    let projects = app.get("/v1/projects").await;
    assert_eq!(projects.body["data"].as_array().unwrap().len(), 1);
    let events = app.events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "project.created")
            .count(),
        1,
        "one event"
    );

    // The same key with another request is refused; another key is another request.
    let (s, body, _) = post(&app, &k, "create-p-1", "/v1/projects", json!({"name": "Q"})).await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request")
    );
    let (s, _, replayed) = post(&app, &k, "create-p-2", "/v1/projects", json!({"name": "P"})).await;
    assert_eq!((s, replayed), (201, false));
    // Keys are per workspace: another workspace's same key is its own.
    let other = new_key(&app.store, "other", "bob").await;
    let (s, _, replayed) = post(
        &app,
        &other,
        "create-p-1",
        "/v1/projects",
        json!({"name": "P"}),
    )
    .await;
    assert_eq!((s, replayed), (201, false));
    // A refusal is not kept: nothing was done, so the same key runs the corrected request.
    let (s, _, _) = post(&app, &k, "bad", "/v1/projects", json!({"name": ""})).await;
    assert_eq!(s, 422);
    let (s, _, replayed) = post(&app, &k, "bad", "/v1/projects", json!({"name": ""})).await;
    assert_eq!((s, replayed), (422, false), "run again, not replayed");
    let (s, _, replayed) = post(&app, &k, "bad", "/v1/projects", json!({"name": "Fixed"})).await;
    assert_eq!(
        (s, replayed),
        (201, false),
        "the corrected request, under the same key"
    );
    let (s, _, replayed) = post(&app, &k, "bad", "/v1/projects", json!({"name": "Fixed"})).await;
    assert_eq!((s, replayed), (201, true));
    // A key that is not printable ASCII is refused before anything runs.
    let (s, body, _) = post(&app, &k, "", "/v1/projects", json!({"name": "Z"})).await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["field"], "Idempotency-Key");
    assert_eq!(
        app.get("/v1/projects").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// A create's answer shows the webhook's secret: it is replayed only to the API key that
/// made the request, not to another key of the same workspace.
#[tokio::test]
async fn an_answer_is_replayed_only_to_the_key_that_made_it() {
    let app = spawn_app().await;
    let rx = Receiver::start().await;
    let body = json!({"url": rx.url, "events": ["*"], "secret": "a-secret-for-one-key-only-77"});
    let (s, first, _) = post(&app, &app.key, "create-w", "/v1/webhooks", body.clone()).await;
    assert_eq!(s, 201, "{first}");
    let (s, again, replayed) = post(&app, &app.key, "create-w", "/v1/webhooks", body.clone()).await;
    assert_eq!((s, replayed), (201, true));
    assert_eq!(again["secret"], first["secret"]);
    // Another key of the same workspace (the helper's workspace is "default").
    let colleague = new_key(&app.store, "default", "carol").await;
    let (s, answer, replayed) = post(&app, &colleague, "create-w", "/v1/webhooks", body).await;
    assert_eq!((s, replayed), (422, false), "{answer}");
    assert!(!answer.to_string().contains("a-secret-for-one-key-only-77"));
    assert_eq!(
        app.list("/v1/webhooks").await.len(),
        1,
        "nothing made twice"
    );
}

/// A request whose node died (or whose database crashed) after it claimed its key leaves a
/// claim without an answer, and nothing of its work: a retry meets "in progress" only until the
/// takeover bound, then runs the request afresh, once.
#[tokio::test]
async fn a_claim_left_without_an_answer_is_taken_over_after_the_bound() {
    use sha2::Digest;
    let app = spawn_app_with(codmir_server::Config {
        idempotency_takeover: Duration::from_secs(1),
        ..test_config()
    })
    .await;
    let body = r#"{"name":"Taken over"}"#;
    let auth = format!("Bearer {}", app.key);
    // The fingerprint the server takes: method, path, body and the API key.
    let mut hash = sha2::Sha256::new();
    for (i, part) in ["POST", "/v1/projects", body, &auth].iter().enumerate() {
        if i > 0 {
            hash.update([0]);
        }
        hash.update(part);
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&hash.finalize()[..]);
    let ws = app.get("/v1/me").await.body["workspace"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = codmir_core::time::Timestamp::now();
    app.store
        .write(move |tx| {
            Box::pin(async move {
                let zero = codmir_core::time::Timestamp::from_millis(0);
                tx.idempotency_claim(&ws, "died", &fingerprint, "clm_dead", now, zero, zero)
                    .await
            })
        })
        .await
        .unwrap();
    let send = || async {
        let r = app
            .client
            .post(format!("{}/v1/projects", app.base))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .header("idempotency-key", "died")
            .body(body)
            .send()
            .await
            .unwrap();
        let replayed = r.headers().contains_key("idempotent-replayed");
        (
            r.status().as_u16(),
            replayed,
            r.json::<Value>().await.unwrap(),
        )
    };
    let (status, _, answer) = send().await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "idempotency_key_in_progress");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("taken over by a retry after 1 s"),
        "{answer}"
    );
    // Past the bound, the retry takes the claim over: in progress until then.
    let taken = std::sync::Mutex::new(None);
    eventually(Duration::from_secs(5), "the claim taken over", || async {
        let (status, replayed, body) = send().await;
        assert!(status == 409 || status == 201, "{status}: {body}");
        let done = status != 409;
        if done {
            *taken.lock().unwrap() = Some((status, replayed, body));
        }
        done
    })
    .await;
    let (status, replayed, first) = taken.into_inner().unwrap().unwrap();
    assert_eq!((status, replayed), (201, false), "run afresh: {first}");
    let (status, replayed, again) = send().await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again["id"], first["id"]);
    let made = app.list("/v1/projects").await;
    assert_eq!(made.len(), 1, "made once");
}

/// A request dropped by the API's time bound while its work still runs leaves its key neither
/// stuck nor free: a retry meets "in progress" while the first runs, then gets the first's
/// answer, and the work (a ping, sent to the receiver) is done once.
#[tokio::test]
async fn a_request_past_the_time_bound_settles_its_key_for_the_retry() {
    let config = codmir_server::Config {
        api_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let rx = Receiver::start().await;
    rx.script([Reply::Delay(1500, 200)]);
    let hook = app
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["*"], "secret": "a-secret-of-twenty-chars"}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.body);
    let ping = format!("/v1/webhooks/{}/ping", hook.body["id"].as_str().unwrap());
    let k = app.key.clone();

    let (status, body, _) = post(&app, &k, "ping-once", &ping, json!({})).await;
    assert_eq!(status, 503, "past the time bound: {body}");
    let (status, body, _) = post(&app, &k, "ping-once", &ping, json!({})).await;
    assert_eq!(status, 409, "the first still runs: {body}");
    assert_eq!(body["error"]["code"], "idempotency_key_in_progress");

    let answered = std::sync::Mutex::new(None);
    eventually(
        Duration::from_secs(10),
        "the first answer, kept",
        || async {
            let (status, body, replayed) = post(&app, &k, "ping-once", &ping, json!({})).await;
            let done = status != 409;
            *answered.lock().unwrap() = Some((status, body, replayed));
            done
        },
    )
    .await;
    let (status, body, replayed) = answered.into_inner().unwrap().unwrap();
    assert_eq!((status, replayed), (200, true), "{body}");
    assert_eq!(body["succeeded"], true, "{body}");
    assert_eq!(rx.count(), 1, "the ping was sent once");
}

/// PostgreSQL crashes (`-m immediate`) while clients create tickets and projects, each request
/// with a key of its own, retried with that key until it gets a 2xx, as the README tells
/// clients to. Every key ends in a 2xx; a 409 comes only within the takeover bound of the
/// crash; a key's answer, asked for again, is the same object; and there is one object per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's binaries (initdb, pg_ctl) for an instance of the test's own; .ci/run runs it"]
async fn keys_in_flight_when_postgresql_crashes_end_in_one_object_each() {
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    let pg = crate::own_pg::OwnPostgres::start();
    let takeover = Duration::from_secs(3);
    let config = codmir_server::Config {
        idempotency_takeover: takeover,
        ..test_config()
    };
    let app = crate::helpers::spawn_on(tempfile::tempdir().unwrap(), pg.url(), config).await;
    let project = app.project("Crash").await;
    let app = Arc::new(app);

    const CLIENTS: usize = 16;
    const KEYS_EACH: usize = 40;
    // (key, answers seen before the 2xx with when, the 2xx's object id)
    type Log = Vec<(String, Vec<(u16, String, Instant)>, String)>;
    let log: Arc<Mutex<Log>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (app, log, project) = (app.clone(), log.clone(), project.clone());
            tokio::spawn(async move {
                for k in 0..KEYS_EACH {
                    let key = format!("crash-{c}-{k}");
                    let (path, body) = match k % 3 {
                        0 => ("/v1/projects".to_owned(), json!({"name": key})),
                        _ => (
                            format!("/v1/projects/{project}/tickets"),
                            json!({"title": key}),
                        ),
                    };
                    let mut seen = Vec::new();
                    let give_up = Instant::now() + Duration::from_secs(60);
                    // The client's pace between retries, as a real one keeps (not a wait for
                    // a condition: each retry is the check).
                    let mut pace = tokio::time::interval(Duration::from_millis(200));
                    pace.tick().await;
                    let id = loop {
                        assert!(Instant::now() < give_up, "{key} never answered: {seen:?}");
                        let (status, answer, _) =
                            post(&app, &app.key, &key, &path, body.clone()).await;
                        if status == 201 {
                            break answer["id"].as_str().unwrap().to_owned();
                        }
                        let code = answer["error"]["code"].as_str().unwrap_or("").to_owned();
                        seen.push((status, code, Instant::now()));
                        pace.tick().await;
                    };
                    log.lock().unwrap().push((key, seen, id));
                }
            })
        })
        .collect();

    let made = || log.lock().unwrap().len();
    eventually(Duration::from_secs(30), "load flowing", || async {
        made() > CLIENTS * 3
    })
    .await;
    pg.stop_with("immediate");
    pg.restart();
    let back = Instant::now();
    for client in clients {
        client.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.len(), CLIENTS * KEYS_EACH);
    let mut waited = 0;
    for (key, seen, _) in &log {
        for (status, code, at) in seen {
            match (status, code.as_str()) {
                (503, "database_unavailable" | "outcome_unknown" | "rolled_back") => {}
                // In progress, or (`conflict`) this request's claim was taken over by a retry
                // (it outlived the bound while the database came back): both say "retry".
                (409, "idempotency_key_in_progress" | "conflict") => {
                    waited += 1;
                    assert!(
                        *at < back + takeover + Duration::from_secs(1),
                        "{key}: a 409 {:?} after the database came back",
                        at.duration_since(back)
                    );
                }
                other => panic!("{key}: unexpected answer {other:?}"),
            }
        }
    }
    // Asked again, each key answers with its object (replayed), not a second one.
    for (key, _, id) in log.iter().step_by(7) {
        let (path, body) = match key.rsplit('-').next().unwrap().parse::<usize>().unwrap() % 3 {
            0 => ("/v1/projects".to_owned(), json!({"name": key})),
            _ => (
                format!("/v1/projects/{project}/tickets"),
                json!({"title": key}),
            ),
        };
        let (status, answer, replayed) = post(&app, &app.key, key, &path, body).await;
        assert_eq!((status, replayed), (201, true), "{key}: {answer}");
        assert_eq!(answer["id"], id.as_str(), "{key}");
    }
    // One object per key.
    let projects = crate::helpers::all_pages(&app.base, &app.key, "/v1/projects").await;
    let tickets = format!("/v1/projects/{project}/tickets");
    let tickets = crate::helpers::all_pages(&app.base, &app.key, &tickets).await;
    let mut names: Vec<String> = projects
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .chain(
            tickets
                .iter()
                .map(|t| t["title"].as_str().unwrap().to_owned()),
        )
        .filter(|n| n.starts_with("crash-"))
        .collect();
    let objects = names.len();
    names.sort();
    names.dedup();
    assert_eq!(objects, names.len(), "a key made two objects");
    assert_eq!(objects, log.len());
    let refused: usize = log.iter().map(|(_, seen, _)| seen.len()).sum();
    eprintln!(
        "{} keys, {refused} answers before their 2xx, {waited} of them 409",
        log.len()
    );
}
