//! Verify and read the webhooks [codmir](https://github.com/codmir) sends.
//!
//! codmir signs every request twice: with the [Standard Webhooks] headers (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`) and with the contract's `X-Codmir-Signature:
//! sha256=<hex>`. [`verify`] checks the Standard Webhooks signature when its headers are there
//! (with a timestamp tolerance, and every signature of a rotation) and the contract's otherwise,
//! then reads the body as a typed [`Event`].
//!
//! - Give it the **raw bytes** of the body, as received: a framework that parses the JSON and
//!   serializes it again changes the bytes and breaks every signature.
//! - Give it either string codmir showed for the webhook: `secret` or `signing_secret`.
//! - Answer 2xx quickly and do the work afterwards; codmir retries anything else.
//! - De-duplicate on [`Event::id`] (also the `webhook-id` header): a retry after a lost
//!   answer delivers the same event again.
//! - Match event types with a `_` arm: [`Data::Unknown`] carries types added after this
//!   version, so they never break a receiver.
//!
//! ```
//! use codmir_webhook::{Data, Verifier};
//!
//! let verifier = Verifier::new("your-webhook-secret").unwrap();
//! # let (body, headers): (&[u8], Vec<(&str, &str)>) = (b"{}", vec![]);
//! match verifier.verify(body, &headers) {
//!     Ok(event) => match &event.data {
//!         Data::TicketCreated(d) => println!("new ticket {}", d.ticket.title),
//!         other => println!("{} (not handled)", other.event_type()),
//!     },
//!     Err(e) => eprintln!("refused: {e}"), // answer 400
//! }
//! ```
//!
//! With the `axum` feature, [`Verified`] is an extractor that does all of it; see
//! `examples/receiver.rs`. With the `schema` feature, `schema(event_type)` gives the JSON
//! Schema of each event type, generated from these types (what codmir publishes).
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/
#![forbid(unsafe_code)]

mod event;
mod headers;
mod sequence;
mod verify;

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "schema")]
mod schema;

pub use event::{
    Change, Comment, CommentData, Data, Event, Member, MemberData, ProjectData, Ref, Ticket,
    TicketData, Webhook, WebhookData,
};
#[cfg(feature = "axum")]
pub use extract::{Rejected, Verified};
pub use headers::Headers;
#[cfg(feature = "schema")]
pub use schema::{EVENT_TYPES, schema};
pub use sequence::{Place, Sequences};
pub use verify::{DEFAULT_TOLERANCE, Scheme, Verifier, VerifyError, verify};

/// docs/receiving.md's Rust blocks, compiled by `cargo test` as doctests: the guide's code
/// stays what this crate accepts.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../../docs/receiving.md")]
struct ReceivingGuide;
