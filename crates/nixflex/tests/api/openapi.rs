//! The OpenAPI 3.1 document: every route is in it, every route in it is served, every error code
//! appears.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, both};

/// Every route of docs/api.md#endpoints (extensions included), and the operational routes.
const EXPECTED: &[(&str, &str)] = &[
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("POST", "/v1/keys/rotate"),
    ("GET", "/v1/usage"),
    ("PUT", "/v1/account/storage"),
    ("GET", "/v1/account/storage"),
    ("DELETE", "/v1/account/storage"),
    ("PUT", "/v1/account/llm"),
    ("GET", "/v1/account/llm"),
    ("DELETE", "/v1/account/llm"),
    ("PUT", "/v1/account/tts"),
    ("GET", "/v1/account/tts"),
    ("DELETE", "/v1/account/tts"),
    ("POST", "/v1/agents"),
    ("GET", "/v1/agents"),
    ("GET", "/v1/agents/{agent_id}"),
    ("PUT", "/v1/agents/{agent_id}"),
    ("DELETE", "/v1/agents/{agent_id}"),
    ("POST", "/v1/calls/outbound"),
    ("GET", "/v1/calls"),
    ("GET", "/v1/calls/{call_id}"),
    ("GET", "/v1/calls/{call_id}/recording"),
    ("DELETE", "/v1/calls/{call_id}"),
    ("DELETE", "/v1/calls"),
    ("POST", "/v1/calls/batch"),
    ("GET", "/v1/calls/batch"),
    ("GET", "/v1/calls/batch/{campaign_id}"),
    ("POST", "/v1/calls/batch/{campaign_id}/launch"),
    ("POST", "/v1/calls/batch/{campaign_id}/pause"),
    ("POST", "/v1/calls/batch/{campaign_id}/resume"),
    ("POST", "/v1/calls/batch/{campaign_id}/cancel"),
    ("POST", "/v1/phone-numbers"),
    ("GET", "/v1/phone-numbers"),
    ("GET", "/v1/phone-numbers/{phone_number}"),
    ("PATCH", "/v1/phone-numbers/{phone_number}"),
    ("DELETE", "/v1/phone-numbers/{phone_number}"),
    ("GET", "/v1/phone-numbers/{phone_number}/callers/{caller_number}"),
    ("PUT", "/v1/phone-numbers/{phone_number}/callers/{caller_number}"),
    ("DELETE", "/v1/phone-numbers/{phone_number}/callers/{caller_number}"),
    ("POST", "/v1/phone-numbers/{phone_number}/callers/import"),
    ("PUT", "/v1/integrations/webhook/number/{phone_number}"),
    ("GET", "/v1/integrations/webhook/number/{phone_number}"),
    ("DELETE", "/v1/integrations/webhook/number/{phone_number}"),
    ("PUT", "/v1/integrations/webhook2/number/{phone_number}"),
    ("GET", "/v1/integrations/webhook2/number/{phone_number}"),
    ("DELETE", "/v1/integrations/webhook2/number/{phone_number}"),
    ("PUT", "/v1/integrations/precall/agent/{agent_id}"),
    ("GET", "/v1/integrations/precall/agent/{agent_id}"),
    ("DELETE", "/v1/integrations/precall/agent/{agent_id}"),
    ("POST", "/v1/integrations/webhook/number/{phone_number}/test"),
    ("PUT", "/v1/integrations/precall/number/{phone_number}"),
    ("GET", "/v1/integrations/precall/number/{phone_number}"),
    ("DELETE", "/v1/integrations/precall/number/{phone_number}"),
    ("PUT", "/v1/integrations/monitor/number/{phone_number}"),
    ("GET", "/v1/integrations/monitor/number/{phone_number}"),
    ("PUT", "/v1/integrations/web-calls/number/{phone_number}"),
    ("GET", "/v1/integrations/web-calls/number/{phone_number}"),
    ("POST", "/v1/sms"),
    ("GET", "/v1/sms"),
    ("GET", "/v1/sms/{message_id}"),
    ("POST", "/v1/sms/campaigns"),
    ("GET", "/v1/sms/campaigns"),
    ("GET", "/v1/sms/campaigns/{campaign_id}"),
    ("POST", "/v1/sms/campaigns/{campaign_id}/launch"),
    ("DELETE", "/v1/sms/campaigns/{campaign_id}"),
    ("GET", "/v1/voices"),
    ("GET", "/v1/languages"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The error codes of the catalogue in docs/api.md#errors, including those the decisions and the cross-cutting rules add.
const DOCUMENTED_CODES: &[&str] = &[
    "invalid_api_key",
    "key_secret_required",
    "rate_limit_exceeded",
    "invalid_request",
    "missing_field",
    "invalid_json",
    "agent_not_found",
    "agent_not_owned",
    "prompt_too_long",
    "invalid_voice_id",
    "invalid_language",
    "voicemail_message_required",
    "invalid_phone_format",
    "invalid_twilio_sid",
    "number_not_in_twilio",
    "twilio_invalid_credentials",
    "twilio_auth_failed",
    "number_already_imported",
    "number_not_found",
    "custom_prompt_too_long",
    "caller_not_found",
    "engine_only_field",
    "call_not_found",
    "agent_no_phone",
    "from_number_not_owned",
    "outbound_failed",
    "concurrent_call_limit",
    "too_many_recipients",
    "invalid_schedule",
    "campaign_not_found",
    "campaign_already_completed",
    "campaign_already_done",
    "campaign_no_recipients",
    "message_too_long",
    "sms_not_supported_in_region",
    "recipient_unsubscribed",
    "idempotency_key_reused",
    "idempotency_request_in_flight",
    "insufficient_balance",
    "agent_inactive",
    "from_number_required",
    "not_implemented",
    "provider_error",
    "route_not_found",
    "method_not_allowed",
    "request_too_large",
    "unsupported_media_type",
    "signup_disabled",
    "last_active_key",
    "key_not_found",
];

async fn fetch_doc(app: &TestApp) -> Value {
    let response = app.request(Method::GET, "/v1/openapi.json", None).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn concrete(path: &str) -> String {
    path.replace("{phone_number}", "%2B447446466847")
        .replace("{caller_number}", "%2B447386172392")
        .replace("{key_id}", "nxf_00000000000000000000000000000000")
        .replace(['{', '}'], "")
}

async fn every_route_is_documented_and_every_documented_route_is_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let doc = fetch_doc(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in EXPECTED {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} missing from the document"));
        assert!(item.get(method.to_ascii_lowercase()).is_some(), "{method} {path} missing");
    }
    let mut documented = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            documented += 1;
            assert!(
                EXPECTED.contains(&(method.to_ascii_uppercase().as_str(), path.as_str())),
                "{method} {path} is not in the expected list"
            );
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let response = app.request(m, &concrete(path), Some(&key)).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                status != 405 && body["error"]["code"] != "route_not_found",
                "{method} {path} is documented but not served ({status} {body})"
            );
            let operation = &item[method];
            assert!(
                operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no responses"
            );
        }
    }
    assert_eq!(documented, EXPECTED.len());
}

async fn every_error_code_is_documented(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = fetch_doc(&app).await;
    let schema = &doc["components"]["schemas"]["ErrorBody"]["properties"]["code"];
    let listed: Vec<&str> =
        schema["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let reference: Vec<&str> = doc["x-error-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    for code in DOCUMENTED_CODES {
        assert!(listed.contains(code), "{code} missing from ErrorBody.code");
        assert!(reference.contains(code), "{code} missing from x-error-codes");
    }
    // Every code a built route can return is named in that route's responses.
    let text = doc["paths"].to_string();
    for code in [
        "agent_not_found",
        "prompt_too_long",
        "invalid_voice_id",
        "invalid_language",
        "voicemail_message_required",
        "invalid_api_key",
        "key_secret_required",
        "rate_limit_exceeded",
        "last_active_key",
        "key_not_found",
        "signup_disabled",
        "idempotency_key_reused",
        "idempotency_request_in_flight",
        "unsupported_media_type",
        "request_too_large",
        "invalid_json",
        "not_implemented",
    ] {
        assert!(text.contains(&format!("`{code}`")), "{code} is not named by any operation");
    }
    // And the Markdown reference in the repository is the same table.
    let markdown = std::fs::read_to_string(nixflex_testkit::package_file(
        env!("CARGO_MANIFEST_DIR"),
        "../../docs/specs/api-errors.md",
    ))
    .unwrap();
    for entry in doc["x-error-codes"].as_array().unwrap() {
        let row = format!(
            "| `{}` | {} | {} |",
            entry["code"].as_str().unwrap(),
            entry["status"],
            entry["type"].as_str().unwrap()
        );
        assert!(markdown.contains(&row), "docs/specs/api-errors.md lacks the row {row}");
    }
}

/// A client generator and a schema-driven fuzzer can use the document as is: every path
/// parameter declared with its pattern, every body a full schema, every shared status listed.
async fn every_operation_declares_its_parameters_bodies_and_statuses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = fetch_doc(&app).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            {
                let param = params
                    .iter()
                    .find(|p| p["in"] == "path" && p["name"] == name)
                    .unwrap_or_else(|| panic!("{what} does not declare {{{name}}}"));
                assert_eq!(param["required"], true, "{what} {name}");
                assert!(param["schema"]["pattern"].is_string(), "{what} {name} has no pattern");
            }
            for param in params.iter().filter(|p| p["in"] == "query") {
                let schema = &param["schema"];
                assert!(schema["type"].is_string(), "{what} {}: {schema}", param["name"]);
            }
            if let Some(body) = op.get("requestBody") {
                let reference = body["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: the body is not a named schema: {body}"));
                let name = reference.trim_start_matches("#/components/schemas/");
                let schema = &schemas[name];
                assert!(
                    schema["properties"].as_object().is_some_and(|p| !p.is_empty()),
                    "{what}: {name} has no properties"
                );
            }
            if !path.starts_with("/v1") {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let keyed = path != "/v1/openapi.json";
            let mut expected = vec!["400", "429"];
            if keyed {
                expected.push("401");
            }
            if op.get("requestBody").is_some() {
                expected.extend(["413", "415"]);
            }
            if method != "get" {
                expected.push("409");
            }
            for status in expected {
                assert!(responses.contains_key(status), "{what} does not document {status}");
            }
        }
    }
    // The documented bodies of routes not built yet are real schemas too.
    let outbound = &doc["paths"]["/v1/calls/outbound"]["post"]["requestBody"];
    assert!(outbound.is_object());
    assert!(schemas["OutboundCallInput"]["properties"]["to_number"]["pattern"].is_string());
    // Legacy aliases are accepted but not advertised; the clamp of `limit` is.
    let agent = &schemas["AgentInput"]["properties"];
    assert!(agent["system_prompt"].is_object() && agent.get("voice_speed").is_none());
    let limit = doc["paths"]["/v1/agents"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert!(limit["description"].as_str().unwrap().contains("clamped to 100"), "{limit}");
}

both!(
    every_route_is_documented_and_every_documented_route_is_served,
    every_error_code_is_documented,
    every_operation_declares_its_parameters_bodies_and_statuses
);
