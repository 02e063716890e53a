//! Per-resource sequence numbers, from the receiver's side: which event is the next one, which
//! is stale, and which arrived before one still to come.

use std::collections::HashMap;

use crate::Event;

/// Where an event stands against the last one applied for its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The one after the last applied (or the first seen of its resource): apply it.
    Next,
    /// Newer than the next: `missing` events about its resource are still to come (later
    /// deliveries or retries). Apply it if only the latest state matters; to apply every
    /// change in order, hold it (or fetch the resource) until they arrive.
    Ahead { missing: u64 },
    /// At or before the last applied: a redelivery or a late retry. Applying it would go back
    /// in time.
    Stale,
    /// No sequence number: an event about a webhook, or from a server before numbering.
    Unnumbered,
}

/// The last sequence number applied per resource. Keep one per receiver (in memory for a
/// process that sees every event from its start; in your database beside the resource
/// otherwise, as the last number applied).
///
/// ```
/// use codmir_webhook::{Event, Place, Sequences};
/// let event = |n: u64| -> Event {
///     serde_json::from_value(serde_json::json!({
///         "id": format!("evt_{n}"), "type": "member.added",
///         "timestamp": "2026-01-01T00:00:00.000Z", "resource_id": "proj_1", "sequence": n,
///         "data": {"member": {"id": "usr_2", "name": "Ada", "email": null, "role": "member",
///                             "added_at": "2026-01-01T00:00:00.000Z"},
///                  "project": {"id": "proj_1", "name": "Main App"},
///                  "user": {"id": "usr_1", "name": "John"}}
///     }))
///     .unwrap()
/// };
/// let mut seen = Sequences::default();
/// assert_eq!(seen.place(&event(1)), Place::Next);
/// seen.applied(&event(1));
/// assert_eq!(seen.place(&event(3)), Place::Ahead { missing: 1 });
/// assert_eq!(seen.place(&event(1)), Place::Stale);
/// assert_eq!(seen.place(&event(2)), Place::Next);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Sequences {
    last: HashMap<String, u64>,
}

impl Sequences {
    /// Where `event` stands; changes nothing.
    pub fn place(&self, event: &Event) -> Place {
        let (Some(resource), Some(n)) = (&event.resource_id, event.sequence) else {
            return Place::Unnumbered;
        };
        match self.last.get(resource) {
            // The first seen of this resource: nothing to compare with.
            None => Place::Next,
            Some(&last) if n <= last => Place::Stale,
            Some(&last) if n == last + 1 => Place::Next,
            Some(&last) => Place::Ahead {
                missing: n - last - 1,
            },
        }
    }

    /// Records `event` as applied: later events about its resource are judged against it.
    /// An older number never moves the account back.
    pub fn applied(&mut self, event: &Event) {
        if let (Some(resource), Some(n)) = (&event.resource_id, event.sequence) {
            let last = self.last.entry(resource.clone()).or_insert(n);
            *last = (*last).max(n);
        }
    }

    /// The last number applied for `resource_id`.
    pub fn last(&self, resource_id: &str) -> Option<u64> {
        self.last.get(resource_id).copied()
    }
}
