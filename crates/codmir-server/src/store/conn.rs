//! What the shared queries (`queries/`) need of a backend's transaction: run a statement
//! with borrowed arguments and decode its rows, plus the few operations whose SQL really
//! differs per dialect. Generic, not `dyn`: each backend's queries are compiled for its own
//! transaction type, so the hot path gains no allocation or indirection.

use std::future::Future;

use codmir_core::event::Event;
use codmir_core::time::Timestamp;
use codmir_core::tracker::Ticket;
use codmir_core::webhook::Delivery;

use super::fanout::FanoutCache;
use super::rows::Columns;
use super::seal::KeyRing;
use super::sql::Sql;
use super::{Lease, Leased, Outcome, StoreResult};

/// A statement's argument, borrowed from the value it stands for. Each backend binds it as
/// its driver wants: SQLite as it is; PostgreSQL by the parameter's declared type (an
/// integer as INT2, INT4 or INT8; a list as `text[]`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Bool(bool),
    Bytes(&'a [u8]),
    /// A list of strings: SQLite reads it as a JSON array (`json_each`), PostgreSQL as an
    /// array (`ANY`).
    List(&'a [String]),
}

/// A value that can stand as a statement's argument.
pub(super) trait ToArg {
    fn arg(&self) -> Arg<'_>;
}

impl ToArg for str {
    fn arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for String {
    fn arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for [u8] {
    fn arg(&self) -> Arg<'_> {
        Arg::Bytes(self)
    }
}
impl ToArg for [String] {
    fn arg(&self) -> Arg<'_> {
        Arg::List(self)
    }
}
impl ToArg for Vec<String> {
    fn arg(&self) -> Arg<'_> {
        Arg::List(self)
    }
}
impl ToArg for bool {
    fn arg(&self) -> Arg<'_> {
        Arg::Bool(*self)
    }
}
impl ToArg for i64 {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(*self)
    }
}
impl ToArg for u32 {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}
impl ToArg for u16 {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}
/// Times are stored as milliseconds since the epoch.
impl ToArg for Timestamp {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(self.as_millis())
    }
}
impl<T: ToArg + ?Sized> ToArg for &T {
    fn arg(&self) -> Arg<'_> {
        (**self).arg()
    }
}
impl<T: ToArg> ToArg for Option<T> {
    fn arg(&self) -> Arg<'_> {
        self.as_ref().map_or(Arg::Null, ToArg::arg)
    }
}

/// The arguments of a statement, in parameter order.
macro_rules! args {
    ($($e:expr),* $(,)?) => {
        &[$($crate::store::conn::ToArg::arg(&$e)),*]
    };
}
pub(super) use args;

/// A row decoder shared by both backends (`rows.rs`).
pub(super) type Decode<T> = fn(&dyn Columns) -> StoreResult<T>;

/// A row a unit of work inserts that a backend may hold back and insert together with its
/// neighbours' (PostgreSQL's batches of checked units).
pub(super) enum HeldRow<'a> {
    /// A new ticket and the last number its creating unit gave its events.
    Ticket(&'a Ticket, u64),
    Event(&'a Event),
    Delivery(&'a Delivery, Option<&'a Lease>),
}

/// A backend's transaction, as the shared queries use it.
pub(super) trait Conn: Send {
    /// The key ring webhook secrets are sealed under, when the store seals them.
    fn keys(&self) -> Option<&KeyRing>;
    /// The fan-out's webhooks, shared by the node's units of work.
    fn fanout(&self) -> &FanoutCache;

    /// Runs a statement; the rows it changed.
    fn exec(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Runs a query; every row it returned, decoded.
    fn all<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send;

    /// Runs a query; its first row, decoded.
    fn one<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> impl Future<Output = StoreResult<Option<T>>> + Send;

    /// Takes a row to insert later with others; false when it must be inserted now.
    fn hold(&mut self, _row: HeldRow<'_>) -> bool {
        false
    }

    /// The workspace's `webhooks_version` (what the fan-out cache is keyed by).
    fn webhooks_version(&mut self, ws: &str) -> impl Future<Output = StoreResult<i64>> + Send;

    /// Tells other nodes, once this transaction commits, that new deliveries are due.
    fn announce(&mut self) -> impl Future<Output = StoreResult<()>> + Send;

    /// See `QueueTx::claim_due`.
    fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> impl Future<Output = StoreResult<Vec<Leased>>> + Send;

    /// See `QueueTx::delete_old`.
    fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<(u64, u64, u64)>> + Send;

    /// Records a batch of outcomes in fewer statements than one each, when the backend can:
    /// whether each was recorded, in order; `None` to have them recorded one by one.
    fn record_outcomes_at_once(
        &mut self,
        _outcomes: &[Outcome],
    ) -> impl Future<Output = StoreResult<Option<Vec<bool>>>> + Send {
        std::future::ready(Ok(None))
    }
}
