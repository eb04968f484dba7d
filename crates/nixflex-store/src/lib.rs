//! Storage: the repository traits, their SQLite and PostgreSQL implementations, and the
//! conformance suite both must pass.
//!
//! Only this crate touches SQL. The backend is chosen at run time from the database URL
//! ([`open`]); everything above sees `Arc<dyn Store>`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use nixflex_core::agent::Agent;
use nixflex_core::call::{CallRecord, Direction, TranscriptEntry, TurnLatency};
use nixflex_core::number::PhoneNumber;
use nixflex_core::validate::ValidationError;
use serde_json::{Map, Value};

mod postgres;
mod sql;
mod sqlite;
pub mod testing;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness or state constraint was violated.
    #[error("conflict on {constraint}")]
    Conflict {
        /// Which rule (e.g. `primary key`, `version`).
        constraint: &'static str,
    },
    /// The database cannot be reached or is overloaded; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The current time at the precision both databases store (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// An account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// `acct_` + 16 hex.
    pub account_id: String,
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
    pub key_id: String,
    /// Owner.
    pub account_id: String,
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

/// A page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page size (1–100).
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// A stored idempotent response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status_code: u16,
    /// Content-Type of the body.
    pub content_type: Option<String>,
    /// Raw body.
    pub body: Vec<u8>,
}

/// Identity of an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    /// `acct_…` or `ip:<addr>` for unauthenticated requests.
    pub scope: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
}

/// What to do with a request carrying an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time (or the old record expired/was abandoned): run it.
    Started,
    /// Finished earlier with the same request: replay this.
    Replay(StoredResponse),
    /// Same key, different request.
    Mismatch,
    /// The same request is still running elsewhere.
    InFlight,
}

/// A URL slot of a number (API.md §7).
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

/// Filters of `GET /v1/calls` (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallFilter {
    /// Agent.
    pub agent_id: Option<String>,
    /// Direction.
    pub direction: Option<Direction>,
    /// Twilio status.
    pub call_status: Option<String>,
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

/// A partial update of a call. Final statuses never change; `ended_reason`, `answered_at` and
/// `ended_at` keep their first value; other fields are replaced when given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallUpdate {
    /// New status (ignored once the call has a final one).
    pub call_status: Option<String>,
    /// Why it ended (first writer wins).
    pub ended_reason: Option<String>,
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
    /// Mean latency.
    pub avg_latency_ms: Option<f64>,
    /// Media session liveness.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Twilio's SID once known.
    pub twilio_call_sid: Option<String>,
    /// A new media-stream token hash (replaces the old one).
    pub stream_token_hash: Option<String>,
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

/// Every repository, as one object-safe trait.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores `value` under `key` unless the key exists; returns the value now stored.
    async fn meta_get_or_put(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Creates an account and its first key atomically.
    async fn create_account(&self, account: &Account, key: &ApiKey) -> Result<(), StoreError>;

    /// Fetches an account.
    async fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError>;

    /// Sets the per-account limit overrides (admin).
    async fn set_account_limits(
        &self,
        account_id: &str,
        max_concurrent_calls: Option<i64>,
        rate_limit_reads: Option<i64>,
        rate_limit_writes: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Adds a key to an existing account.
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// A key and its account, revoked or not.
    async fn get_key(&self, key_id: &str) -> Result<Option<KeyWithAccount>, StoreError>;

    /// The account's keys, newest first, with the total.
    async fn list_keys(
        &self,
        account_id: &str,
        page: Page,
    ) -> Result<(Vec<ApiKey>, i64), StoreError>;

    /// Revokes a key unless it is the account's last active one (atomic across nodes).
    async fn revoke_key(
        &self,
        account_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Replaces an active key's secret; `NotFound` when unknown or revoked.
    async fn rotate_key(
        &self,
        key_id: &str,
        secret_hash: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<ApiKey, StoreError>;

    /// Inserts a new agent.
    async fn insert_agent(&self, agent: &Agent) -> Result<(), StoreError>;

    /// An agent of this account, with its version (bumped by every edit).
    async fn get_agent(
        &self,
        account_id: &str,
        agent_id: &str,
    ) -> Result<Option<(Agent, i64)>, StoreError>;

    /// Whether an agent exists in any account (for `agent_not_owned` vs `agent_not_found`).
    async fn agent_owner(&self, agent_id: &str) -> Result<Option<String>, StoreError>;

    /// The account's agents, newest first, optionally filtered by `is_active`, with the total.
    async fn list_agents(
        &self,
        account_id: &str,
        is_active: Option<bool>,
        page: Page,
    ) -> Result<(Vec<Agent>, i64), StoreError>;

    /// Edits an agent in one write transaction that holds its row (PostgreSQL `FOR UPDATE`,
    /// SQLite `BEGIN IMMEDIATE`), so concurrent edits queue instead of failing: `edit` sees the
    /// agent as stored and returns the new one, or a validation error that changes nothing.
    /// `None` when the agent is not this account's.
    async fn modify_agent(
        &self,
        account_id: &str,
        agent_id: &str,
        edit: &mut (dyn for<'a> FnMut(&'a Agent) -> Result<Agent, ValidationError> + Send),
    ) -> Result<Option<Result<Agent, ValidationError>>, StoreError>;

    /// Deletes an agent; false when it did not exist in this account.
    async fn delete_agent(&self, account_id: &str, agent_id: &str) -> Result<bool, StoreError>;

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
    async fn activate_number(&self, phone_number: &str) -> Result<(), StoreError>;

    /// Drops a reservation whose import failed.
    async fn release_number(&self, phone_number: &str) -> Result<(), StoreError>;

    /// Whether any account has imported the number or is importing it (fresh reservations).
    async fn number_taken(
        &self,
        phone_number: &str,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// An active number of this account, with its version.
    async fn get_number(
        &self,
        account_id: &str,
        phone_number: &str,
    ) -> Result<Option<(PhoneNumber, i64)>, StoreError>;

    /// An active number of any account (for carrier webhooks).
    async fn find_active_number(
        &self,
        phone_number: &str,
    ) -> Result<Option<PhoneNumber>, StoreError>;

    /// The account's active numbers, newest first, optionally of one agent, with the total.
    async fn list_numbers(
        &self,
        account_id: &str,
        agent_id: Option<&str>,
        page: Page,
    ) -> Result<(Vec<PhoneNumber>, i64), StoreError>;

    /// Writes a number's settings, flags and agent if the version matches.
    async fn update_number(
        &self,
        number: &PhoneNumber,
        expected_version: i64,
    ) -> Result<(), StoreError>;

    /// Deletes a number with its caller context and integrations; false if it was not there.
    async fn delete_number(&self, account_id: &str, phone_number: &str)
    -> Result<bool, StoreError>;

    /// Sets or clears one URL slot of a number; false if the number is not this account's.
    async fn set_number_url(
        &self,
        account_id: &str,
        phone_number: &str,
        slot: NumberUrlSlot,
        url: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Sets or clears an agent's pre-call gate; false if the agent is not this account's.
    async fn set_agent_precall(
        &self,
        account_id: &str,
        agent_id: &str,
        url: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// An agent's pre-call gate: `None` if the agent is not this account's.
    async fn get_agent_precall(
        &self,
        account_id: &str,
        agent_id: &str,
    ) -> Result<Option<Option<String>>, StoreError>;

    /// One caller-context record.
    async fn get_caller(
        &self,
        phone_number: &str,
        caller_number: &str,
    ) -> Result<Option<CallerRecord>, StoreError>;

    /// Applies validated patches (`null` removes a field) to caller records, creating them as
    /// needed, all in one transaction; returns the records as stored.
    async fn upsert_callers(
        &self,
        phone_number: &str,
        patches: &[(String, Map<String, Value>)],
        at: DateTime<Utc>,
    ) -> Result<Vec<CallerRecord>, StoreError>;

    /// Erases one caller record; false if there was none.
    async fn delete_caller(
        &self,
        phone_number: &str,
        caller_number: &str,
    ) -> Result<bool, StoreError>;

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

    /// A call of this account.
    async fn get_call(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<Option<CallRecord>, StoreError>;

    /// A call of any account (engine use).
    async fn find_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError>;

    /// A call of this account by its Twilio SID. With `business_number`, only a call on that
    /// number of the account (inbound to it or outbound from it): carrier webhooks are scoped
    /// to the number whose auth token signed them.
    async fn get_call_by_sid(
        &self,
        account_id: &str,
        twilio_call_sid: &str,
        business_number: Option<&str>,
    ) -> Result<Option<CallRecord>, StoreError>;

    /// The account's calls, newest first, filtered, with the total.
    async fn list_calls(
        &self,
        account_id: &str,
        filter: &CallFilter,
        page: Page,
    ) -> Result<(Vec<CallRecord>, i64), StoreError>;

    /// Applies a partial update; false if the call does not exist.
    async fn update_call(
        &self,
        call_id: &str,
        update: &CallUpdate,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Deletes one call; false if it was not this account's.
    async fn delete_call(&self, account_id: &str, call_id: &str) -> Result<bool, StoreError>;

    /// Deletes all of the account's calls; returns how many.
    async fn delete_all_calls(&self, account_id: &str) -> Result<i64, StoreError>;

    /// Summaries of the latest calls between a business number and a caller for an agent,
    /// newest first (history, ENGINE §16).
    async fn call_history(
        &self,
        account_id: &str,
        agent_id: &str,
        business_number: &str,
        caller_number: &str,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError>;

    /// Counts one request in `bucket`'s fixed window starting at `window_start` (unix seconds)
    /// and returns the count including this one. Atomic across nodes.
    async fn rate_limit_hit(
        &self,
        bucket: &str,
        window_start: i64,
        expires_at: i64,
    ) -> Result<i64, StoreError>;

    /// Deletes counters that expired before `now` (unix seconds).
    async fn purge_rate_limits(&self, now: i64) -> Result<u64, StoreError>;

    /// Claims an idempotency key, or reports why not. `now`/`lease_until`/`expired_before` are
    /// unix seconds: a record created before `expired_before` is treated as absent, and an
    /// in-flight record whose lease has passed was abandoned by a crashed node.
    async fn idempotency_begin(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &str,
        now: i64,
        lease_until: i64,
        expired_before: i64,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Stores the response of a started request.
    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        response: &StoredResponse,
    ) -> Result<(), StoreError>;

    /// Forgets a started request (5xx responses are not stored).
    async fn idempotency_abandon(&self, scope: &IdempotencyScope) -> Result<(), StoreError>;

    /// Deletes records created before `before` (unix seconds).
    async fn purge_idempotency(&self, before: i64) -> Result<u64, StoreError>;
}

/// Opens (creating and migrating) the database named by `url`: `sqlite://path` / `sqlite::memory:`
/// or `postgres://…`.
///
/// # Errors
/// When the URL scheme is unknown, the database cannot be opened, or a migration fails.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, max_connections).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, max_connections).await?))
    } else {
        Err(StoreError::Other(anyhow::anyhow!(
            "unsupported database URL scheme (use sqlite://… or postgres://…)"
        )))
    }
}
