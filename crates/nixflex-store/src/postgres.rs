//! The PostgreSQL backend: shared by several `nixflex serve` nodes.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::StoreError;
use crate::sql::map_err;

/// PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The same pool: PostgreSQL handles concurrent writers itself.
    writer: PgPool,
    /// Active phone numbers remembered (`crate::number_cache`).
    numbers: std::sync::Arc<crate::number_cache::NumberCache>,
}

/// The schema history, oldest first; each file runs once, in a transaction.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../migrations/postgres/0001_foundation.sql")),
    (2, "numbers", include_str!("../migrations/postgres/0002_numbers.sql")),
    (3, "calls", include_str!("../migrations/postgres/0003_calls.sql")),
    (4, "jobs", include_str!("../migrations/postgres/0004_jobs.sql")),
    (5, "webhooks", include_str!("../migrations/postgres/0005_webhooks.sql")),
    (6, "recordings", include_str!("../migrations/postgres/0006_recordings.sql")),
    (7, "carrier_recordings", include_str!("../migrations/postgres/0007_carrier_recordings.sql")),
    (8, "outbound", include_str!("../migrations/postgres/0008_outbound.sql")),
    (9, "function_calls", include_str!("../migrations/postgres/0009_function_calls.sql")),
    (10, "sms", include_str!("../migrations/postgres/0010_sms.sql")),
    (11, "voicemail_method", include_str!("../migrations/postgres/0011_voicemail_method.sql")),
    (12, "campaigns", include_str!("../migrations/postgres/0012_campaigns.sql")),
    (13, "sms_campaigns", include_str!("../migrations/postgres/0013_sms_campaigns.sql")),
    (14, "provider_events", include_str!("../migrations/postgres/0014_provider_events.sql")),
    (15, "account_providers", include_str!("../migrations/postgres/0015_account_providers.sql")),
    (16, "billable_seconds", include_str!("../migrations/postgres/0016_billable_seconds.sql")),
    (17, "api_line_rate", include_str!("../migrations/postgres/0017_api_line_rate.sql")),
    (18, "call_counts", include_str!("../migrations/postgres/0018_call_counts.sql")),
    (19, "call_tallies", include_str!("../migrations/postgres/0019_call_tallies.sql")),
    (20, "agent_counts", include_str!("../migrations/postgres/0020_agent_counts.sql")),
    (21, "call_history", include_str!("../migrations/postgres/0021_call_history.sql")),
    (22, "number_epoch", include_str!("../migrations/postgres/0022_number_epoch.sql")),
];

impl PgStore {
    /// `select … for update` holds a row until the transaction ends.
    /// An empty JSON array as a column value (lists leave transcripts out).
    const EMPTY_JSON_ARRAY: &'static str = "'[]'::jsonb";
    const ROW_LOCKS: bool = true;
    /// Row lock that serialises key revocations of one account across nodes.
    const LOCK_ACCOUNT: Option<&'static str> =
        Some("select account_id from accounts where account_id = $1 for update");
    /// Row lock that serialises caller-context writes of one number across nodes.
    const LOCK_NUMBER: Option<&'static str> =
        Some("select phone_number from phone_numbers where phone_number = $1 for update");

    /// Connects and migrates (sqlx takes an advisory lock, so nodes starting together are safe).
    ///
    /// # Errors
    /// When the server cannot be reached or a migration fails.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(map_err)?;
        let migrator = crate::sql::migrator(MIGRATIONS);
        crate::sql::adopt_reworded!(&pool, migrator, crate::sql::REWORDED_POSTGRES);
        migrator.run(&pool).await.map_err(|e| StoreError::Other(e.into()))?;
        Ok(Self { writer: pool.clone(), pool, numbers: std::sync::Arc::default() })
    }

    /// Another node may have written an agent: its version is always read from the database.
    #[allow(clippy::unused_self, reason = "the SQLite store's counterpart uses it")]
    fn known_versions(&self) -> Option<&crate::versions::KnownVersions> {
        None
    }

    /// A pooled connection to write on. PostgreSQL runs writers side by side: background work
    /// takes no turn (`crate::turns`).
    async fn write(&self) -> Result<crate::turns::WriteConn<'_, sqlx::Postgres>, StoreError> {
        let conn = self.writer.acquire().await.map_err(map_err)?;
        Ok(crate::turns::WriteConn { conn, _turn: None })
    }

    /// A write transaction; no turn to hold (see `write`).
    async fn begin_write(
        &self,
    ) -> Result<
        (sqlx::Transaction<'static, sqlx::Postgres>, Option<tokio::sync::SemaphorePermit<'_>>),
        StoreError,
    > {
        Ok((self.pool.begin().await.map_err(map_err)?, None))
    }
}

crate::sql::impl_store_base!(PgStore, sqlx::Postgres, "postgres");
crate::accounts::impl_accounts!(PgStore, sqlx::Postgres, "postgres");
crate::agents::impl_agents!(PgStore, sqlx::Postgres, "postgres");
crate::numbers::impl_numbers!(PgStore, sqlx::Postgres, "postgres");
crate::calls::impl_calls!(PgStore, sqlx::Postgres, "postgres");
crate::guards::impl_guards!(PgStore, sqlx::Postgres, "postgres");
crate::jobs::impl_jobs!(PgStore, sqlx::Postgres, "postgres");
crate::webhooks::impl_webhooks!(PgStore, sqlx::Postgres, "postgres");
crate::recordings::impl_recordings!(PgStore, sqlx::Postgres, "postgres");
crate::outbound::impl_outbound!(PgStore, sqlx::Postgres, "postgres");
crate::providers::impl_providers!(PgStore, sqlx::Postgres, "postgres");
crate::sms::impl_sms!(PgStore, sqlx::Postgres, "postgres");
crate::sms_campaigns::impl_sms_campaigns!(PgStore, sqlx::Postgres, "postgres");
crate::campaigns::impl_campaigns!(PgStore, sqlx::Postgres, "postgres");
