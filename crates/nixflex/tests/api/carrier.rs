//! Carrier endpoints: every `/twilio/*` request must carry a valid `X-Twilio-Signature` made
//! with the auth token of the number it is for (docs/protocols.md#twilio-request-signature).

use nixflex_providers::twilio::signature;
use serde_json::json;

use crate::helpers::{
    Backend, Key, PUBLIC_URL, TestApp, TwilioNumber, both, expect_error, twilio_number,
};

const NUMBER: &str = "+14155552671";

fn voice_params(tw: &TwilioNumber) -> Vec<(String, String)> {
    [
        ("CallSid", format!("CA{}", "1".repeat(32))),
        ("AccountSid", tw.sid.clone()),
        ("From", "+447386172392".to_owned()),
        ("To", tw.phone.clone()),
        ("CallStatus", "ringing".to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
        ("Direction", "inbound".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Posts a webhook to the server, signed over the public URL as Twilio (behind our proxy) would.
async fn post_signed(
    app: &TestApp,
    path: &str,
    token: &str,
    params: &[(String, String)],
    tamper: Option<(&str, &str)>,
) -> reqwest::Response {
    let sig = signature::compute_signature(token, &format!("{PUBLIC_URL}{path}"), params);
    let mut sent = params.to_vec();
    if let Some((name, value)) = tamper {
        for pair in &mut sent {
            if pair.0 == name {
                pair.1 = value.to_owned();
            }
        }
    }
    app.client
        .post(app.url(path))
        .header("x-twilio-signature", sig)
        .form(&sent)
        .send()
        .await
        .unwrap()
}

async fn setup(
    backend: Backend,
) -> (TestApp, nixflex_testkit::twilio::TwilioEmulator, TwilioNumber) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    assert_eq!(
        app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap()))
            .await
            .status(),
        201
    );
    (app, twilio, tw)
}

async fn signed_webhooks_are_accepted(backend: Backend) {
    let (app, _twilio, tw) = setup(backend).await;
    let response = post_signed(&app, "/twilio/voice", &tw.token, &voice_params(&tw), None).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/xml"));
    let twiml = response.text().await.unwrap();
    assert!(
        twiml.contains("<Connect")
            && twiml.contains("/twilio/stream")
            && twiml.contains("name=\"token\""),
        "{twiml}"
    );
    let mut status = voice_params(&tw);
    status.push(("CallStatus".to_owned(), "completed".to_owned()));
    assert_eq!(post_signed(&app, "/twilio/status", &tw.token, &status, None).await.status(), 200);
    let sms = vec![
        ("MessageSid".to_owned(), format!("SM{}", "2".repeat(32))),
        ("AccountSid".to_owned(), tw.sid.clone()),
        ("From".to_owned(), "+447386172392".to_owned()),
        ("To".to_owned(), tw.phone.clone()),
        ("Body".to_owned(), "Hello".to_owned()),
    ];
    assert_eq!(post_signed(&app, "/twilio/sms", &tw.token, &sms, None).await.status(), 200);
}

async fn unsigned_or_forged_webhooks_are_refused(backend: Backend) {
    let (app, _twilio, tw) = setup(backend).await;
    let params = voice_params(&tw);
    let response = app.client.post(app.url("/twilio/voice")).form(&params).send().await.unwrap();
    expect_error(response, 403, "invalid_signature").await;
    expect_error(
        post_signed(&app, "/twilio/voice", &"0".repeat(32), &params, None).await,
        403,
        "invalid_signature",
    )
    .await;
    expect_error(
        post_signed(&app, "/twilio/voice", &tw.token, &params, Some(("From", "+15550001111")))
            .await,
        403,
        "invalid_signature",
    )
    .await;
    // Signed for another path.
    let sig =
        signature::compute_signature(&tw.token, &format!("{PUBLIC_URL}/twilio/status"), &params);
    let response = app
        .client
        .post(app.url("/twilio/voice"))
        .header("x-twilio-signature", sig)
        .form(&params)
        .send()
        .await
        .unwrap();
    expect_error(response, 403, "invalid_signature").await;
    // A number nobody imported.
    let mut stranger = params.clone();
    for pair in &mut stranger {
        if pair.0 == "To" {
            pair.1 = "+14155550100".to_owned();
        }
    }
    expect_error(
        post_signed(&app, "/twilio/voice", &tw.token, &stranger, None).await,
        403,
        "invalid_signature",
    )
    .await;
    // The right number under another Account SID.
    let mut wrong_account = params.clone();
    for pair in &mut wrong_account {
        if pair.0 == "AccountSid" {
            pair.1 = format!("AC{}", "f".repeat(32));
        }
    }
    expect_error(
        post_signed(&app, "/twilio/voice", &tw.token, &wrong_account, None).await,
        403,
        "invalid_signature",
    )
    .await;
}

async fn json_bodies_are_checked_with_body_sha256(backend: Backend) {
    let (app, _twilio, tw) = setup(backend).await;
    let body = format!(r#"{{"AccountSid":"{}","To":"{}"}}"#, tw.sid, tw.phone);
    let query = format!(
        "bodySHA256={}&To={}&AccountSid={}",
        signature::body_sha256_hex(body.as_bytes()),
        tw.phone.replace('+', "%2B"),
        tw.sid
    );
    let path = format!("/twilio/status?{query}");
    let sig = signature::compute_signature(&tw.token, &format!("{PUBLIC_URL}{path}"), &[]);
    let send = |payload: String, sig: String| {
        app.client
            .post(app.url(&path))
            .header("x-twilio-signature", sig)
            .header("content-type", "application/json")
            .body(payload)
            .send()
    };
    assert_eq!(send(body.clone(), sig.clone()).await.unwrap().status(), 200);
    expect_error(send(body.replace("AC", "AD"), sig).await.unwrap(), 403, "invalid_signature")
        .await;
}

async fn without_a_public_url_the_host_the_carrier_called_is_used(backend: Backend) {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let tw = twilio_number(&twilio, NUMBER);
    app.post(&key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap())).await;
    // A second node without a public URL, on the same database, as when testing locally.
    let mut config = app.config.clone();
    config.public_url = None;
    let node = nixflex::server::start(config).await.unwrap();
    let url = format!("{}/twilio/voice", node.base_url());
    let response = twilio.send_webhook(&url, &tw.token, &voice_params(&tw)).await.unwrap();
    assert_eq!(response.status(), 200);
    let response = twilio.send_webhook(&url, &"9".repeat(32), &voice_params(&tw)).await.unwrap();
    assert_eq!(response.status(), 403);
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

/// Two tenants on one server, each with its own Twilio account and number.
struct Tenants {
    app: TestApp,
    _twilio: nixflex_testkit::twilio::TwilioEmulator,
    victim: Key,
    victim_number: TwilioNumber,
    /// A second number of the victim's account, on another Twilio account.
    victim_other_number: TwilioNumber,
    attacker: Key,
    attacker_number: TwilioNumber,
}

async fn tenants(backend: Backend) -> Tenants {
    let (app, twilio) = TestApp::spawn_with_twilio(backend).await;
    let victim = app.signup().await;
    let attacker = app.signup().await;
    let mut numbers = Vec::new();
    for (key, phone) in [(&victim, NUMBER), (&victim, "+14155552673"), (&attacker, "+14155552672")]
    {
        let agent = app.create_agent(key, json!({})).await;
        let tw = twilio_number(&twilio, phone);
        let response = app
            .post(key, "/v1/phone-numbers", tw.import_body(agent["agent_id"].as_str().unwrap()))
            .await;
        assert_eq!(response.status(), 201);
        numbers.push(tw);
    }
    let attacker_number = numbers.pop().unwrap();
    let victim_other_number = numbers.pop().unwrap();
    let victim_number = numbers.pop().unwrap();
    Tenants {
        app,
        _twilio: twilio,
        victim,
        victim_number,
        victim_other_number,
        attacker,
        attacker_number,
    }
}

fn call_params(tw: &TwilioNumber, call_sid: &str, from: &str, to: &str) -> Vec<(String, String)> {
    [
        ("CallSid", call_sid),
        ("AccountSid", tw.sid.as_str()),
        ("From", from),
        ("To", to),
        ("CallStatus", "ringing"),
        ("ApiVersion", "2010-04-01"),
        ("Direction", "inbound"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}

fn with_status(mut params: Vec<(String, String)>, status: &str) -> Vec<(String, String)> {
    params.retain(|(k, _)| k != "CallStatus");
    params.push(("CallStatus".to_owned(), status.to_owned()));
    params.push(("CallDuration".to_owned(), "17".to_owned()));
    params
}

/// The victim's live inbound call on `tw`, answered through its own signed webhook.
async fn live_call(t: &Tenants, tw: &TwilioNumber, call_sid: &str) -> serde_json::Value {
    let params = call_params(tw, call_sid, "+447386172392", &tw.phone);
    let response = post_signed(&t.app, "/twilio/voice", &tw.token, &params, None).await;
    assert!(response.text().await.unwrap().contains("name=\"token\""));
    call_by_sid(&t.app, &t.victim, call_sid).await
}

async fn call_by_sid(app: &TestApp, key: &Key, call_sid: &str) -> serde_json::Value {
    let list: serde_json::Value = app.get(key, "/v1/calls?limit=100").await.json().await.unwrap();
    list["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["twilio_call_sid"] == call_sid)
        .unwrap_or_else(|| panic!("no call {call_sid}: {list}"))
        .clone()
}

async fn status_callbacks_only_touch_calls_of_the_number_that_signed_them(backend: Backend) {
    let t = tenants(backend).await;
    let sid = format!("CA{}", "a".repeat(32));
    let before = live_call(&t, &t.victim_number, &sid).await;
    assert_eq!(before["call_status"], "in-progress");
    let unknown = with_status(
        call_params(
            &t.attacker_number,
            &format!("CA{}", "b".repeat(32)),
            "+447386172392",
            &t.attacker_number.phone,
        ),
        "completed",
    );
    let unknown = post_signed(&t.app, "/twilio/status", &t.attacker_number.token, &unknown, None)
        .await
        .text()
        .await
        .unwrap();
    let a = &t.attacker_number;
    let v = &t.victim_number;
    let w = &t.victim_other_number;
    for (signer, from, to) in [
        // Another account's number, addressed to itself, carrying the victim's CallSid.
        (a, "+447386172392", a.phone.as_str()),
        // Another account's number, naming the victim's number as the called party.
        (a, a.phone.as_str(), v.phone.as_str()),
        // The victim's own account, but another of its numbers.
        (w, "+447386172392", w.phone.as_str()),
    ] {
        let forged = with_status(call_params(signer, &sid, from, to), "completed");
        let response = post_signed(&t.app, "/twilio/status", &signer.token, &forged, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), unknown, "the answer reveals nothing");
        let after = call_by_sid(&t.app, &t.victim, &sid).await;
        assert_eq!(after, before, "signed by {} for {to}: the victim's call changed", signer.phone);
    }
    // The number the call belongs to can end it (the check above could see a change).
    let own = with_status(call_params(v, &sid, "+447386172392", &v.phone), "completed");
    assert_eq!(post_signed(&t.app, "/twilio/status", &v.token, &own, None).await.status(), 200);
    let ended = call_by_sid(&t.app, &t.victim, &sid).await;
    assert_eq!(
        (ended["call_status"].as_str(), ended["duration_seconds"].as_i64()),
        (Some("completed"), Some(17))
    );
    assert!(ended["ended_at"].is_string());
}

async fn a_voice_webhook_with_another_accounts_call_sid_gets_no_token(backend: Backend) {
    let t = tenants(backend).await;
    let sid = format!("CA{}", "c".repeat(32));
    let before = live_call(&t, &t.victim_number, &sid).await;
    let call_id = before["call_id"].as_str().unwrap().to_owned();
    let secrets = nixflex::server::load_master_key(&t.app.config).unwrap();
    let store = nixflex::server::open_store(&t.app.config, &secrets).await.unwrap();
    let token_hash = |store: std::sync::Arc<dyn nixflex_store::Store>, call_id: String| async move {
        store.find_call(&call_id.as_str().into()).await.unwrap().unwrap().stream_token_hash
    };
    let hash_before = token_hash(store.clone(), call_id.clone()).await;
    assert!(hash_before.is_some());
    let a = &t.attacker_number;
    let w = &t.victim_other_number;
    for (signer, from, to) in [
        (a, "+447386172392", a.phone.as_str()),
        (a, a.phone.as_str(), t.victim_number.phone.as_str()),
        (w, "+447386172392", w.phone.as_str()),
    ] {
        let forged = call_params(signer, &sid, from, to);
        let response = post_signed(&t.app, "/twilio/voice", &signer.token, &forged, None).await;
        assert_eq!(response.status(), 200);
        let twiml = response.text().await.unwrap();
        assert!(!twiml.contains(&call_id), "the victim's call id leaked: {twiml}");
        assert!(!twiml.contains("<Stream") && !twiml.contains("token"), "{twiml}");
        assert_eq!(token_hash(store.clone(), call_id.clone()).await, hash_before);
        assert_eq!(call_by_sid(&t.app, &t.victim, &sid).await, before);
    }
    let theirs: serde_json::Value = t.app.get(&t.attacker, "/v1/calls").await.json().await.unwrap();
    assert!(
        theirs["calls"].as_array().unwrap().iter().all(|c| c["twilio_call_sid"] != sid.as_str()),
        "{theirs}"
    );
}

/// A call whose media stream never started ends by the carrier's final status; its follow-up is
/// queued with that write, once however often the status is repeated, and the worker runs it.
async fn a_call_ended_by_the_carrier_without_a_session_gets_one_follow_up(backend: Backend) {
    use nixflex_store::{CALL_ENDED, JobFilter, JobState, Page};
    let (app, _twilio, tw) = setup(backend).await;
    assert_eq!(
        post_signed(&app, "/twilio/voice", &tw.token, &voice_params(&tw), None).await.status(),
        200
    );
    let store = nixflex_store::open(&app.config.effective_database_url(), 2).await.unwrap();
    let follow_ups = || {
        let store = store.clone();
        async move {
            store
                .list_jobs(
                    &JobFilter { state: None, kind: Some(CALL_ENDED.to_owned()) },
                    Page { limit: 10, offset: 0 },
                )
                .await
                .unwrap()
        }
    };
    let mut ringing = voice_params(&tw);
    ringing.retain(|(k, _)| k != "CallStatus");
    ringing.push(("CallStatus".to_owned(), "ringing".to_owned()));
    assert_eq!(post_signed(&app, "/twilio/status", &tw.token, &ringing, None).await.status(), 200);
    assert!(follow_ups().await.is_empty(), "not before the call ends");
    let mut completed = voice_params(&tw);
    completed.retain(|(k, _)| k != "CallStatus");
    completed.push(("CallStatus".to_owned(), "completed".to_owned()));
    for _ in 0..2 {
        let response = post_signed(&app, "/twilio/status", &tw.token, &completed, None).await;
        assert_eq!(response.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let job = loop {
        let jobs = follow_ups().await;
        assert_eq!(jobs.len(), 1, "one follow-up per call: {jobs:?}");
        if jobs[0].state == JobState::Done {
            break jobs[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "follow-up not run: {jobs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let call =
        store.find_call(&job.payload["call_id"].as_str().unwrap().into()).await.unwrap().unwrap();
    assert_eq!(call.call_status.as_str(), "completed");
    assert_eq!(job.payload["account_id"], call.account_id.as_str());
    assert_eq!(job.attempts, 1);
}

both!(
    a_call_ended_by_the_carrier_without_a_session_gets_one_follow_up,
    signed_webhooks_are_accepted,
    unsigned_or_forged_webhooks_are_refused,
    json_bodies_are_checked_with_body_sha256,
    without_a_public_url_the_host_the_carrier_called_is_used,
    status_callbacks_only_touch_calls_of_the_number_that_signed_them,
    a_voice_webhook_with_another_accounts_call_sid_gets_no_token,
);
