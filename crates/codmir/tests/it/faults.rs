//! Faults under load, with the promise checked on the receiver's side: every event whose API
//! request got a 2xx reaches the webhook at least once, a delivery is `succeeded` only when
//! the receiver saw it, attempt numbers only grow, and during the fault the API answers in
//! the JSON error shape, promptly, with `Retry-After`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{all_pages, client, eventually, get_at};
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
        // The load's pace, about 100 requests a second.
        let mut pace = tokio::time::interval(Duration::from_millis(10));
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
            pace.tick().await;
        }
    });
    (seen, task)
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
    // Nothing `succeeded` that the receiver did not see; attempt numbers 1, 2, … per delivery.
    // The arrivals are read once nothing is pending, so that a delivery of an event the load
    // did not track (a write acknowledged while the test polled for recovery) is seen too.
    eventually(
        Duration::from_secs(60),
        "no delivery left pending",
        || async {
            all_pages(
                base,
                key,
                &format!("/v1/webhooks/{webhook}/deliveries?status=pending"),
            )
            .await
            .is_empty()
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
    for d in all_pages(base, key, &format!("/v1/webhooks/{webhook}/deliveries")).await {
        assert_eq!(d["status"], "succeeded", "{d}");
        let event = d["event_id"].as_str().unwrap();
        assert!(
            per_event.contains_key(event),
            "succeeded but never received: {d}"
        );
        let full = get_at(
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
        // The load meets the outage too before the database comes back.
        let refused = || seen.lock().unwrap().refused.len();
        let before = refused();
        eventually(
            Duration::from_secs(10),
            "the load refused while down",
            || async { refused() > before },
        )
        .await;
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
        // What the load met during the outages: 503s that say why, never a 500, promptly: the
        // database unreachable, or (a commit whose answer the stop cut off, with nobody to ask
        // while it is down) the outcome unknown.
        assert_eq!(*status, 503, "{body}");
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            matches!(code, "database_unavailable" | "outcome_unknown"),
            "{body}"
        );
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

/// A small filesystem of the test's own (tmpfs, as root), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem refuses more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// POSTs a ticket titled `title`; the status, `Retry-After` present, and the body.
async fn create_ticket(base: &str, key: &str, project: &str, title: &str) -> (u16, bool, Value) {
    let r = client()
        .post(format!("{base}/v1/projects/{project}/tickets"))
        .bearer_auth(key)
        .json(&json!({"title": title}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    (status, retry_after, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (mounts a small tmpfs to fill); .ci/run runs it"]
async fn a_full_sqlite_disk_refuses_writes_keeps_outcomes_and_recovers_without_a_restart() {
    let disk = SmallDisk::mount("8m").expect("a tmpfs mounted (needs root)");
    let db_path = disk.path().join("codmir.db");
    let db = format!("sqlite://{}", db_path.display());
    let flags = [
        "--allow-private-targets",
        "--retry-schedule",
        "200ms,500ms,1s",
    ];
    let s = ServerProcess::start(&db, &flags).await;
    let key = s.printed_key().unwrap();
    let rx = Receiver::start().await;
    let webhook = s
        .post(
            &key,
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["ticket.*"]}),
        )
        .await;
    let webhook = webhook["id"].as_str().unwrap().to_owned();
    let project = s.post(&key, "/v1/projects", json!({"name": "Disk"})).await;
    let p = project["id"].as_str().unwrap().to_owned();

    // An attempt in flight when the disk fills: the receiver answers it 1.5 s later, when its
    // outcome can no longer be written.
    rx.script([crate::receiver::Reply::Delay(1500, 200)]);
    let (status, _, ticket) = create_ticket(&s.base, &key, &p, "before").await;
    assert_eq!(status, 201);
    let before = ticket["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the attempt in flight", || async {
        rx.count() == 1
    })
    .await;
    let filler = disk.fill();

    // Writes are refused with a clear answer, never a 5xx that says nothing or a 2xx for
    // something not stored; reads still answer.
    let mut refused = 0;
    let mut stored = Vec::new();
    for i in 0..50 {
        let title = format!("during {i} {}", "x".repeat(400));
        let (status, retry_after, body) = create_ticket(&s.base, &key, &p, &title).await;
        match status {
            201 => stored.push(body["id"].as_str().unwrap().to_owned()),
            507 => {
                assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
                assert!(retry_after);
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(refused > 0, "the full disk refused no write");
    // The node says it is not ready, and why: a load balancer sends writes elsewhere.
    let ready = client()
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["writes"], "disk_full", "{ready}");
    assert_eq!(ready["database"], "ok", "reads still answer: {ready}");
    assert!(
        ready["reason"].as_str().unwrap().contains("disk is full"),
        "{ready}"
    );
    let read = get_at(&s.base, &key, &format!("/v1/tickets/{before}")).await;
    assert_eq!(read["title"], "before", "{read}");
    // The outcome of the attempt in flight could not be written: it is kept and retried.
    eventually(Duration::from_secs(10), "the outcome kept", || async {
        s.stderr()
            .iter()
            .any(|l| l.contains("could not record attempts; new attempts wait"))
    })
    .await;

    // Space comes back: the server carries on, the kept outcome is written, writes succeed.
    std::fs::remove_file(filler).unwrap();
    let accepted = std::sync::Mutex::new(Vec::new());
    eventually(Duration::from_secs(30), "writes accepted again", || async {
        let (status, _, body) = create_ticket(&s.base, &key, &p, "after").await;
        if status == 201 {
            accepted
                .lock()
                .unwrap()
                .push(body["id"].as_str().unwrap().to_owned());
        }
        status == 201
    })
    .await;
    stored.extend(accepted.into_inner().unwrap());
    let ready = client()
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready again once a write commits");
    let (status, _, body) = create_ticket(&s.base, &key, &p, "after").await;
    assert_eq!(status, 201, "{body}");
    stored.push(body["id"].as_str().unwrap().to_owned());
    let mut acknowledged = vec![before];
    acknowledged.extend(stored);
    let duplicates = check_history(&s.base, &key, &webhook, &rx, &acknowledged).await;
    assert_eq!(
        duplicates, 0,
        "the outcome kept through the full disk was recorded, not sent again"
    );
    let logged = s.stderr();
    assert!(!logged.iter().any(|l| l.contains("panicked")), "{logged:?}");
    drop(s);
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's initdb and pg_ctl; run `cargo test -- --ignored` (CI does)"]
async fn a_node_cut_off_from_postgresql_is_taken_over_and_fenced_when_it_returns() {
    let pg = OwnPostgres::start();
    let proxy = crate::proxy::Proxy::start(pg.port).await;
    let flags = [
        "--allow-private-targets",
        "--retry-schedule",
        "200ms,500ms,1s,2s,2s,2s",
        "--request-timeout",
        "2s",
        "--delivery-lease",
        "4s",
    ];
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let a = ServerProcess::start(&via_proxy, &flags).await;
    let b = ServerProcess::start(&pg.url(), &flags).await;
    let key = a.printed_key().unwrap();
    let rx = Receiver::start().await;
    // Slow answers: node A always has attempts in flight.
    rx.always(crate::receiver::Reply::Delay(200, 200));
    let webhook = b
        .post(
            &key,
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["*"]}),
        )
        .await;
    let webhook = webhook["id"].as_str().unwrap().to_owned();
    let project = b.post(&key, "/v1/projects", json!({"name": "Load"})).await;
    let project = project["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, task) = load(
        vec![a.base.clone()],
        key.clone(),
        project.clone(),
        stop.clone(),
    );
    let acknowledged = || seen.lock().unwrap().acknowledged.len();
    eventually(Duration::from_secs(30), "load flowing", || async {
        acknowledged() > 30
    })
    .await;

    let at_cut = crate::own_pg::leased(&pg.url()).await;
    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    // The cut-off node answers promptly that its database is unreachable, within the README's
    // 15 s, also when many requests wait at once: more than the batchers and the pool take in
    // one go (checked units: tickets; units of their own: projects, some with an
    // `Idempotency-Key`, whose claim is one more unit of work).
    let burst: Vec<_> = (0..32)
        .map(|i| {
            let (base, key, project) = (a.base.clone(), key.clone(), project.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let request = match i % 4 {
                    0 => client()
                        .post(format!("{base}/v1/projects"))
                        .json(&json!({"name": "while cut off"})),
                    1 => client()
                        .post(format!("{base}/v1/projects"))
                        .header("idempotency-key", format!("cut-{i}"))
                        .json(&json!({"name": "while cut off"})),
                    _ => client()
                        .post(format!("{base}/v1/projects/{project}/tickets"))
                        .json(&json!({"title": "while cut off"})),
                };
                let r = request.bearer_auth(&key).send().await.unwrap();
                let took = started.elapsed();
                (r.status().as_u16(), took, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for answer in burst {
        let (status, took, body) = answer.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(took < Duration::from_secs(15), "answered after {took:?}");
        assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    }
    // The other node still serves.
    let r = client()
        .get(format!("{}/v1/webhooks/{webhook}", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The partition is held until B has taken A's deliveries over (A's leases ran out).
    crate::own_pg::taken_over(&pg.url(), &at_cut).await;
    proxy.heal();
    let after = acknowledged();
    eventually(Duration::from_secs(40), "A takes writes again", || async {
        acknowledged() > after + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (status, body, _, took) in &seen.refused {
        assert_eq!(*status, 503, "{body}");
        assert!(*took < Duration::from_secs(15), "a request took {took:?}");
    }
    let duplicates = check_history(&b.base, &key, &webhook, &rx, &seen.acknowledged).await;
    // Each duplicate is an attempt A made and could not record: in flight at the cut (at most
    // the request timeout before it), or started before A noticed its writes stalled (1 s).
    let hits = rx.hits();
    let mut first: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    for h in &hits {
        let id = h.header("webhook-id").to_owned();
        first.entry(id.clone()).or_insert(h.at);
        *count.entry(id).or_default() += 1;
    }
    let window = (
        cut_at - Duration::from_secs(2),
        cut_at + Duration::from_millis(1500),
    );
    for (id, n) in &count {
        if *n > 1 {
            let at = first[id];
            assert!(
                at >= window.0 && at <= window.1,
                "{id} sent {n} times, first {:?} from the cut",
                at - window.0
            );
        }
    }
    eprintln!(
        "acknowledged {}, refused {}, received {}, duplicates {duplicates}",
        seen.acknowledged.len(),
        seen.refused.len(),
        hits.len()
    );
    // A's attempts that B took over are logged by A as not recorded, naming its lease, once
    // A reaches the database again: not as failures it will retry.
    if duplicates > 0 {
        eventually(
            Duration::from_secs(20),
            "A's fenced outcomes logged",
            || async {
                a.stderr().iter().any(|l| {
                    l.contains("delivery attempt not recorded") && l.contains("lease_owner")
                })
            },
        )
        .await;
    }
    assert!(
        !a.stderr().iter().any(|l| l.contains("will retry")),
        "no line promises a retry"
    );
}
