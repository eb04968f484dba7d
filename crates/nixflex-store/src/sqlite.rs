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
    /// One turn at the writer for the job queue's own bookkeeping (claims, completions,
    /// failures, deferrals, leases) at a time: calls being answered never queue behind a burst
    /// of it (docs/operations.md#the-database).
    background: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The schema history, oldest first; each file runs once, in a transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
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

    /// Waits for the job queue's turn at the writer (see `background`); held until dropped.
    async fn background_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.background.acquire().await.ok()
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so a transaction
        // never fails half-way when it upgrades from read to write.
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)
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
