//! The row-level operations (`ReadTx`, `TrackerTx`, `OutboxTx`, `QueueTx`), written once for
//! any backend's transaction ([`Conn`]), one file per trait. The statements are in `sql.rs`;
//! what differs per dialect is behind `Conn`'s own methods.

use super::conn::{Arg, Conn, Decode};
use super::sql::Sql;
use super::{Page, PageRequest, StoreResult};

mod outbox;
mod queue;
mod read;
mod tracker;

/// The `LIMIT` of a page's query: one more than asked, to learn whether more exist.
fn overfetch(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

/// A page of a list query whose last two arguments are the cursor and [`overfetch`].
async fn paged<C: Conn, T: Send>(
    c: &mut C,
    sql: &'static Sql,
    args: &[Arg<'_>],
    page: &PageRequest,
    decode: Decode<T>,
) -> StoreResult<Page<T>> {
    let items = c.all(sql, args, decode).await?;
    Ok(Page::from_overfetch(items, page.limit))
}
