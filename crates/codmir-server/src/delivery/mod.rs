//! The delivery engine: takes deliveries (handed over in-process by the commit that created
//! them, or claimed from the database with a lease), sends them, records each attempt and
//! schedules retries.
//!
//! [`spawn`] starts the loop and returns its [`Engine`] handle. The fast path: a unit of work
//! writes its new deliveries already leased to this node, and after the commit the API hands
//! them over with [`Engine::after_commit`]; they are sent at once, with no claim query and no
//! polling. The database is claimed from only for retries coming due, for work of other nodes
//! whose lease expired, and on start.
//!
//! Architecture invariant: no transaction is open while a request is in flight — claim or
//! commit (a short write), send, then record the outcome (a short write, batched with other
//! outcomes by the recorder).
//!
//! The parts: `handle.rs` (what the API holds), `dispatcher.rs` (the loop), `queues.rs` (the
//! per-webhook lanes and bounds), `budget.rs` (how busy the API is, and the rate of claimed
//! work while it is), `poll.rs` (when to look in the database), `attempt.rs` (one attempt and
//! its verdict), `recorder.rs` (batched outcomes), `client.rs` (the signed POST), `connect.rs` (its
//! connections: resolution under the target policy, TLS, the idle pool).

mod attempt;
mod budget;
mod client;
mod connect;
mod dispatcher;
mod handle;
mod poll;
mod queues;
mod recorder;

use std::sync::Arc;
use std::time::Duration;

use codmir_core::id::new_id;
use codmir_core::time::Timestamp;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

pub use budget::ApiWork;
pub use client::{
    AttemptResult, MAX_RESPONSE_LOGGED, MAX_RESPONSE_READ, Sender, USER_AGENT_VALUE,
    ordered_headers, signed_headers,
};
pub use handle::Engine;

use crate::config::Config;
use crate::store::Store;
use crate::tasks::Tasks;

/// Batches of handed-off deliveries that may wait for the engine loop.
const HANDOFF_DEPTH: usize = 4096;

/// How long a lease lasts: the configured length, and at least a whole attempt, its record
/// and a second to wait for its turn. An attempt starts only while the lease outlasts it
/// (`Bounds::lease_deadline`: the request's time bound and a second); a lease of exactly that
/// length (a `--request-timeout` of 59 s with the default 60 s lease) had run too short by the
/// time any delivery got its turn, and every one was left for a claim that leased it just as
/// short, for ever. Short leases stay short: they are how fast another node takes over.
fn lease_duration(config: &Config) -> Duration {
    config
        .lease_duration
        .max(config.request_timeout + Duration::from_secs(2))
}

/// Starts the engine loop on `store`; it runs until `shutdown` turns true and its task ends
/// once in-flight attempts have finished (bounded by the configured grace).
pub fn spawn(
    store: Store,
    config: Arc<Config>,
    tasks: Tasks,
) -> Result<(Engine, JoinHandle<()>), rustls::Error> {
    let sender = Sender::new(
        config.connect_timeout,
        config.request_timeout,
        config.target_policy(),
        tasks.clone(),
    )?;
    let node: Arc<str> = new_id("node", Timestamp::now()).into();
    let lease = lease_duration(&config);
    let (inbox_tx, inbox) = mpsc::channel(HANDOFF_DEPTH);
    let (outcomes, recorded) = mpsc::channel(recorder::OUTCOME_DEPTH);
    let wake = Arc::new(Notify::new());
    let load = Arc::new(budget::ApiLoad::default());
    let (cut_off, cut_off_rx) = watch::channel(false);
    let cut_off = Arc::new(cut_off);
    let attempter = Arc::new(attempt::Attempter {
        sender,
        schedule: config.retry_schedule.clone(),
        node: node.clone(),
        outcomes,
        cut_off: cut_off_rx,
    });
    let engine = Engine {
        store: store.clone(),
        node: node.clone(),
        lease,
        inbox: inbox_tx,
        wake: wake.clone(),
        load: load.clone(),
        attempter: attempter.clone(),
        cut_off: cut_off.clone(),
        tasks: tasks.clone(),
    };
    let dispatcher = dispatcher::Dispatcher {
        attempter,
        store,
        config,
        node,
        lease,
        inbox,
        wake,
        load,
        recorded,
        engine: engine.clone(),
    };
    let task = tasks.spawn(dispatcher.run(tasks.clone()));
    Ok((engine, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_leaves_room_to_wait_before_an_attempt_of_any_length() {
        for secs in [1, 15, 58, 59, 60, 300] {
            let config = Config {
                request_timeout: Duration::from_secs(secs),
                ..Config::default()
            };
            let lease = lease_duration(&config);
            // What an attempt needs when it starts, and a second to wait for its turn.
            let needed = config.request_timeout + Duration::from_secs(1);
            assert!(
                lease >= needed + Duration::from_secs(1),
                "{secs} s: {lease:?}"
            );
        }
        // A lease configured longer is kept as it is: short leases are fast takeovers.
        let short = Config {
            request_timeout: Duration::from_secs(2),
            lease_duration: Duration::from_secs(4),
            ..Config::default()
        };
        assert_eq!(lease_duration(&short), Duration::from_secs(4));
        assert_eq!(lease_duration(&Config::default()), Duration::from_secs(60));
    }
}
