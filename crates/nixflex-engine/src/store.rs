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
    Account, Admission, ApiKey, CallUpdate, CallerRecord, NewJob, OutboundDetails, Page, Store,
    StoreError,
};

fn unsupported() -> StoreError {
    StoreError::Other(anyhow::anyhow!("this store does not hold outbound calls"))
}

/// The storage a call uses. Each method behaves as the store method of the same name.
#[async_trait]
pub trait CallStore: Send + Sync + std::fmt::Debug {
    /// An account (for its concurrent-call cap).
    async fn get_account(&self, account_id: &AccountId) -> Result<Option<Account>, StoreError>;

    /// The account's active keys (their secrets sign requests to the customer's endpoints).
    async fn active_keys(&self, account_id: &AccountId) -> Result<Vec<ApiKey>, StoreError>;

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

    /// The account's active numbers of one agent, newest first (outbound caller-ID choice).
    async fn agent_numbers(
        &self,
        _account_id: &AccountId,
        _agent_id: &AgentId,
    ) -> Result<Vec<PhoneNumber>, StoreError> {
        Err(unsupported())
    }

    /// Inserts a queued outbound call, its details and its dial job together.
    async fn queue_outbound_call(
        &self,
        _call: &CallRecord,
        _details: &OutboundDetails,
        _dial_job: &NewJob,
    ) -> Result<(), StoreError> {
        Err(unsupported())
    }

    /// An outbound call's details (its sealed purpose, voicemail overrides).
    async fn get_outbound(&self, _call_id: &CallId) -> Result<Option<OutboundDetails>, StoreError> {
        Ok(None)
    }

    /// Takes the account's oldest queued calls while it is under `cap` (see the store).
    async fn claim_queued_calls(
        &self,
        _account_id: &AccountId,
        _cap: i64,
        _alive_after: DateTime<Utc>,
        _now: DateTime<Utc>,
        _limit: i64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        Err(unsupported())
    }

    /// Puts a claimed call the carrier did not place back in the queue.
    async fn requeue_call(
        &self,
        _call_id: &CallId,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Err(unsupported())
    }

    /// Ends a call that is still queued, with its follow-ups.
    async fn end_queued_call(
        &self,
        _call_id: &CallId,
        _update: &CallUpdate,
        _at: DateTime<Utc>,
        _follow_ups: &[NewJob],
    ) -> Result<bool, StoreError> {
        Err(unsupported())
    }

    /// The account's own LLM (docs/providers.md#bring-your-own-llm-and-tts); stores without
    /// accounts' providers have none.
    async fn account_llm(
        &self,
        _account_id: &AccountId,
    ) -> Result<Option<nixflex_store::AccountLlm>, StoreError> {
        Ok(None)
    }

    /// The account's own speech provider; stores without accounts' providers have none.
    async fn account_tts(
        &self,
        _account_id: &AccountId,
    ) -> Result<Option<nixflex_store::AccountTts>, StoreError> {
        Ok(None)
    }

    /// Reserves the next dial slot of a carrier account (campaign pacing,
    /// docs/campaigns.md#pacing); stores without pacing answer `now`.
    async fn reserve_dial_slot(
        &self,
        _key: &str,
        _interval: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        Ok(now)
    }

    /// Refreshes a claimed campaign call's heartbeat right before its dial request; false when
    /// it is no longer claimed (at `claimed_at`) without a SID (docs/campaigns.md#exactly-once).
    async fn touch_unplaced_call(
        &self,
        _call_id: &CallId,
        _claimed_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// The whole store serves as a call's store.
#[async_trait]
impl<S: Store + ?Sized> CallStore for Arc<S> {
    async fn get_account(&self, account_id: &AccountId) -> Result<Option<Account>, StoreError> {
        (**self).get_account(account_id).await
    }

    async fn active_keys(&self, account_id: &AccountId) -> Result<Vec<ApiKey>, StoreError> {
        (**self).active_keys(account_id).await
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

    async fn agent_numbers(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Vec<PhoneNumber>, StoreError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = Page { limit: 100, offset };
            let (numbers, total) = (**self).list_numbers(account_id, Some(agent_id), page).await?;
            let got = i64::try_from(numbers.len()).unwrap_or(i64::MAX);
            all.extend(numbers);
            offset += got;
            if got == 0 || offset >= total {
                return Ok(all);
            }
        }
    }

    async fn queue_outbound_call(
        &self,
        call: &CallRecord,
        details: &OutboundDetails,
        dial_job: &NewJob,
    ) -> Result<(), StoreError> {
        (**self).queue_outbound_call(call, details, dial_job).await
    }

    async fn get_outbound(&self, call_id: &CallId) -> Result<Option<OutboundDetails>, StoreError> {
        (**self).get_outbound(call_id).await
    }

    async fn claim_queued_calls(
        &self,
        account_id: &AccountId,
        cap: i64,
        alive_after: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        (**self).claim_queued_calls(account_id, cap, alive_after, now, limit).await
    }

    async fn requeue_call(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        (**self).requeue_call(call_id, now).await
    }

    async fn end_queued_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
        follow_ups: &[NewJob],
    ) -> Result<bool, StoreError> {
        (**self).end_queued_call(call_id, update, at, follow_ups).await
    }

    async fn account_llm(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<nixflex_store::AccountLlm>, StoreError> {
        nixflex_store::ProviderSettingsRepo::account_llm(&**self, account_id).await
    }

    async fn account_tts(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<nixflex_store::AccountTts>, StoreError> {
        nixflex_store::ProviderSettingsRepo::account_tts(&**self, account_id).await
    }

    async fn reserve_dial_slot(
        &self,
        key: &str,
        interval: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        nixflex_store::CampaignRepo::reserve_dial_slot(&**self, key, interval, now).await
    }

    async fn touch_unplaced_call(
        &self,
        call_id: &CallId,
        claimed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        nixflex_store::CampaignRepo::touch_unplaced_call(&**self, call_id, claimed_at, now).await
    }
}
