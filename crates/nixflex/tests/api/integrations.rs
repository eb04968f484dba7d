//! Webhook slots and pre-call gates (docs/api.md#integrations; docs/decisions.md#webhook-targets, #precall-endpoints, #outbound-url-safety).

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, both, enc, expect_error, twilio_number};

const NUMBER: &str = "+14155552671";

async fn webhook_slots_are_independent(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap())).await;
    let primary = format!("/v1/integrations/webhook/number/{}", enc(NUMBER));
    let secondary = format!("/v1/integrations/webhook2/number/{}", enc(NUMBER));

    let unset: Value = app.get(&key, &primary).await.json().await.unwrap();
    assert_eq!(
        unset,
        json!({"phone_number": NUMBER, "webhook_url": null, "url": null, "is_set": false})
    );
    let set: Value = app
        .put(&key, &primary, json!({"url": "https://hooks.example.com/calls"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        set,
        json!({"phone_number": NUMBER, "webhook_url": "https://hooks.example.com/calls", "url": "https://hooks.example.com/calls", "is_set": true, "ok": true})
    );
    app.put(&key, &secondary, json!({"url": "https://backup.example.com/calls"})).await;
    let first: Value = app.get(&key, &primary).await.json().await.unwrap();
    let second: Value = app.get(&key, &secondary).await.json().await.unwrap();
    assert_eq!(first["url"], "https://hooks.example.com/calls");
    assert_eq!(second["url"], "https://backup.example.com/calls");

    let deleted: Value = app.delete(&key, &primary).await.json().await.unwrap();
    assert_eq!(deleted["deleted"], true);
    let first: Value = app.get(&key, &primary).await.json().await.unwrap();
    assert_eq!(first["is_set"], false);
    let second: Value = app.get(&key, &secondary).await.json().await.unwrap();
    assert_eq!(second["is_set"], true, "the other slot is untouched");

    for (body, code) in [
        (json!({}), "missing_field"),
        (json!({"url": ""}), "missing_field"),
        (json!({"url": 5}), "invalid_request"),
        (json!({"url": "http://hooks.example.com"}), "invalid_request"),
        (json!({"url": "https://10.0.0.5/hook"}), "invalid_request"),
        (json!({"url": "https://localhost:8443/hook"}), "invalid_request"),
        (json!({"url": "not a url"}), "invalid_request"),
    ] {
        let error = expect_error(app.put(&key, &secondary, body).await, 400, code).await;
        assert_eq!(error["details"]["field"], "url");
    }
    let unknown = format!("/v1/integrations/webhook/number/{}", enc("+14155550100"));
    expect_error(
        app.put(&key, &unknown, json!({"url": "https://hooks.example.com"})).await,
        404,
        "number_not_found",
    )
    .await;
    let stranger = app.signup().await;
    expect_error(app.get(&stranger, &primary).await, 404, "number_not_found").await;
    expect_error(
        app.put(&stranger, &secondary, json!({"url": "https://evil.example.com"})).await,
        404,
        "number_not_found",
    )
    .await;
}

async fn pre_call_gates_on_agents_and_numbers(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let agent_id = agent["agent_id"].as_str().unwrap();
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent_id)).await;
    let by_agent = format!("/v1/integrations/precall/agent/{agent_id}");
    let by_number = format!("/v1/integrations/precall/number/{}", enc(NUMBER));

    let set: Value = app
        .put(&key, &by_agent, json!({"url": "https://gate.example.com/agent"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        set,
        json!({"ok": true, "agent_id": agent_id, "url": "https://gate.example.com/agent"})
    );
    let got: Value = app.get(&key, &by_agent).await.json().await.unwrap();
    assert_eq!(
        got,
        json!({"agent_id": agent_id, "url": "https://gate.example.com/agent", "is_set": true})
    );
    let set: Value = app
        .put(&key, &by_number, json!({"url": "https://gate.example.com/number"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        set,
        json!({"ok": true, "phone_number": NUMBER, "url": "https://gate.example.com/number"})
    );
    let got: Value = app.get(&key, &by_number).await.json().await.unwrap();
    assert_eq!(got["is_set"], true);

    // Updating the agent keeps its gate.
    app.put(&key, &format!("/v1/agents/{agent_id}"), json!({"name": "Renamed"})).await;
    let got: Value = app.get(&key, &by_agent).await.json().await.unwrap();
    assert_eq!(got["url"], "https://gate.example.com/agent");

    assert_eq!(app.delete(&key, &by_number).await.status(), 200);
    let got: Value = app.get(&key, &by_number).await.json().await.unwrap();
    assert_eq!(got["is_set"], false);
    assert_eq!(app.delete(&key, &by_agent).await.status(), 200);
    let got: Value = app.get(&key, &by_agent).await.json().await.unwrap();
    assert_eq!(got, json!({"agent_id": agent_id, "url": null, "is_set": false}));

    expect_error(
        app.put(&key, &by_agent, json!({"url": "http://gate.example.com"})).await,
        400,
        "invalid_request",
    )
    .await;
    expect_error(app.get(&stranger, &by_agent).await, 404, "agent_not_found").await;
    expect_error(
        app.put(&stranger, &by_agent, json!({"url": "https://evil.example.com"})).await,
        404,
        "agent_not_found",
    )
    .await;
    expect_error(app.delete(&stranger, &by_agent).await, 404, "agent_not_found").await;
    expect_error(app.get(&stranger, &by_number).await, 404, "number_not_found").await;
}

async fn private_targets_are_allowed_only_when_configured(backend: Backend) {
    let (app, twilio) =
        TestApp::spawn_with_twilio_and(backend, |c| c.allow_private_targets = true).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap())).await;
    let response = app
        .put(
            &key,
            &format!("/v1/integrations/webhook/number/{}", enc(NUMBER)),
            json!({"url": "http://127.0.0.1:9999/hook"}),
        )
        .await;
    assert_eq!(response.status(), 200);
}

async fn a_webhook_test_is_signed_and_reports_each_receiver(backend: Backend) {
    let (app, twilio) =
        TestApp::spawn_with_twilio_and(backend, |c| c.allow_private_targets = true).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap())).await;
    let test = format!("/v1/integrations/webhook/number/{}/test", enc(NUMBER));
    let error = expect_error(app.post(&key, &test, json!({})).await, 400, "invalid_request").await;
    assert_eq!(error["details"]["field"], "url");

    let receiver = nixflex_testkit::webhook::WebhookReceiver::start().await.unwrap();
    for (slot, path) in [("webhook", "/a"), ("webhook2", "/b")] {
        let url = format!("/v1/integrations/{slot}/number/{}", enc(NUMBER));
        assert_eq!(app.put(&key, &url, json!({"url": receiver.url(path)})).await.status(), 200);
    }
    receiver.answer_with(&[200, 500]);
    let response = app.post(&key, &test, json!({})).await;
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["event"], "webhook.test");
    let deliveries = result["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(
        (&deliveries[0]["delivered"], &deliveries[0]["status_code"]),
        (&json!(true), &json!(200))
    );
    assert_eq!(
        (&deliveries[1]["delivered"], &deliveries[1]["status_code"]),
        (&json!(false), &json!(500))
    );
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].json()["event"], "webhook.test");
    assert_eq!(received[0].header("x-nixflex-event-id"), result["event_id"].as_str());
    // Signed with the account's key secret: t=<unix>,v1=<hex hmac-sha256("<t>.<body>")>.
    let header = received[0].header("x-nixflex-signature").unwrap();
    let t = header.split(',').next().unwrap().trim_start_matches("t=");
    let expected = {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&received[0].body);
        hex::encode(mac.finalize().into_bytes())
    };
    assert!(header.contains(&format!("v1={expected}")), "{header}");
}

both!(
    webhook_slots_are_independent,
    pre_call_gates_on_agents_and_numbers,
    private_targets_are_allowed_only_when_configured,
    a_webhook_test_is_signed_and_reports_each_receiver,
);
