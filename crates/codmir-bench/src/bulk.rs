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
    use codmir_core::event::{Event, EventData, EventType, Ref, TicketView};
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
                id: id_at("tkt", now, seq),
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
            let mut e = Event::new(&ws, Some(&project), EventType::TicketCreated, now, &data);
            let id = id_at("evt", now, seq);
            e.payload = e.payload.replace(&e.id, &id);
            e.id = id;
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
                id_at("dlv", now, seq),
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

/// An id made at `at`, told apart by `seq`, without `new_id`: ids made in one process never go
/// back in time, so once anything in the bench made an id today (an example payload for the
/// ceilings does), `new_id` at a time 40 days ago would hand out today's ids.
fn id_at(prefix: &str, at: codmir_core::time::Timestamp, seq: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut id = codmir_core::id::floor(prefix, at).into_bytes();
    let end = id.len();
    // The last eight characters are the low 40 bits of the random part, zero in a floor.
    for i in 0..8 {
        id[end - 1 - i] = ALPHABET[((seq >> (5 * i)) & 31) as usize];
    }
    String::from_utf8(id).expect("the id alphabet is ASCII")
}

#[cfg(test)]
mod tests {
    use codmir_core::time::Timestamp;

    use super::id_at;

    #[test]
    fn ids_at_a_time_are_valid_distinct_and_in_their_millisecond() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let _today = codmir_core::id::new_id("dlv", Timestamp::now());
        let (a, b) = (id_at("dlv", at, 0), id_at("dlv", at, 1_000_000));
        assert!(codmir_core::id::is_valid("dlv", &a) && codmir_core::id::is_valid("dlv", &b));
        assert!(a < b);
        assert!(codmir_core::id::floor("dlv", at) <= a);
        assert!(b < codmir_core::id::floor("dlv", at.plus(std::time::Duration::from_millis(1))));
    }
}
