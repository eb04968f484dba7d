//! Agents (docs/api.md#agents; docs/decisions.md#agent-defaults, #inactive-agents, #other-agent-defaults, #extraction-fields) and the voice/language catalogue.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, both, expect_error};

async fn an_empty_body_creates_an_agent_with_every_documented_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let response =
        app.request(reqwest::Method::POST, "/v1/agents", Some(&key)).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let agent: Value = response.json().await.unwrap();
    let id = agent["agent_id"].as_str().unwrap();
    assert!(
        id.starts_with("agent_")
            && id.len() == 22
            && id[6..].bytes().all(|b| b.is_ascii_hexdigit())
    );
    assert_eq!(agent["api_key_id"], key.id.as_str());
    let expected = json!({
        "name": "Untitled Agent", "welcome_message": "Hello! How can I help you today?",
        "voice_id": "Ashley", "language": "multi", "timezone": "Europe/London", "is_active": true,
        "temperature": 0.3, "response_length": "short", "ai_speaks_first": true,
        "dynamic_greeting": false, "interruption_sensitivity": 50, "response_eagerness": 200,
        "boosted_keywords": null, "pickup_delay": 10, "max_call_duration_seconds": 300,
        "silence_hangup_seconds": 10, "record_call": true, "recording_source": "provider",
        "amd_enabled": false, "dtmf_enabled": null, "voicemail_leave_enabled": false,
        "voicemail_message": null, "webhook_url": null, "func_end_call": true,
        "func_send_sms": false, "func_cold_transfer": false,
        "transfer_type": "cold", "transfer_number": null, "transfer_whisper": null,
        "speaking_rate": null, "greet_by_name": true, "post_call_sms_enabled": false,
        "post_call_sms_template": null, "incall_sms_enabled": false,
        "data_extraction_fields": [], "functions": [], "enable_sms_reply": true,
        "llm_model": "claude-haiku-4-5",
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&agent[field], value, "default of {field}");
    }
    assert!(agent["system_prompt"].as_str().unwrap().contains("friendly"));
    assert!(!agent["fallback_message"].as_str().unwrap().is_empty());
    assert_eq!(agent["created_at"], agent["updated_at"]);
    assert!(agent["created_at"].as_str().unwrap().ends_with('Z'), "UTC timestamps");
    let fetched: Value = app.get(&key, &format!("/v1/agents/{id}")).await.json().await.unwrap();
    assert_eq!(fetched, agent);
}

async fn every_field_can_be_set_including_aliases_and_legacy_shapes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app
        .create_agent(
            &key,
            json!({
                "name": "Front desk", "systemPrompt": "You run a bakery.", "welcome_message": "Hi!",
                "voice_id": "dennis", "language": "FR", "timezone": "America/New_York",
                "is_active": false, "temperature": 0.7, "response_length": "long",
                "ai_speaks_first": false, "dynamic_greeting": true, "interruption_sensitivity": "low",
                "response_eagerness": 600, "boosted_keywords": "croissant, baguette ,  ",
                "pickup_delay": 5, "max_call_duration_seconds": 1800, "silence_hangup_seconds": 45,
                "record_call": false, "recording_source": "nixflex", "amd_enabled": true,
                "dtmf_enabled": true, "voicemail_leave_enabled": true, "voicemail_message": "Call us back",
                "webhook_url": "https://hooks.example.com/nixflex", "func_end_call": false,
                "func_send_sms": true, "func_cold_transfer": false, "transfer_type": "warm",
                "transfer_number": "+447446466847", "transfer_whisper": "VIP caller",
                "speaking_rate": 0.2, "greet_by_name": false, "fallback_message": "Pardon?",
                "post_call_sms_enabled": true, "post_call_sms_template": "Thanks {caller_name}",
                "incall_sms_enabled": true, "enable_sms_reply": false, "llm_model": "claude-sonnet-4-5",
                "extraction_schema": {"order_id": "The order number"},
                "functions": [{"name": "check_stock", "description": "Checks stock", "url": "https://api.example.com/stock",
                               "parameters": {"type": "object", "properties": {"item": {"type": "string"}}}}],
                "voice_speed": 3, "agent_id": "agent_0000000000000000", "api_key_id": "nxf_evil",
            }),
        )
        .await;
    assert_eq!(agent["system_prompt"], "You run a bakery.");
    assert_eq!(agent["voice_id"], "Dennis", "catalogue spelling");
    assert_eq!(agent["language"], "fr");
    assert_eq!(agent["interruption_sensitivity"], 25);
    assert_eq!(agent["boosted_keywords"], "croissant, baguette");
    assert_eq!(agent["speaking_rate"], 0.5, "clamped, not rejected");
    assert_eq!(
        agent["data_extraction_fields"][0],
        json!({"type": "text", "name": "order_id", "description": "The order number", "optional": false})
    );
    assert_eq!(agent["functions"][0]["method"], "POST");
    assert_eq!(agent["api_key_id"], key.id.as_str(), "read-only fields are ignored");
    assert_ne!(agent["agent_id"], "agent_0000000000000000");
    assert!(agent.get("voice_speed").is_none());
    assert_eq!(agent["is_active"], false);
    assert_eq!(agent["transfer_type"], "warm");
    assert_eq!(agent["recording_source"], "nixflex");
}

async fn each_invalid_value_gets_its_documented_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let cases = [
        (json!({"system_prompt": "x".repeat(16_001)}), "prompt_too_long", "system_prompt"),
        (json!({"voice_id": "Nobody"}), "invalid_voice_id", "voice_id"),
        (json!({"language": "tlh"}), "invalid_language", "language"),
        (
            json!({"voicemail_leave_enabled": true}),
            "voicemail_message_required",
            "voicemail_message",
        ),
        (
            json!({"voicemail_leave_enabled": true, "voicemail_message": "  "}),
            "voicemail_message_required",
            "voicemail_message",
        ),
        (json!({"transfer_number": "07446466847"}), "invalid_phone_format", "transfer_number"),
        (json!({"temperature": 1.5}), "invalid_request", "temperature"),
        (json!({"temperature": "hot"}), "invalid_request", "temperature"),
        (json!({"timezone": "Mars/Olympus"}), "invalid_request", "timezone"),
        (json!({"name": null}), "invalid_request", "name"),
        (json!({"name": ""}), "invalid_request", "name"),
        (json!({"name": "n".repeat(101)}), "invalid_request", "name"),
        (json!({"is_active": "yes"}), "invalid_request", "is_active"),
        (json!({"response_length": "epic"}), "invalid_request", "response_length"),
        (json!({"interruption_sensitivity": 101}), "invalid_request", "interruption_sensitivity"),
        (
            json!({"interruption_sensitivity": "extreme"}),
            "invalid_request",
            "interruption_sensitivity",
        ),
        (json!({"response_eagerness": 1001}), "invalid_request", "response_eagerness"),
        (json!({"pickup_delay": 4}), "invalid_request", "pickup_delay"),
        (json!({"max_call_duration_seconds": 59}), "invalid_request", "max_call_duration_seconds"),
        (
            json!({"max_call_duration_seconds": 1801}),
            "invalid_request",
            "max_call_duration_seconds",
        ),
        (json!({"silence_hangup_seconds": 46}), "invalid_request", "silence_hangup_seconds"),
        (json!({"silence_hangup_seconds": 10.5}), "invalid_request", "silence_hangup_seconds"),
        (json!({"recording_source": "tape"}), "invalid_request", "recording_source"),
        (json!({"transfer_type": "hot"}), "invalid_request", "transfer_type"),
        (json!({"webhook_url": "http://example.com/hook"}), "invalid_request", "webhook_url"),
        (json!({"webhook_url": "https://127.0.0.1/hook"}), "invalid_request", "webhook_url"),
        (
            json!({"webhook_url": "https://169.254.169.254/latest"}),
            "invalid_request",
            "webhook_url",
        ),
        (
            json!({"boosted_keywords": (0..50).map(|i| format!("w{i}")).collect::<Vec<_>>().join(",")}),
            "invalid_request",
            "boosted_keywords",
        ),
        (json!({"llm_model": ""}), "invalid_request", "llm_model"),
        (
            json!({"data_extraction_fields": [{"type": "selector", "name": "tier", "description": "d", "choices": []}]}),
            "invalid_request",
            "data_extraction_fields[0].choices",
        ),
        (
            json!({"data_extraction_fields": [{"type": "text", "name": "9lives", "description": "d"}]}),
            "invalid_request",
            "data_extraction_fields[0].name",
        ),
        (
            json!({"data_extraction_fields": [{"type": "text", "name": "a", "description": "d"}, {"type": "number", "name": "a", "description": "d"}]}),
            "invalid_request",
            "data_extraction_fields[1].name",
        ),
        (
            json!({"data_extraction_fields": [{"type": "date", "name": "a", "description": "d"}]}),
            "invalid_request",
            "data_extraction_fields[0].type",
        ),
        (
            json!({"data_extraction_fields": (0..26).map(|i| json!({"type": "text", "name": format!("f{i}"), "description": "d"})).collect::<Vec<_>>()}),
            "invalid_request",
            "data_extraction_fields",
        ),
        (
            json!({"functions": [{"name": "x y", "description": "d", "url": "https://example.com"}]}),
            "invalid_request",
            "functions[0].name",
        ),
        (
            json!({"functions": [{"name": "f", "description": "d", "url": "https://localhost/f"}]}),
            "invalid_request",
            "functions[0].url",
        ),
        (
            json!({"functions": [{"name": "f", "description": "d", "url": "https://example.com", "method": "GET"}]}),
            "invalid_request",
            "functions[0].method",
        ),
    ];
    for (body, code, field) in cases {
        let response = app.post(&key, "/v1/agents", body.clone()).await;
        let error = expect_error(response, 400, code).await;
        assert_eq!(error["details"]["field"], field, "{body}");
    }
    let listed: Value = app.get(&key, "/v1/agents").await.json().await.unwrap();
    assert_eq!(listed["count"], 0, "no invalid request created anything");
    // The limits themselves are accepted.
    app.create_agent(&key, json!({"system_prompt": "x".repeat(16_000), "max_call_duration_seconds": 60, "silence_hangup_seconds": 5})).await;
}

async fn updates_change_only_the_supplied_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app
        .create_agent(
            &key,
            json!({"name": "Before", "transfer_number": "+447446466847", "temperature": 0.9}),
        )
        .await;
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    let response = app
        .put(&key, &path, json!({"name": "After", "transfer_number": null, "agent_id": "agent_x"}))
        .await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["name"], "After");
    assert_eq!(updated["transfer_number"], Value::Null, "null clears");
    assert_eq!(updated["temperature"], 0.9, "omitted fields keep their values");
    assert_eq!(updated["agent_id"], agent["agent_id"]);
    assert_eq!(updated["created_at"], agent["created_at"]);
    assert_ne!(updated["updated_at"], agent["updated_at"]);
    let fetched: Value = app.get(&key, &path).await.json().await.unwrap();
    assert_eq!(fetched, updated);

    // A misspelt field is refused (with the likely name), and nothing changes.
    let error =
        expect_error(app.put(&key, &path, json!({"nmae": "Typo"})).await, 400, "unknown_field")
            .await;
    assert_eq!(error["details"]["field"], "nmae");
    assert_eq!(error["details"]["suggestion"], "name");
    let same: Value = app.get(&key, &path).await.json().await.unwrap();
    assert_eq!(same["name"], "After");
}

async fn an_invalid_update_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({"name": "Stable"})).await;
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    let response = app.put(&key, &path, json!({"name": "Changed", "voice_id": "Nobody"})).await;
    expect_error(response, 400, "invalid_voice_id").await;
    let response = app.put(&key, &path, json!({"voicemail_leave_enabled": true})).await;
    expect_error(response, 400, "voicemail_message_required").await;
    let fetched: Value = app.get(&key, &path).await.json().await.unwrap();
    assert_eq!(fetched, agent);
    // Enabling voicemail works once the message exists, in the same or an earlier update.
    assert_eq!(app.put(&key, &path, json!({"voicemail_message": "Hello"})).await.status(), 200);
    assert_eq!(app.put(&key, &path, json!({"voicemail_leave_enabled": true})).await.status(), 200);
    let response = app.put(&key, &path, json!({"voicemail_message": null})).await;
    expect_error(response, 400, "voicemail_message_required").await;
}

async fn concurrent_updates_to_different_fields_all_land(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    let updates = [
        json!({"name": "Concurrent"}),
        json!({"temperature": 0.8}),
        json!({"pickup_delay": 20}),
        json!({"welcome_message": "Yo"}),
        json!({"language": "de"}),
        json!({"silence_hangup_seconds": 30}),
    ];
    let responses =
        futures::future::join_all(updates.iter().map(|u| app.put(&key, &path, u.clone()))).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    let fetched: Value = app.get(&key, &path).await.json().await.unwrap();
    for update in updates {
        for (field, value) in update.as_object().unwrap() {
            assert_eq!(&fetched[field], value, "{field} was lost");
        }
    }
}

async fn other_accounts_agents_do_not_exist_for_you(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.signup().await;
    let stranger = app.signup().await;
    let agent = app.create_agent(&owner, json!({"name": "Private"})).await;
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    expect_error(app.get(&stranger, &path).await, 404, "agent_not_found").await;
    expect_error(
        app.put(&stranger, &path, json!({"name": "Hijack"})).await,
        404,
        "agent_not_found",
    )
    .await;
    expect_error(app.delete(&stranger, &path).await, 404, "agent_not_found").await;
    let listed: Value = app.get(&stranger, "/v1/agents").await.json().await.unwrap();
    assert_eq!(listed["count"], 0);
    let fetched: Value = app.get(&owner, &path).await.json().await.unwrap();
    assert_eq!(fetched["name"], "Private");
}

async fn deleting_an_agent_is_permanent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let id = agent["agent_id"].as_str().unwrap();
    let path = format!("/v1/agents/{id}");
    let response = app.delete(&key, &path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"agent_id": id, "deleted": true}));
    expect_error(app.get(&key, &path).await, 404, "agent_not_found").await;
    expect_error(app.delete(&key, &path).await, 404, "agent_not_found").await;
    expect_error(app.put(&key, &path, json!({})).await, 404, "agent_not_found").await;
    expect_error(app.get(&key, "/v1/agents/agent_ffffffffffffffff").await, 404, "agent_not_found")
        .await;
}

async fn agents_are_listed_newest_first_in_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let agent = app
            .create_agent(&key, json!({"name": format!("agent {i}"), "is_active": i % 3 != 0}))
            .await;
        ids.insert(0, agent["agent_id"].as_str().unwrap().to_owned());
    }
    let page: Value = app.get(&key, "/v1/agents?limit=3&offset=2").await.json().await.unwrap();
    assert_eq!(page["count"], 7);
    assert_eq!(page["limit"], 3);
    assert_eq!(page["offset"], 2);
    let got: Vec<&str> = page["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids[2..5].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(page["agents"][0]["system_prompt"].is_string(), "items are full agents");

    let all: Value = app.get(&key, "/v1/agents").await.json().await.unwrap();
    assert_eq!((all["limit"].as_i64(), all["agents"].as_array().unwrap().len()), (Some(25), 7));
    let clamped: Value = app.get(&key, "/v1/agents?limit=500").await.json().await.unwrap();
    assert_eq!(clamped["limit"], 100);
    let active: Value = app.get(&key, "/v1/agents?is_active=true").await.json().await.unwrap();
    assert_eq!(active["count"], 4);
    let inactive: Value = app.get(&key, "/v1/agents?is_active=false").await.json().await.unwrap();
    assert_eq!(inactive["count"], 3);
    assert!(inactive["agents"].as_array().unwrap().iter().all(|a| a["is_active"] == false));
    let beyond: Value = app.get(&key, "/v1/agents?offset=100").await.json().await.unwrap();
    assert_eq!(
        (beyond["count"].as_i64(), beyond["agents"].as_array().unwrap().len()),
        (Some(7), 0)
    );

    for (query, field) in [
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("offset=-3", "offset"),
        ("offset=x", "offset"),
        ("is_active=maybe", "is_active"),
    ] {
        let error = expect_error(
            app.get(&key, &format!("/v1/agents?{query}")).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(error["details"]["field"], field, "{query}");
    }
}

async fn voices_and_languages_are_the_catalogue_agents_are_checked_against(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let voices: Value = app.get(&key, "/v1/voices?limit=100").await.json().await.unwrap();
    let list = voices["voices"].as_array().unwrap();
    assert_eq!(voices["count"].as_u64().unwrap() as usize, list.len());
    assert!(list.iter().any(|v| v["voice_id"] == "Ashley" && v["is_default"] == true));
    for voice in list {
        let body = json!({"voice_id": voice["voice_id"]});
        assert_eq!(app.post(&key, "/v1/agents", body).await.status(), 201, "{voice}");
    }
    let french: Value = app.get(&key, "/v1/voices?language=fr").await.json().await.unwrap();
    assert!(french["voices"].as_array().unwrap().iter().all(|v| v["language"] == "fr"));
    assert!(french["count"].as_i64().unwrap() >= 1);
    let paged: Value = app.get(&key, "/v1/voices").await.json().await.unwrap();
    assert_eq!(paged["voices"].as_array().unwrap().len(), 25);

    let languages: Value = app.get(&key, "/v1/languages?limit=100").await.json().await.unwrap();
    let codes: Vec<&str> = languages["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"multi") && codes.contains(&"en") && codes.len() >= 15);
    for code in codes {
        assert_eq!(
            app.post(&key, "/v1/agents", json!({"language": code})).await.status(),
            201,
            "{code}"
        );
    }
}

async fn the_openai_voice_catalogue_applies_when_that_provider_is_configured(backend: Backend) {
    let app =
        TestApp::spawn_with(backend, |c| c.tts_provider = nixflex::config::TtsProvider::Openai)
            .await;
    let key = app.signup().await;
    let voices: Value = app.get(&key, "/v1/voices?limit=100").await.json().await.unwrap();
    assert!(voices["voices"].as_array().unwrap().iter().all(|v| v["provider"] == "openai"));
    assert_eq!(app.post(&key, "/v1/agents", json!({"voice_id": "nova"})).await.status(), 201);
    let agent = app.create_agent(&key, json!({})).await;
    assert_eq!(agent["voice_id"], "Ashley", "the default resolves in every catalogue");
    expect_error(
        app.post(&key, "/v1/agents", json!({"voice_id": "Hades"})).await,
        400,
        "invalid_voice_id",
    )
    .await;
}

both!(
    an_empty_body_creates_an_agent_with_every_documented_default,
    every_field_can_be_set_including_aliases_and_legacy_shapes,
    each_invalid_value_gets_its_documented_code,
    updates_change_only_the_supplied_fields,
    an_invalid_update_changes_nothing,
    concurrent_updates_to_different_fields_all_land,
    other_accounts_agents_do_not_exist_for_you,
    deleting_an_agent_is_permanent,
    agents_are_listed_newest_first_in_pages,
    voices_and_languages_are_the_catalogue_agents_are_checked_against,
    the_openai_voice_catalogue_applies_when_that_provider_is_configured,
);
