//! The scenarios, one file each; each returns its rows of the report.

mod backlog;
mod cost;
mod fanout;
mod idle;
mod isolation;
mod latency;
mod ordering;
mod peer;
mod retention;
mod soak;
mod steady;

pub(crate) use backlog::backlog;
pub(crate) use cost::cost;
pub(crate) use fanout::fanout;
pub(crate) use idle::idle;
pub(crate) use isolation::{isolation, partly_hanging_host};
pub(crate) use latency::latency;
pub(crate) use ordering::ordering;
pub(crate) use peer::svix;
pub(crate) use retention::retention;
pub(crate) use soak::{Sample, soak};
pub(crate) use steady::steady;
