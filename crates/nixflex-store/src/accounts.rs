//! Accounts and their API keys.
//!
//! The repository trait and its data; the SQL below serves both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::ids::{AccountId, KeyId};

use crate::{Page, StoreError};

/// An account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// `acct_` + 16 hex.
    pub account_id: AccountId,
    /// Account holder name.
    pub name: Option<String>,
    /// Billing/alert e-mail.
    pub email: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Override of the concurrent-call cap.
    pub max_concurrent_calls: Option<i64>,
    /// Override of reads per minute.
    pub rate_limit_reads: Option<i64>,
    /// Override of writes per minute.
    pub rate_limit_writes: Option<i64>,
}

/// An API key (never the raw secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// `nxf_` + 32 hex.
    pub key_id: KeyId,
    /// Owner.
    pub account_id: AccountId,
    /// Label.
    pub name: Option<String>,
    /// SHA-256 hex of the secret.
    pub secret_hash: String,
    /// The AEAD-sealed secret.
    pub secret_sealed: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last rotation.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Revocation time; revoked keys never authenticate.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key with its account, as authentication needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyWithAccount {
    /// The key.
    pub key: ApiKey,
    /// Its account.
    pub account: Account,
}

/// Result of revoking a key.
#[derive(Debug, Clone, PartialEq)]
pub enum RevokeOutcome {
    /// Revoked now or earlier; the key as stored.
    Revoked(ApiKey),
    /// It is the account's last active key.
    LastActiveKey,
    /// No such key in this account.
    NotFound,
}

/// Accounts and their API keys.
#[async_trait]
pub trait AccountRepo: Send + Sync {
    /// Creates an account and its first key atomically.
    async fn create_account(&self, account: &Account, key: &ApiKey) -> Result<(), StoreError>;

    /// Fetches an account.
    async fn get_account(&self, account_id: &AccountId) -> Result<Option<Account>, StoreError>;

    /// Sets the per-account limit overrides (admin).
    async fn set_account_limits(
        &self,
        account_id: &AccountId,
        max_concurrent_calls: Option<i64>,
        rate_limit_reads: Option<i64>,
        rate_limit_writes: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Adds a key to an existing account.
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// A key and its account, revoked or not.
    async fn get_key(&self, key_id: &KeyId) -> Result<Option<KeyWithAccount>, StoreError>;

    /// The account's keys, newest first, with the total.
    async fn list_keys(
        &self,
        account_id: &AccountId,
        page: Page,
    ) -> Result<(Vec<ApiKey>, i64), StoreError>;

    /// The account's active (unrevoked) keys, newest first, at most 100: their secrets sign
    /// webhooks and requests to the account's endpoints. One statement, no total.
    async fn active_keys(&self, account_id: &AccountId) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key unless it is the account's last active one (atomic across nodes).
    async fn revoke_key(
        &self,
        account_id: &AccountId,
        key_id: &KeyId,
        at: DateTime<Utc>,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Replaces an active key's secret; `NotFound` when unknown or revoked.
    async fn rotate_key(
        &self,
        key_id: &KeyId,
        secret_hash: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<ApiKey, StoreError>;

    /// The authentication epoch: a counter that moves, in the same transaction, with every
    /// change that can make a cached key wrong (a key created, rotated or revoked, an account's
    /// limits changed). Nodes poll it to know when to empty their key cache
    /// (docs/security.md#key-cache).
    async fn auth_epoch(&self) -> Result<i64, StoreError>;
}

macro_rules! impl_accounts {
    ($store:ty, $db:ty, $backend:literal) => {
        mod accounts_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};




            use sqlx::Row as _;


            use crate::sql::map_err;
            use crate::{
                Account, ApiKey, KeyWithAccount, Page, RevokeOutcome, StoreError,
            };
            use super::*;
            use nixflex_core::ids::{AccountId, KeyId};

            type DbRow = <$db as sqlx::Database>::Row;

            fn account_from_row(row: &DbRow, prefix: bool) -> Result<Account, sqlx::Error> {
                let col = |name: &'static str| if prefix { format!("a_{name}") } else { name.to_owned() };
                Ok(Account {
                    account_id: row.try_get::<String, _>(col("account_id").as_str())?.into(),
                    name: row.try_get(col("name").as_str())?,
                    email: row.try_get(col("email").as_str())?,
                    created_at: row.try_get(col("created_at").as_str())?,
                    max_concurrent_calls: row.try_get(col("max_concurrent_calls").as_str())?,
                    rate_limit_reads: row.try_get(col("rate_limit_reads").as_str())?,
                    rate_limit_writes: row.try_get(col("rate_limit_writes").as_str())?,
                })
            }

            fn key_from_row(row: &DbRow) -> Result<ApiKey, sqlx::Error> {
                Ok(ApiKey {
                    key_id: row.try_get::<String, _>("key_id")?.into(),
                    account_id: row.try_get::<String, _>("account_id")?.into(),
                    name: row.try_get("name")?,
                    secret_hash: row.try_get("secret_hash")?,
                    secret_sealed: row.try_get("secret_sealed")?,
                    created_at: row.try_get("created_at")?,
                    rotated_at: row.try_get("rotated_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            }

            async fn insert_key_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                key: &ApiKey,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "insert into api_keys (key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(key.key_id.as_str())
                .bind(key.account_id.as_str())
                .bind(&key.name)
                .bind(&key.secret_hash)
                .bind(&key.secret_sealed)
                .bind(key.created_at)
                .bind(key.rotated_at)
                .bind(key.revoked_at)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            /// Moves the authentication epoch inside the caller's transaction, so nodes see the
            /// change that made their cached keys wrong no earlier and no later than the change.
            async fn bump_auth_epoch(
                tx: &mut sqlx::Transaction<'static, $db>,
            ) -> Result<(), StoreError> {
                sqlx::query("update auth_epoch set epoch = epoch + 1 where id = 1")
                    .execute(&mut **tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            #[async_trait]
            impl crate::AccountRepo for $store {
                async fn create_account(&self, account: &Account, key: &ApiKey) -> Result<(), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    sqlx::query(
                        "insert into accounts (account_id, name, email, created_at, max_concurrent_calls, rate_limit_reads, rate_limit_writes) values ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(account.account_id.as_str())
                    .bind(&account.name)
                    .bind(&account.email)
                    .bind(account.created_at)
                    .bind(account.max_concurrent_calls)
                    .bind(account.rate_limit_reads)
                    .bind(account.rate_limit_writes)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    insert_key_in(&mut tx, key).await?;
                    bump_auth_epoch(&mut tx).await?;
                    tx.commit().await.map_err(map_err)
                }

                async fn get_account(&self, account_id: &AccountId) -> Result<Option<Account>, StoreError> {
                    let row = sqlx::query("select * from accounts where account_id = $1")
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| account_from_row(&row, false)).transpose().map_err(map_err)
                }

                async fn set_account_limits(
                    &self,
                    account_id: &AccountId,
                    max_concurrent_calls: Option<i64>,
                    rate_limit_reads: Option<i64>,
                    rate_limit_writes: Option<i64>,
                ) -> Result<(), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let done = sqlx::query(
                        "update accounts set max_concurrent_calls = $2, rate_limit_reads = $3, rate_limit_writes = $4 where account_id = $1",
                    )
                    .bind(account_id.as_str())
                    .bind(max_concurrent_calls)
                    .bind(rate_limit_reads)
                    .bind(rate_limit_writes)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    // Cached callers carry the account's limits.
                    bump_auth_epoch(&mut tx).await?;
                    tx.commit().await.map_err(map_err)
                }

                async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    insert_key_in(&mut tx, key).await?;
                    bump_auth_epoch(&mut tx).await?;
                    tx.commit().await.map_err(map_err)
                }

                async fn get_key(&self, key_id: &KeyId) -> Result<Option<KeyWithAccount>, StoreError> {
                    let row = sqlx::query(
                        "select k.key_id, k.account_id, k.name, k.secret_hash, k.secret_sealed, k.created_at, k.rotated_at, k.revoked_at, \
                         a.account_id as a_account_id, a.name as a_name, a.email as a_email, a.created_at as a_created_at, \
                         a.max_concurrent_calls as a_max_concurrent_calls, a.rate_limit_reads as a_rate_limit_reads, \
                         a.rate_limit_writes as a_rate_limit_writes \
                         from api_keys k join accounts a on a.account_id = k.account_id where k.key_id = $1",
                    )
                    .bind(key_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                    let Some(row) = row else { return Ok(None) };
                    let key = key_from_row(&row).map_err(map_err)?;
                    let account = account_from_row(&row, true).map_err(map_err)?;
                    Ok(Some(KeyWithAccount { key, account }))
                }

                async fn list_keys(&self, account_id: &AccountId, page: Page) -> Result<(Vec<ApiKey>, i64), StoreError> {
                    let total: i64 = sqlx::query_scalar("select count(*) from api_keys where account_id = $1")
                        .bind(account_id.as_str())
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let rows = sqlx::query(
                        "select key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at \
                         from api_keys where account_id = $1 order by created_at desc, key_id desc limit $2 offset $3",
                    )
                    .bind(account_id.as_str())
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    let keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    Ok((keys, total))
                }

                async fn active_keys(&self, account_id: &AccountId) -> Result<Vec<ApiKey>, StoreError> {
                    let rows = sqlx::query(
                        "select key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at \
                         from api_keys where account_id = $1 and revoked_at is null order by created_at desc, key_id desc limit 100",
                    )
                    .bind(account_id.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter().map(key_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)
                }

                async fn revoke_key(
                    &self,
                    account_id: &AccountId,
                    key_id: &KeyId,
                    at: DateTime<Utc>,
                ) -> Result<RevokeOutcome, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    // Serialise revocations per account so two concurrent requests cannot each see
                    // "another active key" and revoke both.
                    if let Some(lock) = Self::LOCK_ACCOUNT {
                        sqlx::query(lock).bind(account_id.as_str()).execute(&mut *tx).await.map_err(map_err)?;
                    }
                    let row = sqlx::query(
                        "select key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at \
                         from api_keys where key_id = $1 and account_id = $2",
                    )
                    .bind(key_id.as_str())
                    .bind(account_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let Some(row) = row else { return Ok(RevokeOutcome::NotFound) };
                    let mut key = key_from_row(&row).map_err(map_err)?;
                    if key.revoked_at.is_some() {
                        return Ok(RevokeOutcome::Revoked(key));
                    }
                    let active: i64 = sqlx::query_scalar(
                        "select count(*) from api_keys where account_id = $1 and revoked_at is null",
                    )
                    .bind(account_id.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if active <= 1 {
                        return Ok(RevokeOutcome::LastActiveKey);
                    }
                    sqlx::query("update api_keys set revoked_at = $2 where key_id = $1")
                        .bind(key_id.as_str())
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    bump_auth_epoch(&mut tx).await?;
                    tx.commit().await.map_err(map_err)?;
                    key.revoked_at = Some(at);
                    Ok(RevokeOutcome::Revoked(key))
                }

                async fn rotate_key(
                    &self,
                    key_id: &KeyId,
                    secret_hash: &str,
                    secret_sealed: &str,
                    at: DateTime<Utc>,
                ) -> Result<ApiKey, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let row = sqlx::query(
                        "update api_keys set secret_hash = $2, secret_sealed = $3, rotated_at = $4 \
                         where key_id = $1 and revoked_at is null \
                         returning key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at",
                    )
                    .bind(key_id.as_str())
                    .bind(secret_hash)
                    .bind(secret_sealed)
                    .bind(at)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let Some(row) = row else { return Err(StoreError::NotFound) };
                    let key = key_from_row(&row).map_err(map_err)?;
                    bump_auth_epoch(&mut tx).await?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(key)
                }

                async fn auth_epoch(&self) -> Result<i64, StoreError> {
                    sqlx::query_scalar("select epoch from auth_epoch where id = 1")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_err)
                }
            }
        }
    };
}
pub(crate) use impl_accounts;
