//! Webhook secrets at rest: sealed under the master key in the database (never found in its
//! files), the key file made 0600 on a new SQLite database, PostgreSQL refused without a
//! key, and a master-key rotation while the server runs that re-seals every secret while
//! deliveries keep verifying.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{PgDb, contract_verifies, eventually};
use crate::process::{ServerProcess, codmir, finish_within};
use crate::receiver::{Hit, Receiver};

const SECRET: &str = "your-webhook-secret-kept-at-rest";

fn verifies(hit: &Hit) -> bool {
    contract_verifies(hit, SECRET)
}

/// A webhook with [`SECRET`] to a new receiver, and a project: returns the receiver once it
/// has the delivery.
async fn first_delivery(s: &ServerProcess, key: &str) -> Receiver {
    let rx = Receiver::start().await;
    s.post(
        key,
        "/v1/webhooks",
        json!({"url": rx.url, "events": ["project.created"], "secret": SECRET}),
    )
    .await;
    s.post(key, "/v1/projects", json!({"name": "P"})).await;
    eventually(Duration::from_secs(10), "delivered", || async {
        rx.count() == 1
    })
    .await;
    rx
}

/// Whether `needle` occurs in the bytes of any of `files`.
fn found_in(files: &[std::path::PathBuf], needle: &str) -> bool {
    files.iter().any(|f| {
        std::fs::read(f)
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_in_the_sqlite_files_and_a_rotation_reseals_them_live() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let db = format!("sqlite://{}", path.display());
    // The most the server logs, so that no secret hides in a debug line.
    let s = ServerProcess::start_with_env(
        &db,
        &["--allow-private-targets"],
        &[("CODMIR_LOG", "debug")],
    )
    .await;
    let key = s.printed_key().unwrap();
    let key_file = dir.path().join("c.db.key");
    assert!(
        s.stderr().iter().any(|l| l.contains("made a master key")),
        "said on stderr: {:#?}",
        s.stderr()
    );
    assert!(
        !s.stderr().iter().any(|l| l.contains("git work tree")),
        "not in a git work tree"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let rx = first_delivery(&s, &key).await;
    assert!(
        verifies(&rx.hits()[0]),
        "signed with the secret, opened from its seal"
    );

    let files: Vec<_> = ["c.db", "c.db-wal", "c.db-shm"]
        .iter()
        .map(|f| dir.path().join(f))
        .collect();
    assert!(
        !found_in(&files, SECRET),
        "the secret is nowhere in the database files"
    );
    let raw = || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row("SELECT secret FROM webhooks", [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    let before = raw();
    assert!(before.starts_with("enc1:"), "{before}");

    // Rotate while the server runs: a new key first in the file, every secret sealed again.
    let mut rotate = codmir();
    rotate.args(["secrets", "rotate-master-key", "--database-url", &db]);
    let out = finish_within(rotate, Duration::from_secs(20)).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("1 webhooks"), "{}", out.stdout);
    let lines = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(lines.lines().count(), 2, "the new key and the old one");
    let after = raw();
    assert!(after.starts_with("enc1:") && after != before);
    assert_ne!(
        after.split(':').nth(1),
        before.split(':').nth(1),
        "under another key"
    );

    // The running server meets the new key, reads the file again, and still signs right.
    s.post(&key, "/v1/projects", json!({"name": "After"})).await;
    eventually(
        Duration::from_secs(10),
        "delivered after the rotation",
        || async { rx.count() == 2 },
    )
    .await;
    assert!(rx.hits().iter().all(verifies));
    assert!(!found_in(&files, SECRET));

    // A create sent with an Idempotency-Key keeps its answer for a retry, and that answer
    // shows the secret: it is sealed too, and the retry still gets it.
    const KEPT: &str = "a-secret-kept-for-a-retry-0987";
    // A custom header's value may be a credential: sealed like the secrets.
    const TOKEN: &str = "Bearer a-header-credential-5678";
    let create = || async {
        let r = crate::helpers::client()
            .post(format!("{}/v1/webhooks", s.base))
            .bearer_auth(&key)
            .header("idempotency-key", "create-with-a-secret")
            .json(
                &json!({"url": rx.url, "events": ["project.created"], "secret": KEPT,
                           "headers": {"Authorization": TOKEN}}),
            )
            .send()
            .await
            .unwrap();
        let replayed = r.headers().contains_key("idempotent-replayed");
        (
            r.status().as_u16(),
            replayed,
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, replayed, first) = create().await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = create().await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again["secret"], KEPT, "the retry gets the answer whole");
    let signing = first["signing_secret"].as_str().unwrap().to_owned();
    for secret in [KEPT, signing.as_str(), &signing["whsec_".len()..], TOKEN] {
        assert!(
            !found_in(&files, secret),
            "{secret} is in the database files"
        );
    }
    // Nor in any answer after the one that created it, nor in the log: the webhook, the
    // lists, the delivery log with its attempts' headers (the header value is write-only).
    s.post(&key, "/v1/projects", json!({"name": "Shown"})).await;
    let webhook = first["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(10),
        "delivered with the header",
        || async { rx.hits().iter().any(|h| h.header("authorization") == TOKEN) },
    )
    .await;
    let get = |path: String| {
        let (url, key) = (format!("{}{path}", s.base), key.clone());
        async move {
            let r = crate::helpers::client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let deliveries: serde_json::Value =
        serde_json::from_str(&get(format!("/v1/deliveries?webhook_id={webhook}")).await).unwrap();
    let mut answers = vec![
        get(format!("/v1/webhooks/{webhook}")).await,
        get("/v1/webhooks".into()).await,
    ];
    for d in deliveries["data"].as_array().unwrap() {
        answers.push(get(format!("/v1/deliveries/{}", d["id"].as_str().unwrap())).await);
    }
    assert!(
        answers.iter().any(|a| a.contains("********5678")),
        "shown masked: {answers:?}"
    );
    let logged = s.stderr().join("\n");
    for secret in [
        KEPT,
        signing.as_str(),
        &signing["whsec_".len()..],
        TOKEN,
        "a-header-credential",
    ] {
        for answer in &answers {
            assert!(!answer.contains(secret), "{secret} in {answer}");
        }
        assert!(!logged.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL on 127.0.0.1:5432; run `cargo test -- --ignored` (CI does)"]
async fn postgresql_nodes_need_the_key_and_store_secrets_sealed() {
    let pg = PgDb::create().await;
    let mut keyless = codmir();
    keyless.env_remove("CODMIR_MASTER_KEY").args([
        "serve",
        "--database-url",
        &pg.url,
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = finish_within(keyless, Duration::from_secs(20)).expect("refuses at once");
    assert!(!out.status.success());
    assert!(out.stderr.contains("CODMIR_MASTER_KEY"), "{}", out.stderr);

    let s = ServerProcess::start(&pg.url, &["--allow-private-targets"]).await;
    let key = s.printed_key().unwrap();
    let rx = first_delivery(&s, &key).await;
    assert!(verifies(&rx.hits()[0]));
    let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT secret FROM webhooks", &[])
        .await
        .unwrap();
    let stored: String = row.get(0);
    assert!(
        stored.starts_with("enc1:") && !stored.contains(SECRET),
        "{stored}"
    );
}

/// `serve` makes its master key file inside a git work tree (the README's first command, run
/// in a clone): it warns that the file must stay out of the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_made_inside_a_git_work_tree_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let db = format!("sqlite://{}", dir.path().join("data/c.db").display());
    let s = ServerProcess::start(&db, &[]).await;
    let warned = s
        .stderr()
        .into_iter()
        .find(|l| l.contains("inside a git work tree"));
    let warned = warned.unwrap_or_else(|| panic!("warned: {:#?}", s.stderr()));
    assert!(warned.contains("*.db.key"), "{warned}");
    let tree = dir.path().canonicalize().unwrap();
    assert!(
        warned.contains(&*tree.to_string_lossy())
            || warned.contains(&*dir.path().to_string_lossy()),
        "names the work tree: {warned}"
    );
}
