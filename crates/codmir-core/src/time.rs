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
        self.rfc3339(true)
    }

    /// `2024-01-15T10:30:00Z`, the form the public contract shows for event timestamps.
    pub fn to_rfc3339_seconds(self) -> String {
        self.rfc3339(false)
    }

    fn rfc3339(self, with_millis: bool) -> String {
        let mut out = String::with_capacity(24);
        self.write_civil(&mut out);
        if with_millis {
            out.push('.');
            push_digits(&mut out, self.0.rem_euclid(1000), 3);
        }
        out.push('Z');
        out
    }

    /// Appends `YYYY-MM-DDTHH:MM:SS`, from Howard Hinnant's `civil_from_days`. Written digit
    /// by digit: timestamps are formatted several times per event.
    fn write_civil(self, out: &mut String) {
        let secs = self.0.div_euclid(1000);
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
        push_digits(out, year, 4);
        out.push('-');
        push_digits(out, month, 2);
        out.push('-');
        push_digits(out, day, 2);
        out.push('T');
        push_digits(out, sod / 3600, 2);
        out.push(':');
        push_digits(out, (sod / 60) % 60, 2);
        out.push(':');
        push_digits(out, sod % 60, 2);
    }
}

/// Appends `value` zero-padded to `width` digits (more when it needs them; years before 0
/// are clamped to 0000, which RFC 3339 cannot express anyway).
fn push_digits(out: &mut String, value: i64, width: u32) {
    let value = value.max(0);
    let digits = value.checked_ilog10().map_or(1, |d| d + 1).max(width);
    for i in (0..digits).rev() {
        let d = (value / 10_i64.pow(i)) % 10;
        out.push(char::from(b'0' + d as u8));
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
        assert_eq!(
            Timestamp::from_millis(253_402_300_800_000).to_rfc3339_seconds(),
            "10000-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_000_000_000_007).to_rfc3339_millis(),
            "2001-09-09T01:46:40.007Z"
        );
    }
}
