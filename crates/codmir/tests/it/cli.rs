//! The `codmir` binary as a new user runs it: `keys create`, then `serve`, then a request.

use crate::helpers::client;
use crate::process::{ServerProcess, codmir, create_key};

#[tokio::test]
async fn keys_create_then_serve_then_a_request_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let key = create_key(&db, "acme", "alice");
    let mut server = ServerProcess::start(&db, &[]).await;
    assert_eq!(
        server.printed_key(),
        None,
        "the database already has a workspace"
    );
    // A second key for the same workspace, made while the server runs.
    let bob_key = create_key(&db, "acme", "bob");

    let client = client();
    let base = &server.base;
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
    let events: serde_json::Value =
        crate::helpers::get_json(&format!("{base}/v1/events"), &key).await;
    assert_eq!(
        events["data"][0]["data"]["user"]["name"], "alice",
        "the key acts as its user"
    );

    // SIGTERM: graceful shutdown, exit 0.
    assert_eq!(server.stop_with("TERM").and_then(|s| s.code()), Some(0));
}

#[tokio::test]
async fn serve_prints_a_key_once_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let mut first = ServerProcess::start(&db, &[]).await;
    let stdout = first.stdout().join("\n");
    assert!(stdout.contains("will not be shown again"), "{stdout}");
    let key = first.printed_key().unwrap();
    let r = client()
        .get(format!("{}/v1/projects", first.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // SIGINT: graceful shutdown, exit 0.
    assert_eq!(first.stop_with("INT").and_then(|s| s.code()), Some(0));

    let second = ServerProcess::start(&db, &[]).await;
    assert_eq!(
        second.printed_key(),
        None,
        "a key is printed only on the first start"
    );
    let r = client()
        .get(format!("{}/v1/projects", second.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the key survives a restart");
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
