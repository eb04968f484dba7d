//! Whose turn it is at SQLite's one writer: the request and call paths first, background work
//! (the job worker and the handlers it runs) one write at a time behind them
//! (docs/operations.md#the-database).
//!
//! SQLite takes one writer at a time, and its writer connection hands itself out first come,
//! first served. A burst of after-call work could therefore put seconds of writes ahead of a
//! call being answered. Work marked with [`background`] takes a single shared turn before each
//! write, so at most one background write is ever queued at the writer: whatever the request
//! path writes waits behind that one, never behind the backlog. PostgreSQL runs writers side by
//! side and ignores the mark.

use std::future::Future;
use std::ops::{Deref, DerefMut};

tokio::task_local! {
    static BACKGROUND: ();
}

/// Runs `work` as background work: on SQLite, its writes queue behind the request path's
/// (see the module's documentation). Tasks `work` spawns are not marked; mark them too.
pub async fn background<F: Future>(work: F) -> F::Output {
    BACKGROUND.scope((), work).await
}

/// Whether the current task runs background work ([`background`]).
pub(crate) fn in_background() -> bool {
    BACKGROUND.try_with(|()| ()).is_ok()
}

/// A connection of the writer, held with the writer turn it needed: executes on it through
/// `&mut *conn`.
pub(crate) struct WriteConn<'a, DB: sqlx::Database> {
    pub(crate) conn: sqlx::pool::PoolConnection<DB>,
    pub(crate) _turn: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl<DB: sqlx::Database> Deref for WriteConn<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: sqlx::Database> DerefMut for WriteConn<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}
