//! When the database work of a request must be answered by, whatever it waits for.
//!
//! The README promises that while the database is unreachable the API answers within 15 s.
//! Each wait of a unit of work has a bound of its own (a connection from the pool, the unit's
//! statements, a place in PostgreSQL's batch queue), and a request may run several units (its
//! `Idempotency-Key` claim, its work, its answer), so bounding each wait alone lets their sum
//! pass 15 s. Instead each request has one deadline ([`scope`]; its clock starts at its first
//! unit of work, so a slow upload does not spend it), every unit submitted while it is in
//! scope carries it ([`current`]), and the backend gives up on a unit at that
//! deadline: not started yet, it is answered unreachable without running; started, its
//! connection is dropped as for any unit that timed out (and if its `COMMIT` was sent, the
//! answer says the outcome is unknown).
//!
//! Work outside a request (the engine's claims and outcomes) gets [`ANSWER_WITHIN`] from its
//! submission. The PostgreSQL backend keeps the deadline; SQLite's units wait only for the
//! node's own writer and disk, which do not go away as a server can, so it has none to keep.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Longest a request waits for its database work while the database is unreachable: the
/// README's 15 s less a second for the rest of its answer (the request before its first unit,
/// the answer after its last).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(14);

tokio::task_local! {
    static DEADLINE: Cell<Option<Instant>>;
}

/// Runs `work` (a request) with one deadline for every unit of work it submits: `deadline`,
/// or [`ANSWER_WITHIN`] from its first unit.
pub async fn scope<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    DEADLINE.scope(Cell::new(deadline), work).await
}

/// The deadline of the request running in this task (set now if this is its first unit), or
/// [`ANSWER_WITHIN`] from now outside a request.
pub fn current() -> Instant {
    let from_now = || Instant::now() + ANSWER_WITHIN;
    DEADLINE
        .try_with(|d| {
            let deadline = d.get().unwrap_or_else(from_now);
            d.set(Some(deadline));
            deadline
        })
        .unwrap_or_else(|_| from_now())
}
