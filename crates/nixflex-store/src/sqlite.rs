//! The SQLite backend: the default, embedded, single-node store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::StoreError;
use crate::sql::map_err;

/// SQLite store (WAL): reads use a pool of connections; writes go through one connection, so
/// writers queue in the pool instead of spinning on SQLite's lock while holding connections that
/// readers need.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    /// The single turn at the writer that background work takes before each write
    /// (`crate::turns`): calls being answered never queue behind a burst of it
    /// (docs/operations.md#the-database).
    background: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The schema history, oldest first; each file runs once, in a transaction.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../migrations/sqlite/0001_foundation.sql")),
    (2, "numbers", include_str!("../migrations/sqlite/0002_numbers.sql")),
    (3, "calls", include_str!("../migrations/sqlite/0003_calls.sql")),
    (4, "jobs", include_str!("../migrations/sqlite/0004_jobs.sql")),
    (5, "webhooks", include_str!("../migrations/sqlite/0005_webhooks.sql")),
    (6, "recordings", include_str!("../migrations/sqlite/0006_recordings.sql")),
    (7, "carrier_recordings", include_str!("../migrations/sqlite/0007_carrier_recordings.sql")),
    (8, "outbound", include_str!("../migrations/sqlite/0008_outbound.sql")),
    (9, "function_calls", include_str!("../migrations/sqlite/0009_function_calls.sql")),
    (10, "sms", include_str!("../migrations/sqlite/0010_sms.sql")),
    (11, "voicemail_method", include_str!("../migrations/sqlite/0011_voicemail_method.sql")),
    (12, "campaigns", include_str!("../migrations/sqlite/0012_campaigns.sql")),
    (13, "sms_campaigns", include_str!("../migrations/sqlite/0013_sms_campaigns.sql")),
    (14, "provider_events", include_str!("../migrations/sqlite/0014_provider_events.sql")),
    (15, "account_providers", include_str!("../migrations/sqlite/0015_account_providers.sql")),
    (16, "billable_seconds", include_str!("../migrations/sqlite/0016_billable_seconds.sql")),
    (17, "api_line_rate", include_str!("../migrations/sqlite/0017_api_line_rate.sql")),
    (18, "call_counts", include_str!("../migrations/sqlite/0018_call_counts.sql")),
    (19, "call_tallies", include_str!("../migrations/sqlite/0019_call_tallies.sql")),
    (20, "agent_counts", include_str!("../migrations/sqlite/0020_agent_counts.sql")),
    (21, "call_history", include_str!("../migrations/sqlite/0021_call_history.sql")),
];

impl SqliteStore {
    /// No row locks: `BEGIN IMMEDIATE` already holds the database's write lock.
    /// An empty JSON array as a column value (lists leave transcripts out).
    const EMPTY_JSON_ARRAY: &'static str = "'[]'";
    const ROW_LOCKS: bool = false;
    /// SQLite has no row locks: `BEGIN IMMEDIATE` already holds the database's write lock.
    const LOCK_ACCOUNT: Option<&'static str> = None;
    /// See `LOCK_ACCOUNT`.
    const LOCK_NUMBER: Option<&'static str> = None;

    /// Opens (creating if missing) and migrates the database at `url`.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(map_err)?
            .create_if_missing(true)
            .journal_mode(if in_memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Reads map the file instead of copying each page out of the kernel: every write
            // empties the other connections' page caches, and under load the copies were most
            // of SQLite's own time (docs/benchmarks.md#line-rate-calls).
            .pragma("mmap_size", "268435456");
        // An in-memory database exists once per connection: keep exactly one, forever, for
        // reads and writes alike.
        if in_memory {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(map_err)?;
            let migrator = crate::sql::migrator(MIGRATIONS);
            crate::sql::adopt_reworded!(&pool, migrator, crate::sql::REWORDED_SQLITE);
            migrator.run(&pool).await.map_err(|e| StoreError::Other(e.into()))?;
            return Ok(Self { writer: pool.clone(), pool, background: Self::background_gate() });
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        let migrator = crate::sql::migrator(MIGRATIONS);
        crate::sql::adopt_reworded!(&writer, migrator, crate::sql::REWORDED_SQLITE);
        migrator.run(&writer).await.map_err(|e| StoreError::Other(e.into()))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self { pool, writer, background: Self::background_gate() })
    }

    fn background_gate() -> std::sync::Arc<tokio::sync::Semaphore> {
        std::sync::Arc::new(tokio::sync::Semaphore::new(1))
    }

    /// Background work's single turn at the writer (see `background`); `None` on the request
    /// path, which takes none.
    async fn write_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if crate::turns::in_background() { self.background.acquire().await.ok() } else { None }
    }

    /// The writer connection, after this task's turn (`crate::turns`).
    async fn write(&self) -> Result<crate::turns::WriteConn<'_, sqlx::Sqlite>, StoreError> {
        let turn = self.write_turn().await;
        let conn = self.writer.acquire().await.map_err(map_err)?;
        Ok(crate::turns::WriteConn { conn, _turn: turn })
    }

    /// A write transaction on the writer, after this task's turn (`crate::turns`); the turn is
    /// held until the transaction ends.
    async fn begin_write(
        &self,
    ) -> Result<
        (sqlx::Transaction<'static, sqlx::Sqlite>, Option<tokio::sync::SemaphorePermit<'_>>),
        StoreError,
    > {
        let turn = self.write_turn().await;
        // IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so a transaction
        // never fails half-way when it upgrades from read to write.
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        Ok((tx, turn))
    }
}

crate::sql::impl_store_base!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::accounts::impl_accounts!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::agents::impl_agents!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::numbers::impl_numbers!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::calls::impl_calls!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::guards::impl_guards!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::jobs::impl_jobs!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::webhooks::impl_webhooks!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::recordings::impl_recordings!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::outbound::impl_outbound!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::providers::impl_providers!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::sms::impl_sms!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::sms_campaigns::impl_sms_campaigns!(SqliteStore, sqlx::Sqlite, "sqlite");
crate::campaigns::impl_campaigns!(SqliteStore, sqlx::Sqlite, "sqlite");

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::SqliteStore;

    /// Lets every spawned task run until it waits (the test runtime has one thread).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_request_path_write_waits_behind_one_background_write_not_the_backlog() {
        let store = Arc::new(SqliteStore::connect("sqlite::memory:", 2).await.unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        // Background work holds the writer.
        let (held, is_held) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn(crate::background({
            let store = store.clone();
            async move {
                let conn = store.write().await.unwrap();
                held.send(()).unwrap();
                released.await.unwrap();
                drop(conn);
            }
        }));
        is_held.await.unwrap();
        // A backlog of background writes queues up first…
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (store, order) = (store.clone(), order.clone());
            tasks.push(tokio::spawn(crate::background(async move {
                let _conn = store.write().await.unwrap();
                order.lock().unwrap().push(format!("background {i}"));
            })));
        }
        settle().await;
        // …then a call is answered.
        let (store_f, order_f) = (store.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _conn = store_f.write().await.unwrap();
            order_f.lock().unwrap().push("request".to_owned());
        }));
        settle().await;
        release.send(()).unwrap();
        holder.await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 6);
        assert_eq!(order[0], "request", "{order:?}");
        // The backlog itself keeps its order.
        let backlog: Vec<_> = (0..5).map(|i| format!("background {i}")).collect();
        assert_eq!(order[1..], backlog[..]);
    }
}
