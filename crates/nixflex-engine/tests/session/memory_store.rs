//! The parts of the store a media session uses, in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use nixflex_core::agent::Agent;
use nixflex_core::call::CallRecord;
use nixflex_core::number::PhoneNumber;
use nixflex_core::validate::ValidationError;
use nixflex_store::{
    Account, AccountRepo, Admission, AgentRepo, ApiKey, CallFilter, CallRepo, CallUpdate,
    CallerRecord, GuardRepo, IdempotencyBegin, IdempotencyScope, KeyWithAccount, NumberRepo,
    NumberUrlSlot, Page, RevokeOutcome, Store, StoreError, StoredResponse,
};
use serde_json::{Map, Value};

/// The parts of the store a media session uses, in memory: under paused time a real database
/// would let the clock jump while a query runs. Everything else refuses.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub calls: Mutex<HashMap<String, CallRecord>>,
    pub numbers: Mutex<HashMap<String, PhoneNumber>>,
    pub agents: Mutex<HashMap<String, Agent>>,
}

fn refused<T>() -> Result<T, StoreError> {
    Err(StoreError::Other(anyhow::anyhow!("not part of the in-memory test store")))
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        refused()
    }

    async fn meta_get_or_put(&self, _key: &str, _value: &str) -> Result<String, StoreError> {
        refused()
    }
}

#[async_trait::async_trait]
impl AccountRepo for MemoryStore {
    async fn create_account(&self, _account: &Account, _key: &ApiKey) -> Result<(), StoreError> {
        refused()
    }

    async fn get_account(&self, _account_id: &str) -> Result<Option<Account>, StoreError> {
        refused()
    }

    async fn set_account_limits(
        &self,
        _account_id: &str,
        _max_concurrent_calls: Option<i64>,
        _rate_limit_reads: Option<i64>,
        _rate_limit_writes: Option<i64>,
    ) -> Result<(), StoreError> {
        refused()
    }

    async fn insert_key(&self, _key: &ApiKey) -> Result<(), StoreError> {
        refused()
    }

    async fn get_key(&self, _key_id: &str) -> Result<Option<KeyWithAccount>, StoreError> {
        refused()
    }

    async fn list_keys(
        &self,
        _account_id: &str,
        _page: Page,
    ) -> Result<(Vec<ApiKey>, i64), StoreError> {
        refused()
    }

    async fn revoke_key(
        &self,
        _account_id: &str,
        _key_id: &str,
        _at: DateTime<Utc>,
    ) -> Result<RevokeOutcome, StoreError> {
        refused()
    }

    async fn rotate_key(
        &self,
        _key_id: &str,
        _secret_hash: &str,
        _secret_sealed: &str,
        _at: DateTime<Utc>,
    ) -> Result<ApiKey, StoreError> {
        refused()
    }
}

#[async_trait::async_trait]
impl AgentRepo for MemoryStore {
    async fn insert_agent(&self, _agent: &Agent) -> Result<(), StoreError> {
        refused()
    }

    async fn get_agent(
        &self,
        account_id: &str,
        agent_id: &str,
    ) -> Result<Option<(Agent, i64)>, StoreError> {
        Ok(self
            .agents
            .lock()
            .unwrap()
            .get(agent_id)
            .filter(|a| a.account_id == account_id)
            .cloned()
            .map(|a| (a, 1)))
    }

    async fn agent_owner(&self, _agent_id: &str) -> Result<Option<String>, StoreError> {
        refused()
    }

    async fn list_agents(
        &self,
        _account_id: &str,
        _is_active: Option<bool>,
        _page: Page,
    ) -> Result<(Vec<Agent>, i64), StoreError> {
        refused()
    }

    async fn modify_agent(
        &self,
        _account_id: &str,
        _agent_id: &str,
        _edit: &mut (dyn for<'a> FnMut(&'a Agent) -> Result<Agent, ValidationError> + Send),
    ) -> Result<Option<Result<Agent, ValidationError>>, StoreError> {
        refused()
    }

    async fn delete_agent(&self, _account_id: &str, _agent_id: &str) -> Result<bool, StoreError> {
        refused()
    }

    async fn set_agent_precall(
        &self,
        _account_id: &str,
        _agent_id: &str,
        _url: Option<&str>,
    ) -> Result<bool, StoreError> {
        refused()
    }

    async fn get_agent_precall(
        &self,
        _account_id: &str,
        _agent_id: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        refused()
    }
}

#[async_trait::async_trait]
impl NumberRepo for MemoryStore {
    async fn reserve_number(
        &self,
        _number: &PhoneNumber,
        _previous_twilio_config: &Value,
        _stale_before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        refused()
    }

    async fn activate_number(&self, _phone_number: &str) -> Result<(), StoreError> {
        refused()
    }

    async fn release_number(&self, _phone_number: &str) -> Result<(), StoreError> {
        refused()
    }

    async fn number_taken(
        &self,
        _phone_number: &str,
        _stale_before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        refused()
    }

    async fn get_number(
        &self,
        _account_id: &str,
        _phone_number: &str,
    ) -> Result<Option<(PhoneNumber, i64)>, StoreError> {
        refused()
    }

    async fn find_active_number(
        &self,
        phone_number: &str,
    ) -> Result<Option<PhoneNumber>, StoreError> {
        Ok(self.numbers.lock().unwrap().get(phone_number).cloned())
    }

    async fn list_numbers(
        &self,
        _account_id: &str,
        _agent_id: Option<&str>,
        _page: Page,
    ) -> Result<(Vec<PhoneNumber>, i64), StoreError> {
        refused()
    }

    async fn update_number(
        &self,
        _number: &PhoneNumber,
        _expected_version: i64,
    ) -> Result<(), StoreError> {
        refused()
    }

    async fn delete_number(
        &self,
        _account_id: &str,
        _phone_number: &str,
    ) -> Result<bool, StoreError> {
        refused()
    }

    async fn set_number_url(
        &self,
        _account_id: &str,
        _phone_number: &str,
        _slot: NumberUrlSlot,
        _url: Option<&str>,
    ) -> Result<bool, StoreError> {
        refused()
    }

    async fn get_caller(
        &self,
        _phone_number: &str,
        _caller_number: &str,
    ) -> Result<Option<CallerRecord>, StoreError> {
        Ok(None)
    }

    async fn upsert_callers(
        &self,
        _phone_number: &str,
        _patches: &[(String, Map<String, Value>)],
        _at: DateTime<Utc>,
    ) -> Result<Vec<CallerRecord>, StoreError> {
        refused()
    }

    async fn delete_caller(
        &self,
        _phone_number: &str,
        _caller_number: &str,
    ) -> Result<bool, StoreError> {
        refused()
    }
}

#[async_trait::async_trait]
impl CallRepo for MemoryStore {
    async fn admit_call(
        &self,
        _call: &CallRecord,
        _cap: i64,
        _alive_after: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        refused()
    }

    async fn insert_call(&self, _call: &CallRecord) -> Result<(), StoreError> {
        refused()
    }

    async fn get_call(
        &self,
        _account_id: &str,
        _call_id: &str,
    ) -> Result<Option<CallRecord>, StoreError> {
        refused()
    }

    async fn find_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        Ok(self.calls.lock().unwrap().get(call_id).cloned())
    }

    async fn get_call_by_sid(
        &self,
        _account_id: &str,
        _twilio_call_sid: &str,
        _business_number: Option<&str>,
    ) -> Result<Option<CallRecord>, StoreError> {
        refused()
    }

    async fn list_calls(
        &self,
        _account_id: &str,
        _filter: &CallFilter,
        _page: Page,
    ) -> Result<(Vec<CallRecord>, i64), StoreError> {
        refused()
    }

    async fn update_call(
        &self,
        call_id: &str,
        update: &CallUpdate,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut calls = self.calls.lock().unwrap();
        let Some(call) = calls.get_mut(call_id) else { return Ok(false) };
        if !call.call_status.is_final()
            && let Some(status) = &update.call_status
        {
            call.call_status = *status;
        }
        if call.ended_reason.is_none() {
            call.ended_reason.clone_from(&update.ended_reason);
        }
        if call.answered_at.is_none() {
            call.answered_at = update.answered_at;
        }
        if call.ended_at.is_none() {
            call.ended_at = update.ended_at;
        }
        if let Some(d) = update.duration_seconds {
            call.duration_seconds = Some(d);
        }
        if let Some(t) = &update.transcript {
            call.transcript.clone_from(t);
        }
        if let Some(t) = &update.turns {
            call.turns.clone_from(t);
        }
        if let Some(a) = update.avg_latency_ms {
            call.avg_latency_ms = Some(a);
        }
        if let Some(hash) = &update.stream_token_hash {
            call.stream_token_hash = Some(hash.clone());
        }
        call.updated_at = at;
        Ok(true)
    }

    async fn delete_call(&self, _account_id: &str, _call_id: &str) -> Result<bool, StoreError> {
        refused()
    }

    async fn delete_all_calls(&self, _account_id: &str) -> Result<i64, StoreError> {
        refused()
    }

    async fn call_history(
        &self,
        _account_id: &str,
        _agent_id: &str,
        _business_number: &str,
        _caller_number: &str,
        _limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
        Ok(Vec::new())
    }
}

#[async_trait::async_trait]
impl GuardRepo for MemoryStore {
    async fn rate_limit_hit(
        &self,
        _bucket: &str,
        _window_start: i64,
        _expires_at: i64,
    ) -> Result<i64, StoreError> {
        refused()
    }

    async fn purge_rate_limits(&self, _now: i64) -> Result<u64, StoreError> {
        refused()
    }

    async fn idempotency_begin(
        &self,
        _scope: &IdempotencyScope,
        _fingerprint: &str,
        _now: i64,
        _lease_until: i64,
        _expired_before: i64,
    ) -> Result<IdempotencyBegin, StoreError> {
        refused()
    }

    async fn idempotency_complete(
        &self,
        _scope: &IdempotencyScope,
        _response: &StoredResponse,
    ) -> Result<(), StoreError> {
        refused()
    }

    async fn idempotency_abandon(&self, _scope: &IdempotencyScope) -> Result<(), StoreError> {
        refused()
    }

    async fn purge_idempotency(&self, _before: i64) -> Result<u64, StoreError> {
        refused()
    }
}
