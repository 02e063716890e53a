//! The delivery client's connections, against an endpoint written on raw TCP so the test
//! decides what happens to each connection: kept alive between attempts, made anew when the
//! endpoint closed one, not kept after an answer left unread, and bounded in time while an
//! answer trickles.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, eventually, id_of, spawn_app};

const WAIT: Duration = Duration::from_secs(20);

/// What the endpoint does after reading a request.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// `200 ok`, connection kept open.
    Keep,
    /// `200 ok`, then the endpoint closes the connection (no `Connection: close` said).
    Close,
    /// `200` with a 1 MiB body, sent at once, connection kept open.
    Big,
    /// `200` announcing 1,000 bytes, then one byte every 500 ms.
    Trickle,
}

/// One request as the endpoint read it, with the number of the connection it came on.
struct Seen {
    connection: usize,
    head: String,
    body: Vec<u8>,
}

struct RawEndpoint {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RawEndpoint {
    async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?from=test", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let mut number = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                number += 1;
                tokio::spawn(serve(tcp, number, answer, log.clone()));
            }
        });
        Self { url, seen }
    }

    fn connections(&self) -> Vec<usize> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.connection)
            .collect()
    }
}

async fn serve(mut tcp: TcpStream, number: usize, answer: Answer, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until_head(&mut tcp, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            if !read_more(&mut tcp, &mut buf).await {
                return;
            }
        }
        let body = buf[end + 4..end + 4 + length].to_vec();
        buf.drain(..end + 4 + length);
        log.lock().unwrap().push(Seen {
            connection: number,
            head,
            body,
        });
        let written = match answer {
            Answer::Keep | Answer::Close => {
                tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
            }
            Answer::Big => {
                let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
                r.resize(r.len() + 1_048_576, b'x');
                // The connection stays open: only the client decides not to use it again (it
                // stops reading at 64 KiB).
                tcp.write_all(&r).await
            }
            Answer::Trickle => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                    .await;
                // The endpoint's own pace: one byte per tick of its clock.
                let mut pace = tokio::time::interval(Duration::from_millis(500));
                pace.tick().await;
                for _ in 0..1000 {
                    pace.tick().await;
                    if tcp.write_all(b"x").await.is_err() {
                        return;
                    }
                }
                return;
            }
        };
        if written.is_err() || answer == Answer::Close {
            return;
        }
    }
}

/// Reads until `buf` holds a whole request head; the index of its `\r\n\r\n`.
async fn read_until_head(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i);
        }
        if !read_more(tcp, buf).await {
            return None;
        }
    }
}

/// Appends what the next read gives; false once the peer closed or the read failed.
async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match tcp.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// A test app with one webhook to a new endpoint answering `answer`, after `n` events sent
/// one by one: the endpoint and the webhook's settled deliveries.
async fn deliver(answer: Answer, n: usize) -> (TestApp, RawEndpoint, Vec<Value>) {
    let app = spawn_app().await;
    let endpoint = RawEndpoint::start(answer).await;
    let webhook = register(&app, &endpoint.url).await;
    events_one_by_one(&app, &endpoint, n).await;
    let deliveries = settled(&app, &webhook, n).await;
    (app, endpoint, deliveries)
}

/// A webhook of `ticket.created` to `url`; its id.
async fn register(app: &TestApp, url: &str) -> String {
    id_of(
        &app.register(json!({"url": url, "events": ["ticket.created"]}))
            .await,
    )
}

/// Every delivery of `webhook`, once none is pending.
async fn settled(app: &TestApp, webhook: &str, expected: usize) -> Vec<Value> {
    let path = format!("/v1/webhooks/{webhook}/deliveries?limit=100");
    eventually(WAIT, "every delivery settled", || async {
        let list = app.get(&path).await.body["data"]
            .as_array()
            .unwrap()
            .clone();
        list.len() == expected && list.iter().all(crate::helpers::settled)
    })
    .await;
    app.get(&path).await.body["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Creates `n` tickets one after another, each once the previous one reached the endpoint.
async fn events_one_by_one(app: &TestApp, endpoint: &RawEndpoint, n: usize) {
    let project = app.project("P").await;
    for i in 0..n {
        app.ticket(&project, json!({"title": format!("t{i}")}))
            .await;
        eventually(WAIT, "the event arrived", || async {
            endpoint.seen.lock().unwrap().len() > i
        })
        .await;
    }
}

#[tokio::test]
async fn attempts_to_one_endpoint_share_one_kept_alive_connection() {
    let (_app, endpoint, deliveries) = deliver(Answer::Keep, 20).await;
    assert!(deliveries.iter().all(|d| d["status"] == "succeeded"));
    assert_eq!(
        endpoint.connections(),
        vec![1; 20],
        "one connection for all"
    );
    let authority = endpoint
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    for s in endpoint.seen.lock().unwrap().iter() {
        let head = s.head.to_ascii_lowercase();
        assert!(
            head.starts_with("post /hook?from=test http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nhost: {authority}")), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", s.body.len())),
            "{head}"
        );
        let event: Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(event["type"], "ticket.created");
    }
}

#[tokio::test]
async fn an_endpoint_that_closes_every_connection_gets_each_event_on_the_first_attempt() {
    let (_app, endpoint, deliveries) = deliver(Answer::Close, 20).await;
    for d in &deliveries {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(
            d["attempt_count"], 1,
            "no attempt lost to a closed connection: {d}"
        );
    }
    assert_eq!(endpoint.connections(), (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_answer_read_only_in_part_is_logged_cut_and_its_connection_not_reused() {
    let (app, endpoint, deliveries) = deliver(Answer::Big, 2).await;
    for d in &deliveries {
        assert_eq!(d["status"], "succeeded", "{d}");
        let id = d["id"].as_str().unwrap();
        let detail = app.get(&format!("/v1/deliveries/{id}")).await.body;
        let body = detail["attempts"][0]["response_body"].as_str().unwrap();
        assert_eq!(body.len(), 4096, "the log keeps the first 4 KiB");
    }
    assert_eq!(endpoint.connections(), vec![1, 2]);
}

#[tokio::test]
async fn an_answer_that_trickles_is_cut_off_at_the_request_timeout() {
    let app = spawn_app().await; // request timeout 3 s, 3 attempts
    let endpoint = RawEndpoint::start(Answer::Trickle).await;
    let webhook = register(&app, &endpoint.url).await;
    let project = app.project("P").await;
    app.ticket(&project, json!({"title": "slow"})).await;
    let deliveries = settled(&app, &webhook, 1).await;
    assert_eq!(deliveries[0]["status"], "failed");
    let id = deliveries[0]["id"].as_str().unwrap();
    let detail = app.get(&format!("/v1/deliveries/{id}")).await.body;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{detail}");
    for a in attempts {
        assert!(a["error"].as_str().unwrap().starts_with("timed out"), "{a}");
        let ms = a["duration_ms"].as_u64().unwrap();
        assert!(
            (2_900..6_000).contains(&ms),
            "bounded by the 3 s timeout: {ms} ms"
        );
    }
}

/// An endpoint that serves one connection and never accepts another: its accept queue (one
/// deep) fills and further connection attempts wait for SYN retries that cannot succeed.
/// Attempts that find no idle connection take the first one put back instead of waiting for
/// their own, as they do when a burst to one receiver loses SYNs.
#[tokio::test]
async fn attempts_waiting_for_a_connection_take_one_that_is_put_back() {
    let app = spawn_app().await; // connect timeout 2 s, request timeout 3 s
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/hook?from=test", socket.local_addr().unwrap());
    let listener = socket.listen(1).unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        serve(tcp, 1, Answer::Keep, log).await;
        drop(listener);
    });
    let mut webhooks = Vec::new();
    for _ in 0..10 {
        webhooks.push(register(&app, &url).await);
    }
    let project = app.project("P").await;
    app.ticket(&project, json!({"title": "burst"})).await;
    let mut first_try = 0;
    for webhook in &webhooks {
        let d = settled(&app, webhook, 1).await.remove(0);
        if d["status"] == "succeeded" && d["attempt_count"] == 1 {
            first_try += 1;
        }
    }
    // The attempts whose connections the kernel queued for accept (never accepted) lose to
    // the request timeout, and so may their retries; every other attempt is served on the
    // one connection. Waiting for its own connection, each of those would have failed.
    assert!(first_try >= 7, "{first_try} of 10 on the first attempt");
    let connections = seen.lock().unwrap().iter().map(|s| s.connection).max();
    assert_eq!(connections, Some(1), "one connection served them all");
}
