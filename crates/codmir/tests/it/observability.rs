//! What an operator sees: Prometheus metrics that move with the work, readiness, and log
//! lines that say what failed (in text and JSON) without secrets or colour codes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{client, eventually, get_json};
use crate::process::ServerProcess;
use crate::receiver::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(10);

/// A server process of its own (metrics are process-wide), on a fresh SQLite file.
async fn server(extra: &[&str]) -> (tempfile::TempDir, ServerProcess, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("codmir.db").display());
    let mut flags = vec!["--allow-private-targets"];
    flags.extend_from_slice(extra);
    let s = ServerProcess::start(&db, &flags).await;
    let key = s.printed_key().expect("a key on the first start");
    (dir, s, key)
}

async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let r = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value::*;
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Counter(v) | Gauge(v) | Untyped(v) => *v,
            Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_move_as_deliveries_succeed_fail_and_pile_up() {
    let (_dir, s, key) = server(&["--retry-schedule", "100ms,10m"]).await;
    let (ok, bad) = (Receiver::start().await, Receiver::start().await);
    bad.always(Reply::Status(503));
    s.post(
        &key,
        "/v1/webhooks",
        json!({"url": ok.url, "events": ["project.created"]}),
    )
    .await;
    s.post(
        &key,
        "/v1/webhooks",
        json!({"url": bad.url, "events": ["project.created"]}),
    )
    .await;
    let before = scrape(&s.base).await;
    assert_eq!(value(&before, "codmir_queue_pending", &[]), 0.0);
    for i in 0..5 {
        s.post(&key, "/v1/projects", json!({"name": format!("P{i}")}))
            .await;
    }
    // The bad webhook's deliveries fail twice and then wait ten minutes: they pile up.
    eventually(WAIT, "second attempts made", || async { bad.count() == 10 }).await;
    eventually(WAIT, "metrics caught up", || async {
        let m = scrape(&s.base).await;
        value(&m, "codmir_attempts_total", &[("class", "5xx")]) == 10.0
            && value(&m, "codmir_deliveries_total", &[("outcome", "succeeded")]) == 5.0
    })
    .await;
    let m = scrape(&s.base).await;
    assert_eq!(value(&m, "codmir_attempts_total", &[("class", "2xx")]), 5.0);
    assert_eq!(
        value(&m, "codmir_deliveries_total", &[("outcome", "retry")]),
        10.0
    );
    assert_eq!(
        value(&m, "codmir_deliveries_total", &[("outcome", "failed")]),
        0.0
    );
    assert_eq!(value(&m, "codmir_delivery_latency_seconds_count", &[]), 5.0);
    assert_eq!(
        value(&m, "codmir_attempt_duration_seconds_count", &[]),
        15.0
    );
    assert_eq!(
        value(&m, "codmir_queue_pending", &[]),
        5.0,
        "the five waiting retries"
    );
    assert_eq!(
        value(&m, "codmir_queue_due", &[]),
        0.0,
        "due in ten minutes"
    );
    assert_eq!(value(&m, "codmir_webhooks_disabled", &[]), 0.0);
    assert_eq!(
        value(
            &m,
            "codmir_http_requests_total",
            &[
                ("route", "/v1/projects"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        5.0
    );
    assert!(value(&m, "codmir_store_commits_total", &[("backend", "sqlite")]) >= 5.0);
    assert!(value(&m, "codmir_store_commit_batch_size_count", &[]) >= 5.0);
    // No ids or URLs as label values.
    for sample in &m.samples {
        for v in sample.labels.values() {
            assert!(
                !v.contains("_01") && !v.contains("http"),
                "{} has the label value {v}",
                sample.metric
            );
        }
    }
}

#[tokio::test]
async fn metrics_on_their_own_listener_are_not_on_the_api() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (_dir, s, _key) = server(&["--metrics-listen", &addr]).await;
    let api = client()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let m = scrape(&format!("http://{addr}")).await;
    assert!(!m.docs.is_empty());
}

#[tokio::test]
async fn readiness_says_ready_while_the_database_answers() {
    let (_dir, s, _key) = server(&[]).await;
    for path in ["/healthz", "/readyz"] {
        let r = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = get_json(&format!("{}/readyz", s.base), "").await;
    assert_eq!(
        r,
        json!({"status": "ready", "database": "ok", "writes": "ok", "engine": "running"})
    );
}

/// A failing receiver, one retry: two failed attempts and one failed delivery, logged in
/// `format`; returns the server's stderr, the secret and the key.
async fn failing_logs(format: &str) -> (Vec<String>, String, String, String) {
    let (_dir, s, key) = server(&["--retry-schedule", "50ms", "--log-format", format]).await;
    let rx = Receiver::start().await;
    rx.always(Reply::Status(500));
    let w = s
        .post(
            &key,
            "/v1/webhooks",
            json!({"url": format!("{}?token=hidden", rx.url), "events": ["project.created"],
               "secret": "a-very-secret-secret"}),
        )
        .await;
    s.post(&key, "/v1/projects", json!({"name": "P"})).await;
    eventually(WAIT, "the delivery failed and was logged", || async {
        s.stderr().iter().any(|l| l.contains("no retries left"))
    })
    .await;
    let webhook = w["id"].as_str().unwrap().to_owned();
    (s.stderr(), webhook, "a-very-secret-secret".into(), key)
}

fn assert_clean(lines: &[String], secret: &str, key: &str) {
    for l in lines {
        assert!(!l.contains(secret), "a secret in the log: {l}");
        assert!(!l.contains(key), "an API key in the log: {l}");
        assert!(!l.contains("token=hidden"), "a URL's query in the log: {l}");
        assert!(!l.contains('\u{1b}'), "an escape code in the log: {l:?}");
    }
}

#[tokio::test]
async fn failures_are_logged_once_each_with_their_ids_as_text() {
    let (lines, webhook, secret, key) = failing_logs("text").await;
    let attempts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("delivery attempt failed"))
        .collect();
    assert_eq!(attempts.len(), 2, "{lines:#?}");
    assert!(attempts.iter().all(|l| l.contains(" WARN ")));
    assert!(attempts[0].contains("attempt=1") && attempts[1].contains("attempt=2"));
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("no retries left"))
        .collect();
    assert_eq!(failed.len(), 1);
    let f = failed[0];
    assert!(f.contains("ERROR"), "{f}");
    for needle in [
        format!("webhook_id=\"{webhook}\""),
        "event_id=\"evt_".into(),
        "delivery_id=\"dlv_".into(),
        "status=\"500\"".into(),
    ] {
        assert!(f.contains(&needle), "{needle} in {f}");
    }
    assert_clean(&lines, &secret, &key);
}

#[tokio::test]
async fn failures_are_logged_once_each_with_their_ids_as_json() {
    let (lines, webhook, secret, key) = failing_logs("json").await;
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let attempts: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["message"] == "delivery attempt failed"
                || r["message"] == "delivery attempt failed; will retry"
        })
        .collect();
    assert_eq!(attempts.len(), 2, "{records:#?}");
    assert!(attempts.iter().all(|r| r["level"] == "WARN"));
    let failed: Vec<&Value> = records
        .iter()
        .filter(|r| r["message"] == "delivery failed: no retries left")
        .collect();
    assert_eq!(failed.len(), 1);
    let f = failed[0];
    assert_eq!(f["level"], "ERROR");
    assert_eq!(f["webhook_id"], webhook.as_str());
    assert_eq!(f["attempts"], 2);
    assert_eq!(f["status"], "500");
    assert!(f["delivery_id"].as_str().unwrap().starts_with("dlv_"));
    assert!(f["event_id"].as_str().unwrap().starts_with("evt_"));
    assert_clean(&lines, &secret, &key);
}

#[tokio::test]
#[ignore = "needs PostgreSQL's initdb and pg_ctl; run `cargo test -- --ignored` (CI does)"]
async fn readiness_turns_503_while_postgresql_is_down_and_back_when_it_returns() {
    let pg = crate::own_pg::OwnPostgres::start();
    let s = ServerProcess::start(&pg.url(), &[]).await;
    let status = |path: &'static str| {
        let url = format!("{}{path}", s.base);
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/readyz").await, 200);

    pg.stop();
    eventually(WAIT, "not ready while the database is down", || async {
        status("/readyz").await == 503
    })
    .await;
    let body = get_json(&format!("{}/readyz", s.base), "").await;
    assert_eq!(body["database"], "unreachable", "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["engine"], "running", "{body}");
    assert_eq!(status("/healthz").await, 200, "liveness is not readiness");

    pg.restart();
    eventually(Duration::from_secs(30), "ready again", || async {
        status("/readyz").await == 200
    })
    .await;
}
