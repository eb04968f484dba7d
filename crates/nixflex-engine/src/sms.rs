//! The SMS service (docs/sms.md): sending a text through the number's Twilio account, logging
//! every text in and out, status callbacks, opt-outs, and the agent's replies to inbound texts.
//!
//! - [`Sms::send`] is the one sending path: the API, the agent's replies, the post-call text
//!   and the in-call `[SEND_SMS:]` action all use it. It refuses a recipient who opted out of the
//!   account, logs the message (`pending`), hands it to Twilio with a status callback and notes
//!   Twilio's SID. A send with a `send_key` happens once: a second send under the same key finds
//!   the first message instead of texting again.
//! - [`Sms::receive`] logs an inbound text once per Twilio SID. STOP-like keywords opt the
//!   sender out, START-like ones opt back in (neither reaches the LLM); anything else queues one
//!   `sms.reply` job in the same transaction (the caller wakes the job worker), so Twilio's
//!   webhook is answered at once and a slow LLM never holds it.
//! - [`Sms::post_call`] is the `sms.post_call` job the call's follow-up queues: the agent's
//!   post-call template, once per call.
//! - [`Sms::reply`] is that job: HELP gets the fixed help text; otherwise, when the number and
//!   the agent have replies on, the agent answers with its prompt on the SMS channel, the caller's
//!   history and context and the last messages of the thread.

use std::sync::Arc;

use chrono::Duration as ChronoDuration;
use futures::StreamExt as _;
use nixflex_core::agent::Agent;
use nixflex_core::call::{CallRecord, Direction};
use nixflex_core::crypto::SecretBox;
use nixflex_core::ids::{AccountId, AgentId, E164};
use nixflex_core::number::PhoneNumber;
use nixflex_core::sms::{
    HELP_TEXT, Keyword, MAX_SMS_CHARS, SmsMessage, SmsSource, SmsStatus, segments,
};
use nixflex_pipeline::llm::{ContentPart, LlmEvent, LlmMessage, LlmProvider, LlmRequest, Role};
use nixflex_providers::twilio::{
    CreateMessage, MessageFilter, MessageStatus, TwilioClient, TwilioError,
};
use nixflex_store::{NewJob, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::followup::FollowUpError;
use crate::prompt::{self, Channel, HISTORY_CALLS, PastCall, PromptContext, ToolsEnabled};

/// The job kind that answers one inbound text.
pub const SMS_REPLY: &str = "sms.reply";

/// The job kind that sends one call's post-call text.
pub const SMS_POST_CALL: &str = "sms.post_call";

/// How many messages of the thread the reply prompt carries (docs/decisions.md#history).
pub const THREAD_MESSAGES: i64 = 10;

/// How long a send's `context.reply_context` applies to the recipient's replies.
const REPLY_CONTEXT_HOURS: i64 = 24;

/// Reconciliation reads Twilio's newest messages between the two numbers: this many per page,
/// at most [`RECONCILE_PAGES`] pages.
const RECONCILE_PAGE_SIZE: u32 = 50;

/// See [`RECONCILE_PAGE_SIZE`].
const RECONCILE_PAGES: usize = 2;

/// How far Twilio's clock may be behind ours when matching a message's creation time.
const RECONCILE_CLOCK_SKEW_SECS: i64 = 300;

/// Twilio's codes for a recipient who opted out at the carrier (21610: "Attempt to send to
/// unsubscribed recipient").
const TWILIO_UNSUBSCRIBED: u32 = 21610;

/// Twilio's codes for texts the sender's registration or the destination does not allow:
/// 21408 (region not enabled), 21612 (not reachable by SMS from this number), 30032 (toll-free
/// number not verified), 30034 (US A2P 10DLC: unregistered number).
const TWILIO_REGION: &[u32] = &[21408, 21612, 30032, 30034];

/// Why a send did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The recipient opted out (STOP to the account, or Twilio's 21610).
    #[error("the recipient opted out of texts from this account")]
    Unsubscribed,
    /// The destination or the sender's registration does not allow it (Twilio's code).
    #[error("texts to this destination are not allowed from this number (twilio code {0})")]
    NotSupportedInRegion(u32),
    /// Twilio refused or failed.
    #[error("twilio: {error}")]
    Provider {
        /// What Twilio said.
        error: TwilioError,
        /// The message as logged (status `failed`, or `pending` when the send is retried).
        message_id: String,
    },
    /// The number's auth token cannot be unsealed (a master-key mismatch).
    #[error("the number's Twilio credentials cannot be read")]
    Credentials,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A text to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The imported number to send from (its Twilio account sends it).
    pub from: PhoneNumber,
    /// The agent whose prompt answers replies.
    pub agent_id: Option<AgentId>,
    /// The recipient (E.164).
    pub to: String,
    /// The text (at most 1600 characters).
    pub body: String,
    /// Background for the agent when the recipient replies.
    pub reply_context: Option<String>,
    /// Echoed on the message.
    pub metadata: Option<serde_json::Value>,
    /// Why it is sent.
    pub source: SmsSource,
    /// Makes the send happen once (see the module docs).
    pub send_key: Option<String>,
}

/// The payload of an `sms.reply` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyJob {
    /// The inbound message.
    pub message_id: String,
}

/// The payload of an `sms.post_call` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostCallJob {
    /// The call.
    pub call_id: String,
}

/// Whether a call gets the agent's post-call text: the agent has it on with a non-blank
/// template, and the call was answered by the engine and did not reach a voicemail.
pub fn wants_post_call_text(call: &CallRecord, agent: &Agent) -> bool {
    agent.settings.post_call_sms_enabled
        && agent.settings.post_call_sms_template.as_deref().is_some_and(|t| !t.trim().is_empty())
        && call.answered_at.is_some()
        && !call.voicemail_detected
}

/// The post-call template rendered (docs/sms.md#post-call-texts): `{caller_name}`,
/// `{business_name}` and `{agent_name}` (the agent's name), `{call_summary}`, `{caller_phone}`,
/// `{business_phone}`, `{call_id}` and every extracted field by name; known names without a value
/// render empty, unknown ones stay literal.
pub fn render_post_call(
    template: &str,
    call: &CallRecord,
    agent: &Agent,
    caller_name: Option<&str>,
) -> String {
    let (business, customer) = match call.direction {
        Direction::Inbound => (&call.to_number, &call.from_number),
        Direction::Outbound => (&call.from_number, &call.to_number),
    };
    let mut vars = std::collections::BTreeMap::new();
    for (name, value) in &call.extracted_data {
        let text = match value {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        vars.insert(name.clone(), text);
    }
    vars.insert("caller_name".to_owned(), caller_name.unwrap_or_default().to_owned());
    vars.insert("business_name".to_owned(), agent.settings.name.clone());
    vars.insert("agent_name".to_owned(), agent.settings.name.clone());
    vars.insert("call_summary".to_owned(), call.call_summary.clone().unwrap_or_default());
    vars.insert("caller_phone".to_owned(), customer.clone());
    vars.insert("business_phone".to_owned(), business.clone());
    vars.insert("call_id".to_owned(), call.call_id.to_string());
    prompt::substitute_single_braces(template, &vars).trim().chars().take(MAX_SMS_CHARS).collect()
}

/// A status callback of a text we sent, as `/twilio/sms-status` received it.
#[derive(Debug, Clone, Copy)]
pub struct StatusCallback<'a> {
    /// The signing number's account.
    pub account_id: &'a AccountId,
    /// `MessageSid`.
    pub twilio_sid: &'a str,
    /// `MessageStatus` (Twilio's value).
    pub status: &'a str,
    /// `ErrorCode`.
    pub error_code: Option<i64>,
    /// `ErrorMessage`.
    pub error_message: Option<&'a str>,
    /// `From`: our number.
    pub from: Option<&'a str>,
    /// `To`: the recipient.
    pub to: Option<&'a str>,
}

/// Settings of the SMS service.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// The public base URL Twilio calls back (`/twilio/sms-status`); without one, statuses stay
    /// as Twilio first reported them.
    pub public_url: Option<String>,
    /// Attempts of an `sms.reply` job.
    pub max_attempts: i64,
}

/// The SMS service; cheap to clone.
#[derive(Clone)]
pub struct Sms {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    twilio: TwilioClient,
    llm: Arc<dyn LlmProvider>,
    config: SmsConfig,
}

impl std::fmt::Debug for Sms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sms").finish_non_exhaustive()
    }
}

fn store_error(error: StoreError) -> FollowUpError {
    FollowUpError::Retryable(format!("storage: {error}"))
}

/// The reply text as sent: trimmed, without emoji or markdown emphasis, at most 1600 characters.
pub fn clean_reply(text: &str) -> String {
    let is_emoji = |c: char| {
        matches!(c as u32,
            0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0xFE00..=0xFE0F | 0x200D | 0x20E3)
    };
    let cleaned: String = text.chars().filter(|c| !is_emoji(*c) && *c != '*').collect();
    let collapsed = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(MAX_SMS_CHARS).collect()
}

impl Sms {
    /// The service over this store, master key, Twilio client and LLM.
    pub fn new(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        twilio: TwilioClient,
        llm: Arc<dyn LlmProvider>,
        config: SmsConfig,
    ) -> Self {
        Self { inner: Arc::new(Inner { store, secrets, twilio, llm, config }) }
    }

    fn status_callback(&self) -> Option<String> {
        self.inner
            .config
            .public_url
            .as_ref()
            .map(|base| format!("{}/twilio/sms-status", base.trim_end_matches('/')))
    }

    /// Sends a text (see the module docs).
    ///
    /// # Errors
    /// [`SendError`]: opted out, refused for the destination, Twilio's failure, or storage.
    pub async fn send(&self, out: Outgoing) -> Result<SmsMessage, SendError> {
        let store = &self.inner.store;
        let account_id = out.from.account_id.clone();
        if store.is_sms_opted_out(&account_id, &out.to).await? {
            return Err(SendError::Unsubscribed);
        }
        let message = match self.log_outgoing(&out).await? {
            Logged::Done(message) => return Ok(message),
            Logged::ToSend(message) => message,
        };
        let credentials = crate::engine::number_credentials(&self.inner.secrets, &out.from)
            .ok_or(SendError::Credentials)?;
        let mut create = CreateMessage::new(&out.to, out.from.phone_number.as_str(), &out.body);
        create.status_callback = self.status_callback();
        match self.inner.twilio.create_message(&credentials, &create).await {
            Ok(sent) => {
                let status = twilio_status(sent.status);
                let now = nixflex_store::now();
                store.mark_sms_handed(&message.message_id, &sent.sid, status, now).await?;
                Ok(SmsMessage {
                    twilio_sid: Some(sent.sid),
                    status: if status.rank() > message.status.rank() {
                        status
                    } else {
                        message.status
                    },
                    updated_at: now,
                    ..message
                })
            }
            Err(error) => {
                let code = error.twilio_code();
                // A retryable failure of a keyed send stays `pending`: its job sends it again.
                if !(error.is_retryable() && out.send_key.is_some()) {
                    let text = match &error {
                        TwilioError::Upstream { message, .. } => Some(message.as_str()),
                        _ => None,
                    };
                    store
                        .mark_sms_failed(
                            &message.message_id,
                            code.map(i64::from),
                            text,
                            nixflex_store::now(),
                        )
                        .await?;
                }
                match code {
                    Some(TWILIO_UNSUBSCRIBED) => {
                        // Twilio knows they opted out: remember it for every path.
                        store
                            .set_sms_opt_out(&account_id, &out.to, true, nixflex_store::now())
                            .await?;
                        Err(SendError::Unsubscribed)
                    }
                    Some(code) if TWILIO_REGION.contains(&code) => {
                        Err(SendError::NotSupportedInRegion(code))
                    }
                    _ => Err(SendError::Provider { error, message_id: message.message_id }),
                }
            }
        }
    }

    /// Reconciles a keyed send that an earlier run may have handed to Twilio without noting the
    /// SID (a crash, or an answer lost on the way back) (docs/sms.md#campaigns): when the send
    /// key's message is still `pending` without a SID, Twilio's message list for the same
    /// `To` and `From` is searched for the same text created since the message was logged; a
    /// match is adopted (its SID and status noted) and returned, so the caller does not text
    /// again. `None`: nothing was logged under the key, or Twilio has no such message (the caller
    /// sends; the send reuses the logged row).
    ///
    /// # Errors
    /// Twilio's list failed (the caller must not send: it cannot tell), or storage.
    pub async fn reconcile(&self, out: &Outgoing) -> Result<Option<SmsMessage>, SendError> {
        let store = &self.inner.store;
        let Some(key) = &out.send_key else {
            return Ok(None);
        };
        let Some(earlier) = store.get_sms_by_send_key(key).await? else {
            return Ok(None);
        };
        if !(earlier.status == SmsStatus::Pending && earlier.twilio_sid.is_none()) {
            return Ok(Some(earlier));
        }
        let credentials = crate::engine::number_credentials(&self.inner.secrets, &out.from)
            .ok_or(SendError::Credentials)?;
        let filter = MessageFilter {
            to: Some(out.to.clone()),
            from: Some(out.from.phone_number.to_string()),
            page_size: Some(RECONCILE_PAGE_SIZE),
            ..MessageFilter::default()
        };
        let listed =
            self.inner.twilio.list_messages(&credentials, &filter, RECONCILE_PAGES).await.map_err(
                |error| SendError::Provider { error, message_id: earlier.message_id.clone() },
            )?;
        let since = earlier.created_at - ChronoDuration::seconds(RECONCILE_CLOCK_SKEW_SECS);
        let found = listed.into_iter().find(|m| {
            m.body.as_deref() == Some(earlier.body.as_str())
                && m.direction.as_deref().is_none_or(|d| d.starts_with("outbound"))
                // A creation time that cannot be read counts as recent: texting twice is worse.
                && m.date_created
                    .as_deref()
                    .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                    .is_none_or(|created| created >= since)
        });
        let Some(found) = found else {
            return Ok(None);
        };
        let status = twilio_status(found.status);
        let now = nixflex_store::now();
        match store.mark_sms_handed(&earlier.message_id, &found.sid, status, now).await {
            Ok(_) => {}
            // The SID belongs to another logged message: not ours after all.
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        tracing::info!(
            message = "Reconciled an SMS send with the message Twilio already has.",
            message_id = %earlier.message_id,
            twilio_sid = %found.sid
        );
        Ok(Some(SmsMessage {
            twilio_sid: Some(found.sid),
            status: if status.rank() > earlier.status.rank() { status } else { earlier.status },
            updated_at: now,
            ..earlier
        }))
    }

    /// Writes the `pending` row, or finds the one an earlier send under the same key wrote.
    async fn log_outgoing(&self, out: &Outgoing) -> Result<Logged, StoreError> {
        let store = &self.inner.store;
        if let Some(key) = &out.send_key
            && let Some(earlier) = store.get_sms_by_send_key(key).await?
        {
            return Ok(Logged::from_earlier(earlier));
        }
        let now = nixflex_store::now();
        let message = SmsMessage {
            message_id: nixflex_core::ids::new_message_id(),
            account_id: out.from.account_id.clone(),
            agent_id: out.agent_id.clone(),
            direction: Direction::Outbound,
            business_number: out.from.phone_number.to_string(),
            customer_number: out.to.clone(),
            body: out.body.clone(),
            status: SmsStatus::Pending,
            twilio_sid: None,
            segments: segments(&out.body),
            error_code: None,
            error_message: None,
            reply_context: out.reply_context.clone(),
            source: out.source,
            send_key: out.send_key.clone(),
            metadata: out.metadata.clone(),
            created_at: now,
            updated_at: now,
        };
        if store.insert_sms(&message).await? {
            return Ok(Logged::ToSend(message));
        }
        // Another run of the same send wrote it first.
        match &out.send_key {
            Some(key) => match store.get_sms_by_send_key(key).await? {
                Some(earlier) => Ok(Logged::from_earlier(earlier)),
                None => Err(StoreError::Conflict { constraint: "sms send_key" }),
            },
            None => Err(StoreError::Conflict { constraint: "sms message_id" }),
        }
    }

    /// Logs an inbound text (see the module docs). Returns the message as logged.
    ///
    /// # Errors
    /// Storage failures (Twilio retries the webhook).
    pub async fn receive(
        &self,
        number: &PhoneNumber,
        twilio_sid: &str,
        from: &str,
        body: &str,
    ) -> Result<SmsMessage, StoreError> {
        let store = &self.inner.store;
        let now = nixflex_store::now();
        let message = SmsMessage {
            message_id: nixflex_core::ids::new_message_id(),
            account_id: number.account_id.clone(),
            agent_id: number.agent_id.clone(),
            direction: Direction::Inbound,
            business_number: number.phone_number.to_string(),
            customer_number: from.to_owned(),
            body: body.to_owned(),
            status: SmsStatus::Received,
            twilio_sid: Some(twilio_sid.to_owned()),
            segments: segments(body),
            error_code: None,
            error_message: None,
            reply_context: None,
            source: SmsSource::Inbound,
            send_key: None,
            metadata: None,
            created_at: now,
            updated_at: now,
        };
        let keyword = Keyword::parse(body);
        let job = match keyword {
            Some(Keyword::OptOut | Keyword::OptIn) => None,
            Some(Keyword::Help) | None => Some(NewJob::new(
                SMS_REPLY,
                twilio_sid,
                serde_json::to_value(ReplyJob { message_id: message.message_id.clone() })
                    .map_err(|e| StoreError::Other(e.into()))?,
                self.inner.config.max_attempts,
            )),
        };
        // The job names the message it answers; a retried webhook keeps the first message and
        // the first job (both keyed by the SID), so the payload always names the logged row.
        let (stored, _new) = store.record_inbound_sms(&message, job.as_ref()).await?;
        match keyword {
            Some(Keyword::OptOut) => {
                store.set_sms_opt_out(&number.account_id, from, true, now).await?;
                tracing::info!(message = "A customer opted out of texts.", account_id = %number.account_id);
            }
            Some(Keyword::OptIn) => {
                store.set_sms_opt_out(&number.account_id, from, false, now).await?;
                tracing::info!(message = "A customer opted back in to texts.", account_id = %number.account_id);
            }
            _ => {}
        }
        Ok(stored)
    }

    /// Applies a status callback to the number's account's message; false when it changed
    /// nothing (unknown SID, untracked or older status).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn apply_status(&self, callback: &StatusCallback<'_>) -> Result<bool, StoreError> {
        let StatusCallback { account_id, twilio_sid, status, error_code, error_message, from, to } =
            *callback;
        let Some(status) = SmsStatus::from_twilio(status) else { return Ok(false) };
        if status == SmsStatus::Received {
            return Ok(false);
        }
        let error_code =
            error_code.filter(|_| matches!(status, SmsStatus::Undelivered | SmsStatus::Failed));
        let store = &self.inner.store;
        let update = || {
            store.update_sms_status(
                account_id,
                twilio_sid,
                status,
                error_code,
                error_message,
                nixflex_store::now(),
            )
        };
        let mut changed = update().await?;
        // A callback may overtake Twilio's answer to the send (the SID is not stored yet): it
        // belongs to the newest pending text between the same two numbers. The answer may also
        // land between the update above and the read below (then the read finds the message,
        // or the adoption finds nothing to adopt): either way the SID is stored by then, so the
        // update is tried once more (docs/sms.md#statuses).
        if !changed && let (Some(from), Some(to)) = (from, to) {
            let again = match store.get_sms_by_twilio_sid(account_id, twilio_sid).await? {
                Some(message) => message.status.rank() < status.rank(),
                None => {
                    store.adopt_sms_sid(account_id, from, to, twilio_sid).await?;
                    true
                }
            };
            if again {
                changed = update().await?;
            }
        }
        // Undelivered because the recipient opted out at the carrier: remember it for every path.
        if changed
            && error_code == Some(i64::from(TWILIO_UNSUBSCRIBED))
            && let Some(message) =
                self.inner.store.get_sms_by_twilio_sid(account_id, twilio_sid).await?
        {
            self.inner
                .store
                .set_sms_opt_out(account_id, &message.customer_number, true, nixflex_store::now())
                .await?;
        }
        Ok(changed)
    }

    /// The call's `sms.post_call` job, when it gets a text ([`wants_post_call_text`]); keyed by
    /// the call.
    ///
    /// # Errors
    /// [`FollowUpError::Permanent`] when the payload cannot be built.
    pub fn post_call_job(
        &self,
        call: &CallRecord,
        agent: &Agent,
    ) -> Result<Option<NewJob>, FollowUpError> {
        if !wants_post_call_text(call, agent) {
            return Ok(None);
        }
        let payload = serde_json::to_value(PostCallJob { call_id: call.call_id.to_string() })
            .map_err(|e| FollowUpError::Permanent(format!("payload: {e}")))?;
        Ok(Some(NewJob::new(
            SMS_POST_CALL,
            call.call_id.as_str(),
            payload,
            self.inner.config.max_attempts,
        )))
    }

    /// One run of `sms.post_call`: the agent's template rendered with the call's values, sent
    /// from the call's business number to the other party, once per call (send key
    /// `post_call:{call id}`).
    ///
    /// # Errors
    /// [`FollowUpError::Retryable`] when Twilio or the database failed in a way worth retrying;
    /// [`FollowUpError::Permanent`] when it will never work.
    pub async fn post_call(&self, job: &PostCallJob) -> Result<(), FollowUpError> {
        let store = &self.inner.store;
        let Some(call) =
            store.find_call(&job.call_id.as_str().into()).await.map_err(store_error)?
        else {
            return Ok(());
        };
        let Some(agent_id) = &call.agent_id else { return Ok(()) };
        let Some((agent, _)) =
            store.get_agent(&call.account_id, agent_id).await.map_err(store_error)?
        else {
            return Ok(());
        };
        if !wants_post_call_text(&call, &agent) {
            return Ok(());
        }
        let (business, customer) = match call.direction {
            Direction::Inbound => (call.to_number.clone(), call.from_number.clone()),
            Direction::Outbound => (call.from_number.clone(), call.to_number.clone()),
        };
        let number = store
            .find_active_number(&E164::from(business.as_str()))
            .await
            .map_err(store_error)?
            .filter(|n| n.account_id == call.account_id);
        let Some(number) = number else {
            tracing::info!(message = "No post-call text: the call's number is no longer imported.", call_id = %call.call_id);
            return Ok(());
        };
        let caller_name = store
            .get_caller(&number.phone_number, &customer)
            .await
            .map_err(store_error)?
            .and_then(|c| c.context.get("name").and_then(|n| n.as_str()).map(str::to_owned));
        let template = agent.settings.post_call_sms_template.clone().unwrap_or_default();
        let body = render_post_call(&template, &call, &agent, caller_name.as_deref());
        if body.is_empty() {
            return Ok(());
        }
        let out = Outgoing {
            from: number,
            agent_id: Some(agent_id.clone()),
            to: customer,
            body,
            reply_context: None,
            metadata: None,
            source: SmsSource::PostCall,
            send_key: Some(format!("post_call:{}", call.call_id)),
        };
        match self.send(out).await {
            Ok(_) | Err(SendError::Unsubscribed) => Ok(()),
            Err(SendError::Provider { error, .. }) if error.is_retryable() => {
                Err(FollowUpError::Retryable(format!("sending the post-call text: {error}")))
            }
            Err(SendError::Store(error)) => Err(store_error(error)),
            Err(error) => {
                Err(FollowUpError::Permanent(format!("sending the post-call text: {error}")))
            }
        }
    }

    /// One run of `sms.reply` (see the module docs).
    ///
    /// # Errors
    /// [`FollowUpError::Retryable`] when the LLM, Twilio or the database failed in a way worth
    /// retrying; [`FollowUpError::Permanent`] when it will never work.
    pub async fn reply(&self, job: &ReplyJob) -> Result<(), FollowUpError> {
        let store = &self.inner.store;
        let Some(inbound) = store.find_sms(&job.message_id).await.map_err(store_error)? else {
            return Ok(());
        };
        let send_key = format!("reply:{}", inbound.message_id);
        if let Some(earlier) = store.get_sms_by_send_key(&send_key).await.map_err(store_error)?
            && earlier.status != SmsStatus::Pending
        {
            return Ok(());
        }
        let number = store
            .find_active_number(&E164::from(inbound.business_number.as_str()))
            .await
            .map_err(store_error)?
            .filter(|n| n.account_id == inbound.account_id);
        let Some(number) = number else {
            tracing::info!(message = "Inbound text not answered: its number is no longer imported.", message_id = %inbound.message_id);
            return Ok(());
        };
        let (body, source, agent_id) = if Keyword::parse(&inbound.body) == Some(Keyword::Help) {
            (HELP_TEXT.to_owned(), SmsSource::Help, number.agent_id.clone())
        } else {
            match self.agent_reply(&number, &inbound, &send_key).await? {
                Some((body, agent_id)) => (body, SmsSource::Reply, Some(agent_id)),
                None => return Ok(()),
            }
        };
        let out = Outgoing {
            from: number,
            agent_id,
            to: inbound.customer_number.clone(),
            body,
            reply_context: None,
            metadata: None,
            source,
            send_key: Some(send_key),
        };
        match self.send(out).await {
            Ok(_) => Ok(()),
            Err(SendError::Unsubscribed) => Ok(()),
            Err(SendError::Provider { error, .. }) if error.is_retryable() => {
                Err(FollowUpError::Retryable(format!("sending the reply: {error}")))
            }
            Err(SendError::Store(error)) => Err(store_error(error)),
            Err(error) => Err(FollowUpError::Permanent(format!("sending the reply: {error}"))),
        }
    }

    /// The agent's answer, or `None` when replies are off for the number or the agent. A reply
    /// already written by an earlier run (still `pending`) is reused, so the LLM is asked once.
    async fn agent_reply(
        &self,
        number: &PhoneNumber,
        inbound: &SmsMessage,
        send_key: &str,
    ) -> Result<Option<(String, AgentId)>, FollowUpError> {
        let store = &self.inner.store;
        if !number.sms_reply_enabled {
            return Ok(None);
        }
        let Some(agent_id) = number.agent_id.clone() else { return Ok(None) };
        let Some((agent, _)) =
            store.get_agent(&number.account_id, &agent_id).await.map_err(store_error)?
        else {
            return Ok(None);
        };
        if !agent.settings.enable_sms_reply || !agent.settings.is_active {
            return Ok(None);
        }
        if let Some(earlier) = store.get_sms_by_send_key(send_key).await.map_err(store_error)? {
            return Ok(Some((earlier.body, agent_id)));
        }
        let customer = inbound.customer_number.as_str();
        let history: Vec<PastCall> = store
            .call_history(
                &number.account_id,
                &agent_id,
                &number.phone_number,
                customer,
                i64::try_from(HISTORY_CALLS).unwrap_or(2),
            )
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|(started_at, summary)| PastCall { started_at, summary })
            .collect();
        let caller_context = store
            .get_caller(&number.phone_number, customer)
            .await
            .map_err(store_error)?
            .map(|record| record.context);
        let mut thread = store
            .sms_thread(&number.account_id, &inbound.business_number, customer, THREAD_MESSAGES)
            .await
            .map_err(store_error)?;
        // Only what came before (and including) the text being answered.
        thread.retain(|m| m.created_at <= inbound.created_at);
        thread.reverse();
        let now = nixflex_store::now();
        let dynamic_vars = std::collections::BTreeMap::new();
        let cx = PromptContext {
            agent: &agent.settings,
            number: Some(&number.settings),
            channel: Channel::Sms,
            direction: Direction::Inbound,
            caller_phone: customer,
            business_phone: number.phone_number.as_str(),
            call_id: &inbound.message_id,
            agent_id: agent_id.as_str(),
            now,
            history: &history,
            caller_context: caller_context.as_ref(),
            call_purpose: None,
            dynamic_vars: &dynamic_vars,
            tools_enabled: ToolsEnabled::default(),
        };
        let mut system = prompt::build_system_prompt(&cx);
        let reply_contexts: Vec<&str> = thread
            .iter()
            .filter(|m| m.direction == Direction::Outbound)
            .filter(|m| now - m.created_at < ChronoDuration::hours(REPLY_CONTEXT_HOURS))
            .filter_map(|m| m.reply_context.as_deref())
            .collect();
        if !reply_contexts.is_empty() {
            system.push_str("\n\n## CONTEXT OF THE BUSINESS'S EARLIER TEXT\n");
            system.push_str(&reply_contexts.join("\n"));
        }
        let mut request =
            LlmRequest::new(agent.settings.llm_model.clone(), thread_messages(&thread));
        request.system = Some(system);
        request.max_tokens = 300;
        let text = self.complete(request).await?;
        let body = clean_reply(&text);
        if body.is_empty() {
            return Err(FollowUpError::Retryable("the LLM answered with no text".to_owned()));
        }
        Ok(Some((body, agent_id)))
    }

    async fn complete(&self, request: LlmRequest) -> Result<String, FollowUpError> {
        let llm_error = |e: nixflex_pipeline::ProviderError| {
            FollowUpError::Retryable(format!("the LLM failed: {e}"))
        };
        let mut stream = self.inner.llm.stream(request).await.map_err(llm_error)?;
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            match event.map_err(llm_error)? {
                LlmEvent::TextDelta(delta) => text.push_str(&delta),
                LlmEvent::Done { .. } => break,
                LlmEvent::ToolCall { .. } => {}
            }
        }
        Ok(text)
    }
}

/// The thread as LLM turns, oldest first: the customer's texts are the user's, the business's
/// the assistant's. Consecutive texts of one side are joined; a thread the business started
/// opens with a note, since the conversation must start with the user.
fn thread_messages(thread: &[SmsMessage]) -> Vec<LlmMessage> {
    let mut messages: Vec<LlmMessage> = Vec::new();
    for message in thread {
        let role = match message.direction {
            Direction::Inbound => Role::User,
            Direction::Outbound => Role::Assistant,
        };
        // A picture or file without text (MMS) still needs words for the model.
        let body = if message.body.trim().is_empty() {
            "(sent a picture or file without text)"
        } else {
            message.body.as_str()
        };
        match messages.last_mut() {
            Some(last) if last.role == role => {
                let joined = format!("{}\n{body}", last.text());
                *last = LlmMessage { role, content: vec![ContentPart::Text(joined)] };
            }
            _ => messages
                .push(LlmMessage { role, content: vec![ContentPart::Text(body.to_owned())] }),
        }
    }
    if messages.first().is_some_and(|m| m.role == Role::Assistant) {
        messages.insert(0, LlmMessage::user("(The business texted first.)"));
    }
    messages
}

fn twilio_status(status: MessageStatus) -> SmsStatus {
    match status {
        MessageStatus::Sending => SmsStatus::Sending,
        MessageStatus::Sent => SmsStatus::Sent,
        MessageStatus::Delivered | MessageStatus::Read => SmsStatus::Delivered,
        MessageStatus::Undelivered => SmsStatus::Undelivered,
        MessageStatus::Failed | MessageStatus::Canceled => SmsStatus::Failed,
        _ => SmsStatus::Queued,
    }
}

enum Logged {
    /// Already handed to Twilio (or refused): nothing more to do.
    Done(SmsMessage),
    /// To hand to Twilio.
    ToSend(SmsMessage),
}

impl Logged {
    fn from_earlier(earlier: SmsMessage) -> Self {
        if earlier.status == SmsStatus::Pending && earlier.twilio_sid.is_none() {
            Self::ToSend(earlier)
        } else {
            Self::Done(earlier)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_and_agent() -> (CallRecord, Agent) {
        let now = chrono::Utc::now();
        let call = CallRecord {
            call_id: "call_000000000000000000000001".into(),
            account_id: "acct_0000000000000001".into(),
            agent_id: Some("agent_0000000000000001".into()),
            direction: Direction::Outbound,
            from_number: "+14155552671".to_owned(),
            to_number: "+447386172392".to_owned(),
            twilio_call_sid: None,
            call_status: nixflex_core::call::CallStatus::Completed,
            ended_reason: None,
            started_at: now,
            answered_at: Some(now),
            ended_at: Some(now),
            duration_seconds: Some(30),
            transcript: Vec::new(),
            turns: Vec::new(),
            avg_latency_ms: None,
            recording: None,
            call_summary: Some("Booked a cleaning.".to_owned()),
            caller_sentiment: None,
            call_successful: None,
            extracted_data: serde_json::json!({"slot": "Friday 3pm", "party": 2, "note": null})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            voicemail_detected: false,
            campaign_id: None,
            metadata: None,
            cost_usd: None,
            precall_reject_reason: None,
            amd_result: None,
            carrier_details: None,
            function_calls: Vec::new(),
            provider_events: Vec::new(),
            voicemail_detection_method: None,
            stream_token_hash: None,
            created_at: now,
            updated_at: now,
        };
        let settings = nixflex_core::agent::AgentSettings {
            name: "Bright Smiles".to_owned(),
            post_call_sms_enabled: true,
            post_call_sms_template: Some("Hi {caller_name}".to_owned()),
            ..Default::default()
        };
        let agent = Agent {
            agent_id: "agent_0000000000000001".into(),
            account_id: "acct_0000000000000001".into(),
            api_key_id: "nxf_0".into(),
            settings,
            created_at: now,
            updated_at: now,
        };
        (call, agent)
    }

    #[test]
    fn post_call_template_renders_call_and_analysis_values() {
        let (call, agent) = call_and_agent();
        let text = render_post_call(
            "Hi {caller_name}, {business_name} here ({agent_name}). {call_summary} See you {slot} x{party}{note}. Call {business_phone}. {other}",
            &call,
            &agent,
            None,
        );
        assert_eq!(
            text,
            "Hi , Bright Smiles here (Bright Smiles). Booked a cleaning. See you Friday 3pm x2. Call +14155552671. {other}"
        );
        assert_eq!(render_post_call("Hi {caller_name}", &call, &agent, Some("Sam")), "Hi Sam");
    }

    #[test]
    fn post_call_texts_need_an_answered_call_without_voicemail() {
        let (mut call, mut agent) = call_and_agent();
        assert!(wants_post_call_text(&call, &agent));
        call.voicemail_detected = true;
        assert!(!wants_post_call_text(&call, &agent));
        call.voicemail_detected = false;
        call.answered_at = None;
        assert!(!wants_post_call_text(&call, &agent));
        call.answered_at = Some(chrono::Utc::now());
        agent.settings.post_call_sms_template = Some("  ".to_owned());
        assert!(!wants_post_call_text(&call, &agent));
        agent.settings.post_call_sms_template = Some("Hi".to_owned());
        agent.settings.post_call_sms_enabled = false;
        assert!(!wants_post_call_text(&call, &agent));
    }

    fn text(direction: Direction, body: &str) -> SmsMessage {
        let now = chrono::Utc::now();
        SmsMessage {
            message_id: "sms_0".to_owned(),
            account_id: "acct_0".into(),
            agent_id: None,
            direction,
            business_number: "+14155552671".to_owned(),
            customer_number: "+447386172392".to_owned(),
            body: body.to_owned(),
            status: SmsStatus::Received,
            twilio_sid: None,
            segments: 1,
            error_code: None,
            error_message: None,
            reply_context: None,
            source: SmsSource::Inbound,
            send_key: None,
            metadata: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn threads_become_alternating_turns_that_start_with_the_customer() {
        let thread = [
            text(Direction::Outbound, "Your order shipped."),
            text(Direction::Inbound, "Thanks"),
            text(Direction::Inbound, ""),
            text(Direction::Outbound, "Got it."),
            text(Direction::Inbound, "When will it arrive?"),
        ];
        let turns: Vec<(Role, String)> =
            thread_messages(&thread).iter().map(|m| (m.role, m.text())).collect();
        assert_eq!(
            turns,
            vec![
                (Role::User, "(The business texted first.)".to_owned()),
                (Role::Assistant, "Your order shipped.".to_owned()),
                (Role::User, "Thanks\n(sent a picture or file without text)".to_owned()),
                (Role::Assistant, "Got it.".to_owned()),
                (Role::User, "When will it arrive?".to_owned()),
            ]
        );
    }

    #[test]
    fn replies_lose_emoji_and_markdown_and_fit_one_message() {
        assert_eq!(clean_reply("  Sure! 😀 See you **Friday** 👍🏽  "), "Sure! See you Friday");
        assert_eq!(clean_reply(&"a".repeat(2000)).chars().count(), MAX_SMS_CHARS);
    }
}
