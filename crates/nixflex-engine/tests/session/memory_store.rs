//! The storage a call uses, in memory: under paused time a real database would let the clock
//! jump while a query runs. It implements the engine's narrow `CallStore`, every method for real.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use nixflex_core::agent::Agent;
use nixflex_core::call::StoredRecording;
use nixflex_core::call::{CallRecord, CallStatus};
use nixflex_core::ids::{AccountId, AgentId, CallId, E164};
use nixflex_core::number::PhoneNumber;
use nixflex_engine::CallStore;
use nixflex_store::{
    Account, AccountStorage, Admission, ApiKey, CallUpdate, CallerRecord, ExpiredRecording, NewJob,
    RecordingRepo, StoreError,
};

/// Calls, numbers, agents and keys in memory. Accounts are not kept: accounts have no limit
/// overrides (the engine's default cap applies).
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub calls: Mutex<HashMap<String, CallRecord>>,
    pub numbers: Mutex<HashMap<String, PhoneNumber>>,
    pub agents: Mutex<HashMap<String, Agent>>,
    /// The account's keys (their secrets sign requests to custom functions).
    pub keys: Mutex<Vec<ApiKey>>,
    /// Jobs queued: `call.started` at stream start, follow-ups with calls' final updates (once
    /// per idempotency key).
    pub follow_ups: Mutex<Vec<NewJob>>,
    /// For each final update: whether the call already had its recording then.
    pub recording_at_finish: Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl CallStore for MemoryStore {
    async fn get_account(&self, _account_id: &AccountId) -> Result<Option<Account>, StoreError> {
        Ok(None)
    }

    async fn active_keys(&self, _account_id: &AccountId) -> Result<Vec<ApiKey>, StoreError> {
        let keys = self.keys.lock().unwrap().clone();
        Ok(keys.into_iter().filter(|key| key.revoked_at.is_none()).collect())
    }

    async fn get_agent(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<(Agent, i64)>, StoreError> {
        Ok(self
            .agents
            .lock()
            .unwrap()
            .get(agent_id.as_str())
            .filter(|a| &a.account_id == account_id)
            .cloned()
            .map(|a| (a, 1)))
    }

    async fn get_agent_precall(
        &self,
        account_id: &AccountId,
        agent_id: &AgentId,
    ) -> Result<Option<Option<String>>, StoreError> {
        let agents = self.agents.lock().unwrap();
        Ok(agents.get(agent_id.as_str()).filter(|a| &a.account_id == account_id).map(|_| None))
    }

    async fn find_active_number(
        &self,
        phone_number: &E164,
    ) -> Result<Option<PhoneNumber>, StoreError> {
        Ok(self.numbers.lock().unwrap().get(phone_number.as_str()).cloned())
    }

    async fn get_caller(
        &self,
        _phone_number: &E164,
        _caller_number: &str,
    ) -> Result<Option<CallerRecord>, StoreError> {
        Ok(None)
    }

    async fn admit_call(
        &self,
        call: &CallRecord,
        cap: i64,
        alive_after: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        let mut calls = self.calls.lock().unwrap();
        let active = calls
            .values()
            .filter(|c| c.account_id == call.account_id)
            .filter(|c| CallStatus::LIVE.contains(&c.call_status))
            .filter(|c| c.updated_at >= alive_after)
            .count();
        let active = i64::try_from(active).unwrap_or(i64::MAX);
        if active >= cap {
            return Ok(Admission::AtCapacity { active });
        }
        calls.insert(call.call_id.to_string(), call.clone());
        Ok(Admission::Admitted)
    }

    async fn insert_call(&self, call: &CallRecord) -> Result<(), StoreError> {
        let mut calls = self.calls.lock().unwrap();
        let duplicate_sid = call.twilio_call_sid.is_some()
            && calls.values().any(|c| c.twilio_call_sid == call.twilio_call_sid);
        if duplicate_sid || calls.contains_key(call.call_id.as_str()) {
            return Err(StoreError::Conflict { constraint: "unique" });
        }
        calls.insert(call.call_id.to_string(), call.clone());
        Ok(())
    }

    async fn find_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        Ok(self.calls.lock().unwrap().get(call_id.as_str()).cloned())
    }

    async fn get_call_by_sid(
        &self,
        account_id: &AccountId,
        twilio_call_sid: &str,
        business_number: Option<&E164>,
    ) -> Result<Option<CallRecord>, StoreError> {
        let calls = self.calls.lock().unwrap();
        Ok(calls
            .values()
            .filter(|c| &c.account_id == account_id)
            .filter(|c| c.twilio_call_sid.as_deref() == Some(twilio_call_sid))
            .find(|c| business_number.is_none_or(|n| *n == c.to_number || *n == c.from_number))
            .cloned())
    }

    async fn update_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut calls = self.calls.lock().unwrap();
        let Some(call) = calls.get_mut(call_id.as_str()) else { return Ok(false) };
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
        if let Some(events) = &update.provider_events {
            call.provider_events.clone_from(events);
        }
        if let Some(f) = &update.function_calls {
            call.function_calls.clone_from(f);
        }
        if let Some(a) = update.avg_latency_ms {
            call.avg_latency_ms = Some(a);
        }
        if call.twilio_call_sid.is_none() {
            call.twilio_call_sid.clone_from(&update.twilio_call_sid);
        }
        if let Some(hash) = &update.stream_token_hash {
            call.stream_token_hash = Some(hash.clone());
        }
        call.updated_at = at;
        Ok(true)
    }

    async fn finish_call(
        &self,
        call_id: &CallId,
        update: &CallUpdate,
        at: DateTime<Utc>,
        follow_ups: &[NewJob],
    ) -> Result<bool, StoreError> {
        if !self.update_call(call_id, update, at).await? {
            return Ok(false);
        }
        let recorded =
            self.calls.lock().unwrap().get(call_id.as_str()).is_some_and(|c| c.recording.is_some());
        self.recording_at_finish.lock().unwrap().push(recorded);
        let mut queued = self.follow_ups.lock().unwrap();
        for job in follow_ups {
            if !queued.iter().any(|q| q.idempotency_key == job.idempotency_key) {
                queued.push(job.clone());
            }
        }
        Ok(true)
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<bool, StoreError> {
        let mut queued = self.follow_ups.lock().unwrap();
        if queued.iter().any(|q| q.idempotency_key == job.idempotency_key) {
            return Ok(false);
        }
        queued.push(job.clone());
        Ok(true)
    }

    async fn call_history(
        &self,
        _account_id: &AccountId,
        _agent_id: &AgentId,
        _business_number: &E164,
        _caller_number: &str,
        _limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, String)>, StoreError> {
        Ok(Vec::new())
    }
}

/// Recording locations on the calls in memory; no account has its own bucket.
#[async_trait::async_trait]
impl RecordingRepo for MemoryStore {
    async fn set_call_recording(
        &self,
        call_id: &CallId,
        recording: &StoredRecording,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut calls = self.calls.lock().unwrap();
        let Some(call) = calls.get_mut(call_id.as_str()) else { return Ok(false) };
        call.recording = Some(recording.clone());
        call.updated_at = at;
        Ok(true)
    }

    async fn clear_call_recording(
        &self,
        call_id: &CallId,
        location: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut calls = self.calls.lock().unwrap();
        let Some(call) = calls.get_mut(call_id.as_str()) else { return Ok(false) };
        if call.recording.as_ref().is_none_or(|r| r.location != location) {
            return Ok(false);
        }
        call.recording = None;
        call.updated_at = at;
        Ok(true)
    }

    async fn set_carrier_recording(
        &self,
        _call_id: &CallId,
        _recording_sid: &str,
        _at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn clear_carrier_recording(
        &self,
        _call_id: &CallId,
        _recording_sid: &str,
        _at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn carrier_recording(&self, _call_id: &CallId) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    async fn account_recordings(
        &self,
        _account_id: &AccountId,
    ) -> Result<Vec<ExpiredRecording>, StoreError> {
        Ok(Vec::new())
    }

    async fn expired_recordings(
        &self,
        _before: DateTime<Utc>,
        _limit: i64,
    ) -> Result<Vec<ExpiredRecording>, StoreError> {
        Ok(Vec::new())
    }

    async fn account_storage(
        &self,
        _account_id: &AccountId,
    ) -> Result<Option<AccountStorage>, StoreError> {
        Ok(None)
    }

    async fn put_account_storage(&self, _storage: &AccountStorage) -> Result<(), StoreError> {
        Ok(())
    }

    async fn delete_account_storage(&self, _account_id: &AccountId) -> Result<bool, StoreError> {
        Ok(false)
    }
}
