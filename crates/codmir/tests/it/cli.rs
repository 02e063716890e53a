//! The `codmir` binary as a new user runs it: `keys create`, then `serve`, then a request.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::eventually;

fn codmir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_codmir"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn keys_create_then_serve_then_a_request_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let out = codmir()
        .args([
            "keys",
            "create",
            "--database-url",
            &db,
            "--workspace",
            "acme",
            "--user",
            "alice",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("cmk_"), "{stdout}");

    let port = free_port();
    let mut server = codmir()
        .args([
            "serve",
            "--database-url",
            &db,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = crate::helpers::client();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(10), "server up", || {
        let c = client.clone();
        let url = format!("{base}/healthz");
        async move { c.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;

    // A second key for the same workspace works while the server runs.
    let out = codmir()
        .args([
            "keys",
            "create",
            "--database-url",
            &db,
            "--workspace",
            "acme",
            "--user",
            "bob",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let bob_key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();

    let r = client
        .post(format!("{base}/v1/projects"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "Main App"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let project: serde_json::Value = r.json().await.unwrap();
    let r = client
        .get(format!(
            "{base}/v1/projects/{}",
            project["id"].as_str().unwrap()
        ))
        .bearer_auth(&bob_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "same workspace, other user");
    let events: serde_json::Value = client
        .get(format!("{base}/v1/events"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["data"][0]["data"]["user"]["name"], "alice",
        "the key acts as its user"
    );

    // SIGTERM: graceful shutdown, exit 0.
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut server, Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[tokio::test]
async fn serve_prints_a_key_once_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    for run in 0..2 {
        let port = free_port();
        let mut server = codmir()
            .args([
                "serve",
                "--database-url",
                &db,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = crate::helpers::client();
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(10), "server up", || {
            let c = client.clone();
            let url = format!("{base}/healthz");
            async move { c.get(url).send().await.is_ok() }
        })
        .await;
        let pid = server.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert_eq!(
            wait_exit(&mut server, Duration::from_secs(15)).and_then(|s| s.code()),
            Some(0)
        );
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut stdout).unwrap();
        if run == 0 {
            assert!(stdout.contains("will not be shown again"), "{stdout}");
            let key = stdout.lines().find(|l| l.starts_with("cmk_")).unwrap();
            let r = client
                .get(format!("{base}/v1/projects"))
                .bearer_auth(key)
                .send()
                .await;
            assert!(r.is_err(), "server is stopped");
        } else {
            assert!(
                !stdout.contains("cmk_"),
                "a key is printed only on the first start: {stdout}"
            );
        }
    }
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = codmir()
        .args(["serve", "--retry-schedule", "5x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("5x"));
    let out = codmir()
        .args([
            "keys",
            "create",
            "--database-url",
            "mysql://x",
            "--workspace",
            "a",
            "--user",
            "b",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite://"));
}

pub fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}
