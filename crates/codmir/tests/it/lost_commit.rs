//! A `COMMIT` whose answer is lost (PostgreSQL, through a proxy the test controls): the node
//! finds out what became of it before answering, or says the outcome is unknown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{client, get_at};
use crate::own_pg::OwnPostgres;
use crate::process::ServerProcess;

/// The connection to PostgreSQL drops right after a create's `COMMIT` was sent: the commit
/// takes, the node never hears of it. The node finds out from another connection before
/// answering (the transaction's status), so the create is answered as what it became: a
/// 201, one object, for a unit of its own (a project) and for a batched one (a ticket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's binaries (initdb, pg_ctl) for an instance of the test's own; .ci/run runs it"]
async fn a_commit_whose_answer_is_lost_is_found_out_before_answering() {
    let pg = OwnPostgres::start();
    let proxy = crate::proxy::Proxy::start(pg.port).await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let s = ServerProcess::start(&via_proxy, &["--allow-private-targets"]).await;
    let key = s.printed_key().unwrap();
    proxy.drop_the_answer_to_a_commit_after("INSERT INTO projects");
    let (status, _, _, project) = create(&s.base, &key, None, "/v1/projects", "Committed").await;
    assert_eq!(status, 201, "{project}");
    assert!(proxy.dropped());
    let project = project["id"].as_str().unwrap().to_owned();
    proxy.drop_the_answer_to_a_commit_after("INSERT INTO tickets");
    let tickets = format!("/v1/projects/{project}/tickets");
    let (status, _, _, ticket) = create(&s.base, &key, None, &tickets, "Committed").await;
    assert_eq!(status, 201, "{ticket}");
    assert!(proxy.dropped());
    let projects = get_at(&s.base, &key, "/v1/projects").await;
    assert_eq!(projects["data"].as_array().unwrap().len(), 1, "{projects}");
    let listed = get_at(&s.base, &key, &tickets).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["id"], ticket["id"]);
}

/// As above, and the database is cut off from the node at that instant, so it cannot find
/// out: the answer says the outcome is unknown (not a plain 503), and the retry with the same
/// `Idempotency-Key` gets the create's answer: one project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's binaries (initdb, pg_ctl) for an instance of the test's own; .ci/run runs it"]
async fn a_commit_whose_answer_is_lost_unfound_is_answered_outcome_unknown_and_the_keyed_retry_gets_it()
 {
    let pg = OwnPostgres::start();
    let proxy = crate::proxy::Proxy::start(pg.port).await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let s = ServerProcess::start(&via_proxy, &["--allow-private-targets"]).await;
    let key = s.printed_key().unwrap();
    proxy.cut_at_a_commit_after("INSERT INTO projects");
    let keyed = Some("lost-commit");
    let started = Instant::now();
    let (status, _, retry_after, body) =
        create(&s.base, &key, keyed, "/v1/projects", "Committed").await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{body}"
    );
    proxy.heal();
    // The retry, as the answer says: the create's own answer, kept with it.
    let (status, replayed, _, project) =
        create(&s.base, &key, keyed, "/v1/projects", "Committed").await;
    assert_eq!((status, replayed), (201, true), "{project}");
    assert_eq!(project["name"], "Committed");
    let projects = get_at(&s.base, &key, "/v1/projects").await;
    assert_eq!(projects["data"].as_array().unwrap().len(), 1, "{projects}");
}

/// A create on `path` named `name`: (status, replayed, Retry-After, body).
async fn create(
    base: &str,
    key: &str,
    idempotency_key: Option<&str>,
    path: &str,
    name: &str,
) -> (u16, bool, Option<String>, Value) {
    let body = match path.ends_with("/tickets") {
        true => json!({ "title": name }),
        false => json!({ "name": name }),
    };
    let mut request = client()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body);
    if let Some(k) = idempotency_key {
        request = request.header("idempotency-key", k);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let replayed = r.headers().contains_key("idempotent-replayed");
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        replayed,
        retry_after,
        r.json::<Value>().await.unwrap(),
    )
}
