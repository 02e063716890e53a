//! The `codmir` command line over the API, run as the real binary against a real server:
//! every command in both output modes (tables for people, `--json` for scripts), and the
//! failure paths with their exit codes. The tests run multi-threaded: a command runs to its
//! end on one worker thread while the test's receivers answer on the other.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{client, eventually};
use crate::process::{Finished, ServerProcess, codmir, finish_within};
use crate::receiver::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(20);

/// `codmir ARGS` with the server and key in the environment, as a script sets them.
fn run(s: &ServerProcess, key: &str, args: &[&str]) -> Finished {
    let mut c = codmir();
    c.env("CODMIR_URL", &s.base)
        .env("CODMIR_API_KEY", key)
        .env_remove("CODMIR_DATABASE_URL")
        .args(args);
    finish_within(c, WAIT).expect("the command ends")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(s: &ServerProcess, key: &str, args: &[&str]) -> String {
    let out = run(s, key, args);
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}\n{}",
        out.status.code(),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Runs a command that must fail with exit code `code`; returns what it printed.
fn fails(s: &ServerProcess, key: &str, args: &[&str], code: i32) -> Finished {
    let out = run(s, key, args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", out.stderr);
    out
}

/// Runs a command with `--json` that must succeed; returns what it printed, parsed.
fn ok_json(s: &ServerProcess, key: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(s, key, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

async fn server(dir: &tempfile::TempDir) -> (ServerProcess, String, String) {
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = ServerProcess::start(
        &db,
        &["--allow-private-targets", "--retry-schedule", "100ms"],
    )
    .await;
    let key = s.printed_key().unwrap();
    (s, key, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_commands_in_both_output_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (s, key, _) = server(&dir).await;
    let (rx, down) = (Receiver::start().await, Receiver::start().await);
    down.always(Reply::Status(503));

    let created = ok_json(
        &s,
        &key,
        &[
            "webhooks",
            "create",
            &rx.url,
            "--events",
            "project.created,ticket.*",
        ],
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["events"], json!(["project.created", "ticket.*"]));
    assert!(created["secret"].as_str().is_some_and(|s| !s.is_empty()));
    let human = ok(
        &s,
        &key,
        &[
            "webhooks",
            "create",
            &down.url,
            "--events",
            "*",
            "--secret",
            "s3cret-value-here",
        ],
    );
    assert!(human.contains("Created webhook wh_"), "{human}");
    assert!(
        human.contains("secret:") && human.contains("s3cret-value-here"),
        "shown once: {human}"
    );
    let down_id = human
        .split_whitespace()
        .find(|w| w.starts_with("wh_"))
        .unwrap()
        .trim_end_matches('.')
        .to_owned();

    let table = ok(&s, &key, &["webhooks", "list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("URL"),
        "{table}"
    );
    assert!(table.contains(&id) && table.contains(&down_id), "{table}");
    // Columns line up: every row's URL starts where the header's does.
    let column = header.find("URL").unwrap();
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l[column..].starts_with("http://")),
        "{table}"
    );
    assert_eq!(
        ok_json(&s, &key, &["webhooks", "list"])["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let shown = ok(&s, &key, &["webhooks", "show", &id]);
    assert!(shown.contains("url:") && shown.contains(&rx.url), "{shown}");
    for header in ["webhook-signature:", "X-Codmir-Signature:"] {
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with(header) && l.ends_with(" the current secret")),
            "{shown}"
        );
    }
    assert!(
        !shown.contains(created["secret"].as_str().unwrap()),
        "never the secret again"
    );
    assert_eq!(
        ok_json(&s, &key, &["webhooks", "show", &id])["id"],
        id.as_str()
    );

    let updated = ok_json(
        &s,
        &key,
        &["webhooks", "update", &id, "--events", "project.*"],
    );
    assert_eq!(updated["events"], json!(["project.*"]));
    let disabled = ok(&s, &key, &["webhooks", "disable", &id]);
    assert!(disabled.contains("is disabled"), "{disabled}");
    assert_eq!(
        ok_json(&s, &key, &["webhooks", "enable", &id])["enabled"],
        true
    );

    let ping = ok(&s, &key, &["webhooks", "ping", &id]);
    assert!(ping.contains("HTTP 200"), "{ping}");
    assert_eq!(
        ok_json(&s, &key, &["webhooks", "ping", &id])["succeeded"],
        true
    );
    let refused = fails(&s, &key, &["webhooks", "ping", &down_id], 1);
    assert!(refused.stdout.contains("HTTP 503"), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("did not accept the ping"),
        "{}",
        refused.stderr
    );

    let rotated = ok_json(
        &s,
        &key,
        &["webhooks", "rotate-secret", &id, "--grace-period", "1h"],
    );
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    assert_ne!(rotated["secret"], created["secret"]);
    let rotated = ok(
        &s,
        &key,
        &["webhooks", "rotate-secret", &id, "--grace-period", "0s"],
    );
    assert!(rotated.contains("Rotated the secret"), "{rotated}");
    // The zero-grace rotation left the first rotation's promise alone, and says so.
    assert!(
        rotated.contains("X-Codmir-Signature") && rotated.contains("the previous secret until"),
        "{rotated}"
    );
    let refused = fails(
        &s,
        &key,
        &["webhooks", "rotate-secret", &id, "--grace-period", "1h"],
        1,
    );
    assert!(
        refused.stderr.contains("rotate again after"),
        "{}",
        refused.stderr
    );

    let stats = ok(&s, &key, &["webhooks", "stats", &id]);
    assert!(
        stats.contains("success rate:") && stats.contains("latency:"),
        "{stats}"
    );
    assert!(stats.contains("test pings:"), "{stats}");
    let stats = ok_json(&s, &key, &["webhooks", "stats", &id, "--window", "24h"]);
    assert_eq!(stats["window"], "24h");
    // The two pings are tests, counted apart, not deliveries of record.
    assert_eq!(stats["pings"]["succeeded"], 2, "the two pings: {stats}");
    assert_eq!(stats["deliveries"]["total"], 0, "{stats}");
    assert_eq!(stats["success_rate"], Value::Null, "{stats}");

    let deleted = ok(&s, &key, &["webhooks", "delete", &down_id]);
    assert!(deleted.contains("Deleted webhook"), "{deleted}");
    assert_eq!(
        ok_json(&s, &key, &["webhooks", "delete", &id])["deleted"],
        true
    );
    let gone = fails(&s, &key, &["webhooks", "show", &id], 5);
    assert!(gone.stderr.contains("404 not_found"), "{}", gone.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_replay_events_and_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let (s, key, _) = server(&dir).await;
    let rx = Receiver::start().await;
    rx.script([Reply::Status(500), Reply::Status(500)]);
    let w = ok_json(
        &s,
        &key,
        &["webhooks", "create", &rx.url, "--events", "project.created"],
    );
    let webhook = w["id"].as_str().unwrap().to_owned();
    let since = codmir_core::time::Timestamp::now().to_rfc3339_millis();
    let r = client()
        .post(format!("{}/v1/projects", s.base))
        .bearer_auth(&key)
        .json(&json!({"name": "P"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Two 500s use the one retry up: the delivery fails.
    eventually(WAIT, "the delivery failed", || async {
        ok_json(&s, &key, &["deliveries", "list", "--status", "failed"])["data"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    })
    .await;
    let table = ok(&s, &key, &["deliveries", "list", "--webhook", &webhook]);
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(
        table.contains("failed") && table.contains("500"),
        "why it failed: {table}"
    );
    let list = ok_json(&s, &key, &["deliveries", "list", "--status", "failed"]);
    let delivery = list["data"][0]["id"].as_str().unwrap().to_owned();

    let shown = ok(&s, &key, &["deliveries", "show", &delivery]);
    assert!(
        shown.contains("ATTEMPT") && shown.lines().filter(|l| l.contains(" 500 ")).count() == 2,
        "{shown}"
    );
    let detail = ok_json(&s, &key, &["deliveries", "show", &delivery]);
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 2);

    let replayed = ok_json(
        &s,
        &key,
        &[
            "replay",
            "--webhook",
            &webhook,
            "--since",
            &since,
            "--status",
            "failed",
        ],
    );
    assert_eq!(replayed["queued"], 1, "{replayed}");
    let human = ok(
        &s,
        &key,
        &["replay", "--webhook", &webhook, "--since", &since],
    );
    assert!(human.starts_with("Queued "), "{human}");
    eventually(WAIT, "the replay settled", || async {
        ok_json(&s, &key, &["deliveries", "list", "--status", "pending"])["data"]
            .as_array()
            .is_some_and(|d| d.is_empty())
    })
    .await;
    let again = ok_json(&s, &key, &["deliveries", "redeliver", &delivery]);
    assert_eq!(again["redelivery_of"], delivery.as_str());
    let human = ok(&s, &key, &["deliveries", "redeliver", &delivery]);
    assert!(human.contains("Queued delivery dlv_"), "{human}");

    eventually(WAIT, "the receiver got the resends", || async {
        rx.count() >= 5
    })
    .await;

    let events = ok_json(&s, &key, &["events", "list", "--type", "project.*"]);
    let event = events["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(events["data"][0]["type"], "project.created");
    let table = ok(&s, &key, &["events", "list", "--limit", "5"]);
    assert!(
        table.contains(&event) && table.contains("project.created"),
        "{table}"
    );
    let shown: Value = serde_json::from_str(&ok(&s, &key, &["events", "show", &event])).unwrap();
    assert_eq!(shown["data"]["project"]["name"], "P", "{shown}");

    let catalog = ok(&s, &key, &["event-types"]);
    for t in [
        "ticket.created",
        "ticket.updated",
        "project.created",
        "comment.created",
    ] {
        assert!(catalog.contains(t), "{t}: {catalog}");
    }
    let catalog = ok_json(&s, &key, &["event-types"]);
    assert!(catalog["data"].as_array().unwrap().len() >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_went_wrong_and_exit_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let (s, key, _) = server(&dir).await;
    let wrong = run(&s, "cmk_0123456789abcdef_nope", &["webhooks", "list"]);
    assert_eq!(wrong.status.code(), Some(4), "{}", wrong.stderr);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("CODMIR_API_KEY"),
        "says what to check: {}",
        wrong.stderr
    );
    assert!(wrong.stdout.is_empty());
    let wrong = run(
        &s,
        "cmk_0123456789abcdef_nope",
        &["webhooks", "list", "--json"],
    );
    assert_eq!(wrong.status.code(), Some(4));

    let invalid = fails(
        &s,
        &key,
        &["webhooks", "create", "ftp://example.com", "--events", "*"],
        1,
    );
    assert!(
        invalid.stderr.contains("422 validation_failed"),
        "the API's error as it is: {}",
        invalid.stderr
    );
    assert!(invalid.stderr.contains("field `url`"), "{}", invalid.stderr);

    let mut nobody = codmir();
    nobody
        .env("CODMIR_API_KEY", &key)
        .args(["event-types", "--url", "http://127.0.0.1:9"]);
    let nobody = finish_within(nobody, WAIT).unwrap();
    assert_eq!(nobody.status.code(), Some(3), "{}", nobody.stderr);
    assert!(
        nobody
            .stderr
            .contains("cannot reach codmir at http://127.0.0.1:9"),
        "{}",
        nobody.stderr
    );

    let mut keyless = codmir();
    keyless
        .env_remove("CODMIR_API_KEY")
        .args(["event-types", "--url", &s.base]);
    let keyless = finish_within(keyless, WAIT).unwrap();
    assert_eq!(keyless.status.code(), Some(2));
    assert!(keyless.stderr.contains("--api-key"), "{}", keyless.stderr);

    let help = ok(&s, &key, &["webhooks", "create", "--help"]);
    assert!(
        help.contains("Example:") && help.contains("codmir webhooks create https://"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_list_and_revoke_on_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (s, admin, db) = server(&dir).await;
    let key = crate::process::create_key(&db, "default", "ci");
    let keys = |args: &[&str]| {
        let mut c = codmir();
        c.args(["keys"]).args(args).args(["--database-url", &db]);
        finish_within(c, WAIT).unwrap()
    };
    let list = keys(&["list", "--json"]);
    assert!(list.status.success(), "{}", list.stderr);
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    let entries = list["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let ci = entries.iter().find(|k| k["user"] == "ci").unwrap();
    let id = ci["id"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with(&format!("cmk_{id}_")),
        "the id is the key's public part"
    );
    assert!(!list.to_string().contains(&key[21..]), "never the secret");
    let table = keys(&["list"]).stdout;
    assert!(
        table.starts_with("ID") && table.contains("ci") && table.contains("admin"),
        "{table}"
    );

    // The key works, is revoked on the database, and the server refuses it within 5 s.
    assert!(run(&s, &key, &["event-types"]).status.success());
    let revoked = keys(&["revoke", &id]);
    assert!(revoked.status.success(), "{}", revoked.stderr);
    assert!(
        revoked.stdout.contains("within 5 seconds"),
        "{}",
        revoked.stdout
    );
    eventually(
        Duration::from_secs(8),
        "the revoked key refused",
        || async { run(&s, &key, &["event-types"]).status.code() == Some(4) },
    )
    .await;
    assert!(
        run(&s, &admin, &["event-types"]).status.success(),
        "other keys unaffected"
    );
    let list: Value = serde_json::from_str(&keys(&["list", "--json"]).stdout).unwrap();
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str() && k["revoked_at"].is_string())
    );

    let twice = keys(&["revoke", &key]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(twice.stderr.contains("already revoked"), "{}", twice.stderr);
    let unknown = keys(&["revoke", "00000000deadbeef"]);
    assert_eq!(unknown.status.code(), Some(5), "{}", unknown.stderr);
    let malformed = keys(&["revoke", "nope"]);
    assert_eq!(malformed.status.code(), Some(2), "{}", malformed.stderr);
}

/// `webhooks update` changes every setting the API has (and unsets them with `none`),
/// `webhooks retry-pending` exists, times are RFC 3339, dates or ages, bad usage exits 2,
/// and an error names the CLI command to type, not an API request body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_from_the_cli_and_errors_in_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let (s, key, _) = server(&dir).await;
    let rx = Receiver::start().await;
    let created = ok_json(
        &s,
        &key,
        &["webhooks", "create", &rx.url, "--events", "project.created"],
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let set = ok_json(
        &s,
        &key,
        &[
            "webhooks",
            "update",
            &id,
            "--max-in-flight",
            "4",
            "--rate-limit",
            "10",
            "--header",
            "X-Tenant=acme",
            "--header",
            "X-Env=test",
            "--projects",
            "all",
            "--description",
            "from the CLI",
            "--expires",
            "2h",
            "--ordering",
            "per_resource",
        ],
    );
    assert_eq!(set["ordering"], "per_resource", "{set}");
    assert_eq!(set["max_in_flight"], 4, "{set}");
    assert_eq!(set["rate_limit_per_second"], 10, "{set}");
    assert_eq!(set["headers"]["X-Tenant"], "********", "{set}");
    assert_eq!(set["headers"]["X-Env"], "********", "{set}");
    assert_eq!(set["description"], "from the CLI");
    assert!(set["expires_at"].is_string(), "{set}");
    let shown = ok(&s, &key, &["webhooks", "show", &id]);
    fails(
        &s,
        &key,
        &["deliveries", "skip", "dlv_01m99m4n1h7m4d6k7x9737haft"],
        5,
    );
    for line in [
        "max in flight:",
        "rate limit:",
        "headers:",
        "expires:",
        "ordering:",
    ] {
        assert!(shown.contains(line), "{line} in {shown}");
    }
    let unset = ok_json(
        &s,
        &key,
        &[
            "webhooks",
            "update",
            &id,
            "--max-in-flight",
            "none",
            "--rate-limit",
            "none",
            "--no-headers",
            "--description",
            "",
            "--expires",
            "none",
        ],
    );
    assert_eq!(unset["max_in_flight"], Value::Null, "{unset}");
    assert_eq!(unset["rate_limit_per_second"], Value::Null, "{unset}");
    assert_eq!(unset["headers"], json!({}), "{unset}");
    assert_eq!(unset["description"], Value::Null, "{unset}");
    assert_eq!(unset["expires_at"], Value::Null, "{unset}");

    let due = ok_json(&s, &key, &["webhooks", "retry-pending", &id]);
    assert_eq!(due["due_now"], 0, "{due}");
    assert!(ok(&s, &key, &["webhooks", "retry-pending", &id]).contains("due now"));

    // Times: an age, a date, an RFC 3339 time; anything else is bad usage.
    for since in ["2h", "2026-01-01", "2026-01-01T00:00:00Z"] {
        ok_json(&s, &key, &["deliveries", "list", "--since", since]);
        ok_json(&s, &key, &["events", "list", "--since", since]);
    }
    let bad = fails(&s, &key, &["deliveries", "list", "--since", "yesterday"], 2);
    assert!(
        bad.stderr.contains("an age (30m, 2h, 3d)"),
        "{}",
        bad.stderr
    );
    fails(
        &s,
        &key,
        &["webhooks", "update", &id, "--max-in-flight", "0"],
        2,
    );

    // A disabled webhook: the error says which command turns it back on.
    ok(&s, &key, &["webhooks", "disable", &id]);
    let refused = fails(&s, &key, &["replay", "--webhook", &id, "--since", "1h"], 1);
    assert!(
        refused
            .stderr
            .contains(&format!("codmir webhooks enable {id}"))
            && !refused.stderr.contains("PATCH"),
        "{}",
        refused.stderr
    );
}
