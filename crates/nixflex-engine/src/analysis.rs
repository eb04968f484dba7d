//! Post-call analysis (docs/engine.md#post-call-analysis): one LLM call with structured output
//! over the transcript, whose answer is checked field by field before anything is stored.
//!
//! The model is made to call a single tool, `record_call_analysis`, whose input schema lists the
//! summary, sentiment, success, caller name and reason, the caller-context notes (`last_call`,
//! `open_item`) and one property per `data_extraction_fields` entry. Its answer is never trusted
//! as is: [`Analysis::from_tool_input`] keeps only values of the declared type (selectors only
//! one of their choices), turns everything else — wrong types, unknown choices, missing fields —
//! into `null`, and drops keys the agent did not ask for, so nothing is invented.
//!
//! Running it after a call (a durable job, retried on provider failure) comes with the jobs
//! queue; this module is the part that does not depend on it.

use futures::StreamExt as _;
use nixflex_core::agent::{AgentSettings, ExtractionField, ExtractionType};
use nixflex_core::call::{CallRecord, TranscriptRole};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::{LlmEvent, LlmMessage, LlmProvider, LlmRequest, ToolSpec};
use serde_json::{Map, Value, json};

/// Calls connected for less than this are not analysed (nothing useful was said).
pub const MIN_CONNECTED_SECONDS: i64 = 5;

/// The tool the model must call with its analysis.
pub const TOOL_NAME: &str = "record_call_analysis";

/// Longest summary kept, in characters.
const MAX_SUMMARY_CHARS: usize = 1_000;

/// Longest short text kept (names, reasons, notes), in characters.
const MAX_NOTE_CHARS: usize = 500;

/// The caller's mood, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sentiment {
    /// Pleased.
    Happy,
    /// Neither.
    Neutral,
    /// Annoyed or upset.
    Frustrated,
}

impl Sentiment {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Happy => "happy",
            Self::Neutral => "neutral",
            Self::Frustrated => "frustrated",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "happy" => Some(Self::Happy),
            "neutral" => Some(Self::Neutral),
            "frustrated" => Some(Self::Frustrated),
            _ => None,
        }
    }
}

/// What the analysis of one call found. Every field is `None`/`null` when the model did not give
/// a valid value for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    /// One or two sentences.
    pub call_summary: Option<String>,
    /// The caller's mood.
    pub caller_sentiment: Option<Sentiment>,
    /// Whether the caller got what they needed.
    pub call_successful: Option<bool>,
    /// The caller's name, if they said it.
    pub caller_name: Option<String>,
    /// Why they called, in a few words.
    pub call_reason: Option<String>,
    /// What the caller wanted (for their caller-context record).
    pub last_call: Option<String>,
    /// Anything still pending after the call.
    pub open_item: Option<String>,
    /// One key per `data_extraction_fields` entry, each a value of its type or `null`.
    pub extracted_data: Map<String, Value>,
}

/// Why an analysis produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The provider failed (worth retrying when the error says so).
    #[error("the LLM failed: {0}")]
    Provider(#[from] ProviderError),
    /// The model answered without calling the tool or with arguments that are not JSON.
    #[error("the LLM gave no structured analysis")]
    NoStructuredOutput,
}

/// Whether a call is worth analysing: connected at least [`MIN_CONNECTED_SECONDS`], not a
/// voicemail, and something was said.
pub fn should_analyse(call: &CallRecord) -> bool {
    !call.voicemail_detected
        && call.duration_seconds.unwrap_or(0) >= MIN_CONNECTED_SECONDS
        && !call.transcript.is_empty()
}

/// The JSON Schema of one extraction field's value (always nullable: absent means `null`).
fn field_schema(field: &ExtractionField) -> Value {
    let mut description = field.description.clone();
    if let Some(example) = &field.format_example {
        description.push_str(&format!(" Format like: {example}."));
    }
    description.push_str(" Use null when the call did not say.");
    match field.kind {
        ExtractionType::Text => json!({"type": ["string", "null"], "description": description}),
        ExtractionType::Number => json!({"type": ["number", "null"], "description": description}),
        ExtractionType::Boolean => {
            json!({"type": ["boolean", "null"], "description": description})
        }
        ExtractionType::Selector => {
            let mut choices: Vec<Value> =
                field.choices.iter().flatten().map(|c| Value::String(c.clone())).collect();
            choices.push(Value::Null);
            json!({"type": ["string", "null"], "enum": choices, "description": description})
        }
    }
}

/// The tool the model fills in.
pub fn tool_spec(fields: &[ExtractionField]) -> ToolSpec {
    let extracted: Map<String, Value> =
        fields.iter().map(|f| (f.name.clone(), field_schema(f))).collect();
    let nullable_text =
        |description: &str| json!({"type": ["string", "null"], "description": description});
    ToolSpec {
        name: TOOL_NAME.to_owned(),
        description: "Record the analysis of the phone call above.".to_owned(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "call_summary": {"type": "string", "description": "One or two sentences: what the call was about and how it ended."},
                "caller_sentiment": {"type": "string", "enum": ["happy", "neutral", "frustrated"]},
                "call_successful": {"type": "boolean", "description": "Whether the caller got what they needed."},
                "caller_name": nullable_text("The caller's name if they said it, else null."),
                "call_reason": nullable_text("Why they called, in a few words."),
                "last_call": nullable_text("What the caller wanted (not what happened), for the next call."),
                "open_item": nullable_text("Anything still pending after the call, else null."),
                "extracted_data": {
                    "type": "object",
                    "properties": extracted,
                    "required": fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                    "additionalProperties": false,
                },
            },
            "required": ["call_summary", "caller_sentiment", "call_successful", "extracted_data"],
        }),
    }
}

/// The analysis request for a finished call: the transcript, and the tool the model must call.
pub fn request(agent: &AgentSettings, call: &CallRecord) -> LlmRequest {
    let mut transcript = String::new();
    for line in &call.transcript {
        let who = match line.role {
            TranscriptRole::Agent => "Agent",
            TranscriptRole::Caller => "Caller",
        };
        transcript.push_str(&format!("{who}: {}\n", line.text));
    }
    let mut request = LlmRequest::new(
        agent.llm_model.clone(),
        vec![LlmMessage::user(format!("The transcript of the call:\n\n{transcript}"))],
    );
    request.system = Some(format!(
        "You analyse phone calls answered by an AI agent named {}. Read the transcript and call \
         {TOOL_NAME} once. Use only what was said in the call: when something was not said, use \
         null. Never guess or invent values. Write in the language of the call.",
        agent.name
    ));
    request.temperature = Some(0.0);
    request.max_tokens = 1024;
    request.tools = vec![tool_spec(&agent.data_extraction_fields)];
    request.tool_choice = Some(TOOL_NAME.to_owned());
    request
}

fn text(value: Option<&Value>, max_chars: usize) -> Option<String> {
    let text = value?.as_str()?.trim();
    (!text.is_empty()).then(|| text.chars().take(max_chars).collect())
}

/// One extraction value checked against its field: the declared type or `null`.
fn checked_value(field: &ExtractionField, value: Option<&Value>) -> Value {
    let Some(value) = value else { return Value::Null };
    match field.kind {
        ExtractionType::Text => {
            text(Some(value), MAX_NOTE_CHARS).map_or(Value::Null, Value::String)
        }
        ExtractionType::Number => match value {
            Value::Number(n) => Value::Number(n.clone()),
            _ => Value::Null,
        },
        ExtractionType::Boolean => match value {
            Value::Bool(b) => Value::Bool(*b),
            _ => Value::Null,
        },
        ExtractionType::Selector => {
            let Some(raw) = value.as_str() else { return Value::Null };
            field
                .choices
                .iter()
                .flatten()
                .find(|choice| choice.eq_ignore_ascii_case(raw.trim()))
                .map_or(Value::Null, |choice| Value::String(choice.clone()))
        }
    }
}

impl Analysis {
    /// Reads the tool's input, keeping only valid values (see the module docs).
    pub fn from_tool_input(input: &Value, fields: &[ExtractionField]) -> Self {
        let get = |name: &str| input.get(name);
        let extracted = get("extracted_data").and_then(Value::as_object);
        Self {
            call_summary: text(get("call_summary"), MAX_SUMMARY_CHARS),
            caller_sentiment: get("caller_sentiment")
                .and_then(Value::as_str)
                .and_then(Sentiment::parse),
            call_successful: get("call_successful").and_then(Value::as_bool),
            caller_name: text(get("caller_name"), MAX_NOTE_CHARS),
            call_reason: text(get("call_reason"), MAX_NOTE_CHARS),
            last_call: text(get("last_call"), MAX_NOTE_CHARS),
            open_item: text(get("open_item"), MAX_NOTE_CHARS),
            extracted_data: fields
                .iter()
                .map(|f| (f.name.clone(), checked_value(f, extracted.and_then(|m| m.get(&f.name)))))
                .collect(),
        }
    }
}

/// Runs the analysis request and reads the tool call from the stream.
///
/// # Errors
/// [`AnalysisError::Provider`] when the LLM fails; [`AnalysisError::NoStructuredOutput`] when it
/// answers without a usable tool call.
pub async fn analyse(
    llm: &dyn LlmProvider,
    request: LlmRequest,
    fields: &[ExtractionField],
) -> Result<Analysis, AnalysisError> {
    let mut stream = llm.stream(request).await?;
    let mut arguments = None;
    while let Some(event) = stream.next().await {
        match event? {
            LlmEvent::ToolCall { name, arguments_json, .. } if name == TOOL_NAME => {
                arguments = Some(arguments_json);
            }
            LlmEvent::Done { .. } => break,
            LlmEvent::ToolCall { .. } | LlmEvent::TextDelta(_) => {}
        }
    }
    let input: Value = arguments
        .and_then(|json| serde_json::from_str(&json).ok())
        .filter(Value::is_object)
        .ok_or(AnalysisError::NoStructuredOutput)?;
    Ok(Analysis::from_tool_input(&input, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: ExtractionType, name: &str, choices: Option<&[&str]>) -> ExtractionField {
        ExtractionField {
            kind,
            name: name.to_owned(),
            description: format!("the {name}"),
            optional: true,
            choices: choices.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            format_example: None,
        }
    }

    fn fields() -> Vec<ExtractionField> {
        vec![
            field(ExtractionType::Text, "postcode", None),
            field(ExtractionType::Number, "party_size", None),
            field(ExtractionType::Boolean, "wants_callback", None),
            field(ExtractionType::Selector, "department", Some(&["Sales", "Support"])),
        ]
    }

    #[test]
    fn values_of_the_wrong_type_or_missing_become_null_and_nothing_is_invented() {
        let input = json!({
            "call_summary": "  The caller booked a table for four.  ",
            "caller_sentiment": "Happy",
            "call_successful": "yes",
            "caller_name": "",
            "open_item": null,
            "extracted_data": {
                "postcode": 12345,
                "party_size": "four",
                "wants_callback": true,
                "department": "support",
                "made_up": "x",
            },
        });
        let analysis = Analysis::from_tool_input(&input, &fields());
        assert_eq!(analysis.call_summary.as_deref(), Some("The caller booked a table for four."));
        assert_eq!(analysis.caller_sentiment, Some(Sentiment::Happy));
        assert_eq!(analysis.call_successful, None, "a string is not a boolean");
        assert_eq!(
            (analysis.caller_name, analysis.call_reason, analysis.open_item),
            (None, None, None)
        );
        assert_eq!(
            Value::Object(analysis.extracted_data),
            json!({"postcode": null, "party_size": null, "wants_callback": true, "department": "Support"})
        );
        let empty = Analysis::from_tool_input(&json!({}), &fields());
        assert_eq!(
            Value::Object(empty.extracted_data),
            json!({"postcode": null, "party_size": null, "wants_callback": null, "department": null})
        );
        assert_eq!(empty.caller_sentiment, None);
        let unknown = Analysis::from_tool_input(
            &json!({"caller_sentiment": "ecstatic", "extracted_data": {"department": "Billing", "party_size": 4}}),
            &fields(),
        );
        assert_eq!(unknown.caller_sentiment, None);
        assert_eq!(unknown.extracted_data["department"], Value::Null);
        assert_eq!(unknown.extracted_data["party_size"], json!(4));
    }

    #[test]
    fn the_tool_schema_lists_every_field_with_its_type_and_choices() {
        let spec = tool_spec(&fields());
        let extracted = &spec.input_schema["properties"]["extracted_data"];
        assert_eq!(
            extracted["required"],
            json!(["postcode", "party_size", "wants_callback", "department"])
        );
        assert_eq!(extracted["properties"]["party_size"]["type"], json!(["number", "null"]));
        assert_eq!(
            extracted["properties"]["department"]["enum"],
            json!(["Sales", "Support", null])
        );
        assert_eq!(extracted["additionalProperties"], json!(false));
    }

    #[test]
    fn short_calls_voicemail_and_silence_are_not_analysed() {
        let mut call = call_with(30, 1);
        assert!(should_analyse(&call));
        call.duration_seconds = Some(4);
        assert!(!should_analyse(&call));
        let mut call = call_with(30, 1);
        call.voicemail_detected = true;
        assert!(!should_analyse(&call));
        assert!(!should_analyse(&call_with(30, 0)));
    }

    pub(super) fn call_with(seconds: i64, lines: usize) -> CallRecord {
        let now = chrono::Utc::now();
        CallRecord {
            call_id: "call_1".into(),
            account_id: "acct_1".into(),
            agent_id: None,
            direction: nixflex_core::call::Direction::Inbound,
            from_number: "+447386172392".to_owned(),
            to_number: "+447446466847".to_owned(),
            twilio_call_sid: None,
            call_status: nixflex_core::call::CallStatus::Completed,
            ended_reason: None,
            started_at: now,
            answered_at: Some(now),
            ended_at: Some(now),
            duration_seconds: Some(seconds),
            transcript: (0..lines)
                .map(|i| nixflex_core::call::TranscriptEntry {
                    role: TranscriptRole::Caller,
                    text: format!("line {i}"),
                    timestamp_ms: 0,
                })
                .collect(),
            turns: Vec::new(),
            avg_latency_ms: None,
            recording: None,
            call_summary: None,
            caller_sentiment: None,
            call_successful: None,
            extracted_data: Map::new(),
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

    #[test]
    fn the_request_forces_the_tool_over_the_transcript() {
        let agent = AgentSettings { data_extraction_fields: fields(), ..AgentSettings::default() };
        let request = request(&agent, &call_with(30, 2));
        assert_eq!(request.tool_choice.as_deref(), Some(TOOL_NAME));
        assert_eq!(request.tools.len(), 1);
        assert!(request.messages[0].text().contains("Caller: line 1"));
        assert_eq!(request.temperature, Some(0.0));
    }
}
