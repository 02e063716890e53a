//! What a newcomer meets from a fresh clone: the one-time key is never printed to nobody and
//! a lost one has a way back, one server per SQLite file, `keys create` says which database
//! it used, a second signal cuts shutdown short, and an attempt cut off by shutdown is in the
//! log with the next attempt numbered after it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{eventually, get_json};
use crate::process::{ServerProcess, codmir, create_key, finish_within};
use crate::receiver::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(10);

fn sqlite(dir: &tempfile::TempDir, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.path().join(name);
    let url = format!("sqlite://{}", path.display());
    (path, url)
}

#[tokio::test]
async fn a_server_that_cannot_listen_creates_no_database_and_prints_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = sqlite(&dir, "c.db");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let mut serve = codmir();
    serve.args(["serve", "--database-url", &db, "--listen", &listen]);
    let out = finish_within(serve, WAIT).expect("refuses at once");
    assert!(!out.status.success());
    assert!(out.stderr.contains("listening on"), "{}", out.stderr);
    assert!(
        !out.stdout.contains("cmk_"),
        "no key printed: {}",
        out.stdout
    );
    assert!(!path.exists(), "no database made");
    drop(taken);
    // The next start, with the port free, is a first start: it prints the key.
    let s = ServerProcess::start(&db, &[]).await;
    assert!(s.printed_key().is_some());
}

#[tokio::test]
async fn a_database_whose_keys_were_never_used_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = sqlite(&dir, "c.db");
    let mut first = ServerProcess::start(&db, &[]).await;
    let key = first.printed_key().unwrap();
    assert_eq!(first.stop_with("TERM").and_then(|s| s.code()), Some(0));

    // The key was lost: the next start says how to make another, with this database's path.
    let mut second = ServerProcess::start(&db, &[]).await;
    let hint = format!(
        "codmir keys create --database-url sqlite://{} --workspace default --user admin",
        path.display()
    );
    eventually(WAIT, "the hint", || async {
        second.stderr().iter().any(|l| l.contains(&hint))
    })
    .await;
    // Once a key is used, the hint is not given again.
    get_json(&format!("{}/v1/me", second.base), &key).await;
    eventually(WAIT, "the key's use recorded", || async {
        let mut keys = codmir();
        keys.args(["keys", "list", "--json", "--database-url", &db]);
        let out = finish_within(keys, WAIT).unwrap();
        let list: Value = serde_json::from_str(&out.stdout).unwrap();
        list["data"][0]["last_used_at"].is_string()
    })
    .await;
    assert_eq!(second.stop_with("TERM").and_then(|s| s.code()), Some(0));
    let mut third = ServerProcess::start(&db, &[]).await;
    // The third start logged its "serving" line after the point where the hint would be.
    eventually(WAIT, "started", || async {
        third
            .stderr()
            .iter()
            .any(|l| l.contains("codmir is serving"))
    })
    .await;
    assert!(
        !third.stderr().iter().any(|l| l.contains("keys create")),
        "{:#?}",
        third.stderr()
    );
    third.stop_with("TERM");
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused_while_keys_create_works() {
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = sqlite(&dir, "c.db");
    let first = ServerProcess::start(&db, &[]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut second = codmir();
    second.args(["serve", "--database-url", &db, "--listen", &port]);
    let out = finish_within(second, WAIT).expect("the second server refuses, it does not serve");
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&format!(
            "another codmir server is already serving {}",
            path.display()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("PostgreSQL"), "says what to do instead");
    // Keys can still be made beside the running server, and it takes them.
    let key = create_key(&db, "acme", "ops");
    let me = get_json(&format!("{}/v1/me", first.base), &key).await;
    assert_eq!(me["user"]["name"], "ops", "{me}");
}

#[tokio::test]
async fn keys_create_says_which_database_it_opened_and_whether_it_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let mut c = codmir();
        c.current_dir(dir.path())
            .env_remove("CODMIR_DATABASE_URL")
            .args(["keys", "create", "--workspace", "w", "--user", "u"]);
        finish_within(c, WAIT).unwrap()
    };
    let expected = std::fs::canonicalize(dir.path()).unwrap().join("codmir.db");
    let first = run();
    assert!(first.status.success(), "{}", first.stderr);
    assert!(
        first.stderr.contains(&format!(
            "created a new database sqlite://{}",
            expected.display()
        )),
        "an absolute path, and that it is new: {}",
        first.stderr
    );
    assert!(first.stdout.lines().last().unwrap().starts_with("cmk_"));
    let second = run();
    assert!(
        second
            .stderr
            .contains(&format!("using database sqlite://{}", expected.display())),
        "{}",
        second.stderr
    );
}

/// A server whose one delivery hangs at the receiver, with the attempt in flight.
async fn hanging_delivery(db: &str, grace: &str) -> (ServerProcess, Receiver, String, String) {
    let rx = Receiver::start().await;
    rx.always(Reply::Hang);
    let flags = [
        "--allow-private-targets",
        "--shutdown-grace",
        grace,
        "--request-timeout",
        "60s",
        "--delivery-lease",
        "90s",
    ];
    let s = ServerProcess::start(db, &flags).await;
    let key = s.printed_key().unwrap();
    let w = s
        .post(
            &key,
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["project.created"]}),
        )
        .await;
    s.post(&key, "/v1/projects", json!({"name": "P"})).await;
    eventually(WAIT, "the attempt in flight", || async { rx.count() == 1 }).await;
    let webhook = w["id"].as_str().unwrap().to_owned();
    (s, rx, key, webhook)
}

/// After a restart on `db`, the delivery goes out again as attempt 2, and the log holds the
/// interrupted attempt 1 and the successful attempt 2.
async fn resumed_as_attempt_two(db: &str, rx: &Receiver, key: &str, webhook: &str) {
    rx.always(Reply::Status(200));
    let s = ServerProcess::start(db, &["--allow-private-targets"]).await;
    eventually(WAIT, "the second attempt", || async { rx.count() == 2 }).await;
    let hits = rx.hits();
    let numbers: Vec<&str> = hits.iter().map(|h| h.header("x-codmir-attempt")).collect();
    assert_eq!(numbers, ["1", "2"], "the receiver saw attempt 1, then 2");
    let list = get_json(&format!("{}/v1/webhooks/{webhook}/deliveries", s.base), key).await;
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/deliveries/{id}", s.base);
    eventually(WAIT, "succeeded", || async {
        get_json(&url, key).await["status"] == "succeeded"
    })
    .await;
    let detail = get_json(&url, key).await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted: the server shut down"),
        "{detail}"
    );
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["status_code"], 200);
}

#[tokio::test]
async fn an_attempt_cut_off_when_the_grace_ends_is_logged_and_the_next_is_attempt_two() {
    let dir = tempfile::tempdir().unwrap();
    let (_, db) = sqlite(&dir, "c.db");
    let (mut s, rx, key, webhook) = hanging_delivery(&db, "300ms").await;
    assert_eq!(s.stop_with("TERM").and_then(|s| s.code()), Some(0));
    resumed_as_attempt_two(&db, &rx, &key, &webhook).await;
}

#[tokio::test]
async fn a_second_signal_cuts_the_shutdown_wait_short() {
    let dir = tempfile::tempdir().unwrap();
    let (_, db) = sqlite(&dir, "c.db");
    // A grace far longer than the test's patience: only the second signal can end it.
    let (mut s, rx, key, webhook) = hanging_delivery(&db, "10m").await;
    let pid = s.child.id().to_string();
    let kill = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    kill("-TERM");
    eventually(WAIT, "the graceful wait begins", || async {
        s.stderr().iter().any(|l| l.contains("shutting down"))
    })
    .await;
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "still waiting for the attempt"
    );
    let status = s.stop_with("INT");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the second signal ends the wait: {:#?}",
        s.stderr()
    );
    assert!(
        s.stderr().iter().any(|l| l.contains("second signal")),
        "{:#?}",
        s.stderr()
    );
    resumed_as_attempt_two(&db, &rx, &key, &webhook).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, db) = sqlite(&dir, "c.db");
    let s = ServerProcess::start(&db, &[]).await;
    let key = s.printed_key().unwrap();
    get_json(&format!("{}/v1/me", s.base), &key).await;
    for file in [path.clone(), dir.path().join("c.db-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
    }
}
