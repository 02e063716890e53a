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

impl Timestamp {
    /// Parses an RFC 3339 date-time: `2024-01-15T10:30:00Z`, with optional fractional
    /// seconds (kept to the millisecond) and a `Z` or `±HH:MM` offset; `field` names the
    /// input in the error.
    pub fn parse_rfc3339(raw: &str, field: &'static str) -> Result<Self, crate::ValidationError> {
        let err = || {
            crate::ValidationError::new(
                field,
                format!("`{raw}` is not an RFC 3339 time like 2024-01-15T10:30:00Z"),
            )
        };
        let b = raw.as_bytes();
        let num = |from: usize, len: usize| -> Result<i64, crate::ValidationError> {
            let part = b.get(from..from + len).ok_or_else(err)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(err());
            }
            Ok(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return Err(err());
        }
        let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(err()),
        };
        if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
            return Err(err());
        }
        let mut at = 19;
        let mut millis = 0;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            if at == start {
                return Err(err());
            }
            // Milliseconds: the first three digits, padded.
            let digits = &raw[start..at.min(start + 3)];
            millis =
                digits.parse::<i64>().map_err(|_| err())? * 10_i64.pow(3 - digits.len() as u32);
        }
        let offset_min = match b.get(at) {
            Some(b'Z' | b'z') if at + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if at + 6 == b.len() && sep(at + 3, b":") => {
                let m = num(at + 1, 2)? * 60 + num(at + 4, 2)?;
                if *sign == b'-' { -m } else { m }
            }
            _ => return Err(err()),
        };
        // Howard Hinnant's `days_from_civil`.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_min * 60;
        Ok(Self(secs * 1000 + millis))
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
    fn parses_rfc3339_and_round_trips() {
        let table = [
            ("2024-01-15T10:30:00Z", 1_705_314_600_000),
            ("2024-01-15T10:30:00.123Z", 1_705_314_600_123),
            ("2024-01-15T10:30:00.1234567Z", 1_705_314_600_123),
            ("2024-01-15T10:30:00.5Z", 1_705_314_600_500),
            ("2024-01-15T12:30:00+02:00", 1_705_314_600_000),
            ("2024-01-15t10:30:00z", 1_705_314_600_000),
            ("1970-01-01T00:00:00Z", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ];
        for (raw, millis) in table {
            assert_eq!(
                Timestamp::parse_rfc3339(raw, "since").map(Timestamp::as_millis),
                Ok(millis),
                "{raw}"
            );
        }
        for bad in [
            "",
            "2024-01-15",
            "2024-01-15T10:30:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-15T24:00:00Z",
            "2024-01-15T10:30:00.Z",
            "2024-01-15T10:30:00+0200",
            "2024-01-15T10:30:00Zjunk",
            "yesterday",
        ] {
            let e = Timestamp::parse_rfc3339(bad, "since").unwrap_err();
            assert_eq!(e.field, "since", "{bad}");
        }
        let t = Timestamp::from_millis(1_709_208_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339_millis(), "t"), Ok(t));
    }

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
