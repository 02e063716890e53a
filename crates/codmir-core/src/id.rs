//! Prefixed, time-sortable, URL-safe identifiers (`tkt_01j…`) and raw randomness.
//!
//! An id is a 48-bit millisecond timestamp followed by 80 random bits, written as 26 lowercase
//! Crockford base32 characters after the prefix (the ULID layout). Ids of one kind sort by
//! creation time to the millisecond, which lets lists page by id.

use std::sync::{Mutex, PoisonError};

use crate::time::Timestamp;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Length of the encoded part of an id, after the prefix.
pub const ENCODED_LEN: usize = 26;

/// Fills `buf` with bytes from the operating system's secure random source.
pub fn random_bytes(buf: &mut [u8]) {
    // The OS random source failing is not a condition the process can recover from.
    getrandom::fill(buf).expect("the operating system random source is unavailable");
}

/// The last (millisecond, random part) handed out, so that ids made in one process sort in
/// the order they were made even within one millisecond (ULID's monotonic mode).
static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

/// A new id with `prefix` (e.g. `"tkt"`) made at `now`. Ids made later in this process sort
/// after it.
pub fn new_id(prefix: &str, now: Timestamp) -> String {
    let millis = now.as_millis().max(0) as u64;
    let (millis, random) = {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        // Within the last id's millisecond the random part counts up; fresh randomness (a
        // system call) is drawn only for a new millisecond.
        let next = if millis <= last.0 && last.1 < (1u128 << 80) - 1 {
            (last.0, last.1 + 1)
        } else {
            let mut random = [0u8; 16];
            random_bytes(&mut random[6..]);
            (millis.max(last.0), u128::from_be_bytes(random))
        };
        *last = next;
        next
    };
    let bytes = random.to_be_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&bytes[6..]);
    encode(prefix, millis, tail)
}

fn encode(prefix: &str, millis: u64, random: [u8; 10]) -> String {
    let mut value: u128 = u128::from(millis & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    let mut out = String::with_capacity(prefix.len() + 1 + ENCODED_LEN);
    out.push_str(prefix);
    out.push('_');
    for i in (0..ENCODED_LEN).rev() {
        let digit = ((value >> (5 * i)) & 0x1f) as usize;
        out.push(ALPHABET[digit] as char);
    }
    out
}

/// The smallest id with `prefix` made at `at`: every id made earlier sorts below it, every id
/// made at or after it sorts at or above (retention deletes by id ranges).
pub fn floor(prefix: &str, at: Timestamp) -> String {
    encode(prefix, at.as_millis().max(0) as u64, [0; 10])
}

/// The id with `prefix` made at `at` whose random part is `n`, for a bulk writer that numbers
/// its own rows: [`new_id`] never goes back in time within a process, so it cannot make the
/// ids of rows dated in the past once it has made one today.
pub fn numbered(prefix: &str, at: Timestamp, n: u64) -> String {
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    encode(prefix, at.as_millis().max(0) as u64, random)
}

/// True when `id` has the shape of an id with `prefix`. Used to reject malformed cursors and
/// path ids early; an id of the right shape may still not exist.
pub fn is_valid(prefix: &str, id: &str) -> bool {
    let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    rest.len() == ENCODED_LEN && rest.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_ids_are_valid_distinct_and_in_their_millisecond() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        // An id made today first: numbered ids do not follow new_id's clock.
        let _today = new_id("dlv", Timestamp::now());
        let (a, b) = (numbered("dlv", at, 0), numbered("dlv", at, 1_000_000));
        assert!(is_valid("dlv", &a) && is_valid("dlv", &b));
        assert!(a < b);
        assert!(floor("dlv", at) <= a);
        assert!(b < floor("dlv", at.plus(std::time::Duration::from_millis(1))));
    }

    #[test]
    fn the_floor_of_a_time_splits_ids_made_before_it_from_those_made_after() {
        let at = Timestamp::from_millis(1_700_000_000_500);
        let floor = floor("dlv", at);
        assert!(is_valid("dlv", &floor));
        // The extremes of each millisecond's random part (`new_id` is monotonic within the
        // process, so it cannot make an id in the past once another test made one now).
        for (made, random, below) in [
            (499, [0xff; 10], true),
            (500, [0; 10], false),
            (500, [0xff; 10], false),
            (501, [0; 10], false),
        ] {
            let id = encode("dlv", 1_700_000_000_000 + made, random);
            assert_eq!(id < floor, below, "{made}: {id} vs {floor}");
        }
    }

    #[test]
    fn ids_sort_by_time_and_have_the_prefix() {
        let a = new_id("tkt", Timestamp::from_millis(1_700_000_000_000));
        let b = new_id("tkt", Timestamp::from_millis(1_700_000_000_001));
        assert!(a < b, "{a} should sort before {b}");
        assert!(is_valid("tkt", &a));
        assert!(!is_valid("proj", &a));
        assert_eq!(a.len(), 4 + ENCODED_LEN);
    }

    #[test]
    fn ids_made_in_one_millisecond_still_sort_in_order() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        let ids: Vec<String> = (0..100).map(|_| new_id("evt", now)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn encoding_is_the_ulid_layout() {
        assert_eq!(
            encode("x", 0, [0; 10]),
            format!("x_{}", "0".repeat(ENCODED_LEN))
        );
        assert_eq!(
            encode("x", 0, [0, 0, 0, 0, 0, 0, 0, 0, 0, 31]),
            format!("x_{}z", "0".repeat(25))
        );
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "tkt_",
            "tkt_0000",
            "tkt-01h00000000000000000000000",
            "tkt_IIIIIIIIIIIIIIIIIIIIIIIIII",
        ] {
            assert!(!is_valid("tkt", bad), "{bad}");
        }
    }
}
