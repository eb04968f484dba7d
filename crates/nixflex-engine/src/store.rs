//! What a call needs from storage, and nothing more: admission (agent, account, cap, gate),
//! loading a media stream's setup (call, number, agent, history, caller context) and recording
//! the call as it goes. The engine holds `Arc<dyn CallStore>`; the server passes its whole store
//! (every `Store` is a `CallStore`), and the engine's tests an in-memory double that implements
//! just these methods.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::agent::Agent;
use nixflex_core::call::CallRecord;
use nixflex_core::ids::{AccountId, AgentId, CallId, E164};
use nixflex_core::number::PhoneNumber;
use nixflex_store::{
    Account, Admission, ApiKey, CallUpdate, CallerRecord, NewJob, Page, Store, StoreError,
};

/// The storage a call uses. Each method behaves as the store method of the same name.
#[async_trait]
pub trait CallStore: Send + Sync + std::fmt::Debug {
    /// An account (for its concurrent-call cap).
    async fn get_account(&self, account_id: &AccountId) -> Result<Option<Account>, StoreError>;

    /// The account's keys (their secrets sign requests to the customer's endpoints).
    async fn list_keys(
        &self,
        account_id: &AccountId,
        page: Page,
    ) -> Result<(Vec<ApiKey>, i64), StoreError>;

    /// An agent of this account, with its version.
    async fn get_agent(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<(Agent, i64)>, StoreError>;

    /// An agent's pre-call gate: `None` if the agent is not this account's.
    async fn get_agent_precall(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<Option<String>>, StoreError>;

    /// An active number of any account.
    async fn find_active_number(
        &self,
        phone_number: &E164,
    ) -> Result<Option<PhoneNumber>, StoreError>;

    /// One caller-context record.
    async fn get_caller(
        &self,
        phone_number: &E164,
        caller_number: &str,
    ) -> Result<Option<CallerRecord>, StoreError>;

    /// Inserts a call if the account is under `cap` live calls.
    async fn admit_call(
        &self,
        call: &CallRecord,
        cap: i64,
        alive_after: DateTime<Utc>,
    ) -> Result<Admission, StoreError>;

    /// Inserts a call unconditionally.
    async fn insert_call(&self, call: &CallRecord) -> Result<(), StoreError>;

    /// A call of any account.
    async fn find_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError>;

    /// A call of this account by its Twilio SID, optionally only on one business number.
    async fn get_call_by_sid(
        &self,
        account_id: &AccountId,
        twilio_call_sid: &str,
        business_number: Option<&E164>,
    ) -> Result<Option<CallRecord>, StoreError>;

    /// Applies a partial update; false if the call does not exist.
    async fn update_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Applies a call's final update and queues its follow-up jobs in one transaction; false if
    /// the call does not exist.
    async fn finish_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
        follow_ups: &[NewJob],
    ) -> Result<bool, StoreError>;

    /// Queues a job (a no-op when its idempotency key is already queued); true when queued now.
    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError>;

    /// Summaries of the latest calls between a business number and a caller for an agent.
    async fn call_history(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
        business_number: &E164,
        caller_number: &str,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError>;
}

/// The whole store serves as a call's store.
#[async_trait]
impl<S: Store + ?Sized> CallStore for Arc<S> {
    async fn get_account(&self, account_id: &AccountId) -> Result<Option<Account>, StoreError> {
        (**self).get_account(account_id).await
    }

    async fn list_keys(
        &self,
        account_id: &AccountId,
        page: Page,
    ) -> Result<(Vec<ApiKey>, i64), StoreError> {
        (**self).list_keys(account_id, page).await
    }

    async fn get_agent(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<(Agent, i64)>, StoreError> {
        (**self).get_agent(account_id, agent_id).await
    }

    async fn get_agent_precall(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<Option<String>>, StoreError> {
        (**self).get_agent_precall(account_id, agent_id).await
    }

    async fn find_active_number(
        &self,
        phone_number: &E164,
    ) -> Result<Option<PhoneNumber>, StoreError> {
        (**self).find_active_number(phone_number).await
    }

    async fn get_caller(
        &self,
        phone_number: &E164,
        caller_number: &str,
    ) -> Result<Option<CallerRecord>, StoreError> {
        (**self).get_caller(phone_number, caller_number).await
    }

    async fn admit_call(
        &self,
        call: &CallRecord,
        cap: i64,
        alive_after: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        (**self).admit_call(call, cap, alive_after).await
    }

    async fn insert_call(&self, call: &CallRecord) -> Result<(), StoreError> {
        (**self).insert_call(call).await
    }

    async fn find_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        (**self).find_call(call_id).await
    }

    async fn get_call_by_sid(
        &self,
        account_id: &AccountId,
        twilio_call_sid: &str,
        business_number: Option<&E164>,
    ) -> Result<Option<CallRecord>, StoreError> {
        (**self).get_call_by_sid(account_id, twilio_call_sid, business_number).await
    }

    async fn update_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        (**self).update_call(call_id, update, at).await
    }

    async fn finish_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
        follow_ups: &[NewJob],
    ) -> Result<bool, StoreError> {
        (**self).finish_call(call_id, update, at, follow_ups).await
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError> {
        (**self).enqueue_job(job).await
    }

    async fn call_history(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
        business_number: &E164,
        caller_number: &str,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
        (**self).call_history(account_id, agent_id, business_number, caller_number, limit).await
    }
}
