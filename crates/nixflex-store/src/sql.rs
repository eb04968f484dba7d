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
    Agent { agent_id, account_id, api_key_id, settings, created_at, updated_at }
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal) => {
        use async_trait::async_trait;
        use chrono::{DateTime, Utc};
        use nixflex_core::agent::{Agent, AgentSettings};
        use sqlx::Row as _;
        use sqlx::types::Json;

        use crate::sql::agent_from_parts;
        use crate::{
            Account, Admission, ApiKey, CallFilter, CallUpdate, CallerRecord, IdempotencyBegin,
            IdempotencyScope, KeyWithAccount, NumberUrlSlot, Page, RevokeOutcome, Store,
            StoredResponse,
        };
        use nixflex_core::call::{CallRecord, Direction, TranscriptEntry, TurnLatency};
        use nixflex_core::number::{NumberSettings, PhoneNumber};
        use serde_json::{Map, Value};

        type DbRow = <$db as sqlx::Database>::Row;

        fn account_from_row(row: &DbRow, prefix: bool) -> Result<Account, sqlx::Error> {
            let col = |name: &'static str| if prefix { format!("a_{name}") } else { name.to_owned() };
            Ok(Account {
                account_id: row.try_get(col("account_id").as_str())?,
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
                key_id: row.try_get("key_id")?,
                account_id: row.try_get("account_id")?,
                name: row.try_get("name")?,
                secret_hash: row.try_get("secret_hash")?,
                secret_sealed: row.try_get("secret_sealed")?,
                created_at: row.try_get("created_at")?,
                rotated_at: row.try_get("rotated_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        }

        fn agent_from_row(row: &DbRow) -> Result<Agent, sqlx::Error> {
            let Json(settings): Json<AgentSettings> = row.try_get("settings")?;
            Ok(agent_from_parts(
                row.try_get("agent_id")?,
                row.try_get("account_id")?,
                row.try_get("api_key_id")?,
                settings,
                row.try_get("created_at")?,
                row.try_get("updated_at")?,
            ))
        }

        fn number_from_row(row: &DbRow) -> Result<PhoneNumber, sqlx::Error> {
            let Json(settings): Json<NumberSettings> = row.try_get("settings")?;
            Ok(PhoneNumber {
                phone_number: row.try_get("phone_number")?,
                account_id: row.try_get("account_id")?,
                agent_id: row.try_get("agent_id")?,
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

        fn call_from_row(row: &DbRow) -> Result<CallRecord, sqlx::Error> {
            let direction: String = row.try_get("direction")?;
            let Json(transcript): Json<Vec<TranscriptEntry>> = row.try_get("transcript")?;
            let Json(turns): Json<Vec<TurnLatency>> = row.try_get("turns")?;
            let Json(extracted_data): Json<Map<String, Value>> = row.try_get("extracted_data")?;
            let metadata: Option<Json<Value>> = row.try_get("metadata")?;
            Ok(CallRecord {
                call_id: row.try_get("call_id")?,
                account_id: row.try_get("account_id")?,
                agent_id: row.try_get("agent_id")?,
                direction: Direction::parse(&direction).unwrap_or(Direction::Inbound),
                from_number: row.try_get("from_number")?,
                to_number: row.try_get("to_number")?,
                twilio_call_sid: row.try_get("twilio_call_sid")?,
                call_status: row.try_get("call_status")?,
                ended_reason: row.try_get("ended_reason")?,
                started_at: row.try_get("started_at")?,
                answered_at: row.try_get("answered_at")?,
                ended_at: row.try_get("ended_at")?,
                duration_seconds: row.try_get("duration_seconds")?,
                transcript,
                turns,
                avg_latency_ms: row.try_get("avg_latency_ms")?,
                recording_url: row.try_get("recording_url")?,
                call_summary: row.try_get("call_summary")?,
                caller_sentiment: row.try_get("caller_sentiment")?,
                call_successful: row.try_get("call_successful")?,
                extracted_data,
                voicemail_detected: row.try_get("voicemail_detected")?,
                campaign_id: row.try_get("campaign_id")?,
                metadata: metadata.map(|Json(v)| v),
                cost_usd: row.try_get("cost_usd")?,
                precall_reject_reason: row.try_get("precall_reject_reason")?,
                stream_token_hash: row.try_get("stream_token_hash")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        async fn insert_call_in<'e, E>(executor: E, call: &CallRecord) -> Result<(), StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query(
                "insert into calls (call_id, account_id, agent_id, direction, from_number, to_number, twilio_call_sid, call_status, \
                 ended_reason, started_at, answered_at, ended_at, duration_seconds, transcript, turns, avg_latency_ms, recording_url, \
                 call_summary, caller_sentiment, call_successful, extracted_data, voicemail_detected, campaign_id, metadata, cost_usd, \
                 precall_reject_reason, stream_token_hash, heartbeat_at, created_at, updated_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)",
            )
            .bind(&call.call_id)
            .bind(&call.account_id)
            .bind(&call.agent_id)
            .bind(call.direction.as_str())
            .bind(&call.from_number)
            .bind(&call.to_number)
            .bind(&call.twilio_call_sid)
            .bind(&call.call_status)
            .bind(&call.ended_reason)
            .bind(call.started_at)
            .bind(call.answered_at)
            .bind(call.ended_at)
            .bind(call.duration_seconds)
            .bind(Json(&call.transcript))
            .bind(Json(&call.turns))
            .bind(call.avg_latency_ms)
            .bind(&call.recording_url)
            .bind(&call.call_summary)
            .bind(&call.caller_sentiment)
            .bind(call.call_successful)
            .bind(Json(&call.extracted_data))
            .bind(call.voicemail_detected)
            .bind(&call.campaign_id)
            .bind(call.metadata.as_ref().map(Json))
            .bind(call.cost_usd)
            .bind(&call.precall_reject_reason)
            .bind(&call.stream_token_hash)
            .bind(call.created_at)
            .bind(call.created_at)
            .bind(call.updated_at)
            .execute(executor)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        fn caller_from_row(row: &DbRow) -> Result<CallerRecord, sqlx::Error> {
            let Json(context): Json<Map<String, Value>> = row.try_get("context")?;
            Ok(CallerRecord {
                phone_number: row.try_get("phone_number")?,
                caller_number: row.try_get("caller_number")?,
                context,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        #[async_trait]
        impl Store for $store {
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

            async fn create_account(&self, account: &Account, key: &ApiKey) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "insert into accounts (account_id, name, email, created_at, max_concurrent_calls, rate_limit_reads, rate_limit_writes) values ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&account.account_id)
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
                tx.commit().await.map_err(map_err)
            }

            async fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError> {
                let row = sqlx::query("select * from accounts where account_id = $1")
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|row| account_from_row(&row, false)).transpose().map_err(map_err)
            }

            async fn set_account_limits(
                &self,
                account_id: &str,
                max_concurrent_calls: Option<i64>,
                rate_limit_reads: Option<i64>,
                rate_limit_writes: Option<i64>,
            ) -> Result<(), StoreError> {
                let done = sqlx::query(
                    "update accounts set max_concurrent_calls = $2, rate_limit_reads = $3, rate_limit_writes = $4 where account_id = $1",
                )
                .bind(account_id)
                .bind(max_concurrent_calls)
                .bind(rate_limit_reads)
                .bind(rate_limit_writes)
                .execute(&self.writer)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                insert_key_in(&mut tx, key).await?;
                tx.commit().await.map_err(map_err)
            }

            async fn get_key(&self, key_id: &str) -> Result<Option<KeyWithAccount>, StoreError> {
                let row = sqlx::query(
                    "select k.key_id, k.account_id, k.name, k.secret_hash, k.secret_sealed, k.created_at, k.rotated_at, k.revoked_at, \
                     a.account_id as a_account_id, a.name as a_name, a.email as a_email, a.created_at as a_created_at, \
                     a.max_concurrent_calls as a_max_concurrent_calls, a.rate_limit_reads as a_rate_limit_reads, \
                     a.rate_limit_writes as a_rate_limit_writes \
                     from api_keys k join accounts a on a.account_id = k.account_id where k.key_id = $1",
                )
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let key = key_from_row(&row).map_err(map_err)?;
                let account = account_from_row(&row, true).map_err(map_err)?;
                Ok(Some(KeyWithAccount { key, account }))
            }

            async fn list_keys(&self, account_id: &str, page: Page) -> Result<(Vec<ApiKey>, i64), StoreError> {
                let total: i64 = sqlx::query_scalar("select count(*) from api_keys where account_id = $1")
                    .bind(account_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                let rows = sqlx::query(
                    "select key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at \
                     from api_keys where account_id = $1 order by created_at desc, key_id desc limit $2 offset $3",
                )
                .bind(account_id)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                let keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                Ok((keys, total))
            }

            async fn revoke_key(
                &self,
                account_id: &str,
                key_id: &str,
                at: DateTime<Utc>,
            ) -> Result<RevokeOutcome, StoreError> {
                let mut tx = self.begin_write().await?;
                // Serialise revocations per account so two concurrent requests cannot each see
                // "another active key" and revoke both.
                if let Some(lock) = Self::LOCK_ACCOUNT {
                    sqlx::query(lock).bind(account_id).execute(&mut *tx).await.map_err(map_err)?;
                }
                let row = sqlx::query(
                    "select key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at \
                     from api_keys where key_id = $1 and account_id = $2",
                )
                .bind(key_id)
                .bind(account_id)
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
                .bind(account_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                if active <= 1 {
                    return Ok(RevokeOutcome::LastActiveKey);
                }
                sqlx::query("update api_keys set revoked_at = $2 where key_id = $1")
                    .bind(key_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                key.revoked_at = Some(at);
                Ok(RevokeOutcome::Revoked(key))
            }

            async fn rotate_key(
                &self,
                key_id: &str,
                secret_hash: &str,
                secret_sealed: &str,
                at: DateTime<Utc>,
            ) -> Result<ApiKey, StoreError> {
                let row = sqlx::query(
                    "update api_keys set secret_hash = $2, secret_sealed = $3, rotated_at = $4 \
                     where key_id = $1 and revoked_at is null \
                     returning key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at",
                )
                .bind(key_id)
                .bind(secret_hash)
                .bind(secret_sealed)
                .bind(at)
                .fetch_optional(&self.writer)
                .await
                .map_err(map_err)?;
                match row {
                    Some(row) => key_from_row(&row).map_err(map_err),
                    None => Err(StoreError::NotFound),
                }
            }

            async fn insert_agent(&self, agent: &Agent) -> Result<(), StoreError> {
                sqlx::query(
                    "insert into agents (agent_id, account_id, api_key_id, name, is_active, settings, version, created_at, updated_at) \
                     values ($1, $2, $3, $4, $5, $6, 1, $7, $8)",
                )
                .bind(&agent.agent_id)
                .bind(&agent.account_id)
                .bind(&agent.api_key_id)
                .bind(&agent.settings.name)
                .bind(agent.settings.is_active)
                .bind(Json(&agent.settings))
                .bind(agent.created_at)
                .bind(agent.updated_at)
                .execute(&self.writer)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn get_agent(&self, account_id: &str, agent_id: &str) -> Result<Option<(Agent, i64)>, StoreError> {
                let row = sqlx::query("select * from agents where agent_id = $1 and account_id = $2")
                    .bind(agent_id)
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let version: i64 = row.try_get("version").map_err(map_err)?;
                Ok(Some((agent_from_row(&row).map_err(map_err)?, version)))
            }

            async fn agent_owner(&self, agent_id: &str) -> Result<Option<String>, StoreError> {
                sqlx::query_scalar("select account_id from agents where agent_id = $1")
                    .bind(agent_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn list_agents(
                &self,
                account_id: &str,
                is_active: Option<bool>,
                page: Page,
            ) -> Result<(Vec<Agent>, i64), StoreError> {
                let total: i64 = sqlx::query_scalar(
                    "select count(*) from agents where account_id = $1 and ($2 is null or is_active = $2)",
                )
                .bind(account_id)
                .bind(is_active)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                let rows = sqlx::query(
                    "select * from agents where account_id = $1 and ($2 is null or is_active = $2) \
                     order by created_at desc, agent_id desc limit $3 offset $4",
                )
                .bind(account_id)
                .bind(is_active)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                let agents = rows.iter().map(agent_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                Ok((agents, total))
            }

            async fn modify_agent(
                &self,
                account_id: &str,
                agent_id: &str,
                edit: &mut (dyn for<'a> FnMut(&'a Agent) -> Result<Agent, nixflex_core::validate::ValidationError> + Send),
            ) -> Result<Option<Result<Agent, nixflex_core::validate::ValidationError>>, StoreError> {
                let mut tx = self.begin_write().await?;
                let select = if Self::ROW_LOCKS {
                    "select * from agents where agent_id = $1 and account_id = $2 for update"
                } else {
                    "select * from agents where agent_id = $1 and account_id = $2"
                };
                let row = sqlx::query(select)
                    .bind(agent_id)
                    .bind(account_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let current = agent_from_row(&row).map_err(map_err)?;
                let agent = match edit(&current) {
                    Ok(agent) => agent,
                    // Dropping the transaction rolls it back and releases the row.
                    Err(invalid) => return Ok(Some(Err(invalid))),
                };
                sqlx::query(
                    "update agents set name = $3, is_active = $4, settings = $5, updated_at = $6, version = version + 1 \
                     where agent_id = $1 and account_id = $2",
                )
                .bind(&current.agent_id)
                .bind(&current.account_id)
                .bind(&agent.settings.name)
                .bind(agent.settings.is_active)
                .bind(Json(&agent.settings))
                .bind(agent.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(Some(Ok(agent)))
            }

            async fn delete_agent(&self, account_id: &str, agent_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("delete from agents where agent_id = $1 and account_id = $2")
                    .bind(agent_id)
                    .bind(account_id)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn reserve_number(
                &self,
                number: &PhoneNumber,
                previous_twilio_config: &Value,
                stale_before: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query("delete from phone_numbers where phone_number = $1 and state = 'pending' and created_at < $2")
                    .bind(&number.phone_number)
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
                .bind(&number.phone_number)
                .bind(&number.account_id)
                .bind(&number.agent_id)
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
                tx.commit().await.map_err(map_err)
            }

            async fn activate_number(&self, phone_number: &str) -> Result<(), StoreError> {
                let done = sqlx::query("update phone_numbers set state = 'active' where phone_number = $1 and state = 'pending'")
                    .bind(phone_number)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound) }
            }

            async fn release_number(&self, phone_number: &str) -> Result<(), StoreError> {
                sqlx::query("delete from phone_numbers where phone_number = $1 and state = 'pending'")
                    .bind(phone_number)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn number_taken(&self, phone_number: &str, stale_before: DateTime<Utc>) -> Result<bool, StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "select count(*) from phone_numbers where phone_number = $1 and (state = 'active' or created_at >= $2)",
                )
                .bind(phone_number)
                .bind(stale_before)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(n > 0)
            }

            async fn get_number(&self, account_id: &str, phone_number: &str) -> Result<Option<(PhoneNumber, i64)>, StoreError> {
                let row = sqlx::query("select * from phone_numbers where phone_number = $1 and account_id = $2 and state = 'active'")
                    .bind(phone_number)
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let version: i64 = row.try_get("version").map_err(map_err)?;
                Ok(Some((number_from_row(&row).map_err(map_err)?, version)))
            }

            async fn find_active_number(&self, phone_number: &str) -> Result<Option<PhoneNumber>, StoreError> {
                let row = sqlx::query("select * from phone_numbers where phone_number = $1 and state = 'active'")
                    .bind(phone_number)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|row| number_from_row(&row)).transpose().map_err(map_err)
            }

            async fn list_numbers(
                &self,
                account_id: &str,
                agent_id: Option<&str>,
                page: Page,
            ) -> Result<(Vec<PhoneNumber>, i64), StoreError> {
                let total: i64 = sqlx::query_scalar(
                    "select count(*) from phone_numbers where account_id = $1 and state = 'active' and ($2 is null or agent_id = $2)",
                )
                .bind(account_id)
                .bind(agent_id)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                let rows = sqlx::query(
                    "select * from phone_numbers where account_id = $1 and state = 'active' and ($2 is null or agent_id = $2) \
                     order by created_at desc, phone_number desc limit $3 offset $4",
                )
                .bind(account_id)
                .bind(agent_id)
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
                .bind(&number.phone_number)
                .bind(&number.account_id)
                .bind(&number.agent_id)
                .bind(number.inbound_enabled)
                .bind(number.outbound_enabled)
                .bind(number.sms_reply_enabled)
                .bind(Json(&number.settings))
                .bind(number.updated_at)
                .bind(expected_version)
                .execute(&self.writer)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                match self.get_number(&number.account_id, &number.phone_number).await? {
                    Some(_) => Err(StoreError::Conflict { constraint: "version" }),
                    None => Err(StoreError::NotFound),
                }
            }

            async fn delete_number(&self, account_id: &str, phone_number: &str) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                // Explicit, not only by cascade: caller context goes with the number (DECISIONS #42).
                sqlx::query(
                    "delete from callers where phone_number = $1 and exists \
                     (select 1 from phone_numbers where phone_number = $1 and account_id = $2 and state = 'active')",
                )
                .bind(phone_number)
                .bind(account_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                let done = sqlx::query("delete from phone_numbers where phone_number = $1 and account_id = $2 and state = 'active'")
                    .bind(phone_number)
                    .bind(account_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_number_url(
                &self,
                account_id: &str,
                phone_number: &str,
                slot: NumberUrlSlot,
                url: Option<&str>,
            ) -> Result<bool, StoreError> {
                let sql = match slot {
                    NumberUrlSlot::Webhook => "update phone_numbers set webhook_url = $3 where phone_number = $1 and account_id = $2 and state = 'active'",
                    NumberUrlSlot::Webhook2 => "update phone_numbers set webhook2_url = $3 where phone_number = $1 and account_id = $2 and state = 'active'",
                    NumberUrlSlot::Precall => "update phone_numbers set precall_url = $3 where phone_number = $1 and account_id = $2 and state = 'active'",
                };
                let done = sqlx::query(sql)
                    .bind(phone_number)
                    .bind(account_id)
                    .bind(url)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_agent_precall(&self, account_id: &str, agent_id: &str, url: Option<&str>) -> Result<bool, StoreError> {
                let done = sqlx::query("update agents set precall_url = $3 where agent_id = $1 and account_id = $2")
                    .bind(agent_id)
                    .bind(account_id)
                    .bind(url)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_agent_precall(&self, account_id: &str, agent_id: &str) -> Result<Option<Option<String>>, StoreError> {
                sqlx::query_scalar("select precall_url from agents where agent_id = $1 and account_id = $2")
                    .bind(agent_id)
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn get_caller(&self, phone_number: &str, caller_number: &str) -> Result<Option<CallerRecord>, StoreError> {
                let row = sqlx::query("select * from callers where phone_number = $1 and caller_number = $2")
                    .bind(phone_number)
                    .bind(caller_number)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|row| caller_from_row(&row)).transpose().map_err(map_err)
            }

            async fn upsert_callers(
                &self,
                phone_number: &str,
                patches: &[(String, Map<String, Value>)],
                at: DateTime<Utc>,
            ) -> Result<Vec<CallerRecord>, StoreError> {
                let mut tx = self.begin_write().await?;
                // Serialise writes to one number's callers so concurrent patches merge.
                if let Some(lock) = Self::LOCK_NUMBER {
                    sqlx::query(lock).bind(phone_number).execute(&mut *tx).await.map_err(map_err)?;
                }
                let mut out = Vec::with_capacity(patches.len());
                for (caller_number, patch) in patches {
                    let existing = sqlx::query("select * from callers where phone_number = $1 and caller_number = $2")
                        .bind(phone_number)
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
                    .bind(phone_number)
                    .bind(caller_number)
                    .bind(Json(&context))
                    .bind(created_at)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    out.push(CallerRecord {
                        phone_number: phone_number.to_owned(),
                        caller_number: caller_number.clone(),
                        context,
                        created_at,
                        updated_at: at,
                    });
                }
                tx.commit().await.map_err(map_err)?;
                Ok(out)
            }

            async fn delete_caller(&self, phone_number: &str, caller_number: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("delete from callers where phone_number = $1 and caller_number = $2")
                    .bind(phone_number)
                    .bind(caller_number)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn admit_call(&self, call: &CallRecord, cap: i64, alive_after: DateTime<Utc>) -> Result<Admission, StoreError> {
                let mut tx = self.begin_write().await?;
                if let Some(lock) = Self::LOCK_ACCOUNT {
                    sqlx::query(lock).bind(&call.account_id).execute(&mut *tx).await.map_err(map_err)?;
                }
                let active: i64 = sqlx::query_scalar(
                    "select count(*) from calls where account_id = $1 and call_status in ('initiated', 'ringing', 'in-progress') \
                     and coalesce(heartbeat_at, created_at) >= $2",
                )
                .bind(&call.account_id)
                .bind(alive_after)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                if active >= cap {
                    return Ok(Admission::AtCapacity { active });
                }
                insert_call_in(&mut *tx, call).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(Admission::Admitted)
            }

            async fn insert_call(&self, call: &CallRecord) -> Result<(), StoreError> {
                insert_call_in(&self.writer, call).await
            }

            async fn get_call(&self, account_id: &str, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
                let row = sqlx::query("select * from calls where call_id = $1 and account_id = $2")
                    .bind(call_id)
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|row| call_from_row(&row)).transpose().map_err(map_err)
            }

            async fn find_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
                let row = sqlx::query("select * from calls where call_id = $1")
                    .bind(call_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|row| call_from_row(&row)).transpose().map_err(map_err)
            }

            async fn get_call_by_sid(
                &self,
                account_id: &str,
                twilio_call_sid: &str,
                business_number: Option<&str>,
            ) -> Result<Option<CallRecord>, StoreError> {
                let row = sqlx::query(
                    "select * from calls where twilio_call_sid = $1 and account_id = $2 and ($3 is null \
                     or (direction = 'inbound' and to_number = $3) or (direction = 'outbound' and from_number = $3))",
                )
                .bind(twilio_call_sid)
                .bind(account_id)
                .bind(business_number)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                row.map(|row| call_from_row(&row)).transpose().map_err(map_err)
            }

            async fn list_calls(&self, account_id: &str, filter: &CallFilter, page: Page) -> Result<(Vec<CallRecord>, i64), StoreError> {
                const WHERE: &str = "where account_id = $1 and ($2 is null or agent_id = $2) and ($3 is null or direction = $3) \
                     and ($4 is null or call_status = $4) and ($5 is null or from_number = $5) and ($6 is null or to_number = $6) \
                     and ($7 is null or campaign_id = $7) and ($8 is null or started_at >= $8) and ($9 is null or started_at < $9) \
                     and ($10 is null or caller_sentiment = $10) and ($11 is null or call_successful = $11) \
                     and ($12 is null or voicemail_detected = $12)";
                macro_rules! bind_filter {
                    ($query:expr) => {
                        $query
                            .bind(account_id)
                            .bind(&filter.agent_id)
                            .bind(filter.direction.map(|d| d.as_str()))
                            .bind(&filter.call_status)
                            .bind(&filter.from_number)
                            .bind(&filter.to_number)
                            .bind(&filter.campaign_id)
                            .bind(filter.since)
                            .bind(filter.until)
                            .bind(&filter.caller_sentiment)
                            .bind(filter.call_successful)
                            .bind(filter.voicemail_detected)
                    };
                }
                let count_sql = sqlx::AssertSqlSafe(format!("select count(*) from calls {WHERE}"));
                let total: i64 = bind_filter!(sqlx::query_scalar(count_sql)).fetch_one(&self.pool).await.map_err(map_err)?;
                let page_sql = sqlx::AssertSqlSafe(format!(
                    "select * from calls {WHERE} order by created_at desc, call_id desc limit $13 offset $14"
                ));
                let rows = bind_filter!(sqlx::query(page_sql))
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                let calls = rows.iter().map(call_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                Ok((calls, total))
            }

            async fn update_call(&self, call_id: &str, update: &CallUpdate, at: DateTime<Utc>) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "update calls set \
                     call_status = case when call_status in ('completed', 'busy', 'no-answer', 'failed', 'canceled') then call_status else coalesce($2, call_status) end, \
                     ended_reason = coalesce(ended_reason, $3), answered_at = coalesce(answered_at, $4), ended_at = coalesce(ended_at, $5), \
                     duration_seconds = coalesce($6, duration_seconds), transcript = coalesce($7, transcript), turns = coalesce($8, turns), \
                     avg_latency_ms = coalesce($9, avg_latency_ms), heartbeat_at = coalesce($10, heartbeat_at), \
                     twilio_call_sid = coalesce(twilio_call_sid, $11), updated_at = $12, \
                     stream_token_hash = coalesce($13, stream_token_hash) \
                     where call_id = $1",
                )
                .bind(call_id)
                .bind(&update.call_status)
                .bind(&update.ended_reason)
                .bind(update.answered_at)
                .bind(update.ended_at)
                .bind(update.duration_seconds)
                .bind(update.transcript.as_ref().map(Json))
                .bind(update.turns.as_ref().map(Json))
                .bind(update.avg_latency_ms)
                .bind(update.heartbeat_at)
                .bind(&update.twilio_call_sid)
                .bind(at)
                .bind(&update.stream_token_hash)
                .execute(&self.writer)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_call(&self, account_id: &str, call_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("delete from calls where call_id = $1 and account_id = $2")
                    .bind(call_id)
                    .bind(account_id)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_all_calls(&self, account_id: &str) -> Result<i64, StoreError> {
                let done = sqlx::query("delete from calls where account_id = $1")
                    .bind(account_id)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(i64::try_from(done.rows_affected()).unwrap_or(i64::MAX))
            }

            async fn call_history(
                &self,
                account_id: &str,
                agent_id: &str,
                business_number: &str,
                caller_number: &str,
                limit: i64,
            ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
                let rows = sqlx::query(
                    "select started_at, call_summary from calls where account_id = $1 and agent_id = $2 and call_summary is not null \
                     and ((direction = 'inbound' and to_number = $3 and from_number = $4) or (direction = 'outbound' and from_number = $3 and to_number = $4)) \
                     order by started_at desc limit $5",
                )
                .bind(account_id)
                .bind(agent_id)
                .bind(business_number)
                .bind(caller_number)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter()
                    .map(|row| Ok((row.try_get("started_at")?, row.try_get("call_summary")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(map_err)
            }

            async fn rate_limit_hit(
                &self,
                bucket: &str,
                window_start: i64,
                expires_at: i64,
            ) -> Result<i64, StoreError> {
                sqlx::query_scalar(
                    "insert into rate_limits (bucket, window_start, count, expires_at) values ($1, $2, 1, $3) \
                     on conflict (bucket) do update set \
                     count = case when rate_limits.window_start = excluded.window_start then rate_limits.count + 1 else 1 end, \
                     window_start = excluded.window_start, expires_at = excluded.expires_at \
                     returning count",
                )
                .bind(bucket)
                .bind(window_start)
                .bind(expires_at)
                .fetch_one(&self.writer)
                .await
                .map_err(map_err)
            }

            async fn purge_rate_limits(&self, now: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("delete from rate_limits where expires_at < $1")
                    .bind(now)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }

            async fn idempotency_begin(
                &self,
                scope: &IdempotencyScope,
                fingerprint: &str,
                now: i64,
                lease_until: i64,
                expired_before: i64,
            ) -> Result<IdempotencyBegin, StoreError> {
                // Two attempts: the second runs only if a stale record was replaced concurrently.
                for _ in 0..2 {
                    let inserted = sqlx::query(
                        "insert into idempotency_keys (scope, method, path, idem_key, fingerprint, state, created_at, locked_until) \
                         values ($1, $2, $3, $4, $5, 'in_flight', $6, $7) on conflict do nothing",
                    )
                    .bind(&scope.scope)
                    .bind(&scope.method)
                    .bind(&scope.path)
                    .bind(&scope.key)
                    .bind(fingerprint)
                    .bind(now)
                    .bind(lease_until)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                    if inserted.rows_affected() == 1 {
                        return Ok(IdempotencyBegin::Started);
                    }
                    let row = sqlx::query(
                        "select fingerprint, state, status_code, content_type, response_body, created_at, locked_until \
                         from idempotency_keys where scope = $1 and method = $2 and path = $3 and idem_key = $4",
                    )
                    .bind(&scope.scope)
                    .bind(&scope.method)
                    .bind(&scope.path)
                    .bind(&scope.key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                    let Some(row) = row else { continue };
                    let stored_fingerprint: String = row.try_get("fingerprint").map_err(map_err)?;
                    let state: String = row.try_get("state").map_err(map_err)?;
                    let created_at: i64 = row.try_get("created_at").map_err(map_err)?;
                    let locked_until: i64 = row.try_get("locked_until").map_err(map_err)?;
                    let expired = created_at < expired_before;
                    let abandoned = state == "in_flight" && locked_until < now && stored_fingerprint == fingerprint;
                    if expired || abandoned {
                        // Take the record over, but only if nobody else changed it meanwhile.
                        let taken = sqlx::query(
                            "update idempotency_keys set fingerprint = $5, state = 'in_flight', status_code = null, \
                             content_type = null, response_body = null, created_at = $6, locked_until = $7 \
                             where scope = $1 and method = $2 and path = $3 and idem_key = $4 and created_at = $8 and locked_until = $9",
                        )
                        .bind(&scope.scope)
                        .bind(&scope.method)
                        .bind(&scope.path)
                        .bind(&scope.key)
                        .bind(fingerprint)
                        .bind(now)
                        .bind(lease_until)
                        .bind(created_at)
                        .bind(locked_until)
                        .execute(&self.writer)
                        .await
                        .map_err(map_err)?;
                        if taken.rows_affected() == 1 {
                            return Ok(IdempotencyBegin::Started);
                        }
                        continue;
                    }
                    if stored_fingerprint != fingerprint {
                        return Ok(IdempotencyBegin::Mismatch);
                    }
                    if state != "done" {
                        return Ok(IdempotencyBegin::InFlight);
                    }
                    let status: i64 = row.try_get("status_code").map_err(map_err)?;
                    return Ok(IdempotencyBegin::Replay(StoredResponse {
                        status_code: u16::try_from(status).unwrap_or(500),
                        content_type: row.try_get("content_type").map_err(map_err)?,
                        body: row.try_get::<Option<Vec<u8>>, _>("response_body").map_err(map_err)?.unwrap_or_default(),
                    }));
                }
                Ok(IdempotencyBegin::InFlight)
            }

            async fn idempotency_complete(
                &self,
                scope: &IdempotencyScope,
                response: &StoredResponse,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "update idempotency_keys set state = 'done', status_code = $5, content_type = $6, response_body = $7 \
                     where scope = $1 and method = $2 and path = $3 and idem_key = $4",
                )
                .bind(&scope.scope)
                .bind(&scope.method)
                .bind(&scope.path)
                .bind(&scope.key)
                .bind(i64::from(response.status_code))
                .bind(&response.content_type)
                .bind(&response.body)
                .execute(&self.writer)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn idempotency_abandon(&self, scope: &IdempotencyScope) -> Result<(), StoreError> {
                sqlx::query(
                    "delete from idempotency_keys where scope = $1 and method = $2 and path = $3 and idem_key = $4 and state = 'in_flight'",
                )
                .bind(&scope.scope)
                .bind(&scope.method)
                .bind(&scope.path)
                .bind(&scope.key)
                .execute(&self.writer)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn purge_idempotency(&self, before: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("delete from idempotency_keys where created_at < $1 and state = 'done'")
                    .bind(before)
                    .execute(&self.writer)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }
        }

        async fn insert_key_in(
            tx: &mut sqlx::Transaction<'static, $db>,
            key: &ApiKey,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "insert into api_keys (key_id, account_id, name, secret_hash, secret_sealed, created_at, rotated_at, revoked_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&key.key_id)
            .bind(&key.account_id)
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
    };
}

pub(crate) use impl_store;
