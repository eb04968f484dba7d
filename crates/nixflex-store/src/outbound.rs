//! Outbound calls: the durable capacity queue (docs/engine.md#capacity-queue) and what a call
//! needs beyond its record until it has run (the sealed purpose, voicemail overrides).
//!
//! A queued outbound call is a `calls` row with `call_status: queued` plus an `outbound_calls`
//! row; its `call.dial` job (queued in the same transaction) dials it when the account is under
//! its concurrent-call cap. The cap is counted exactly as inbound admission counts it, under the
//! same account lock, so inbound and outbound calls share it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::call::CallRecord;
use nixflex_core::ids::{AccountId, CallId};

use crate::{NewJob, StoreError};

/// The job kind that dials a queued outbound call.
pub const CALL_DIAL: &str = "call.dial";

/// A call's dial job: one per call (its idempotency key is `call.dial:<account>:<call>`; the
/// account in it lets a call's end find that account's waiting dial jobs,
/// `CallRepo::finish_call`).
pub fn dial_job(account_id: &AccountId, call_id: &CallId, max_attempts: i64) -> NewJob {
    NewJob::new(
        CALL_DIAL,
        &format!("{account_id}:{call_id}"),
        serde_json::json!({"call_id": call_id.as_str(), "account_id": account_id.as_str()}),
        max_attempts,
    )
}

/// What an outbound call keeps beside its record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundDetails {
    /// The call purpose and its variables, sealed under the master key; `None` once erased.
    pub purpose_sealed: Option<String>,
    /// `hangup`, `leave_message` or `ignore` (the request's override).
    pub voicemail_action: Option<String>,
    /// The request's voicemail message override.
    pub voicemail_message: Option<String>,
    /// Dial attempts made so far.
    pub dial_attempts: i64,
}

/// Outbound calls and the capacity queue.
#[async_trait]
pub trait OutboundRepo: Send + Sync {
    /// Inserts a queued outbound call, its details and its dial job in one transaction.
    async fn queue_outbound_call(
        &self,
        call: &CallRecord,
        details: &OutboundDetails,
        dial_job: &NewJob,
    ) -> Result<(), StoreError>;

    /// An outbound call's details.
    async fn get_outbound(&self, call_id: &CallId) -> Result<Option<OutboundDetails>, StoreError>;

    /// Under the account's lock: while the account has fewer than `cap` live calls (counted as
    /// inbound admission counts them), takes its oldest queued calls, at most `limit`, and marks
    /// each `initiated` (started now, heart-beating now, one more dial attempt). Returns them;
    /// a call returned here is dialled by the caller and by nobody else.
    async fn claim_queued_calls(
        &self,
        account_id: &AccountId,
        cap: i64,
        alive_after: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, StoreError>;

    /// Puts a claimed call that the carrier certainly did not place back in the queue; false
    /// if it is no longer `initiated` without a carrier SID.
    async fn requeue_call(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Ends a call that is still `queued` with `update` and queues its follow-ups, in one
    /// transaction; false (nothing written) if it is no longer queued.
    async fn end_queued_call(
        &self,
        call_id: &CallId,
        update: &crate::CallUpdate,
        at: DateTime<Utc>,
        follow_ups: &[NewJob],
    ) -> Result<bool, StoreError>;

    /// Erases an outbound call's sealed purpose (after its follow-up ran).
    async fn erase_call_purpose(&self, call_id: &CallId) -> Result<(), StoreError>;
}

macro_rules! impl_outbound {
    ($store:ty, $db:ty, $backend:literal) => {
        mod outbound_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use nixflex_core::call::{CallRecord, CallStatus, EndedReason};
            use nixflex_core::ids::{AccountId, CallId};
            use sqlx::Row as _;
            use sqlx::types::Json;

            use crate::sql::map_err;
            use crate::{CallUpdate, NewJob, OutboundDetails, StoreError};
            #[allow(unused_imports)]
            use super::*;

            #[async_trait]
            impl crate::OutboundRepo for $store {
                async fn queue_outbound_call(
                    &self,
                    call: &CallRecord,
                    details: &OutboundDetails,
                    dial_job: &NewJob,
                ) -> Result<(), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    super::calls_sql::insert_call_in(&mut *tx, call).await?;
                    sqlx::query(
                        "insert into outbound_calls (call_id, account_id, purpose_sealed, voicemail_action, voicemail_message, \
                         dial_attempts, created_at) values ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(call.call_id.as_str())
                    .bind(call.account_id.as_str())
                    .bind(&details.purpose_sealed)
                    .bind(&details.voicemail_action)
                    .bind(&details.voicemail_message)
                    .bind(details.dial_attempts)
                    .bind(call.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    super::jobs_sql::insert_job_in(&mut *tx, dial_job, call.created_at).await?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(())
                }

                async fn get_outbound(&self, call_id: &CallId) -> Result<Option<OutboundDetails>, StoreError> {
                    let row = sqlx::query(
                        "select purpose_sealed, voicemail_action, voicemail_message, dial_attempts from outbound_calls where call_id = $1",
                    )
                    .bind(call_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                    row.map(|row| {
                        Ok::<_, sqlx::Error>(OutboundDetails {
                            purpose_sealed: row.try_get("purpose_sealed")?,
                            voicemail_action: row.try_get("voicemail_action")?,
                            voicemail_message: row.try_get("voicemail_message")?,
                            dial_attempts: row.try_get("dial_attempts")?,
                        })
                    })
                    .transpose()
                    .map_err(map_err)
                }

                async fn claim_queued_calls(
                    &self,
                    account_id: &AccountId,
                    cap: i64,
                    alive_after: DateTime<Utc>,
                    now: DateTime<Utc>,
                    limit: i64,
                ) -> Result<Vec<CallRecord>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    // The same lock and count as inbound admission (`admit_call`): the cap is
                    // shared, and two nodes claiming at once queue on the account's row.
                    if let Some(lock) = Self::LOCK_ACCOUNT {
                        sqlx::query(lock).bind(account_id.as_str()).execute(&mut *tx).await.map_err(map_err)?;
                    }
                    static LIVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                        format!(
                            "select count(*) from calls where account_id = $1 and call_status in {} \
                             and coalesce(heartbeat_at, created_at) >= $2",
                            CallStatus::sql_list(CallStatus::LIVE)
                        )
                    });
                    let active: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(LIVE.as_str()))
                        .bind(account_id.as_str())
                        .bind(alive_after)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let free = (cap - active).min(limit);
                    if free <= 0 {
                        return Ok(Vec::new());
                    }
                    let ids: Vec<String> = sqlx::query_scalar(
                        "select call_id from calls where account_id = $1 and call_status = 'queued' and direction = 'outbound' \
                         order by created_at, call_id limit $2",
                    )
                    .bind(account_id.as_str())
                    .bind(free)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let mut claimed = Vec::with_capacity(ids.len());
                    for id in ids {
                        let row = sqlx::query(
                            "update calls set call_status = 'initiated', started_at = $2, heartbeat_at = $2, updated_at = $2 \
                             where call_id = $1 and call_status = 'queued' returning *",
                        )
                        .bind(&id)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        let Some(row) = row else { continue };
                        sqlx::query("update outbound_calls set dial_attempts = dial_attempts + 1 where call_id = $1")
                            .bind(&id)
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        claimed.push(super::calls_sql::call_from_row(&row).map_err(map_err)?);
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok(claimed)
                }

                async fn requeue_call(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set call_status = 'queued', heartbeat_at = null, updated_at = $2 \
                         where call_id = $1 and call_status = 'initiated' and twilio_call_sid is null and ended_reason is null",
                    )
                    .bind(call_id.as_str())
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn end_queued_call(
                    &self,
                    call_id: &CallId,
                    update: &CallUpdate,
                    at: DateTime<Utc>,
                    follow_ups: &[NewJob],
                ) -> Result<bool, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let done = sqlx::query(
                        "update calls set call_status = $2, ended_reason = $3, ended_at = $4, duration_seconds = 0, \
                         carrier_details = $5, updated_at = $4 where call_id = $1 and call_status = 'queued'",
                    )
                    .bind(call_id.as_str())
                    .bind(update.call_status.unwrap_or(CallStatus::Failed).as_str())
                    .bind(update.ended_reason.map(EndedReason::as_str))
                    .bind(update.ended_at.unwrap_or(at))
                    .bind(update.carrier_details.as_ref().map(Json))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                    for job in follow_ups {
                        super::jobs_sql::insert_job_in(&mut *tx, job, at).await?;
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok(true)
                }

                async fn erase_call_purpose(&self, call_id: &CallId) -> Result<(), StoreError> {
                    // Most calls have no purpose to erase (every inbound call): a reader says
                    // so, and the one writer is not queued for an update of nothing
                    // (docs/operations.md#the-database). Nothing sets a purpose after its call
                    // has ended, so the answer cannot go stale before the update.
                    let kept: Option<String> = sqlx::query_scalar("select call_id from outbound_calls where call_id = $1 and purpose_sealed is not null")
                        .bind(call_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    if kept.is_none() {
                        return Ok(());
                    }
                    sqlx::query("update outbound_calls set purpose_sealed = null where call_id = $1 and purpose_sealed is not null")
                        .bind(call_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(())
                }
            }
        }
    };
}
pub(crate) use impl_outbound;
