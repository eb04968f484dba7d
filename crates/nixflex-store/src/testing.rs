//! Test support: fresh databases for the conformance suite and the API tests.
//!
//! PostgreSQL tests need `NIXFLEX_TEST_POSTGRES_URL` (the README's test command starts a
//! throwaway server and sets it). Without it they fail with a message saying so, rather than
//! passing without having run.

use std::sync::Arc;

use crate::{Store, StoreError};

/// The env var naming an administrative PostgreSQL URL for tests.
pub const POSTGRES_ENV: &str = "NIXFLEX_TEST_POSTGRES_URL";

/// Creates an empty database on the test server and returns its URL.
///
/// # Panics
/// When `NIXFLEX_TEST_POSTGRES_URL` is unset or the server refuses (tests only).
#[allow(clippy::expect_used, clippy::panic)]
pub async fn fresh_postgres_url() -> String {
    use sqlx::Connection as _;
    let admin = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set: PostgreSQL tests need a server. Run ./scripts/test, which starts one, \
             or point {POSTGRES_ENV} at a server where the user may CREATE DATABASE."
        )
    });
    let name = format!("nixflex_test_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin).expect("NIXFLEX_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A fresh temporary SQLite file URL (the directory lives as long as the returned guard).
///
/// # Panics
/// When a temp dir cannot be created (tests only).
#[allow(clippy::expect_used)]
pub fn fresh_sqlite_url() -> (String, TempDirGuard) {
    let dir = std::env::temp_dir().join(format!("nixflex-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let url = format!("sqlite://{}", dir.join("nixflex.db").display());
    (url, TempDirGuard(dir))
}

/// Removes a temporary directory on drop.
#[derive(Debug)]
pub struct TempDirGuard(pub std::path::PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh store of the named backend (`sqlite` or `postgres`).
///
/// # Errors
/// When the database cannot be created or migrated.
pub async fn fresh_store(
    backend: &str,
) -> Result<(Arc<dyn Store>, Option<TempDirGuard>), StoreError> {
    match backend {
        "postgres" => Ok((crate::open(&fresh_postgres_url().await, 5).await?, None)),
        _ => {
            let (url, guard) = fresh_sqlite_url();
            Ok((crate::open(&url, 5).await?, Some(guard)))
        }
    }
}

/// Applies the schema's migrations up to and including `version` to the database at `url`
/// (created if missing), as a server of that release left it: tests of upgrades seed it, then
/// [`crate::open`] applies the rest.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub async fn migrate_through(url: &str, version: i64) -> Result<(), StoreError> {
    use std::str::FromStr as _;
    let err = |e: sqlx::migrate::MigrateError| StoreError::Other(e.into());
    if url.starts_with("postgres") {
        let files: Vec<_> =
            crate::postgres::MIGRATIONS.iter().copied().filter(|m| m.0 <= version).collect();
        let pool = sqlx::PgPool::connect(url).await.map_err(crate::sql::map_err)?;
        crate::sql::migrator(&files).run(&pool).await.map_err(err)?;
        pool.close().await;
    } else {
        let files: Vec<_> =
            crate::sqlite::MIGRATIONS.iter().copied().filter(|m| m.0 <= version).collect();
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(crate::sql::map_err)?
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.map_err(crate::sql::map_err)?;
        crate::sql::migrator(&files).run(&pool).await.map_err(err)?;
        pool.close().await;
    }
    Ok(())
}

/// Creates an account with default limits and one key (its secret hash a placeholder: such a
/// key authenticates nothing) and returns the account's id.
///
/// # Errors
/// When the store refuses the write.
pub async fn new_account(
    store: &(impl crate::AccountRepo + ?Sized),
) -> Result<nixflex_core::ids::AccountId, StoreError> {
    use nixflex_core::ids;
    let account = crate::Account {
        account_id: ids::new_account_id(),
        name: None,
        email: None,
        created_at: crate::now(),
        max_concurrent_calls: None,
        rate_limit_reads: None,
        rate_limit_writes: None,
    };
    let key = crate::ApiKey {
        key_id: ids::new_key_id(),
        account_id: account.account_id.clone(),
        name: None,
        secret_hash: "h".repeat(64),
        secret_sealed: "v1:sealed".to_owned(),
        created_at: crate::now(),
        rotated_at: None,
        revoked_at: None,
    };
    store.create_account(&account, &key).await?;
    Ok(account.account_id)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}{:x}", nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// An active-to-be Twilio number of `account_id` answered by `agent_id`, with placeholder SIDs
/// and a placeholder sealed token (tests that check signatures seal their own).
pub fn phone_number(
    account_id: &nixflex_core::ids::AccountId,
    agent_id: Option<&nixflex_core::ids::AgentId>,
    e164: &str,
) -> nixflex_core::number::PhoneNumber {
    let at = crate::now();
    nixflex_core::number::PhoneNumber {
        phone_number: e164.into(),
        account_id: account_id.clone(),
        agent_id: agent_id.cloned(),
        provider: "twilio".to_owned(),
        twilio_account_sid: format!("AC{}", "a".repeat(32)),
        twilio_auth_token_sealed: "v1:sealed-token".to_owned(),
        twilio_number_sid: format!("PN{}", "b".repeat(32)),
        inbound_enabled: true,
        outbound_enabled: true,
        sms_reply_enabled: true,
        settings: nixflex_core::number::NumberSettings::default(),
        webhook_url: None,
        webhook2_url: None,
        precall_url: None,
        created_at: at,
        updated_at: at,
    }
}
