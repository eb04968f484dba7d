//! Imported phone numbers (docs/api.md#phone-numbers; docs/decisions.md#number-switches, #custom-prompt-scope): the per-number settings that
//! layer over the agent's, and their partial update.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::agent::RecordingSource;
use crate::catalog::{self, TtsProviderKind};
use crate::error::ErrorCode;
use crate::ids::{AccountId, AgentId, E164};
use crate::validate::{ValidationError, as_bool, as_f64, as_str, check_len, json_type};

/// Maximum `custom_prompt` length.
pub const MAX_CUSTOM_PROMPT: usize = 8_000;
/// Maximum `sms_prompt` / `web_prompt` length.
pub const MAX_CHANNEL_PROMPT: usize = 20_000;

/// A number imported from the customer's Twilio account.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneNumber {
    /// E.164; globally unique.
    pub phone_number: E164,
    /// Owner.
    pub account_id: AccountId,
    /// The agent answering it; `None` once that agent is deleted.
    pub agent_id: Option<AgentId>,
    /// `twilio`.
    pub provider: String,
    /// The customer's Account SID.
    pub twilio_account_sid: String,
    /// The customer's auth token, sealed under the master key.
    pub twilio_auth_token_sealed: String,
    /// `PN…`.
    pub twilio_number_sid: String,
    /// Answer inbound calls.
    pub inbound_enabled: bool,
    /// Usable as caller ID for outbound calls.
    pub outbound_enabled: bool,
    /// Auto-reply to inbound SMS.
    pub sms_reply_enabled: bool,
    /// Per-number overrides.
    pub settings: NumberSettings,
    /// Primary post-call webhook.
    pub webhook_url: Option<String>,
    /// Secondary post-call webhook.
    pub webhook2_url: Option<String>,
    /// Pre-call gate (overrides the agent's).
    pub precall_url: Option<String>,
    /// Import time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Per-number overrides; `None` inherits from the agent (or means "not set").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct NumberSettings {
    /// Business profile layered on the agent prompt (≤ 8000 chars).
    pub custom_prompt: Option<String>,
    /// Voice override; `null` uses the agent's voice.
    pub voice_id: Option<String>,
    /// Instructions for SMS replies (≤ 20,000); replaces `custom_prompt` for SMS.
    pub sms_prompt: Option<String>,
    /// Instructions for web calls (≤ 20,000).
    pub web_prompt: Option<String>,
    /// The only voicemail control for API-imported numbers; `null` = hang up silently.
    pub voicemail_leave_enabled: Option<bool>,
    /// Spoken verbatim on voicemail (≤ 2000).
    pub voicemail_message: Option<String>,
    /// `null` inherits the agent's speed; clamped to 0.5–1.5.
    pub speaking_rate: Option<f64>,
    /// `null` inherits.
    pub dtmf_enabled: Option<bool>,
    /// `null` inherits; `false` disables recording on this number.
    pub record_call: Option<bool>,
    /// `null` inherits.
    pub recording_source: Option<RecordingSource>,
}

/// Settable number fields (besides the three flags and `agent_id`, handled by the caller).
pub const NUMBER_SETTING_FIELDS: &[&str] = &[
    "custom_prompt",
    "voice_id",
    "sms_prompt",
    "web_prompt",
    "voicemail_leave_enabled",
    "voicemail_message",
    "speaking_rate",
    "dtmf_enabled",
    "record_call",
    "recording_source",
];

/// The boolean switches settable on import and update.
pub const NUMBER_FLAGS: &[&str] = &["inbound_enabled", "outbound_enabled", "sms_reply_enabled"];

/// The switches of a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberFlags {
    /// Answer inbound calls.
    pub inbound_enabled: bool,
    /// Usable for outbound calls.
    pub outbound_enabled: bool,
    /// Auto-reply to SMS.
    pub sms_reply_enabled: bool,
}

impl Default for NumberFlags {
    /// API imports start with everything on (docs/decisions.md#number-switches).
    fn default() -> Self {
        Self { inbound_enabled: true, outbound_enabled: true, sms_reply_enabled: true }
    }
}

impl NumberFlags {
    /// Applies `inbound_enabled` / `outbound_enabled` / `sms_reply_enabled` from a body.
    ///
    /// # Errors
    /// `invalid_request` for non-boolean values.
    pub fn apply(&self, body: &Map<String, Value>) -> Result<NumberFlags, ValidationError> {
        let mut next = *self;
        for field in NUMBER_FLAGS {
            if let Some(value) = body.get(*field) {
                let flag = as_bool(field, value)?;
                match *field {
                    "inbound_enabled" => next.inbound_enabled = flag,
                    "outbound_enabled" => next.outbound_enabled = flag,
                    _ => next.sms_reply_enabled = flag,
                }
            }
        }
        Ok(next)
    }
}

fn optional_text(
    field: &str,
    value: &Value,
    max: usize,
    code: ErrorCode,
) -> Result<Option<String>, ValidationError> {
    if value.is_null() {
        return Ok(None);
    }
    let text = as_str(field, value)?;
    check_len(field, text, max, code)?;
    Ok(Some(text.to_owned()))
}

fn optional_bool(field: &str, value: &Value) -> Result<Option<bool>, ValidationError> {
    if value.is_null() { Ok(None) } else { as_bool(field, value).map(Some) }
}

impl NumberSettings {
    /// Applies the supplied fields (already snake_case); `null` clears. All or nothing.
    ///
    /// # Errors
    /// The first invalid field: `custom_prompt_too_long`, `invalid_voice_id`,
    /// `voicemail_message_required`, or `invalid_request`.
    pub fn apply_patch(
        &self,
        body: &Map<String, Value>,
        tts: TtsProviderKind,
    ) -> Result<NumberSettings, ValidationError> {
        let mut next = self.clone();
        for field in NUMBER_SETTING_FIELDS {
            let Some(value) = body.get(*field) else { continue };
            match *field {
                "custom_prompt" => {
                    next.custom_prompt = optional_text(
                        field,
                        value,
                        MAX_CUSTOM_PROMPT,
                        ErrorCode::CustomPromptTooLong,
                    )?;
                }
                "voice_id" => {
                    next.voice_id = match value {
                        Value::Null => None,
                        other => {
                            let id = as_str(field, other)?;
                            let voice = catalog::find_voice(tts, id).ok_or_else(|| {
                                ValidationError::new(
                                    ErrorCode::InvalidVoiceId,
                                    field,
                                    format!("`{id}` is not a voice of the {} catalogue; see GET /v1/voices", tts.as_str()),
                                )
                            })?;
                            Some(voice.voice_id.to_owned())
                        }
                    };
                }
                "sms_prompt" => {
                    next.sms_prompt =
                        optional_text(field, value, MAX_CHANNEL_PROMPT, ErrorCode::InvalidRequest)?;
                }
                "web_prompt" => {
                    next.web_prompt =
                        optional_text(field, value, MAX_CHANNEL_PROMPT, ErrorCode::InvalidRequest)?;
                }
                "voicemail_leave_enabled" => {
                    next.voicemail_leave_enabled = optional_bool(field, value)?
                }
                "voicemail_message" => {
                    next.voicemail_message =
                        optional_text(field, value, 2000, ErrorCode::InvalidRequest)?;
                }
                "speaking_rate" => {
                    next.speaking_rate = match value {
                        Value::Null => None,
                        other => {
                            let rate = as_f64(field, other)?;
                            if !rate.is_finite() {
                                return Err(ValidationError::invalid(
                                    field,
                                    "`speaking_rate` must be finite",
                                ));
                            }
                            Some(rate.clamp(0.5, 1.5))
                        }
                    };
                }
                "dtmf_enabled" => next.dtmf_enabled = optional_bool(field, value)?,
                "record_call" => next.record_call = optional_bool(field, value)?,
                _ => {
                    next.recording_source = match value {
                        Value::Null => None,
                        Value::String(s) if s.eq_ignore_ascii_case("provider") => {
                            Some(RecordingSource::Provider)
                        }
                        Value::String(s) if s.eq_ignore_ascii_case("nixflex") => {
                            Some(RecordingSource::Nixflex)
                        }
                        other => {
                            return Err(ValidationError::invalid(
                                field,
                                format!(
                                    "`recording_source` must be provider, nixflex or null, not {}",
                                    json_type(other)
                                ),
                            ));
                        }
                    };
                }
            }
        }
        if next.voicemail_leave_enabled == Some(true)
            && next.voicemail_message.as_deref().is_none_or(|m| m.trim().is_empty())
        {
            return Err(ValidationError::new(
                ErrorCode::VoicemailMessageRequired,
                "voicemail_message",
                "`voicemail_message` is required when `voicemail_leave_enabled` is true",
            ));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(base: &NumberSettings, body: Value) -> Result<NumberSettings, ValidationError> {
        base.apply_patch(body.as_object().unwrap(), TtsProviderKind::Inworld)
    }

    #[test]
    fn settings_are_set_cleared_and_validated() {
        let set = patch(&NumberSettings::default(), json!({"custom_prompt": "We sell bread", "voice_id": "olivia", "speaking_rate": 3, "recording_source": "nixflex"})).unwrap();
        assert_eq!(set.voice_id.as_deref(), Some("Olivia"));
        assert_eq!(set.speaking_rate, Some(1.5));
        assert_eq!(set.recording_source, Some(RecordingSource::Nixflex));
        let cleared = patch(&set, json!({"voice_id": null, "custom_prompt": null})).unwrap();
        assert_eq!((cleared.voice_id, cleared.custom_prompt), (None, None));
        assert_eq!(cleared.speaking_rate, Some(1.5), "untouched");
        assert_eq!(
            patch(&set, json!({"custom_prompt": "x".repeat(8001)})).unwrap_err().code,
            ErrorCode::CustomPromptTooLong
        );
        assert!(patch(&set, json!({"custom_prompt": "x".repeat(8000)})).is_ok());
        assert_eq!(
            patch(&set, json!({"voice_id": "Nobody"})).unwrap_err().code,
            ErrorCode::InvalidVoiceId
        );
        assert_eq!(
            patch(&set, json!({"voicemail_leave_enabled": true})).unwrap_err().code,
            ErrorCode::VoicemailMessageRequired
        );
        assert!(patch(&set, json!({"record_call": "no"})).is_err());
    }

    #[test]
    fn flags_default_on_and_accept_booleans_only() {
        let flags = NumberFlags::default()
            .apply(json!({"outbound_enabled": false}).as_object().unwrap())
            .unwrap();
        assert!(flags.inbound_enabled && !flags.outbound_enabled && flags.sms_reply_enabled);
        assert!(
            NumberFlags::default()
                .apply(json!({"inbound_enabled": 1}).as_object().unwrap())
                .is_err()
        );
    }
}
