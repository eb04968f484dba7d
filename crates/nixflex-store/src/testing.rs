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

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}{:x}", nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
