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
    /// Agents' versions answered while nothing has been committed (`crate::versions`); `None`
    /// for an in-memory database.
    versions: Option<std::sync::Arc<Versions>>,
    /// Active phone numbers remembered (`crate::number_cache`).
    numbers: std::sync::Arc<crate::number_cache::NumberCache>,
}

/// [`crate::versions::KnownVersions`] and the connection that keeps the WAL index it reads in
/// place: SQLite deletes the `-shm` file when the last connection to the database closes, and
/// the pools may close all of theirs when idle.
#[derive(Debug)]
struct Versions {
    known: crate::versions::KnownVersions,
    _keeper: std::sync::Mutex<sqlx::SqliteConnection>,
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
    (22, "number_epoch", include_str!("../migrations/sqlite/0022_number_epoch.sql")),
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
            return Ok(Self {
                writer: pool.clone(),
                pool,
                background: Self::background_gate(),
                versions: None,
                numbers: std::sync::Arc::default(),
            });
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
        let versions = Self::known_versions_for(&options).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self {
            pool,
            writer,
            background: Self::background_gate(),
            versions,
            numbers: std::sync::Arc::default(),
        })
    }

    /// Opens the connection that keeps the WAL index in place, reads through it once (a
    /// connection maps the index at its first read), then the index itself.
    async fn known_versions_for(
        options: &SqliteConnectOptions,
    ) -> Result<Option<std::sync::Arc<Versions>>, StoreError> {
        use sqlx::ConnectOptions;
        let mut keeper = options.connect().await.map_err(map_err)?;
        sqlx::query("select count(*) from sqlite_master")
            .execute(&mut keeper)
            .await
            .map_err(map_err)?;
        let Some(index) = crate::versions::WalIndex::open(options.get_filename()) else {
            tracing::warn!(
                "the database's WAL index could not be read: every agent version is read from the database"
            );
            return Ok(None);
        };
        Ok(Some(std::sync::Arc::new(Versions {
            known: crate::versions::KnownVersions::new(index),
            _keeper: std::sync::Mutex::new(keeper),
        })))
    }

    /// Agents' versions known without asking (`crate::versions`).
    fn known_versions(&self) -> Option<&crate::versions::KnownVersions> {
        self.versions.as_deref().map(|versions| &versions.known)
    }

    /// Answers to `agent_version` given from memory so far (tests and benchmark notes).
    #[must_use]
    pub fn versions_known_without_asking(&self) -> u64 {
        self.known_versions().map_or(0, crate::versions::KnownVersions::hits)
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

    #[tokio::test]
    async fn versions_stay_exact_after_every_pooled_connection_has_closed() {
        use crate::AgentRepo;
        // SQLite deletes the WAL index when the last connection to a database closes, and the
        // pools close idle connections; a later writer then builds a new index that an index
        // read from before would never see change. The store keeps one connection open.
        let (url, _dir) = crate::testing::fresh_sqlite_url();
        let here = SqliteStore::connect(&url, 2).await.unwrap();
        let account_id = crate::testing::new_account(&here).await.unwrap();
        let at = crate::now();
        let agent = nixflex_core::agent::Agent {
            agent_id: nixflex_core::ids::new_agent_id(),
            account_id: account_id.clone(),
            api_key_id: "nxf_x".into(),
            settings: nixflex_core::agent::AgentSettings::default(),
            created_at: at,
            updated_at: at,
        };
        here.insert_agent(&agent).await.unwrap();
        let (account_id, agent_id) = (&account_id, &agent.agent_id);
        assert_eq!(here.agent_version(account_id, agent_id).await.unwrap(), Some(1));
        assert_eq!(here.agent_version(account_id, agent_id).await.unwrap(), Some(1));
        assert_eq!(here.versions_known_without_asking(), 1);
        // Every pooled connection of this store closes (idle), then another process edits.
        here.pool.close().await;
        here.writer.close().await;
        let there = SqliteStore::connect(&url, 2).await.unwrap();
        let mut rename = |current: &nixflex_core::agent::Agent| {
            let mut next = current.clone();
            next.settings.name = "edited there".to_owned();
            Ok(next)
        };
        there.modify_agent(account_id, agent_id, &mut rename).await.unwrap();
        // This store, with pools connected again, sees the edit.
        let again = SqliteStore { pool: there.pool.clone(), writer: there.writer.clone(), ..here };
        assert_eq!(again.agent_version(account_id, agent_id).await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn sqlite_is_built_to_plan_each_statement_once() {
        // `.cargo/config.toml` builds SQLite with its query planner stability guarantee, so a
        // cached statement is not prepared again whenever its bound values change
        // (docs/operations.md#the-database).
        let store = SqliteStore::connect("sqlite::memory:", 2).await.unwrap();
        let options: Vec<String> =
            sqlx::query_scalar("select compile_options from pragma_compile_options")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert!(options.iter().any(|option| option == "ENABLE_QPSG"), "{options:?}");
    }
}
