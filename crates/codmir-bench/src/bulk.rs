//! The bulk path of the `backlog` scenario: events and deliveries written straight into the
//! SQLite file while no server runs.

use std::path::Path;

use anyhow::Result;

/// Writes `n` pending `ticket.created` deliveries to `webhook` straight into the SQLite file
/// (the bulk path: the API would take minutes to make a million).
pub(crate) fn bulk_backlog(path: &Path, webhook: &str, n: u64, status: &str) -> Result<()> {
    bulk_at(
        path,
        webhook,
        n,
        status,
        codmir_core::time::Timestamp::now(),
    )
}

/// Like [`bulk_backlog`], with every row made at `now` (in the past, for retention).
pub(crate) fn bulk_at(
    path: &Path,
    webhook: &str,
    n: u64,
    status: &str,
    now: codmir_core::time::Timestamp,
) -> Result<()> {
    use codmir_core::event::{EventData, EventType, Ref, TicketView, UnstampedEvent};
    // Not `new_id`: the rows are dated `now`, which may be in the past (see `numbered`).
    use codmir_core::id::numbered;
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    let (ws, project): (String, String) =
        tx.query_row("SELECT workspace_id, id FROM projects LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    {
        let mut ev = tx.prepare("INSERT INTO events (id, workspace_id, project_id, type, created_at, payload) VALUES (?1, ?2, ?3, 'ticket.created', ?4, ?5)")?;
        let mut dl = tx.prepare(
            "INSERT INTO deliveries (id, workspace_id, webhook_id, event_id, event_type, status, attempt_count, next_attempt_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 'ticket.created', ?5, ?6, ?7, ?8, ?8)",
        )?;
        for seq in 0..n {
            let ticket = TicketView {
                id: numbered("tkt", now, seq),
                project_id: project.clone(),
                title: format!("b{seq}"),
                description: None,
                status: "open",
                priority: "medium",
                assignee_id: None,
                created_by: "usr_bench".into(),
                created_at: now.to_rfc3339_millis(),
                updated_at: now.to_rfc3339_millis(),
            };
            let data = EventData {
                ticket: Some(ticket),
                project: Some(Ref {
                    id: project.clone(),
                    name: "bench".into(),
                }),
                user: Some(Ref {
                    id: "usr_bench".into(),
                    name: "bench".into(),
                }),
                ..EventData::default()
            };
            let e = UnstampedEvent::new(&ws, Some(&project), EventType::TicketCreated, &data)
                .stamp_with(numbered("evt", now, seq), now, None);
            ev.execute(rusqlite::params![
                e.id,
                ws,
                project,
                now.as_millis(),
                e.payload
            ])?;
            let (attempts, next) = if status == "pending" {
                (0, Some(now.as_millis()))
            } else {
                (1, None)
            };
            dl.execute(rusqlite::params![
                numbered("dlv", now, seq),
                ws,
                webhook,
                e.id,
                status,
                attempts,
                next,
                now.as_millis()
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}
