//! One attempt: send the delivery, decide what the result means (`RetrySchedule::verdict`),
//! and queue the outcome for the recorder.

use std::sync::Arc;

use std::time::Duration;

use codmir_core::event::EventType;
use codmir_core::retry::{RetrySchedule, Verdict};
use codmir_core::time::Timestamp;
use codmir_core::webhook::Attempt;
use tokio::sync::{mpsc, watch};

use super::client::Sender;
use crate::ops::Target;

/// An attempt's outcome, and the webhook it went to, on their way to the recorder.
pub(super) type Observed = (Outcome, Target);
use crate::store::{Leased, Outcome};

/// What every attempt task needs, shared by all of them.
pub(super) struct Attempter {
    pub(super) sender: Sender,
    pub(super) schedule: RetrySchedule,
    /// This node's lease owner name: the fence its outcomes are recorded under.
    pub(super) node: Arc<str>,
    pub(super) outcomes: mpsc::Sender<Observed>,
    /// Turns true when shutdown stops waiting for attempts in flight (see `Engine::cut_off`).
    pub(super) cut_off: watch::Receiver<bool>,
}

impl Attempter {
    /// Sends `work` as its next attempt, then hands the outcome and the next attempt time to
    /// the recorder, which writes it in a batch with others and wakes the loop for retries.
    pub(super) async fn attempt(&self, work: &Leased) {
        let outcome = (
            self.send(work, &self.schedule).await,
            Target {
                workspace_id: work.delivery.workspace_id.clone(),
                webhook_id: work.webhook.id.clone(),
                chain: work.delivery.chain.as_ref().map(|(r, _)| r.clone()),
            },
        );
        // If the recorder is gone (shutdown), the lease's expiry retries the delivery.
        if self.outcomes.send(outcome).await.is_err() {
            tracing::warn!(delivery = %work.delivery.id, "outcome not recorded: shutting down; it will be retried");
        }
    }

    /// One attempt whose outcome the caller records itself, never retried: a test ping.
    pub(super) async fn probe(&self, work: &Leased) -> Outcome {
        self.send(work, &RetrySchedule::none()).await
    }

    /// Sends `work` as its next attempt and decides, by `schedule`, what the result means.
    async fn send(&self, work: &Leased, schedule: &RetrySchedule) -> Outcome {
        let number = work.delivery.attempt_count + 1;
        let started = Timestamp::now();
        let clock = std::time::Instant::now();
        let mut cut_off = self.cut_off.clone();
        let result = if fault::succeed_without_sending() {
            fault::pretend_success()
        } else {
            tokio::select! {
                result = self.sender.send(work, number, started) => result,
                Ok(_) = cut_off.wait_for(|cut| *cut) => super::client::AttemptResult::interrupted(),
            }
        };
        let duration_ms = clock.elapsed().as_millis() as u64;
        // An interrupted attempt is not the endpoint's failure: due again at once (after a
        // restart, or on another node), whatever the schedule says.
        let verdict = if result.interrupted {
            Verdict::RetryAt(Timestamp::now())
        } else {
            schedule.verdict(
                result.succeeded(),
                result.status_code,
                result.retry_after,
                number,
                jitter_unit(),
                Timestamp::now(),
            )
        };
        let (new_status, next_attempt_at) = verdict.status();
        let took = clock.elapsed();
        let class = crate::telemetry::status_class(result.status_code, result.error.as_deref());
        let meaning = match verdict {
            Verdict::Succeeded => "succeeded",
            Verdict::RetryAt(_) => "retry",
            Verdict::Failed | Verdict::Gone => "failed",
        };
        let since_commit = (verdict == Verdict::Succeeded).then(|| {
            Duration::from_millis(
                (Timestamp::now().as_millis() - work.delivery.created_at.as_millis()).max(0) as u64,
            )
        });
        crate::telemetry::attempt(class, took, meaning, since_commit);
        if verdict != Verdict::Succeeded {
            log_failure(work, number, &result, duration_ms, verdict);
        }
        Outcome {
            attempt: Attempt {
                delivery_id: work.delivery.id.clone(),
                attempt: number,
                attempted_at: started,
                duration_ms,
                status_code: result.status_code,
                error: match verdict {
                    Verdict::Gone => Some(GONE.to_owned()),
                    _ => result.error,
                },
                response_body: result.response_body,
                request_headers: result.request_headers,
                response_headers: result.response_headers,
            },
            lease_owner: self.node.to_string(),
            new_status,
            next_attempt_at,
        }
    }
}

/// Why a delivery answered `410 Gone` ended: kept with its attempt.
const GONE: &str = "the endpoint answered 410 Gone: the webhook is disabled, and this delivery \
                    ended failed (nothing more is sent to it)";

/// One line per failed attempt (`warn`), and one more when it ends the delivery (`error`),
/// with the ids that find it; the URL without its query string (userinfo is refused when a
/// webhook is registered), never a secret.
fn log_failure(
    work: &Leased,
    attempt: u32,
    result: &super::client::AttemptResult,
    duration_ms: u64,
    verdict: Verdict,
) {
    let url = work.webhook.url.as_str();
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let status = result.status_code.map(|s| s.to_string());
    let status = status.as_deref().unwrap_or("-");
    let error = result.error.as_deref().unwrap_or("-");
    let (event_id, delivery_id, webhook_id) = (
        work.delivery.event_id.as_str(),
        work.delivery.id.as_str(),
        work.webhook.id.as_str(),
    );
    if work.delivery.event_type == EventType::WebhookPing {
        // A test, answered to whoever asked for it: not a failure of record.
        tracing::info!(
            delivery_id,
            webhook_id,
            status,
            error,
            duration_ms,
            url,
            "test ping not accepted"
        );
        return;
    }
    let next_attempt_at = match verdict {
        Verdict::RetryAt(at) => Some(at.to_rfc3339_millis()),
        _ => None,
    };
    // Not "will retry": the retry is planned, and holds once the outcome is recorded under
    // this node's lease (a lost lease is logged by the recorder as not recorded).
    let what = "delivery attempt failed";
    tracing::warn!(
        event_id,
        delivery_id,
        webhook_id,
        attempt,
        status,
        error,
        duration_ms,
        url,
        next_attempt_at = next_attempt_at.as_deref(),
        "{what}"
    );
    if verdict == Verdict::Gone {
        // The endpoint's own request, not a failure of ours: the recorder disables the webhook.
        tracing::warn!(
            event_id,
            delivery_id,
            webhook_id,
            attempts = attempt,
            url,
            "delivery failed: the endpoint answered 410 Gone; the webhook is disabled and sent nothing more"
        );
    } else if next_attempt_at.is_none() {
        tracing::error!(
            event_id,
            delivery_id,
            webhook_id,
            attempts = attempt,
            status,
            error,
            url,
            "delivery failed: no retries left"
        );
    }
}

/// A number in [0, 1) for retry jitter.
fn jitter_unit() -> f64 {
    let mut b = [0u8; 4];
    codmir_core::id::random_bytes(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// A deliberately broken sender, for proving that the fault-injection run's checker catches
/// a broken promise: with the `fault-switches` feature (test builds only: `cargo test` turns
/// it on through a dev-dependency; release builds have none of it) and
/// `CODMIR_FAULT_SUCCEED_WITHOUT_SENDING=1`, one attempt in ten is recorded as a 200 without
/// any request being made.
mod fault {
    #[cfg(feature = "fault-switches")]
    pub(super) fn succeed_without_sending() -> bool {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static ON: OnceLock<bool> = OnceLock::new();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        *ON.get_or_init(|| std::env::var_os("CODMIR_FAULT_SUCCEED_WITHOUT_SENDING").is_some())
            && COUNT.fetch_add(1, Ordering::Relaxed).is_multiple_of(10)
    }

    #[cfg(not(feature = "fault-switches"))]
    pub(super) fn succeed_without_sending() -> bool {
        false
    }

    pub(super) fn pretend_success() -> super::super::client::AttemptResult {
        super::super::client::AttemptResult {
            status_code: Some(200),
            error: None,
            response_body: None,
            retry_after: None,
            interrupted: false,
            request_headers: None,
            response_headers: None,
        }
    }
}
