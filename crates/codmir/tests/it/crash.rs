//! Crash safety: `kill -9` the server mid-stream, restart it on the same database, and every
//! event whose request got a 2xx is delivered at least once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::eventually;
use crate::process::ServerProcess;
use crate::receiver::Receiver;

const FLAGS: &[&str] = &[
    "--allow-private-targets",
    "--retry-schedule",
    "200ms,400ms,800ms",
];

#[tokio::test]
async fn kill_9_mid_stream_then_restart_delivers_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let rx = Receiver::start().await;
    let client = crate::helpers::client();

    let mut server = ServerProcess::start(&db, FLAGS).await;
    let key = server.printed_key().expect("first start prints a key");
    let r = client
        .post(format!("{}/v1/webhooks", server.base))
        .bearer_auth(&key)
        .json(
            &json!({"url": rx.url, "events": ["ticket.created"], "secret": "your-webhook-secret"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let project: serde_json::Value = client
        .post(format!("{}/v1/projects", server.base))
        .bearer_auth(&key)
        .json(&json!({"name": "P"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tickets_url = format!(
        "{}/v1/projects/{}/tickets",
        server.base,
        project["id"].as_str().unwrap()
    );

    // Eight writers create tickets as fast as they can; each records the tickets acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, url, key, acked) = (
            client.clone(),
            tickets_url.clone(),
            key.clone(),
            acked.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"title": format!("w{w} t{i}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let t: serde_json::Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(t["id"].as_str().unwrap().to_owned());
                    }
                    _ => break,
                }
            }
        }));
    }
    eventually(
        Duration::from_secs(20),
        "some tickets acknowledged",
        || async { acked.lock().unwrap().len() >= 200 },
    )
    .await;
    server.stop_with("KILL");
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let delivered_before = rx.count();

    let restarted = ServerProcess::start(&db, FLAGS).await;
    assert!(
        restarted.printed_key().is_none(),
        "no new key on a non-empty database"
    );
    let wanted: HashSet<String> = acked.iter().cloned().collect();
    let delivered = || {
        rx.of_type("ticket.created")
            .iter()
            .map(|h| {
                h.json()["data"]["ticket"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(30),
        "every acknowledged ticket delivered",
        || async {
            let got: HashSet<String> = delivered().into_iter().collect();
            wanted.is_subset(&got)
        },
    )
    .await;
    // Attempts in flight at the kill reached the receiver; the restarted engine settles them.
    eventually(
        Duration::from_secs(30),
        "no delivery left pending",
        || async { crate::helpers::pending_deliveries(&restarted.base, &key).await == 0 },
    )
    .await;
    let all = delivered();
    let unique: HashSet<&String> = all.iter().collect();
    let duplicates = all.len() - unique.len();
    // Duplicates come only from attempts in flight at the crash: bounded by the in-flight limit.
    assert!(duplicates <= 64, "{duplicates} duplicates");
    println!(
        "acknowledged {}, delivered before the kill {delivered_before}, after restart {} ({duplicates} duplicates)",
        acked.len(),
        all.len()
    );
}
