//! Imported phone numbers, their integration URLs and their callers' context.
//!
//! The repository trait and its data; the SQL below serves both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::ids::{AccountId, AgentId, E164};
use nixflex_core::number::PhoneNumber;
use serde_json::{Map, Value};

use crate::{Page, StoreError};

/// A URL slot of a number (docs/api.md#integrations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberUrlSlot {
    /// Primary post-call webhook.
    Webhook,
    /// Secondary post-call webhook.
    Webhook2,
    /// Pre-call gate.
    Precall,
}

/// A caller-context record.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerRecord {
    /// The business number.
    pub phone_number: String,
    /// The caller.
    pub caller_number: String,
    /// Developer and engine fields.
    pub context: Map<String, Value>,
    /// First write.
    pub created_at: DateTime<Utc>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

/// Imported phone numbers, their integration URLs and their callers' context.
#[async_trait]
pub trait NumberRepo: Send + Sync {
    /// Reserves a number for an import in progress (state `pending`, invisible to reads). A
    /// pending reservation created before `stale_before` (a crashed import) is replaced.
    /// `Conflict` when the number is imported or being imported.
    async fn reserve_number(
        &self,
        number: &PhoneNumber,
        previous_twilio_config: &Value,
        stale_before: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Makes a reserved number visible.
    async fn activate_number(&self, phone_number: &E164) -> Result<(), StoreError>;

    /// Drops a reservation whose import failed.
    async fn release_number(&self, phone_number: &E164) -> Result<(), StoreError>;

    /// Whether any account has imported the number or is importing it (fresh reservations).
    async fn number_taken(
        &self,
        phone_number: &E164,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// An active number of this account, with its version.
    async fn get_number(
        &self,
        account_id: &AccountId,
        phone_number: &E164,
    ) -> Result<Option<(PhoneNumber, i64)>, StoreError>;

    /// An active number of any account (for carrier webhooks).
    async fn find_active_number(
        &self,
        phone_number: &E164,
    ) -> Result<Option<PhoneNumber>, StoreError>;

    /// The account's active numbers, newest first, optionally of one agent, with the total.
    async fn list_numbers(
        &self,
        account_id: &AccountId,
        agent_id: Option<&AgentId>,
        page: Page,
    ) -> Result<(Vec<PhoneNumber>, i64), StoreError>;

    /// Writes a number's settings, flags and agent if the version matches.
    async fn update_number(
        &self,
        number: &PhoneNumber,
        expected_version: i64,
    ) -> Result<(), StoreError>;

    /// Deletes a number with its caller context and integrations; false if it was not there.
    async fn delete_number(
        &self,
        account_id: &AccountId,
        phone_number: &E164,
    ) -> Result<bool, StoreError>;

    /// Sets or clears one URL slot of a number; false if the number is not this account's.
    async fn set_number_url(
        &self,
        account_id: &AccountId,
        phone_number: &E164,
        slot: NumberUrlSlot,
        url: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// One caller-context record.
    async fn get_caller(
        &self,
        phone_number: &E164,
        caller_number: &str,
    ) -> Result<Option<CallerRecord>, StoreError>;

    /// Applies validated patches (`null` removes a field) to caller records, creating them as
    /// needed, all in one transaction; returns the records as stored.
    async fn upsert_callers(
        &self,
        phone_number: &E164,
        patches: &[(String, Map<String, Value>)],
        at: DateTime<Utc>,
    ) -> Result<Vec<CallerRecord>, StoreError>;

    /// Erases one caller record; false if there was none.
    async fn delete_caller(
        &self,
        phone_number: &E164,
        caller_number: &str,
    ) -> Result<bool, StoreError>;
}

macro_rules! impl_numbers {
    ($store:ty, $db:ty, $backend:literal) => {
        mod numbers_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};


            use nixflex_core::number::{NumberSettings, PhoneNumber};
            use serde_json::{Map, Value};
            use sqlx::Row as _;
            use sqlx::types::Json;

            use crate::sql::map_err;
            use crate::{
                CallerRecord, NumberUrlSlot, Page, StoreError,
            };
            use super::*;
            use nixflex_core::ids::{AccountId, AgentId, E164};

            type DbRow = <$db as sqlx::Database>::Row;

            fn number_from_row(row: &DbRow) -> Result<PhoneNumber, sqlx::Error> {
                let Json(settings): Json<NumberSettings> = row.try_get("settings")?;
                Ok(PhoneNumber {
                    phone_number: row.try_get::<String, _>("phone_number")?.into(),
                    account_id: row.try_get::<String, _>("account_id")?.into(),
                    agent_id: row.try_get::<Option<String>, _>("agent_id")?.map(Into::into),
                    provider: row.try_get("provider")?,
                    twilio_account_sid: row.try_get("twilio_account_sid")?,
                    twilio_auth_token_sealed: row.try_get("twilio_auth_token_sealed")?,
                    twilio_number_sid: row.try_get("twilio_number_sid")?,
                    inbound_enabled: row.try_get("inbound_enabled")?,
                    outbound_enabled: row.try_get("outbound_enabled")?,
                    sms_reply_enabled: row.try_get("sms_reply_enabled")?,
                    settings,
                    webhook_url: row.try_get("webhook_url")?,
                    webhook2_url: row.try_get("webhook2_url")?,
                    precall_url: row.try_get("precall_url")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn caller_from_row(row: &DbRow) -> Result<CallerRecord, sqlx::Error> {
                let Json(context): Json<Map<String, Value>> = row.try_get("context")?;
                Ok(CallerRecord {
                    phone_number: row.try_get::<String, _>("phone_number")?.into(),
                    caller_number: row.try_get("caller_number")?,
                    context,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            #[async_trait]
            impl crate::NumberRepo for $store {
                async fn reserve_number(
                    &self,
                    number: &PhoneNumber,
                    previous_twilio_config: &Value,
                    stale_before: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    sqlx::query("delete from phone_numbers where phone_number = $1 and state = 'pending' and created_at < $2")
                        .bind(number.phone_number.as_str())
                        .bind(stale_before)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    sqlx::query(
                        "insert into phone_numbers (phone_number, account_id, agent_id, provider, state, twilio_account_sid, \
                         twilio_auth_token_sealed, twilio_number_sid, inbound_enabled, outbound_enabled, sms_reply_enabled, \
                         settings, webhook_url, webhook2_url, precall_url, previous_twilio_config, version, created_at, updated_at) \
                         values ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $16, $17)",
                    )
                    .bind(number.phone_number.as_str())
                    .bind(number.account_id.as_str())
                    .bind(number.agent_id.as_deref())
                    .bind(&number.provider)
                    .bind(&number.twilio_account_sid)
                    .bind(&number.twilio_auth_token_sealed)
                    .bind(&number.twilio_number_sid)
                    .bind(number.inbound_enabled)
                    .bind(number.outbound_enabled)
                    .bind(number.sms_reply_enabled)
                    .bind(Json(&number.settings))
                    .bind(&number.webhook_url)
                    .bind(&number.webhook2_url)
                    .bind(&number.precall_url)
                    .bind(Json(previous_twilio_config))
                    .bind(number.created_at)
                    .bind(number.updated_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let committed = tx.commit().await.map_err(map_err);
                    self.numbers.forget();
                    committed
                }

                async fn activate_number(&self, phone_number: &E164) -> Result<(), StoreError> {
                    let done = sqlx::query("update phone_numbers set state = 'active' where phone_number = $1 and state = 'pending'")
                        .bind(phone_number.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err);
                    self.numbers.forget();
                    let done = done?;
                    if done.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound) }
                }

                async fn release_number(&self, phone_number: &E164) -> Result<(), StoreError> {
                    let done = sqlx::query("delete from phone_numbers where phone_number = $1 and state = 'pending'")
                        .bind(phone_number.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err);
                    self.numbers.forget();
                    done.map(|_| ())
                }

                async fn number_taken(&self, phone_number: &E164, stale_before: DateTime<Utc>) -> Result<bool, StoreError> {
                    let n: i64 = sqlx::query_scalar(
                        "select count(*) from phone_numbers where phone_number = $1 and (state = 'active' or created_at >= $2)",
                    )
                    .bind(phone_number.as_str())
                    .bind(stale_before)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                    Ok(n > 0)
                }

                async fn get_number(&self, account_id: &AccountId, phone_number: &E164) -> Result<Option<(PhoneNumber, i64)>, StoreError> {
                    let row = sqlx::query("select * from phone_numbers where phone_number = $1 and account_id = $2 and state = 'active'")
                        .bind(phone_number.as_str())
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let Some(row) = row else { return Ok(None) };
                    let version: i64 = row.try_get("version").map_err(map_err)?;
                    Ok(Some((number_from_row(&row).map_err(map_err)?, version)))
                }

                async fn find_active_number(&self, phone_number: &E164) -> Result<Option<PhoneNumber>, StoreError> {
                    use crate::number_cache::Cached;
                    // Answered from this node's memory while the authentication epoch says no
                    // number changed (crate::number_cache, docs/operations.md#number-cache).
                    let key = phone_number.as_str();
                    let generation = match self.numbers.lookup(key) {
                        Cached::Hit(found) => return Ok(found.map(|number| (*number).clone())),
                        Cached::Miss { check_epoch: false, generation } => generation,
                        Cached::Miss { check_epoch: true, .. } => {
                            let read_at = std::time::Instant::now();
                            let epoch: i64 = sqlx::query_scalar("select epoch from auth_epoch where id = 1")
                                .fetch_one(&self.pool)
                                .await
                                .map_err(map_err)?;
                            let generation = self.numbers.observe_epoch(epoch, read_at);
                            if let Cached::Hit(found) = self.numbers.lookup(key) {
                                return Ok(found.map(|number| (*number).clone()));
                            }
                            generation
                        }
                    };
                    let row = sqlx::query("select * from phone_numbers where phone_number = $1 and state = 'active'")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let found = row.map(|row| number_from_row(&row)).transpose().map_err(map_err)?;
                    self.numbers.keep(generation, key, found.as_ref());
                    Ok(found)
                }

                async fn list_numbers(
                    &self,
                    account_id: &AccountId,
                    agent_id: Option<&AgentId>,
                    page: Page,
                ) -> Result<(Vec<PhoneNumber>, i64), StoreError> {
                    let total: i64 = sqlx::query_scalar(
                        "select count(*) from phone_numbers where account_id = $1 and state = 'active' and ($2 is null or agent_id = $2)",
                    )
                    .bind(account_id.as_str())
                    .bind(agent_id.map(AgentId::as_str))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                    let rows = sqlx::query(
                        "select * from phone_numbers where account_id = $1 and state = 'active' and ($2 is null or agent_id = $2) \
                         order by created_at desc, phone_number desc limit $3 offset $4",
                    )
                    .bind(account_id.as_str())
                    .bind(agent_id.map(AgentId::as_str))
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    let numbers = rows.iter().map(number_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    Ok((numbers, total))
                }

                async fn update_number(&self, number: &PhoneNumber, expected_version: i64) -> Result<(), StoreError> {
                    let done = sqlx::query(
                        "update phone_numbers set agent_id = $3, inbound_enabled = $4, outbound_enabled = $5, sms_reply_enabled = $6, \
                         settings = $7, updated_at = $8, version = version + 1 \
                         where phone_number = $1 and account_id = $2 and state = 'active' and version = $9",
                    )
                    .bind(number.phone_number.as_str())
                    .bind(number.account_id.as_str())
                    .bind(number.agent_id.as_deref())
                    .bind(number.inbound_enabled)
                    .bind(number.outbound_enabled)
                    .bind(number.sms_reply_enabled)
                    .bind(Json(&number.settings))
                    .bind(number.updated_at)
                    .bind(expected_version)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err);
                    self.numbers.forget();
                    let done = done?;
                    if done.rows_affected() == 1 {
                        return Ok(());
                    }
                    match self.get_number(&number.account_id, &number.phone_number).await? {
                        Some(_) => Err(StoreError::Conflict { constraint: "version" }),
                        None => Err(StoreError::NotFound),
                    }
                }

                async fn delete_number(&self, account_id: &AccountId, phone_number: &E164) -> Result<bool, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    // Explicit, not only by cascade: caller context goes with the number (docs/decisions.md#number-deletion).
                    sqlx::query(
                        "delete from callers where phone_number = $1 and exists \
                         (select 1 from phone_numbers where phone_number = $1 and account_id = $2 and state = 'active')",
                    )
                    .bind(phone_number.as_str())
                    .bind(account_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let done = sqlx::query("delete from phone_numbers where phone_number = $1 and account_id = $2 and state = 'active'")
                        .bind(phone_number.as_str())
                        .bind(account_id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let committed = tx.commit().await.map_err(map_err);
                    self.numbers.forget();
                    committed?;
                    Ok(done.rows_affected() == 1)
                }

                async fn set_number_url(
                    &self,
                    account_id: &AccountId,
                    phone_number: &E164,
                    slot: NumberUrlSlot,
                    url: Option<&str>,
                ) -> Result<bool, StoreError> {
                    let sql = match slot {
                        NumberUrlSlot::Webhook => "update phone_numbers set webhook_url = $3 where phone_number = $1 and account_id = $2 and state = 'active'",
                        NumberUrlSlot::Webhook2 => "update phone_numbers set webhook2_url = $3 where phone_number = $1 and account_id = $2 and state = 'active'",
                        NumberUrlSlot::Precall => "update phone_numbers set precall_url = $3 where phone_number = $1 and account_id = $2 and state = 'active'",
                    };
                    let done = sqlx::query(sql)
                        .bind(phone_number.as_str())
                        .bind(account_id.as_str())
                        .bind(url)
                        .execute(&self.pool)
                        .await
                        .map_err(map_err);
                    self.numbers.forget();
                    Ok(done?.rows_affected() == 1)
                }

                async fn get_caller(&self, phone_number: &E164, caller_number: &str) -> Result<Option<CallerRecord>, StoreError> {
                    let row = sqlx::query("select * from callers where phone_number = $1 and caller_number = $2")
                        .bind(phone_number.as_str())
                        .bind(caller_number)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| caller_from_row(&row)).transpose().map_err(map_err)
                }

                async fn upsert_callers(
                    &self,
                    phone_number: &E164,
                    patches: &[(String, Map<String, Value>)],
                    at: DateTime<Utc>,
                ) -> Result<Vec<CallerRecord>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    // Serialise writes to one number's callers so concurrent patches merge.
                    if let Some(lock) = Self::LOCK_NUMBER {
                        sqlx::query(lock).bind(phone_number.as_str()).execute(&mut *tx).await.map_err(map_err)?;
                    }
                    let mut out = Vec::with_capacity(patches.len());
                    for (caller_number, patch) in patches {
                        let existing = sqlx::query("select * from callers where phone_number = $1 and caller_number = $2")
                            .bind(phone_number.as_str())
                            .bind(caller_number)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        let (mut context, created_at) = match existing {
                            Some(row) => {
                                let record = caller_from_row(&row).map_err(map_err)?;
                                (record.context, record.created_at)
                            }
                            None => (Map::new(), at),
                        };
                        nixflex_core::caller::merge(&mut context, patch);
                        sqlx::query(
                            "insert into callers (phone_number, caller_number, context, created_at, updated_at) values ($1, $2, $3, $4, $5) \
                             on conflict (phone_number, caller_number) do update set context = excluded.context, updated_at = excluded.updated_at",
                        )
                        .bind(phone_number.as_str())
                        .bind(caller_number)
                        .bind(Json(&context))
                        .bind(created_at)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        out.push(CallerRecord {
                            phone_number: phone_number.to_string(),
                            caller_number: caller_number.clone(),
                            context,
                            created_at,
                            updated_at: at,
                        });
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok(out)
                }

                async fn delete_caller(&self, phone_number: &E164, caller_number: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query("delete from callers where phone_number = $1 and caller_number = $2")
                        .bind(phone_number.as_str())
                        .bind(caller_number)
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }
            }
        }
    };
}
pub(crate) use impl_numbers;
