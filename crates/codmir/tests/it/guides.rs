//! The receiver guides of `docs/receiving.md` run as written, through the real interpreters
//! and the official `standardwebhooks` packages (npm and PyPI, installed on first use), against
//! the real server's deliveries: every event verified and processed once, a redelivery seen as
//! a duplicate, the contract's header accepted alone, and every bad request a 4xx, never a 5xx.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use codmir_core::sign::codmir_signature;
use serde_json::json;

use crate::helpers::{TestApp, client, eventually, spawn_app};
use crate::process::Spawned;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/receiving")
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}");
}

/// `npm ci` for the Node guide, once.
fn node_ready() {
    let dir = docs().join("node");
    if !dir.join("node_modules/standardwebhooks").exists() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            "npm ci in docs/receiving/node (Node.js and npm are needed)",
        );
    }
}

/// A venv under `target/` with the Python guides' requirements, made once; its python.
fn python_ready() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guides-venv");
    let python = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import standardwebhooks, flask, fastapi, uvicorn"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
        let requirements = docs().join("python/requirements.txt");
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "-q", "-r"])
                .arg(requirements),
            "pip install -r docs/receiving/python/requirements.txt",
        );
    }
    python
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Guide {
    name: &'static str,
    secret: String,
    url: String,
    webhook: String,
    proc: Spawned,
}

async fn start(app: &TestApp, name: &'static str, mut cmd: Command, port: u16) -> Guide {
    // A secret of the customer's own: `secret` and `signing_secret` are then different strings,
    // and each scheme must get the right one.
    let secret = format!("{name}-receivers-secret-0123");
    let url = format!("http://127.0.0.1:{port}/webhooks/codmir");
    let r = app
        .post(
            "/v1/webhooks",
            json!({"url": url, "events": ["*"], "secret": secret}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let signing = r.body["signing_secret"].as_str().unwrap();
    assert_ne!(signing, secret);
    cmd.env("PORT", port.to_string())
        .env("CODMIR_SECRET", &secret)
        .env("CODMIR_SIGNING_SECRET", signing);
    let proc = Spawned::start(cmd);
    eventually(
        Duration::from_secs(30),
        &format!("the {name} guide listens"),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    Guide {
        name,
        secret,
        url,
        webhook: r.body["id"].as_str().unwrap().to_owned(),
        proc,
    }
}

impl Guide {
    /// Whether the guide printed `line`. The Python servers' access logs share stdout with
    /// the worker thread's lines, so a line may carry another's text beside it.
    fn printed(&self, line: &str) -> bool {
        self.proc.stdout().iter().any(|l| l.contains(line))
    }

    async fn post(&self, headers: &[(&str, String)], body: &[u8]) -> u16 {
        let mut req = client().post(&self.url).body(body.to_vec());
        for (k, v) in headers {
            // As bytes: a value may hold non-ASCII (obs-text), as a hostile client sends it.
            let v = reqwest::header::HeaderValue::from_bytes(v.as_bytes()).unwrap();
            req = req.header(*k, v);
        }
        req.send().await.unwrap().status().as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js, npm, Python 3 and the guides' npm and PyPI packages; .ci/run installs them and runs it"]
async fn the_node_and_python_guides_verify_real_deliveries_and_refuse_bad_ones() {
    node_ready();
    let python = python_ready();
    let app = spawn_app().await;
    let mut node = Command::new("node");
    node.arg("server.js").current_dir(docs().join("node"));
    let mut flask = Command::new(&python);
    flask.arg("flask_app.py").current_dir(docs().join("python"));
    let mut fastapi = Command::new(&python);
    fastapi
        .args([
            "-m",
            "uvicorn",
            "fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
        ])
        .current_dir(docs().join("python"));
    let fastapi_port = free_port();
    fastapi.arg(fastapi_port.to_string());
    let guides = [
        start(&app, "node", node, free_port()).await,
        start(&app, "flask", flask, free_port()).await,
        start(&app, "fastapi", fastapi, fastapi_port).await,
    ];

    let project = app
        .post("/v1/projects", json!({"name": "Main App"}))
        .await
        .body;
    let p = project["id"].as_str().unwrap();
    let ticket = app
        .post(
            &format!("/v1/projects/{p}/tickets"),
            json!({"title": "Bug"}),
        )
        .await
        .body;
    let t = ticket["id"].as_str().unwrap();
    app.post(
        &format!("/v1/tickets/{t}/comments"),
        json!({"body": "Seen"}),
    )
    .await;
    let events = app.get("/v1/events?limit=10").await.body;
    let events: Vec<(String, String)> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(events.len(), 3);

    for g in &guides {
        // Each event delivered at the first attempt (the guide verified it and answered 2xx
        // at once) and processed once.
        let path = format!("/v1/webhooks/{}/deliveries?limit=100", g.webhook);
        eventually(
            Duration::from_secs(20),
            &format!("{}: 3 successes", g.name),
            || async {
                let list = app.get(&path).await.body;
                let done = list["data"].as_array().unwrap().iter();
                done.filter(|d| d["status"] == "succeeded" && d["attempt_count"] == 1)
                    .count()
                    == 3
            },
        )
        .await;
        eventually(
            Duration::from_secs(10),
            &format!("{}: processed", g.name),
            || async {
                events
                    .iter()
                    .all(|(id, ty)| g.printed(&format!("processed {id} {ty}")))
            },
        )
        .await;
        // A redelivery is the same event again: answered 2xx, not processed twice.
        let list = app.get(&path).await.body;
        let first = list["data"][0]["id"].as_str().unwrap().to_owned();
        let event_id = list["data"][0]["event_id"].as_str().unwrap().to_owned();
        let r = app
            .post(&format!("/v1/deliveries/{first}/redeliver"), json!({}))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        eventually(
            Duration::from_secs(10),
            &format!("{}: duplicate", g.name),
            || async { g.printed(&format!("duplicate {event_id}")) },
        )
        .await;
        let processed = g
            .proc
            .stdout()
            .iter()
            .filter(|l| l.starts_with(&format!("processed {event_id}")))
            .count();
        assert_eq!(processed, 1, "{}", g.name);

        // The contract's header alone is accepted; every bad request is a 4xx.
        let body = client()
            .get(format!("{}/v1/events/{event_id}", app.base))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let json_type = ("content-type", "application/json".to_owned());
        let contract = ("x-codmir-signature", codmir_signature(&g.secret, &body));
        let status = g.post(&[json_type.clone(), contract], &body).await;
        assert_eq!(
            status, 200,
            "{}: the contract's signature alone (a duplicate by now)",
            g.name
        );
        let wrong = (
            "x-codmir-signature",
            codmir_signature("not-the-secret-at-all", &body),
        );
        let standard_garbage = [
            json_type.clone(),
            ("webhook-id", event_id.clone()),
            ("webhook-timestamp", "1".into()),
            ("webhook-signature", "garbage".into()),
        ];
        let junk = b"{not json".to_vec();
        let not_json = ("x-codmir-signature", codmir_signature(&g.secret, &junk));
        let right = codmir_signature(&g.secret, &body);
        let truncated = ("x-codmir-signature", right[..right.len() - 4].to_owned());
        let non_ascii = (
            "x-codmir-signature",
            format!("{}é", &right[..right.len() - 1]),
        );
        let cases: [(&str, Vec<(&str, String)>); 7] = [
            ("no signature", vec![json_type.clone()]),
            (
                "a short signature",
                vec![json_type.clone(), ("x-codmir-signature", "sha256=".into())],
            ),
            ("a truncated signature", vec![json_type.clone(), truncated]),
            ("a non-ASCII signature", vec![json_type.clone(), non_ascii]),
            ("a wrong signature", vec![json_type.clone(), wrong]),
            ("a malformed webhook-signature", standard_garbage.to_vec()),
            (
                "a signed body that is not an event",
                vec![json_type.clone(), not_json],
            ),
        ];
        for (what, headers) in cases {
            let sent = if what.contains("not an event") {
                &junk[..]
            } else {
                &body[..]
            };
            let status = g.post(&headers, sent).await;
            assert!((400..500).contains(&status), "{}: {what}: {status}", g.name);
        }
    }
}

/// The fenced code blocks of `file` in `lang` that are whole receivers (they make their app:
/// `express()`, `Flask(`), as printed. Fragments (a handler shown in place of another's) are
/// not programs on their own.
fn receivers_in(file: &str, lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file),
    )
    .unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, fence) if fence == format!("```{lang}") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
        .into_iter()
        .filter(|b| b.contains("express()") || b.contains("Flask("))
        .collect()
}

/// The README's handler shown "in place of the one above" (the rotation's), spliced into its
/// receiver in place of its handler: the program a reader makes of it.
fn rotation_receiver() -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = text
        .find("in place of the one above")
        .expect("the rotation's handler");
    let block = &text[start..];
    let block = &block[block.find("```js\n").unwrap() + 6..];
    let handler = &block[..block.find("```").unwrap()];
    let receiver = &receivers_in("README.md", "js")[0];
    let from = receiver.find("app.post(").unwrap();
    let to = from + receiver[from..].find("\n});\n").unwrap() + "\n});\n".len();
    format!("{}{handler}{}", &receiver[..from], &receiver[to..])
}

/// The README's receivers run as printed (Node as CommonJS with the guide's packages; Python
/// with Flask), against the real server's deliveries: a real event is verified and answered
/// 2xx, and a truncated, a non-ASCII and a missing signature each get a 4xx, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js with npm, and Python 3 with venv and pip (the guides' packages); .ci/run installs them"]
async fn the_readmes_receivers_run_as_printed() {
    node_ready();
    let python = python_ready();
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, flask) = (
        receivers_in("README.md", "js"),
        receivers_in("README.md", "python"),
    );
    assert_eq!((node.len(), flask.len()), (1, 1), "the README's receivers");
    let js = dir.path().join("receiver.cjs");
    std::fs::write(&js, &node[0]).unwrap();
    let py = dir.path().join("receiver.py");
    std::fs::write(&py, &flask[0]).unwrap();

    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(&js)
        .env("NODE_PATH", docs().join("node/node_modules"));
    let node = start(&app, "readme-node", cmd, port).await;
    // The rotation's handler, with the new secret (the one `start` registers) and an old one.
    let rotating = dir.path().join("rotating.cjs");
    std::fs::write(&rotating, rotation_receiver()).unwrap();
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(&rotating)
        .env("NODE_PATH", docs().join("node/node_modules"))
        .env("CODMIR_SECRET_NEW", "readme-rotating-receivers-secret-0123")
        .env("CODMIR_SECRET_OLD", "an-older-secret-of-the-webhook");
    let rotating = start(&app, "readme-rotating", cmd, port).await;
    let older = codmir_signature("an-older-secret-of-the-webhook", b"{}");
    let status = rotating
        .post(
            &[
                ("content-type", "application/json".to_owned()),
                ("x-codmir-signature", older),
            ],
            b"{}",
        )
        .await;
    assert_eq!(status, 200, "the old secret is accepted during the window");
    let port = free_port();
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "flask", "--app"])
        .arg(&py)
        .args(["run", "--port", &port.to_string()]);
    let flask = start(&app, "readme-flask", cmd, port).await;

    app.post("/v1/projects", json!({"name": "Snippets"})).await;
    for g in [&node, &rotating, &flask] {
        let path = format!("/v1/webhooks/{}/deliveries", g.webhook);
        eventually(Duration::from_secs(30), "delivered", || async {
            app.list(&path)
                .await
                .first()
                .is_some_and(|d| d["status"] == "succeeded")
        })
        .await;
        let body = br#"{"id":"evt_x","type":"project.created"}"#;
        let right = codmir_signature(&g.secret, body);
        let json_type = ("content-type", "application/json".to_owned());
        for (what, signature) in [
            ("truncated", right[..right.len() - 4].to_owned()),
            ("non-ASCII", format!("{}é", &right[..right.len() - 1])),
            ("missing", String::new()),
        ] {
            let status = g
                .post(
                    &[json_type.clone(), ("x-codmir-signature", signature)],
                    body,
                )
                .await;
            assert!(
                (400..500).contains(&status),
                "{}: a {what} signature: {status}",
                g.name
            );
        }
        let status = g
            .post(&[json_type.clone(), ("x-codmir-signature", right)], body)
            .await;
        assert!(
            (200..300).contains(&status),
            "{}: the right signature: {status}",
            g.name
        );
    }
}
