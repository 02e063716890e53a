//! `spawn_app()`: a real codmir server on 127.0.0.1:0 with a fresh SQLite database.

use std::time::Duration;

use codmir_core::time::Timestamp;
use codmir_core::tracker::{UserName, WorkspaceName};
use codmir_server::{Config, Store, ops};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::receiver::Hit;

pub(crate) struct TestApp {
    pub base: String,
    pub key: String,
    pub store: Store,
    pub client: reqwest::Client,
    pub db_url: String,
    /// The server's delivery engine, for what tests observe of it.
    pub engine: codmir_server::delivery::Engine,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub dir: tempfile::TempDir,
    /// Dropped last: the database outlives the server that uses it.
    pub pg: Option<PgDb>,
}

/// A config for tests: private targets allowed (receivers are on loopback), short retries.
pub(crate) fn test_config() -> Config {
    Config {
        allow_private_targets: true,
        retry_schedule: codmir_core::retry::RetrySchedule::parse("100ms,200ms").unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

/// The backend the integration tests run on: SQLite unless `CODMIR_TEST_BACKEND=postgres`.
pub(crate) fn on_postgres() -> bool {
    std::env::var("CODMIR_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

pub(crate) async fn spawn_app_with(config: Config) -> TestApp {
    codmir_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    if on_postgres() {
        let pg = PgDb::create().await;
        let mut app = spawn_on(dir, pg.url.clone(), config).await;
        app.pg = Some(pg);
        return app;
    }
    let db_url = format!("sqlite://{}", dir.path().join("codmir.db").display());
    spawn_on(dir, db_url, config).await
}

/// A fresh PostgreSQL database for one test, dropped when the test is done.
pub(crate) struct PgDb {
    pub url: String,
    name: String,
}

/// The server the PostgreSQL tests use (`CODMIR_TEST_POSTGRES_URL`, without a database name).
fn postgres_server() -> String {
    std::env::var("CODMIR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&format!("{}/postgres", postgres_server()), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is reachable (start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)");
    tokio::spawn(connection);
    client
}

impl PgDb {
    pub(crate) async fn create() -> Self {
        let mut suffix = [0u8; 8];
        codmir_core::id::random_bytes(&mut suffix);
        let name = format!("codmir_test_{}", hex::encode(suffix));
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self {
            url: format!("{}/{name}", postgres_server()),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async code: a thread of its own with a small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// Starts a server on an existing database directory (for restart tests).
pub(crate) async fn spawn_on(dir: tempfile::TempDir, db_url: String, config: Config) -> TestApp {
    codmir_server::install_crypto_provider();
    let store = Store::open(&db_url).await.unwrap();
    let key = match store
        .write(|tx| Box::pin(async move { ops::bootstrap(tx, Timestamp::now()).await }))
        .await
        .unwrap()
    {
        Some(k) => k.key,
        None => new_key(&store, "default", "admin").await,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let running = codmir_server::start(listener, store.clone(), config, async {
        let _ = rx.await;
    })
    .unwrap();
    let engine = running.engine().clone();
    let server = tokio::spawn(running.wait());
    TestApp {
        base,
        key,
        store,
        client: client(),
        db_url,
        engine,
        shutdown: Some(tx),
        server: Some(server),
        dir,
        pg: None,
    }
}

pub(crate) async fn new_key(store: &Store, workspace: &str, user: &str) -> String {
    let ws = WorkspaceName::parse(workspace).unwrap();
    let user = UserName::parse(user).unwrap();
    store
        .write(move |tx| {
            Box::pin(async move { ops::create_key(tx, &ws, &user, Timestamp::now()).await })
        })
        .await
        .unwrap()
        .key
}

/// A JSON response: status and body.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            headers,
        }
    }

    /// Registers a webhook (`POST /v1/webhooks` must answer 201); the created webhook.
    pub(crate) async fn register(&self, body: Value) -> Value {
        let r = self.post("/v1/webhooks", body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body
    }

    /// The `data` of a GET that must answer 200.
    pub(crate) async fn list(&self, path: &str) -> Vec<Value> {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        r.body["data"].as_array().unwrap().clone()
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Some(&self.key), None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Resp {
        self.request("POST", path, Some(&self.key), Some(body))
            .await
    }

    pub(crate) async fn patch(&self, path: &str, body: Value) -> Resp {
        self.request("PATCH", path, Some(&self.key), Some(body))
            .await
    }

    pub(crate) async fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, Some(&self.key), None).await
    }

    /// Creates a project and returns its id.
    pub(crate) async fn project(&self, name: &str) -> String {
        let r = self.post("/v1/projects", json!({ "name": name })).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a ticket and returns it.
    pub(crate) async fn ticket(&self, project: &str, body: Value) -> Value {
        let r = self
            .post(&format!("/v1/projects/{project}/tickets"), body)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body
    }

    /// Every event of the workspace, oldest first.
    pub(crate) async fn events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/events?limit=100&cursor={c}"),
                None => "/v1/events?limit=100".to_owned(),
            };
            let r = self.get(&path).await;
            assert_eq!(r.status, 200, "{}", r.text);
            out.extend(r.body["data"].as_array().unwrap().iter().cloned());
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        out.reverse();
        out
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(mut self) -> Stopped {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        Stopped {
            dir: self.dir,
            db_url: self.db_url,
            pg: self.pg.take(),
        }
    }
}

/// What is left of a stopped server: its database.
pub(crate) struct Stopped {
    pub dir: tempfile::TempDir,
    pub db_url: String,
    pub pg: Option<PgDb>,
}

/// Waits until `check` holds, polling every 20 ms, for at most `timeout`.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client for tests (the TLS provider must be chosen before any client is built).
pub(crate) fn client() -> reqwest::Client {
    codmir_server::install_crypto_provider();
    reqwest::Client::new()
}

/// A client from this machine's address `ip` (any of 127.0.0.0/8), a new connection for each
/// request: limits that count per client address see it as its own client, and no kept
/// connection holds a slot between requests.
pub(crate) fn client_from(ip: &str) -> reqwest::Client {
    codmir_server::install_crypto_provider();
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Whether `GET url` is answered with `status` (a refused connection is not).
pub(crate) async fn answers(url: &str, status: u16) -> bool {
    client()
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status() == status)
}

/// `GET url` with a key; the JSON body.
pub(crate) async fn get_json(url: &str, key: &str) -> Value {
    client()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET base+path` with a key; the JSON body.
pub(crate) async fn get_at(base: &str, key: &str, path: &str) -> Value {
    get_json(&format!("{base}{path}"), key).await
}

/// Every item of the list at `path` (through `base`, with `key`), page after page.
pub(crate) async fn all_pages(base: &str, key: &str, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = get_at(base, key, &format!("{path}{sep}limit=100{cursor}")).await;
        out.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

/// Deliveries of the workspace's first webhook still pending, through the API at `base`.
pub(crate) async fn pending_deliveries(base: &str, key: &str) -> usize {
    let hooks = get_json(&format!("{base}/v1/webhooks"), key).await;
    let wh = hooks["data"][0]["id"].as_str().unwrap();
    let page = get_json(
        &format!("{base}/v1/webhooks/{wh}/deliveries?status=pending&limit=100"),
        key,
    )
    .await;
    page["data"].as_array().unwrap().len()
}

/// HMAC-SHA256 of `msg` under `key`, as both signature schemes compute it.
pub(crate) fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// How long a test waits for something that takes milliseconds when all is well.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The `id` of an API object.
/// Whether a delivery is settled: not `pending` (not attempted yet) nor `retrying`.
pub(crate) fn settled(delivery: &Value) -> bool {
    !matches!(delivery["status"].as_str(), Some("pending" | "retrying"))
}

pub(crate) fn id_of(object: &Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

/// The `id`s of a list's items, in order.
pub(crate) fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

/// The contract's `verifySignature`: `X-Codmir-Signature` is `sha256=` and the HMAC-SHA256 hex
/// of the body under the secret.
pub(crate) fn contract_verifies(hit: &Hit, secret: &str) -> bool {
    let expected = format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &hit.body)));
    hit.header("x-codmir-signature") == expected
}

/// Standard Webhooks: one of the space-separated `v1,` signatures is the HMAC of
/// `{id}.{timestamp}.{body}` under the base64 key of `whsec_…`.
pub(crate) fn standard_verifies(hit: &Hit, signing_secret: &str) -> bool {
    use base64::Engine;
    let base64 = base64::engine::general_purpose::STANDARD;
    let key = base64
        .decode(signing_secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut msg = format!(
        "{}.{}.",
        hit.header("webhook-id"),
        hit.header("webhook-timestamp")
    )
    .into_bytes();
    msg.extend_from_slice(&hit.body);
    let expected = format!("v1,{}", base64.encode(hmac(&key, &msg)));
    hit.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

/// The Prometheus text a server at `base` answers on `/metrics`.
pub(crate) async fn metrics_text(base: &str) -> String {
    let r = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "/metrics");
    r.text().await.unwrap()
}
