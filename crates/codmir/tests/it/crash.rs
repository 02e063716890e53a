//! Crash safety: `kill -9` the server mid-stream, restart it on the same database, and every
//! event whose request got a 2xx is delivered at least once.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::eventually;
use crate::receiver::Receiver;

struct Server {
    child: Child,
    base: String,
    key: Option<String>,
}

fn start(db: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_codmir"))
        .args([
            "serve",
            "--database-url",
            db,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--allow-private-targets",
            "--retry-schedule",
            "200ms,400ms,800ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first start prints the key on its third line; later starts print nothing.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("cmk_") {
                let _ = tx.send(line);
            }
        }
    });
    let key = rx.recv_timeout(Duration::from_secs(5)).ok();
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        key,
    }
}

async fn wait_up(client: &reqwest::Client, base: &str) {
    eventually(Duration::from_secs(10), "server up", || {
        let (c, url) = (client.clone(), format!("{base}/healthz"));
        async move { c.get(url).send().await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn kill_9_mid_stream_then_restart_delivers_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let rx = Receiver::start().await;
    let client = crate::helpers::client();

    let mut server = start(&db);
    let key = server.key.clone().expect("first start prints a key");
    wait_up(&client, &server.base).await;
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
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let delivered_before = rx.count();

    let mut restarted = start(&db);
    assert!(
        restarted.key.is_none(),
        "no new key on a non-empty database"
    );
    wait_up(&client, &restarted.base).await;
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
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
