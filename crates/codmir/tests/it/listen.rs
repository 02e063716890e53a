//! `codmir listen` and `codmir trigger` tried as a new user would: a server, an app, `listen
//! --forward-to` the app, `trigger ticket.created`; the event is printed and reaches the app
//! with the bytes and headers codmir sent; stopping `listen` removes its webhook.

use std::process::Command;
use std::time::Duration;

use codmir_webhook::Verifier;

use crate::helpers::{client, eventually, get_at};
use crate::process::{ServerProcess, Spawned, codmir, finish_within};
use crate::receiver::Receiver;

fn with_server(mut cmd: Command, server: &ServerProcess, key: &str) -> Command {
    cmd.env("CODMIR_URL", &server.base)
        .env("CODMIR_API_KEY", key);
    cmd
}

fn listen(server: &ServerProcess, key: &str, app: &Receiver) -> Spawned {
    listen_with(server, key, app, &[])
}

fn listen_with(server: &ServerProcess, key: &str, app: &Receiver, extra: &[&str]) -> Spawned {
    let mut cmd = codmir();
    cmd.args(["listen", "--forward-to", &app.url, "--events", "ticket.*"]);
    cmd.args(extra);
    Spawned::start(with_server(cmd, server, key))
}

/// The listener's own URL, as `listen` printed it.
fn listener_url(listen: &Spawned) -> String {
    let line = listen
        .stdout()
        .into_iter()
        .find(|l| l.starts_with("Temporary webhook "))
        .unwrap();
    line.split(" → ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

async fn ready(listen: &Spawned) -> String {
    eventually(Duration::from_secs(15), "listen says Ready", || async {
        listen.stdout().iter().any(|l| l == "Ready.")
    })
    .await;
    let line = listen
        .stdout()
        .into_iter()
        .find(|l| l.starts_with("Signing secret: "));
    line.unwrap()
        .trim_start_matches("Signing secret: ")
        .trim()
        .to_owned()
}

async fn listen_webhooks(server: &ServerProcess, key: &str) -> Vec<serde_json::Value> {
    let list = get_at(&server.base, key, "/v1/webhooks?limit=100").await;
    let all = list["data"].as_array().unwrap().clone();
    let ours = |w: &serde_json::Value| {
        w["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("codmir listen"))
    };
    all.into_iter().filter(ours).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_forwards_a_triggered_event_unchanged_and_removes_its_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("l.db").display());
    // Local development: the server may deliver to loopback.
    let server = ServerProcess::start(&db, &["--allow-private-targets"]).await;
    let key = server.printed_key().unwrap();
    let app = Receiver::start().await;

    let mut first = listen(&server, &key, &app);
    let secret = ready(&first).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(listen_webhooks(&server, &key).await.len(), 1);

    let mut trigger = codmir();
    trigger.args(["trigger", "ticket.created"]);
    let done = finish_within(with_server(trigger, &server, &key), Duration::from_secs(30)).unwrap();
    assert!(done.status.success(), "{}\n{}", done.stdout, done.stderr);
    let event_id = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("event:"))
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|| panic!("no event id in: {}", done.stdout));
    assert!(event_id.starts_with("evt_"), "{event_id}");

    eventually(Duration::from_secs(10), "the app got the event", || async {
        app.count() >= 1
    })
    .await;
    let hit = app.hits().remove(0);
    // The same bytes as the event codmir stored and sent …
    let stored = client()
        .get(format!("{}/v1/events/{event_id}", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(hit.body, stored);
    // … and its headers: the signatures still verify with the secret `listen` printed.
    let event = Verifier::new(&secret)
        .unwrap()
        .verify(&hit.body, &hit.headers)
        .unwrap();
    assert_eq!(event.id, event_id);
    assert_eq!(hit.header("webhook-id"), event_id);
    assert_eq!(hit.header("x-codmir-event"), "ticket.created");
    assert!(
        hit.header("user-agent").starts_with("codmir"),
        "{:?}",
        hit.headers
    );

    // `listen` printed the event, its verification and the app's answer.
    eventually(
        Duration::from_secs(10),
        "listen printed the app's answer",
        || async {
            let out = first.stdout();
            let arrived = out.iter().any(|l| {
                l.contains(&event_id) && l.contains("ticket.created") && l.contains("signature ok")
            });
            arrived && out.iter().any(|l| l.contains("→ 200 from the app"))
        },
    )
    .await;

    // Ctrl-C: the temporary webhook is removed.
    let status = first.stop_with("INT").expect("listen stops");
    assert!(status.success(), "{status:?}: {:?}", first.stderr());
    assert!(
        first
            .stdout()
            .iter()
            .any(|l| l.starts_with("Removed temporary webhook"))
    );
    assert!(listen_webhooks(&server, &key).await.is_empty());

    // The secret is the same at the next start (the app keeps it in .env); a `listen` killed
    // before it could clean up leaves a webhook the next one removes.
    let mut second = listen(&server, &key, &app);
    assert_eq!(ready(&second).await, secret);
    second.stop_with("KILL");
    assert_eq!(listen_webhooks(&server, &key).await.len(), 1);
    let mut third = listen(&server, &key, &app);
    ready(&third).await;
    assert!(
        third
            .stderr()
            .iter()
            .any(|l| l.contains("left behind by an earlier")),
        "{:?}",
        third.stderr()
    );
    assert_eq!(listen_webhooks(&server, &key).await.len(), 1);

    // A request that codmir did not sign (anyone who found the port) is refused, not
    // forwarded, and printed as refused.
    let before = app.count();
    let forged = client()
        .post(listener_url(&third))
        .header("content-type", "application/json")
        .header("webhook-id", "evt_forged")
        .header("webhook-timestamp", "1700000000")
        .header("webhook-signature", "v1,Zm9yZ2Vk")
        .body(r#"{"id":"evt_forged","type":"ticket.created"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    eventually(
        Duration::from_secs(10),
        "listen printed the refusal",
        || async {
            third
                .stdout()
                .iter()
                .any(|l| l.contains("evt_forged") && l.contains("REFUSED"))
        },
    )
    .await;
    assert_eq!(app.count(), before, "nothing forwarded");
    // The terminal closed (SIGHUP): the webhook is removed as on Ctrl-C.
    assert!(third.stop_with("HUP").unwrap().success());
    assert!(listen_webhooks(&server, &key).await.is_empty());

    // A short expiry: renewed while `listen` runs, removed by the server once it is killed.
    let mut fourth = listen_with(&server, &key, &app, &["--expire-after", "2s"]);
    ready(&fourth).await;
    let first_expiry = listen_webhooks(&server, &key).await[0]["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_expiry =
        codmir_core::time::Timestamp::parse_rfc3339(&first_expiry, "expires_at").unwrap();
    eventually(Duration::from_secs(10), "past the first expiry", || async {
        codmir_core::time::Timestamp::now() > first_expiry
    })
    .await;
    let alive = listen_webhooks(&server, &key).await;
    assert_eq!(alive.len(), 1, "renewed while listen runs");
    let renewed = alive[0]["expires_at"].as_str().unwrap();
    let renewed = codmir_core::time::Timestamp::parse_rfc3339(renewed, "expires_at").unwrap();
    assert!(renewed > first_expiry, "the expiry moved on");
    fourth.stop_with("KILL");
    eventually(
        Duration::from_secs(15),
        "the server removed the killed listen's webhook",
        || async { listen_webhooks(&server, &key).await.is_empty() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_causes_a_real_event_of_each_type_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let server = ServerProcess::start(&db, &[]).await;
    let key = server.printed_key().unwrap();
    let types = [
        "ticket.created",
        "ticket.updated",
        "ticket.deleted",
        "ticket.status_changed",
        "ticket.assigned",
        "comment.created",
        "project.created",
        "member.added",
    ];
    for t in types {
        let mut cmd = codmir();
        cmd.args(["trigger", t, "--json"]);
        let done = finish_within(with_server(cmd, &server, &key), Duration::from_secs(30)).unwrap();
        assert!(done.status.success(), "{t}: {}", done.stderr);
        let out: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
        let id = out["event_id"].as_str().unwrap();
        let event = get_at(&server.base, &key, &format!("/v1/events/{id}")).await;
        assert_eq!(event["type"], t, "{event}");
    }
    // Every trigger but project.created acted in one project of its own.
    let projects = get_at(&server.base, &key, "/v1/projects?limit=100").await;
    let named = |n: &str| {
        projects["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == n)
            .count()
    };
    assert_eq!(named("codmir trigger"), 1);
    for (t, why) in [
        ("webhook.ping", "webhooks ping"),
        ("sprint.started", "not an event type"),
    ] {
        let mut cmd = codmir();
        cmd.args(["trigger", t]);
        let done = finish_within(with_server(cmd, &server, &key), Duration::from_secs(30)).unwrap();
        assert_eq!(done.status.code(), Some(2), "{t}");
        assert!(done.stderr.contains(why), "{t}: {}", done.stderr);
    }
}
