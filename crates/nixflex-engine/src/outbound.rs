//! Outbound calls (docs/engine.md#outbound-calls): queueing a call, the capacity queue's dial
//! step, and answering the carrier when the callee picks up.
//!
//! `Engine::queue_outbound` checks the agent and picks the caller ID, then writes the call
//! (`call_status: queued`), its sealed purpose and its `call.dial` job in one transaction. The
//! job (`Engine::dial_queued`) dials the account's oldest queued calls while the account is under
//! its concurrent-call cap — the cap inbound admission counts, under the same account lock — and
//! waits (without spending attempts) while its own call is still queued, up to the queue time
//! limit. A call is claimed (`initiated`) in the database *before* Twilio is asked to place it, so
//! no node dials it twice; a dial whose outcome is unknown (timeout, lost answer) is never
//! repeated: the carrier's callbacks name our call id, so a call Twilio did place is adopted when
//! they arrive, and one it did not place is ended by the stale-call sweeper
//! (docs/decisions.md#dial-idempotency).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason};
use nixflex_core::crypto::hash_secret;
use nixflex_core::ids::{self, AccountId, AgentId, CallId, E164};
use nixflex_core::number::PhoneNumber;
use nixflex_providers::twilio::{
    CallStatusEvent, CallTarget, CreateCall, MachineDetection, TwilioError,
};
use nixflex_store::{CallUpdate, OutboundDetails, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::followup::FollowUpError;
use crate::service::{Admission, BusyReason};

/// Calls one dial job may claim at once (the rest are taken by the next job of the account).
const DIAL_BATCH: i64 = 10;
/// Dial attempts for a call whose create Twilio refused with a transient error (5xx, 429).
const MAX_DIAL_ATTEMPTS: i64 = 3;

/// The purpose of an outbound call: the request's `prompt` and `dynamic_vars`. Kept sealed under
/// the master key until the call's follow-up has run, then erased
/// (docs/decisions.md#outbound-purpose); never returned by the API, never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallPurpose {
    /// What this call is for (with `{key}` placeholders).
    pub prompt: String,
    /// Values for the placeholders.
    #[serde(default)]
    pub dynamic_vars: BTreeMap<String, String>,
}

/// A request to place one outbound call (already validated for shape by the API).
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The account placing it.
    pub account_id: AccountId,
    /// The agent that talks.
    pub agent_id: AgentId,
    /// The number to call (E.164).
    pub to: E164,
    /// The caller ID asked for; `None`: the agent's oldest outbound-enabled number.
    pub from: Option<E164>,
    /// The purpose.
    pub purpose: CallPurpose,
    /// Batch campaign tag.
    pub campaign_id: Option<String>,
    /// Echoed on the call and its webhooks.
    pub metadata: Option<Value>,
    /// `hangup`, `leave_message` or `ignore`.
    pub voicemail_action: Option<String>,
    /// Voicemail message override.
    pub voicemail_message: Option<String>,
}

/// Why an outbound call was not queued.
#[derive(Debug, thiserror::Error)]
pub enum OutboundRefused {
    /// No such agent in the account.
    #[error("no such agent")]
    AgentNotFound,
    /// The agent's `is_active` is off.
    #[error("the agent is inactive")]
    AgentInactive,
    /// The agent has no outbound-enabled number.
    #[error("the agent has no outbound-enabled number")]
    NoOutboundNumber,
    /// `from` is not a number of this account.
    #[error("the from number is not imported to this account")]
    FromNumberNotOwned,
    /// `from` is the account's but not one of this agent's outbound-enabled numbers.
    #[error("the from number is not one of the agent's outbound-enabled numbers")]
    FromNumberNotUsable,
    /// The server has no public URL, so the carrier could not reach it.
    #[error("no public URL is configured")]
    NoPublicUrl,
    /// The store failed.
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

fn retryable(error: StoreError) -> FollowUpError {
    FollowUpError::Retryable(format!("store: {error}"))
}

/// The callback URL `path` of our server for call `call_id`.
fn callback_url(base: &str, path: &str, call_id: &CallId) -> String {
    format!("{base}{path}?call_id={call_id}")
}

impl Engine {
    /// Queues an outbound call: checks the agent, picks the caller ID, and writes the call
    /// (`queued`), its sealed purpose and its dial job together; wakes this node's worker.
    ///
    /// # Errors
    /// [`OutboundRefused`] when the call cannot be placed as asked.
    pub async fn queue_outbound(
        &self,
        request: OutboundRequest,
    ) -> Result<CallRecord, OutboundRefused> {
        if self.config().public_url.is_none() {
            return Err(OutboundRefused::NoPublicUrl);
        }
        let store = self.store();
        let (agent, _) = store
            .get_agent(&request.account_id, &request.agent_id)
            .await?
            .ok_or(OutboundRefused::AgentNotFound)?;
        if !agent.settings.is_active {
            return Err(OutboundRefused::AgentInactive);
        }
        let number = self.caller_id(&request).await?;
        let (call, details, job) = self.outbound_rows(&request, &number)?;
        store.queue_outbound_call(&call, &details, &job).await?;
        self.wake_follow_ups();
        tracing::info!(message = "Outbound call queued.", call_id = %call.call_id, agent_id = %request.agent_id);
        Ok(call)
    }

    /// The rows of a new queued outbound call from `number`: the call record, its sealed
    /// purpose and overrides, and its `call.dial` job (batch campaigns write them with their
    /// recipient's claim, docs/campaigns.md#exactly-once).
    ///
    /// # Errors
    /// [`OutboundRefused::Store`] when the purpose cannot be serialised.
    pub fn outbound_rows(
        &self,
        request: &OutboundRequest,
        number: &PhoneNumber,
    ) -> Result<(CallRecord, OutboundDetails, nixflex_store::NewJob), OutboundRefused> {
        let now = nixflex_store::now();
        let call = CallRecord {
            call_id: ids::new_call_id(),
            account_id: request.account_id.clone(),
            agent_id: Some(request.agent_id.clone()),
            direction: Direction::Outbound,
            from_number: number.phone_number.to_string(),
            to_number: request.to.to_string(),
            twilio_call_sid: None,
            call_status: CallStatus::Queued,
            ended_reason: None,
            started_at: now,
            answered_at: None,
            ended_at: None,
            duration_seconds: None,
            transcript: Vec::new(),
            turns: Vec::new(),
            avg_latency_ms: None,
            recording: None,
            call_summary: None,
            caller_sentiment: None,
            call_successful: None,
            extracted_data: serde_json::Map::new(),
            voicemail_detected: false,
            campaign_id: request.campaign_id.clone(),
            metadata: request.metadata.clone(),
            cost_usd: None,
            precall_reject_reason: None,
            amd_result: None,
            voicemail_detection_method: None,
            carrier_details: None,
            function_calls: Vec::new(),
            provider_events: Vec::new(),
            stream_token_hash: None,
            created_at: now,
            updated_at: now,
        };
        let purpose = serde_json::to_string(&request.purpose)
            .map_err(|e| OutboundRefused::Store(StoreError::Other(e.into())))?;
        let details = OutboundDetails {
            purpose_sealed: Some(self.secrets().seal(&purpose)),
            voicemail_action: request.voicemail_action.clone(),
            voicemail_message: request.voicemail_message.clone(),
            dial_attempts: 0,
        };
        let job = nixflex_store::dial_job(
            &call.account_id,
            &call.call_id,
            self.config().follow_up_max_attempts,
        );
        Ok((call, details, job))
    }

    /// The caller ID: the requested number if it is one of the agent's outbound-enabled
    /// numbers, else the agent's oldest outbound-enabled number.
    async fn caller_id(&self, request: &OutboundRequest) -> Result<PhoneNumber, OutboundRefused> {
        let store = self.store();
        if let Some(from) = &request.from {
            let number = store
                .find_active_number(from)
                .await?
                .filter(|n| n.account_id == request.account_id)
                .ok_or(OutboundRefused::FromNumberNotOwned)?;
            if number.agent_id.as_ref() != Some(&request.agent_id) || !number.outbound_enabled {
                return Err(OutboundRefused::FromNumberNotUsable);
            }
            return Ok(number);
        }
        let numbers = store.agent_numbers(&request.account_id, &request.agent_id).await?;
        numbers
            .into_iter()
            .filter(|n| n.outbound_enabled)
            .min_by(|a, b| {
                a.created_at.cmp(&b.created_at).then_with(|| a.phone_number.cmp(&b.phone_number))
            })
            .ok_or(OutboundRefused::NoOutboundNumber)
    }

    /// The `call.dial` job of one call: dials the account's oldest queued calls while it is
    /// under its cap (whichever job runs first dials the head of the queue, so the order is
    /// first in, first out), then looks at its own call: dialled or gone → done; queued longer
    /// than the limit → ended `failed`; still queued → run again later without spending an
    /// attempt (a call's end anywhere makes it due at once, `CallRepo::finish_call`).
    ///
    /// # Errors
    /// [`FollowUpError::NotYet`] while the call waits; `Retryable` when the store failed.
    pub async fn dial_queued(
        &self,
        call_id: &CallId,
        account_id: &AccountId,
    ) -> Result<(), FollowUpError> {
        let store = self.store();
        let cap = store
            .get_account(account_id)
            .await
            .map_err(retryable)?
            .and_then(|a| a.max_concurrent_calls)
            .unwrap_or(self.config().default_max_concurrent_calls);
        let now = nixflex_store::now();
        let alive_after = now
            - chrono::Duration::from_std(self.config().heartbeat_stale_after).unwrap_or_default();
        // A draining node starts no new calls; the other nodes (or this one after its restart)
        // dial them.
        let claimed = if self.is_draining() {
            Vec::new()
        } else {
            store
                .claim_queued_calls(account_id, cap, alive_after, now, DIAL_BATCH)
                .await
                .map_err(retryable)?
        };
        for call in claimed {
            self.dial(call).await;
        }
        let Some(call) = store.find_call(call_id).await.map_err(retryable)? else {
            return Ok(()); // deleted while queued
        };
        let recheck =
            Utc::now() + chrono::Duration::from_std(self.config().dial_recheck).unwrap_or_default();
        if call.call_status != CallStatus::Queued {
            // Done once the dial's outcome is known: the carrier has it, or it ended. A call
            // claimed but without a SID may still be put back in the queue (Twilio said "not
            // now" to whichever job dialled it), and then this job must be there to dial it.
            if call.twilio_call_sid.is_some() || call.ended_at.is_some() {
                return Ok(());
            }
            return Err(FollowUpError::NotYet(recheck));
        }
        let limit = chrono::Duration::from_std(self.config().outbound_queue_timeout)
            .unwrap_or(chrono::Duration::MAX);
        let give_up_at = call.created_at + limit;
        if now >= give_up_at {
            let waited = (now - call.created_at).num_seconds();
            let update = CallUpdate {
                call_status: Some(CallStatus::Failed),
                ended_reason: Some(EndedReason::Failed),
                ended_at: Some(now),
                carrier_details: Some(json!({
                    "reason": "queue_timeout",
                    "message": format!(
                        "The call waited {waited} s for a free slot under the account's \
                         concurrent-call cap ({cap}) and was not dialled."
                    ),
                })),
                ..CallUpdate::default()
            };
            let follow_ups = self.call_follow_ups(call.call_id.as_str(), call.account_id.as_str());
            if store
                .end_queued_call(&call.call_id, &update, now, &follow_ups)
                .await
                .map_err(retryable)?
            {
                tracing::warn!(message = "Outbound call given up: queued too long.", call_id = %call.call_id, waited_s = waited);
                self.wake_follow_ups();
            }
            return Ok(());
        }
        Err(FollowUpError::NotYet(recheck.min(give_up_at)))
    }

    /// Asks Twilio to place a claimed call. A refusal ends the call `failed` with Twilio's
    /// error; a transient refusal puts it back in the queue (a few times); an unknown outcome
    /// leaves it to the carrier's callbacks or the sweeper (never dialled again).
    async fn dial(&self, call: CallRecord) {
        let call_id = call.call_id.clone();
        match self.try_dial(&call).await {
            Ok(sid) => {
                let update = CallUpdate {
                    twilio_call_sid: Some(sid),
                    heartbeat_at: Some(nixflex_store::now()),
                    ..CallUpdate::default()
                };
                if let Err(error) =
                    self.store().update_call(&call_id, &update, nixflex_store::now()).await
                {
                    // The carrier's callbacks carry our call id and adopt the SID.
                    tracing::warn!(message = "Dialled, but the carrier's SID could not be stored.", call_id = %call_id, error = %error);
                }
                tracing::info!(message = "Outbound call dialled.", call_id = %call_id);
            }
            Err(DialFailure::Superseded) => {
                tracing::info!(message = "A campaign call was reconciled before its dial; not dialled here.", call_id = %call_id);
            }
            Err(DialFailure::Unknown(why)) => {
                tracing::warn!(message = "Dialling had an unknown outcome; not dialled again (the carrier's callbacks or the sweeper settle it).", call_id = %call_id, reason = why);
            }
            Err(DialFailure::Transient(why)) => {
                let attempts = self
                    .store()
                    .get_outbound(&call_id)
                    .await
                    .ok()
                    .flatten()
                    .map_or(MAX_DIAL_ATTEMPTS, |d| d.dial_attempts);
                if attempts < MAX_DIAL_ATTEMPTS {
                    match self.store().requeue_call(&call_id, nixflex_store::now()).await {
                        Ok(_) => {
                            tracing::warn!(message = "Twilio refused the dial for now; the call is queued again.", call_id = %call_id, reason = %why);
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(message = "Could not queue a call again.", call_id = %call_id, error = %error);
                            return;
                        }
                    }
                }
                self.end_undialled(
                    &call_id,
                    &call.account_id,
                    json!({"reason": "dial_failed", "message": why}),
                )
                .await;
            }
            Err(DialFailure::Refused(details)) => {
                self.end_undialled(&call_id, &call.account_id, details).await;
            }
        }
    }

    async fn try_dial(&self, call: &CallRecord) -> Result<String, DialFailure> {
        let refused = |reason: &str, message: &str| {
            DialFailure::Refused(json!({"reason": reason, "message": message}))
        };
        let Some(base) = self.config().public_url.clone() else {
            return Err(refused("public_url_not_configured", "The server has no public URL."));
        };
        let from = E164::from(call.from_number.clone());
        let number = match self.store().find_active_number(&from).await {
            Ok(Some(number)) if number.account_id == call.account_id => number,
            Ok(_) => {
                return Err(refused(
                    "from_number_gone",
                    "The caller-ID number was deleted before the call was dialled.",
                ));
            }
            Err(error) => return Err(DialFailure::Transient(format!("store: {error}"))),
        };
        let amd = match &call.agent_id {
            Some(agent_id) => match self.store().get_agent(&call.account_id, agent_id).await {
                Ok(Some((agent, _))) => agent.settings.amd_enabled,
                Ok(None) => {
                    return Err(refused(
                        "agent_gone",
                        "The agent was deleted before the call was dialled.",
                    ));
                }
                Err(error) => return Err(DialFailure::Transient(format!("store: {error}"))),
            },
            None => false,
        };
        let Some(credentials) = crate::engine::number_credentials(self.secrets(), &number) else {
            return Err(refused(
                "credentials_unreadable",
                "The number's credentials could not be read.",
            ));
        };
        let mut create = CreateCall::new(
            call.to_number.clone(),
            call.from_number.clone(),
            CallTarget::Url(callback_url(&base, "/twilio/voice", &call.call_id)),
        );
        create.method = Some("POST".to_owned());
        create.status_callback = Some(callback_url(&base, "/twilio/status", &call.call_id));
        create.status_callback_method = Some("POST".to_owned());
        create.status_callback_events = vec![
            CallStatusEvent::Initiated,
            CallStatusEvent::Ringing,
            CallStatusEvent::Answered,
            CallStatusEvent::Completed,
        ];
        if amd {
            create.machine_detection = Some(MachineDetection::Enable);
            create.async_amd = Some(true);
            // Twilio's AMD callback names no phone number; `number` says which number's auth
            // token signs it (docs/carrier-webhooks.md).
            create.async_amd_status_callback = Some(format!(
                "{}&number={}",
                callback_url(&base, "/twilio/amd", &call.call_id),
                call.from_number.replace('+', "%2B")
            ));
            create.async_amd_status_callback_method = Some("POST".to_owned());
        }
        if call.campaign_id.is_some() {
            // A campaign's dials keep to the carrier account's calls-per-second limit, counted
            // across nodes; the claim is refreshed right before the request, so a campaign
            // that reconciled this call in between (docs/campaigns.md#exactly-once) is not
            // dialled over.
            self.pace_dial(&number.twilio_account_sid).await?;
            // The claim is named by its time (`started_at`): a call reconciled and claimed
            // again since this dial was claimed is the new claim's to dial.
            match self
                .store()
                .touch_unplaced_call(&call.call_id, call.started_at, nixflex_store::now())
                .await
            {
                Ok(true) => {}
                Ok(false) => return Err(DialFailure::Superseded),
                Err(error) => return Err(DialFailure::Transient(format!("store: {error}"))),
            }
        }
        match self.twilio().create_call(&credentials, &create).await {
            Ok(created) => Ok(created.sid),
            Err(error) => Err(classify(&error)),
        }
    }

    /// Waits for this carrier account's next dial slot (docs/campaigns.md#pacing).
    async fn pace_dial(&self, carrier_account: &str) -> Result<(), DialFailure> {
        let cps = self.config().campaign_calls_per_second;
        if !(cps.is_finite() && cps > 0.0) {
            return Ok(());
        }
        let interval = chrono::Duration::microseconds((1_000_000.0 / cps).round() as i64);
        let now = nixflex_store::now();
        let slot = self
            .store()
            .reserve_dial_slot(&format!("twilio:{carrier_account}"), interval, now)
            .await
            .map_err(|error| DialFailure::Transient(format!("store: {error}")))?;
        if let Ok(wait) = (slot - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Ends a claimed call that was never placed: `failed`, with what went wrong, and its
    /// follow-up (so `call.completed` goes out).
    async fn end_undialled(&self, call_id: &CallId, account_id: &AccountId, details: Value) {
        let now = nixflex_store::now();
        let update = CallUpdate {
            call_status: Some(CallStatus::Failed),
            ended_reason: Some(EndedReason::Failed),
            ended_at: Some(now),
            duration_seconds: Some(0),
            carrier_details: Some(details),
            ..CallUpdate::default()
        };
        let follow_ups = self.call_follow_ups(call_id.as_str(), account_id.as_str());
        match self.store().finish_call(call_id, &update, now, &follow_ups).await {
            Ok(_) => {
                tracing::warn!(message = "Outbound call could not be dialled; ended failed.", call_id = %call_id);
                self.wake_follow_ups();
            }
            Err(error) => {
                // Its heartbeat goes stale and the sweeper ends it.
                tracing::error!(message = "Could not end an undialled call.", call_id = %call_id, error = %error);
            }
        }
    }

    /// The callee answered an outbound call of ours: stream it like an inbound call, with a
    /// new one-time token. A call that already ended is hung up.
    pub async fn answer_outbound(&self, call: &CallRecord, call_sid: Option<&str>) -> Admission {
        if call.ended_at.is_some() || call.call_status.is_final() {
            return Admission::Busy { reason: BusyReason::AlreadyEnded };
        }
        let token = ids::new_key_secret();
        let update = CallUpdate {
            call_status: Some(CallStatus::InProgress),
            stream_token_hash: Some(hash_secret(&token)),
            twilio_call_sid: call_sid.map(str::to_owned),
            heartbeat_at: Some(nixflex_store::now()),
            ..CallUpdate::default()
        };
        if let Some(agent_id) = &call.agent_id
            && let Ok(Some((agent, _))) = self.store().get_agent(&call.account_id, agent_id).await
        {
            self.prewarm_stt(&call.call_id, crate::session::stt_options(&agent.settings));
        }
        match self.store().update_call(&call.call_id, &update, nixflex_store::now()).await {
            Ok(true) => {
                tracing::info!(message = "Outbound call answered.", call_id = %call.call_id);
                Admission::Connect { call_id: call.call_id.clone(), token }
            }
            Ok(false) => {
                self.forget_prewarmed(&call.call_id);
                Admission::Busy { reason: BusyReason::AlreadyEnded }
            }
            Err(error) => {
                self.forget_prewarmed(&call.call_id);
                tracing::error!(message = "Store failed while answering an outbound call.", error = %error);
                Admission::Busy { reason: BusyReason::StoreFailed }
            }
        }
    }

    /// The purpose of an outbound call, while it is kept.
    /// An outbound call's purpose (opened) and its request's `voicemail_action` and
    /// `voicemail_message` overrides.
    pub(crate) async fn call_plan(
        &self,
        call_id: &CallId,
    ) -> (Option<CallPurpose>, Option<String>, Option<String>) {
        let Some(details) = self.store().get_outbound(call_id).await.ok().flatten() else {
            return (None, None, None);
        };
        let purpose = details
            .purpose_sealed
            .and_then(|sealed| self.secrets().open(&sealed).ok())
            .and_then(|opened| serde_json::from_str(&opened).ok());
        (purpose, details.voicemail_action, details.voicemail_message)
    }
}

/// How a dial failed.
enum DialFailure {
    /// Twilio refused it for good (or we could not ask): the call ends `failed` with these
    /// details.
    Refused(Value),
    /// Twilio refused it for now (5xx, rate limit): it did not place the call.
    Transient(String),
    /// No answer from Twilio: the call may or may not have been placed.
    Unknown(&'static str),
    /// Not asked: the call is no longer this dial's (a campaign reconciled it meanwhile).
    Superseded,
}

fn classify(error: &TwilioError) -> DialFailure {
    match error {
        TwilioError::Timeout => DialFailure::Unknown("timeout"),
        TwilioError::Transport(_) => DialFailure::Unknown("transport"),
        TwilioError::Decode(_) => DialFailure::Unknown("undecodable answer"),
        TwilioError::RateLimited { .. } => DialFailure::Transient("Twilio rate limit".to_owned()),
        TwilioError::Upstream { status, .. } if *status >= 500 => {
            DialFailure::Transient(format!("Twilio answered http {status}"))
        }
        TwilioError::Upstream { status, code, message, .. } => DialFailure::Refused(json!({
            "reason": "twilio_error",
            "twilio_error": {"code": code, "message": message, "http_status": status},
        })),
        TwilioError::Authentication { status, code, message } => DialFailure::Refused(json!({
            "reason": "twilio_error",
            "twilio_error": {"code": code, "message": message, "http_status": status},
        })),
        TwilioError::NotFound { code, message } => DialFailure::Refused(json!({
            "reason": "twilio_error",
            "twilio_error": {"code": code, "message": message, "http_status": 404},
        })),
        other => {
            DialFailure::Refused(json!({"reason": "dial_failed", "message": other.to_string()}))
        }
    }
}

/// How long a dial job waits between looks at its queued call.
pub const DEFAULT_DIAL_RECHECK: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_definite_refusal_ends_a_call_and_only_a_definite_not_now_redials() {
        let refused = TwilioError::Upstream {
            status: 400,
            code: Some(21211),
            message: "The 'To' number is not a valid phone number.".to_owned(),
            more_info: None,
        };
        match classify(&refused) {
            DialFailure::Refused(details) => {
                assert_eq!(details["twilio_error"]["code"], 21211);
                assert_eq!(details["twilio_error"]["http_status"], 400);
            }
            _ => panic!("a 4xx is a refusal"),
        }
        let down = TwilioError::Upstream {
            status: 503,
            code: None,
            message: String::new(),
            more_info: None,
        };
        assert!(matches!(classify(&down), DialFailure::Transient(_)));
        let limited =
            TwilioError::RateLimited { code: Some(20429), attempts: 3, retry_after: None };
        assert!(matches!(classify(&limited), DialFailure::Transient(_)));
        // A timed-out POST may have placed the call: never dialled again.
        assert!(matches!(classify(&TwilioError::Timeout), DialFailure::Unknown(_)));
    }

    #[test]
    fn callback_urls_name_the_call() {
        let id = CallId::from("call_0123456789abcdef01234567");
        assert_eq!(
            callback_url("https://x.example", "/twilio/status", &id),
            "https://x.example/twilio/status?call_id=call_0123456789abcdef01234567"
        );
    }
}
