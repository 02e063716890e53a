//! Group commit with set-based inserts, for units of work whose every refusal comes before
//! their first write (`Store::write_checked`: ticket and comment writes, outcomes).
//!
//! Row-at-a-time statements cap PostgreSQL near 2,500 events/s on this machine class however
//! commits are grouped (each statement is ~80 µs of server CPU plus a round trip). So a few
//! batcher tasks each take every checked unit queued, run them in one transaction, and hold
//! back the rows they insert into `tickets`, `events` and `deliveries`: those go in as one
//! `INSERT … SELECT FROM unnest(…)` per table just before the commit, or before any other
//! statement of the transaction, so that every statement still sees every earlier write.
//!
//! A unit that fails while writing (only the database can make a checked unit do that), or
//! whose statement failed (which aborts a PostgreSQL transaction), rolls the whole batch
//! back: each of its units is answered with a transient error (`StoreError::RolledBack`, or
//! the database's own when it was down), and nothing half-written is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use codmir_core::event::Event;
use codmir_core::time::Timestamp;
use codmir_core::tracker::Ticket;
use codmir_core::webhook::Delivery;
use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc;

use super::super::conn::HeldRow;
use super::super::seal::KeyRing;
use super::super::sql::postgres_only as q;
use super::super::{FanoutCache, Job, Ran, StoreError, StoreResult, spoiled_by};
use super::{Commit, Params, PgTx, connection, run_until};

/// Most units in one transaction.
const MAX_BATCH: usize = 64;

/// Rows inserted by the units of a batch and not yet sent.
#[derive(Default)]
pub(super) struct Held {
    tickets: Vec<(Ticket, u64)>,
    events: Vec<Event>,
    deliveries: Vec<(Delivery, Option<(String, i64)>)>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.tickets.is_empty() && self.events.is_empty() && self.deliveries.is_empty()
    }
}

/// What a [`PgTx`] in a batch holds besides its connection.
pub(super) struct InBatch<'b> {
    pub(super) held: &'b Mutex<Held>,
    /// A statement of the current unit failed (the transaction is aborted), with its error.
    pub(super) failed: Mutex<Option<StoreError>>,
    /// Each workspace's `webhooks_version` as first read in this batch. Every unit of a
    /// batch was submitted before the batch began, so a version read after that is recent
    /// enough for all of them: no webhook write they could have seen committed is missed.
    pub(super) versions: &'b Mutex<HashMap<String, i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgTx<'_> {
    /// Holds a row back for the batch's insert; `false` outside a batch.
    pub(super) fn hold_row(&self, row: HeldRow<'_>) -> bool {
        let Some(batch) = &self.batch else {
            return false;
        };
        let mut held = lock(batch.held);
        match row {
            HeldRow::Ticket(t, n) => held.tickets.push((t.clone(), n)),
            HeldRow::Event(e) => held.events.push(e.clone()),
            HeldRow::Delivery(d, lease) => held.deliveries.push((
                d.clone(),
                lease.map(|l| (l.owner.clone(), l.until.as_millis())),
            )),
        }
        true
    }

    /// The workspace's webhooks version already read in this batch.
    pub(super) fn batch_version(&self, ws: &str) -> Option<i64> {
        let batch = self.batch.as_ref()?;
        lock(batch.versions).get(ws).copied()
    }

    pub(super) fn remember_version(&self, ws: &str, version: i64) {
        if let Some(batch) = &self.batch {
            lock(batch.versions).insert(ws.to_owned(), version);
        }
    }

    /// Before a statement: the rows held back go in first.
    pub(super) async fn before(&self, sql: &str) -> StoreResult<()> {
        let Some(batch) = &self.batch else {
            return Ok(());
        };
        if !sql.trim_start().starts_with("SELECT") {
            // It may have been a webhook write (an outcome can disable one): the next fan-out
            // reads the version again.
            lock(batch.versions).clear();
        }
        let held = std::mem::take(&mut *lock(batch.held));
        if held.is_empty() {
            return Ok(());
        }
        let sent = insert_held(self.client, held).await;
        self.after(sent)
    }

    /// After a statement: a failed one has aborted the transaction.
    pub(super) fn after<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if let (Err(e), Some(batch)) = (&result, &self.batch) {
            lock(&batch.failed).get_or_insert_with(|| e.clone());
        }
        result
    }
}

/// One column of the held rows, as the array `unnest` takes.
fn col<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// One statement per table for the rows held back, in the order the foreign keys need.
async fn insert_held(client: &Object, held: Held) -> StoreResult<()> {
    let t = &held.tickets;
    if !t.is_empty() {
        let params: Params<'_> = &[
            &col(t, |(x, _)| x.id.as_str()),
            &col(t, |(x, _)| x.workspace_id.as_str()),
            &col(t, |(x, _)| x.project_id.as_str()),
            &col(t, |(x, _)| x.title.as_str()),
            &col(t, |(x, _)| x.description.as_deref()),
            &col(t, |(x, _)| x.status.as_str()),
            &col(t, |(x, _)| x.priority.as_str()),
            &col(t, |(x, _)| x.assignee_id.as_deref()),
            &col(t, |(x, _)| x.created_by.as_str()),
            &col(t, |(x, _)| x.created_at.as_millis()),
            &col(t, |(x, _)| x.updated_at.as_millis()),
            &col(t, |(_, n)| *n as i64),
        ];
        execute(client, q::INSERT_TICKETS, params).await?;
    }
    let e = &held.events;
    if !e.is_empty() {
        let params: Params<'_> = &[
            &col(e, |x| x.id.as_str()),
            &col(e, |x| x.workspace_id.as_str()),
            &col(e, |x| x.project_id.as_deref()),
            &col(e, |x| x.event_type.as_str()),
            &col(e, |x| x.created_at.as_millis()),
            &col(e, |x| x.payload.as_str()),
        ];
        execute(client, q::INSERT_EVENTS, params).await?;
    }
    let d = &held.deliveries;
    if !d.is_empty() {
        let params: Params<'_> = &[
            &col(d, |(x, _)| x.id.as_str()),
            &col(d, |(x, _)| x.workspace_id.as_str()),
            &col(d, |(x, _)| x.webhook_id.as_str()),
            &col(d, |(x, _)| x.event_id.as_str()),
            &col(d, |(x, _)| x.event_type.as_str()),
            &col(d, |(x, _)| x.status.as_str()),
            &col(d, |(x, _)| x.attempt_count as i32),
            &col(d, |(x, _)| x.next_attempt_at.map(Timestamp::as_millis)),
            &col(d, |(x, _)| x.created_at.as_millis()),
            &col(d, |(x, _)| x.updated_at.as_millis()),
            &col(d, |(x, _)| x.redelivery_of.as_deref()),
            &col(d, |(_, l)| l.as_ref().map(|(owner, _)| owner.as_str())),
            &col(d, |(_, l)| l.as_ref().map(|(_, until)| *until)),
            &col(d, |(x, _)| x.chain.as_ref().map(|(r, _)| r.as_str())),
            &col(d, |(x, _)| x.chain.as_ref().map(|(_, n)| *n as i64)),
        ];
        execute(client, q::INSERT_DELIVERIES, params).await?;
    }
    Ok(())
}

/// Runs a statement prepared once per connection; the rows it changed.
async fn execute(client: &Object, sql: &str, params: Params<'_>) -> StoreResult<u64> {
    let stmt = client.prepare_cached(sql).await?;
    Ok(client.execute(&stmt, params).await?)
}

/// The checked units waiting for a batcher.
pub(super) type Queue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Box<dyn Job>>>>;

/// Takes every checked unit queued (up to [`MAX_BATCH`]) and runs them as one transaction,
/// until the store is dropped. While one batcher's transaction runs, the next batcher waits
/// on the queue, so what arrives meanwhile goes into one batch.
pub(super) async fn batcher(
    queue: Queue,
    pool: Pool,
    keys: Option<Arc<KeyRing>>,
    fanout: Arc<FanoutCache>,
) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            jobs.push(first);
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        // In a task of its own, as a single unit's is: a unit that panics ends its batch (its
        // callers are told the store closed), not this batcher.
        let batch = tokio::spawn(run_batch(pool.clone(), keys.clone(), fanout.clone(), jobs));
        if batch.await.is_err() {
            tracing::error!("a batch of units of work panicked; its callers were answered");
        }
    }
}

async fn run_batch(
    pool: Pool,
    keys: Option<Arc<KeyRing>>,
    fanout: Arc<FanoutCache>,
    mut jobs: Vec<Box<dyn Job>>,
) {
    let (keys, fanout) = (keys.as_deref(), &*fanout);
    // Units whose callers' deadline passed while they queued are answered without running;
    // the rest get until the earliest deadline among them.
    let now = tokio::time::Instant::now();
    let (live, late): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.deadline() > now);
    for job in late {
        job.finish(Err(StoreError::Unreachable {
            context: "no database connection before the request's deadline".into(),
            source: None,
        }));
    }
    jobs = live;
    let Some(deadline) = jobs.iter().map(|j| j.deadline()).min() else {
        return;
    };
    let conn = match connection(&pool, deadline).await {
        Ok(c) => c,
        Err(e) => return jobs.into_iter().for_each(|j| j.finish(Err(e.clone()))),
    };
    // Units with a lock key in its order (`Job::lock_key`); the others, first, as they came.
    jobs.sort_by(|a, b| a.lock_key().cmp(&b.lock_key()));
    let began = std::time::Instant::now();
    let held = Mutex::new(Held::default());
    let versions = Mutex::default();
    let commit = Commit::default();
    let run = async {
        conn.batch_execute("BEGIN").await?;
        for job in &mut jobs {
            let mut tx = PgTx {
                client: &conn,
                keys,
                fanout,
                batch: Some(InBatch {
                    held: &held,
                    failed: Mutex::new(None),
                    versions: &versions,
                }),
            };
            let ran = job.run(&mut tx).await;
            let batch = tx.batch.take().expect("set above");
            // A unit refused by its checks wrote nothing (`ReadTx`); but a statement that
            // failed, even a read, has aborted the transaction.
            match (ran, lock(&batch.failed).take()) {
                (Ran::Done | Ran::Refused, None) => {}
                (Ran::Failed(cause), None) => return Err(spoiled_by(cause)),
                (_, Some(failed)) => return Err(spoiled_by(Some(failed))),
            }
        }
        let rest = std::mem::take(&mut *lock(&held));
        insert_held(&conn, rest).await?;
        commit.send(&conn).await
    };
    let result: StoreResult<()> = match tokio::time::timeout_at(run_until(deadline), run).await {
        Ok(result) => result,
        Err(_) => {
            // As for a single unit (`run_job`): the connection is in an unknown state.
            drop(Object::take(conn));
            let result = commit.settle(&pool, deadline, Err(commit.cut_off())).await;
            return jobs.into_iter().for_each(|j| j.finish(result.clone()));
        }
    };
    if result.is_err() {
        let _ = conn.batch_execute("ROLLBACK").await;
    }
    // Its pool slot is free for finding out what became of a lost commit.
    drop(conn);
    let result = commit.settle(&pool, deadline, result).await;
    if result.is_ok() {
        crate::telemetry::commit("postgres", jobs.len(), began.elapsed());
    }
    for job in jobs {
        job.finish(result.clone());
    }
}
