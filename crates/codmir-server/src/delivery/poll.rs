//! When the engine loop next looks in the database for due work: a plain state machine that
//! the loop feeds with what happened and asks what to do, so its rules are tested without a
//! runtime.

use tokio::time::Instant;

/// Whether a claim is due, and the one timer that wakes the loop for the next due delivery.
///
/// A claim is due when something says there may be work (the start, a wake-up from another
/// node or the recorder, a skipped webhook that drained, the timer firing) or while claims
/// come back full. After a claim that was not full the loop sets when the next delivery is
/// due; each new deadline arms the timer for exactly one firing, and an armed timer stays
/// armed until it fires. (A guard on the sleep's `is_elapsed` instead lost firings that
/// happened while the loop was busy elsewhere, and the loop stopped polling until something
/// else woke it.)
#[derive(Debug)]
pub(super) struct PollTimer {
    /// Something said there may be work.
    now: bool,
    /// The last claim was full: more due work is likely waiting.
    more: bool,
    /// A new deadline the timer has not been reset to yet.
    pending: Option<Instant>,
    /// The timer was reset and has not fired since.
    armed: bool,
}

impl PollTimer {
    /// A claim is due at once: on start, whatever is due was left by an earlier run.
    pub(super) fn new() -> Self {
        Self {
            now: true,
            more: false,
            pending: None,
            armed: false,
        }
    }

    pub(super) fn claim_due(&self) -> bool {
        self.now || self.more
    }

    /// Something says there may be work now (a wake-up, a drained webhook).
    pub(super) fn poke(&mut self) {
        self.now = true;
    }

    /// A claim starts: what made it due is spent.
    pub(super) fn claiming(&mut self) {
        self.now = false;
    }

    /// The claim came back `full` (as many as asked for): claim again at once. Otherwise the
    /// caller sets the next deadline with [`PollTimer::look_at`].
    pub(super) fn claimed(&mut self, full: bool) {
        self.more = full;
    }

    /// The claim failed: try again at `at`, not in a loop.
    pub(super) fn failed(&mut self, at: Instant) {
        self.more = false;
        self.look_at(at);
    }

    /// Look in the database again at `at`.
    pub(super) fn look_at(&mut self, at: Instant) {
        self.pending = Some(at);
    }

    /// The deadline to reset the timer to, once per [`PollTimer::look_at`]; the timer is
    /// armed from then until it fires.
    pub(super) fn take_reset(&mut self) -> Option<Instant> {
        let at = self.pending.take()?;
        self.armed = true;
        Some(at)
    }

    /// Whether the loop should wait on the timer (a fired timer stays ready forever, so it is
    /// only waited on while armed).
    pub(super) fn armed(&self) -> bool {
        self.armed
    }

    /// The timer fired: a claim is due.
    pub(super) fn fired(&mut self) {
        self.armed = false;
        self.now = true;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One step of the loop's life, and what the timer must say after it.
    enum Step {
        Claiming,
        Claimed { full: bool, next_in_ms: Option<u64> },
        Failed,
        Reset,
        Fired,
        Poke,
    }

    /// A case: its name, its steps, and after them whether a claim is due, whether the timer
    /// is armed, and the deadline a reset would take next.
    type Case<'a> = (&'a str, &'a [Step], bool, bool, Option<Instant>);

    #[test]
    fn the_timer_follows_its_rules() {
        use Step::*;
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let table: &[Case] = &[
            ("a new loop claims at once", &[], true, false, None),
            (
                "a full claim claims again",
                &[
                    Claiming,
                    Claimed {
                        full: true,
                        next_in_ms: None,
                    },
                ],
                true,
                false,
                None,
            ),
            (
                "a partial claim waits for the next due delivery",
                &[
                    Claiming,
                    Claimed {
                        full: false,
                        next_in_ms: Some(300),
                    },
                ],
                false,
                false,
                Some(ms(300)),
            ),
            (
                "each deadline arms the timer once",
                &[
                    Claiming,
                    Claimed {
                        full: false,
                        next_in_ms: Some(300),
                    },
                    Reset,
                ],
                false,
                true,
                None,
            ),
            (
                "an armed timer stays armed however late the loop looks",
                &[
                    Claiming,
                    Claimed {
                        full: false,
                        next_in_ms: Some(1),
                    },
                    Reset,
                    Poke,
                    Claiming,
                ],
                false,
                true,
                None,
            ),
            (
                "a firing makes a claim due and disarms",
                &[
                    Claiming,
                    Claimed {
                        full: false,
                        next_in_ms: Some(1),
                    },
                    Reset,
                    Fired,
                ],
                true,
                false,
                None,
            ),
            (
                "a wake-up makes a claim due and leaves the timer alone",
                &[
                    Claiming,
                    Claimed {
                        full: false,
                        next_in_ms: Some(500),
                    },
                    Reset,
                    Poke,
                ],
                true,
                true,
                None,
            ),
            (
                "a failed claim retries at its deadline, not at once",
                &[Claiming, Failed],
                false,
                false,
                Some(ms(1000)),
            ),
        ];
        for (name, steps, due, armed, next_reset) in table {
            let mut timer = PollTimer::new();
            for step in steps.iter() {
                match step {
                    Claiming => timer.claiming(),
                    Claimed { full, next_in_ms } => {
                        timer.claimed(*full);
                        if let Some(n) = next_in_ms {
                            timer.look_at(ms(*n));
                        }
                    }
                    Failed => timer.failed(ms(1000)),
                    Reset => {
                        assert!(
                            timer.take_reset().is_some(),
                            "{name}: a deadline to reset to"
                        );
                    }
                    Fired => timer.fired(),
                    Poke => timer.poke(),
                }
            }
            assert_eq!(timer.claim_due(), *due, "{name}: claim due");
            assert_eq!(timer.armed(), *armed, "{name}: armed");
            assert_eq!(timer.take_reset(), *next_reset, "{name}: next reset");
        }
    }
}
