//! How the server fails: a 5xx says nothing internal to the client and is logged once, with
//! its cause chain, by the API's logging layer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{client, eventually};
use crate::process::ServerProcess;

#[tokio::test]
async fn a_corrupt_row_is_a_500_that_says_nothing_internal_and_is_logged_once_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("codmir.db");
    let server = ServerProcess::start(&format!("sqlite://{}", path.display()), &[]).await;
    let key = server.printed_key().expect("the first start prints a key");
    let c = client();
    let post = |path: &str, body: Value| {
        c.post(format!("{}{path}", server.base))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let project: Value = post("/v1/projects", json!({"name": "P"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let project = project["id"].as_str().unwrap();
    let ticket: Value = post(
        &format!("/v1/projects/{project}/tickets"),
        json!({"title": "T"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let ticket = ticket["id"].as_str().unwrap();
    // A value this codmir cannot read, written behind its back.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute("UPDATE tickets SET status = 'on_fire'", [])
        .unwrap();
    drop(conn);

    let r = c
        .get(format!("{}/v1/tickets/{ticket}", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "internal_error");
    assert_eq!(body["error"]["message"], "internal error");
    for internal in ["on_fire", "tickets.status", "database"] {
        assert!(
            !text.contains(internal),
            "the body says `{internal}`: {text}"
        );
    }

    let failed = || {
        server
            .stderr()
            .into_iter()
            .filter(|l| l.contains("request failed"))
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(5), "the 500 is logged", || async {
        !failed().is_empty()
    })
    .await;
    let lines = failed();
    assert_eq!(lines.len(), 1, "logged once: {lines:#?}");
    let line = &lines[0];
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("status=500"), "{line}");
    assert!(
        line.contains(&format!("path=/v1/tickets/{ticket}")),
        "{line}"
    );
    // The cause chain: the store's error, as the same on both backends (`Corrupt`).
    assert!(
        line.contains("a row in the database is invalid: tickets.status"),
        "{line}"
    );
    assert!(line.contains("on_fire"), "{line}");
}
