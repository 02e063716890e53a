//! The row access the shared queries run on (`Conn`) for PostgreSQL: a unit's transaction on
//! a pooled connection (`PgTx`), arguments bound by the parameter's declared type, and rows
//! decoded by column.

use std::future::Future;

use bytes::BytesMut;
use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

use codmir_core::time::Timestamp;

use crate::store::conn::{Arg, Conn, Decode, HeldRow, args};
use crate::store::rows::{Columns, corrupt};
use crate::store::seal::KeyRing;
use crate::store::sql::{self, Sql, postgres_only};
use crate::store::{FanoutCache, Lease, Leased, Outcome, StoreResult};

pub(super) struct PgTx<'c> {
    pub(super) client: &'c Object,
    /// Seals webhook secrets written and opens those read, when the store has keys.
    pub(super) keys: Option<&'c KeyRing>,
    /// The fan-out's webhooks, shared by this node's units of work.
    pub(super) fanout: &'c FanoutCache,
    /// Set when the unit runs in a batch of checked units (`batch.rs`).
    pub(super) batch: Option<super::batch::InBatch<'c>>,
}

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PgTx<'_> {
    /// Runs a query with its arguments, through the batch's hooks.
    pub(super) async fn query<P>(&self, sql: &str, args: P) -> StoreResult<Vec<Row>>
    where
        P: ExactSizeIterator,
        P::Item: tokio_postgres::types::BorrowToSql,
    {
        self.before(sql).await?;
        self.query_beside(sql, args).await
    }

    /// [`PgTx::query`] for a read of none of the tables a batch holds rows back for: they
    /// need not go in first.
    pub(super) async fn query_beside<P>(&self, sql: &str, args: P) -> StoreResult<Vec<Row>>
    where
        P: ExactSizeIterator,
        P::Item: tokio_postgres::types::BorrowToSql,
    {
        let rows = async {
            let stmt = self.client.prepare_cached(sql).await?;
            let stream = self.client.query_raw(&stmt, args).await?;
            Ok(futures_util::TryStreamExt::try_collect(stream).await?)
        };
        self.after(rows.await)
    }

    /// Runs a statement with its arguments, through the batch's hooks; the rows it changed.
    pub(super) async fn execute<P>(&self, sql: &str, args: P) -> StoreResult<u64>
    where
        P: ExactSizeIterator,
        P::Item: tokio_postgres::types::BorrowToSql,
    {
        self.before(sql).await?;
        let n = async {
            let stmt = self.client.prepare_cached(sql).await?;
            Ok(self.client.execute_raw(&stmt, args).await?)
        };
        self.after(n.await)
    }
}

impl PgTx<'_> {
    /// A statement with arguments the driver binds as they are (arrays for `unnest`), and the
    /// rows it returns.
    pub(super) async fn query_params(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        self.before(sql).await?;
        let rows = async {
            let stmt = self.client.prepare_cached(sql).await?;
            Ok(self.client.query(&stmt, params).await?)
        };
        self.after(rows.await)
    }
}

impl Conn for PgTx<'_> {
    fn keys(&self) -> Option<&KeyRing> {
        self.keys
    }

    fn fanout(&self) -> &FanoutCache {
        self.fanout
    }

    fn exec(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<u64>> + Send {
        self.execute(sql.postgres, args.iter())
    }

    async fn all<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> StoreResult<Vec<T>> {
        let rows = self.query(sql.postgres, args.iter()).await?;
        rows.iter().map(|r| decode(r)).collect()
    }

    async fn one<T: Send>(
        &mut self,
        sql: &'static Sql,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> StoreResult<Option<T>> {
        let rows = self.query(sql.postgres, args.iter()).await?;
        rows.first().map(|r| decode(r)).transpose()
    }

    fn hold(&mut self, row: HeldRow<'_>) -> bool {
        self.hold_row(row)
    }

    async fn webhooks_version(&mut self, ws: &str) -> StoreResult<i64> {
        if let Some(v) = self.batch_version(ws) {
            return Ok(v);
        }
        // The version is in `workspaces`, which no batch holds rows back for.
        let rows = self
            .query_beside(sql::WEBHOOKS_VERSION.postgres, args![ws].iter())
            .await?;
        let v = match rows.first() {
            Some(r) => r.int(0)?,
            None => 0,
        };
        self.remember_version(ws, v);
        Ok(v)
    }

    async fn announce(&mut self) -> StoreResult<()> {
        self.execute(postgres_only::NOTIFY, std::iter::empty::<Arg<'_>>())
            .await?;
        Ok(())
    }

    fn claim_due(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        limit: u32,
        skip: &[String],
    ) -> impl Future<Output = StoreResult<Vec<Leased>>> + Send {
        self.claim(lease, now, limit, skip)
    }

    fn delete_old(
        &mut self,
        delivery_floor: &str,
        event_floor: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<(u64, u64, u64)>> + Send {
        self.retain(delivery_floor, event_floor, limit)
    }

    fn record_outcomes_at_once(
        &mut self,
        outcomes: &[Outcome],
    ) -> impl Future<Output = StoreResult<Option<Vec<bool>>>> + Send {
        self.outcomes_set_based(outcomes)
    }
}

/// Arguments bind by the parameter's declared type: an integer as the column's INT2, INT4 or
/// INT8 (out of its range is an error, never a silent cut), a list as an array.
impl ToSql for Arg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Text(s) => s.to_sql(ty, out),
            Arg::Int(n) => match *ty {
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Arg::Bool(b) => b.to_sql(ty, out),
            Arg::Bytes(b) => b.to_sql(ty, out),
            Arg::List(items) => items.to_sql(ty, out),
        }
    }

    /// Every type, as far as the driver's static check goes: which types an argument fits
    /// depends on its variant, checked in `to_sql_checked`.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let fits = match self {
            Arg::Null => true,
            Arg::Text(_) => <&str as ToSql>::accepts(ty),
            Arg::Int(_) => matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8),
            Arg::Bool(_) => <bool as ToSql>::accepts(ty),
            Arg::Bytes(_) => <&[u8] as ToSql>::accepts(ty),
            Arg::List(_) => <&[String] as ToSql>::accepts(ty),
        };
        if !fits {
            return Err(format!("{self:?} cannot be bound as {ty}").into());
        }
        self.to_sql(ty, out)
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A value that is not what the column should hold is corrupt data, not a failed database.
fn column<'r, T: FromSql<'r>>(row: &'r Row, i: usize) -> StoreResult<T> {
    row.try_get(i)
        .map_err(|e| corrupt(&format!("column {i}"), e))
}

impl Columns for Row {
    fn text(&self, i: usize) -> StoreResult<String> {
        column(self, i)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        column(self, i)
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        self.opt_int(i)?
            .ok_or_else(|| corrupt(&format!("column {i}"), "NULL where a number was expected"))
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        // Counts and status codes are INT4, times INT8 (the schema's choice per column).
        match self.columns().get(i).map(|c| c.type_()) {
            Some(&Type::INT4) => Ok(column::<Option<i32>>(self, i)?.map(i64::from)),
            _ => column(self, i),
        }
    }
    fn flag(&self, i: usize) -> StoreResult<bool> {
        column(self, i)
    }
    fn bytes(&self, i: usize) -> StoreResult<Vec<u8>> {
        column(self, i)
    }
}
