//! Pure domain of codmir: identifiers, time, the event catalog and payloads, signatures,
//! the retry policy and the validated values that arrive from outside.
//!
//! Architecture invariant: this crate does no IO and has no async code. Everything here is
//! deterministic given its inputs (the clock and randomness are passed in or isolated in
//! `id::random_bytes`), so it is tested without a server.

pub mod endpoint;
pub mod event;
pub mod headers;
pub mod id;
pub mod retry;
pub mod share;
pub mod sign;
pub mod target;
pub mod time;
pub mod tracker;
pub mod webhook;

/// A value from outside was rejected: names the field and says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Whether `text` holds a control character other than line breaks and tabs: what every free
/// text field refuses (NUL, ESC and the like break logs, terminals and receivers).
pub fn has_control_chars(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
}
