//! SMS campaigns (docs/sms.md#campaigns): the campaign, its recipients, and the per-number
//! pacing every node shares.
//!
//! The repository trait and its data; the SQL below serves both backends (see `sql.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::ids::AccountId;

use crate::{NewJob, Page, StoreError};

/// A campaign as stored (its counts come separately, computed from the recipients).
#[derive(Debug, Clone, PartialEq)]
pub struct SmsCampaign {
    /// `smsc_` + 16 hex.
    pub campaign_id: String,
    /// Owner.
    pub account_id: AccountId,
    /// The agent whose prompt answers replies.
    pub agent_id: String,
    /// The imported number sending every text.
    pub from_number: String,
    /// Display name.
    pub name: String,
    /// Text with `{{variable}}` placeholders.
    pub message_template: String,
    /// `draft`, `scheduled`, `running`, `done` or `failed`.
    pub status: String,
    /// `api` or `dashboard`.
    pub source: String,
    /// When a scheduled campaign starts.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When sending started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last recipient was dealt with (or the campaign was cancelled).
    pub completed_at: Option<DateTime<Utc>>,
    /// When `DELETE` cancelled it.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A campaign's recipients counted by outcome (docs/sms.md#campaigns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmsCampaignCounts {
    /// Every recipient.
    pub total: i64,
    /// Messages Twilio reported `delivered`.
    pub delivered: i64,
    /// `failed`, `undelivered`, and `sent` (never confirmed).
    pub failed: i64,
    /// Not yet sent, or handed to Twilio and still `queued`/`sending`.
    pub pending: i64,
    /// Skipped: the recipient opted out of the account's texts.
    pub opted_out: i64,
    /// Not sent because the campaign was cancelled.
    pub cancelled: i64,
}

/// A campaign with its live counts.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsCampaignWithCounts {
    /// The campaign.
    pub campaign: SmsCampaign,
    /// Its counts.
    pub counts: SmsCampaignCounts,
}

/// One recipient as the sender sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsCampaignRecipient {
    /// The campaign.
    pub campaign_id: String,
    /// 0-based order in the request.
    pub position: i64,
    /// E.164.
    pub phone: String,
    /// The template's values.
    pub variables: BTreeMap<String, String>,
    /// The template rendered with `variables`.
    pub rendered_message: String,
    /// `queued`, `claimed`, `sent`, `opted_out`, `failed` or `cancelled`.
    pub state: String,
    /// The send key of the recipient's one message.
    pub send_key: String,
    /// Why it failed, when it did.
    pub error_message: Option<String>,
    /// When the send was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
    /// When Twilio accepted the text.
    pub sent_at: Option<DateTime<Utc>>,
}

/// One recipient as the API shows it: its row joined with its message.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsCampaignRecipientView {
    /// The row.
    pub recipient: SmsCampaignRecipient,
    /// `pending` (not yet sent), the message's status once sent, or `opted_out`, `failed`,
    /// `cancelled`.
    pub status: String,
    /// The message's id.
    pub message_id: Option<String>,
    /// Twilio's SID of the message.
    pub twilio_sid: Option<String>,
    /// Twilio's error code.
    pub error_code: Option<i64>,
    /// The message's error text, else the recipient's.
    pub error_message: Option<String>,
}

/// A new recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSmsRecipient {
    /// E.164.
    pub phone: String,
    /// The template's values.
    pub variables: BTreeMap<String, String>,
    /// The rendered text.
    pub rendered_message: String,
}

/// The send key of a campaign recipient's message: one text per recipient and campaign.
pub fn campaign_send_key(campaign_id: &str, phone: &str) -> String {
    format!("sms-campaign:{campaign_id}:{phone}")
}

/// SMS campaigns.
#[async_trait]
pub trait SmsCampaignRepo: Send + Sync {
    /// Writes the campaign, its recipients and its sender job in one transaction.
    async fn create_sms_campaign(
        &self,
        campaign: &SmsCampaign,
        recipients: &[NewSmsRecipient],
        job: &NewJob,
    ) -> Result<(), StoreError>;

    /// The account's campaign with its counts.
    async fn get_sms_campaign(
        &self,
        account_id: &AccountId,
        campaign_id: &str,
    ) -> Result<Option<SmsCampaignWithCounts>, StoreError>;

    /// A campaign of any account (for its job).
    async fn find_sms_campaign(&self, campaign_id: &str)
    -> Result<Option<SmsCampaign>, StoreError>;

    /// The account's campaigns, newest first, with counts, and the total.
    async fn list_sms_campaigns(
        &self,
        account_id: &AccountId,
        agent_id: Option<&str>,
        status: Option<&str>,
        page: Page,
    ) -> Result<(Vec<SmsCampaignWithCounts>, i64), StoreError>;

    /// A page of the campaign's recipients in request order, each with its message.
    async fn list_sms_campaign_recipients(
        &self,
        campaign_id: &str,
        page: Page,
    ) -> Result<Vec<SmsCampaignRecipientView>, StoreError>;

    /// Moves a `draft` or `scheduled` campaign to `running` and makes its sender job due now.
    /// False when the campaign is in another status.
    async fn launch_sms_campaign(
        &self,
        campaign_id: &str,
        job_key: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Cancels a campaign that is not `done`/`failed`: it becomes `done` with `cancelled_at`, and
    /// its `queued` recipients become `cancelled`. Returns how many recipients were cancelled,
    /// or `None` when the campaign had already finished.
    async fn cancel_sms_campaign(
        &self,
        campaign_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError>;

    /// Claims up to `limit` `queued` recipients of a `running` campaign, in order (committed
    /// before any of them is texted). Empty when none is left or the campaign stopped running.
    async fn claim_sms_recipients(
        &self,
        campaign_id: &str,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<SmsCampaignRecipient>, StoreError>;

    /// Recipients claimed by an earlier run that did not record the outcome (a crash).
    async fn claimed_sms_recipients(
        &self,
        campaign_id: &str,
        limit: i64,
    ) -> Result<Vec<SmsCampaignRecipient>, StoreError>;

    /// Records a claimed recipient's outcome (`sent`, `opted_out` or `failed`).
    async fn finish_sms_recipient(
        &self,
        campaign_id: &str,
        position: i64,
        state: &str,
        error_message: Option<&str>,
        sent_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    /// Ends a `running` campaign none of whose recipients is queued or claimed: `failed` when
    /// none was handed to Twilio, else `done`. Returns the new status, or `None` when it is not
    /// finished (or not running).
    async fn finish_sms_campaign(
        &self,
        campaign_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;

    /// Reserves `count` consecutive send slots `interval` apart for texts from `phone_number`,
    /// shared by every node: returns the first slot's time (now, or when the number's earlier
    /// reservations end).
    async fn reserve_sms_slots(
        &self,
        phone_number: &str,
        count: i64,
        interval: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError>;
}

macro_rules! impl_sms_campaigns {
    ($store:ty, $db:ty, $backend:literal) => {
        mod sms_campaigns_sql {
            use std::collections::BTreeMap;

            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use nixflex_core::ids::AccountId;
            use sqlx::Row as _;
            use sqlx::types::Json;

            use super::*;
            use crate::sql::map_err;
            use crate::{
                NewJob, NewSmsRecipient, Page, SmsCampaign, SmsCampaignCounts, SmsCampaignRecipient,
                SmsCampaignRecipientView, SmsCampaignWithCounts, StoreError, campaign_send_key,
            };

            type DbRow = <$db as sqlx::Database>::Row;

            /// The counts of the campaign `c` (a correlated subquery, one pass over its
            /// recipients). A recipient's effective status: its own when it failed or opted out,
            /// else its message's, else `pending` while queued or claimed, else its state.
            const EFFECTIVE: &str = "(case when r.state in ('failed', 'opted_out') then r.state \
                 when m.status is not null then m.status \
                 when r.state in ('queued', 'claimed') then 'pending' else r.state end)";

            fn counts_sql() -> String {
                format!(
                    "(select count(*) from sms_campaign_recipients r left join sms_messages m on m.send_key = r.send_key where r.campaign_id = c.campaign_id) as n_total, \
                     (select count(*) from sms_campaign_recipients r left join sms_messages m on m.send_key = r.send_key where r.campaign_id = c.campaign_id and {EFFECTIVE} = 'delivered') as n_delivered, \
                     (select count(*) from sms_campaign_recipients r left join sms_messages m on m.send_key = r.send_key where r.campaign_id = c.campaign_id and {EFFECTIVE} in ('failed', 'undelivered', 'sent')) as n_failed, \
                     (select count(*) from sms_campaign_recipients r left join sms_messages m on m.send_key = r.send_key where r.campaign_id = c.campaign_id and {EFFECTIVE} in ('pending', 'queued', 'sending')) as n_pending, \
                     (select count(*) from sms_campaign_recipients r where r.campaign_id = c.campaign_id and r.state = 'opted_out') as n_opted_out, \
                     (select count(*) from sms_campaign_recipients r left join sms_messages m on m.send_key = r.send_key where r.campaign_id = c.campaign_id and r.state = 'cancelled' and m.status is null) as n_cancelled"
                )
            }

            fn campaign_from_row(row: &DbRow) -> Result<SmsCampaign, sqlx::Error> {
                Ok(SmsCampaign {
                    campaign_id: row.try_get("campaign_id")?,
                    account_id: row.try_get::<String, _>("account_id")?.into(),
                    agent_id: row.try_get("agent_id")?,
                    from_number: row.try_get("from_number")?,
                    name: row.try_get("name")?,
                    message_template: row.try_get("message_template")?,
                    status: row.try_get("status")?,
                    source: row.try_get("source")?,
                    scheduled_at: row.try_get("scheduled_at")?,
                    started_at: row.try_get("started_at")?,
                    completed_at: row.try_get("completed_at")?,
                    cancelled_at: row.try_get("cancelled_at")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn with_counts_from_row(row: &DbRow) -> Result<SmsCampaignWithCounts, sqlx::Error> {
                Ok(SmsCampaignWithCounts {
                    campaign: campaign_from_row(row)?,
                    counts: SmsCampaignCounts {
                        total: row.try_get("n_total")?,
                        delivered: row.try_get("n_delivered")?,
                        failed: row.try_get("n_failed")?,
                        pending: row.try_get("n_pending")?,
                        opted_out: row.try_get("n_opted_out")?,
                        cancelled: row.try_get("n_cancelled")?,
                    },
                })
            }

            fn recipient_from_row(row: &DbRow) -> Result<SmsCampaignRecipient, sqlx::Error> {
                let Json(variables): Json<BTreeMap<String, String>> = row.try_get("variables")?;
                Ok(SmsCampaignRecipient {
                    campaign_id: row.try_get("campaign_id")?,
                    position: row.try_get("position")?,
                    phone: row.try_get("phone")?,
                    variables,
                    rendered_message: row.try_get("rendered_message")?,
                    state: row.try_get("state")?,
                    send_key: row.try_get("send_key")?,
                    error_message: row.try_get("error_message")?,
                    claimed_at: row.try_get("claimed_at")?,
                    sent_at: row.try_get("sent_at")?,
                })
            }

            /// Rows per multi-row insert (7 parameters each, well under SQLite's limit).
            const INSERT_CHUNK: usize = 500;

            #[async_trait]
            impl crate::SmsCampaignRepo for $store {
                async fn create_sms_campaign(
                    &self,
                    c: &SmsCampaign,
                    recipients: &[NewSmsRecipient],
                    job: &NewJob,
                ) -> Result<(), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    sqlx::query(
                        "insert into sms_campaigns (campaign_id, account_id, agent_id, from_number, name, message_template, status, \
                         source, scheduled_at, started_at, completed_at, cancelled_at, created_at, updated_at) \
                         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    )
                    .bind(&c.campaign_id)
                    .bind(c.account_id.as_str())
                    .bind(&c.agent_id)
                    .bind(&c.from_number)
                    .bind(&c.name)
                    .bind(&c.message_template)
                    .bind(&c.status)
                    .bind(&c.source)
                    .bind(c.scheduled_at)
                    .bind(c.started_at)
                    .bind(c.completed_at)
                    .bind(c.cancelled_at)
                    .bind(c.created_at)
                    .bind(c.updated_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    for (chunk_index, chunk) in recipients.chunks(INSERT_CHUNK).enumerate() {
                        let mut builder = sqlx::QueryBuilder::<$db>::new(
                            "insert into sms_campaign_recipients (campaign_id, position, phone, variables, rendered_message, state, send_key) ",
                        );
                        builder.push_values(chunk.iter().enumerate(), |mut row, (i, r)| {
                            let position = i64::try_from(chunk_index * INSERT_CHUNK + i).unwrap_or(i64::MAX);
                            row.push_bind(c.campaign_id.clone())
                                .push_bind(position)
                                .push_bind(r.phone.clone())
                                .push_bind(Json(r.variables.clone()))
                                .push_bind(r.rendered_message.clone())
                                .push_bind("queued")
                                .push_bind(campaign_send_key(&c.campaign_id, &r.phone));
                        });
                        builder.build().execute(&mut *tx).await.map_err(map_err)?;
                    }
                    super::jobs_sql::insert_job_in(&mut *tx, job, c.created_at).await?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(())
                }

                async fn get_sms_campaign(
                    &self,
                    account_id: &AccountId,
                    campaign_id: &str,
                ) -> Result<Option<SmsCampaignWithCounts>, StoreError> {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "select c.*, {} from sms_campaigns c where c.campaign_id = $1 and c.account_id = $2",
                        counts_sql()
                    ));
                    let row = sqlx::query(sql)
                        .bind(campaign_id)
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| with_counts_from_row(&row)).transpose().map_err(map_err)
                }

                async fn find_sms_campaign(&self, campaign_id: &str) -> Result<Option<SmsCampaign>, StoreError> {
                    let row = sqlx::query("select * from sms_campaigns where campaign_id = $1")
                        .bind(campaign_id)
                        .fetch_optional(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| campaign_from_row(&row)).transpose().map_err(map_err)
                }

                async fn list_sms_campaigns(
                    &self,
                    account_id: &AccountId,
                    agent_id: Option<&str>,
                    status: Option<&str>,
                    page: Page,
                ) -> Result<(Vec<SmsCampaignWithCounts>, i64), StoreError> {
                    const WHERE: &str = "where c.account_id = $1 and ($2 is null or c.agent_id = $2) and ($3 is null or c.status = $3)";
                    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from sms_campaigns c {WHERE}")))
                        .bind(account_id.as_str())
                        .bind(agent_id)
                        .bind(status)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let sql = sqlx::AssertSqlSafe(format!(
                        "select c.*, {} from sms_campaigns c {WHERE} order by c.created_at desc, c.campaign_id desc limit $4 offset $5",
                        counts_sql()
                    ));
                    let rows = sqlx::query(sql)
                        .bind(account_id.as_str())
                        .bind(agent_id)
                        .bind(status)
                        .bind(page.limit)
                        .bind(page.offset)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_err)?;
                    let campaigns = rows.iter().map(with_counts_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    Ok((campaigns, total))
                }

                async fn list_sms_campaign_recipients(
                    &self,
                    campaign_id: &str,
                    page: Page,
                ) -> Result<Vec<SmsCampaignRecipientView>, StoreError> {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "select r.*, {EFFECTIVE} as effective, m.message_id as m_id, m.twilio_sid as m_sid, \
                         m.error_code as m_error_code, m.error_message as m_error \
                         from sms_campaign_recipients r left join sms_messages m on m.send_key = r.send_key \
                         where r.campaign_id = $1 order by r.position limit $2 offset $3"
                    ));
                    let rows = sqlx::query(sql)
                        .bind(campaign_id)
                        .bind(page.limit)
                        .bind(page.offset)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_err)?;
                    rows.iter()
                        .map(|row| {
                            let recipient = recipient_from_row(row)?;
                            let error: Option<String> = row.try_get("m_error")?;
                            Ok(SmsCampaignRecipientView {
                                status: row.try_get("effective")?,
                                message_id: row.try_get("m_id")?,
                                twilio_sid: row.try_get("m_sid")?,
                                error_code: row.try_get("m_error_code")?,
                                error_message: error.or_else(|| recipient.error_message.clone()),
                                recipient,
                            })
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(map_err)
                }

                async fn launch_sms_campaign(
                    &self,
                    campaign_id: &str,
                    job_key: &str,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let done = sqlx::query(
                        "update sms_campaigns set status = 'running', started_at = coalesce(started_at, $2), updated_at = $2 \
                         where campaign_id = $1 and status in ('draft', 'scheduled')",
                    )
                    .bind(campaign_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                    sqlx::query("update jobs set run_at = $2, updated_at = $2 where idempotency_key = $1 and state = 'queued' and run_at > $2")
                        .bind(job_key)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(true)
                }

                async fn cancel_sms_campaign(
                    &self,
                    campaign_id: &str,
                    now: DateTime<Utc>,
                ) -> Result<Option<i64>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let done = sqlx::query(
                        "update sms_campaigns set status = 'done', cancelled_at = $2, completed_at = $2, updated_at = $2 \
                         where campaign_id = $1 and status not in ('done', 'failed')",
                    )
                    .bind(campaign_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if done.rows_affected() != 1 {
                        return Ok(None);
                    }
                    let cancelled = sqlx::query(
                        "update sms_campaign_recipients set state = 'cancelled' where campaign_id = $1 and state = 'queued'",
                    )
                    .bind(campaign_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(Some(i64::try_from(cancelled.rows_affected()).unwrap_or(i64::MAX)))
                }

                async fn claim_sms_recipients(
                    &self,
                    campaign_id: &str,
                    limit: i64,
                    now: DateTime<Utc>,
                ) -> Result<Vec<SmsCampaignRecipient>, StoreError> {
                    let rows = sqlx::query(
                        "update sms_campaign_recipients set state = 'claimed', claimed_at = $3 \
                         where campaign_id = $1 and state = 'queued' and position in \
                         (select position from sms_campaign_recipients where campaign_id = $1 and state = 'queued' order by position limit $2) \
                         and exists (select 1 from sms_campaigns where campaign_id = $1 and status = 'running') \
                         returning *",
                    )
                    .bind(campaign_id)
                    .bind(limit)
                    .bind(now)
                    .fetch_all(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    let mut claimed = rows.iter().map(recipient_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    claimed.sort_by_key(|r| r.position);
                    Ok(claimed)
                }

                async fn claimed_sms_recipients(
                    &self,
                    campaign_id: &str,
                    limit: i64,
                ) -> Result<Vec<SmsCampaignRecipient>, StoreError> {
                    let rows = sqlx::query(
                        "select * from sms_campaign_recipients where campaign_id = $1 and state = 'claimed' order by position limit $2",
                    )
                    .bind(campaign_id)
                    .bind(limit)
                    .fetch_all(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    rows.iter().map(recipient_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)
                }

                async fn finish_sms_recipient(
                    &self,
                    campaign_id: &str,
                    position: i64,
                    state: &str,
                    error_message: Option<&str>,
                    sent_at: Option<DateTime<Utc>>,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "update sms_campaign_recipients set state = $3, error_message = $4, sent_at = coalesce($5, sent_at) \
                         where campaign_id = $1 and position = $2",
                    )
                    .bind(campaign_id)
                    .bind(position)
                    .bind(state)
                    .bind(error_message)
                    .bind(sent_at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(())
                }

                async fn finish_sms_campaign(
                    &self,
                    campaign_id: &str,
                    now: DateTime<Utc>,
                ) -> Result<Option<String>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    let open: i64 = sqlx::query_scalar(
                        "select count(*) from sms_campaign_recipients where campaign_id = $1 and state in ('queued', 'claimed')",
                    )
                    .bind(campaign_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if open > 0 {
                        return Ok(None);
                    }
                    let sent: i64 = sqlx::query_scalar(
                        "select count(*) from sms_campaign_recipients where campaign_id = $1 and state = 'sent'",
                    )
                    .bind(campaign_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let status = if sent > 0 { "done" } else { "failed" };
                    let done = sqlx::query(
                        "update sms_campaigns set status = $2, completed_at = $3, updated_at = $3 where campaign_id = $1 and status = 'running'",
                    )
                    .bind(campaign_id)
                    .bind(status)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok((done.rows_affected() == 1).then(|| status.to_owned()))
                }

                async fn reserve_sms_slots(
                    &self,
                    phone_number: &str,
                    count: i64,
                    interval: chrono::Duration,
                    now: DateTime<Utc>,
                ) -> Result<DateTime<Utc>, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    sqlx::query("insert into sms_send_pacing (phone_number, next_at) values ($1, $2) on conflict do nothing")
                        .bind(phone_number)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let lock = if <$store>::ROW_LOCKS { " for update" } else { "" };
                    let next_at: DateTime<Utc> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "select next_at from sms_send_pacing where phone_number = $1{lock}"
                    )))
                    .bind(phone_number)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    let start = next_at.max(now);
                    let end = start + interval * i32::try_from(count.max(1)).unwrap_or(i32::MAX);
                    sqlx::query("update sms_send_pacing set next_at = $2 where phone_number = $1")
                        .bind(phone_number)
                        .bind(end)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(start)
                }
            }
        }
    };
}
pub(crate) use impl_sms_campaigns;
