//! SMS messages and opt-outs (docs/sms.md).
//!
//! The repository trait and its data; the SQL below serves both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::call::Direction;
use nixflex_core::ids::AccountId;
use nixflex_core::sms::{SmsMessage, SmsStatus};

use crate::{NewJob, Page, StoreError};

/// Filters of the message log; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SmsFilter {
    /// The thread's agent.
    pub agent_id: Option<String>,
    /// Inbound or outbound.
    pub direction: Option<Direction>,
    /// The recipient.
    pub to: Option<String>,
    /// The sender.
    pub from_number: Option<String>,
    /// One customer's thread: messages to or from this number.
    pub customer_number: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// SMS messages and opt-outs.
#[async_trait]
pub trait SmsRepo: Send + Sync {
    /// Writes a new message; false (and nothing written) when its `send_key` or `twilio_sid`
    /// is already taken.
    async fn insert_sms(&self, message: &SmsMessage) -> Result<bool, StoreError>;

    /// Logs an inbound message once per Twilio SID and queues `job` (its own idempotency key
    /// keeps it single) in the same transaction. Returns the message as stored (the earlier one
    /// for a retried webhook) and whether it is new.
    async fn record_inbound_sms(
        &self,
        message: &SmsMessage,
        job: Option<&NewJob>,
    ) -> Result<(SmsMessage, bool), StoreError>;

    /// A message of the account.
    async fn get_sms(
        &self,
        account_id: &AccountId,
        message_id: &str,
    ) -> Result<Option<SmsMessage>, StoreError>;

    /// A message of any account (for jobs, which carry the account in their payload).
    async fn find_sms(&self, message_id: &str) -> Result<Option<SmsMessage>, StoreError>;

    /// The account's message with this Twilio SID.
    async fn get_sms_by_twilio_sid(
        &self,
        account_id: &AccountId,
        twilio_sid: &str,
    ) -> Result<Option<SmsMessage>, StoreError>;

    /// The message written under `send_key`.
    async fn get_sms_by_send_key(&self, send_key: &str) -> Result<Option<SmsMessage>, StoreError>;

    /// Notes that the carrier accepted a message: its SID and its status, unless a callback
    /// already moved it further.
    async fn mark_sms_handed(
        &self,
        message_id: &str,
        twilio_sid: &str,
        status: SmsStatus,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Notes that the carrier refused a message (status `failed`).
    async fn mark_sms_failed(
        &self,
        message_id: &str,
        error_code: Option<i64>,
        error_message: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Applies a status callback to the account's message with this SID, only if it moves the
    /// status forward; false when it changed nothing.
    async fn update_sms_status(
        &self,
        account_id: &AccountId,
        twilio_sid: &str,
        status: SmsStatus,
        error_code: Option<i64>,
        error_message: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives `twilio_sid` to the newest outbound message between the two numbers that is still
    /// `pending` without a SID: a status callback that overtook the answer to its send. False
    /// when there is none (or the SID is taken).
    async fn adopt_sms_sid(
        &self,
        account_id: &AccountId,
        business_number: &str,
        customer_number: &str,
        twilio_sid: &str,
    ) -> Result<bool, StoreError>;

    /// The account's messages, newest first, with the total.
    async fn list_sms(
        &self,
        account_id: &AccountId,
        filter: &SmsFilter,
        page: Page,
    ) -> Result<(Vec<SmsMessage>, i64), StoreError>;

    /// The last `limit` messages between a business number and a customer, newest first.
    async fn sms_thread(
        &self,
        account_id: &AccountId,
        business_number: &str,
        customer_number: &str,
        limit: i64,
    ) -> Result<Vec<SmsMessage>, StoreError>;

    /// Opts a number out of (or back into) the account's texts.
    async fn set_sms_opt_out(
        &self,
        account_id: &AccountId,
        phone_number: &str,
        opted_out: bool,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Whether the number opted out of the account's texts.
    async fn is_sms_opted_out(
        &self,
        account_id: &AccountId,
        phone_number: &str,
    ) -> Result<bool, StoreError>;

    /// Deletes every message of the account; returns how many.
    async fn delete_all_sms(&self, account_id: &AccountId) -> Result<i64, StoreError>;

    /// Totals of the account's outbound texts created in `[since, until)` (`GET /v1/usage`).
    async fn sms_usage(
        &self,
        account_id: &AccountId,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<SmsUsage, StoreError>;
}

/// Totals of an account's outbound texts over a period (docs/api.md#usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmsUsage {
    /// Handed to the carrier (it gave the text a SID), whatever happened next.
    pub sent: i64,
    /// Confirmed delivered.
    pub delivered: i64,
    /// `failed` (never sent) or `undelivered` (sent, not delivered).
    pub failed: i64,
}

macro_rules! impl_sms {
    ($store:ty, $db:ty, $backend:literal) => {
        mod sms_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use nixflex_core::call::Direction;
            use nixflex_core::ids::AccountId;
            use nixflex_core::sms::{SmsMessage, SmsSource, SmsStatus};
            use serde_json::Value;
            use sqlx::Row as _;
            use sqlx::types::Json;

            use super::*;
            use crate::sql::map_err;
            use crate::{NewJob, Page, SmsFilter, SmsUsage, StoreError};

            type DbRow = <$db as sqlx::Database>::Row;

            fn decode_error(column: &str, raw: &str) -> sqlx::Error {
                sqlx::Error::Decode(format!("unknown {column} `{raw}` in the sms_messages table").into())
            }

            fn sms_from_row(row: &DbRow) -> Result<SmsMessage, sqlx::Error> {
                let direction: String = row.try_get("direction")?;
                let status: String = row.try_get("status")?;
                let source: String = row.try_get("source")?;
                let metadata: Option<Json<Value>> = row.try_get("metadata")?;
                Ok(SmsMessage {
                    message_id: row.try_get("message_id")?,
                    account_id: row.try_get::<String, _>("account_id")?.into(),
                    agent_id: row.try_get::<Option<String>, _>("agent_id")?.map(Into::into),
                    direction: Direction::parse(&direction).ok_or_else(|| decode_error("direction", &direction))?,
                    business_number: row.try_get("business_number")?,
                    customer_number: row.try_get("customer_number")?,
                    body: row.try_get("body")?,
                    status: SmsStatus::parse(&status).ok_or_else(|| decode_error("status", &status))?,
                    twilio_sid: row.try_get("twilio_sid")?,
                    segments: row.try_get("segments")?,
                    error_code: row.try_get("error_code")?,
                    error_message: row.try_get("error_message")?,
                    reply_context: row.try_get("reply_context")?,
                    source: SmsSource::parse(&source).ok_or_else(|| decode_error("source", &source))?,
                    send_key: row.try_get("send_key")?,
                    metadata: metadata.map(|Json(v)| v),
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            const INSERT: &str = "insert into sms_messages (message_id, account_id, agent_id, direction, business_number, \
                 customer_number, body, status, status_rank, twilio_sid, segments, error_code, error_message, reply_context, \
                 source, send_key, metadata, created_at, updated_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) on conflict do nothing";

            async fn insert_in<'e, E>(executor: E, m: &SmsMessage) -> Result<bool, StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let done = sqlx::query(INSERT)
                    .bind(&m.message_id)
                    .bind(m.account_id.as_str())
                    .bind(m.agent_id.as_ref().map(|a| a.as_str()))
                    .bind(m.direction.as_str())
                    .bind(&m.business_number)
                    .bind(&m.customer_number)
                    .bind(&m.body)
                    .bind(m.status.as_str())
                    .bind(m.status.rank())
                    .bind(&m.twilio_sid)
                    .bind(m.segments)
                    .bind(m.error_code)
                    .bind(&m.error_message)
                    .bind(&m.reply_context)
                    .bind(m.source.as_str())
                    .bind(&m.send_key)
                    .bind(m.metadata.as_ref().map(Json))
                    .bind(m.created_at)
                    .bind(m.updated_at)
                    .execute(executor)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            #[async_trait]
            impl crate::SmsRepo for $store {
                async fn insert_sms(&self, message: &SmsMessage) -> Result<bool, StoreError> {
                    insert_in(&mut *self.write().await?, message).await
                }

                async fn record_inbound_sms(
                    &self,
                    message: &SmsMessage,
                    job: Option<&NewJob>,
                ) -> Result<(SmsMessage, bool), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let inserted = insert_in(&mut *tx, message).await?;
                    let stored = if inserted {
                        message.clone()
                    } else {
                        let row = sqlx::query("select * from sms_messages where twilio_sid = $1")
                            .bind(&message.twilio_sid)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        sms_from_row(&row).map_err(map_err)?
                    };
                    if let Some(job) = job {
                        super::jobs_sql::insert_job_in(&mut *tx, job, message.created_at).await?;
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok((stored, inserted))
                }

                async fn get_sms(&self, account_id: &AccountId, message_id: &str) -> Result<Option<SmsMessage>, StoreError> {
                    let row = sqlx::query("select * from sms_messages where message_id = $1 and account_id = $2")
                        .bind(message_id)
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| sms_from_row(&row)).transpose().map_err(map_err)
                }

                async fn find_sms(&self, message_id: &str) -> Result<Option<SmsMessage>, StoreError> {
                    let row = sqlx::query("select * from sms_messages where message_id = $1")
                        .bind(message_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| sms_from_row(&row)).transpose().map_err(map_err)
                }

                async fn get_sms_by_twilio_sid(&self, account_id: &AccountId, twilio_sid: &str) -> Result<Option<SmsMessage>, StoreError> {
                    let row = sqlx::query("select * from sms_messages where twilio_sid = $1 and account_id = $2")
                        .bind(twilio_sid)
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| sms_from_row(&row)).transpose().map_err(map_err)
                }

                async fn get_sms_by_send_key(&self, send_key: &str) -> Result<Option<SmsMessage>, StoreError> {
                    let row = sqlx::query("select * from sms_messages where send_key = $1")
                        .bind(send_key)
                        .fetch_optional(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| sms_from_row(&row)).transpose().map_err(map_err)
                }

                async fn mark_sms_handed(
                    &self,
                    message_id: &str,
                    twilio_sid: &str,
                    status: SmsStatus,
                    at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update sms_messages set twilio_sid = $2, \
                         status = case when status_rank < $4 then $3 else status end, \
                         status_rank = case when status_rank < $4 then $4 else status_rank end, \
                         updated_at = $5 where message_id = $1",
                    )
                    .bind(message_id)
                    .bind(twilio_sid)
                    .bind(status.as_str())
                    .bind(status.rank())
                    .bind(at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn mark_sms_failed(
                    &self,
                    message_id: &str,
                    error_code: Option<i64>,
                    error_message: Option<&str>,
                    at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update sms_messages set status = $2, status_rank = $3, error_code = $4, error_message = $5, \
                         updated_at = $6 where message_id = $1 and status_rank < $3",
                    )
                    .bind(message_id)
                    .bind(SmsStatus::Failed.as_str())
                    .bind(SmsStatus::Failed.rank())
                    .bind(error_code)
                    .bind(error_message)
                    .bind(at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn update_sms_status(
                    &self,
                    account_id: &AccountId,
                    twilio_sid: &str,
                    status: SmsStatus,
                    error_code: Option<i64>,
                    error_message: Option<&str>,
                    at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update sms_messages set status = $3, status_rank = $4, error_code = coalesce($5, error_code), \
                         error_message = coalesce($6, error_message), updated_at = $7 \
                         where account_id = $1 and twilio_sid = $2 and status_rank < $4",
                    )
                    .bind(account_id.as_str())
                    .bind(twilio_sid)
                    .bind(status.as_str())
                    .bind(status.rank())
                    .bind(error_code)
                    .bind(error_message)
                    .bind(at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn adopt_sms_sid(
                    &self,
                    account_id: &AccountId,
                    business_number: &str,
                    customer_number: &str,
                    twilio_sid: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update sms_messages set twilio_sid = $4 where message_id = (select message_id from sms_messages \
                         where account_id = $1 and business_number = $2 and customer_number = $3 and direction = 'outbound' \
                         and twilio_sid is null and status = 'pending' order by created_at desc, message_id desc limit 1)",
                    )
                    .bind(account_id.as_str())
                    .bind(business_number)
                    .bind(customer_number)
                    .bind(twilio_sid)
                    .execute(&mut *self.write().await?)
                    .await;
                    match done {
                        Ok(done) => Ok(done.rows_affected() == 1),
                        Err(error) => match map_err(error) {
                            StoreError::Conflict { .. } => Ok(false),
                            other => Err(other),
                        },
                    }
                }

                async fn list_sms(
                    &self,
                    account_id: &AccountId,
                    filter: &SmsFilter,
                    page: Page,
                ) -> Result<(Vec<SmsMessage>, i64), StoreError> {
                    const WHERE: &str = "where account_id = $1 and ($2 is null or agent_id = $2) and ($3 is null or direction = $3) \
                         and ($4 is null or (case when direction = 'inbound' then business_number else customer_number end) = $4) \
                         and ($5 is null or (case when direction = 'inbound' then customer_number else business_number end) = $5) \
                         and ($6 is null or customer_number = $6) and ($7 is null or created_at >= $7) and ($8 is null or created_at < $8)";
                    macro_rules! bind_filter {
                        ($query:expr) => {
                            $query
                                .bind(account_id.as_str())
                                .bind(filter.agent_id.as_deref())
                                .bind(filter.direction.map(|d| d.as_str()))
                                .bind(filter.to.as_deref())
                                .bind(filter.from_number.as_deref())
                                .bind(filter.customer_number.as_deref())
                                .bind(filter.since)
                                .bind(filter.until)
                        };
                    }
                    let count_sql = sqlx::AssertSqlSafe(format!("select count(*) from sms_messages {WHERE}"));
                    let total: i64 = bind_filter!(sqlx::query_scalar(count_sql)).fetch_one(&self.pool).await.map_err(map_err)?;
                    let page_sql = sqlx::AssertSqlSafe(format!(
                        "select * from sms_messages {WHERE} order by created_at desc, message_id desc limit $9 offset $10"
                    ));
                    let rows = bind_filter!(sqlx::query(page_sql))
                        .bind(page.limit)
                        .bind(page.offset)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let messages = rows.iter().map(sms_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    Ok((messages, total))
                }

                async fn sms_thread(
                    &self,
                    account_id: &AccountId,
                    business_number: &str,
                    customer_number: &str,
                    limit: i64,
                ) -> Result<Vec<SmsMessage>, StoreError> {
                    let rows = sqlx::query(
                        "select * from sms_messages where account_id = $1 and business_number = $2 and customer_number = $3 \
                         order by created_at desc, message_id desc limit $4",
                    )
                    .bind(account_id.as_str())
                    .bind(business_number)
                    .bind(customer_number)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter().map(sms_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)
                }

                async fn set_sms_opt_out(
                    &self,
                    account_id: &AccountId,
                    phone_number: &str,
                    opted_out: bool,
                    at: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    let query = if opted_out {
                        sqlx::query(
                            "insert into sms_opt_outs (account_id, phone_number, created_at) values ($1, $2, $3) on conflict do nothing",
                        )
                        .bind(account_id.as_str())
                        .bind(phone_number)
                        .bind(at)
                    } else {
                        sqlx::query("delete from sms_opt_outs where account_id = $1 and phone_number = $2")
                            .bind(account_id.as_str())
                            .bind(phone_number)
                    };
                    query.execute(&mut *self.write().await?).await.map_err(map_err)?;
                    Ok(())
                }

                async fn is_sms_opted_out(&self, account_id: &AccountId, phone_number: &str) -> Result<bool, StoreError> {
                    let found: i64 = sqlx::query_scalar(
                        "select count(*) from sms_opt_outs where account_id = $1 and phone_number = $2",
                    )
                    .bind(account_id.as_str())
                    .bind(phone_number)
                    .fetch_one(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(found > 0)
                }

                async fn delete_all_sms(&self, account_id: &AccountId) -> Result<i64, StoreError> {
                    let done = sqlx::query("delete from sms_messages where account_id = $1")
                        .bind(account_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(i64::try_from(done.rows_affected()).unwrap_or(i64::MAX))
                }

                async fn sms_usage(
                    &self,
                    account_id: &AccountId,
                    since: Option<DateTime<Utc>>,
                    until: Option<DateTime<Utc>>,
                ) -> Result<SmsUsage, StoreError> {
                    static TOTALS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                        let quoted = |statuses: &[SmsStatus]| {
                            statuses.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
                        };
                        let failed = quoted(&[SmsStatus::Failed, SmsStatus::Undelivered]);
                        format!(
                            "select cast(coalesce(sum(case when twilio_sid is not null then 1 else 0 end), 0) as bigint) as sent, \
                             cast(coalesce(sum(case when status = '{}' then 1 else 0 end), 0) as bigint) as delivered, \
                             cast(coalesce(sum(case when status in ({failed}) then 1 else 0 end), 0) as bigint) as failed \
                             from sms_messages where account_id = $1 and direction = '{}' \
                             and ($2 is null or created_at >= $2) and ($3 is null or created_at < $3)",
                            SmsStatus::Delivered.as_str(),
                            Direction::Outbound.as_str(),
                        )
                    });
                    let row = sqlx::query(sqlx::AssertSqlSafe(TOTALS.as_str()))
                        .bind(account_id.as_str())
                        .bind(since)
                        .bind(until)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let get = |name: &str| row.try_get::<i64, _>(name).map_err(map_err);
                    Ok(SmsUsage { sent: get("sent")?, delivered: get("delivered")?, failed: get("failed")? })
                }
            }
        }
    };
}
pub(crate) use impl_sms;
