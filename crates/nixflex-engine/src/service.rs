//! The call service: admitting a call. Everything that decides whether a call is answered lives
//! here, not in the HTTP handler that received the carrier's webhook: the agent and number
//! checks, the pre-call gate, the per-account concurrent-call cap, speech-recognition pre-warm
//! and the one-time media-stream token. Inbound calls use [`Engine::admit_inbound`]; outbound,
//! batch and transfer legs will use the same service.
//!
//! The carrier handler keeps only HTTP concerns (the signature, TwiML). It passes the number
//! whose auth token verified the request, and that number is the admission's only scope: a
//! retried webhook finds its call only among that account's calls on that number
//! (docs/carrier-webhooks.md).

use std::time::Duration;

use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason};
use nixflex_core::crypto::hash_secret;
use nixflex_core::ids::{self, AccountId, AgentId, CallId};
use nixflex_core::number::PhoneNumber;
use nixflex_store::{CallUpdate, StoreError};

use crate::engine::Engine;

/// The pre-call gate's time limit (docs/engine.md#pre-call-gate).
const GATE_TIMEOUT: Duration = Duration::from_secs(5);

/// An inbound call as the carrier announced it.
#[derive(Debug, Clone, Copy)]
pub struct InboundCall<'a> {
    /// The imported number that was called (whose auth token verified the webhook).
    pub number: &'a PhoneNumber,
    /// The caller's number, as the carrier gave it.
    pub from: &'a str,
    /// The carrier's call SID.
    pub call_sid: Option<&'a str>,
}

/// Why a call was not answered (recorded as the call's `ended_reason` when a record is
/// written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyReason {
    /// The number has no agent, or its agent no longer exists.
    NoAgent,
    /// The number's `inbound_enabled` is off.
    InboundDisabled,
    /// The agent's `is_active` is off.
    AgentInactive,
    /// The customer's pre-call gate said reject.
    PrecallRejected,
    /// The account is at its concurrent-call cap.
    ConcurrentCallLimit,
    /// The server is shutting down.
    ServerDraining,
    /// A retried webhook for a call that has already ended or was refused.
    AlreadyEnded,
    /// The call SID belongs to a call of another number or account; nothing is recorded.
    ForeignCallSid,
    /// The store failed; nothing more could be recorded.
    StoreFailed,
}

impl BusyReason {
    /// The `ended_reason` recorded for this refusal; `None` when nothing is recorded.
    pub fn ended_reason(self) -> Option<EndedReason> {
        match self {
            Self::NoAgent => Some(EndedReason::NoAgent),
            Self::InboundDisabled => Some(EndedReason::InboundDisabled),
            Self::AgentInactive => Some(EndedReason::AgentInactive),
            Self::PrecallRejected => Some(EndedReason::PrecallRejected),
            Self::ConcurrentCallLimit => Some(EndedReason::ConcurrentCallLimit),
            Self::ServerDraining => Some(EndedReason::ServerDraining),
            Self::AlreadyEnded | Self::ForeignCallSid | Self::StoreFailed => None,
        }
    }

    /// A name for logs: the recorded `ended_reason`, or what happened when nothing is recorded.
    pub fn as_str(self) -> &'static str {
        match (self, self.ended_reason()) {
            (_, Some(reason)) => reason.as_str(),
            (Self::AlreadyEnded, None) => "already_ended",
            (Self::ForeignCallSid, None) => "foreign_call_sid",
            (_, None) => "store_failed",
        }
    }
}

/// The outcome of admitting a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Answer with a media stream carrying these parameters.
    Connect {
        /// The call's id.
        call_id: CallId,
        /// The one-time media-stream token (only its hash is stored).
        token: String,
    },
    /// Answer busy (never answered, never charged).
    Busy {
        /// Why.
        reason: BusyReason,
    },
}

impl Engine {
    /// Admits an inbound call: answered when the number has an active agent, inbound calls are
    /// on, the server is not shutting down, the pre-call gate does not reject and the account is
    /// under its concurrent-call cap; otherwise busy, with the refusal recorded. A retried
    /// webhook for a call this number already answered is answered again with a fresh token.
    pub async fn admit_inbound(&self, call: InboundCall<'_>) -> Admission {
        // A retried webhook for a call this number already answered: answer it again with a new
        // token (Twilio streams with the token of the answer it received, so the old one is
        // replaced). Only this number's calls are seen here: another tenant's `CallSid` falls
        // through to a new call, whose insert the unique SID refuses (busy, below).
        if let Some(call_sid) = call.call_sid {
            let number = call.number;
            match self
                .store()
                .get_call_by_sid(&number.account_id, call_sid, Some(&number.phone_number))
                .await
            {
                Ok(Some(existing)) => return self.answer_again(&existing).await,
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(message = "Store failed while answering a call.", error = %error);
                    return busy(BusyReason::StoreFailed);
                }
            }
        }
        if self.is_draining() {
            return self.refuse(&call, None, BusyReason::ServerDraining, None).await;
        }
        let number = call.number;
        let Some(agent_id) = number.agent_id.clone() else {
            return self.refuse(&call, None, BusyReason::NoAgent, None).await;
        };
        if !number.inbound_enabled {
            return self.refuse(&call, Some(agent_id), BusyReason::InboundDisabled, None).await;
        }
        let agent = match self.store().get_agent(&number.account_id, &agent_id).await {
            Ok(Some((agent, _))) => agent,
            Ok(None) => return self.refuse(&call, None, BusyReason::NoAgent, None).await,
            Err(error) => {
                tracing::error!(message = "Store failed while answering a call.", error = %error);
                return busy(BusyReason::StoreFailed);
            }
        };
        if !agent.settings.is_active {
            return self.refuse(&call, Some(agent_id), BusyReason::AgentInactive, None).await;
        }
        // Pre-warm speech recognition while the gate and the carrier do their work.
        let token = ids::new_key_secret();
        let mut record =
            inbound_record(&call, Some(agent_id.clone()), CallStatus::InProgress, None);
        record.stream_token_hash = Some(hash_secret(&token));
        self.prewarm_stt(&record.call_id, crate::session::stt_options(&agent.settings));

        let gate_url = match &number.precall_url {
            Some(url) => Some(url.clone()),
            None => self
                .store()
                .get_agent_precall(&number.account_id, &agent_id)
                .await
                .ok()
                .flatten()
                .flatten(),
        };
        if let Some(url) = gate_url {
            let body = serde_json::json!({
                "event": "call.inbound",
                "from": record.from_number,
                "to": record.to_number,
                "call_id": call.call_sid.unwrap_or_default(),
            });
            if let Some(reason) = self.gate_says_reject(&number.account_id, &url, body).await {
                self.forget_prewarmed(&record.call_id);
                return self
                    .refuse(&call, Some(agent_id), BusyReason::PrecallRejected, reason)
                    .await;
            }
        }

        let account = self.store().get_account(&number.account_id).await.ok().flatten();
        let cap = account
            .and_then(|a| a.max_concurrent_calls)
            .unwrap_or(self.config().default_max_concurrent_calls);
        let alive_after = chrono::Utc::now()
            - chrono::Duration::from_std(self.config().heartbeat_stale_after).unwrap_or_default();
        record.started_at = nixflex_store::now();
        match self.store().admit_call(&record, cap, alive_after).await {
            Ok(nixflex_store::Admission::Admitted) => {}
            Ok(nixflex_store::Admission::AtCapacity { active }) => {
                self.forget_prewarmed(&record.call_id);
                tracing::info!(message = "Account at its concurrent-call cap.", account_id = %number.account_id, active, cap);
                return self
                    .refuse(&call, Some(agent_id), BusyReason::ConcurrentCallLimit, None)
                    .await;
            }
            Err(StoreError::Conflict { .. }) => {
                // The SID is a call of another number or account (a retry would have found its
                // own call above): nothing of that call is touched or revealed.
                self.forget_prewarmed(&record.call_id);
                tracing::warn!(
                    message = "Voice webhook names a CallSid this number does not own; refused."
                );
                return busy(BusyReason::ForeignCallSid);
            }
            Err(error) => {
                self.forget_prewarmed(&record.call_id);
                tracing::error!(message = "Store failed while admitting a call.", error = %error);
                return busy(BusyReason::StoreFailed);
            }
        }
        tracing::info!(message = "Inbound call answered.", call_id = %record.call_id, agent_id = %agent_id);
        Admission::Connect { call_id: record.call_id, token }
    }

    /// Answers a retried voice webhook of `call` (this number's) again, with a new stream token.
    async fn answer_again(&self, call: &CallRecord) -> Admission {
        if call.ended_at.is_some() || call.call_status == CallStatus::Busy {
            return busy(BusyReason::AlreadyEnded);
        }
        let token = ids::new_key_secret();
        let update =
            CallUpdate { stream_token_hash: Some(hash_secret(&token)), ..CallUpdate::default() };
        match self.store().update_call(&call.call_id, &update, nixflex_store::now()).await {
            Ok(true) => {
                tracing::info!(message = "Retried voice webhook answered again.", call_id = %call.call_id);
                Admission::Connect { call_id: call.call_id.clone(), token }
            }
            Ok(false) => busy(BusyReason::AlreadyEnded),
            Err(error) => {
                tracing::error!(message = "Store failed while answering a retried call.", error = %error);
                busy(BusyReason::StoreFailed)
            }
        }
    }

    /// Records a refused call (status `busy`, its reason as `ended_reason`) and answers busy.
    async fn refuse(
        &self,
        call: &InboundCall<'_>,
        agent_id: Option<AgentId>,
        reason: BusyReason,
        detail: Option<String>,
    ) -> Admission {
        let mut record = inbound_record(call, agent_id, CallStatus::Busy, reason.ended_reason());
        record.precall_reject_reason = detail;
        if let Err(error) = self.store().insert_call(&record).await {
            tracing::warn!(message = "Could not record a refused call.", error = %error);
        }
        tracing::info!(message = "Inbound call refused with busy.", reason = reason.as_str(), call_id = %record.call_id);
        busy(reason)
    }

    /// Asks the customer's pre-call gate; only an explicit `{"action": "reject"}` blocks (with
    /// its reason, if any), and any failure lets the call through (fail-open,
    /// docs/engine.md#pre-call-gate).
    async fn gate_says_reject(
        &self,
        account_id: &AccountId,
        url: &str,
        body: serde_json::Value,
    ) -> Option<Option<String>> {
        let secrets = self.account_secrets(account_id).await;
        let response = match self.customer().post_signed(url, &body, &secrets, GATE_TIMEOUT).await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                tracing::warn!(
                    message = "Pre-call gate answered an error; connecting (fail-open).",
                    status = response.status().as_u16()
                );
                return None;
            }
            Err(error) => {
                tracing::warn!(message = "Pre-call gate unreachable; connecting (fail-open).", error = %error);
                return None;
            }
        };
        let Ok(answer) =
            tokio::time::timeout(GATE_TIMEOUT, response.json::<serde_json::Value>()).await
        else {
            return None;
        };
        let answer = answer.ok()?;
        if answer
            .get("action")
            .and_then(|a| a.as_str())
            .is_some_and(|a| a.eq_ignore_ascii_case("reject"))
        {
            Some(
                answer
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .map(|r| r.chars().take(500).collect()),
            )
        } else {
            None
        }
    }

    /// The raw secrets of the account's active keys, which sign requests to its endpoints.
    async fn account_secrets(&self, account_id: &AccountId) -> Vec<String> {
        let Ok(keys) = self.store().active_keys(account_id).await else {
            return Vec::new();
        };
        keys.iter().filter_map(|k| self.secrets().open(&k.secret_sealed).ok()).collect()
    }
}

fn busy(reason: BusyReason) -> Admission {
    Admission::Busy { reason }
}

/// A call record for an inbound call; `status` and `ended_reason` say what happened to it.
fn inbound_record(
    call: &InboundCall<'_>,
    agent_id: Option<AgentId>,
    status: CallStatus,
    ended_reason: Option<EndedReason>,
) -> CallRecord {
    let now = nixflex_store::now();
    let ended = ended_reason.is_some();
    CallRecord {
        call_id: ids::new_call_id(),
        account_id: call.number.account_id.clone(),
        agent_id,
        direction: Direction::Inbound,
        from_number: call.from.to_owned(),
        to_number: call.number.phone_number.to_string(),
        twilio_call_sid: call.call_sid.map(str::to_owned),
        call_status: status,
        ended_reason,
        started_at: now,
        answered_at: None,
        ended_at: ended.then_some(now),
        duration_seconds: ended.then_some(0),
        transcript: Vec::new(),
        turns: Vec::new(),
        avg_latency_ms: None,
        recording: None,
        call_summary: None,
        caller_sentiment: None,
        call_successful: None,
        extracted_data: serde_json::Map::new(),
        voicemail_detected: false,
        campaign_id: None,
        metadata: None,
        cost_usd: None,
        function_calls: Vec::new(),
        provider_events: Vec::new(),
        precall_reject_reason: None,
        amd_result: None,
        voicemail_detection_method: None,
        carrier_details: None,
        stream_token_hash: None,
        created_at: now,
        updated_at: now,
    }
}
