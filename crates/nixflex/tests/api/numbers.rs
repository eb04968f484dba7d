//! Phone numbers on the customer's own Twilio (docs/api.md#phone-numbers), against the Twilio emulator.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, PUBLIC_URL, TestApp, both, enc, expect_error, twilio_number};

const NUMBER: &str = "+14155552671";

fn update_requests(twilio: &nixflex_testkit::twilio::TwilioEmulator) -> usize {
    twilio
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/IncomingPhoneNumbers/"))
        .count()
}

async fn import_points_the_number_at_us_and_keeps_the_token_secret(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({"name": "Desk"})).await;
    let agent_id = agent["agent_id"].as_str().unwrap();
    let tw = twilio_number(&twilio, NUMBER);
    twilio.configure_number(
        &tw.number_sid,
        &[
            ("VoiceUrl", "https://old.example.com/voice"),
            ("VoiceApplicationSid", &format!("AP{}", "c".repeat(32))),
        ],
    );

    let response = app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await;
    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&tw.token), "the auth token is never returned");
    let body: Value = serde_json::from_str(&text).unwrap();
    let number = &body["phone_number"];
    assert_eq!(number["phone_number"], NUMBER);
    assert_eq!(number["agent_id"], agent_id);
    assert_eq!(number["provider"], "twilio");
    assert_eq!(number["twilio_number_sid"], tw.number_sid.as_str());
    assert_eq!(number["twilio_account_sid"], tw.sid.as_str());
    assert_eq!(
        (
            number["inbound_enabled"].as_bool(),
            number["outbound_enabled"].as_bool(),
            number["sms_reply_enabled"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );
    for field in [
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
        "telnyx_number_id",
    ] {
        assert_eq!(number[field], Value::Null, "{field}");
    }

    let configured = twilio.number(&tw.number_sid).unwrap();
    assert_eq!(configured.voice_url.as_deref(), Some(&*format!("{PUBLIC_URL}/twilio/voice")));
    assert_eq!(configured.voice_method, "POST");
    assert_eq!(configured.sms_url, format!("{PUBLIC_URL}/twilio/sms"));
    assert_eq!(configured.sms_method, "POST");
    assert_eq!(configured.status_callback, format!("{PUBLIC_URL}/twilio/status"));
    assert_eq!(configured.voice_application_sid, "", "an application SID would override the URLs");

    let fetched: Value =
        app.get(&key, &format!("/v1/phone-numbers/{}", enc(NUMBER))).await.json().await.unwrap();
    assert_eq!(fetched, body);
    let listed: Value = app.get(&key, "/v1/phone-numbers").await.json().await.unwrap();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["phone_numbers"][0], body["phone_number"]);
}

async fn import_accepts_camel_case_aliases_and_settings(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, "+447446466847");
    let response = app
        .post(
            &key,
            "/v1/phone-numbers",
            json!({"phoneNumber": tw.phone, "agentId": agent["agent_id"], "twilio_account_sid": tw.sid, "twilioToken": tw.token,
                   "custom_prompt": "Bakery on Main St", "outbound_enabled": false, "voice_id": "Olivia"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["phone_number"]["custom_prompt"], "Bakery on Main St");
    assert_eq!(body["phone_number"]["outbound_enabled"], false);
    assert_eq!(body["phone_number"]["voice_id"], "Olivia");
}

async fn invalid_imports_are_rejected_before_twilio_is_touched(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let foreign = app.create_agent(&stranger, json!({})).await;
    let agent_id = agent["agent_id"].as_str().unwrap();
    let tw = twilio_number(&twilio, NUMBER);
    let good = tw.import_body(agent_id);
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    for (body, status, code, field) in [
        (without("phone_number"), 400, "missing_field", Some("phone_number")),
        (without("agent_id"), 400, "missing_field", Some("agent_id")),
        (without("twilio_sid"), 400, "missing_field", Some("twilio_sid")),
        (without("twilio_token"), 400, "missing_field", Some("twilio_token")),
        (with("twilio_token", json!("")), 400, "missing_field", Some("twilio_token")),
        (
            with("phone_number", json!("07386172392")),
            400,
            "invalid_phone_format",
            Some("phone_number"),
        ),
        (
            with("phone_number", json!("+1 415 555 2671")),
            400,
            "invalid_phone_format",
            Some("phone_number"),
        ),
        (with("twilio_sid", json!("AC123")), 400, "invalid_twilio_sid", Some("twilio_sid")),
        (
            with("twilio_sid", json!(format!("AC{}", "G".repeat(32)))),
            400,
            "invalid_twilio_sid",
            Some("twilio_sid"),
        ),
        (
            with("custom_prompt", json!("x".repeat(8001))),
            400,
            "custom_prompt_too_long",
            Some("custom_prompt"),
        ),
        (with("voice_id", json!("Nobody")), 400, "invalid_voice_id", Some("voice_id")),
        (with("inbound_enabled", json!("yes")), 400, "invalid_request", Some("inbound_enabled")),
        (with("agent_id", json!("agent_ffffffffffffffff")), 404, "agent_not_found", None),
        (with("agent_id", foreign["agent_id"].clone()), 403, "agent_not_owned", None),
    ] {
        let response = app.post(&key, "/v1/phone-numbers", body).await;
        let error = expect_error(response, status, code).await;
        if let Some(field) = field {
            assert_eq!(error["details"]["field"], field, "{code}");
        }
    }
    let response = app.post(&key, "/v1/phone-numbers", json!({"phone_number": NUMBER, "agent_id": agent_id, "telnyx_api_key": "KEY", "telnyx_connection_id": "1"})).await;
    expect_error(response, 501, "not_implemented").await;
    assert!(twilio.requests().is_empty(), "nothing reached Twilio");
    let listed: Value = app.get(&key, "/v1/phone-numbers").await.json().await.unwrap();
    assert_eq!(listed["count"], 0);
}

async fn twilio_refusals_map_to_documented_codes_and_leave_nothing(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let agent_id = agent["agent_id"].as_str().unwrap();
    let tw = twilio_number(&twilio, NUMBER);

    let mut bad_token = tw.import_body(agent_id);
    bad_token["twilio_token"] = json!("0".repeat(32));
    let error = expect_error(
        app.post(&key, "/v1/phone-numbers", bad_token).await,
        401,
        "twilio_auth_failed",
    )
    .await;
    assert_eq!(error["details"]["twilio_error"]["code"], 20003);

    let mut elsewhere = tw.import_body(agent_id);
    elsewhere["phone_number"] = json!("+14155550199");
    let other_number = twilio_number(&twilio, "+14155550199");
    elsewhere["twilio_sid"] = json!(tw.sid);
    let _ = other_number;
    expect_error(app.post(&key, "/v1/phone-numbers", elsewhere).await, 404, "number_not_in_twilio")
        .await;

    // Twilio fails while being pointed at us: no number, configuration untouched.
    twilio.fail_next(&format!("IncomingPhoneNumbers/{}", tw.number_sid), 500, 20500);
    let error = expect_error(
        app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await,
        502,
        "provider_error",
    )
    .await;
    assert_eq!(error["details"]["twilio_error"]["code"], 20500);
    assert_eq!(error["details"]["twilio_error"]["status"], 500);
    assert_eq!(twilio.number(&tw.number_sid).unwrap().voice_url, None);

    // A timed-out update may have landed: the old configuration is put back.
    twilio.configure_number(&tw.number_sid, &[("VoiceUrl", "https://old.example.com/voice")]);
    twilio.delay_next(
        &format!("IncomingPhoneNumbers/{}.json", tw.number_sid),
        Duration::from_secs(3),
    );
    let response = app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await;
    expect_error(response, 502, "provider_error").await;
    let listed: Value = app.get(&key, "/v1/phone-numbers").await.json().await.unwrap();
    assert_eq!(listed["count"], 0, "no half-imported number");

    // And after all that, the import works.
    assert_eq!(app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await.status(), 201);
}

async fn a_number_can_be_imported_only_once(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let theirs = app.create_agent(&stranger, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    assert_eq!(
        app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap()))
            .await
            .status(),
        201
    );
    let updates = update_requests(&twilio);
    let error = expect_error(
        app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap()))
            .await,
        409,
        "number_already_imported",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains(NUMBER));
    expect_error(
        app.post(
            &stranger,
            "/v1/phone-numbers",
            tw.import_body(theirs["agent_id"].as_str().unwrap()),
        )
        .await,
        409,
        "number_already_imported",
    )
    .await;
    assert_eq!(update_requests(&twilio), updates, "a refused import never rewrites the number");
}

async fn concurrent_imports_of_one_number_let_exactly_one_win(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        let key = app.signup().await;
        let agent = app.create_agent(&key, json!({})).await;
        keys.push((key, agent["agent_id"].as_str().unwrap().to_owned()));
    }
    let tw = twilio_number(&twilio, NUMBER);
    let responses = futures::future::join_all(
        keys.iter().map(|(key, agent)| app.post(key, "/v1/phone-numbers", tw.import_body(agent))),
    )
    .await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 3, "{statuses:?}");
}

async fn import_needs_a_public_url(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio_and(backend, |c| c.public_url = None).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    let error = expect_error(
        app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap()))
            .await,
        503,
        "public_url_not_configured",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("NIXFLEX_PUBLIC_URL"));
    assert!(twilio.requests().is_empty());
}

async fn numbers_update_partially_and_reattach_to_agents(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let second = app.create_agent(&key, json!({"name": "Second"})).await;
    let foreign = app.create_agent(&stranger, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap())).await;
    let path = format!("/v1/phone-numbers/{}", enc(NUMBER));
    let patch = |body: Value| app.request(Method::PATCH, &path, Some(&key)).json(&body).send();

    let response = patch(json!({"custom_prompt": "Open 9-5", "voice_id": "Craig", "speaking_rate": 7, "sms_reply_enabled": false,
                                "voicemail_leave_enabled": true, "voicemail_message": "Please call back", "recording_source": "nixflex",
                                "record_call": false, "dtmf_enabled": true, "sms_prompt": "Be brief", "web_prompt": "Web"})).await.unwrap();
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    let n = &updated["phone_number"];
    assert_eq!(
        (n["custom_prompt"].as_str(), n["voice_id"].as_str(), n["speaking_rate"].as_f64()),
        (Some("Open 9-5"), Some("Craig"), Some(1.5))
    );
    assert_eq!(
        (n["sms_reply_enabled"].as_bool(), n["inbound_enabled"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        (n["record_call"].as_bool(), n["recording_source"].as_str()),
        (Some(false), Some("nixflex"))
    );

    let cleared: Value = patch(json!({"voice_id": null, "speaking_rate": null}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["phone_number"]["voice_id"], Value::Null);
    assert_eq!(cleared["phone_number"]["custom_prompt"], "Open 9-5", "untouched");

    let moved: Value =
        patch(json!({"agent_id": second["agent_id"]})).await.unwrap().json().await.unwrap();
    assert_eq!(moved["phone_number"]["agent_id"], second["agent_id"]);

    for (body, status, code) in [
        (json!({}), 400, "missing_field"),
        (json!({"colour": "blue"}), 400, "unknown_field"),
        (json!({"custom_promt": "Open"}), 400, "unknown_field"),
        (json!({"custom_prompt": "x".repeat(8001)}), 400, "custom_prompt_too_long"),
        (json!({"voice_id": "Nobody"}), 400, "invalid_voice_id"),
        (json!({"voicemail_message": null}), 400, "voicemail_message_required"),
        (json!({"agent_id": foreign["agent_id"]}), 403, "agent_not_owned"),
        (json!({"agent_id": "agent_0000000000000000"}), 404, "agent_not_found"),
        (json!({"outbound_enabled": "no"}), 400, "invalid_request"),
    ] {
        expect_error(patch(body).await.unwrap(), status, code).await;
    }
    let after: Value = app.get(&key, &path).await.json().await.unwrap();
    assert_eq!(after, moved, "rejected updates changed nothing");
    // The same number in the other path spellings.
    for spelling in ["%2B14155552671", "+14155552671", "%2014155552671"] {
        assert_eq!(
            app.get(&key, &format!("/v1/phone-numbers/{spelling}")).await.status(),
            200,
            "{spelling}"
        );
    }
    expect_error(app.get(&key, "/v1/phone-numbers/14155552671").await, 400, "invalid_phone_format")
        .await;
}

async fn deleting_an_agent_orphans_its_numbers(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap())).await;
    app.delete(&key, &format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap())).await;
    let path = format!("/v1/phone-numbers/{}", enc(NUMBER));
    let orphan: Value = app.get(&key, &path).await.json().await.unwrap();
    assert_eq!(orphan["phone_number"]["agent_id"], Value::Null);
    let replacement = app.create_agent(&key, json!({})).await;
    let response = app
        .request(Method::PATCH, &path, Some(&key))
        .json(&json!({"agent_id": replacement["agent_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["phone_number"]["agent_id"],
        replacement["agent_id"]
    );
}

async fn deleting_a_number_clears_our_twilio_webhooks_only(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let agent_id = agent["agent_id"].as_str().unwrap();
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await;
    let path = format!("/v1/phone-numbers/{}", enc(NUMBER));
    app.put(&key, &format!("{path}/callers/%2B447386172392"), json!({"name": "Ann"})).await;
    // The customer moved SMS elsewhere meanwhile: that stays.
    twilio.configure_number(&tw.number_sid, &[("SmsUrl", "https://crm.example.com/sms")]);

    // A Twilio outage: nothing is deleted, retry later.
    twilio.fail_next(&format!("IncomingPhoneNumbers/{}.json", tw.number_sid), 503, None);
    expect_error(app.delete(&key, &path).await, 502, "provider_error").await;
    assert_eq!(app.get(&key, &path).await.status(), 200);

    let response = app.delete(&key, &path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"phone_number": {"phone_number": NUMBER, "deleted": true, "twilio_webhooks_cleared": true}})
    );
    let state = twilio.number(&tw.number_sid).unwrap();
    assert_eq!(state.voice_url.as_deref().unwrap_or(""), "");
    assert_eq!(state.status_callback, "");
    assert_eq!(state.sms_url, "https://crm.example.com/sms");
    expect_error(app.get(&key, &path).await, 404, "number_not_found").await;
    expect_error(app.delete(&key, &path).await, 404, "number_not_found").await;

    // Re-importing starts clean: the caller context went with the number.
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await;
    expect_error(
        app.get(&key, &format!("{path}/callers/%2B447386172392")).await,
        404,
        "caller_not_found",
    )
    .await;

    // The customer rotated the Twilio token: the number is still removed here.
    twilio.fail_next(&format!("IncomingPhoneNumbers/{}.json", tw.number_sid), 401, 20003);
    let response = app.delete(&key, &path).await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["phone_number"]["twilio_webhooks_cleared"],
        false
    );
    expect_error(app.get(&key, &path).await, 404, "number_not_found").await;
}

async fn numbers_stay_in_their_account_and_list_in_pages(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let a = app.create_agent(&key, json!({})).await;
    let b = app.create_agent(&key, json!({})).await;
    let phones = ["+14155552671", "+14155552672", "+14155552673"];
    for (i, phone) in phones.iter().enumerate() {
        let tw = twilio_number(&twilio, phone);
        let agent = if i == 0 { &b } else { &a };
        assert_eq!(
            app.post(
                &key,
                "/v1/phone-numbers",
                tw.import_body(agent["agent_id"].as_str().unwrap())
            )
            .await
            .status(),
            201
        );
    }
    let page: Value = app.get(&key, "/v1/phone-numbers?limit=2").await.json().await.unwrap();
    assert_eq!(
        (page["count"].as_i64(), page["limit"].as_i64(), page["offset"].as_i64()),
        (Some(3), Some(2), Some(0))
    );
    let got: Vec<&str> = page["phone_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phone_number"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["+14155552673", "+14155552672"], "newest first");
    let of_b: Value = app
        .get(&key, &format!("/v1/phone-numbers?agent_id={}", b["agent_id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(of_b["count"], 1);
    let theirs: Value = app.get(&stranger, "/v1/phone-numbers").await.json().await.unwrap();
    assert_eq!(theirs["count"], 0);
    let path = format!("/v1/phone-numbers/{}", enc(phones[0]));
    expect_error(app.get(&stranger, &path).await, 404, "number_not_found").await;
    expect_error(
        app.request(Method::PATCH, &path, Some(&stranger))
            .json(&json!({"custom_prompt": "x"}))
            .send()
            .await
            .unwrap(),
        404,
        "number_not_found",
    )
    .await;
    expect_error(app.delete(&stranger, &path).await, 404, "number_not_found").await;
    assert_eq!(app.get(&key, &path).await.status(), 200);
}

/// Numbers in fictional-use or not-yet-allocated ranges are well-formed; a carrier can hold
/// them, so they import, and they are found by path and used as callers and transfer targets.
async fn well_formed_numbers_outside_allocated_ranges_are_accepted(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent =
        app.create_agent(&key, json!({"name": "Desk", "transfer_number": "+447700900123"})).await;
    assert_eq!(agent["transfer_number"], "+447700900123");
    let agent_id = agent["agent_id"].as_str().unwrap();
    for number in ["+15551234567", "+447700900123"] {
        let tw = twilio_number(&twilio, number);
        let response = app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await;
        assert_eq!(response.status(), 201, "{number}: {}", response.text().await.unwrap());
        let found = app.get(&key, &format!("/v1/phone-numbers/{}", enc(number))).await;
        assert_eq!(found.status(), 200, "{number}");
        let callers = format!("/v1/phone-numbers/{}/callers/{}", enc(number), enc("+15550100000"));
        let put = app
            .request(Method::PUT, &callers, Some(&key))
            .json(&json!({"name": "Ada"}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200, "{number}: {}", put.text().await.unwrap());
    }
    // Malformed input is still refused.
    let tw = twilio_number(&twilio, "+1415555");
    expect_error(
        app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await,
        400,
        "invalid_phone_format",
    )
    .await;
}

both!(
    well_formed_numbers_outside_allocated_ranges_are_accepted,
    import_points_the_number_at_us_and_keeps_the_token_secret,
    import_accepts_camel_case_aliases_and_settings,
    invalid_imports_are_rejected_before_twilio_is_touched,
    twilio_refusals_map_to_documented_codes_and_leave_nothing,
    a_number_can_be_imported_only_once,
    concurrent_imports_of_one_number_let_exactly_one_win,
    import_needs_a_public_url,
    numbers_update_partially_and_reattach_to_agents,
    deleting_an_agent_orphans_its_numbers,
    deleting_a_number_clears_our_twilio_webhooks_only,
    numbers_stay_in_their_account_and_list_in_pages,
);
