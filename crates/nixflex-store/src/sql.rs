//! The repository implementation shared by both backends.
//!
//! SQLite and PostgreSQL accept the same SQL for everything here (`$n` parameters, `on conflict`,
//! `returning`), and sqlx decodes the same Rust types from both schemas, so one body serves both:
//! [`impl_store!`] expands it for a concrete pool type. What differs (how a write transaction
//! starts, row locks) comes from the backend's `begin_write` and `LOCK_ACCOUNT`. The expanding
//! module must import `StoreError` and [`map_err`].

use nixflex_core::agent::{Agent, AgentSettings};

use crate::StoreError;

/// Maps sqlx errors to [`StoreError`] in one place.
pub(crate) fn map_err(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict { constraint: "unique" }
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::Conflict { constraint: "foreign key" }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Other(anyhow::Error::new(error)),
    }
}

/// A migrator over embedded `(version, description, sql)` files.
pub(crate) fn migrator(files: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr as _;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        files
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Builds an [`Agent`] from its columns.
pub(crate) fn agent_from_parts(
    agent_id: String,
    account_id: String,
    api_key_id: String,
    settings: AgentSettings,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
) -> Agent {
    Agent {
        agent_id: agent_id.into(),
        account_id: account_id.into(),
        api_key_id: api_key_id.into(),
        settings,
        created_at,
        updated_at,
    }
}

macro_rules! impl_store_base {
    ($store:ty, $db:ty, $backend:literal) => {
        mod store_sql {
            use async_trait::async_trait;








            use crate::sql::map_err;
            use crate::StoreError;
            use super::*;


            #[async_trait]
            impl crate::Store for $store {
                fn backend(&self) -> &'static str {
                    $backend
                }

                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query("select 1").execute(&self.pool).await.map_err(map_err)?;
                    Ok(())
                }

                async fn meta_get_or_put(&self, key: &str, value: &str) -> Result<String, StoreError> {
                    sqlx::query("insert into server_meta (key, value) values ($1, $2) on conflict do nothing")
                        .bind(key)
                        .bind(value)
                        .execute(&self.writer)
                        .await
                        .map_err(map_err)?;
                    sqlx::query_scalar("select value from server_meta where key = $1")
                        .bind(key)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_err)
                }
            }
        }
    };
}
pub(crate) use impl_store_base;
