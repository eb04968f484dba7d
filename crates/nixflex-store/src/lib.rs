//! Storage: the repository traits, their SQLite and PostgreSQL implementations, and the
//! conformance suite both must pass.
//!
//! Only this crate touches SQL. The backend is chosen at run time from the database URL
//! ([`open`]); everything above sees `Arc<dyn Store>`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

mod accounts;
mod agents;
mod calls;
mod campaigns;
mod guards;
mod jobs;
mod number_cache;
mod numbers;
mod outbound;
mod postgres;
mod providers;
mod recordings;
mod sms;
mod sms_campaigns;
mod sql;
mod sqlite;
pub mod testing;
mod turns;
mod versions;
mod webhooks;

pub use accounts::{Account, AccountRepo, ApiKey, KeyWithAccount, RevokeOutcome};
pub use agents::AgentRepo;
pub use calls::{Admission, CallAnalysis, CallFilter, CallRepo, CallUpdate, CallUsage};
pub use campaigns::{
    CAMPAIGN_RUN, Campaign, CampaignRepo, EndedRecipientCall, NewRecipient, Recipient,
    RecipientCall, RecipientCounts, Settle, campaign_job,
};
pub use guards::{GuardRepo, IdempotencyBegin, IdempotencyScope, StoredResponse};
pub use jobs::{
    CALL_ENDED, CALL_STARTED, Job, JobCounts, JobFilter, JobRepo, JobState, Lease, NewJob,
};
pub use numbers::{CallerRecord, NumberRepo, NumberUrlSlot};
pub use outbound::{CALL_DIAL, OutboundDetails, OutboundRepo, dial_job};
pub use postgres::PgStore;
pub use providers::{AccountLlm, AccountTts, ProviderSettingsRepo};
pub use recordings::{AccountStorage, ExpiredRecording, RecordingRepo};
pub use sms::{SmsFilter, SmsRepo, SmsUsage};
pub use sms_campaigns::{
    NewSmsRecipient, SmsCampaign, SmsCampaignCounts, SmsCampaignRecipient,
    SmsCampaignRecipientView, SmsCampaignRepo, SmsCampaignWithCounts, campaign_send_key,
};
pub use sqlite::SqliteStore;
pub use turns::background;
pub use webhooks::{WebhookDelivery, WebhookRepo};

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

/// A page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page size (1–100).
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// The whole store: every repository, plus what concerns the database itself. Code that needs
/// only part of it should take the narrower repository trait.
#[async_trait]
pub trait Store:
    AccountRepo
    + AgentRepo
    + NumberRepo
    + CallRepo
    + GuardRepo
    + JobRepo
    + WebhookRepo
    + RecordingRepo
    + OutboundRepo
    + SmsRepo
    + ProviderSettingsRepo
    + SmsCampaignRepo
    + CampaignRepo
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Which backend (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores `value` under `key` unless the key exists; returns the value now stored.
    async fn meta_get_or_put(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Refreshes the query planner's statistics after a bulk load (`ANALYZE`; on PostgreSQL
    /// `VACUUM ANALYZE`, which also marks the new rows visible to index-only scans), what
    /// PostgreSQL's autovacuum would otherwise do only later (`nixflex bench api` seeds).
    async fn analyze(&self) -> Result<(), StoreError>;
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
