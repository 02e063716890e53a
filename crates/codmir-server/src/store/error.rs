//! The store's one error type. Every variant keeps what caused it: a driver's error is kept
//! whole (behind an `Arc`, so that one failed commit can be the answer of every unit of work
//! in its batch) and reaches the log through [`std::error::Error::source`].

use std::sync::Arc;

/// An error from below the store (a driver, the pool, the OS), shared by clones.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong below the domain: the database failed, or holds data we cannot read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached; `source` is the driver's error, if any.
    #[error("database error: {context}")]
    Database {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// A row holds a value this codmir cannot read (a column of the wrong type, an unknown
    /// status): the same on both backends, raised by the shared row decoding.
    #[error("a row in the database is invalid: {0}")]
    Corrupt(String),
    /// A uniqueness constraint refused the write (two writers raced for the same thing).
    #[error("conflict: a uniqueness constraint refused the write")]
    Conflict(#[source] Cause),
    /// The database cannot be reached or is not accepting work (down, restarting, cut off,
    /// no answer in time): nothing was changed, or a commit's outcome is unknown. Worth
    /// retrying shortly.
    #[error("the database is unreachable: {context}")]
    Unreachable {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// The connection was lost after `COMMIT` was sent and before its answer came: the work
    /// may or may not be stored. A retry with the same `Idempotency-Key` is safe (its answer
    /// commits with the work); one without may make the change twice.
    #[error("the connection to the database was lost during the commit: {context}")]
    OutcomeUnknown {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// Another unit of work sharing this one's commit failed while writing, so the whole
    /// commit was rolled back: nothing of this unit was kept, and running it again may
    /// succeed at once.
    #[error("rolled back with the commit it shared: {context}")]
    RolledBack { context: String },
    /// The disk is full: the write was not made.
    #[error("the database's disk is full")]
    Full(#[source] Cause),
    #[error("the store is closed")]
    Closed,
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// A database failure described by `context`, caused by `source`.
    pub fn database(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Database {
            context: context.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The database could not be reached while `context`.
    pub fn unreachable(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unreachable {
            context: context.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Whether retrying later may succeed where this failed (the database was away or full, or
    /// a neighbour spoiled the commit).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::OutcomeUnknown { .. }
                | StoreError::Full(_)
                | StoreError::RolledBack { .. }
        )
    }

    /// What `self`, an error met while committing, means for the commit: a lost connection
    /// (or no answer) leaves its outcome unknown; anything else means it did not take.
    pub fn at_commit(self) -> Self {
        match self {
            StoreError::Unreachable { context, source } => {
                StoreError::OutcomeUnknown { context, source }
            }
            other => other,
        }
    }

    /// A database failure that has no error of its own below it.
    pub fn failed(context: impl Into<String>) -> Self {
        StoreError::Database {
            context: context.into(),
            source: None,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `e` and its sources, outermost first, joined by `: ` — the form logs use.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Wrappers often repeat their source's message; say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_every_cause_once() {
        let io = std::io::Error::other("disk full");
        let e = StoreError::database("committing a batch", io);
        assert_eq!(chain(&e), "database error: committing a batch: disk full");
        assert_eq!(chain(&StoreError::Closed), "the store is closed");
    }
}
