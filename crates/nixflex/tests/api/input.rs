//! Strict input (docs/input-validation.md): NUL characters, unknown and misspelt fields,
//! duplicate keys, whitespace bodies, repeated or undocumented query parameters, wrong types —
//! each refused with a 400 naming the field, on both databases, before anything is stored —
//! while the documented aliases and SDK fields stay accepted.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, both, enc, expect_error, twilio_number};

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&crate::helpers::Key>,
    body: &str,
) -> reqwest::Response {
    app.request(method, path, key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn expect_field(response: reqwest::Response, code: &str, field: &str) -> Value {
    let error = expect_error(response, 400, code).await;
    assert_eq!(error["details"]["field"], field, "{error}");
    error
}

/// PostgreSQL refuses NUL in text; before this check it surfaced as a 500 with a backtrace.
async fn nul_characters_are_refused_with_the_field_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;

    // Unauthenticated sign-up, and another key's name.
    expect_field(
        app.request(Method::POST, "/v1/keys", None)
            .json(&json!({"name": "Evil\u{0}Co"}))
            .send()
            .await
            .unwrap(),
        "invalid_request",
        "name",
    )
    .await;
    expect_field(
        app.post(&key, "/v1/keys", json!({"name": "ci\u{0}"})).await,
        "invalid_request",
        "name",
    )
    .await;

    // Agent fields on create and update, nested fields and object keys.
    for (body, field) in [
        (json!({"name": "A\u{0}"}), "name"),
        (json!({"system_prompt": "Be kind.\u{0}"}), "system_prompt"),
        (
            json!({"functions": [{"name": "f", "description": "d\u{0}", "url": "https://example.com/f"}]}),
            "functions[0].description",
        ),
        (
            json!({"extraction_schema": {"ord\u{0}er": "The order"}}),
            "extraction_schema.ord\\u0000er",
        ),
    ] {
        expect_field(app.post(&key, "/v1/agents", body).await, "invalid_request", field).await;
    }
    let agent = app.create_agent(&key, json!({"name": "Clean"})).await;
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    expect_field(
        app.put(&key, &path, json!({"welcome_message": "Hi\u{0}"})).await,
        "invalid_request",
        "welcome_message",
    )
    .await;
    let list: Value = app.get(&key, "/v1/agents").await.json().await.unwrap();
    assert_eq!(list["count"], 1, "nothing was stored");
    assert_eq!(
        app.get(&key, &path).await.json::<Value>().await.unwrap()["welcome_message"],
        agent["welcome_message"]
    );

    // Path ids and query values.
    for (path, field) in [
        ("/v1/agents/agent_%00", "agent_id"),
        ("/v1/calls/call%00", "call_id"),
        ("/v1/keys/nxf_%00", "key_id"),
        ("/v1/integrations/precall/agent/a%00", "agent_id"),
        ("/v1/calls?agent_id=agent_%00", "agent_id"),
        ("/v1/phone-numbers?agent_id=%00", "agent_id"),
    ] {
        let method = if path.starts_with("/v1/keys/") { Method::DELETE } else { Method::GET };
        let response = app.request(method, path, Some(&key)).send().await.unwrap();
        expect_field(response, "invalid_request", field).await;
    }
}

async fn unknown_fields_are_refused_with_the_closest_known_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;

    let error = expect_field(
        app.post(&key, "/v1/agents", json!({"name": "Typo", "sytem_prompt": "Hello"})).await,
        "unknown_field",
        "sytem_prompt",
    )
    .await;
    assert_eq!(error["details"]["suggestion"], "system_prompt");
    assert!(error["message"].as_str().unwrap().contains("did you mean `system_prompt`"), "{error}");

    // A large unknown field is not silently accepted and lost.
    let big = "x".repeat(2 * 1024 * 1024);
    expect_field(
        app.post(&key, "/v1/agents", json!({"notes": big})).await,
        "unknown_field",
        "notes",
    )
    .await;

    // Nested objects too, with their full path.
    let error = expect_field(
        app.post(&key, "/v1/agents", json!({"data_extraction_fields": [{"type": "text", "name": "budget", "description": "d", "formt_example": "£10"}]})).await,
        "unknown_field",
        "data_extraction_fields[0].formt_example",
    )
    .await;
    assert_eq!(error["details"]["suggestion"], "format_example");

    // Sign-up, keys, integrations.
    let error = expect_field(
        app.request(Method::POST, "/v1/keys", None)
            .json(&json!({"nmae": "Co"}))
            .send()
            .await
            .unwrap(),
        "unknown_field",
        "nmae",
    )
    .await;
    assert_eq!(error["details"]["suggestion"], "name");
    let agent = app.create_agent(&key, json!({})).await;
    let precall = format!("/v1/integrations/precall/agent/{}", agent["agent_id"].as_str().unwrap());
    let error = expect_field(
        app.put(&key, &precall, json!({"uri": "https://example.com/gate"})).await,
        "unknown_field",
        "uri",
    )
    .await;
    assert_eq!(error["details"]["suggestion"], "url");
    let list: Value = app.get(&key, "/v1/agents").await.json().await.unwrap();
    assert_eq!(list["count"], 1, "only the valid agent was created");
}

async fn documented_aliases_and_sdk_fields_stay_accepted(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    // camelCase, legacy `extraction_schema` and `voice_speed`, a fetched agent sent back whole.
    let agent = app
        .create_agent(&key, json!({"systemPrompt": "Hi", "extraction_schema": {"budget": "The budget"}, "voice_speed": 1.2}))
        .await;
    assert_eq!(agent["system_prompt"], "Hi");
    assert_eq!(agent["data_extraction_fields"][0]["name"], "budget");
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    let mut whole = agent.clone();
    whole["name"] = json!("Round trip");
    let response = app.put(&key, &path, whole).await;
    assert_eq!(response.status(), 200, "a fetched agent can be sent back as is");
    assert_eq!(response.json::<Value>().await.unwrap()["name"], "Round trip");

    // Number import with the CLI's aliases; the SDK's Telnyx fields reach the Telnyx answer.
    let tw = twilio_number(&twilio, "+447446466847");
    let response = app
        .post(&key, "/v1/phone-numbers", json!({"phone_number": tw.phone, "agent_id": agent["agent_id"], "twilio_account_sid": tw.sid, "twilio_auth_token": tw.token}))
        .await;
    assert_eq!(response.status(), 201);
    let number: Value = response.json().await.unwrap();
    let response = app
        .post(&key, "/v1/phone-numbers", json!({"phone_number": "+447446466848", "agent_id": agent["agent_id"], "telnyx_api_key": "KEY", "telnyx_connection_id": "1"}))
        .await;
    expect_error(response, 501, "not_implemented").await;

    // A fetched number sent back with a change.
    let mut whole = number["phone_number"].clone();
    whole["custom_prompt"] = json!("Open 9-5");
    let path = format!("/v1/phone-numbers/{}", enc(&tw.phone));
    let response = app.request(Method::PATCH, &path, Some(&key)).json(&whole).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // `status` is the documented alias of `call_status` on the call list.
    assert_eq!(app.get(&key, "/v1/calls?status=completed").await.status(), 200);
}

async fn duplicate_keys_and_whitespace_bodies_are_not_valid_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    expect_field(
        raw(&app, Method::POST, "/v1/agents", Some(&key), r#"{"name": "A", "name": "B"}"#).await,
        "invalid_json",
        "name",
    )
    .await;
    expect_field(
        raw(
            &app,
            Method::POST,
            "/v1/agents",
            Some(&key),
            r#"{"functions": [{"name": "f", "name": "g"}]}"#,
        )
        .await,
        "invalid_json",
        "functions[0].name",
    )
    .await;
    expect_error(
        raw(&app, Method::POST, "/v1/keys", Some(&key), " \n\t ").await,
        400,
        "invalid_json",
    )
    .await;
    expect_error(raw(&app, Method::POST, "/v1/keys", None, "  ").await, 400, "invalid_json").await;
    let keys: Value = app.get(&key, "/v1/keys").await.json().await.unwrap();
    assert_eq!(keys["count"], 1, "no key was created");
}

async fn query_parameters_must_be_documented_and_given_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    for _ in 0..3 {
        app.create_agent(&key, json!({})).await;
    }
    expect_field(app.get(&key, "/v1/agents?limit=1&limit=2").await, "invalid_request", "limit")
        .await;
    let error =
        expect_field(app.get(&key, "/v1/agents?limt=2").await, "unknown_field", "limt").await;
    assert_eq!(error["details"]["suggestion"], "limit");
    expect_field(
        app.get(&key, "/v1/agents/agent_0000000000000000?verbose=1").await,
        "unknown_field",
        "verbose",
    )
    .await;

    // A limit above 100 is clamped, as documented.
    let page: Value = app.get(&key, "/v1/agents?limit=500").await.json().await.unwrap();
    assert_eq!(page["limit"], 100);
    assert_eq!(page["count"], 3);
    let page: Value = app.get(&key, "/v1/agents?limit=2").await.json().await.unwrap();
    assert_eq!(page["agents"].as_array().unwrap().len(), 2);
}

async fn routes_not_built_yet_check_their_documented_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    expect_error(
        app.request(Method::GET, "/v1/usage", None).send().await.unwrap(),
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(app.get(&key, "/v1/usage?period=today").await.status(), 200);
    let error =
        expect_field(app.get(&key, "/v1/usage?perod=today").await, "unknown_field", "perod").await;
    assert_eq!(error["details"]["suggestion"], "period");
    let error = expect_field(
        app.post(
            &key,
            "/v1/sms",
            json!({"agent_id": "agent_0000000000000000", "to": "+447446466847", "mesage": "Hi"}),
        )
        .await,
        "unknown_field",
        "mesage",
    )
    .await;
    assert_eq!(error["details"]["suggestion"], "message");
    let sms = json!({"agent_id": "agent_0000000000000000", "to": "+447446466847", "message": "Hi"});
    expect_error(app.post(&key, "/v1/sms", sms).await, 404, "agent_not_found").await;
    // The legacy names stay accepted (and get as far as the agent check).
    let legacy =
        json!({"agent_id": "agent_0000000000000000", "to_number": "+447446466847", "body": "Hi"});
    expect_error(app.post(&key, "/v1/sms", legacy).await, 404, "agent_not_found").await;
}

async fn wrong_types_are_refused_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    expect_field(
        app.post(&key, "/v1/agents", json!({"is_active": "yes"})).await,
        "invalid_request",
        "is_active",
    )
    .await;
    expect_field(
        app.post(&key, "/v1/agents", json!({"functions": [{"name": 5}]})).await,
        "invalid_request",
        "functions[0].name",
    )
    .await;
    expect_field(
        app.post(&key, "/v1/keys", json!({"name": ["a"]})).await,
        "invalid_request",
        "name",
    )
    .await;
    // The handlers' own codes still apply to well-typed values.
    expect_field(
        app.post(&key, "/v1/agents", json!({"system_prompt": "x".repeat(16_001)})).await,
        "prompt_too_long",
        "system_prompt",
    )
    .await;
}

both!(
    nul_characters_are_refused_with_the_field_named,
    unknown_fields_are_refused_with_the_closest_known_name,
    documented_aliases_and_sdk_fields_stay_accepted,
    duplicate_keys_and_whitespace_bodies_are_not_valid_json,
    query_parameters_must_be_documented_and_given_once,
    routes_not_built_yet_check_their_documented_input,
    wrong_types_are_refused_naming_the_field
);
