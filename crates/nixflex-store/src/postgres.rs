//! The PostgreSQL backend: shared by several `nixflex serve` nodes.

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, SqlSafeStr};

use crate::StoreError;
use crate::sql::map_err;

/// PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "foundation".into(),
            MigrationType::Simple,
            include_str!("../migrations/postgres/0001_foundation.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "numbers".into(),
            MigrationType::Simple,
            include_str!("../migrations/postgres/0002_numbers.sql").into_sql_str(),
            false,
        ),
    ])
}

impl PgStore {
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
        migrator().run(&pool).await.map_err(|e| StoreError::Other(e.into()))?;
        Ok(Self { pool })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool.begin().await.map_err(map_err)
    }
}

crate::sql::impl_store!(PgStore, sqlx::Postgres, "postgres");
