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

/// Migrations whose comments were reworded after databases had applied them (only comments
/// changed): `(version, SHA-384 hex of the text those databases applied)`, per backend. Such a
/// database has its recorded checksum moved to the current text's before migrating, so it keeps
/// starting; any other mismatch still stops the server, as sqlx intends.
pub(crate) const REWORDED_SQLITE: &[(i64, &str)] = &[
    (
        1,
        "e410e18266296fe286fdeccafe4339b162570639c06f7b08ac2a93f68eefa3f2d107299577d0af5bf5f613c69006e31c",
    ),
    (
        2,
        "10eaca2500875ffcde314865cb7e149fca0c5fd61bb2049dda9ee282bd42a6515d4d26fe058afd833b53023cb330820a",
    ),
    (
        3,
        "7249054a1946bfed14ff6667cfa859ae31d758771e59e9e582a5f9bef57137dcab018ff50c79e36cb11a524b07581c03",
    ),
];

/// See [`REWORDED_SQLITE`].
pub(crate) const REWORDED_POSTGRES: &[(i64, &str)] = &[
    (
        1,
        "93e435f3839760250266e759626b8e3957c9331140b361c927c98564a200f858cbd61974980bbfe1d954863b2dc5f41e",
    ),
    (
        2,
        "c001d2b096350b8304b6329335d69716ee4afab660e86ccb971f276a02a10f4eaee9198b356cccd8f37b2cf861415124",
    ),
    (
        3,
        "fef6f75366dad1ef7bbe3220b5f5081410230d794f58afd6684a707b3df9a577cf498394b745eca27b8f69639be31f5e",
    ),
];

/// Moves the recorded checksums of [`REWORDED_SQLITE`]-style migrations to the current text's
/// (a no-op on a new database, where sqlx's table does not exist yet).
macro_rules! adopt_reworded {
    ($pool:expr, $migrator:expr, $reworded:expr) => {
        for (version, applied) in $reworded {
            let current = $migrator.iter().find(|m| m.version == *version);
            if let (Some(current), Ok(applied)) = (current, hex::decode(applied)) {
                let _ = sqlx::query(
                    "update _sqlx_migrations set checksum = $1 where version = $2 and checksum = $3",
                )
                .bind(current.checksum.to_vec())
                .bind(*version)
                .bind(applied)
                .execute($pool)
                .await;
            }
        }
    };
}
pub(crate) use adopt_reworded;

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

                async fn analyze(&self) -> Result<(), StoreError> {
                    // PostgreSQL: VACUUM too, so index-only scans of fresh rows skip the heap.
                    let sql = if $backend == "postgres" { "vacuum analyze" } else { "analyze" };
                    sqlx::query(sql).execute(&mut *self.write().await?).await.map_err(map_err)?;
                    Ok(())
                }

                async fn meta_get_or_put(&self, key: &str, value: &str) -> Result<String, StoreError> {
                    sqlx::query("insert into server_meta (key, value) values ($1, $2) on conflict do nothing")
                        .bind(key)
                        .bind(value)
                        .execute(&mut *self.write().await?)
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
