//! Custom functions during a call (docs/engine.md#custom-functions): the agent's `functions`
//! are offered to the model as tools; when it calls one, the engine POSTs
//! `{"name", "args", "variables"}` to the function's URL, signed like webhooks
//! (`X-Nixflex-Signature`, docs/protocols.md#nixflex-signatures), under the outbound-URL rules
//! (https only, no private or metadata address, checked again after DNS), with a 3 s limit. The
//! answer (or what went wrong) becomes the tool result the model continues from.
//!
//! Each invocation runs on its own task, so a barge-in that cancels the turn does not cancel
//! it: it finishes (or times out) and is logged on the call either way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nixflex_core::agent::FunctionDef;
use nixflex_core::call::{FunctionCallLog, FunctionCallStatus};
use nixflex_pipeline::llm::ToolSpec;
use nixflex_providers::customer::CustomerHttp;
use serde_json::{Value, json};
use tokio::time::Instant;

/// How long a function may take to answer (the legacy limit: anything slower is an awkward
/// silence on the phone).
pub(crate) const FUNCTION_TIMEOUT: Duration = Duration::from_secs(3);
/// After this long without a result, the agent says [`FILLER_LINE`] once.
pub(crate) const FILLER_AFTER: Duration = Duration::from_secs(1);
/// What the agent says while a slow function is running.
pub(crate) const FILLER_LINE: &str = "One moment while I check that.";
/// Rounds of function calls one agent turn may run; further calls are not made, so a model
/// cannot keep the caller waiting in a loop.
pub(crate) const MAX_TOOL_ROUNDS: usize = 3;
/// The most of a function's answer the model is given (characters).
const MAX_RESULT_CHARS: usize = 4000;
/// The most of a function's answer that is read (bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a turn needs to run the agent's functions: their definitions, the secrets that sign the
/// requests, the template variables sent with each, and the call's clock.
pub(crate) struct FunctionKit {
    /// The agent's functions.
    pub(crate) functions: Vec<FunctionDef>,
    /// The account's active key secrets (receivers verify with any of them).
    pub(crate) secrets: Vec<String>,
    /// The 14 template variables, as of the start of the turn.
    pub(crate) variables: BTreeMap<String, String>,
    /// When the call was answered (`at_ms` counts from here).
    pub(crate) call_started: Instant,
    /// The client for customer endpoints.
    pub(crate) http: CustomerHttp,
}

impl std::fmt::Debug for FunctionKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("FunctionKit")
            .field("functions", &self.functions.iter().map(|f| &f.name).collect::<Vec<_>>())
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// The tools an agent's functions offer the model (name, description, parameter schema as
/// stored).
pub(crate) fn tool_specs(functions: &[FunctionDef]) -> Vec<ToolSpec> {
    functions
        .iter()
        .map(|function| ToolSpec {
            name: function.name.clone(),
            description: function.description.clone(),
            input_schema: function.parameters.clone(),
        })
        .collect()
}

/// How one invocation ended: what is logged, and what the model is told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// The call-record entry.
    pub(crate) log: FunctionCallLog,
    /// The tool result for the model.
    pub(crate) content: String,
    /// Whether the model is told the function failed.
    pub(crate) is_error: bool,
}

/// The request body of docs/engine.md#custom-functions: `{"name", "args", "variables"}`.
pub(crate) fn request_body(
    name: &str,
    args: &Value,
    variables: &BTreeMap<String, String>,
) -> Value {
    json!({ "name": name, "args": args, "variables": variables })
}

/// The tool result from a 2xx answer: the `result` field when the body is a JSON object that
/// has one, else the whole body (JSON or text), shortened to [`MAX_RESULT_CHARS`].
pub(crate) fn result_for_model(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let result = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut object)) if object.contains_key("result") => {
            match object.remove("result").unwrap_or(Value::Null) {
                Value::String(text) => text,
                other => other.to_string(),
            }
        }
        Ok(Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => text.trim().to_owned(),
    };
    let result =
        if result.is_empty() { "(the function returned nothing)".to_owned() } else { result };
    if result.chars().count() > MAX_RESULT_CHARS {
        let mut cut: String = result.chars().take(MAX_RESULT_CHARS).collect();
        cut.push_str(" …(truncated)");
        cut
    } else {
        result
    }
}

/// Calls function `name` with the model's arguments and returns how it went. Never fails: every
/// problem becomes an error result for the model and a log entry.
pub(crate) async fn invoke(kit: &FunctionKit, name: &str, arguments_json: &str) -> Outcome {
    let at = Instant::now();
    let arguments: Value =
        serde_json::from_str(arguments_json).unwrap_or_else(|_| Value::Object(Default::default()));
    let finish = |status: FunctionCallStatus, http_status: Option<u16>, content: String| {
        let elapsed = |to: Instant| u64::try_from(to.saturating_duration_since(at).as_millis());
        Outcome {
            log: FunctionCallLog {
                name: name.to_owned(),
                arguments: arguments.clone(),
                status,
                http_status,
                latency_ms: elapsed(Instant::now()).unwrap_or(u64::MAX),
                at_ms: u64::try_from(at.saturating_duration_since(kit.call_started).as_millis())
                    .unwrap_or(u64::MAX),
            },
            is_error: status != FunctionCallStatus::Ok,
            content,
        }
    };
    let Some(function) = kit.functions.iter().find(|f| f.name == name) else {
        return finish(
            FunctionCallStatus::Error,
            None,
            format!("There is no function named {name:?}; nothing was done."),
        );
    };
    let body = request_body(name, &arguments, &kit.variables);
    let call = async {
        let response =
            kit.http.post_signed(&function.url, &body, &kit.secrets, FUNCTION_TIMEOUT).await?;
        let status = response.status().as_u16();
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() >= MAX_BODY_BYTES {
                bytes.truncate(MAX_BODY_BYTES);
                break;
            }
        }
        Ok::<_, nixflex_providers::customer::CustomerHttpError>((status, bytes))
    };
    match tokio::time::timeout(FUNCTION_TIMEOUT, call).await {
        Ok(Ok((status, bytes))) if (200..300).contains(&status) => {
            finish(FunctionCallStatus::Ok, Some(status), result_for_model(&bytes))
        }
        Ok(Ok((status, _))) => {
            tracing::info!(
                message = "A custom function answered with an error status.",
                function = name,
                http_status = status
            );
            finish(
                FunctionCallStatus::Error,
                Some(status),
                format!("The function failed (HTTP {status}). Its result is not available."),
            )
        }
        Ok(Err(error)) if error.is_refused() => {
            tracing::warn!(message = "A custom function's URL was refused by the outbound-URL rules.", function = name, error = %error);
            finish(
                FunctionCallStatus::Refused,
                None,
                "The function could not be called (its address is not allowed). Its result is not available.".to_owned(),
            )
        }
        Ok(Err(error)) if error.is_timeout() => timed_out(name, finish),
        Ok(Err(error)) => {
            tracing::info!(message = "A custom function could not be reached.", function = name, error = %error);
            finish(
                FunctionCallStatus::Error,
                None,
                "The function could not be reached. Its result is not available.".to_owned(),
            )
        }
        Err(_) => timed_out(name, finish),
    }
}

fn timed_out(
    name: &str,
    finish: impl FnOnce(FunctionCallStatus, Option<u16>, String) -> Outcome,
) -> Outcome {
    tracing::info!(message = "A custom function timed out.", function = name);
    finish(
        FunctionCallStatus::Timeout,
        None,
        "The function did not answer in time. Its result is not available.".to_owned(),
    )
}

/// Runs `invoke` on its own task so it survives the turn being cancelled; `on_done` gets the
/// outcome first (to log it), then the returned receiver.
pub(crate) fn spawn_invocation(
    kit: Arc<FunctionKit>,
    name: String,
    arguments_json: String,
    on_done: impl FnOnce(&Outcome) + Send + 'static,
) -> tokio::sync::oneshot::Receiver<Outcome> {
    use tracing::Instrument as _;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(
        async move {
            let outcome = invoke(&kit, &name, &arguments_json).await;
            on_done(&outcome);
            let _ = tx.send(outcome);
        }
        .in_current_span(),
    );
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_field_is_passed_on_else_the_whole_body() {
        assert_eq!(result_for_model(br#"{"result": "Open until 6 pm."}"#), "Open until 6 pm.");
        assert_eq!(result_for_model(br#"{"result": {"slots": [9, 10]}}"#), r#"{"slots":[9,10]}"#);
        assert_eq!(result_for_model(br#"{"open": true}"#), r#"{"open":true}"#);
        assert_eq!(result_for_model(b"plain words\n"), "plain words");
        assert_eq!(result_for_model(b""), "(the function returned nothing)");
        let long = format!("\"{}\"", "a".repeat(5000));
        let cut = result_for_model(long.as_bytes());
        assert!(cut.ends_with("…(truncated)") && cut.chars().count() < 4100);
    }

    #[test]
    fn the_body_has_name_args_and_variables() {
        let mut variables = BTreeMap::new();
        variables.insert("call_id".to_owned(), "call_1".to_owned());
        let body = request_body("lookup", &json!({"id": 7}), &variables);
        assert_eq!(
            body,
            json!({"name": "lookup", "args": {"id": 7}, "variables": {"call_id": "call_1"}})
        );
    }

    #[tokio::test]
    async fn an_unknown_function_is_an_error_result_without_a_request() {
        let kit = FunctionKit {
            functions: Vec::new(),
            secrets: vec!["nxfs_very_secret".to_owned()],
            variables: BTreeMap::new(),
            call_started: Instant::now(),
            http: CustomerHttp::new(false).unwrap(),
        };
        let outcome = invoke(&kit, "nope", "{\"a\":1}").await;
        assert_eq!(outcome.log.status, FunctionCallStatus::Error);
        assert_eq!(outcome.log.arguments, json!({"a": 1}));
        assert!(outcome.is_error && outcome.content.contains("no function named"));
        assert!(!format!("{kit:?}").contains("very_secret"));
    }
}
