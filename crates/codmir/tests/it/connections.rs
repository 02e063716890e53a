//! Connections that cannot exhaust the server: idle, silent and trickling clients are closed
//! after the header timeout without slowing anyone else, a trickling body gets a 408, past
//! `--max-connections` a newcomer is closed at once while open connections are served, one
//! client holds at most its share, and the probes answer on `--metrics-listen` at the cap.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{answers, client, eventually};
use crate::process::ServerProcess;

async fn server(flags: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = ServerProcess::start(&db, flags).await;
    (dir, s)
}

fn addr(s: &ServerProcess) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// The server process's resident memory, in MiB.
fn rss_mib(s: &ServerProcess) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Whether the server has closed `conn` (a read sees the end, or an error), looking only at
/// what has arrived already.
async fn closed(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(Duration::ZERO, conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Reads what arrives on `conn`; true once the server has closed it.
async fn ended(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    matches!(conn.read(&mut buf).await, Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a file-descriptor hard limit of 12,000 or more (root can raise it); .ci/run runs it"]
async fn ten_thousand_idle_and_trickling_connections_neither_block_healthz_nor_stay() {
    // This process holds 10,000 sockets too.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= 12_000,
        "the file-descriptor limit is {limit}, below the 12,000 this test needs"
    );
    // One client opens them all here: its own bound is lifted (the next test holds it).
    let (_dir, s) = server(&[
        "--header-read-timeout",
        "3s",
        "--max-connections-per-client",
        "20000",
    ])
    .await;
    let rss_before = rss_mib(&s);
    let target = addr(&s);
    let mut conns = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let mut c = TcpStream::connect(&target).await.unwrap();
        if i % 2 == 1 {
            // Half trickle a request line and stop before the headers end.
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        conns.push(c);
    }
    // A kept-alive connection that made one request and then goes quiet.
    let mut quiet = TcpStream::connect(&target).await.unwrap();
    quiet
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    quiet.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    conns.push(quiet);
    // A trickler that keeps sending one byte of a header every 200 ms (its pace is what it
    // tests), until the server cuts it off.
    let mut drip = TcpStream::connect(&target).await.unwrap();
    drip.write_all(b"GET /healthz HTTP/1.1\r\nX-Drip: ")
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(200));
        while drip.write_all(b"a").await.is_ok() && !closed(&mut drip).await {
            pace.tick().await;
        }
    });

    let c = client();
    let mut took = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let r = c.get(format!("{}/healthz", s.base)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        took.push(start.elapsed());
    }
    took.sort();
    let rss_open = rss_mib(&s);
    println!(
        "healthz with 10,000 idle and trickling connections open: median {:?}, max {:?}; server RSS {rss_before:.0} MiB before, {rss_open:.0} MiB with them",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        rss_open < rss_before + 256.0,
        "RSS bounded: {rss_open:.0} MiB"
    );

    // Each is closed once its headers are late: the silent, the stalled, the quiet kept-alive
    // one and the dripping one. Each connection's end is awaited by a read of its own.
    let ends: Vec<_> = conns
        .into_iter()
        .map(|mut c| tokio::spawn(async move { while !ended(&mut c).await {} }))
        .collect();
    let all_closed = tokio::time::timeout(Duration::from_secs(20), async {
        for end in ends {
            end.await.unwrap();
        }
        dripping.await.unwrap();
    })
    .await;
    assert!(
        all_closed.is_ok(),
        "every slow connection is closed after the timeout"
    );
    assert_eq!(
        c.get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_trickling_body_gets_a_408_in_the_json_shape() {
    let (_dir, s) = server(&[]).await;
    let key = s.printed_key().unwrap();
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let head = format!(
        "POST /v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "answered within the body timeout");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
}

#[tokio::test]
async fn past_max_connections_newcomers_are_closed_and_open_connections_served() {
    let (_dir, s) = server(&[
        "--max-connections",
        "10",
        "--max-connections-per-client",
        "10",
        "--header-read-timeout",
        "60s",
    ])
    .await;
    // One kept-alive client connection, in use before the bound is reached.
    let kept = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let health = format!("{}/healthz", s.base);
    assert_eq!(kept.get(&health).send().await.unwrap().status(), 200);
    let mut idle = Vec::new();
    for _ in 0..9 {
        idle.push(TcpStream::connect(addr(&s)).await.unwrap());
    }
    // The eleventh connection is accepted and closed at once.
    let mut late = TcpStream::connect(addr(&s)).await.unwrap();
    let mut buf = [0u8; 16];
    // Generous: under a loaded test run the server may be slow to get to its accept queue.
    let n = tokio::time::timeout(Duration::from_secs(15), late.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // The connection already open keeps being served.
    assert_eq!(kept.get(&health).send().await.unwrap().status(), 200);
    // Once the idle ones go, there is room again.
    drop(idle);
    eventually(Duration::from_secs(5), "room again", || {
        answers(&health, 200)
    })
    .await;
    let m = crate::helpers::metrics_text(&s.base).await;
    assert!(m.contains("codmir_connections_refused_total"), "counted");
}

/// Opens `n` connections to `target` from `ip` and leaves them silent.
async fn hold(ip: &str, target: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        held.push(socket.connect(target.parse().unwrap()).await.unwrap());
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_past_its_share_cannot_make_healthz_fail() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (_dir, s) = server(&[
        "--max-connections",
        "40",
        "--max-connections-per-client",
        "10",
        "--header-read-timeout",
        "60s",
        "--metrics-listen",
        &metrics,
    ])
    .await;
    let target = addr(&s);
    // One client opens 60: it holds 10, and each one past them is closed at once.
    let mut flood = hold("127.0.0.3", &target, 60).await;
    let mut closed_at_once = 0;
    for c in &mut flood[10..] {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(15), c.read(&mut buf))
            .await
            .expect("closed promptly");
        if matches!(n, Ok(0) | Err(_)) {
            closed_at_once += 1;
        }
    }
    assert_eq!(closed_at_once, 50, "past its share of 10");
    let probe = crate::helpers::client_from("127.0.0.2");
    for _ in 0..30 {
        let r = probe
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // With the whole cap held (four clients of 10), the probes answer on the metrics listener.
    let _rest = [
        hold("127.0.0.4", &target, 10).await,
        hold("127.0.0.5", &target, 10).await,
        hold("127.0.0.6", &target, 10).await,
    ];
    eventually(Duration::from_secs(5), "the API at its cap", || async {
        probe
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .is_err()
    })
    .await;
    for path in ["/healthz", "/readyz"] {
        let r = probe
            .get(format!("http://{metrics}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} on --metrics-listen");
    }
}
