//! Faithfulness of `TwilioEmulator`, `signature` and `twiml` against Twilio's OFFICIAL Python
//! library (PyPI `twilio`): the library drives the emulator through its normal REST client, and
//! signatures and TwiML are cross-checked in both directions.
//!
//! Requires `python3` (or `$PYTHON`) with `pip install twilio`; the test fails, loudly, when
//! either is missing.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use nixflex_providers::twilio::signature;
use nixflex_providers::twilio::twiml::{
    self, ConnectStream, DialOptions, RejectReason, SayOptions,
};
use nixflex_testkit::twilio::TwilioEmulator;
use serde_json::Value;

fn script() -> std::path::PathBuf {
    nixflex_testkit::package_file(env!("CARGO_MANIFEST_DIR"), "tests/py/twilio_official_client.py")
}
const NUMBER: &str = "+15551230001";
const EXTRA_NUMBERS: usize = 2;
const BUSY_CALLEE: &str = "+15557650486";

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_twilio_python_library_agrees_with_emulator_signatures_and_twiml() {
    // Arrange: an account with three numbers, and signatures made by nixflex_providers.
    let emulator = TwilioEmulator::start().await.expect("emulator starts");
    let account = emulator.add_account();
    let number_sid = emulator.add_number(&account.sid, NUMBER);
    for index in 0..EXTRA_NUMBERS {
        emulator.add_number(&account.sid, &format!("+1555999000{index}"));
    }
    let signed_url = "https://engine.example/twilio/voice?agent=a1&lang=en";
    let signed_params = pairs(&[
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("From", "+15550001111"),
        ("Digits", "9"),
        ("Digits", "1"),
        ("Digits", "9"),
        ("CallerName", "Zoë & Co <test>"),
    ]);
    let form_signature =
        signature::compute_signature(&account.auth_token, signed_url, &signed_params);
    let json_body = r#"{"property": "value", "boolean": true}"#;
    let json_url = format!(
        "https://engine.example/twilio/json?x=1&bodySHA256={}",
        signature::body_sha256_hex(json_body.as_bytes())
    );
    let json_signature = signature::compute_signature(&account.auth_token, &json_url, &[]);

    let live_call_sid = emulator.add_live_call(&account.sid, "+15550001111", NUMBER);
    // Receives the recording's status callback once the call ends.
    let receiver = nixflex_testkit::webhook::WebhookReceiver::start().await.unwrap();
    let recording_callback = receiver.url("/recording-status");
    // A busy callee, and a receiver for its call's status callbacks.
    emulator.add_callee(BUSY_CALLEE, nixflex_testkit::twilio::Callee::Busy);
    let statuses = nixflex_testkit::webhook::WebhookReceiver::start().await.unwrap();
    let status_callback = statuses.url("/call-status");

    // Act: run the script while the emulator serves it.
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut command = Command::new(&interpreter);
    command
        .arg(script())
        .env("TWILIO_EMULATOR_BASE_URL", emulator.base_url())
        .env("TWILIO_ACCOUNT_SID", &account.sid)
        .env("TWILIO_AUTH_TOKEN", &account.auth_token)
        .env("TWILIO_NUMBER", NUMBER)
        .env("TWILIO_NUMBER_SID", &number_sid)
        .env("TWILIO_EXTRA_NUMBERS", EXTRA_NUMBERS.to_string())
        .env("TWILIO_LIVE_CALL_SID", &live_call_sid)
        .env("RECORDING_STATUS_CALLBACK", &recording_callback)
        .env("TWILIO_BUSY_CALLEE", BUSY_CALLEE)
        .env("CALL_STATUS_CALLBACK", &status_callback)
        .env("NIXFLEX_SIGNED_URL", signed_url)
        .env("NIXFLEX_SIGNED_PARAMS", serde_json::to_string(&signed_params).unwrap())
        .env("NIXFLEX_SIGNATURE", &form_signature)
        .env("NIXFLEX_JSON_URL", &json_url)
        .env("NIXFLEX_JSON_BODY", json_body)
        .env("NIXFLEX_JSON_SIGNATURE", &json_signature);
    assert!(script().is_file(), "missing script {}", script().display());
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the Python script finished within 120 s")
    .expect("the blocking task ran");
    let output = match run {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{interpreter}` was not found: this test needs Python 3 with the official Twilio \
             library (`pip install twilio`); set $PYTHON to use another interpreter"
        ),
        Err(error) => panic!("could not run `{interpreter} {}`: {error}", script().display()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "the PyPI package `twilio` is not installed for `{interpreter}` (`pip install twilio`):\n{stderr}"
    );
    assert!(
        output.status.success(),
        "the official Twilio library disagreed with the emulator ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("script output is not JSON ({error}):\n{stdout}"));

    // Assert: what the library did is visible in the emulator.
    let number = emulator.number(&number_sid).unwrap();
    assert_eq!(number.voice_url.as_deref(), Some("https://engine.example/twilio/voice"));
    assert_eq!(number.sms_url, "https://engine.example/twilio/sms");
    assert_eq!(number.status_callback, "https://engine.example/twilio/status");
    let call = emulator.call(report["call_sid"].as_str().unwrap()).unwrap();
    assert_eq!(call.status, "completed");
    assert_eq!(
        call.create_param_values("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(call.create_param_values("MachineDetection"), ["Enable"]);
    assert_eq!(call.create_param_values("Timeout"), ["30"]);
    // The busy call's progress reached its status callback, signed, in Twilio's order.
    let busy_sid = report["busy_call_sid"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while statuses.received().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", statuses.received());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let progress: Vec<BTreeMap<String, String>> = statuses
        .received()
        .iter()
        .map(|received| {
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(&received.body).into_owned().collect();
            assert!(signature::validate_form(
                &account.auth_token,
                &status_callback,
                &params,
                received.header("x-twilio-signature").unwrap(),
            ));
            params.into_iter().collect()
        })
        .collect();
    let seen: Vec<(&str, &str)> =
        progress.iter().map(|p| (p["CallStatus"].as_str(), p["SequenceNumber"].as_str())).collect();
    assert_eq!(seen, [("initiated", "0"), ("ringing", "1"), ("busy", "2")]);
    assert!(progress.iter().all(|p| p["CallSid"] == busy_sid && p["Direction"] == "outbound-api"));
    assert_eq!(progress[2]["SipResponseCode"], "486");
    assert_eq!(progress[2]["CallDuration"], "0");
    let message = emulator.message(report["message_sid"].as_str().unwrap()).unwrap();
    assert_eq!(message.body, "Hello from the official library");
    let all_carried_credentials =
        emulator.requests().iter().all(|request| request.auth_user.is_some());
    assert!(all_carried_credentials, "every library request carried Basic credentials");

    // Assert: the recording the library started is completed when the call ends, with a
    // dual-channel WAV behind Basic auth and a signed status callback.
    let recording_sid = report["recording_sid"].as_str().unwrap();
    let recording = emulator.recording(recording_sid).unwrap();
    assert_eq!(
        recording.create_params.iter().filter(|(n, _)| n == "RecordingStatusCallbackEvent").count(),
        2
    );
    let (caller_audio, agent_audio) = (vec![0x10_u8; 16_000], vec![0x90_u8; 8_000]);
    let answers = emulator.end_call(&live_call_sid, &caller_audio, &agent_audio).await;
    assert_eq!(answers, [Ok(200)]);
    let recording = emulator.recording(recording_sid).unwrap();
    assert_eq!((recording.status.as_str(), recording.duration), ("completed", Some(2)));
    let media_url = format!("{}{}.wav", emulator.base_url(), recording.media_path());
    let http = reqwest::Client::new();
    let media = http
        .get(&media_url)
        .basic_auth(&account.sid, Some(&account.auth_token))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), 200);
    assert_eq!(media.headers()["content-type"], "audio/x-wav");
    let wav = media.bytes().await.unwrap();
    let header = nixflex_pipeline::audio::wav::parse_header(&wav).unwrap();
    assert_eq!((header.format.channels, header.format.sample_rate), (2, 8000));
    assert_eq!(header.data_len, Some(16_000 * 4));
    assert_eq!(http.get(&media_url).send().await.unwrap().status(), 401);
    let callbacks = receiver.received();
    assert_eq!(callbacks.len(), 1);
    let form: BTreeMap<String, String> =
        url::form_urlencoded::parse(&callbacks[0].body).into_owned().collect();
    assert_eq!(form["RecordingStatus"], "completed");
    assert_eq!(form["RecordingSid"], recording_sid);
    assert_eq!(form["CallSid"], live_call_sid);
    assert_eq!(form["RecordingChannels"], "2");
    assert_eq!(form["RecordingDuration"], "2");
    assert_eq!(form["RecordingSource"], "StartCallRecordingAPI");
    assert_eq!(
        form["RecordingUrl"],
        format!("https://api.twilio.com{}", recording.media_path()),
        "without extension"
    );
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(&callbacks[0].body).into_owned().collect();
    assert!(signature::validate_form(
        &account.auth_token,
        &recording_callback,
        &params,
        callbacks[0].header("x-twilio-signature").unwrap(),
    ));

    // Assert: signatures computed by RequestValidator validate with nixflex_providers.
    let python_signature = &report["python_signature"];
    let python_params: Vec<(String, String)> =
        serde_json::from_value(python_signature["params"].clone()).unwrap();
    let python_url = python_signature["url"].as_str().unwrap();
    let python_header = python_signature["signature"].as_str().unwrap();
    assert!(signature::validate_form(
        &account.auth_token,
        python_url,
        &python_params,
        python_header
    ));
    assert_eq!(
        signature::compute_signature(&account.auth_token, python_url, &python_params),
        python_header
    );
    let python_json = &report["python_json_signature"];
    assert!(signature::validate_json(
        &account.auth_token,
        python_json["url"].as_str().unwrap(),
        python_json["body"].as_str().unwrap().as_bytes(),
        python_json["signature"].as_str().unwrap(),
    ));

    // Assert: nixflex's TwiML equals the helper library's, byte for byte.
    let python_twiml: BTreeMap<String, String> =
        serde_json::from_value(report["twiml"].clone()).unwrap();
    let ours = BTreeMap::from([
        (
            "connect_stream".to_owned(),
            twiml::connect_stream(&ConnectStream {
                action: Some("https://engine.example/twilio/stream-ended?call=c_1&x=2".to_owned()),
                url: "wss://media.example/twilio/ws".to_owned(),
                status_callback: Some("https://engine.example/twilio/stream-status".to_owned()),
                status_callback_method: Some("POST".to_owned()),
                parameters: pairs(&[("call_id", "c_123"), ("token", "se\"cr<e>t&")]),
                ..ConnectStream::default()
            }),
        ),
        ("reject_busy".to_owned(), twiml::reject(RejectReason::Busy)),
        ("hangup".to_owned(), twiml::hangup()),
        (
            "say".to_owned(),
            twiml::Response::new()
                .say_with(
                    "Tom & Jerry <3",
                    &SayOptions {
                        voice: Some("Polly.Joanna".to_owned()),
                        language: Some("en-US".to_owned()),
                    },
                )
                .to_xml(),
        ),
        (
            "dial".to_owned(),
            twiml::dial_number(
                "+15550002222",
                &DialOptions {
                    action: Some("https://engine.example/dial-done".to_owned()),
                    caller_id: Some("+15550001111".to_owned()),
                    timeout: Some(Duration::from_secs(20)),
                    ..DialOptions::default()
                },
            ),
        ),
        ("message".to_owned(), twiml::message("Thanks & see you <soon>")),
        ("empty".to_owned(), twiml::empty()),
    ]);
    assert_eq!(ours, python_twiml);
}

fn sms_script() -> std::path::PathBuf {
    nixflex_testkit::package_file(env!("CARGO_MANIFEST_DIR"), "tests/py/twilio_official_sms.py")
}

/// Messages with scripted delivery outcomes, their status callbacks (in Twilio's order, signed)
/// and an inbound-text webhook, checked with the official library: it reads each message's status,
/// error code and direction, and its `RequestValidator` accepts every signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_twilio_library_reads_message_statuses_and_validates_sms_webhooks() {
    let emulator = TwilioEmulator::start().await.expect("emulator starts");
    let account = emulator.add_account();
    let number_sid = emulator.add_number(&account.sid, NUMBER);
    let receiver = nixflex_testkit::webhook::WebhookReceiver::start().await.unwrap();
    assert!(emulator.configure_number(&number_sid, &[("SmsUrl", &receiver.url("/sms"))]));
    let client = nixflex_providers::twilio::TwilioClient::new(
        nixflex_providers::twilio::TwilioClientConfig {
            base_url: emulator.base_url().to_owned(),
            ..nixflex_providers::twilio::TwilioClientConfig::default()
        },
    )
    .unwrap();
    let credentials =
        nixflex_providers::twilio::TwilioCredentials::new(&account.sid, &account.auth_token);
    let mut sids = Vec::new();
    for to in ["+15557650001", "+15557650002", "+15557650003"] {
        let mut create =
            nixflex_providers::twilio::CreateMessage::new(to, NUMBER, "Your order shipped.");
        create.status_callback = Some(receiver.url("/sms-status"));
        sids.push(client.create_message(&credentials, &create).await.unwrap().sid);
    }
    use nixflex_testkit::twilio::MessageOutcome;
    assert_eq!(
        emulator.deliver_message(&sids[0], MessageOutcome::Delivered).await,
        [Ok(200), Ok(200)]
    );
    assert_eq!(
        emulator.deliver_message(&sids[1], MessageOutcome::Undelivered(30007)).await,
        [Ok(200), Ok(200)]
    );
    assert_eq!(emulator.deliver_message(&sids[2], MessageOutcome::Failed(30034)).await, [Ok(200)]);
    let (inbound_sid, status) =
        emulator.send_inbound_sms("+15557650009", NUMBER, "STOP", None).await.unwrap();
    assert_eq!(status, 200);

    // Twilio's order and parameters.
    let received = receiver.received();
    let form = |i: usize| -> BTreeMap<String, String> {
        url::form_urlencoded::parse(&received[i].body).into_owned().collect()
    };
    let statuses: Vec<(String, String)> =
        (0..5).map(|i| (form(i)["MessageSid"].clone(), form(i)["MessageStatus"].clone())).collect();
    assert_eq!(
        statuses,
        [
            (sids[0].clone(), "sent".to_owned()),
            (sids[0].clone(), "delivered".to_owned()),
            (sids[1].clone(), "sent".to_owned()),
            (sids[1].clone(), "undelivered".to_owned()),
            (sids[2].clone(), "failed".to_owned()),
        ]
    );
    assert_eq!(form(3)["ErrorCode"], "30007");
    assert_eq!(form(4)["ErrorCode"], "30034");
    assert!(!form(1).contains_key("ErrorCode"));
    assert_eq!(
        (form(0)["From"].as_str(), form(0)["AccountSid"].as_str()),
        (NUMBER, account.sid.as_str())
    );
    let inbound = form(5);
    assert_eq!(received[5].path, "/sms");
    assert_eq!(
        (inbound["MessageSid"].as_str(), inbound["Body"].as_str()),
        (inbound_sid.as_str(), "STOP")
    );
    assert_eq!((inbound["From"].as_str(), inbound["To"].as_str()), ("+15557650009", NUMBER));

    let webhooks: Vec<Value> = received
        .iter()
        .map(|hook| {
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(&hook.body).into_owned().collect();
            serde_json::json!({
                "url": receiver.url(&hook.path),
                "params": params,
                "signature": hook.header("x-twilio-signature").unwrap(),
            })
        })
        .collect();
    let expected = serde_json::json!({
        sids[0].clone(): {"status": "delivered", "error_code": null, "direction": "outbound-api"},
        sids[1].clone(): {"status": "undelivered", "error_code": 30007, "direction": "outbound-api"},
        sids[2].clone(): {"status": "failed", "error_code": 30034, "direction": "outbound-api"},
        inbound_sid.clone(): {"status": "received", "error_code": null, "direction": "inbound"},
    });
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut command = Command::new(&interpreter);
    command
        .arg(sms_script())
        .env("TWILIO_EMULATOR_BASE_URL", emulator.base_url())
        .env("TWILIO_ACCOUNT_SID", &account.sid)
        .env("TWILIO_AUTH_TOKEN", &account.auth_token)
        .env("SMS_EXPECTED", expected.to_string())
        .env("SMS_WEBHOOKS", serde_json::to_string(&webhooks).unwrap());
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the Python script finished within 120 s")
    .expect("the blocking task ran")
    .unwrap_or_else(|error| {
        panic!("could not run `{interpreter} {}`: {error}", sms_script().display())
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "the PyPI package `twilio` is not installed:\n{stderr}"
    );
    assert!(
        output.status.success(),
        "the official Twilio library disagreed with the emulator:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (report["checked_messages"].as_u64(), report["checked_webhooks"].as_u64()),
        (Some(4), Some(6))
    );
}
