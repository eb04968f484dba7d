//! Caller context (docs/api.md#caller-context; docs/decisions.md#number-deletion, #caller-context).

use serde_json::{Value, json};

use crate::helpers::{Backend, Key, TestApp, both, enc, expect_error, twilio_number};

const NUMBER: &str = "+14155552671";
const CALLER: &str = "+447386172392";

async fn imported(
    app: &TestApp,
    twilio: &nixflex_testkit::twilio::TwilioEmulator,
    key: &Key,
) -> String {
    let agent = app.create_agent(key, json!({})).await;
    let tw = twilio_number(twilio, NUMBER);
    assert_eq!(
        app.post(key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap()))
            .await
            .status(),
        201
    );
    format!("/v1/phone-numbers/{}/callers", enc(NUMBER))
}

async fn caller_context_is_set_read_and_erased(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let base = imported(&app, &twilio, &key).await;
    let path = format!("{base}/{}", enc(CALLER));
    expect_error(app.get(&key, &path).await, 404, "caller_not_found").await;

    let response = app
        .put(
            &key,
            &path,
            json!({"name": "Ann Smith", "email": "ann@example.com", "referenceId": "CUST-9"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["caller"]["phone_number"], NUMBER);
    assert_eq!(body["caller"]["caller_number"], CALLER);
    assert_eq!(
        body["caller"]["context"],
        json!({"name": "Ann Smith", "email": "ann@example.com", "reference_id": "CUST-9"})
    );

    let updated: Value = app
        .put(&key, &path, json!({"email": null, "preference": "mornings"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        updated["caller"]["context"],
        json!({"name": "Ann Smith", "reference_id": "CUST-9", "preference": "mornings"})
    );
    let fetched: Value = app.get(&key, &path).await.json().await.unwrap();
    assert_eq!(fetched, updated);

    for (body, code, field) in [
        (json!({"last_call": "wanted a refund"}), "engine_only_field", "last_call"),
        (json!({"open_item": "callback"}), "engine_only_field", "open_item"),
        (json!({"name": 42}), "invalid_request", "name"),
        (json!({"location": "x".repeat(501)}), "invalid_request", "location"),
    ] {
        let error = expect_error(app.put(&key, &path, body).await, 400, code).await;
        assert_eq!(error["details"]["field"], field);
    }
    expect_error(app.put(&key, &path, json!({})).await, 400, "missing_field").await;
    expect_error(app.get(&key, &format!("{base}/07386172392")).await, 400, "invalid_phone_format")
        .await;

    let response = app.delete(&key, &path).await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"phone_number": NUMBER, "caller_number": CALLER, "deleted": true})
    );
    expect_error(app.get(&key, &path).await, 404, "caller_not_found").await;
    expect_error(app.delete(&key, &path).await, 404, "caller_not_found").await;
}

async fn imports_are_all_or_nothing(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let base = imported(&app, &twilio, &key).await;
    let import = format!("{base}/import");
    let bad = json!({"callers": [
        {"caller_number": "+447386172301", "name": "One"},
        {"caller_number": "+447386172302", "name": "Two"},
        {"caller_number": "0738", "name": "Three"},
    ]});
    let error = expect_error(app.post(&key, &import, bad).await, 400, "invalid_phone_format").await;
    assert_eq!(error["details"]["row_index"], 2);
    assert_eq!(error["details"]["field"], "callers[2].caller_number");
    expect_error(app.get(&key, &format!("{base}/%2B447386172301")).await, 404, "caller_not_found")
        .await;

    for (body, code, row) in [
        (json!({"callers": [{"name": "no number"}]}), "missing_field", Some(0)),
        (
            json!({"callers": [{"caller_number": "+447386172301"}, {"caller_number": "+447386172301"}]}),
            "invalid_request",
            Some(1),
        ),
        (
            json!({"callers": [{"caller_number": "+447386172301", "open_item": "x"}]}),
            "engine_only_field",
            Some(0),
        ),
        (json!({"callers": "nope"}), "invalid_request", None),
        (json!({}), "missing_field", None),
    ] {
        let error = expect_error(app.post(&key, &import, body).await, 400, code).await;
        if let Some(row) = row {
            assert_eq!(error["details"]["row_index"], row);
        }
    }
    let too_many: Vec<Value> =
        (0..1001).map(|i| json!({"caller_number": format!("+4473861{:05}", i)})).collect();
    expect_error(
        app.post(&key, &import, json!({"callers": too_many})).await,
        400,
        "invalid_request",
    )
    .await;

    let rows: Vec<Value> = (0..1000).map(|i| json!({"caller_number": format!("+4473861{:05}", i), "name": format!("Caller {i}")})).collect();
    let response = app.post(&key, &import, json!({"callers": rows})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"phone_number": NUMBER, "imported": 1000})
    );
    let one: Value = app.get(&key, &format!("{base}/%2B447386100999")).await.json().await.unwrap();
    assert_eq!(one["caller"]["context"]["name"], "Caller 999");
}

async fn another_accounts_number_has_no_callers_for_you(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let stranger = app.signup().await;
    let base = imported(&app, &twilio, &key).await;
    let path = format!("{base}/{}", enc(CALLER));
    app.put(&key, &path, json!({"name": "Ann"})).await;
    expect_error(app.get(&stranger, &path).await, 404, "number_not_found").await;
    expect_error(app.put(&stranger, &path, json!({"name": "Eve"})).await, 404, "number_not_found")
        .await;
    expect_error(app.delete(&stranger, &path).await, 404, "number_not_found").await;
    expect_error(
        app.post(&stranger, &format!("{base}/import"), json!({"callers": []})).await,
        404,
        "number_not_found",
    )
    .await;
    let mine: Value = app.get(&key, &path).await.json().await.unwrap();
    assert_eq!(mine["caller"]["context"]["name"], "Ann");
}

both!(
    caller_context_is_set_read_and_erased,
    imports_are_all_or_nothing,
    another_accounts_number_has_no_callers_for_you
);
