//! Events: each mutation stores its events, in the contract's shape, in its own transaction.

use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    CommentBody, Email, NewTicket, Priority, ProjectName, Role, TicketPatch, TicketStatus,
    TicketTitle, UserName,
};
use codmir_server::ops;
use serde_json::{Value, json};

use crate::helpers::{TestApp, ids, spawn_app};

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// Checks the envelope and returns `data`.
fn envelope<'a>(event: &'a Value, event_type: &str) -> &'a Value {
    assert_eq!(event["type"], event_type);
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    let ts = event["timestamp"].as_str().unwrap();
    // RFC 3339 in UTC with `Z`, to the millisecond: `2024-01-15T10:30:00.123Z`.
    assert!(
        ts.ends_with('Z') && ts.len() == 24 && ts.as_bytes()[19] == b'.',
        "RFC 3339 UTC with Z and milliseconds: {ts}"
    );
    &event["data"]
}

#[tokio::test]
async fn every_mutation_stores_its_events_in_the_contract_shape() {
    let app = spawn_app().await;
    let project = app.project("Main App").await;
    let member = app
        .post(
            &format!("/v1/projects/{project}/members"),
            json!({"name": "Jane Roe", "email": "jane@example.com"}),
        )
        .await;
    let jane = member.body["id"].as_str().unwrap().to_owned();
    let ticket = app
        .ticket(
            &project,
            json!({"title": "Bug in login flow", "priority": "high"}),
        )
        .await;
    let tid = ticket["id"].as_str().unwrap().to_owned();
    app.patch(
        &format!("/v1/tickets/{tid}"),
        json!({"status": "in_progress", "assignee_id": jane}),
    )
    .await;
    app.patch(
        &format!("/v1/tickets/{tid}"),
        json!({"title": "Bug in login flow"}),
    )
    .await; // no change
    app.post(
        &format!("/v1/tickets/{tid}/comments"),
        json!({"body": "On it"}),
    )
    .await;
    app.delete(&format!("/v1/tickets/{tid}")).await;

    let events = app.events().await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "project.created",
            "member.added",
            "ticket.created",
            "ticket.updated",
            "ticket.status_changed",
            "ticket.assigned",
            "comment.created",
            "ticket.deleted"
        ]
    );
    // Numbered per resource, in commit order: the project's two, then the ticket's six.
    let numbered: Vec<(&str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["resource_id"].as_str().unwrap(),
                e["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    let (p, t) = (project.as_str(), tid.as_str());
    assert_eq!(
        numbered,
        [
            (p, 1),
            (p, 2),
            (t, 1),
            (t, 2),
            (t, 3),
            (t, 4),
            (t, 5),
            (t, 6)
        ]
    );
    for e in &events {
        assert_eq!(
            keys(e),
            ["id", "type", "timestamp", "resource_id", "sequence", "data"],
            "envelope order"
        );
        let data = &e["data"];
        assert_eq!(data["project"], json!({"id": project, "name": "Main App"}));
        assert_eq!(data["user"]["name"], "admin");
        assert!(data["user"]["id"].as_str().unwrap().starts_with("usr_"));
        // Each event read back alone is the same event.
        let one = app
            .get(&format!("/v1/events/{}", e["id"].as_str().unwrap()))
            .await;
        assert_eq!(&one.body, e);
    }

    let d = envelope(&events[1], "member.added");
    assert_eq!(d["member"]["email"], "jane@example.com");
    assert_eq!(d["member"]["role"], "member");

    let d = envelope(&events[2], "ticket.created");
    assert_eq!(
        keys(d),
        ["ticket", "project", "user"],
        "the contract's data order"
    );
    assert_eq!(d["ticket"]["title"], "Bug in login flow");
    assert_eq!(d["ticket"]["status"], "open");
    assert_eq!(d["ticket"]["priority"], "high");
    assert_eq!(d["ticket"]["id"], tid.as_str());

    let d = envelope(&events[3], "ticket.updated");
    assert_eq!(
        d["changes"],
        json!({"status": {"from": "open", "to": "in_progress"}, "assignee_id": {"from": null, "to": jane}})
    );
    assert_eq!(d["ticket"]["status"], "in_progress");
    let d = envelope(&events[4], "ticket.status_changed");
    assert_eq!(
        d["changes"],
        json!({"status": {"from": "open", "to": "in_progress"}})
    );
    let d = envelope(&events[5], "ticket.assigned");
    assert_eq!(d["assignee"], json!({"id": jane, "name": "Jane Roe"}));

    let d = envelope(&events[6], "comment.created");
    assert_eq!(d["comment"]["body"], "On it");
    assert_eq!(d["comment"]["ticket_id"], tid.as_str());
    assert_eq!(d["ticket"]["id"], tid.as_str());

    let d = envelope(&events[7], "ticket.deleted");
    assert_eq!(d["ticket"]["id"], tid.as_str());

    // Filter by type.
    let r = app.get("/v1/events?type=ticket.assigned").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["data"][0], events[5]);
}

#[tokio::test]
async fn a_ticket_created_with_an_assignee_is_also_assigned() {
    let app = spawn_app().await;
    let project = app.project("P").await;
    let m = app
        .post(
            &format!("/v1/projects/{project}/members"),
            json!({"name": "Kim", "email": "kim@example.com"}),
        )
        .await;
    app.ticket(&project, json!({"title": "T", "assignee_id": m.body["id"]}))
        .await;
    let types: Vec<String> = app
        .events()
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types[2..], ["ticket.created", "ticket.assigned"]);
}

#[tokio::test]
async fn the_catalog_lists_the_contracts_eight_types_then_codmirs_two_with_examples() {
    let app = spawn_app().await;
    assert_eq!(
        app.request("GET", "/v1/event-types", None, None)
            .await
            .status,
        401
    );
    let r = app.get("/v1/event-types").await;
    let data = r.body["data"].as_array().unwrap();
    let names: Vec<&str> = data.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "ticket.created",
            "ticket.updated",
            "ticket.deleted",
            "ticket.status_changed",
            "ticket.assigned",
            "comment.created",
            "project.created",
            "member.added",
            "webhook.ping",
            "webhook.disabled"
        ]
    );
    assert_eq!(
        data[8]["example"]["data"]["webhook"]["url"],
        "https://your-app.com/webhooks/codmir"
    );
    assert!(
        data[9]["example"]["data"]["webhook"]["disabled_reason"]
            .as_str()
            .is_some()
    );
    for t in data {
        assert_eq!(t["example"]["type"], t["name"]);
        assert!(!t["description"].as_str().unwrap().is_empty());
        let envelope: &[&str] = match t["name"].as_str().unwrap().starts_with("webhook.") {
            true => &["id", "type", "timestamp", "data"],
            false => &["id", "type", "timestamp", "resource_id", "sequence", "data"],
        };
        assert_eq!(keys(&t["example"]), envelope);
    }
}

/// Runs `op` and then fails the unit of work, as a crash between the data write and the commit
/// would; returns the error.
async fn fail_after<F>(app: &TestApp, op: F) -> ops::Error
where
    F: for<'t> FnOnce(
            &'t mut dyn codmir_server::store::Tx,
            codmir_core::tracker::Principal,
        ) -> codmir_server::store::BoxFuture<'t, ops::Result<()>>
        + Send
        + 'static,
{
    let key = app.key.clone();
    app.store
        .write(move |tx| {
            Box::pin(async move {
                let p = ops::authenticate(tx, &key).await?.expect("key");
                op(tx, p).await?;
                Err::<(), _>(ops::Error::Conflict {
                    code: "injected",
                    message: "injected failure".into(),
                })
            })
        })
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_failure_before_commit_leaves_neither_data_nor_event() {
    let app = spawn_app().await;
    let project = app.project("P").await;
    let ticket = app.ticket(&project, json!({"title": "Keep"})).await;
    let tid = ticket["id"].as_str().unwrap().to_owned();
    let before = app.events().await.len();

    let e = fail_after(&app, move |tx, p| {
        Box::pin(async move {
            ops::create_project(
                tx,
                &p,
                ProjectName::parse("Ghost").unwrap(),
                Timestamp::now(),
                &mut ops::AfterCommit::default(),
            )
            .await
            .map(drop)
        })
    })
    .await;
    assert!(matches!(
        e,
        ops::Error::Conflict {
            code: "injected",
            ..
        }
    ));
    let pid = project.clone();
    fail_after(&app, move |tx, p| {
        Box::pin(async move {
            let new = NewTicket {
                title: TicketTitle::parse("Ghost").unwrap(),
                description: None,
                status: TicketStatus::Open,
                priority: Priority::Low,
                assignee_id: None,
            };
            let unit = ops::CreateTicket {
                principal: p,
                project_id: pid,
                new,
            };
            let mut after = ops::AfterCommit::default();
            ops::run(tx, unit, Timestamp::now(), &mut after)
                .await
                .map(drop)
        })
    })
    .await;
    let t = tid.clone();
    fail_after(&app, move |tx, p| {
        Box::pin(async move {
            let patch = TicketPatch {
                status: Some(TicketStatus::Closed),
                ..TicketPatch::default()
            };
            let unit = ops::UpdateTicket {
                principal: p,
                id: t,
                patch,
            };
            let mut after = ops::AfterCommit::default();
            ops::run(tx, unit, Timestamp::now(), &mut after)
                .await
                .map(drop)
        })
    })
    .await;
    let t = tid.clone();
    fail_after(&app, move |tx, p| {
        Box::pin(async move {
            let unit = ops::DeleteTicket {
                principal: p,
                id: t,
            };
            let mut after = ops::AfterCommit::default();
            ops::run(tx, unit, Timestamp::now(), &mut after).await
        })
    })
    .await;
    let t = tid.clone();
    fail_after(&app, move |tx, p| {
        Box::pin(async move {
            let unit = ops::CreateComment {
                principal: p,
                ticket_id: t,
                body: CommentBody::parse("ghost").unwrap(),
            };
            let mut after = ops::AfterCommit::default();
            ops::run(tx, unit, Timestamp::now(), &mut after)
                .await
                .map(drop)
        })
    })
    .await;
    let pid = project.clone();
    fail_after(&app, move |tx, p| {
        Box::pin(async move {
            let (n, e) = (
                UserName::parse("Ghost").unwrap(),
                Email::parse("ghost@example.com").unwrap(),
            );
            ops::add_member(
                tx,
                &p,
                &pid,
                codmir_core::tracker::NewMember {
                    name: n,
                    email: e,
                    role: Role::Member,
                },
                Timestamp::now(),
                &mut ops::AfterCommit::default(),
            )
            .await
            .map(drop)
        })
    })
    .await;

    assert_eq!(
        app.events().await.len(),
        before,
        "no event from a rolled-back change"
    );
    let projects = app.get("/v1/projects").await;
    assert_eq!(projects.body["data"].as_array().unwrap().len(), 1);
    let tickets = app.get(&format!("/v1/projects/{project}/tickets")).await;
    assert_eq!(tickets.body["data"].as_array().unwrap().len(), 1);
    let kept = app.get(&format!("/v1/tickets/{tid}")).await;
    assert_eq!(kept.body["status"], "open");
    let members = app.get(&format!("/v1/projects/{project}/members")).await;
    assert!(members.body["data"].as_array().unwrap().is_empty());
    // The server still commits new work after the rolled-back units.
    app.ticket(&project, json!({"title": "After"})).await;
    assert_eq!(app.events().await.len(), before + 1);
}

#[tokio::test]
async fn the_event_log_filters_by_pattern_project_and_time_and_reads_forward() {
    let app = spawn_app().await;
    let p1 = app.project("One").await;
    let p2 = app.project("Two").await;
    for (p, title) in [(&p1, "a"), (&p2, "b"), (&p1, "c")] {
        app.ticket(p, json!({"title": title})).await;
    }
    // Newest first by default; `order=asc` reads the log forward, page by page.
    let all = app.list("/v1/events?limit=100").await;
    assert_eq!(all.len(), 5);
    let mut forward = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?order=asc&limit=2&cursor={c}"),
            None => "/v1/events?order=asc&limit=2".to_owned(),
        };
        let r = app.get(&path).await;
        forward.extend(r.body["data"].as_array().unwrap().clone());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut reversed = ids(&all);
    reversed.reverse();
    assert_eq!(ids(&forward), reversed, "ascending is the log forward");

    let tickets = app.list("/v1/events?type=ticket.*").await;
    assert_eq!(tickets.len(), 3);
    assert!(tickets.iter().all(|e| e["type"] == "ticket.created"));
    let of_p1 = app
        .list(&format!("/v1/events?project_id={p1}&type=ticket.created"))
        .await;
    assert_eq!(of_p1.len(), 2);
    assert_eq!(
        app.list(&format!("/v1/events?project_id={p2}")).await.len(),
        2
    );
    assert_eq!(app.list("/v1/events?type=*").await.len(), 5);
    // A time window: since the second event's timestamp, until the fourth's (exclusive).
    let ts = |e: &Value| e["timestamp"].as_str().unwrap().to_owned();
    let (from, to) = (ts(&forward[1]), ts(&forward[3]));
    let window = app
        .list(&format!("/v1/events?order=asc&since={from}&until={to}"))
        .await;
    assert!(!window.is_empty());
    assert!(
        window.iter().all(|e| ts(e) >= from && ts(e) < to),
        "{window:?}"
    );
    assert!(
        app.list("/v1/events?since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    for (query, field) in [
        ("type=ticket.exploded", "type"),
        ("order=sideways", "order"),
        ("since=2024-01-15", "since"),
        ("project_id=p1", "project_id"),
    ] {
        let r = app.get(&format!("/v1/events?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{query}");
    }
}

/// Sequence numbers follow commit order under concurrency: many writers on one ticket (and on
/// its project) get every number once, and the event log (read in commit order) lists each
/// resource's events 1, 2, 3, … On SQLite here, on PostgreSQL in `conformance`-style below.
async fn numbers_follow_commit_order(app: &TestApp) {
    let project = app.project("Busy").await;
    let ticket = app.ticket(&project, json!({"title": "Hot"})).await;
    let tid = ticket["id"].as_str().unwrap().to_owned();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..40usize {
        let (base, key) = (app.base.clone(), app.key.clone());
        let (tid, project) = (tid.clone(), project.clone());
        writes.spawn(async move {
            let c = crate::helpers::client();
            let r = if i % 4 == 0 {
                let body = json!({"name": format!("M{i}"), "email": format!("m{i}@example.com")});
                c.post(format!("{base}/v1/projects/{project}/members"))
                    .json(&body)
            } else if i % 4 == 1 {
                let priority = ["low", "high"][i % 8 / 4];
                let body = json!({"priority": priority});
                c.patch(format!("{base}/v1/tickets/{tid}")).json(&body)
            } else {
                let body = json!({"body": format!("comment {i}")});
                c.post(format!("{base}/v1/tickets/{tid}/comments"))
                    .json(&body)
            };
            let r = r.bearer_auth(key).send().await.unwrap();
            assert!(r.status().is_success(), "{i}: {}", r.status());
        });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap();
    }
    let mut next: std::collections::HashMap<String, u64> = Default::default();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/events?order=asc&limit=100&cursor={c}"),
            None => "/v1/events?order=asc&limit=100".to_owned(),
        };
        let page = app.get(&q).await.body;
        for e in page["data"].as_array().unwrap() {
            let resource = e["resource_id"].as_str().unwrap().to_owned();
            let n = next.entry(resource.clone()).or_insert(1);
            assert_eq!(e["sequence"].as_u64(), Some(*n), "{resource}: {e}");
            *n += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // The project: created, ten members. The ticket: created, twenty comments, and its
    // updates (a priority already set makes none).
    assert_eq!(next[&project], 12);
    assert!(next[&tid] > 22, "{}", next[&tid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_follow_commit_order_on_sqlite() {
    numbers_follow_commit_order(&spawn_app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL on 127.0.0.1:5432; run `cargo test -- --ignored` (CI does)"]
async fn sequence_numbers_follow_commit_order_on_postgresql() {
    let pg = crate::helpers::PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_on(dir, pg.url.clone(), crate::helpers::test_config()).await;
    numbers_follow_commit_order(&app).await;
}
