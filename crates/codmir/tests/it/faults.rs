//! Faults under load, with the promise checked on the receiver's side: every event whose API
//! request got a 2xx reaches the webhook at least once, a delivery is `succeeded` only when
//! the receiver saw it, attempt numbers only grow, and during the fault the API answers in
//! the JSON error shape, promptly, with `Retry-After`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{client, eventually};
use crate::own_pg::OwnPostgres;
use crate::process::ServerProcess;
use crate::receiver::Receiver;

/// What the load saw: ticket ids the API acknowledged, and the answers that were not 2xx.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<String>,
    refused: Vec<(u16, Value, Option<String>, Duration)>,
}

/// Creates tickets on `nodes` in turn, about every 10 ms, until `stop` is set.
fn load(
    nodes: Vec<String>,
    key: String,
    project: String,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let c = client();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let base = &nodes[i % nodes.len()];
            i += 1;
            let started = Instant::now();
            let r = c
                .post(format!("{base}/v1/projects/{project}/tickets"))
                .bearer_auth(&key)
                .json(&json!({"title": format!("T{i}")}))
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let took = started.elapsed();
            let Ok(r) = r else { continue };
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = r.json().await.unwrap_or(Value::Null);
            {
                let mut s = out.lock().unwrap();
                if status == 201 {
                    s.acknowledged.push(body["id"].as_str().unwrap().to_owned());
                } else {
                    s.refused.push((status, body, retry_after, took));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (seen, task)
}

async fn get(base: &str, key: &str, path: &str) -> Value {
    client()
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every page of `path` (a list with `next_cursor`).
async fn all(base: &str, key: &str, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = get(base, key, &format!("{path}{sep}limit=100{cursor}")).await;
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

/// The promise, checked from the receiver's side; returns the number of duplicate arrivals.
async fn check_history(
    base: &str,
    key: &str,
    webhook: &str,
    rx: &Receiver,
    acknowledged: &[String],
) -> usize {
    // Every acknowledged ticket's ticket.created arrived.
    let want: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    eventually(
        Duration::from_secs(60),
        "every acknowledged event delivered",
        || async {
            let got: HashSet<String> = rx
                .of_type("ticket.created")
                .iter()
                .map(|h| {
                    h.json()["data"]["ticket"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            want.iter().all(|id| got.contains(*id))
        },
    )
    .await;
    let arrivals: Vec<String> = rx
        .hits()
        .iter()
        .map(|h| h.header("webhook-id").to_owned())
        .collect();
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for a in &arrivals {
        *per_event.entry(a.as_str()).or_default() += 1;
    }
    // Nothing `succeeded` that the receiver did not see; attempt numbers 1, 2, … per delivery.
    eventually(
        Duration::from_secs(60),
        "no delivery left pending",
        || async {
            all(
                base,
                key,
                &format!("/v1/webhooks/{webhook}/deliveries?status=pending"),
            )
            .await
            .is_empty()
        },
    )
    .await;
    for d in all(base, key, &format!("/v1/webhooks/{webhook}/deliveries")).await {
        assert_eq!(d["status"], "succeeded", "{d}");
        let event = d["event_id"].as_str().unwrap();
        assert!(
            per_event.contains_key(event),
            "succeeded but never received: {d}"
        );
        let full = get(
            base,
            key,
            &format!("/v1/deliveries/{}", d["id"].as_str().unwrap()),
        )
        .await;
        let numbers: Vec<u64> = full["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect();
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (1..=numbers.len() as u64).collect::<Vec<_>>(),
            "{full}"
        );
    }
    per_event.values().map(|n| n - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's initdb and pg_ctl; run `cargo test -- --ignored` (CI does)"]
async fn postgresql_restarting_under_load_loses_no_acknowledged_event() {
    let pg = OwnPostgres::start();
    let flags = [
        "--allow-private-targets",
        "--retry-schedule",
        "200ms,500ms,1s,2s,2s,2s,2s,2s",
    ];
    let a = ServerProcess::start(&pg.url(), &flags).await;
    let b = ServerProcess::start(&pg.url(), &flags).await;
    let key = a.printed_key().unwrap();
    let rx = Receiver::start().await;
    let webhook = a
        .post(
            &key,
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["*"]}),
        )
        .await;
    let webhook = webhook["id"].as_str().unwrap().to_owned();
    let project = a.post(&key, "/v1/projects", json!({"name": "Load"})).await;
    let project = project["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, task) = load(
        vec![a.base.clone(), b.base.clone()],
        key.clone(),
        project,
        stop.clone(),
    );
    let acknowledged = || seen.lock().unwrap().acknowledged.len();
    for mode in ["fast", "immediate"] {
        let before = acknowledged();
        eventually(Duration::from_secs(30), "load flowing", || async {
            acknowledged() > before + 20
        })
        .await;
        pg.stop_with(mode);
        // While it is down: the API says so at once, in the JSON shape, with Retry-After …
        let started = Instant::now();
        let r = client()
            .post(format!("{}/v1/projects", b.base))
            .bearer_auth(&key)
            .json(&json!({"name": "while down"}))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(r.status(), 503, "{mode}");
        assert!(
            took < Duration::from_secs(6),
            "{mode}: answered after {took:?}"
        );
        assert!(r.headers().contains_key("retry-after"), "{mode}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "database_unavailable",
            "{mode}: {body}"
        );
        // … and readiness says the database is unreachable.
        let ready = client()
            .get(format!("{}/readyz", a.base))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503, "{mode}");
        std::thread::sleep(Duration::from_millis(500));
        pg.restart();
        // Everything resumes by itself: both nodes take writes again.
        let after = acknowledged();
        eventually(Duration::from_secs(30), "writes accepted again", || async {
            acknowledged() > after + 20
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (status, body, retry_after, took) in &seen.refused {
        // What the load met during the outages: 503s that say why, never a 500, promptly.
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
        assert!(retry_after.is_some());
        assert!(*took < Duration::from_secs(12), "a request took {took:?}");
    }
    let duplicates = check_history(&a.base, &key, &webhook, &rx, &seen.acknowledged).await;
    eprintln!(
        "acknowledged {}, refused {}, received {}, duplicates {duplicates}",
        seen.acknowledged.len(),
        seen.refused.len(),
        rx.count()
    );
    // A restart cuts no attempt off from its outcome for longer than a lease: none is sent twice.
    assert_eq!(duplicates, 0);
}
