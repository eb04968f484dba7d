//! An account's own LLM and speech provider (`/v1/account/llm`, `/v1/account/tts`;
//! docs/providers.md#bring-your-own-llm-and-tts). The API keys are stored sealed under the
//! master key; this crate never sees them in the clear.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::ids::AccountId;

use crate::StoreError;

/// An account's own OpenAI-compatible LLM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLlm {
    /// Owner.
    pub account_id: AccountId,
    /// The https base URL (including `/v1`).
    pub endpoint: String,
    /// The model name sent with every request.
    pub model: String,
    /// The API key, sealed under the master key (never shown back).
    pub api_key_sealed: String,
    /// When the test request last succeeded.
    pub verified_at: DateTime<Utc>,
    /// First saved.
    pub created_at: DateTime<Utc>,
    /// Last replaced.
    pub updated_at: DateTime<Utc>,
}

/// An account's own speech provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTts {
    /// Owner.
    pub account_id: AccountId,
    /// `elevenlabs` or `cartesia`.
    pub provider: String,
    /// The provider's voice id.
    pub voice_id: String,
    /// The API key, sealed under the master key (never shown back).
    pub api_key_sealed: String,
    /// When the test synthesis last succeeded.
    pub verified_at: DateTime<Utc>,
    /// First saved.
    pub created_at: DateTime<Utc>,
    /// Last replaced.
    pub updated_at: DateTime<Utc>,
}

/// Accounts' own providers.
#[async_trait]
pub trait ProviderSettingsRepo: Send + Sync {
    /// An account's own LLM, if it set one.
    async fn account_llm(&self, account_id: &AccountId) -> Result<Option<AccountLlm>, StoreError>;

    /// Saves (or replaces) an account's own LLM.
    async fn put_account_llm(&self, llm: &AccountLlm) -> Result<(), StoreError>;

    /// Removes an account's own LLM; false when it had none.
    async fn delete_account_llm(&self, account_id: &AccountId) -> Result<bool, StoreError>;

    /// An account's own speech provider, if it set one.
    async fn account_tts(&self, account_id: &AccountId) -> Result<Option<AccountTts>, StoreError>;

    /// Saves (or replaces) an account's own speech provider.
    async fn put_account_tts(&self, tts: &AccountTts) -> Result<(), StoreError>;

    /// Removes an account's own speech provider; false when it had none.
    async fn delete_account_tts(&self, account_id: &AccountId) -> Result<bool, StoreError>;
}

macro_rules! impl_providers {
    ($store:ty, $db:ty, $backend:literal) => {
        mod providers_sql {
            use async_trait::async_trait;
            use nixflex_core::ids::AccountId;
            use sqlx::Row as _;

            use super::*;
            use crate::sql::map_err;
            use crate::{AccountLlm, AccountTts, StoreError};

            #[async_trait]
            impl crate::ProviderSettingsRepo for $store {
                async fn account_llm(
                    &self,
                    account_id: &AccountId,
                ) -> Result<Option<AccountLlm>, StoreError> {
                    let row = sqlx::query("select * from account_llm where account_id = $1")
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| {
                        Ok(AccountLlm {
                            account_id: row.try_get::<String, _>("account_id")?.into(),
                            endpoint: row.try_get("endpoint")?,
                            model: row.try_get("model")?,
                            api_key_sealed: row.try_get("api_key_sealed")?,
                            verified_at: row.try_get("verified_at")?,
                            created_at: row.try_get("created_at")?,
                            updated_at: row.try_get("updated_at")?,
                        })
                    })
                    .transpose()
                    .map_err(|e: sqlx::Error| map_err(e))
                }

                async fn put_account_llm(&self, llm: &AccountLlm) -> Result<(), StoreError> {
                    sqlx::query(
                        "insert into account_llm (account_id, endpoint, model, api_key_sealed, \
                         verified_at, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7) \
                         on conflict (account_id) do update set endpoint = excluded.endpoint, \
                         model = excluded.model, api_key_sealed = excluded.api_key_sealed, \
                         verified_at = excluded.verified_at, updated_at = excluded.updated_at",
                    )
                    .bind(llm.account_id.as_str())
                    .bind(&llm.endpoint)
                    .bind(&llm.model)
                    .bind(&llm.api_key_sealed)
                    .bind(llm.verified_at)
                    .bind(llm.created_at)
                    .bind(llm.updated_at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(())
                }

                async fn delete_account_llm(&self, account_id: &AccountId) -> Result<bool, StoreError> {
                    let done = sqlx::query("delete from account_llm where account_id = $1")
                        .bind(account_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn account_tts(
                    &self,
                    account_id: &AccountId,
                ) -> Result<Option<AccountTts>, StoreError> {
                    let row = sqlx::query("select * from account_tts where account_id = $1")
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| {
                        Ok(AccountTts {
                            account_id: row.try_get::<String, _>("account_id")?.into(),
                            provider: row.try_get("provider")?,
                            voice_id: row.try_get("voice_id")?,
                            api_key_sealed: row.try_get("api_key_sealed")?,
                            verified_at: row.try_get("verified_at")?,
                            created_at: row.try_get("created_at")?,
                            updated_at: row.try_get("updated_at")?,
                        })
                    })
                    .transpose()
                    .map_err(|e: sqlx::Error| map_err(e))
                }

                async fn put_account_tts(&self, tts: &AccountTts) -> Result<(), StoreError> {
                    sqlx::query(
                        "insert into account_tts (account_id, provider, voice_id, api_key_sealed, \
                         verified_at, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7) \
                         on conflict (account_id) do update set provider = excluded.provider, \
                         voice_id = excluded.voice_id, api_key_sealed = excluded.api_key_sealed, \
                         verified_at = excluded.verified_at, updated_at = excluded.updated_at",
                    )
                    .bind(tts.account_id.as_str())
                    .bind(&tts.provider)
                    .bind(&tts.voice_id)
                    .bind(&tts.api_key_sealed)
                    .bind(tts.verified_at)
                    .bind(tts.created_at)
                    .bind(tts.updated_at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(())
                }

                async fn delete_account_tts(&self, account_id: &AccountId) -> Result<bool, StoreError> {
                    let done = sqlx::query("delete from account_tts where account_id = $1")
                        .bind(account_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }
            }
        }
    };
}
pub(crate) use impl_providers;
