//! Agents: the settings document (docs/api.md#agents; docs/decisions.md#agent-defaults, #custom-functions, #inactive-agents, #other-agent-defaults, #extraction-fields), its defaults, and the
//! all-or-nothing partial update used by both create and update.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AgentId, KeyId};
use serde_json::{Map, Value, json};

use crate::catalog::{self, TtsProviderKind};
use crate::error::ErrorCode;
use crate::phone;
use crate::validate::{
    ValidationError, as_bool, as_f64, as_int_in, as_str, check_len, json_type, normalize_keys,
    outbound_url,
};

/// Maximum `system_prompt` length (docs/decisions.md#agent-defaults).
pub const MAX_SYSTEM_PROMPT: usize = 16_000;
/// Maximum number of `data_extraction_fields` (docs/decisions.md#extraction-fields).
pub const MAX_EXTRACTION_FIELDS: usize = 25;
/// Maximum number of custom functions per agent.
pub const MAX_FUNCTIONS: usize = 20;

/// The default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a friendly, helpful phone assistant. Listen carefully, answer clearly and briefly, and ask a short follow-up question when you need more information.";

/// A stored agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// `agent_` + 16 hex.
    pub agent_id: AgentId,
    /// The owning account.
    pub account_id: AccountId,
    /// The key that created it (read-only).
    pub api_key_id: KeyId,
    /// Everything settable.
    pub settings: AgentSettings,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

/// `response_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResponseLength {
    /// One or two sentences.
    Short,
    /// A few sentences.
    Medium,
    /// Longer explanations.
    Long,
}

/// `recording_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingSource {
    /// The carrier records the whole call.
    Provider,
    /// The engine records the conversation.
    Nixflex,
}

/// `transfer_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransferType {
    /// Blind hand-off.
    Cold,
    /// Whispered hand-off.
    Warm,
}

/// `data_extraction_fields[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExtractionType {
    /// Free text.
    Text,
    /// One of `choices`.
    Selector,
    /// true/false.
    Boolean,
    /// A number.
    Number,
}

/// One post-call extraction field (docs/api.md#data-extraction-fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExtractionField {
    /// Field type.
    #[serde(rename = "type")]
    pub kind: ExtractionType,
    /// Key in `extracted_data`.
    pub name: String,
    /// Instruction for the extractor.
    pub description: String,
    /// Whether the value may be missing.
    #[serde(default)]
    pub optional: bool,
    /// Allowed values (selector only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// Example of the expected format (text only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_example: Option<String>,
}

/// A custom function the LLM may call (docs/decisions.md#custom-functions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionDef {
    /// Tool name shown to the LLM.
    pub name: String,
    /// What it does (read by the LLM).
    pub description: String,
    /// HTTPS endpoint called with the arguments.
    pub url: String,
    /// HTTP method (POST).
    pub method: String,
    /// JSON Schema of the arguments.
    #[schema(value_type = Object)]
    pub parameters: Value,
}

/// Every settable field of an agent, with the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct AgentSettings {
    pub name: String,
    pub system_prompt: String,
    pub welcome_message: String,
    pub voice_id: String,
    pub language: String,
    pub timezone: String,
    pub is_active: bool,
    pub temperature: f64,
    pub response_length: ResponseLength,
    pub ai_speaks_first: bool,
    pub dynamic_greeting: bool,
    pub interruption_sensitivity: u8,
    pub response_eagerness: u16,
    pub boosted_keywords: Option<String>,
    pub pickup_delay: u8,
    pub max_call_duration_seconds: u32,
    pub silence_hangup_seconds: u32,
    pub record_call: bool,
    pub recording_source: RecordingSource,
    pub amd_enabled: bool,
    pub dtmf_enabled: Option<bool>,
    pub voicemail_leave_enabled: bool,
    pub voicemail_message: Option<String>,
    pub webhook_url: Option<String>,
    pub func_end_call: bool,
    /// Stored for the SDK, which types it as a boolean; `null` in older documents reads as false.
    #[serde(deserialize_with = "null_as_false")]
    pub func_send_sms: bool,
    /// Stored for the SDK, which types it as a boolean; `null` in older documents reads as false.
    #[serde(deserialize_with = "null_as_false")]
    pub func_cold_transfer: bool,
    pub transfer_type: TransferType,
    pub transfer_number: Option<String>,
    pub transfer_whisper: Option<String>,
    pub speaking_rate: Option<f64>,
    pub greet_by_name: bool,
    pub fallback_message: String,
    pub post_call_sms_enabled: bool,
    pub post_call_sms_template: Option<String>,
    pub incall_sms_enabled: bool,
    pub data_extraction_fields: Vec<ExtractionField>,
    pub functions: Vec<FunctionDef>,
    pub enable_sms_reply: bool,
    pub llm_model: String,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            name: "Untitled Agent".to_owned(),
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_owned(),
            welcome_message: "Hello! How can I help you today?".to_owned(),
            voice_id: "Ashley".to_owned(),
            language: "multi".to_owned(),
            timezone: "Europe/London".to_owned(),
            is_active: true,
            temperature: 0.3,
            response_length: ResponseLength::Short,
            ai_speaks_first: true,
            dynamic_greeting: false,
            interruption_sensitivity: 50,
            response_eagerness: 200,
            boosted_keywords: None,
            pickup_delay: 10,
            max_call_duration_seconds: 300,
            silence_hangup_seconds: 10,
            record_call: true,
            recording_source: RecordingSource::Provider,
            amd_enabled: false,
            dtmf_enabled: None,
            voicemail_leave_enabled: false,
            voicemail_message: None,
            webhook_url: None,
            func_end_call: true,
            func_send_sms: false,
            func_cold_transfer: false,
            transfer_type: TransferType::Cold,
            transfer_number: None,
            transfer_whisper: None,
            speaking_rate: None,
            greet_by_name: true,
            fallback_message: "Sorry, I didn't catch that. Could you say it again?".to_owned(),
            post_call_sms_enabled: false,
            post_call_sms_template: None,
            incall_sms_enabled: false,
            data_extraction_fields: Vec::new(),
            functions: Vec::new(),
            enable_sms_reply: true,
            llm_model: "claude-haiku-4-5".to_owned(),
        }
    }
}

/// What validation needs to know about the server.
#[derive(Debug, Clone, Copy)]
pub struct AgentValidation {
    /// The TTS provider whose catalogue `voice_id` must be in.
    pub tts: TtsProviderKind,
    /// Whether webhook/function URLs may be http or private (local testing).
    pub allow_private_targets: bool,
}

/// The settable field names, in response order. Read-only and unknown keys are ignored.
pub const SETTABLE_FIELDS: &[&str] = &[
    "name",
    "system_prompt",
    "welcome_message",
    "voice_id",
    "language",
    "timezone",
    "is_active",
    "temperature",
    "response_length",
    "ai_speaks_first",
    "dynamic_greeting",
    "interruption_sensitivity",
    "response_eagerness",
    "boosted_keywords",
    "pickup_delay",
    "max_call_duration_seconds",
    "silence_hangup_seconds",
    "record_call",
    "recording_source",
    "amd_enabled",
    "dtmf_enabled",
    "voicemail_leave_enabled",
    "voicemail_message",
    "webhook_url",
    "func_end_call",
    "func_send_sms",
    "func_cold_transfer",
    "transfer_type",
    "transfer_number",
    "transfer_whisper",
    "speaking_rate",
    "greet_by_name",
    "fallback_message",
    "post_call_sms_enabled",
    "post_call_sms_template",
    "incall_sms_enabled",
    "data_extraction_fields",
    "functions",
    "enable_sms_reply",
    "llm_model",
];

impl AgentSettings {
    /// Applies a JSON body (create or update) on top of `self`, all or nothing: only the supplied
    /// fields change, `null` clears nullable fields, unknown and read-only keys are ignored, and
    /// the first invalid value rejects the whole body.
    ///
    /// Legacy inputs are mapped: `extraction_schema` → text `data_extraction_fields`,
    /// `interruption_sensitivity` `low|medium|high` → 25/50/75, `voice_speed` is ignored.
    ///
    /// # Errors
    /// The first [`ValidationError`] found.
    pub fn apply_patch(
        &self,
        body: Map<String, Value>,
        rules: AgentValidation,
    ) -> Result<AgentSettings, ValidationError> {
        let mut next = self.clone();
        let mut body = normalize_keys(body);
        if let Some(schema) = body.remove("extraction_schema")
            && !body.contains_key("data_extraction_fields")
        {
            body.insert("data_extraction_fields".to_owned(), legacy_extraction_schema(&schema)?);
        }
        for field in SETTABLE_FIELDS {
            if let Some(value) = body.get(*field) {
                next.set_field(field, value, rules)?;
            }
        }
        if next.voicemail_leave_enabled
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

    fn set_field(
        &mut self,
        field: &str,
        value: &Value,
        rules: AgentValidation,
    ) -> Result<(), ValidationError> {
        let nullable = matches!(
            field,
            "boosted_keywords"
                | "dtmf_enabled"
                | "voicemail_message"
                | "webhook_url"
                | "transfer_number"
                | "transfer_whisper"
                | "speaking_rate"
                | "post_call_sms_template"
        );
        if value.is_null() {
            if !nullable {
                return Err(ValidationError::invalid(
                    field,
                    format!("`{field}` cannot be null; omit it to keep the current value"),
                ));
            }
            match field {
                "boosted_keywords" => self.boosted_keywords = None,
                "dtmf_enabled" => self.dtmf_enabled = None,
                "voicemail_message" => self.voicemail_message = None,
                "webhook_url" => self.webhook_url = None,
                "transfer_number" => self.transfer_number = None,
                "transfer_whisper" => self.transfer_whisper = None,
                "speaking_rate" => self.speaking_rate = None,
                _ => self.post_call_sms_template = None,
            }
            return Ok(());
        }
        match field {
            "name" => {
                let name = as_str(field, value)?.trim();
                if name.is_empty() {
                    return Err(ValidationError::invalid(field, "`name` must not be empty"));
                }
                check_len(field, name, 100, ErrorCode::InvalidRequest)?;
                self.name = name.to_owned();
            }
            "system_prompt" => {
                let prompt = as_str(field, value)?;
                check_len(field, prompt, MAX_SYSTEM_PROMPT, ErrorCode::PromptTooLong)?;
                self.system_prompt = prompt.to_owned();
            }
            "welcome_message" => {
                let text = as_str(field, value)?;
                check_len(field, text, 1000, ErrorCode::InvalidRequest)?;
                self.welcome_message = text.to_owned();
            }
            "voice_id" => {
                let id = as_str(field, value)?;
                let voice = catalog::find_voice(rules.tts, id).ok_or_else(|| {
                    ValidationError::new(
                        ErrorCode::InvalidVoiceId,
                        field,
                        format!(
                            "`{id}` is not a voice of the {} catalogue; see GET /v1/voices",
                            rules.tts.as_str()
                        ),
                    )
                })?;
                self.voice_id = voice.voice_id.to_owned();
            }
            "language" => {
                let code = as_str(field, value)?;
                let language = catalog::find_language(code).ok_or_else(|| {
                    ValidationError::new(
                        ErrorCode::InvalidLanguage,
                        field,
                        format!("`{code}` is not a supported language; see GET /v1/languages"),
                    )
                })?;
                self.language = language.code.to_owned();
            }
            "timezone" => {
                let tz = as_str(field, value)?;
                let parsed: chrono_tz::Tz = tz.parse().map_err(|_| {
                    ValidationError::invalid(
                        field,
                        format!("`{tz}` is not an IANA time zone (e.g. Europe/London)"),
                    )
                })?;
                self.timezone = parsed.name().to_owned();
            }
            "is_active" => self.is_active = as_bool(field, value)?,
            "temperature" => {
                let t = as_f64(field, value)?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(ValidationError::invalid(
                        field,
                        "`temperature` must be between 0 and 1",
                    ));
                }
                self.temperature = t;
            }
            "response_length" => {
                self.response_length = parse_enum(field, value, &["short", "medium", "long"])?;
            }
            "ai_speaks_first" => self.ai_speaks_first = as_bool(field, value)?,
            "dynamic_greeting" => self.dynamic_greeting = as_bool(field, value)?,
            "interruption_sensitivity" => {
                let level = match value.as_str() {
                    Some(word) => match word.to_ascii_lowercase().as_str() {
                        "low" => 25,
                        "medium" => 50,
                        "high" => 75,
                        _ => {
                            return Err(ValidationError::invalid(
                                field,
                                "`interruption_sensitivity` must be 0–100 or low, medium, high",
                            ));
                        }
                    },
                    None => as_int_in(field, value, 0, 100)?,
                };
                self.interruption_sensitivity = u8::try_from(level).unwrap_or(50);
            }
            "response_eagerness" => {
                self.response_eagerness =
                    u16::try_from(as_int_in(field, value, 0, 1000)?).unwrap_or(200);
            }
            "boosted_keywords" => {
                let text = as_str(field, value)?;
                let keywords: Vec<&str> =
                    text.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
                if keywords.len() >= 50 {
                    return Err(ValidationError::invalid(
                        field,
                        format!(
                            "`boosted_keywords` has {} keywords; keep it under 50",
                            keywords.len()
                        ),
                    ));
                }
                if let Some(long) = keywords.iter().find(|k| k.chars().count() > 100) {
                    return Err(ValidationError::invalid(
                        field,
                        format!("keyword `{long}` is longer than 100 characters"),
                    ));
                }
                self.boosted_keywords =
                    if keywords.is_empty() { None } else { Some(keywords.join(", ")) };
            }
            "pickup_delay" => {
                self.pickup_delay = u8::try_from(as_int_in(field, value, 5, 30)?).unwrap_or(10);
            }
            "max_call_duration_seconds" => {
                self.max_call_duration_seconds =
                    u32::try_from(as_int_in(field, value, 60, 1800)?).unwrap_or(300);
            }
            "silence_hangup_seconds" => {
                self.silence_hangup_seconds =
                    u32::try_from(as_int_in(field, value, 5, 45)?).unwrap_or(10);
            }
            "record_call" => self.record_call = as_bool(field, value)?,
            "recording_source" => {
                self.recording_source = parse_enum(field, value, &["provider", "nixflex"])?;
            }
            "amd_enabled" => self.amd_enabled = as_bool(field, value)?,
            "dtmf_enabled" => self.dtmf_enabled = Some(as_bool(field, value)?),
            "voicemail_leave_enabled" => self.voicemail_leave_enabled = as_bool(field, value)?,
            "voicemail_message" => {
                let text = as_str(field, value)?;
                check_len(field, text, 2000, ErrorCode::InvalidRequest)?;
                self.voicemail_message = Some(text.to_owned());
            }
            "webhook_url" => {
                let raw = as_str(field, value)?;
                check_len(field, raw, 2048, ErrorCode::InvalidRequest)?;
                outbound_url(field, raw, rules.allow_private_targets)?;
                self.webhook_url = Some(raw.to_owned());
            }
            "func_end_call" => self.func_end_call = as_bool(field, value)?,
            "func_send_sms" => self.func_send_sms = as_bool(field, value)?,
            "func_cold_transfer" => self.func_cold_transfer = as_bool(field, value)?,
            "transfer_type" => self.transfer_type = parse_enum(field, value, &["cold", "warm"])?,
            "transfer_number" => {
                let raw = as_str(field, value)?;
                let number = phone::parse_e164(raw).ok_or_else(|| {
                    ValidationError::new(
                        ErrorCode::InvalidPhoneFormat,
                        field,
                        format!("`transfer_number` must be an E.164 number like +447446466847, not `{raw}`"),
                    )
                })?;
                self.transfer_number = Some(number);
            }
            "transfer_whisper" => {
                let text = as_str(field, value)?;
                check_len(field, text, 1000, ErrorCode::InvalidRequest)?;
                self.transfer_whisper = Some(text.to_owned());
            }
            "speaking_rate" => {
                let rate = as_f64(field, value)?;
                if !rate.is_finite() {
                    return Err(ValidationError::invalid(field, "`speaking_rate` must be finite"));
                }
                // Out-of-range rates are clamped, not rejected (docs/api.md#agent-fields).
                self.speaking_rate = Some(rate.clamp(0.5, 1.5));
            }
            "greet_by_name" => self.greet_by_name = as_bool(field, value)?,
            "fallback_message" => {
                let text = as_str(field, value)?;
                if text.trim().is_empty() {
                    return Err(ValidationError::invalid(
                        field,
                        "`fallback_message` must not be empty",
                    ));
                }
                check_len(field, text, 1000, ErrorCode::InvalidRequest)?;
                self.fallback_message = text.to_owned();
            }
            "post_call_sms_enabled" => self.post_call_sms_enabled = as_bool(field, value)?,
            "post_call_sms_template" => {
                let text = as_str(field, value)?;
                check_len(field, text, 1600, ErrorCode::InvalidRequest)?;
                self.post_call_sms_template = Some(text.to_owned());
            }
            "incall_sms_enabled" => self.incall_sms_enabled = as_bool(field, value)?,
            "data_extraction_fields" => {
                self.data_extraction_fields = parse_extraction_fields(value)?;
            }
            "functions" => self.functions = parse_functions(value, rules.allow_private_targets)?,
            "enable_sms_reply" => self.enable_sms_reply = as_bool(field, value)?,
            "llm_model" => {
                let model = as_str(field, value)?.trim();
                if model.is_empty() {
                    return Err(ValidationError::invalid(field, "`llm_model` must not be empty"));
                }
                check_len(field, model, 100, ErrorCode::InvalidRequest)?;
                self.llm_model = model.to_owned();
            }
            _ => {}
        }
        Ok(())
    }

    /// The settings as the API's JSON fields (every settable field, in table order).
    pub fn to_json_fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => {
                let mut ordered = Map::with_capacity(map.len());
                for field in SETTABLE_FIELDS {
                    if let Some(value) = map.get(*field) {
                        ordered.insert((*field).to_owned(), value.clone());
                    }
                }
                ordered
            }
            _ => Map::new(),
        }
    }
}

/// Reads a boolean, with `null` as false (documents written before the field became a boolean).
fn null_as_false<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &Value,
    allowed: &[&str],
) -> Result<T, ValidationError> {
    let bad = || {
        ValidationError::invalid(field, format!("`{field}` must be one of: {}", allowed.join(", ")))
    };
    let text = value.as_str().ok_or_else(bad)?.to_ascii_lowercase();
    if !allowed.contains(&text.as_str()) {
        return Err(bad());
    }
    serde_json::from_value(Value::String(text)).map_err(|_| bad())
}

fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_extraction_fields(value: &Value) -> Result<Vec<ExtractionField>, ValidationError> {
    const FIELD: &str = "data_extraction_fields";
    let items = value.as_array().ok_or_else(|| {
        ValidationError::invalid(
            FIELD,
            format!("`{FIELD}` must be an array, not {}", json_type(value)),
        )
    })?;
    if items.len() > MAX_EXTRACTION_FIELDS {
        return Err(ValidationError::invalid(
            FIELD,
            format!("at most {MAX_EXTRACTION_FIELDS} extraction fields are allowed"),
        ));
    }
    let mut out: Vec<ExtractionField> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |key: &str| format!("{FIELD}[{i}].{key}");
        let obj = item.as_object().ok_or_else(|| {
            ValidationError::invalid(
                &format!("{FIELD}[{i}]"),
                "each extraction field must be an object",
            )
        })?;
        let obj = normalize_keys(obj.clone());
        let kind: ExtractionType = match obj.get("type") {
            None | Some(Value::Null) => {
                return Err(ValidationError::invalid(&at("type"), "`type` is required"));
            }
            Some(v) => parse_enum(&at("type"), v, &["text", "selector", "boolean", "number"])?,
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) if is_field_name(s) => s.clone(),
            _ => {
                return Err(ValidationError::invalid(
                    &at("name"),
                    "`name` is required and must match ^[a-z][a-z0-9_]{0,63}$",
                ));
            }
        };
        if out.iter().any(|f| f.name == name) {
            return Err(ValidationError::invalid(
                &at("name"),
                format!("duplicate field name `{name}`"),
            ));
        }
        let description = match obj.get("description") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(ValidationError::invalid(
                    &at("description"),
                    "`description` is required",
                ));
            }
        };
        check_len(&at("description"), &description, 1000, ErrorCode::InvalidRequest)?;
        let optional = match obj.get("optional") {
            None | Some(Value::Null) => false,
            Some(v) => as_bool(&at("optional"), v)?,
        };
        let choices = match (kind, obj.get("choices")) {
            (ExtractionType::Selector, Some(Value::Array(choices))) => {
                if choices.is_empty() || choices.len() > 50 {
                    return Err(ValidationError::invalid(
                        &at("choices"),
                        "a selector needs between 1 and 50 choices",
                    ));
                }
                let mut list = Vec::with_capacity(choices.len());
                for choice in choices {
                    match choice.as_str() {
                        Some(s) if !s.trim().is_empty() && s.chars().count() <= 200 => {
                            list.push(s.to_owned());
                        }
                        _ => {
                            return Err(ValidationError::invalid(
                                &at("choices"),
                                "choices must be non-empty strings of at most 200 characters",
                            ));
                        }
                    }
                }
                Some(list)
            }
            (ExtractionType::Selector, _) => {
                return Err(ValidationError::invalid(
                    &at("choices"),
                    "a selector field needs a `choices` array",
                ));
            }
            (_, None | Some(Value::Null)) => None,
            (_, Some(_)) => {
                return Err(ValidationError::invalid(
                    &at("choices"),
                    "`choices` is only allowed on selector fields",
                ));
            }
        };
        let format_example = match (kind, obj.get("format_example")) {
            (_, None | Some(Value::Null)) => None,
            (ExtractionType::Text, Some(Value::String(s))) => {
                check_len(&at("format_example"), s, 200, ErrorCode::InvalidRequest)?;
                Some(s.clone())
            }
            _ => {
                return Err(ValidationError::invalid(
                    &at("format_example"),
                    "`format_example` is a string and only allowed on text fields",
                ));
            }
        };
        out.push(ExtractionField { kind, name, description, optional, choices, format_example });
    }
    Ok(out)
}

/// Maps the legacy flat `extraction_schema` (`{name: description}`) to text fields.
fn legacy_extraction_schema(schema: &Value) -> Result<Value, ValidationError> {
    match schema {
        Value::Null => Ok(Value::Array(Vec::new())),
        Value::Object(map) => Ok(Value::Array(
            map.iter()
                .map(|(name, description)| {
                    json!({"type": "text", "name": name, "description": description})
                })
                .collect(),
        )),
        other => Err(ValidationError::invalid(
            "extraction_schema",
            format!("`extraction_schema` must be an object, not {}", json_type(other)),
        )),
    }
}

fn parse_functions(
    value: &Value,
    allow_private: bool,
) -> Result<Vec<FunctionDef>, ValidationError> {
    const FIELD: &str = "functions";
    let items = value.as_array().ok_or_else(|| {
        ValidationError::invalid(
            FIELD,
            format!("`functions` must be an array, not {}", json_type(value)),
        )
    })?;
    if items.len() > MAX_FUNCTIONS {
        return Err(ValidationError::invalid(
            FIELD,
            format!("at most {MAX_FUNCTIONS} functions are allowed"),
        ));
    }
    let mut out: Vec<FunctionDef> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |key: &str| format!("{FIELD}[{i}].{key}");
        let obj = item.as_object().ok_or_else(|| {
            ValidationError::invalid(&format!("{FIELD}[{i}]"), "each function must be an object")
        })?;
        let name = match obj.get("name") {
            Some(Value::String(s))
                if !s.is_empty()
                    && s.len() <= 64
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                s.clone()
            }
            _ => {
                return Err(ValidationError::invalid(
                    &at("name"),
                    "`name` is required and must match ^[A-Za-z0-9_-]{1,64}$",
                ));
            }
        };
        if out.iter().any(|f| f.name == name) {
            return Err(ValidationError::invalid(
                &at("name"),
                format!("duplicate function `{name}`"),
            ));
        }
        let description = match obj.get("description") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(ValidationError::invalid(
                    &at("description"),
                    "`description` is required",
                ));
            }
        };
        check_len(&at("description"), &description, 1000, ErrorCode::InvalidRequest)?;
        let url = match obj.get("url") {
            Some(Value::String(s)) => {
                outbound_url(&at("url"), s, allow_private)?;
                s.clone()
            }
            _ => return Err(ValidationError::invalid(&at("url"), "`url` is required")),
        };
        let method = match obj.get("method") {
            None | Some(Value::Null) => "POST".to_owned(),
            Some(Value::String(m)) if m.eq_ignore_ascii_case("post") => "POST".to_owned(),
            Some(_) => {
                return Err(ValidationError::invalid(&at("method"), "`method` must be POST"));
            }
        };
        let parameters = match obj.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(Value::Object(schema))
                if schema.get("type").and_then(Value::as_str).is_none_or(|t| t == "object") =>
            {
                let mut schema = schema.clone();
                schema.entry("type").or_insert_with(|| json!("object"));
                Value::Object(schema)
            }
            Some(_) => {
                return Err(ValidationError::invalid(
                    &at("parameters"),
                    "`parameters` must be a JSON Schema object with \"type\": \"object\"",
                ));
            }
        };
        out.push(FunctionDef { name, description, url, method, parameters });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: AgentValidation =
        AgentValidation { tts: TtsProviderKind::Inworld, allow_private_targets: false };

    fn patch(base: &AgentSettings, body: Value) -> Result<AgentSettings, ValidationError> {
        base.apply_patch(body.as_object().unwrap().clone(), RULES)
    }

    #[test]
    fn an_empty_body_yields_the_documented_defaults() {
        let agent = patch(&AgentSettings::default(), json!({})).unwrap();
        assert_eq!(agent.name, "Untitled Agent");
        assert_eq!(agent.voice_id, "Ashley");
        assert_eq!(agent.language, "multi");
        assert_eq!(agent.max_call_duration_seconds, 300);
        assert_eq!(agent.silence_hangup_seconds, 10);
        assert!((agent.temperature - 0.3).abs() < f64::EPSILON);
        assert_eq!(agent.timezone, "Europe/London");
        assert_eq!(agent.response_length, ResponseLength::Short);
        assert_eq!(agent.llm_model, "claude-haiku-4-5");
    }

    #[test]
    fn sdk_boolean_flags_read_null_documents_as_false() {
        let stored: AgentSettings =
            serde_json::from_value(json!({"func_send_sms": null, "func_cold_transfer": null}))
                .unwrap();
        assert!(!stored.func_send_sms && !stored.func_cold_transfer);
        let json = serde_json::to_value(AgentSettings::default()).unwrap();
        assert_eq!(
            (&json["func_send_sms"], &json["func_cold_transfer"]),
            (&json!(false), &json!(false))
        );
    }

    #[test]
    fn null_clears_nullable_fields_and_is_rejected_on_others() {
        let base =
            patch(&AgentSettings::default(), json!({"transfer_number": "+447446466847"})).unwrap();
        let cleared = patch(&base, json!({"transfer_number": null})).unwrap();
        assert_eq!(cleared.transfer_number, None);
        let err = patch(&base, json!({"name": null})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("name"));
    }

    #[test]
    fn one_bad_field_rejects_the_whole_update() {
        let base = AgentSettings::default();
        let err = patch(&base, json!({"name": "New", "temperature": 3})).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.field.as_deref(), Some("temperature"));
    }

    #[test]
    fn specific_codes_for_prompt_voice_language_and_voicemail() {
        let base = AgentSettings::default();
        let long = "x".repeat(MAX_SYSTEM_PROMPT + 1);
        assert_eq!(
            patch(&base, json!({"system_prompt": long})).unwrap_err().code,
            ErrorCode::PromptTooLong
        );
        assert!(patch(&base, json!({"system_prompt": "x".repeat(MAX_SYSTEM_PROMPT)})).is_ok());
        assert_eq!(
            patch(&base, json!({"voice_id": "Nope"})).unwrap_err().code,
            ErrorCode::InvalidVoiceId
        );
        assert_eq!(
            patch(&base, json!({"language": "xx"})).unwrap_err().code,
            ErrorCode::InvalidLanguage
        );
        assert_eq!(
            patch(&base, json!({"voicemail_leave_enabled": true})).unwrap_err().code,
            ErrorCode::VoicemailMessageRequired
        );
        assert!(
            patch(&base, json!({"voicemail_leave_enabled": true, "voicemail_message": "Hi"}))
                .is_ok()
        );
        assert_eq!(
            patch(&base, json!({"transfer_number": "0738"})).unwrap_err().code,
            ErrorCode::InvalidPhoneFormat
        );
    }

    #[test]
    fn legacy_inputs_are_mapped() {
        let base = AgentSettings::default();
        let agent = patch(
            &base,
            json!({"interruptionSensitivity": "high", "extraction_schema": {"budget": "The budget"}, "voice_speed": 2}),
        )
        .unwrap();
        assert_eq!(agent.interruption_sensitivity, 75);
        assert_eq!(agent.data_extraction_fields.len(), 1);
        assert_eq!(agent.data_extraction_fields[0].kind, ExtractionType::Text);
        assert_eq!(patch(&base, json!({"speaking_rate": 9})).unwrap().speaking_rate, Some(1.5));
    }

    #[test]
    fn extraction_fields_are_validated_item_by_item() {
        let base = AgentSettings::default();
        let err = patch(
            &base,
            json!({"data_extraction_fields": [
                {"type": "text", "name": "ok", "description": "d"},
                {"type": "selector", "name": "tier", "description": "d"}
            ]}),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("data_extraction_fields[1].choices"));
        let err = patch(
            &base,
            json!({"data_extraction_fields": [{"type": "text", "name": "Bad Name", "description": "d"}]}),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("data_extraction_fields[0].name"));
        let too_many: Vec<Value> = (0..26)
            .map(|i| json!({"type": "number", "name": format!("f{i}"), "description": "d"}))
            .collect();
        assert!(patch(&base, json!({"data_extraction_fields": too_many})).is_err());
    }

    #[test]
    fn functions_need_public_https_urls() {
        let base = AgentSettings::default();
        let ok = patch(
            &base,
            json!({"functions": [{"name": "lookup", "description": "Find an order", "url": "https://example.com/f"}]}),
        )
        .unwrap();
        assert_eq!(ok.functions[0].method, "POST");
        assert_eq!(ok.functions[0].parameters["type"], "object");
        let err = patch(
            &base,
            json!({"functions": [{"name": "lookup", "description": "d", "url": "https://127.0.0.1/f"}]}),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("functions[0].url"));
    }
}
