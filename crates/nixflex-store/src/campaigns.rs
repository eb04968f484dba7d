//! Voice batch campaigns (docs/campaigns.md): campaigns, their recipients, the claim that turns a
//! recipient into an outbound call, the reconciliation of calls whose dial outcome a crash made
//! unknown, and the carrier's calls-per-second pacing shared by every node.
//!
//! A recipient is claimed (`pending` → `calling`, with its `call_id`) in the same transaction
//! that writes the call, its sealed purpose and its `call.dial` job, and only while the campaign
//! is `running`: so a recipient never gets two calls, and a call never exists without its
//! recipient knowing it (docs/campaigns.md#exactly-once).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::call::CallRecord;
use nixflex_core::ids::{AccountId, CallId};
use serde_json::Value;

use crate::{NewJob, OutboundDetails, StoreError};

/// The job kind of a campaign's scheduler (one per campaign, for its whole life).
pub const CAMPAIGN_RUN: &str = "campaign.run";

/// A campaign's scheduler job (idempotency key `campaign.run:<account>:<campaign>`).
pub fn campaign_job(account_id: &AccountId, campaign_id: &str, max_attempts: i64) -> NewJob {
    NewJob::new(
        CAMPAIGN_RUN,
        &format!("{account_id}:{campaign_id}"),
        serde_json::json!({"campaign_id": campaign_id, "account_id": account_id.as_str()}),
        max_attempts,
    )
}

/// A voice batch campaign as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// `camp_` + 16 hex.
    pub campaign_id: String,
    /// Owner.
    pub account_id: AccountId,
    /// The agent that talks.
    pub agent_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Caller ID of every call (resolved at creation).
    pub from_number: String,
    /// The campaign prompt, sealed under the master key.
    pub prompt_sealed: String,
    /// `scheduled`, `running`, `paused`, `completed`, `cancelled`, `failed`.
    pub status: String,
    /// `now` or `schedule`.
    pub schedule_type: String,
    /// `YYYY-MM-DD`: eligible from local midnight of that date.
    pub scheduled_date: Option<String>,
    /// Eligible from this instant.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Window start, minutes after local midnight.
    pub window_start: i64,
    /// Window end, minutes after local midnight.
    pub window_end: i64,
    /// Comma-separated day names (`mon,tue,…`).
    pub window_days: String,
    /// IANA timezone of the window.
    pub timezone: String,
    /// Cap on the campaign's calls at once (`None`: the account's cap).
    pub max_concurrent: Option<i64>,
    /// Calls per recipient at most (1 = no retries).
    pub max_attempts: i64,
    /// Wait before a busy / no-answer recipient is called again.
    pub retry_delay_minutes: i64,
    /// Echoed on every call and its webhooks.
    pub metadata: Option<Value>,
    /// Valid recipients.
    pub recipients_count: i64,
    /// The invalid rows skipped at creation (`[{phone, reason, row_index}]`).
    pub invalid: Value,
    /// Why the campaign failed.
    pub failure_reason: Option<String>,
    /// First start.
    pub launched_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub completed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Campaign {
    /// True once nothing more will be dialled.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled" | "failed")
    }
}

/// A recipient to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    /// Its row in the request.
    pub row_index: i64,
    /// E.164.
    pub phone: String,
    /// `{variables, prompt_override, metadata}` sealed, when any was given.
    pub data_sealed: Option<String>,
}

/// A recipient and its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Its row in the request.
    pub row_index: i64,
    /// E.164.
    pub phone: String,
    /// Sealed data (see [`NewRecipient`]).
    pub data_sealed: Option<String>,
    /// `pending`, `calling`, `done`, `cancelled`.
    pub status: String,
    /// Calls placed so far.
    pub attempts: i64,
    /// The latest call.
    pub call_id: Option<String>,
    /// The latest call's final status, once done.
    pub outcome: Option<String>,
    /// The latest call's `ended_reason`.
    pub ended_reason: Option<String>,
    /// A retry is due at.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// One call to start for a recipient: the recipient's expected `attempts` (the claim holds only
/// if nobody claimed it since it was read) and the call's rows.
#[derive(Debug, Clone)]
pub struct RecipientCall {
    /// The recipient.
    pub row_index: i64,
    /// Its `attempts` as read.
    pub attempts: i64,
    /// The call (status `queued`, tagged with the campaign).
    pub call: CallRecord,
    /// Its sealed purpose and overrides.
    pub details: OutboundDetails,
    /// Its `call.dial` job.
    pub dial_job: NewJob,
}

/// A campaign call that has ended, with its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRecipientCall {
    /// The recipient.
    pub row_index: i64,
    /// Its attempts so far.
    pub attempts: i64,
    /// The call.
    pub call_id: String,
    /// Its final status.
    pub call_status: String,
    /// Its ended reason.
    pub ended_reason: Option<String>,
}

/// What becomes of a recipient whose call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Final: this outcome.
    Done,
    /// Called again at this time.
    RetryAt(DateTime<Utc>),
}

/// Counts of a campaign's recipients by `(status, outcome)`.
pub type RecipientCounts = Vec<(String, Option<String>, i64)>;

/// Voice batch campaigns.
#[async_trait]
pub trait CampaignRepo: Send + Sync {
    /// Writes a campaign, its recipients and its scheduler job in one transaction.
    async fn create_campaign(
        &self,
        campaign: &Campaign,
        recipients: &[NewRecipient],
        job: &NewJob,
    ) -> Result<(), StoreError>;

    /// A campaign of this account.
    async fn get_campaign(
        &self,
        account_id: &AccountId,
        campaign_id: &str,
    ) -> Result<Option<Campaign>, StoreError>;

    /// The account's campaigns, newest first, and how many match.
    async fn list_campaigns(
        &self,
        account_id: &AccountId,
        status: Option<&str>,
        agent_id: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Campaign>, i64), StoreError>;

    /// A page of a campaign's recipients, in row order.
    async fn campaign_recipients(
        &self,
        campaign_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Recipient>, StoreError>;

    /// The recipients counted by status and outcome.
    async fn recipient_counts(&self, campaign_id: &str) -> Result<RecipientCounts, StoreError>;

    /// Moves the campaign from one of `from` to `to` (setting `launched_at` on the first
    /// `running`, `completed_at` on a final state, `failure_reason` when given); a move to
    /// `cancelled` or `failed` also cancels the pending recipients; a move to `running` makes
    /// the scheduler job due now. Returns the campaign as it is after the move, or `None` (and
    /// nothing written) when it was not in `from`.
    async fn move_campaign(
        &self,
        account_id: &AccountId,
        campaign_id: &str,
        from: &[&str],
        to: &str,
        failure_reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Campaign>, StoreError>;

    /// Up to `limit` pending recipients due by `now`, in row order.
    async fn due_recipients(
        &self,
        campaign_id: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Recipient>, StoreError>;

    /// The earliest retry time of a pending recipient (`None` when none waits).
    async fn next_retry_at(&self, campaign_id: &str) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// In one transaction, while the campaign is `running`: claims each recipient still
    /// `pending` with the expected attempts (→ `calling`, its call id, one more attempt) and
    /// writes its call, details and dial job. Returns how many were started.
    async fn start_recipient_calls(
        &self,
        campaign_id: &str,
        calls: &[RecipientCall],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError>;

    /// Recipients `calling` whose call has ended.
    async fn ended_recipient_calls(
        &self,
        campaign_id: &str,
        limit: i64,
    ) -> Result<Vec<EndedRecipientCall>, StoreError>;

    /// Records the end of a recipient's call (only if it is still `calling` that call).
    async fn settle_recipient(
        &self,
        campaign_id: &str,
        ended: &EndedRecipientCall,
        settle: &Settle,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The campaign's calls that have not had a media session, have not ended and have not
    /// been heard of since `stale_before` (claimed or ringing calls of a node that died, or whose
    /// carrier callbacks were lost).
    async fn stale_campaign_calls(
        &self,
        campaign_id: &str,
        stale_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, StoreError>;

    /// The campaign's calls still `queued`.
    async fn queued_campaign_calls(&self, campaign_id: &str) -> Result<Vec<CallId>, StoreError>;

    /// Puts a claimed call the carrier does not have back in the queue: only while it is
    /// `initiated`, without a SID, and its heartbeat is still older than `stale_before`.
    async fn requeue_stale_call(
        &self,
        call_id: &CallId,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Refreshes a claimed call's heartbeat right before its dial request; false (dial nothing)
    /// when it is no longer `initiated` without a SID under the claim made at `claimed_at` (its
    /// `started_at`: a call reconciled and claimed again has a later one).
    async fn touch_unplaced_call(
        &self,
        call_id: &CallId,
        claimed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Whether some call of ours already carries this carrier SID.
    async fn carrier_sid_known(&self, call_sid: &str) -> Result<bool, StoreError>;

    /// Reserves the next dial slot of `key` (a carrier account): slots are `interval` apart
    /// across every node. Returns the slot's time (`now` or later).
    async fn reserve_dial_slot(
        &self,
        key: &str,
        interval: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError>;
}

macro_rules! impl_campaigns {
    ($store:ty, $db:ty, $backend:literal) => {
        mod campaigns_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use nixflex_core::ids::{AccountId, CallId};
            use serde_json::Value;
            use sqlx::Row as _;
            use sqlx::types::Json;

            use crate::campaigns::{
                Campaign, EndedRecipientCall, NewRecipient, Recipient, RecipientCall,
                RecipientCounts, Settle,
            };
            use crate::sql::map_err;
            use crate::{NewJob, StoreError};
            #[allow(unused_imports)]
            use super::*;

            fn campaign_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Campaign, sqlx::Error> {
                let metadata: Option<Json<Value>> = row.try_get("metadata")?;
                let Json(invalid): Json<Value> = row.try_get("invalid")?;
                Ok(Campaign {
                    campaign_id: row.try_get("campaign_id")?,
                    account_id: AccountId::from(row.try_get::<String, _>("account_id")?),
                    agent_id: row.try_get("agent_id")?,
                    name: row.try_get("name")?,
                    from_number: row.try_get("from_number")?,
                    prompt_sealed: row.try_get("prompt_sealed")?,
                    status: row.try_get("status")?,
                    schedule_type: row.try_get("schedule_type")?,
                    scheduled_date: row.try_get("scheduled_date")?,
                    scheduled_at: row.try_get("scheduled_at")?,
                    window_start: row.try_get("window_start")?,
                    window_end: row.try_get("window_end")?,
                    window_days: row.try_get("window_days")?,
                    timezone: row.try_get("timezone")?,
                    max_concurrent: row.try_get("max_concurrent")?,
                    max_attempts: row.try_get("max_attempts")?,
                    retry_delay_minutes: row.try_get("retry_delay_minutes")?,
                    metadata: metadata.map(|Json(v)| v),
                    recipients_count: row.try_get("recipients_count")?,
                    invalid,
                    failure_reason: row.try_get("failure_reason")?,
                    launched_at: row.try_get("launched_at")?,
                    completed_at: row.try_get("completed_at")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn recipient_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Recipient, sqlx::Error> {
                Ok(Recipient {
                    row_index: row.try_get("row_index")?,
                    phone: row.try_get("phone")?,
                    data_sealed: row.try_get("data_sealed")?,
                    status: row.try_get("status")?,
                    attempts: row.try_get("attempts")?,
                    call_id: row.try_get("call_id")?,
                    outcome: row.try_get("outcome")?,
                    ended_reason: row.try_get("ended_reason")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            /// Recipients per multi-row insert (6 parameters each, well under both backends'
            /// parameter limits).
            const INSERT_CHUNK: usize = 500;

            #[async_trait]
            impl crate::CampaignRepo for $store {
                async fn create_campaign(
                    &self,
                    campaign: &Campaign,
                    recipients: &[NewRecipient],
                    job: &NewJob,
                ) -> Result<(), StoreError> {
                    let c = campaign;
                    let (mut tx, _turn) = self.begin_write().await?;
                    sqlx::query(
                        "insert into campaigns (campaign_id, account_id, agent_id, name, from_number, prompt_sealed, status, \
                         schedule_type, scheduled_date, scheduled_at, window_start, window_end, window_days, timezone, \
                         max_concurrent, max_attempts, retry_delay_minutes, metadata, recipients_count, invalid, failure_reason, \
                         launched_at, completed_at, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                         $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)",
                    )
                    .bind(&c.campaign_id)
                    .bind(c.account_id.as_str())
                    .bind(&c.agent_id)
                    .bind(&c.name)
                    .bind(&c.from_number)
                    .bind(&c.prompt_sealed)
                    .bind(&c.status)
                    .bind(&c.schedule_type)
                    .bind(&c.scheduled_date)
                    .bind(c.scheduled_at)
                    .bind(c.window_start)
                    .bind(c.window_end)
                    .bind(&c.window_days)
                    .bind(&c.timezone)
                    .bind(c.max_concurrent)
                    .bind(c.max_attempts)
                    .bind(c.retry_delay_minutes)
                    .bind(c.metadata.as_ref().map(Json))
                    .bind(c.recipients_count)
                    .bind(Json(&c.invalid))
                    .bind(&c.failure_reason)
                    .bind(c.launched_at)
                    .bind(c.completed_at)
                    .bind(c.created_at)
                    .bind(c.updated_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    for chunk in recipients.chunks(INSERT_CHUNK) {
                        let mut sql = String::from(
                            "insert into campaign_recipients (campaign_id, row_index, phone, data_sealed, status, updated_at) values ",
                        );
                        for i in 0..chunk.len() {
                            let n = i * 3;
                            if i > 0 {
                                sql.push_str(", ");
                            }
                            sql.push_str(&format!("($1, ${}, ${}, ${}, 'pending', $2)", n + 3, n + 4, n + 5));
                        }
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&c.campaign_id).bind(c.created_at);
                        for r in chunk {
                            query = query.bind(r.row_index).bind(&r.phone).bind(&r.data_sealed);
                        }
                        query.execute(&mut *tx).await.map_err(map_err)?;
                    }
                    super::jobs_sql::insert_job_in(&mut *tx, job, c.created_at).await?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(())
                }

                async fn get_campaign(
                    &self,
                    account_id: &AccountId,
                    campaign_id: &str,
                ) -> Result<Option<Campaign>, StoreError> {
                    let row = sqlx::query("select * from campaigns where campaign_id = $1 and account_id = $2")
                        .bind(campaign_id)
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.as_ref().map(campaign_from_row).transpose().map_err(map_err)
                }

                async fn list_campaigns(
                    &self,
                    account_id: &AccountId,
                    status: Option<&str>,
                    agent_id: Option<&str>,
                    limit: i64,
                    offset: i64,
                ) -> Result<(Vec<Campaign>, i64), StoreError> {
                    const WHERE: &str = "where account_id = $1 and ($2 is null or status = $2) and ($3 is null or agent_id = $3)";
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "select * from campaigns {WHERE} order by created_at desc, campaign_id desc limit $4 offset $5"
                    )))
                    .bind(account_id.as_str())
                    .bind(status)
                    .bind(agent_id)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from campaigns {WHERE}")))
                        .bind(account_id.as_str())
                        .bind(status)
                        .bind(agent_id)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let campaigns = rows.iter().map(campaign_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    Ok((campaigns, count))
                }

                async fn campaign_recipients(
                    &self,
                    campaign_id: &str,
                    limit: i64,
                    offset: i64,
                ) -> Result<Vec<Recipient>, StoreError> {
                    let rows = sqlx::query(
                        "select * from campaign_recipients where campaign_id = $1 order by row_index limit $2 offset $3",
                    )
                    .bind(campaign_id)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter().map(recipient_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)
                }

                async fn recipient_counts(&self, campaign_id: &str) -> Result<RecipientCounts, StoreError> {
                    let rows = sqlx::query(
                        "select status, outcome, count(*) as n from campaign_recipients where campaign_id = $1 group by status, outcome",
                    )
                    .bind(campaign_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter()
                        .map(|row| Ok((row.try_get("status")?, row.try_get("outcome")?, row.try_get("n")?)))
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(map_err)
                }

                async fn move_campaign(
                    &self,
                    account_id: &AccountId,
                    campaign_id: &str,
                    from: &[&str],
                    to: &str,
                    failure_reason: Option<&str>,
                    now: DateTime<Utc>,
                ) -> Result<Option<Campaign>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let list = from.iter().map(|s| format!("'{}'", s.replace('\'', ""))).collect::<Vec<_>>().join(", ");
                    let final_state = matches!(to, "completed" | "cancelled" | "failed");
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "update campaigns set status = $3, updated_at = $4, \
                         launched_at = case when $3 = 'running' then coalesce(launched_at, $4) else launched_at end, \
                         completed_at = case when $5 then $4 else completed_at end, \
                         failure_reason = coalesce($6, failure_reason) \
                         where campaign_id = $1 and account_id = $2 and status in ({list}) returning *"
                    )))
                    .bind(campaign_id)
                    .bind(account_id.as_str())
                    .bind(to)
                    .bind(now)
                    .bind(final_state)
                    .bind(failure_reason)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let Some(row) = row else { return Ok(None) };
                    let campaign = campaign_from_row(&row).map_err(map_err)?;
                    if matches!(to, "cancelled" | "failed") {
                        sqlx::query(
                            "update campaign_recipients set status = 'cancelled', updated_at = $2 where campaign_id = $1 and status = 'pending'",
                        )
                        .bind(campaign_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    }
                    if to == "running" {
                        let key = format!("{}:{}:{}", crate::campaigns::CAMPAIGN_RUN, account_id, campaign_id);
                        sqlx::query("update jobs set run_at = $2, updated_at = $2 where idempotency_key = $1 and state = 'queued'")
                            .bind(key)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?;
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok(Some(campaign))
                }

                async fn due_recipients(
                    &self,
                    campaign_id: &str,
                    now: DateTime<Utc>,
                    limit: i64,
                ) -> Result<Vec<Recipient>, StoreError> {
                    let rows = sqlx::query(
                        "select * from campaign_recipients where campaign_id = $1 and status = 'pending' \
                         and (next_attempt_at is null or next_attempt_at <= $2) order by row_index limit $3",
                    )
                    .bind(campaign_id)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter().map(recipient_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)
                }

                async fn next_retry_at(&self, campaign_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
                    sqlx::query_scalar(
                        "select next_attempt_at from campaign_recipients where campaign_id = $1 and status = 'pending' \
                         and next_attempt_at is not null order by next_attempt_at limit 1",
                    )
                    .bind(campaign_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
                }

                async fn start_recipient_calls(
                    &self,
                    campaign_id: &str,
                    calls: &[RecipientCall],
                    now: DateTime<Utc>,
                ) -> Result<usize, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let running: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "select status from campaigns where campaign_id = $1 and status = 'running'{}",
                        if <$store>::ROW_LOCKS { " for share" } else { "" }
                    )))
                    .bind(campaign_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if running.is_none() {
                        return Ok(0);
                    }
                    let mut started = 0;
                    for start in calls {
                        let claimed = sqlx::query(
                            "update campaign_recipients set status = 'calling', call_id = $3, attempts = attempts + 1, \
                             next_attempt_at = null, outcome = null, ended_reason = null, updated_at = $5 \
                             where campaign_id = $1 and row_index = $2 and status = 'pending' and attempts = $4",
                        )
                        .bind(campaign_id)
                        .bind(start.row_index)
                        .bind(start.call.call_id.as_str())
                        .bind(start.attempts)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        if claimed.rows_affected() != 1 {
                            continue;
                        }
                        super::calls_sql::insert_call_in(&mut *tx, &start.call).await?;
                        sqlx::query(
                            "insert into outbound_calls (call_id, account_id, purpose_sealed, voicemail_action, voicemail_message, \
                             dial_attempts, created_at) values ($1, $2, $3, $4, $5, $6, $7)",
                        )
                        .bind(start.call.call_id.as_str())
                        .bind(start.call.account_id.as_str())
                        .bind(&start.details.purpose_sealed)
                        .bind(&start.details.voicemail_action)
                        .bind(&start.details.voicemail_message)
                        .bind(start.details.dial_attempts)
                        .bind(start.call.created_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        super::jobs_sql::insert_job_in(&mut *tx, &start.dial_job, start.call.created_at).await?;
                        started += 1;
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok(started)
                }

                async fn ended_recipient_calls(
                    &self,
                    campaign_id: &str,
                    limit: i64,
                ) -> Result<Vec<EndedRecipientCall>, StoreError> {
                    let rows = sqlx::query(
                        "select r.row_index, r.attempts, r.call_id, c.call_status, c.ended_reason from campaign_recipients r \
                         join calls c on c.call_id = r.call_id where r.campaign_id = $1 and r.status = 'calling' \
                         and c.ended_at is not null order by r.row_index limit $2",
                    )
                    .bind(campaign_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter()
                        .map(|row| {
                            Ok(EndedRecipientCall {
                                row_index: row.try_get("row_index")?,
                                attempts: row.try_get("attempts")?,
                                call_id: row.try_get("call_id")?,
                                call_status: row.try_get("call_status")?,
                                ended_reason: row.try_get("ended_reason")?,
                            })
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(map_err)
                }

                async fn settle_recipient(
                    &self,
                    campaign_id: &str,
                    ended: &EndedRecipientCall,
                    settle: &Settle,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let (status, retry_at) = match settle {
                        Settle::Done => ("done", None),
                        Settle::RetryAt(at) => ("pending", Some(*at)),
                    };
                    let done = sqlx::query(
                        "update campaign_recipients set status = $4, outcome = $5, ended_reason = $6, next_attempt_at = $7, updated_at = $8 \
                         where campaign_id = $1 and row_index = $2 and status = 'calling' and call_id = $3",
                    )
                    .bind(campaign_id)
                    .bind(ended.row_index)
                    .bind(&ended.call_id)
                    .bind(status)
                    .bind(&ended.call_status)
                    .bind(&ended.ended_reason)
                    .bind(retry_at)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn stale_campaign_calls(
                    &self,
                    campaign_id: &str,
                    stale_before: DateTime<Utc>,
                    limit: i64,
                ) -> Result<Vec<nixflex_core::call::CallRecord>, StoreError> {
                    let rows = sqlx::query(
                        "select * from calls where campaign_id = $1 and ended_at is null and answered_at is null \
                         and call_status in ('initiated', 'ringing', 'in-progress') \
                         and coalesce(heartbeat_at, started_at) < $2 order by created_at limit $3",
                    )
                    .bind(campaign_id)
                    .bind(stale_before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter().map(super::calls_sql::call_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)
                }

                async fn queued_campaign_calls(&self, campaign_id: &str) -> Result<Vec<CallId>, StoreError> {
                    let ids: Vec<String> = sqlx::query_scalar(
                        "select call_id from calls where campaign_id = $1 and call_status = 'queued'",
                    )
                    .bind(campaign_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    Ok(ids.into_iter().map(CallId::from).collect())
                }

                async fn requeue_stale_call(
                    &self,
                    call_id: &CallId,
                    stale_before: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set call_status = 'queued', heartbeat_at = null, updated_at = $3 \
                         where call_id = $1 and call_status = 'initiated' and twilio_call_sid is null and ended_at is null \
                         and coalesce(heartbeat_at, started_at) < $2",
                    )
                    .bind(call_id.as_str())
                    .bind(stale_before)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn touch_unplaced_call(
                    &self,
                    call_id: &CallId,
                    claimed_at: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set heartbeat_at = $2 where call_id = $1 and call_status = 'initiated' \
                         and twilio_call_sid is null and ended_at is null and started_at = $3",
                    )
                    .bind(call_id.as_str())
                    .bind(now)
                    .bind(claimed_at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn carrier_sid_known(&self, call_sid: &str) -> Result<bool, StoreError> {
                    let found: Option<String> = sqlx::query_scalar("select call_id from calls where twilio_call_sid = $1")
                        .bind(call_sid)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    Ok(found.is_some())
                }

                async fn reserve_dial_slot(
                    &self,
                    key: &str,
                    interval: chrono::Duration,
                    now: DateTime<Utc>,
                ) -> Result<DateTime<Utc>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    sqlx::query("insert into carrier_pacing (pacing_key, next_at) values ($1, $2) on conflict (pacing_key) do nothing")
                        .bind(key)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let next: Option<DateTime<Utc>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "select next_at from carrier_pacing where pacing_key = $1{}",
                        if <$store>::ROW_LOCKS { " for update" } else { "" }
                    )))
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let slot = next.map_or(now, |next| next.max(now));
                    sqlx::query("update carrier_pacing set next_at = $2 where pacing_key = $1")
                    .bind(key)
                    .bind(slot + interval)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(slot)
                }
            }
        }
    };
}
pub(crate) use impl_campaigns;
