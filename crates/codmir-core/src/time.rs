//! Timestamps as milliseconds since the Unix epoch, formatted as RFC 3339 in UTC with `Z`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self(since.as_millis() as i64)
    }

    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// `2024-01-15T10:30:00.123Z`
    pub fn to_rfc3339_millis(self) -> String {
        let (date, ms) = self.civil();
        format!("{date}.{ms:03}Z")
    }

    /// `2024-01-15T10:30:00Z`, the form the public contract shows for event timestamps.
    pub fn to_rfc3339_seconds(self) -> String {
        let (date, _) = self.civil();
        format!("{date}Z")
    }

    /// (`YYYY-MM-DDTHH:MM:SS`, milliseconds), from Howard Hinnant's `civil_from_days`.
    fn civil(self) -> (String, i64) {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        (
            format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                sod / 3600,
                (sod / 60) % 60,
                sod % 60
            ),
            ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339_seconds(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_705_314_600_000).to_rfc3339_seconds(),
            "2024-01-15T10:30:00Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_709_208_000_123).to_rfc3339_millis(),
            "2024-02-29T12:00:00.123Z"
        );
        assert_eq!(
            Timestamp::from_millis(4_102_444_799_999).to_rfc3339_millis(),
            "2099-12-31T23:59:59.999Z"
        );
    }
}
