//! Carrier endpoints: every `/twilio/*` request must carry a valid `X-Twilio-Signature` made
//! with the auth token of the number it is for (PROTOCOLS.md §4.1).

use nixflex_providers::twilio::signature;
use serde_json::json;

use crate::helpers::{
    Backend, PUBLIC_URL, TestApp, TwilioNumber, both, expect_error, twilio_number,
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

both!(
    signed_webhooks_are_accepted,
    unsigned_or_forged_webhooks_are_refused,
    json_bodies_are_checked_with_body_sha256,
    without_a_public_url_the_host_the_carrier_called_is_used,
);
