//! Call records: admission under the concurrent-call cap, updates, history.
//!
//! The repository trait and its data; the SQL below serves both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::call::{
    CallRecord, CallStatus, Direction, EndedReason, FunctionCallLog, ProviderEvent,
    TranscriptEntry, TurnLatency,
};
use nixflex_core::ids::{AccountId, AgentId, CallId, E164};
use serde_json::{Map, Value};

use crate::{Page, StoreError};

/// Filters of `GET /v1/calls` (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallFilter {
    /// Agent.
    pub agent_id: Option<String>,
    /// Direction.
    pub direction: Option<Direction>,
    /// Twilio status.
    pub call_status: Option<CallStatus>,
    /// Caller ID.
    pub from_number: Option<String>,
    /// Number dialled.
    pub to_number: Option<String>,
    /// Campaign.
    pub campaign_id: Option<String>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Started before.
    pub until: Option<DateTime<Utc>>,
    /// Sentiment.
    pub caller_sentiment: Option<String>,
    /// Success.
    pub call_successful: Option<bool>,
    /// Voicemail.
    pub voicemail_detected: Option<bool>,
}

/// How the total of a `GET /v1/calls` page is found (docs/decisions.md#call-tallies): from the
/// running tallies kept by the database (migrations 0018 and 0019) when at most one documented
/// filter is given, else by counting the matching calls through that filter's index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CountPlan {
    /// An expression over the account's `call_counts` row: no filter, or one of direction,
    /// sentiment, success and voicemail.
    Account(&'static str),
    /// The agent's row of `call_agent_counts`.
    Agent(String),
    /// Calls started in a range: the whole hours `[first, end)` of `call_hour_counts` (either
    /// end open), plus the calls of the partial hours at either end, counted.
    Started {
        /// First whole hour (hours since the epoch), if bounded below.
        first: Option<i64>,
        /// The hour the whole hours end before, if bounded above.
        end: Option<i64>,
        /// `[since, until)` ranges left over, counted from the calls.
        edges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    },
    /// Any other filter or combination.
    Exact,
}

impl CallFilter {
    /// Where this filter's total comes from.
    pub(crate) fn count_plan(&self) -> CountPlan {
        // Destructured so that a new filter cannot be added without deciding how it counts.
        let CallFilter {
            agent_id,
            direction,
            call_status,
            from_number,
            to_number,
            campaign_id,
            since,
            until,
            caller_sentiment,
            call_successful,
            voicemail_detected,
        } = self;
        let given = [
            agent_id.is_some(),
            direction.is_some(),
            call_status.is_some(),
            from_number.is_some(),
            to_number.is_some(),
            campaign_id.is_some(),
            since.is_some() || until.is_some(),
            caller_sentiment.is_some(),
            call_successful.is_some(),
            voicemail_detected.is_some(),
        ];
        match given.iter().filter(|given| **given).count() {
            0 => return CountPlan::Account("total"),
            1 => {}
            _ => return CountPlan::Exact,
        }
        if let Some(agent_id) = agent_id {
            return CountPlan::Agent(agent_id.clone());
        }
        let column =
            match (direction, caller_sentiment.as_deref(), call_successful, voicemail_detected) {
                (Some(Direction::Inbound), ..) => "inbound",
                (Some(Direction::Outbound), ..) => "total - inbound",
                (_, Some("happy"), ..) => "happy",
                (_, Some("neutral"), ..) => "neutral",
                (_, Some("frustrated"), ..) => "frustrated",
                (_, _, Some(true), _) => "successful",
                (_, _, Some(false), _) => "unsuccessful",
                (_, _, _, Some(true)) => "voicemail",
                (_, _, _, Some(false)) => "total - voicemail",
                _ if since.is_some() || until.is_some() => return started_plan(*since, *until),
                _ => return CountPlan::Exact,
            };
        CountPlan::Account(column)
    }
}

/// `since`/`until` alone: whole hours from the tallies, the partial hours at either end counted.
/// A range inside one or two partial hours is counted outright.
fn started_plan(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> CountPlan {
    const HOUR: i64 = 3600;
    let hour_start =
        |hour: i64| hour.checked_mul(HOUR).and_then(|s| DateTime::from_timestamp(s, 0));
    // The first hour that starts at or after `since`.
    let first = since.map(|since| {
        let hour = since.timestamp().div_euclid(HOUR);
        if hour_start(hour) == Some(since) { hour } else { hour + 1 }
    });
    // The hour `until` falls in: whole hours end where it starts.
    let end = until.map(|until| until.timestamp().div_euclid(HOUR));
    if let (Some(first), Some(end)) = (first, end)
        && first >= end
    {
        return CountPlan::Exact;
    }
    let mut edges = Vec::new();
    if let (Some(since), Some(first)) = (since, first) {
        let Some(boundary) = hour_start(first) else { return CountPlan::Exact };
        if since < boundary {
            edges.push((since, boundary));
        }
    }
    if let (Some(until), Some(end)) = (until, end) {
        let Some(boundary) = hour_start(end) else { return CountPlan::Exact };
        if boundary < until {
            edges.push((boundary, until));
        }
    }
    CountPlan::Started { first, end, edges }
}

/// A partial update of a call. Final statuses never change; `ended_reason`, `answered_at` and
/// `ended_at` keep their first value; other fields are replaced when given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallUpdate {
    /// New status (ignored once the call has a final one).
    pub call_status: Option<CallStatus>,
    /// Why it ended (first writer wins).
    pub ended_reason: Option<EndedReason>,
    /// Answer time (first writer wins).
    pub answered_at: Option<DateTime<Utc>>,
    /// End time (first writer wins).
    pub ended_at: Option<DateTime<Utc>>,
    /// Connected seconds.
    pub duration_seconds: Option<i64>,
    /// Transcript so far.
    pub transcript: Option<Vec<TranscriptEntry>>,
    /// Latency so far.
    pub turns: Option<Vec<TurnLatency>>,
    /// Custom-function invocations so far.
    pub function_calls: Option<Vec<FunctionCallLog>>,
    /// Provider events so far (replaces the old list).
    pub provider_events: Option<Vec<ProviderEvent>>,
    /// Mean latency.
    pub avg_latency_ms: Option<f64>,
    /// Media session liveness.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Twilio's SID once known.
    pub twilio_call_sid: Option<String>,
    /// A new media-stream token hash (replaces the old one).
    pub stream_token_hash: Option<String>,
    /// The carrier's answering-machine verdict (replaces the old one).
    pub amd_result: Option<String>,
    /// What the carrier said about how the call ended (first writer wins).
    pub carrier_details: Option<Value>,
    /// Voicemail was reached (replaces the old value).
    pub voicemail_detected: Option<bool>,
    /// Which detector found the voicemail: `amd` or `transcript` (replaces the old one).
    pub voicemail_detection_method: Option<String>,
    /// Seconds billed when they differ from the duration (replaces the old value; usage counts
    /// the duration when none was set).
    pub billable_seconds: Option<i64>,
}

impl CallUpdate {
    /// One update with the effect of writing `self` and then `later`: final statuses and the
    /// first-writer-wins fields (`ended_reason`, `answered_at`, `ended_at`, `twilio_call_sid`,
    /// `carrier_details`) keep `self`'s value when it has one; every other field takes `later`'s
    /// when it has one. A call's updates queued behind a busy database are written as one
    /// (docs/engine.md#call-updates).
    #[must_use]
    pub fn then(self, later: CallUpdate) -> CallUpdate {
        CallUpdate {
            call_status: match self.call_status {
                Some(status) if status.is_final() => Some(status),
                earlier => later.call_status.or(earlier),
            },
            ended_reason: self.ended_reason.or(later.ended_reason),
            answered_at: self.answered_at.or(later.answered_at),
            ended_at: self.ended_at.or(later.ended_at),
            duration_seconds: later.duration_seconds.or(self.duration_seconds),
            transcript: later.transcript.or(self.transcript),
            turns: later.turns.or(self.turns),
            function_calls: later.function_calls.or(self.function_calls),
            provider_events: later.provider_events.or(self.provider_events),
            avg_latency_ms: later.avg_latency_ms.or(self.avg_latency_ms),
            heartbeat_at: later.heartbeat_at.or(self.heartbeat_at),
            twilio_call_sid: self.twilio_call_sid.or(later.twilio_call_sid),
            stream_token_hash: later.stream_token_hash.or(self.stream_token_hash),
            amd_result: later.amd_result.or(self.amd_result),
            carrier_details: self.carrier_details.or(later.carrier_details),
            voicemail_detected: later.voicemail_detected.or(self.voicemail_detected),
            voicemail_detection_method: later
                .voicemail_detection_method
                .or(self.voicemail_detection_method),
            billable_seconds: later.billable_seconds.or(self.billable_seconds),
        }
    }
}

/// Whether an inbound call may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Inserted as in progress.
    Admitted,
    /// The account already has `active` live calls (nothing inserted).
    AtCapacity {
        /// Live calls counted.
        active: i64,
    },
}

/// Call records: admission under the concurrent-call cap, updates, history.
#[async_trait]
pub trait CallRepo: Send + Sync {
    /// Inserts a call if the account has fewer than `cap` live calls (those not final whose media
    /// session was alive after `alive_after`), atomically across nodes.
    async fn admit_call(
        &self,
        call: &CallRecord,
        cap: i64,
        alive_after: DateTime<Utc>,
    ) -> Result<Admission, StoreError>;

    /// Inserts a call unconditionally (`Conflict` on a duplicate Twilio SID).
    async fn insert_call(&self, call: &CallRecord) -> Result<(), StoreError>;

    /// Inserts many calls in one transaction, all or none (seeding: `nixflex bench api`).
    async fn insert_calls(&self, calls: &[CallRecord]) -> Result<(), StoreError>;

    /// A call of this account.
    async fn get_call(
        &self,
        account_id: &AccountId,
        call_id: &CallId,
    ) -> Result<Option<CallRecord>, StoreError>;

    /// A call of any account (engine use).
    async fn find_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError>;

    /// A call of this account by its Twilio SID. With `business_number`, only a call on that
    /// number of the account (inbound to it or outbound from it): carrier webhooks are scoped
    /// to the number whose auth token signed them.
    async fn get_call_by_sid(
        &self,
        account_id: &AccountId,
        twilio_call_sid: &str,
        business_number: Option<&E164>,
    ) -> Result<Option<CallRecord>, StoreError>;

    /// The account's calls, newest first, filtered, with the total. Transcripts are left out
    /// (empty): lists do not return them; `get_call` reads them.
    async fn list_calls(
        &self,
        account_id: &AccountId,
        filter: &CallFilter,
        page: Page,
    ) -> Result<(Vec<CallRecord>, i64), StoreError>;

    /// Applies a partial update; false if the call does not exist.
    async fn update_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Applies a call's final update and queues its follow-up jobs in one transaction (jobs whose
    /// idempotency key exists are skipped); false, with nothing written, if the call does not
    /// exist.
    async fn finish_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
        follow_ups: &[crate::NewJob],
    ) -> Result<bool, StoreError>;

    /// Deletes one call; false if it was not this account's.
    async fn delete_call(
        &self,
        account_id: &AccountId,
        call_id: &CallId,
    ) -> Result<bool, StoreError>;

    /// Deletes all of the account's calls; returns how many.
    async fn delete_all_calls(&self, account_id: &AccountId) -> Result<i64, StoreError>;

    /// Summaries of the latest calls between a business number and a caller for an agent,
    /// newest first (history, docs/engine.md#history-and-caller-context).
    async fn call_history(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
        business_number: &E164,
        caller_number: &str,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError>;

    /// Stores a call's post-call analysis; false if the call is gone.
    async fn record_analysis(
        &self,
        call_id: &CallId,
        analysis: &CallAnalysis,
    ) -> Result<bool, StoreError>;

    /// What the account's calls that started in `[since, until)` add up to (either bound may
    /// be open), and the most calls connected at once among them.
    async fn call_usage(
        &self,
        account_id: &AccountId,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<CallUsage, StoreError>;
}

/// What post-call analysis found (every field may be empty: nothing is invented).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallAnalysis {
    /// One or two sentences.
    pub call_summary: Option<String>,
    /// `happy`, `neutral` or `frustrated`.
    pub caller_sentiment: Option<String>,
    /// Whether the caller got what they needed.
    pub call_successful: Option<bool>,
    /// One key per extraction field.
    pub extracted_data: Map<String, Value>,
}

/// Totals of an account's calls over a period (`GET /v1/usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallUsage {
    /// Calls that reached us or that we placed, refused ones included.
    pub total: i64,
    /// Of which inbound.
    pub inbound: i64,
    /// Of which outbound.
    pub outbound: i64,
    /// Billed seconds: connected seconds (answer → hang-up), except a call's own
    /// `billable_seconds` when set (a voicemail is billed only for the message left).
    pub connected_seconds: i64,
    /// Inbound calls refused busy because the account was at its concurrent-call cap.
    pub rejected_at_cap: i64,
    /// The most calls connected at the same moment.
    pub peak_concurrent: i64,
}

/// The caller's history with an agent: `$1` account, `$2` agent, `$3` business number, `$4`
/// caller's number, `$5` how many. The expressions are the index's (migration 0021), written the
/// same so the planner reads only that pair's calls, newest first (docs/engine.md#history-and-caller-context).
pub(crate) const CALL_HISTORY_SQL: &str = "select started_at, call_summary from calls where account_id = $1 \
     and (case when direction = 'outbound' then to_number else from_number end) = $4 \
     and (case when direction = 'outbound' then from_number else to_number end) = $3 \
     and agent_id = $2 and call_summary is not null \
     order by started_at desc limit $5";

macro_rules! impl_calls {
    ($store:ty, $db:ty, $backend:literal) => {
        mod calls_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};

            use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason, FunctionCallLog, ProviderEvent, TranscriptEntry, TurnLatency};

            fn decode_error(column: &str, raw: &str) -> sqlx::Error {
                sqlx::Error::Decode(format!("unknown {column} `{raw}` in the calls table").into())
            }

            use serde_json::{Map, Value};
            use sqlx::Row as _;
            use sqlx::types::Json;

            use crate::sql::map_err;
            use crate::{
                Admission, CallAnalysis, CallFilter, CallUpdate, CallUsage, Page, StoreError,
            };
            use super::*;
            use nixflex_core::ids::{AccountId, AgentId, CallId, E164};

            type DbRow = <$db as sqlx::Database>::Row;

            /// Every column `call_from_row` reads, with an empty transcript in place of the
            /// stored one (lists do not return transcripts; they can be most of a row).
            const LIST_COLUMNS: &str = "select call_id, account_id, agent_id, direction, from_number, to_number, twilio_call_sid, call_status, \
                 ended_reason, started_at, answered_at, ended_at, duration_seconds, {empty} as transcript, turns, \
                 function_calls, provider_events, avg_latency_ms, recording_location, recording_duration_s, call_summary, \
                 caller_sentiment, call_successful, extracted_data, voicemail_detected, campaign_id, metadata, cost_usd, \
                 precall_reject_reason, amd_result, voicemail_detection_method, carrier_details, stream_token_hash, \
                 created_at, updated_at";

            pub(super) fn call_from_row(row: &DbRow) -> Result<CallRecord, sqlx::Error> {
                let direction: String = row.try_get("direction")?;
                let Json(transcript): Json<Vec<TranscriptEntry>> = row.try_get("transcript")?;
                let Json(turns): Json<Vec<TurnLatency>> = row.try_get("turns")?;
                let Json(function_calls): Json<Vec<FunctionCallLog>> = row.try_get("function_calls")?;
                let Json(provider_events): Json<Vec<ProviderEvent>> = row.try_get("provider_events")?;
                let Json(extracted_data): Json<Map<String, Value>> = row.try_get("extracted_data")?;
                let metadata: Option<Json<Value>> = row.try_get("metadata")?;
                Ok(CallRecord {
                    call_id: row.try_get::<String, _>("call_id")?.into(),
                    account_id: row.try_get::<String, _>("account_id")?.into(),
                    agent_id: row.try_get::<Option<String>, _>("agent_id")?.map(Into::into),
                    direction: Direction::parse(&direction).unwrap_or(Direction::Inbound),
                    from_number: row.try_get("from_number")?,
                    to_number: row.try_get("to_number")?,
                    twilio_call_sid: row.try_get("twilio_call_sid")?,
                    call_status: {
                        let raw: String = row.try_get("call_status")?;
                        CallStatus::parse(&raw).ok_or_else(|| decode_error("call_status", &raw))?
                    },
                    ended_reason: match row.try_get::<Option<String>, _>("ended_reason")? {
                        Some(raw) => Some(EndedReason::parse(&raw).ok_or_else(|| decode_error("ended_reason", &raw))?),
                        None => None,
                    },
                    started_at: row.try_get("started_at")?,
                    answered_at: row.try_get("answered_at")?,
                    ended_at: row.try_get("ended_at")?,
                    duration_seconds: row.try_get("duration_seconds")?,
                    transcript,
                    turns,
                    function_calls,
                    provider_events,
                    avg_latency_ms: row.try_get("avg_latency_ms")?,
                    recording: row
                        .try_get::<Option<String>, _>("recording_location")?
                        .map(|location| Ok::<_, sqlx::Error>(nixflex_core::call::StoredRecording {
                            location,
                            duration_s: row.try_get("recording_duration_s")?,
                        }))
                        .transpose()?,
                    call_summary: row.try_get("call_summary")?,
                    caller_sentiment: row.try_get("caller_sentiment")?,
                    call_successful: row.try_get("call_successful")?,
                    extracted_data,
                    voicemail_detected: row.try_get("voicemail_detected")?,
                    campaign_id: row.try_get("campaign_id")?,
                    metadata: metadata.map(|Json(v)| v),
                    cost_usd: row.try_get("cost_usd")?,
                    precall_reject_reason: row.try_get("precall_reject_reason")?,
                    amd_result: row.try_get("amd_result")?,
                    voicemail_detection_method: row.try_get("voicemail_detection_method")?,
                    carrier_details: row.try_get::<Option<Json<Value>>, _>("carrier_details")?.map(|Json(v)| v),
                    stream_token_hash: row.try_get("stream_token_hash")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            pub(super) async fn insert_call_in<'e, E>(executor: E, call: &CallRecord) -> Result<(), StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                sqlx::query(
                    "insert into calls (call_id, account_id, agent_id, direction, from_number, to_number, twilio_call_sid, call_status, \
                     ended_reason, started_at, answered_at, ended_at, duration_seconds, transcript, turns, avg_latency_ms, recording_location, \
                     call_summary, caller_sentiment, call_successful, extracted_data, voicemail_detected, campaign_id, metadata, cost_usd, \
                     precall_reject_reason, stream_token_hash, heartbeat_at, created_at, updated_at, recording_duration_s, function_calls, amd_result, carrier_details, \
                     voicemail_detection_method, provider_events) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36)",
                )
                .bind(call.call_id.as_str())
                .bind(call.account_id.as_str())
                .bind(call.agent_id.as_deref())
                .bind(call.direction.as_str())
                .bind(&call.from_number)
                .bind(&call.to_number)
                .bind(&call.twilio_call_sid)
                .bind(call.call_status.as_str())
                .bind(call.ended_reason.map(EndedReason::as_str))
                .bind(call.started_at)
                .bind(call.answered_at)
                .bind(call.ended_at)
                .bind(call.duration_seconds)
                .bind(Json(&call.transcript))
                .bind(Json(&call.turns))
                .bind(call.avg_latency_ms)
                .bind(call.recording.as_ref().map(|r| r.location.as_str()))
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
                .bind(call.recording.as_ref().and_then(|r| r.duration_s))
                .bind(Json(&call.function_calls))
                .bind(&call.amd_result)
                .bind(call.carrier_details.as_ref().map(Json))
                .bind(&call.voicemail_detection_method)
                .bind(Json(&call.provider_events))
                .execute(executor)
                .await
                .map_err(map_err)?;
                Ok(())
            }

        async fn update_call_in<'e, E>(executor: E, call_id: &CallId, update: &CallUpdate, at: DateTime<Utc>) -> Result<bool, StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
                // Final statuses never change (the list comes from `CallStatus::FINAL`).
                static UPDATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    format!(
                        "update calls set \
                         call_status = case when call_status in {} then call_status else coalesce($2, call_status) end, \
                         ended_reason = coalesce(ended_reason, $3), answered_at = coalesce(answered_at, $4), ended_at = coalesce(ended_at, $5), \
                     duration_seconds = coalesce($6, duration_seconds), transcript = coalesce($7, transcript), turns = coalesce($8, turns), \
                     avg_latency_ms = coalesce($9, avg_latency_ms), heartbeat_at = coalesce($10, heartbeat_at), \
                     twilio_call_sid = coalesce(twilio_call_sid, $11), updated_at = $12, \
                     stream_token_hash = coalesce($13, stream_token_hash), \
                     function_calls = coalesce($14, function_calls), amd_result = coalesce($15, amd_result), \
                     carrier_details = coalesce(carrier_details, $16), \
                     voicemail_detected = coalesce($17, voicemail_detected), \
                     voicemail_detection_method = coalesce($18, voicemail_detection_method), \
                     billable_seconds = coalesce($19, billable_seconds), \
                     provider_events = coalesce($20, provider_events) \
                     where call_id = $1",
                        CallStatus::sql_list(CallStatus::FINAL)
                    )
                });
                let done = sqlx::query(sqlx::AssertSqlSafe(UPDATE.as_str()))
                .bind(call_id.as_str())
                .bind(update.call_status.map(CallStatus::as_str))
                .bind(update.ended_reason.map(EndedReason::as_str))
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
                .bind(update.function_calls.as_ref().map(Json))
                .bind(&update.amd_result)
                .bind(update.carrier_details.as_ref().map(Json))
                .bind(update.voicemail_detected)
                .bind(&update.voicemail_detection_method)
                .bind(update.billable_seconds)
                .bind(update.provider_events.as_ref().map(Json))
                .execute(executor)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            #[async_trait]
            impl crate::CallRepo for $store {
                async fn admit_call(&self, call: &CallRecord, cap: i64, alive_after: DateTime<Utc>) -> Result<Admission, StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    if let Some(lock) = Self::LOCK_ACCOUNT {
                        sqlx::query(lock).bind(call.account_id.as_str()).execute(&mut *tx).await.map_err(map_err)?;
                    }
                    static LIVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                        format!(
                            "select count(*) from calls where account_id = $1 and call_status in {} \
                             and coalesce(heartbeat_at, created_at) >= $2",
                            CallStatus::sql_list(CallStatus::LIVE)
                        )
                    });
                    let active: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(LIVE.as_str()))
                    .bind(call.account_id.as_str())
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
                    insert_call_in(&mut *self.write().await?, call).await
                }

                async fn insert_calls(&self, calls: &[CallRecord]) -> Result<(), StoreError> {
                    let (mut tx, _turn) = self.begin_write().await?;
                    for call in calls {
                        insert_call_in(&mut *tx, call).await?;
                    }
                    tx.commit().await.map_err(map_err)
                }

                async fn get_call(&self, account_id: &AccountId, call_id: &CallId) -> Result<Option<CallRecord>, StoreError> {
                    let row = sqlx::query("select * from calls where call_id = $1 and account_id = $2")
                        .bind(call_id.as_str())
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| call_from_row(&row)).transpose().map_err(map_err)
                }

                async fn find_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError> {
                    let row = sqlx::query("select * from calls where call_id = $1")
                        .bind(call_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| call_from_row(&row)).transpose().map_err(map_err)
                }

                async fn get_call_by_sid(
                    &self,
                    account_id: &AccountId,
                    twilio_call_sid: &str,
                    business_number: Option<&E164>,
                ) -> Result<Option<CallRecord>, StoreError> {
                    let row = sqlx::query(
                        "select * from calls where twilio_call_sid = $1 and account_id = $2 and ($3 is null \
                         or (direction = 'inbound' and to_number = $3) or (direction = 'outbound' and from_number = $3))",
                    )
                    .bind(twilio_call_sid)
                    .bind(account_id.as_str())
                    .bind(business_number.map(E164::as_str))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                    row.map(|row| call_from_row(&row)).transpose().map_err(map_err)
                }

                async fn list_calls(&self, account_id: &AccountId, filter: &CallFilter, page: Page) -> Result<(Vec<CallRecord>, i64), StoreError> {
                    // Only the filters given become conditions, so each filtered list and its
                    // count use that filter's index (migration 0019), which `($n is null or …)`
                    // would hide from the planner. Values are always bound, never spliced.
                    fn push_filter(query: &mut sqlx::QueryBuilder<$db>, account_id: &AccountId, filter: &CallFilter) {
                        query.push(" where account_id = ").push_bind(account_id.as_str().to_owned());
                        if let Some(agent_id) = &filter.agent_id {
                            query.push(" and agent_id = ").push_bind(agent_id.clone());
                        }
                        if let Some(direction) = filter.direction {
                            query.push(" and direction = ").push_bind(direction.as_str().to_owned());
                        }
                        if let Some(status) = filter.call_status {
                            query.push(" and call_status = ").push_bind(status.as_str().to_owned());
                        }
                        if let Some(from_number) = &filter.from_number {
                            query.push(" and from_number = ").push_bind(from_number.clone());
                        }
                        if let Some(to_number) = &filter.to_number {
                            query.push(" and to_number = ").push_bind(to_number.clone());
                        }
                        if let Some(campaign_id) = &filter.campaign_id {
                            query.push(" and campaign_id = ").push_bind(campaign_id.clone());
                        }
                        if let Some(since) = filter.since {
                            query.push(" and started_at >= ").push_bind(since);
                        }
                        if let Some(until) = filter.until {
                            query.push(" and started_at < ").push_bind(until);
                        }
                        if let Some(sentiment) = &filter.caller_sentiment {
                            query.push(" and caller_sentiment = ").push_bind(sentiment.clone());
                        }
                        if let Some(successful) = filter.call_successful {
                            query.push(" and call_successful = ").push_bind(successful);
                        }
                        if let Some(voicemail) = filter.voicemail_detected {
                            query.push(" and voicemail_detected = ").push_bind(voicemail);
                        }
                    }
                    // The list's total as one scalar expression: the running tallies where one
                    // documented filter is given (migrations 0018 and 0019,
                    // docs/decisions.md#call-tallies), else a count of the matches.
                    fn push_total(query: &mut sqlx::QueryBuilder<$db>, account_id: &AccountId, filter: &CallFilter) {
                        match filter.count_plan() {
                            crate::calls::CountPlan::Account(column) => {
                                query.push(format!("coalesce((select {column} from call_counts where account_id = "));
                                query.push_bind(account_id.as_str().to_owned()).push("), 0)");
                            }
                            crate::calls::CountPlan::Agent(agent_id) => {
                                query.push("coalesce((select total from call_agent_counts where account_id = ");
                                query.push_bind(account_id.as_str().to_owned());
                                query.push(" and agent_id = ").push_bind(agent_id.to_owned()).push("), 0)");
                            }
                            crate::calls::CountPlan::Started { first, end, edges } => {
                                // The whole hours' tallies plus the partial hours' calls.
                                query.push("(cast(coalesce((select sum(total) from call_hour_counts where account_id = ");
                                query.push_bind(account_id.as_str().to_owned());
                                if let Some(first) = first {
                                    query.push(" and hour >= ").push_bind(first);
                                }
                                if let Some(end) = end {
                                    query.push(" and hour < ").push_bind(end);
                                }
                                query.push("), 0) as bigint)");
                                for (since, until) in edges {
                                    query.push(" + (select count(*) from calls");
                                    let edge = CallFilter { since: Some(since), until: Some(until), ..CallFilter::default() };
                                    push_filter(query, account_id, &edge);
                                    query.push(")");
                                }
                                query.push(")");
                            }
                            crate::calls::CountPlan::Exact => {
                                query.push("(select count(*) from calls");
                                push_filter(query, account_id, filter);
                                query.push(")");
                            }
                        }
                    }
                    // The page and its total in one statement (each statement is a hand-over to
                    // a database thread and back); only a page past the end, with no row to
                    // carry the total, asks for it alone. The list leaves transcripts out
                    // (docs/decisions.md#transcript-shapes), so they are not read: an empty one
                    // stands in for the column. Calls are listed by start time, newest first
                    // (docs/api.md#listing-calls), the order every filter's index ends in, so a
                    // page is read in order and the scan stops after it.
                    let mut list = sqlx::QueryBuilder::<$db>::new(LIST_COLUMNS.replace("{empty}", Self::EMPTY_JSON_ARRAY));
                    list.push(", ");
                    push_total(&mut list, account_id, filter);
                    list.push(" as list_total from calls");
                    push_filter(&mut list, account_id, filter);
                    list.push(" order by started_at desc, call_id desc limit ")
                        .push_bind(page.limit)
                        .push(" offset ")
                        .push_bind(page.offset);
                    let rows = list.build().fetch_all(&self.pool).await.map_err(map_err)?;
                    let total: i64 = match rows.first() {
                        Some(row) => row.try_get("list_total").map_err(map_err)?,
                        None => {
                            let mut alone = sqlx::QueryBuilder::<$db>::new("select ");
                            push_total(&mut alone, account_id, filter);
                            alone.build_query_scalar().fetch_one(&self.pool).await.map_err(map_err)?
                        }
                    };
                    let calls = rows.iter().map(call_from_row).collect::<Result<Vec<_>, _>>().map_err(map_err)?;
                    Ok((calls, total))
                }

                async fn update_call(&self, call_id: &CallId, update: &CallUpdate, at: DateTime<Utc>) -> Result<bool, StoreError> {
                    update_call_in(&mut *self.write().await?, call_id, update, at).await
                }

                async fn finish_call(
                    &self,
                    call_id: &CallId,
                    update: &CallUpdate,
                    at: DateTime<Utc>,
                    follow_ups: &[crate::NewJob],
                ) -> Result<bool, StoreError> {
                    // The transactional outbox: the call's end and its follow-ups commit together,
                    // so a crash can neither lose the follow-ups nor queue them for a call that
                    // did not end. Idempotency keys make a second writer's follow-ups no-ops.
                    let (mut tx, _turn) = self.begin_write().await?;
                    if !update_call_in(&mut *tx, call_id, update, at).await? {
                        return Ok(false);
                    }
                    for job in follow_ups {
                        super::jobs_sql::insert_job_in(&mut *tx, job, at).await?;
                    }
                    // A slot may have freed: the account's queued outbound calls are looked at
                    // now rather than at their next re-check (docs/engine.md#capacity-queue).
                    sqlx::query(
                        "update jobs set run_at = $2 where state = 'queued' and kind = 'call.dial' and run_at > $2 \
                         and idempotency_key like 'call.dial:' || (select account_id from calls where call_id = $1) || ':%'",
                    )
                    .bind(call_id.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(true)
                }

                async fn delete_call(&self, account_id: &AccountId, call_id: &CallId) -> Result<bool, StoreError> {
                    let done = sqlx::query("delete from calls where call_id = $1 and account_id = $2")
                        .bind(call_id.as_str())
                        .bind(account_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn delete_all_calls(&self, account_id: &AccountId) -> Result<i64, StoreError> {
                    let done = sqlx::query("delete from calls where account_id = $1")
                        .bind(account_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(i64::try_from(done.rows_affected()).unwrap_or(i64::MAX))
                }

                async fn call_history(
                    &self,
                    account_id: &AccountId,
                    agent_id: &AgentId,
                    business_number: &E164,
                    caller_number: &str,
                    limit: i64,
                ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
                    let rows = sqlx::query($crate::calls::CALL_HISTORY_SQL)
                    .bind(account_id.as_str())
                    .bind(agent_id.as_str())
                    .bind(business_number.as_str())
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

                async fn record_analysis(
                    &self,
                    call_id: &CallId,
                    analysis: &CallAnalysis,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set call_summary = $2, caller_sentiment = $3, call_successful = $4, extracted_data = $5, \
                         updated_at = $6 where call_id = $1",
                    )
                    .bind(call_id.as_str())
                    .bind(&analysis.call_summary)
                    .bind(&analysis.caller_sentiment)
                    .bind(analysis.call_successful)
                    .bind(Json(&analysis.extracted_data))
                    .bind(crate::now())
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn call_usage(
                    &self,
                    account_id: &AccountId,
                    since: Option<DateTime<Utc>>,
                    until: Option<DateTime<Utc>>,
                ) -> Result<CallUsage, StoreError> {
                    static TOTALS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                        format!(
                            "select count(*) as total, \
                             cast(coalesce(sum(case when direction = 'inbound' then 1 else 0 end), 0) as bigint) as inbound, \
                             cast(coalesce(sum(case when direction = 'outbound' then 1 else 0 end), 0) as bigint) as outbound, \
                             cast(coalesce(sum(coalesce(billable_seconds, duration_seconds, 0)), 0) as bigint) as connected_seconds, \
                             cast(coalesce(sum(case when ended_reason = '{}' then 1 else 0 end), 0) as bigint) as rejected_at_cap \
                             from calls where account_id = $1 and ($2 is null or started_at >= $2) and ($3 is null or started_at < $3)",
                            EndedReason::ConcurrentCallLimit.as_str()
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
                    // Each connected call is +1 at its answer and -1 at its end (still-live calls
                    // count as connected now); a running sum over the ordered events is the number
                    // connected at each moment. Ends sort before starts at the same instant.
                    let peak: Option<i64> = sqlx::query_scalar(
                        "select cast(max(level) as bigint) from (select sum(delta) over (order by at, delta rows between unbounded preceding and current row) as level from ( \
                         select answered_at as at, 1 as delta from calls where account_id = $1 and answered_at is not null \
                         and ($2 is null or started_at >= $2) and ($3 is null or started_at < $3) \
                         union all \
                         select coalesce(ended_at, $4) as at, -1 as delta from calls where account_id = $1 and answered_at is not null \
                         and ($2 is null or started_at >= $2) and ($3 is null or started_at < $3)) as events) as levels",
                    )
                    .bind(account_id.as_str())
                    .bind(since)
                    .bind(until)
                    .bind(crate::now())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                    Ok(CallUsage {
                        total: get("total")?,
                        inbound: get("inbound")?,
                        outbound: get("outbound")?,
                        connected_seconds: get("connected_seconds")?,
                        rejected_at_cap: get("rejected_at_cap")?,
                        peak_concurrent: peak.unwrap_or(0).max(0),
                    })
                }
            }
        }
    };
}
pub(crate) use impl_calls;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    /// The history lookup runs before every greeting: it must seek the pair's calls in
    /// `calls_history`, not read the agent's calls (docs/engine.md#history-and-caller-context).
    #[tokio::test]
    async fn the_history_lookup_seeks_the_callers_calls_in_its_index() {
        use sqlx::{Connection as _, Row as _};
        let (url, _guard) = crate::testing::fresh_sqlite_url();
        drop(crate::open(&url, 1).await.unwrap());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(format!("explain query plan {CALL_HISTORY_SQL}")))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let plan: Vec<String> = rows.iter().map(|row| row.get("detail")).collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX calls_history (account_id=? AND <expr>=? AND <expr>=?)"),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn the_history_lookup_seeks_the_callers_calls_in_its_index_on_postgres() {
        use sqlx::Connection as _;
        let url = crate::testing::fresh_postgres_url().await;
        drop(crate::open(&url, 2).await.unwrap());
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        // An empty table is cheapest to scan; forbid that to see which index the query can use.
        sqlx::query("set enable_seqscan = off").execute(&mut conn).await.unwrap();
        sqlx::query("set enable_bitmapscan = off").execute(&mut conn).await.unwrap();
        let explain = format!(
            "explain {}",
            CALL_HISTORY_SQL
                .replace("$1", "'acct'")
                .replace("$2", "'agent'")
                .replace("$3", "'+14155552671'")
                .replace("$4", "'+447386172500'")
                .replace("$5", "2")
        );
        let plan: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(explain)).fetch_all(&mut conn).await.unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using calls_history"), "{plan}");
        assert!(plan.contains("CASE WHEN"), "the pair is the index condition: {plan}");
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, h, m, s).unwrap()
    }

    fn hour_of(t: DateTime<Utc>) -> i64 {
        t.timestamp() / 3600
    }

    fn range(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> CountPlan {
        CallFilter { since, until, ..CallFilter::default() }.count_plan()
    }

    #[test]
    fn one_documented_filter_is_counted_from_the_tallies_and_two_are_counted_outright() {
        let plan = |filter: CallFilter| filter.count_plan();
        assert_eq!(plan(CallFilter::default()), CountPlan::Account("total"));
        assert_eq!(
            plan(CallFilter { direction: Some(Direction::Outbound), ..CallFilter::default() }),
            CountPlan::Account("total - inbound")
        );
        assert_eq!(
            plan(CallFilter { caller_sentiment: Some("neutral".into()), ..CallFilter::default() }),
            CountPlan::Account("neutral")
        );
        assert_eq!(
            plan(CallFilter { caller_sentiment: Some("other".into()), ..CallFilter::default() }),
            CountPlan::Exact,
            "a value without a tally"
        );
        assert_eq!(
            plan(CallFilter { call_successful: Some(false), ..CallFilter::default() }),
            CountPlan::Account("unsuccessful")
        );
        assert_eq!(
            plan(CallFilter { voicemail_detected: Some(false), ..CallFilter::default() }),
            CountPlan::Account("total - voicemail")
        );
        assert_eq!(
            plan(CallFilter { agent_id: Some("a".into()), ..CallFilter::default() }),
            CountPlan::Agent("a".into())
        );
        for undocumented in [
            CallFilter { from_number: Some("+1".into()), ..CallFilter::default() },
            CallFilter { campaign_id: Some("c".into()), ..CallFilter::default() },
            CallFilter { call_status: Some(CallStatus::Completed), ..CallFilter::default() },
        ] {
            assert_eq!(plan(undocumented), CountPlan::Exact);
        }
        assert_eq!(
            plan(CallFilter {
                agent_id: Some("a".into()),
                voicemail_detected: Some(true),
                ..CallFilter::default()
            }),
            CountPlan::Exact
        );
        assert_eq!(
            plan(CallFilter {
                since: Some(at(1, 0, 0)),
                direction: Some(Direction::Inbound),
                ..CallFilter::default()
            }),
            CountPlan::Exact
        );
    }

    #[test]
    fn a_range_is_whole_hours_and_the_partial_hours_at_its_ends() {
        // Aligned on both ends: hours only.
        assert_eq!(
            range(Some(at(1, 0, 0)), Some(at(4, 0, 0))),
            CountPlan::Started {
                first: Some(hour_of(at(1, 0, 0))),
                end: Some(hour_of(at(4, 0, 0))),
                edges: vec![]
            }
        );
        // Ragged ends: the partial hours are counted.
        let since = at(1, 0, 0) + chrono::Duration::nanoseconds(1);
        assert_eq!(
            range(Some(since), Some(at(4, 30, 0))),
            CountPlan::Started {
                first: Some(hour_of(at(2, 0, 0))),
                end: Some(hour_of(at(4, 0, 0))),
                edges: vec![(since, at(2, 0, 0)), (at(4, 0, 0), at(4, 30, 0))]
            }
        );
        // Open ends.
        assert_eq!(
            range(Some(at(1, 15, 0)), None),
            CountPlan::Started {
                first: Some(hour_of(at(2, 0, 0))),
                end: None,
                edges: vec![(at(1, 15, 0), at(2, 0, 0))]
            }
        );
        assert_eq!(
            range(None, Some(at(4, 0, 1))),
            CountPlan::Started {
                first: None,
                end: Some(hour_of(at(4, 0, 0))),
                edges: vec![(at(4, 0, 0), at(4, 0, 1))]
            }
        );
        // No whole hour inside: counted outright (at most two hours of calls).
        assert_eq!(range(Some(at(1, 10, 0)), Some(at(2, 50, 0))), CountPlan::Exact);
        assert_eq!(range(Some(at(1, 0, 0)), Some(at(1, 59, 59))), CountPlan::Exact);
        assert_eq!(range(Some(at(3, 0, 0)), Some(at(1, 0, 0))), CountPlan::Exact, "an empty range");
        // Before the epoch, hours still round down.
        let early = Utc.with_ymd_and_hms(1969, 12, 31, 22, 30, 0).unwrap();
        assert_eq!(
            range(Some(early), None),
            CountPlan::Started {
                first: Some(-1),
                end: None,
                edges: vec![(early, Utc.with_ymd_and_hms(1969, 12, 31, 23, 0, 0).unwrap())]
            }
        );
    }
}
