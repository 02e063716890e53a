//! The store's contract, run against both backends: a behaviour exists in both or in neither.
//! The PostgreSQL half needs a server and is `#[ignore]`d by plain `cargo test`.

use std::collections::HashSet;

use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    NewTicket, Principal, Priority, Project, ProjectName, TicketStatus, TicketTitle, UserName,
    WorkspaceName,
};
use codmir_core::webhook::{Attempt, DeliveryStatus, EndpointUrl, EventFilter, WebhookSecret};
use codmir_server::Store;
use codmir_server::ops::{self, Checked, NewWebhook};
use codmir_server::store::{EventQuery, Lease, Leased, Outcome, PageRequest, StoreError};

/// A workspace with a webhook for every event; returns the caller and the webhook id.
async fn setup(store: &Store) -> (Principal, String) {
    let (ws, user) = (
        WorkspaceName::parse("w").unwrap(),
        UserName::parse("u").unwrap(),
    );
    let key = store
        .write(move |tx| {
            Box::pin(async move { ops::create_key(tx, &ws, &user, Timestamp::now()).await })
        })
        .await
        .unwrap();
    let p = key.principal;
    let new = NewWebhook {
        url: EndpointUrl::parse("https://example.com/hook", &Default::default()).unwrap(),
        events: EventFilter::parse(&["*"]).unwrap(),
        secret: WebhookSecret::generate(),
        description: None,
        project_ids: Vec::new(),
        max_in_flight: None,
        rate_limit_per_second: None,
        headers: Default::default(),
        expires_at: None,
        ordering: Default::default(),
    };
    let pc = p.clone();
    let wh = store
        .write(move |tx| {
            Box::pin(async move { ops::create_webhook(tx, &pc, new, 100, Timestamp::now()).await })
        })
        .await
        .unwrap();
    (p, wh.id)
}

/// Creates `n` projects (one event and one delivery each); returns their ids.
async fn projects(store: &Store, p: &Principal, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (pc, name) = (p.clone(), ProjectName::parse(&format!("p{i}")).unwrap());
        let project = store
            .write(move |tx| {
                Box::pin(async move {
                    ops::create_project(
                        tx,
                        &pc,
                        name,
                        Timestamp::now(),
                        &mut ops::AfterCommit::default(),
                    )
                    .await
                })
            })
            .await
            .unwrap();
        ids.push(project.id);
    }
    ids
}

async fn claim(
    store: &Store,
    owner: &str,
    now: i64,
    lease_ms: i64,
    limit: u32,
    skip: Vec<String>,
) -> Vec<String> {
    let owner = owner.to_owned();
    store
        .write(move |tx| {
            Box::pin(async move {
                let now = Timestamp::from_millis(now);
                let lease = Lease {
                    owner,
                    until: Timestamp::from_millis(now.as_millis() + lease_ms),
                };
                tx.claim_due(&lease, now, limit, &skip).await
            })
        })
        .await
        .map(|c: Vec<Leased>| c.into_iter().map(|c| c.delivery.id).collect())
        .unwrap()
}

fn in_a_minute() -> i64 {
    Timestamp::now().as_millis() + 60_000
}

pub(crate) async fn a_failed_unit_of_work_rolls_back_alone(store: Store) {
    let (p, _) = setup(&store).await;
    let pc = p.clone();
    let failed: Result<(), ops::Error> = store
        .write(move |tx| {
            Box::pin(async move {
                ops::create_project(
                    tx,
                    &pc,
                    ProjectName::parse("ghost").unwrap(),
                    Timestamp::now(),
                    &mut ops::AfterCommit::default(),
                )
                .await?;
                Err(ops::Error::NotFound("injected"))
            })
        })
        .await;
    assert!(matches!(failed, Err(ops::Error::NotFound("injected"))));
    projects(&store, &p, 1).await;
    let ws = p.workspace_id.clone();
    let (projects, events) = store
        .read(move |tx| {
            Box::pin(async move {
                let page = PageRequest {
                    limit: 100,
                    after: None,
                };
                let projects = tx.list_projects(&ws, &page).await?;
                let events = tx.list_events(&ws, &EventQuery::default(), &page).await?;
                Ok::<_, StoreError>((projects.items, events.items))
            })
        })
        .await
        .unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].name, "p0");
    assert_eq!(events.len(), 1);
}

/// Ticket creations submitted together as checked units: each acknowledged one is stored
/// whole (ticket, event, delivery leased as written), a unit reads back what it has just
/// written (PostgreSQL holds such rows back for one set-based insert per batch), and a unit
/// refused before writing leaves nothing.
pub(crate) async fn checked_ticket_units_together_each_store_their_rows_whole(store: Store) {
    let (p, _) = setup(&store).await;
    let project = projects(&store, &p, 1).await.remove(0);
    let lease = Lease {
        owner: "node_a".into(),
        until: Timestamp::from_millis(in_a_minute()),
    };
    let create = |i: usize| {
        let (store, p, project, lease) = (store.clone(), p.clone(), project.clone(), lease.clone());
        async move {
            let new = NewTicket {
                title: TicketTitle::parse(&format!("t{i}")).unwrap(),
                description: i
                    .is_multiple_of(2)
                    .then(|| codmir_core::tracker::Description::parse("d").unwrap()),
                status: TicketStatus::Open,
                priority: Priority::High,
                assignee_id: None,
            };
            let unit = ops::CreateTicket {
                principal: p.clone(),
                project_id: project,
                new,
            };
            store
                .write_checked(
                    None,
                    move |tx| {
                        Box::pin(async move {
                            if i % 9 == 4 {
                                return Err(ops::Error::NotFound("refused by its checks"));
                            }
                            let now = Timestamp::now();
                            Ok((unit.check(tx, now).await?, now))
                        })
                    },
                    move |tx, (plan, now)| {
                        Box::pin(async move {
                            let mut after = ops::AfterCommit::leased_to(lease);
                            let ticket =
                                ops::CreateTicket::write(plan, tx, now, &mut after).await?;
                            if i.is_multiple_of(3) {
                                let read = tx.get_ticket(&p.workspace_id, &ticket.id).await?;
                                assert_eq!(
                                    read.as_ref(),
                                    Some(&ticket),
                                    "a unit sees its own write"
                                );
                            }
                            Ok((ticket, after.fresh))
                        })
                    },
                )
                .await
        }
    };
    let units: Vec<_> = (0..80).map(|i| tokio::spawn(create(i))).collect();
    let mut answers = Vec::new();
    for unit in units {
        answers.push(unit.await.unwrap());
    }
    let ws = p.workspace_id.clone();
    let stored = store
        .read(move |tx| {
            Box::pin(async move {
                let mut found = Vec::new();
                for answer in answers {
                    let Ok((ticket, fresh)) = answer else {
                        found.push(Err(answer.err().map(|e| format!("{e:?}"))));
                        continue;
                    };
                    let read = tx.get_ticket(&ws, &ticket.id).await?;
                    assert_eq!(read.as_ref(), Some(&ticket), "stored as acknowledged");
                    assert_eq!(fresh.len(), 1, "one delivery for the one webhook");
                    let d = tx.get_delivery(&ws, &fresh[0].delivery.id).await?;
                    let d = d.expect("its delivery is stored");
                    assert_eq!(d, fresh[0].delivery);
                    let event = tx.get_event(&ws, &d.event_id).await?.expect("its event");
                    assert_eq!(&*event.payload, &*fresh[0].payload);
                    found.push(Ok(ticket.id));
                }
                Ok::<_, StoreError>(found)
            })
        })
        .await
        .unwrap();
    for (i, f) in stored.iter().enumerate() {
        assert_eq!(f.is_ok(), i % 9 != 4, "unit {i}: {f:?}");
    }
    // Only the acknowledged ones are there: one ticket.created per stored ticket.
    let ws = p.workspace_id.clone();
    let events = store
        .read(move |tx| {
            Box::pin(async move {
                let page = PageRequest {
                    limit: 100,
                    after: None,
                };
                let q = EventQuery::default();
                Ok::<_, StoreError>(tx.list_events(&ws, &q, &page).await?.items)
            })
        })
        .await
        .unwrap();
    let tickets = events
        .iter()
        .filter(|e| e.payload.contains("ticket.created"));
    assert_eq!(tickets.count(), stored.iter().filter(|f| f.is_ok()).count());
}

/// Units written with `write_checked` go without a savepoint of their own on SQLite. One whose
/// writes fail (here: a second insert of the project it has just inserted, refused by the
/// primary key) must leave nothing of itself, and whatever of its commit is kept must be what
/// was acknowledged: every unit told Ok is stored, every one told Err is not, and the others
/// of its commit are told it was rolled back.
pub(crate) async fn a_checked_unit_that_fails_after_writing_keeps_nothing_half_done(store: Store) {
    let (p, _) = setup(&store).await;
    let create = |name: String, then_fail: bool, refuse: bool| {
        let (store, pc) = (store.clone(), p.clone());
        async move {
            store
                .write_checked(
                    None,
                    move |_| {
                        Box::pin(async move {
                            if refuse {
                                return Err(ops::Error::NotFound("refused by its checks"));
                            }
                            Ok(())
                        })
                    },
                    move |tx, ()| {
                        Box::pin(async move {
                            let now = Timestamp::now();
                            let project = Project {
                                id: codmir_core::id::new_id("proj", now),
                                workspace_id: pc.workspace_id.clone(),
                                name: name.clone(),
                                created_by: pc.user_id.clone(),
                                created_at: now,
                            };
                            tx.insert_project(&project, 0).await?;
                            if then_fail {
                                tx.insert_project(&project, 0).await?;
                            }
                            Ok(name)
                        })
                    },
                )
                .await
        }
    };
    // Submitted together, so that SQLite groups them into commits.
    let units: Vec<_> = (0..60)
        .map(|i| tokio::spawn(create(format!("p{i}"), i == 30, i % 7 == 3)))
        .collect();
    let mut answers = Vec::new();
    for unit in units {
        answers.push(unit.await.unwrap());
    }
    let ws = p.workspace_id.clone();
    let stored: HashSet<String> = store
        .read(move |tx| {
            Box::pin(async move {
                let page = PageRequest {
                    limit: 100,
                    after: None,
                };
                Ok::<_, StoreError>(tx.list_projects(&ws, &page).await?.items)
            })
        })
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        !stored.contains("p30"),
        "the unit that failed left its project"
    );
    for (i, answer) in answers.iter().enumerate() {
        let name = format!("p{i}");
        match answer {
            Ok(n) => assert!(stored.contains(n), "{n} acknowledged but not stored"),
            Err(e) => {
                assert!(!stored.contains(&name), "{name} refused ({e:?}) but stored");
                let expected = match e {
                    ops::Error::NotFound(_) => i % 7 == 3,
                    ops::Error::Store(StoreError::Conflict(_)) => i == 30,
                    ops::Error::Store(StoreError::RolledBack { .. }) => true,
                    _ => false,
                };
                assert!(expected, "{name}: {e:?}");
            }
        }
    }
    // The commit it spoiled is behind it: the next unit is stored as usual.
    assert_eq!(create("after".into(), false, false).await.unwrap(), "after");
}

pub(crate) async fn lists_page_newest_first_by_cursor(store: Store) {
    let (p, _) = setup(&store).await;
    let mut ids = projects(&store, &p, 5).await;
    ids.reverse();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (ws, a) = (p.workspace_id.clone(), after.clone());
        let page = store
            .read(move |tx| {
                Box::pin(async move {
                    tx.list_projects(&ws, &PageRequest { limit: 2, after: a })
                        .await
                })
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|p| p.id.clone()));
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|p| p.id.clone());
    }
    assert_eq!(seen, ids);
}

pub(crate) async fn a_duplicate_is_a_conflict(store: Store) {
    let w = codmir_core::tracker::Workspace {
        id: "ws_x".into(),
        name: "same".into(),
        created_at: Timestamp::now(),
    };
    let w2 = codmir_core::tracker::Workspace {
        id: "ws_y".into(),
        ..w.clone()
    };
    store
        .write(move |tx| Box::pin(async move { tx.insert_workspace(&w).await }))
        .await
        .unwrap();
    let e = store
        .write(move |tx| Box::pin(async move { tx.insert_workspace(&w2).await }))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
}

pub(crate) async fn rows_read_back_as_written(store: Store) {
    let (p, _) = setup(&store).await;
    let project = projects(&store, &p, 1).await.remove(0);
    let pc = p.clone();
    let ticket = store
        .write(move |tx| {
            Box::pin(async move {
                let new = NewTicket {
                    title: TicketTitle::parse("Ünïcode ✓ title").unwrap(),
                    description: None,
                    status: TicketStatus::InProgress,
                    priority: Priority::Urgent,
                    assignee_id: Some(pc.user_id.clone()),
                };
                let unit = ops::CreateTicket {
                    principal: pc,
                    project_id: project,
                    new,
                };
                let mut after = ops::AfterCommit::default();
                ops::run(tx, unit, Timestamp::now(), &mut after).await
            })
        })
        .await
        .unwrap();
    let (pc, id) = (p.clone(), ticket.id.clone());
    let read = store
        .read(move |tx| Box::pin(async move { ops::ticket(tx, &pc, &id).await }))
        .await
        .unwrap();
    assert_eq!(read, ticket);
    // Another workspace cannot see it.
    let other = Principal {
        workspace_id: "ws_other".into(),
        ..p.clone()
    };
    let id = ticket.id.clone();
    let hidden = store
        .read(move |tx| Box::pin(async move { ops::ticket(tx, &other, &id).await }))
        .await;
    assert!(matches!(hidden, Err(ops::Error::NotFound("ticket"))));
    // The event's bytes come back exactly.
    let ws = p.workspace_id.clone();
    let events = store
        .read(move |tx| {
            Box::pin(async move {
                tx.list_events(
                    &ws,
                    &EventQuery {
                        event_type: Some("ticket.created".into()),
                        ..EventQuery::default()
                    },
                    &PageRequest {
                        limit: 5,
                        after: None,
                    },
                )
                .await
            })
        })
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    assert!(events.items[0].payload.contains("Ünïcode ✓ title"));
    assert!(
        events.items[0]
            .payload
            .starts_with(&format!("{{\"id\":\"{}\"", events.items[0].id))
    );
}

pub(crate) async fn claims_are_exclusive_until_the_lease_expires(store: Store) {
    let (p, _) = setup(&store).await;
    projects(&store, &p, 20).await;
    let now = in_a_minute();
    // Four claimers at once: every delivery goes to exactly one of them.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            claim(&store, &format!("node{i}"), now, 10_000, 8, vec![]).await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 20, "every due delivery claimed once");
    assert_eq!(unique.len(), 20, "no delivery claimed twice");
    assert!(
        claim(&store, "late", now + 5_000, 10_000, 100, vec![])
            .await
            .is_empty(),
        "live leases hold"
    );
    assert_eq!(
        claim(&store, "late", now + 10_001, 10_000, 100, vec![])
            .await
            .len(),
        20,
        "expired leases are taken over"
    );
}

pub(crate) async fn outcomes_are_fenced_by_owner_and_attempt(store: Store) {
    let (p, _) = setup(&store).await;
    projects(&store, &p, 1).await;
    let now = in_a_minute();
    let id = claim(&store, "a", now, 10_000, 1, vec![]).await.remove(0);
    let outcome = |owner: &str, attempt: u32, status: DeliveryStatus| Outcome {
        attempt: Attempt {
            delivery_id: id.clone(),
            attempt,
            attempted_at: Timestamp::from_millis(now),
            duration_ms: 5,
            status_code: Some(500),
            error: None,
            response_body: Some("nope".into()),
            request_headers: Some(r#"{"webhook-timestamp":"1"}"#.into()),
            response_headers: Some(r#"{"retry-after":"5"}"#.into()),
        },
        lease_owner: owner.to_owned(),
        new_status: status,
        next_attempt_at: Some(Timestamp::from_millis(now + 1_000)),
    };
    let record = |o: Outcome| {
        let store = store.clone();
        async move {
            store
                .write(move |tx| Box::pin(async move { tx.record_outcome(&o).await }))
                .await
                .unwrap()
        }
    };
    assert!(
        !record(outcome("b", 1, DeliveryStatus::Pending)).await,
        "another owner is fenced off"
    );
    assert!(record(outcome("a", 1, DeliveryStatus::Pending)).await);
    assert!(
        !record(outcome("a", 1, DeliveryStatus::Pending)).await,
        "the same attempt twice is fenced off"
    );
    // Released by the record, due again at now + 1 s.
    assert!(
        claim(&store, "c", now + 500, 10_000, 10, vec![])
            .await
            .is_empty()
    );
    let again = claim(&store, "c", now + 1_000, 10_000, 10, vec![]).await;
    assert_eq!(again, std::slice::from_ref(&id));
    assert!(record(outcome("c", 2, DeliveryStatus::Failed)).await);
    let (ws, d) = (p.workspace_id.clone(), id.clone());
    let (delivery, attempts) = store
        .read(move |tx| {
            Box::pin(async move {
                let delivery = tx.get_delivery(&ws, &d).await?.unwrap();
                Ok::<_, StoreError>((delivery, tx.list_attempts(&d).await?))
            })
        })
        .await
        .unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(delivery.attempt_count, 2);
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(attempts[0].response_body.as_deref(), Some("nope"));
    assert_eq!(
        attempts[0].request_headers.as_deref(),
        Some(r#"{"webhook-timestamp":"1"}"#)
    );
    assert_eq!(
        attempts[0].response_headers.as_deref(),
        Some(r#"{"retry-after":"5"}"#)
    );
    assert_eq!(attempts[0].status_code, Some(500));
}

pub(crate) async fn outcomes_recorded_in_a_batch_are_fenced_one_by_one(store: Store) {
    let (p, _) = setup(&store).await;
    projects(&store, &p, 4).await;
    let now = in_a_minute();
    let ids = claim(&store, "a", now, 10_000, 4, vec![]).await;
    assert_eq!(ids.len(), 4);
    let outcome = |id: &str, owner: &str, attempt: u32, status: DeliveryStatus| Outcome {
        attempt: Attempt {
            delivery_id: id.to_owned(),
            attempt,
            attempted_at: Timestamp::from_millis(now),
            duration_ms: 7,
            status_code: (status == DeliveryStatus::Succeeded).then_some(200),
            error: (status != DeliveryStatus::Succeeded).then(|| "connection failed".into()),
            response_body: None,
            request_headers: None,
            response_headers: None,
        },
        lease_owner: owner.to_owned(),
        new_status: status,
        next_attempt_at: (status == DeliveryStatus::Pending)
            .then(|| Timestamp::from_millis(now + 1_000)),
    };
    let batch = vec![
        outcome(&ids[0], "a", 1, DeliveryStatus::Succeeded),
        outcome(&ids[1], "b", 1, DeliveryStatus::Succeeded), // another owner
        outcome(&ids[2], "a", 2, DeliveryStatus::Succeeded), // not the next attempt
        outcome(&ids[3], "a", 1, DeliveryStatus::Pending),
    ];
    let recorded = store
        .write(move |tx| Box::pin(async move { tx.record_outcomes(&batch).await }))
        .await
        .unwrap();
    assert_eq!(recorded, [true, false, false, true]);
    let (ws, all) = (p.workspace_id.clone(), ids.clone());
    let seen = store
        .read(move |tx| {
            Box::pin(async move {
                let mut seen = Vec::new();
                for id in &all {
                    let d = tx.get_delivery(&ws, id).await?.unwrap();
                    seen.push((d.status, d.attempt_count, tx.list_attempts(id).await?));
                }
                Ok::<_, StoreError>(seen)
            })
        })
        .await
        .unwrap();
    assert_eq!((seen[0].0, seen[0].1), (DeliveryStatus::Succeeded, 1));
    assert_eq!(seen[0].2.len(), 1);
    assert_eq!(seen[0].2[0].status_code, Some(200));
    assert_eq!(seen[0].2[0].duration_ms, 7);
    for fenced in &seen[1..3] {
        assert_eq!((fenced.0, fenced.1), (DeliveryStatus::Pending, 0));
        assert!(fenced.2.is_empty(), "a fenced outcome writes no attempt");
    }
    assert_eq!((seen[3].0, seen[3].1), (DeliveryStatus::Pending, 1));
    assert_eq!(seen[3].2[0].error.as_deref(), Some("connection failed"));
    // The retry is due again at now + 1 s, released by the record.
    let again = claim(&store, "c", now + 1_000, 10_000, 10, vec![]).await;
    assert!(again.contains(&ids[3]));
    // The same delivery twice in one batch (attempted again after its lease ran out): the
    // first outcome is recorded, the second meets the fence it moved.
    let again = claim(&store, "d", now + 20_000, 10_000, 10, vec![]).await;
    assert!(again.contains(&ids[1]));
    let twice = vec![
        outcome(&ids[1], "d", 1, DeliveryStatus::Succeeded),
        outcome(&ids[1], "d", 1, DeliveryStatus::Succeeded),
    ];
    let recorded = store
        .write(move |tx| Box::pin(async move { tx.record_outcomes(&twice).await }))
        .await
        .unwrap();
    assert_eq!(recorded, [true, false]);
    let (ws, d) = (p.workspace_id.clone(), ids[1].clone());
    let (status, attempts) = store
        .read(move |tx| {
            Box::pin(async move {
                let status = tx.get_delivery(&ws, &d).await?.unwrap().status;
                Ok::<_, StoreError>((status, tx.list_attempts(&d).await?.len()))
            })
        })
        .await
        .unwrap();
    assert_eq!((status, attempts), (DeliveryStatus::Succeeded, 1));
    let empty: Vec<Outcome> = Vec::new();
    let none = store
        .write(move |tx| Box::pin(async move { tx.record_outcomes(&empty).await }))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// `Idempotency-Key` claims: a claim's answer is kept only under its own token and once; an
/// unanswered claim older than the bound is taken over with a new token, after which the old
/// token can neither answer nor release it; an answered claim is never released.
pub(crate) async fn idempotency_claims_are_fenced_by_their_token(store: Store) {
    let (p, _) = setup(&store).await;
    let ws = p.workspace_id.clone();
    let fp = [7u8; 32];
    let t0 = Timestamp::from_millis(Timestamp::now().as_millis() - 120_000);
    let long_ago = Timestamp::from_millis(0);
    let claim = |token: &'static str, now: Timestamp, stale_before: Timestamp| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            store
                .write(move |tx| {
                    Box::pin(async move {
                        tx.idempotency_claim(&ws, "k", &fp, token, now, long_ago, stale_before)
                            .await
                    })
                })
                .await
                .unwrap()
        }
    };
    let finish = |token: &'static str| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            store
                .write(move |tx| {
                    Box::pin(async move { tx.idempotency_finish(&ws, "k", token, 201, "{}").await })
                })
                .await
                .unwrap()
        }
    };
    let release = |token: &'static str| {
        let (store, ws) = (store.clone(), ws.clone());
        async move {
            store
                .write(move |tx| {
                    Box::pin(async move { tx.idempotency_release(&ws, "k", token).await })
                })
                .await
                .unwrap()
        }
    };
    assert!(claim("a", t0, long_ago).await.is_none(), "claimed by a");
    // Still fresh: another request sees it in progress.
    let seen = claim("b", t0, long_ago).await.expect("in progress");
    assert_eq!((seen.status, seen.claimed_at), (None, t0));
    // Past the bound: taken over by b.
    let now = Timestamp::now();
    assert!(
        claim("b", now, Timestamp::from_millis(now.as_millis() - 60_000))
            .await
            .is_none()
    );
    assert!(!finish("a").await, "the old token cannot answer");
    release("a").await;
    assert!(
        claim("c", now, long_ago).await.is_some(),
        "the old token cannot release it"
    );
    assert!(finish("b").await, "the new one answers");
    assert!(!finish("b").await, "once");
    release("b").await;
    let kept = claim("c", now, now).await.expect("answered, kept");
    assert_eq!((kept.status, kept.body.as_deref()), (Some(201), Some("{}")));
}

pub(crate) async fn skips_releases_and_cancellation(store: Store) {
    let (p, webhook) = setup(&store).await;
    projects(&store, &p, 3).await;
    let now = in_a_minute();
    assert!(
        claim(&store, "a", now, 10_000, 10, vec![webhook.clone()])
            .await
            .is_empty(),
        "skipped webhook"
    );
    let (w, n) = (webhook.clone(), Timestamp::from_millis(now));
    let due = store
        .read(move |tx| Box::pin(async move { tx.next_due_at(n, &[w]).await }))
        .await
        .unwrap();
    assert_eq!(due, None);
    let due = store
        .read(move |tx| Box::pin(async move { tx.next_due_at(n, &[]).await }))
        .await
        .unwrap();
    assert!(due.is_some_and(|d| d.as_millis() <= now));

    assert_eq!(claim(&store, "a", now, 10_000, 10, vec![]).await.len(), 3);
    let released = store
        .write(|tx| Box::pin(async move { tx.release_leases(Some("a")).await }))
        .await
        .unwrap();
    assert_eq!(released, 3);
    assert_eq!(
        claim(&store, "b", now, 10_000, 1, vec![]).await.len(),
        1,
        "released leases are claimable at once"
    );

    let (w, at) = (webhook.clone(), Timestamp::now());
    let cancelled = store
        .write(move |tx| {
            Box::pin(async move {
                tx.cancel_pending_deliveries(&w, "the webhook was disabled", at)
                    .await
            })
        })
        .await
        .unwrap();
    assert_eq!(cancelled, 3);
    assert!(
        claim(&store, "c", now + 60_000, 10_000, 10, vec![])
            .await
            .is_empty(),
        "cancelled is never claimed"
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("c.db").display());
                    super::$name(codmir_server::Store::open(&url).await.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs PostgreSQL on 127.0.0.1:5432; run `cargo test -- --ignored` (CI does)"]
                async fn $name() {
                    let db = crate::helpers::PgDb::create().await;
                    let store = codmir_server::Store::open(&db.url).await.unwrap();
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
    };
}

conformance!(
    a_failed_unit_of_work_rolls_back_alone,
    a_checked_unit_that_fails_after_writing_keeps_nothing_half_done,
    checked_ticket_units_together_each_store_their_rows_whole,
    lists_page_newest_first_by_cursor,
    a_duplicate_is_a_conflict,
    rows_read_back_as_written,
    claims_are_exclusive_until_the_lease_expires,
    outcomes_are_fenced_by_owner_and_attempt,
    outcomes_recorded_in_a_batch_are_fenced_one_by_one,
    skips_releases_and_cancellation,
    idempotency_claims_are_fenced_by_their_token,
);
