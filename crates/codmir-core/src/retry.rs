//! The retry policy: the delays between attempts, with jitter, `Retry-After`, and what an
//! attempt's result means for its delivery ([`RetrySchedule::verdict`]).

use std::time::Duration;

use crate::ValidationError;
use crate::time::Timestamp;
use crate::webhook::DeliveryStatus;

/// What an attempt's result means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: delivered.
    Succeeded,
    /// Not delivered; try again at this time.
    RetryAt(Timestamp),
    /// Not delivered and the schedule is spent.
    Failed,
    /// The endpoint answered `410 Gone`: it asks to be sent nothing more. Failed at once; the
    /// recorder disables the webhook.
    Gone,
}

impl Verdict {
    /// The delivery's new status and next attempt time.
    pub fn status(self) -> (DeliveryStatus, Option<Timestamp>) {
        match self {
            Verdict::Succeeded => (DeliveryStatus::Succeeded, None),
            Verdict::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
            Verdict::Failed | Verdict::Gone => (DeliveryStatus::Failed, None),
        }
    }
}

/// The delays between attempts; its length is the number of retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// Jitter applied to every delay: the delay is multiplied by a factor in [0.8, 1.2].
pub const JITTER: f64 = 0.2;

/// The longest wait a `Retry-After` header may impose on one retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Default for RetrySchedule {
    /// About three days in all, as Stripe and the Standard Webhooks specification do:
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
    fn default() -> Self {
        const M: u64 = 60;
        const H: u64 = 3600;
        Self(
            [
                5,
                5 * M,
                30 * M,
                2 * H,
                5 * H,
                10 * H,
                14 * H,
                20 * H,
                24 * H,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

impl RetrySchedule {
    /// Parses `1s,2s,4s` (units `ms`, `s`, `m`, `h`, `d`). An empty string means no retries.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(Self(Vec::new()));
        }
        raw.split(',')
            .map(|part| parse_duration(part.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// No retries: the first failure is final (test pings).
    pub fn none() -> Self {
        Self(Vec::new())
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// The delay before the next attempt after `attempts_made` attempts failed, jittered by
    /// `unit` (a number in [0, 1), e.g. from a random source); `None` once retries are spent.
    pub fn next_delay(&self, attempts_made: u32, unit: f64) -> Option<Duration> {
        let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
        let base = *self.0.get(index)?;
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }
}

impl RetrySchedule {
    /// What attempt number `attempt` (1 for the first) came to, decided at `now`: a success
    /// settles the delivery, a `410 Gone` (`status`) ends it; another failure is retried after the schedule's jittered delay (by
    /// `unit`, a draw in [0, 1)), or later if the endpoint's `Retry-After` asked for more,
    /// until the schedule is spent.
    pub fn verdict(
        &self,
        succeeded: bool,
        status: Option<u16>,
        retry_after: Option<Duration>,
        attempt: u32,
        unit: f64,
        now: Timestamp,
    ) -> Verdict {
        if succeeded {
            return Verdict::Succeeded;
        }
        if status == Some(410) {
            return Verdict::Gone;
        }
        match self.next_delay(attempt, unit) {
            Some(delay) => {
                let delay = retry_after.map_or(delay, |asked| asked.max(delay));
                Verdict::RetryAt(now.plus(delay))
            }
            None => Verdict::Failed,
        }
    }
}

impl std::fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| format!("{}ms", d.as_millis()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses `250ms`, `5s`, `30m`, `2h`, `1d`.
pub fn parse_duration(raw: &str) -> Result<Duration, ValidationError> {
    let invalid = || {
        ValidationError::new(
            "retry_schedule",
            format!("`{raw}` is not a duration like 500ms, 5s, 30m, 2h or 1d"),
        )
    };
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
    .ok_or_else(invalid)?;
    if millis > 30 * 86_400_000 {
        return Err(ValidationError::new(
            "retry_schedule",
            format!("`{raw}` is longer than 30 days"),
        ));
    }
    Ok(Duration::from_millis(millis))
}

/// The wait a `Retry-After` header value asks for, in delta-seconds form, capped at
/// [`MAX_RETRY_AFTER`]. HTTP dates are not honoured.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedules() {
        let s = RetrySchedule::parse("1s, 250ms,2m").unwrap();
        assert_eq!(
            s.delays(),
            [
                Duration::from_secs(1),
                Duration::from_millis(250),
                Duration::from_secs(120)
            ]
        );
        assert!(RetrySchedule::parse("").unwrap().delays().is_empty());
        for bad in ["1", "s", "1x", "-1s", "1s,,2s", "99999d"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RetrySchedule::default().delays().len(), 9);
    }

    #[test]
    fn delays_are_jittered_within_twenty_percent_and_end() {
        let s = RetrySchedule::parse("10s,20s").unwrap();
        assert_eq!(s.next_delay(1, 0.0), Some(Duration::from_secs(8)));
        assert_eq!(s.next_delay(1, 1.0), Some(Duration::from_secs(12)));
        assert_eq!(s.next_delay(2, 0.5), Some(Duration::from_secs(20)));
        assert_eq!(s.next_delay(3, 0.5), None);
        assert_eq!(s.next_delay(0, 0.5), None);
    }

    #[test]
    fn an_attempts_result_decides_the_delivery() {
        let s = RetrySchedule::parse("10s,20s").unwrap();
        let now = Timestamp::from_millis(1_000_000);
        let at = |secs: u64| Verdict::RetryAt(now.plus(Duration::from_secs(secs)));
        let secs = |n: u64| Some(Duration::from_secs(n));
        // (succeeded, status, Retry-After, attempt number, jitter draw, verdict)
        let (ok, failed) = (Some(200), Some(500));
        let table = [
            (true, ok, None, 1, 0.5, Verdict::Succeeded),
            (true, ok, secs(999), 3, 0.5, Verdict::Succeeded),
            (false, failed, None, 1, 0.5, at(10)),
            (false, None, None, 1, 0.0, at(8)),
            (false, failed, None, 1, 1.0, at(12)),
            (false, failed, None, 2, 0.5, at(20)),
            (false, failed, None, 3, 0.5, Verdict::Failed),
            (false, Some(429), secs(60), 1, 0.5, at(60)),
            (false, Some(503), secs(3), 1, 0.5, at(10)),
            (false, Some(503), secs(60), 3, 0.5, Verdict::Failed),
            (false, Some(410), None, 1, 0.5, Verdict::Gone),
            (false, Some(410), secs(60), 1, 0.5, Verdict::Gone),
        ];
        for (succeeded, status, retry_after, attempt, unit, expected) in table {
            assert_eq!(
                s.verdict(succeeded, status, retry_after, attempt, unit, now),
                expected,
                "succeeded={succeeded} status={status:?} retry_after={retry_after:?} attempt={attempt} unit={unit}"
            );
        }
        assert_eq!(Verdict::Gone.status(), (DeliveryStatus::Failed, None));
        assert_eq!(
            RetrySchedule::parse("")
                .unwrap()
                .verdict(false, None, None, 1, 0.5, now),
            Verdict::Failed,
            "no retries: the first failure is final"
        );
        assert_eq!(
            at(10).status(),
            (
                DeliveryStatus::Pending,
                Some(now.plus(Duration::from_secs(10)))
            )
        );
        assert_eq!(Verdict::Failed.status(), (DeliveryStatus::Failed, None));
        assert_eq!(
            Verdict::Succeeded.status(),
            (DeliveryStatus::Succeeded, None)
        );
    }

    #[test]
    fn retry_after_is_bounded() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
