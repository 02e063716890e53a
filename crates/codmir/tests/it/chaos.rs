//! The fault-injection run: a mixed workload (creates, updates, comments) through two
//! PostgreSQL nodes — and one SQLite node in its own run — to receivers that fail at random,
//! while faults are injected (kill -9 of a node, PostgreSQL restarted, a node partitioned from
//! it, the receiver down), then the history is checked against the promise:
//!
//! - every event in the event log (and so every acknowledged change) reached every matching
//!   webhook, answered 2xx by the receiver, at least once;
//! - no delivery is recorded `succeeded` unless the receiver answered one of its requests 2xx;
//! - attempt numbers run 1, 2, … per delivery;
//! - every duplicate (a second 2xx for the same event and webhook) is explained by an attempt
//!   in flight at a fault.
//!
//! Short runs are in `.ci/run`; a longer one:
//! `CODMIR_CHAOS_ROUNDS=40 CODMIR_CHAOS_SEED=7 cargo test -p codmir --test it chaos -- --ignored --nocapture`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{all_pages, answers, client, eventually, get_at};
use crate::own_pg::OwnPostgres;
use crate::process::ServerProcess;
use crate::proxy::Proxy;

/// What a delivery attempt may take, and how long a node holds a delivery (the flags the
/// nodes run with): they bound how far from a fault a duplicate can be.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const LEASE: Duration = Duration::from_secs(4);
/// The retry schedule (about 50 s in all) outlasts any run of faults a delivery can meet here,
/// so a delivery that ends `failed` is a broken promise, not a short schedule.
const FLAGS: [&str; 9] = [
    "--allow-private-targets",
    "--api-rate-limit",
    "off",
    "--retry-schedule",
    "200ms,500ms,1s,2s,3s,5s,5s,5s,5s,5s,5s,5s,5s,5s",
    "--request-timeout",
    "2s",
    "--delivery-lease",
    "4s",
];

/// A small deterministic generator: a run is repeated with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("CODMIR_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        | 1
}

/// One request the receiver got, and what it answered.
#[derive(Clone)]
struct Arrival {
    webhook: String,
    event: String,
    status: u16,
    at: Instant,
}

/// A receiver that fails one request in ten at random, and every request while it is down.
#[derive(Clone, Default)]
struct FlakyReceiver {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    down: Arc<AtomicBool>,
    draws: Arc<AtomicU64>,
}

async fn receive(State(r): State<FlakyReceiver>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    let text = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let draw = r
        .draws
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> 60;
    let status = if r.down.load(Ordering::Relaxed) {
        503
    } else if draw < 2 {
        500
    } else {
        200
    };
    r.arrivals.lock().unwrap().push(Arrival {
        webhook: text("x-codmir-webhook-id"),
        event: text("webhook-id"),
        status,
        at: Instant::now(),
    });
    StatusCode::from_u16(status).unwrap()
}

impl FlakyReceiver {
    /// Answers every request 503 until it has refused `refusals` of them.
    async fn down_until(&self, refusals: usize) {
        let refused = || {
            self.arrivals
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.status == 503)
                .count()
        };
        let before = refused();
        self.down.store(true, Ordering::Relaxed);
        eventually(Duration::from_secs(30), "the outage met", || async {
            refused() >= before + refusals
        })
        .await;
        self.down.store(false, Ordering::Relaxed);
    }

    async fn start() -> (Self, String) {
        let me = Self::default();
        let app = axum::Router::new().fallback(receive).with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (me, url)
    }
}

/// A fault, when it began and ended.
#[derive(Debug, Clone)]
struct Fault {
    kind: &'static str,
    start: Instant,
    end: Instant,
}

/// The nodes the load goes to (a killed node is replaced by a new process on a new port).
type Nodes = Arc<Mutex<Vec<String>>>;

/// What the workload was told.
#[derive(Default)]
struct Acknowledged {
    tickets: Vec<String>,
    comments: Vec<String>,
    /// Answers that break the promise of the API under faults (a 500, a 2xx without an id).
    bad_answers: Vec<String>,
}

/// Three clients making tickets, updates and comments on random nodes until `stop`.
fn workload(
    nodes: Nodes,
    key: String,
    project: String,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (Arc<Mutex<Acknowledged>>, Vec<tokio::task::JoinHandle<()>>) {
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let tasks = (0..3u64)
        .map(|worker| {
            let (nodes, key, project, stop, acked) = (
                nodes.clone(),
                key.clone(),
                project.clone(),
                stop.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                let c = client();
                let mut rng = Rng(seed.wrapping_add(worker * 7919) | 1);
                // About 25 requests a second per client: enough to have work in flight at
                // every fault, few enough to check every delivery afterwards.
                let mut pace = tokio::time::interval(Duration::from_millis(30));
                while !stop.load(Ordering::Relaxed) {
                    let base = {
                        let nodes = nodes.lock().unwrap();
                        nodes[rng.below(nodes.len() as u64) as usize].clone()
                    };
                    let known = {
                        let a = acked.lock().unwrap();
                        (!a.tickets.is_empty())
                            .then(|| a.tickets[rng.below(a.tickets.len() as u64) as usize].clone())
                    };
                    let op = rng.below(4);
                    let (method, path, body) = match (&known, op) {
                        (Some(t), 0) => (
                            "POST",
                            format!("/v1/tickets/{t}/comments"),
                            json!({"body": "a comment"}),
                        ),
                        (Some(t), 1) => {
                            let status = ["open", "in_progress", "resolved"][rng.below(3) as usize];
                            (
                                "PATCH",
                                format!("/v1/tickets/{t}"),
                                json!({"status": status, "priority": "high"}),
                            )
                        }
                        _ => (
                            "POST",
                            format!("/v1/projects/{project}/tickets"),
                            json!({"title": "chaos"}),
                        ),
                    };
                    let req = c
                        .request(method.parse().unwrap(), format!("{base}{path}"))
                        .bearer_auth(&key)
                        .json(&body)
                        .timeout(Duration::from_secs(30));
                    pace.tick().await;
                    let Ok(r) = req.send().await else {
                        // A node killed mid-request: no answer, nothing promised.
                        continue;
                    };
                    let status = r.status().as_u16();
                    let answer: Value = r.json().await.unwrap_or(Value::Null);
                    let mut a = acked.lock().unwrap();
                    match status {
                        200 | 201 if path.ends_with("/comments") => a
                            .comments
                            .push(answer["id"].as_str().unwrap_or_default().to_owned()),
                        201 => a
                            .tickets
                            .push(answer["id"].as_str().unwrap_or_default().to_owned()),
                        200 => {}
                        // Refusals that say why: the database away or full, two updates of one
                        // ticket racing.
                        409 | 503 | 507 if answer["error"]["code"].is_string() => {}
                        other => a
                            .bad_answers
                            .push(format!("{method} {path}: {other} {answer}")),
                    }
                }
            })
        })
        .collect();
    (acked, tasks)
}

/// The history's verdict.
#[derive(Debug, Default)]
struct Report {
    violations: Vec<String>,
    events: usize,
    deliveries: usize,
    arrivals: usize,
    duplicates: usize,
    /// Duplicates by the kind of fault that explains them.
    explained_by: HashMap<&'static str, usize>,
}

impl Report {
    /// The first violations and how many there are, for a failure message.
    fn first_violations(&self) -> String {
        let first: Vec<&str> = self
            .violations
            .iter()
            .take(20)
            .map(String::as_str)
            .collect();
        format!("{} violations, first: {first:#?}", self.violations.len())
    }
}

/// Checks the history once the system is quiet: every claim of the module's header.
async fn check(
    base: &str,
    key: &str,
    webhooks: &[(String, &str)],
    acked: &Acknowledged,
    arrivals: &[Arrival],
    faults: &[Fault],
) -> Report {
    let mut report = Report {
        arrivals: arrivals.len(),
        ..Report::default()
    };
    let v = &mut report.violations;
    v.extend(acked.bad_answers.iter().cloned());
    let events = all_pages(base, key, "/v1/events?order=asc").await;
    report.events = events.len();
    let mut created = HashSet::new();
    for e in &events {
        for part in ["ticket", "comment"] {
            if e["type"] == format!("{part}.created") {
                created.insert(
                    e["data"][part]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    }
    for id in acked.tickets.iter().chain(&acked.comments) {
        if !created.contains(id) {
            v.push(format!("{id} was acknowledged but has no event"));
        }
    }
    let mut ok: HashMap<(&str, &str), Vec<Instant>> = HashMap::new();
    for a in arrivals.iter().filter(|a| (200..300).contains(&a.status)) {
        ok.entry((a.webhook.as_str(), a.event.as_str()))
            .or_default()
            .push(a.at);
    }
    for (webhook, pattern) in webhooks {
        let matches = |t: &str| {
            *pattern == "*"
                || pattern
                    .strip_suffix(".*")
                    .is_some_and(|f| t.starts_with(&format!("{f}.")))
        };
        for e in events
            .iter()
            .filter(|e| matches(e["type"].as_str().unwrap_or_default()))
        {
            let id = e["id"].as_str().unwrap_or_default();
            if !ok.contains_key(&(webhook.as_str(), id)) {
                // Where it stands, to say why.
                let d = get_at(
                    base,
                    key,
                    &format!("/v1/deliveries?event_id={id}&webhook_id={webhook}"),
                )
                .await;
                let tries: Vec<u16> = arrivals
                    .iter()
                    .filter(|a| a.event == id && a.webhook == *webhook)
                    .map(|a| a.status)
                    .collect();
                v.push(format!(
                    "{id} ({}) never answered 2xx at {webhook}; received {tries:?}; deliveries {}",
                    e["type"], d["data"]
                ));
            }
        }
        for d in all_pages(base, key, &format!("/v1/webhooks/{webhook}/deliveries")).await {
            report.deliveries += 1;
            let (id, event) = (
                d["id"].as_str().unwrap_or_default(),
                d["event_id"].as_str().unwrap_or_default(),
            );
            if d["status"] == "succeeded" && !ok.contains_key(&(webhook.as_str(), event)) {
                v.push(format!(
                    "{id} is recorded succeeded but the receiver never answered it 2xx"
                ));
            }
            let full = get_at(base, key, &format!("/v1/deliveries/{id}")).await;
            let numbers: Vec<u64> = full["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["attempt"].as_u64())
                .collect();
            let mut sorted = numbers.clone();
            sorted.sort();
            if sorted != (1..=numbers.len() as u64).collect::<Vec<_>>() {
                v.push(format!("{id}: attempt numbers {numbers:?}"));
            }
        }
    }
    // A duplicate is explained when its first 2xx was in flight at a fault: started at most a
    // request timeout before it began, or before its lease (plus a poll) ran out after it ended.
    for ((webhook, event), times) in &ok {
        if times.len() < 2 {
            continue;
        }
        report.duplicates += times.len() - 1;
        let first = times.iter().min().copied().unwrap_or_else(Instant::now);
        let explained = faults.iter().find(|f| {
            first + REQUEST_TIMEOUT + Duration::from_secs(1) >= f.start
                && first <= f.end + LEASE + Duration::from_secs(2)
        });
        if let Some(f) = explained {
            *report.explained_by.entry(f.kind).or_default() += times.len() - 1;
        } else {
            v.push(format!(
                "{event} answered 2xx {} times at {webhook}, no fault near the first",
                times.len()
            ));
        }
    }
    report
}

/// Waits until no delivery of `webhooks` is pending.
async fn quiet(base: &str, key: &str, webhooks: &[(String, &str)]) {
    eventually(Duration::from_secs(90), "no delivery pending", || async {
        for (w, _) in webhooks {
            let path = format!("/v1/webhooks/{w}/deliveries?status=pending");
            if !all_pages(base, key, &path).await.is_empty() {
                return false;
            }
        }
        true
    })
    .await;
}

/// Waits until the workload has had `more` requests acknowledged: load is flowing again.
async fn flowing(acked: &Mutex<Acknowledged>, more: usize) {
    let count = || {
        let a = acked.lock().unwrap();
        a.tickets.len() + a.comments.len()
    };
    let before = count();
    eventually(Duration::from_secs(60), "the load flowing", || async {
        count() >= before + more
    })
    .await;
}

/// The two webhooks of a run (`*` and `ticket.*`) to `url`, and a project, through `server`.
async fn setup(
    server: &ServerProcess,
    key: &str,
    url: &str,
) -> (Vec<(String, &'static str)>, String) {
    let mut webhooks = Vec::new();
    for pattern in ["*", "ticket.*"] {
        let w = server
            .post(
                key,
                "/v1/webhooks",
                json!({"url": url, "events": [pattern]}),
            )
            .await;
        webhooks.push((w["id"].as_str().unwrap().to_owned(), pattern));
    }
    let project = server
        .post(key, "/v1/projects", json!({"name": "Chaos"}))
        .await;
    (webhooks, project["id"].as_str().unwrap().to_owned())
}

/// Stops the load, waits until nothing is pending, and checks the history through `base`.
async fn finish(
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    (base, key): (&str, &str),
    webhooks: &[(String, &str)],
    acked: &Mutex<Acknowledged>,
    receiver: &FlakyReceiver,
    faults: &[Fault],
) -> (Report, Acknowledged) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    quiet(base, key, webhooks).await;
    let arrivals = receiver.arrivals.lock().unwrap().clone();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let report = check(base, key, webhooks, &acked, &arrivals, faults).await;
    (report, acked)
}

/// Two nodes on one PostgreSQL, each behind a proxy that can cut it off.
struct Cluster {
    pg: OwnPostgres,
    proxies: Vec<Proxy>,
    servers: Vec<ServerProcess>,
    nodes: Nodes,
    env: Vec<(&'static str, &'static str)>,
}

impl Cluster {
    async fn start(env: Vec<(&'static str, &'static str)>) -> Self {
        let pg = OwnPostgres::start();
        let mut proxies = Vec::new();
        for _ in 0..2 {
            proxies.push(Proxy::start(pg.port).await);
        }
        let mut c = Self {
            pg,
            proxies,
            servers: Vec::new(),
            nodes: Nodes::default(),
            env,
        };
        for i in 0..2 {
            let s = c.node(i).await;
            c.servers.push(s);
        }
        *c.nodes.lock().unwrap() = c.servers.iter().map(|s| s.base.clone()).collect();
        c
    }

    /// Waits until node `i` is not ready (503): it has noticed its database is gone.
    async fn refusing(&self, i: usize) {
        let url = format!("{}/readyz", self.servers[i].base);
        eventually(
            Duration::from_secs(30),
            "a node sees its database gone",
            || answers(&url, 503),
        )
        .await;
    }

    async fn node(&self, i: usize) -> ServerProcess {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.proxies[i].port
        );
        ServerProcess::start_with_env(&url, &FLAGS, &self.env).await
    }

    async fn inject(&mut self, kind: &'static str, i: usize, receiver: &FlakyReceiver) -> Fault {
        let start = Instant::now();
        match kind {
            "kill -9 a node" => {
                // `stop_with` returns once the process is gone: it starts again at once.
                self.servers[i].stop_with("KILL");
                self.servers[i] = self.node(i).await;
                *self.nodes.lock().unwrap() = self.servers.iter().map(|s| s.base.clone()).collect();
            }
            "restart PostgreSQL" => {
                self.pg.stop_with(if i == 0 { "fast" } else { "immediate" });
                // Down until a node has noticed: its writes are refused.
                self.refusing(i).await;
                self.pg.restart();
            }
            "partition a node" => {
                let at_cut = crate::own_pg::leased(&self.pg.url()).await;
                self.proxies[i].cut();
                // Cut off until the other node has taken over what this one held.
                crate::own_pg::taken_over(&self.pg.url(), &at_cut).await;
                self.proxies[i].heal();
            }
            _ => receiver.down_until(10).await,
        }
        Fault {
            kind,
            start,
            end: Instant::now(),
        }
    }
}

const KINDS: [&str; 4] = [
    "kill -9 a node",
    "restart PostgreSQL",
    "partition a node",
    "receiver down",
];

/// Runs `rounds` faults (the first four: one of each) under load and checks the history.
async fn run_on_postgres(rounds: usize, env: Vec<(&'static str, &'static str)>) -> Report {
    let mut rng = Rng(seed());
    let mut cluster = Cluster::start(env).await;
    let key = cluster.servers[0].printed_key().unwrap();
    let (receiver, url) = FlakyReceiver::start().await;
    let (webhooks, project) = setup(&cluster.servers[1], &key, &url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, tasks) = workload(
        cluster.nodes.clone(),
        key.clone(),
        project,
        stop.clone(),
        seed(),
    );
    let mut faults = Vec::new();
    flowing(&acked, 20).await;
    for round in 0..rounds {
        let kind = KINDS
            .get(round)
            .copied()
            .unwrap_or_else(|| KINDS[rng.below(4) as usize]);
        let fault = cluster.inject(kind, rng.below(2) as usize, &receiver).await;
        eprintln!(
            "chaos round {round}: {kind} for {:?}",
            fault.end - fault.start
        );
        faults.push(fault);
        flowing(&acked, 20 + rng.below(40) as usize).await;
    }
    let base = cluster.nodes.lock().unwrap()[0].clone();
    let (report, acked) = finish(
        &stop,
        tasks,
        (&base, &key),
        &webhooks,
        &acked,
        &receiver,
        &faults,
    )
    .await;
    eprintln!(
        "chaos: seed {}, {rounds} faults, {} tickets and {} comments acknowledged, {} events, {} deliveries, {} requests received, {} duplicates, {} violations",
        seed(),
        acked.tickets.len(),
        acked.comments.len(),
        report.events,
        report.deliveries,
        report.arrivals,
        report.duplicates,
        report.violations.len()
    );
    report
}

fn rounds() -> usize {
    std::env::var("CODMIR_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(KINDS.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's initdb and pg_ctl; run `cargo test -- --ignored` (CI does)"]
async fn chaos_on_two_postgresql_nodes_keeps_every_promise() {
    let report = run_on_postgres(rounds(), Vec::new()).await;
    assert!(
        report.violations.is_empty(),
        "{}",
        report.first_violations()
    );
    assert!(
        report.events > 50,
        "too little happened: {} events",
        report.events
    );
}

/// The checker is itself tested: a sender that records one attempt in ten as a 200 without
/// making the request (a test build's switch) must be caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's initdb and pg_ctl; run `cargo test -- --ignored` (CI does)"]
async fn chaos_checker_catches_a_sender_that_records_success_without_sending() {
    let report = run_on_postgres(0, vec![("CODMIR_FAULT_SUCCEED_WITHOUT_SENDING", "1")]).await;
    let caught = report
        .violations
        .iter()
        .any(|v| v.contains("never answered it 2xx"));
    assert!(
        caught,
        "the checker missed the broken sender: {}",
        report.first_violations()
    );
}

/// One SQLite node: killed with -9 and restarted, and the receiver down, under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a heavy load run that would crowd the parallel suite; `cargo test -- --ignored` (CI does)"]
async fn chaos_on_one_sqlite_node_keeps_every_promise() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("chaos.db").display());
    let mut server = ServerProcess::start(&db, &FLAGS).await;
    let key = server.printed_key().unwrap();
    let (receiver, url) = FlakyReceiver::start().await;
    let (webhooks, project) = setup(&server, &key, &url).await;
    let nodes: Nodes = Arc::new(Mutex::new(vec![server.base.clone()]));
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, tasks) = workload(nodes.clone(), key.clone(), project, stop.clone(), seed());
    let mut faults = Vec::new();
    for kind in ["kill -9 the node", "receiver down", "kill -9 the node"] {
        flowing(&acked, 40).await;
        let start = Instant::now();
        if kind == "receiver down" {
            receiver.down_until(10).await;
        } else {
            server.stop_with("KILL");
            server = ServerProcess::start(&db, &FLAGS).await;
            *nodes.lock().unwrap() = vec![server.base.clone()];
        }
        faults.push(Fault {
            kind,
            start,
            end: Instant::now(),
        });
    }
    flowing(&acked, 20).await;
    let (report, _) = finish(
        &stop,
        tasks,
        (&server.base, &key),
        &webhooks,
        &acked,
        &receiver,
        &faults,
    )
    .await;
    eprintln!(
        "chaos on SQLite: {} events, {} deliveries, {} requests received, {} duplicates {:?}, {} violations",
        report.events,
        report.deliveries,
        report.arrivals,
        report.duplicates,
        report.explained_by,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "{}",
        report.first_violations()
    );
    assert!(
        report.events > 50,
        "too little happened: {} events",
        report.events
    );
}
