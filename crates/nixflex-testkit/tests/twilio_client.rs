//! `nixflex_providers::twilio::TwilioClient` against `TwilioEmulator` over real loopback HTTP:
//! every operation and every error mapping.

use std::time::Duration;

use nixflex_providers::twilio::{
    CallStatus, CallStatusEvent, CallTarget, CreateCall, CreateMessage, CreateRecording,
    IncomingPhoneNumberFilter, IncomingPhoneNumberUpdate, MachineDetection, MessageStatus,
    TwilioClient, TwilioClientConfig, TwilioCredentials, TwilioError, UpdateCall,
};
use nixflex_testkit::twilio::{EmulatedAccount, TwilioEmulator};

const NUMBER: &str = "+15551230001";

struct Harness {
    emulator: TwilioEmulator,
    client: TwilioClient,
    account: EmulatedAccount,
    credentials: TwilioCredentials,
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

async fn harness_with(configure: impl FnOnce(&mut TwilioClientConfig)) -> Harness {
    let emulator = TwilioEmulator::start().await.expect("emulator starts");
    let mut config = TwilioClientConfig {
        base_url: emulator.base_url().to_owned(),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..TwilioClientConfig::default()
    };
    configure(&mut config);
    let client = TwilioClient::new(config).expect("client builds");
    let account = emulator.add_account();
    let credentials = TwilioCredentials::new(&account.sid, &account.auth_token);
    Harness { emulator, client, account, credentials }
}

fn outbound_call() -> CreateCall {
    CreateCall::new(
        "+15557654321",
        NUMBER,
        CallTarget::Url("https://engine.example/twilio/voice".into()),
    )
}

#[tokio::test]
async fn list_filters_by_phone_number_and_returns_the_webhook_config() {
    let h = harness().await;
    let sid = h.emulator.add_number(&h.account.sid, NUMBER);
    h.emulator.add_number(&h.account.sid, "+15559990000");
    h.emulator
        .configure_number(&sid, &[("VoiceUrl", "https://old.example/voice"), ("SmsMethod", "GET")]);

    let filter = IncomingPhoneNumberFilter {
        phone_number: Some(NUMBER.to_owned()),
        ..IncomingPhoneNumberFilter::default()
    };
    let numbers = h.client.list_incoming_phone_numbers(&h.credentials, &filter).await.unwrap();

    assert_eq!(numbers.len(), 1);
    let number = &numbers[0];
    assert_eq!(number.sid, sid);
    assert_eq!(number.account_sid, h.account.sid);
    assert_eq!(number.phone_number, NUMBER);
    assert_eq!(number.voice_url.as_deref(), Some("https://old.example/voice"));
    assert_eq!(number.voice_method.as_deref(), Some("POST"));
    assert_eq!(number.sms_method.as_deref(), Some("GET"));
    assert_eq!(number.status_callback.as_deref(), Some(""));
    assert_eq!(number.friendly_name.as_deref(), Some("(555) 123-0001"));
    let request = &h.emulator.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{}/IncomingPhoneNumbers.json", h.account.sid)
    );
    assert_eq!(request.query_param("PhoneNumber"), Some(NUMBER));
    assert_eq!(request.auth_user.as_deref(), Some(h.account.sid.as_str()));
    assert!(request.authenticated);
}

#[tokio::test]
async fn find_requires_an_exact_match_although_twilio_matches_partial_numbers() {
    let h = harness().await;
    h.emulator.add_number(&h.account.sid, "+155512300019");

    let partial_only = h.client.find_incoming_phone_number(&h.credentials, NUMBER).await.unwrap();
    let sid = h.emulator.add_number(&h.account.sid, NUMBER);
    let exact = h.client.find_incoming_phone_number(&h.credentials, NUMBER).await.unwrap();

    assert_eq!(partial_only, None);
    assert_eq!(exact.map(|number| number.sid), Some(sid));
}

#[tokio::test]
async fn list_follows_next_page_uri_until_the_last_page() {
    let h = harness().await;
    for index in 0..5 {
        h.emulator.add_number(&h.account.sid, &format!("+1555000000{index}"));
    }
    let filter =
        IncomingPhoneNumberFilter { page_size: Some(2), ..IncomingPhoneNumberFilter::default() };

    let numbers = h.client.list_incoming_phone_numbers(&h.credentials, &filter).await.unwrap();

    assert_eq!(numbers.len(), 5);
    let pages: Vec<Option<String>> = h
        .emulator
        .requests()
        .iter()
        .map(|request| request.query_param("Page").map(str::to_owned))
        .collect();
    assert_eq!(pages, [None, Some("1".to_owned()), Some("2".to_owned())]);
}

#[tokio::test]
async fn fetch_returns_the_incoming_number() {
    let h = harness().await;
    let sid = h.emulator.add_number(&h.account.sid, NUMBER);

    let number = h.client.fetch_incoming_phone_number(&h.credentials, &sid).await.unwrap();

    assert_eq!(number.sid, sid);
    assert_eq!(number.voice_url, None);
    assert!(number.capabilities.is_some_and(|capabilities| capabilities.voice));
    assert!(number.date_created.is_some_and(|date| date.ends_with("+0000")));
}

#[tokio::test]
async fn update_sets_the_given_webhooks_and_empty_strings_clear() {
    let h = harness().await;
    let sid = h.emulator.add_number(&h.account.sid, NUMBER);
    h.emulator.configure_number(&sid, &[("SmsUrl", "https://other-system.example/sms")]);
    let update = IncomingPhoneNumberUpdate {
        voice_url: Some("https://engine.example/twilio/voice".into()),
        voice_method: Some("POST".into()),
        status_callback: Some("https://engine.example/twilio/status".into()),
        sms_url: Some(String::new()),
        ..IncomingPhoneNumberUpdate::default()
    };

    let returned =
        h.client.update_incoming_phone_number(&h.credentials, &sid, &update).await.unwrap();

    assert_eq!(returned.voice_url.as_deref(), Some("https://engine.example/twilio/voice"));
    assert_eq!(returned.sms_url.as_deref(), Some(""));
    let stored = h.emulator.number(&sid).unwrap();
    assert_eq!(stored.voice_url.as_deref(), Some("https://engine.example/twilio/voice"));
    assert_eq!(stored.status_callback, "https://engine.example/twilio/status");
    assert_eq!(stored.sms_url, "");
    let request = h.emulator.requests().pop().unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.form_param("SmsUrl"), Some(""));
    assert_eq!(request.form_param("FriendlyName"), None);
}

#[tokio::test]
async fn create_call_sends_every_parameter_and_returns_a_queued_call() {
    let h = harness().await;
    let number_sid = h.emulator.add_number(&h.account.sid, NUMBER);
    let mut create = outbound_call();
    create.status_callback = Some("https://engine.example/twilio/status".into());
    create.status_callback_events = vec![
        CallStatusEvent::Initiated,
        CallStatusEvent::Ringing,
        CallStatusEvent::Answered,
        CallStatusEvent::Completed,
    ];
    create.timeout = Some(Duration::from_secs(30));
    create.machine_detection = Some(MachineDetection::DetectMessageEnd);
    create.async_amd = Some(true);
    create.async_amd_status_callback = Some("https://engine.example/twilio/amd".into());
    create.record = Some(true);
    create.recording_channels = Some("dual".into());

    let call = h.client.create_call(&h.credentials, &create).await.unwrap();

    assert!(call.sid.starts_with("CA") && call.sid.len() == 34);
    assert_eq!(call.status, CallStatus::Queued);
    assert_eq!(call.to.as_deref(), Some("+15557654321"));
    assert_eq!(call.from.as_deref(), Some(NUMBER));
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));
    assert_eq!(call.phone_number_sid.as_deref(), Some(number_sid.as_str()));
    let stored = h.emulator.call(&call.sid).unwrap();
    assert_eq!(
        stored.create_param_values("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(stored.create_param_values("Timeout"), ["30"]);
    assert_eq!(stored.create_param_values("MachineDetection"), ["DetectMessageEnd"]);
    assert_eq!(stored.create_param_values("AsyncAmd"), ["true"]);
    assert_eq!(stored.create_param_values("Record"), ["true"]);
    assert_eq!(stored.url.as_deref(), Some("https://engine.example/twilio/voice"));
}

#[tokio::test]
async fn create_call_with_inline_twiml_records_it() {
    let h = harness().await;
    let create = CreateCall::new(
        "+15557654321",
        NUMBER,
        CallTarget::Twiml("<Response><Hangup/></Response>".into()),
    );

    let call = h.client.create_call(&h.credentials, &create).await.unwrap();

    assert_eq!(
        h.emulator.call(&call.sid).unwrap().twiml.as_deref(),
        Some("<Response><Hangup/></Response>")
    );
}

#[tokio::test]
async fn hanging_up_completes_the_call_and_a_second_hang_up_gets_21220() {
    let h = harness().await;
    let call = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap();
    h.emulator.set_call_status(&call.sid, "in-progress");

    let ended =
        h.client.update_call(&h.credentials, &call.sid, &UpdateCall::hang_up()).await.unwrap();
    let again = h.client.update_call(&h.credentials, &call.sid, &UpdateCall::hang_up()).await;

    assert_eq!(ended.status, CallStatus::Completed);
    assert!(ended.end_time.is_some());
    assert_eq!(h.emulator.call(&call.sid).unwrap().status, "completed");
    match again {
        Err(TwilioError::Upstream { status: 400, code: Some(21220), .. }) => {}
        other => panic!("expected 21220, got {other:?}"),
    }
}

#[tokio::test]
async fn redirecting_a_live_call_records_the_new_twiml() {
    let h = harness().await;
    let call = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap();
    h.emulator.set_call_status(&call.sid, "in-progress");
    let twiml = "<Response><Dial><Number>+15550001111</Number></Dial></Response>";

    let updated =
        h.client.update_call(&h.credentials, &call.sid, &UpdateCall::twiml(twiml)).await.unwrap();

    assert_eq!(updated.status, CallStatus::InProgress);
    let stored = h.emulator.call(&call.sid).unwrap();
    assert_eq!(stored.twiml.as_deref(), Some(twiml));
    assert_eq!(stored.updates.len(), 1);
}

#[tokio::test]
async fn canceling_an_answered_call_leaves_it_in_progress() {
    let h = harness().await;
    let call = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap();
    h.emulator.set_call_status(&call.sid, "in-progress");

    let updated =
        h.client.update_call(&h.credentials, &call.sid, &UpdateCall::cancel()).await.unwrap();

    assert_eq!(updated.status, CallStatus::InProgress);
}

#[tokio::test]
async fn fetch_call_reflects_status_changes() {
    let h = harness().await;
    let call = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap();
    h.emulator.set_call_status(&call.sid, "no-answer");

    let fetched = h.client.fetch_call(&h.credentials, &call.sid).await.unwrap();

    assert_eq!(fetched.status, CallStatus::NoAnswer);
    assert!(fetched.status.is_final());
}

#[tokio::test]
async fn create_message_returns_a_queued_message_that_can_be_fetched() {
    let h = harness().await;
    let mut create = CreateMessage::new("+15557654321", NUMBER, "Your table is booked.");
    create.status_callback = Some("https://engine.example/twilio/sms-status".into());

    let message = h.client.create_message(&h.credentials, &create).await.unwrap();
    let fetched = h.client.fetch_message(&h.credentials, &message.sid).await.unwrap();

    assert!(message.sid.starts_with("SM") && message.sid.len() == 34);
    assert_eq!(message.status, MessageStatus::Queued);
    assert_eq!(fetched.body.as_deref(), Some("Your table is booked."));
    assert_eq!(fetched.from.as_deref(), Some(NUMBER));
    let stored = h.emulator.message(&message.sid).unwrap();
    assert_eq!(stored.body, "Your table is booked.");
}

#[tokio::test]
async fn message_without_body_maps_to_upstream_error_21602() {
    let h = harness().await;
    let mut create = CreateMessage::new("+15557654321", NUMBER, "");
    create.body = None;

    let error = h.client.create_message(&h.credentials, &create).await.unwrap_err();

    assert!(
        matches!(error, TwilioError::Upstream { status: 400, code: Some(21602), .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn bad_credentials_map_to_authentication_error_with_20003_without_retrying() {
    let h = harness().await;
    let wrong = TwilioCredentials::new(&h.account.sid, "0".repeat(32));

    let error = h
        .client
        .list_incoming_phone_numbers(&wrong, &IncomingPhoneNumberFilter::default())
        .await
        .unwrap_err();

    match &error {
        TwilioError::Authentication { status, code, message } => {
            assert_eq!(*status, 401);
            assert_eq!(*code, Some(20003));
            assert_eq!(message, "Authenticate");
        }
        other => panic!("expected authentication error, got {other:?}"),
    }
    assert!(!error.is_retryable());
    assert_eq!(h.emulator.requests().len(), 1);
    assert!(!h.emulator.requests()[0].authenticated);
}

#[tokio::test]
async fn credentials_of_one_account_cannot_reach_another_accounts_numbers() {
    let h = harness().await;
    let other = h.emulator.add_account();
    let other_number = h.emulator.add_number(&other.sid, NUMBER);
    let mixed = TwilioCredentials::new(&other.sid, &h.account.auth_token);

    let error = h.client.fetch_incoming_phone_number(&mixed, &other_number).await.unwrap_err();

    assert_eq!(error.twilio_code(), Some(20003));
}

#[tokio::test]
async fn unknown_number_and_call_map_to_not_found_with_20404() {
    let h = harness().await;
    let unknown_number = format!("PN{}", "0".repeat(32));
    let unknown_call = format!("CA{}", "0".repeat(32));

    let number_error =
        h.client.fetch_incoming_phone_number(&h.credentials, &unknown_number).await.unwrap_err();
    let call_error = h
        .client
        .update_call(&h.credentials, &unknown_call, &UpdateCall::hang_up())
        .await
        .unwrap_err();

    assert!(
        matches!(number_error, TwilioError::NotFound { code: Some(20404), .. }),
        "{number_error:?}"
    );
    assert!(
        matches!(call_error, TwilioError::NotFound { code: Some(20404), .. }),
        "{call_error:?}"
    );
    assert_eq!(call_error.http_status(), Some(404));
}

#[tokio::test]
async fn injected_429s_are_retried_until_success() {
    let h = harness().await;
    h.emulator.fail_times("/Calls.json", 2, 429, 20429);

    let call = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap();

    assert_eq!(call.status, CallStatus::Queued);
    let statuses: Vec<u16> = h.emulator.requests().iter().map(|request| request.status).collect();
    assert_eq!(statuses, [429, 429, 201]);
    assert_eq!(h.emulator.calls().len(), 1, "a rate-limited POST creates nothing");
}

#[tokio::test]
async fn code_20429_is_retried_even_on_another_status() {
    let h = harness().await;
    h.emulator.fail_next("/Messages.json", 400, 20429);

    let message = h
        .client
        .create_message(&h.credentials, &CreateMessage::new("+15557654321", NUMBER, "hi"))
        .await;

    assert!(message.is_ok(), "{message:?}");
    assert_eq!(h.emulator.requests().len(), 2);
}

#[tokio::test]
async fn persistent_429s_give_rate_limited_after_the_retries() {
    let h = harness_with(|config| config.max_retries = 2).await;
    h.emulator.fail_always("", 429, 20429);

    let error =
        h.client.fetch_call(&h.credentials, &format!("CA{}", "1".repeat(32))).await.unwrap_err();

    assert!(
        matches!(error, TwilioError::RateLimited { code: Some(20429), attempts: 3, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(h.emulator.requests().len(), 3);
}

#[tokio::test]
async fn injected_500_maps_to_upstream_error_with_code_and_is_not_retried() {
    let h = harness().await;
    h.emulator.fail_next("/Calls.json", 500, 20500);

    let error = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap_err();

    match &error {
        TwilioError::Upstream { status, code, more_info, .. } => {
            assert_eq!(*status, 500);
            assert_eq!(*code, Some(20500));
            assert_eq!(more_info.as_deref(), Some("https://www.twilio.com/docs/errors/20500"));
        }
        other => panic!("expected upstream error, got {other:?}"),
    }
    assert!(error.is_retryable());
    assert_eq!(h.emulator.requests().len(), 1);
}

#[tokio::test]
async fn delay_beyond_the_request_timeout_maps_to_timeout() {
    let h = harness_with(|config| config.request_timeout = Duration::from_millis(200)).await;
    h.emulator.delay_next("/Calls.json", Duration::from_secs(3));

    let error = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap_err();

    assert!(matches!(error, TwilioError::Timeout), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn refused_connection_maps_to_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = TwilioClient::new(TwilioClientConfig {
        base_url: format!("http://127.0.0.1:{closed_port}"),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..TwilioClientConfig::default()
    })
    .unwrap();
    let credentials = TwilioCredentials::new(format!("AC{}", "a".repeat(32)), "token");

    let error =
        client.fetch_call(&credentials, &format!("CA{}", "b".repeat(32))).await.unwrap_err();

    assert!(matches!(error, TwilioError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn sids_that_would_change_the_path_are_refused_before_sending() {
    let h = harness().await;

    let error = h.client.fetch_call(&h.credentials, "../IncomingPhoneNumbers").await.unwrap_err();

    assert!(matches!(error, TwilioError::InvalidRequest(_)), "{error:?}");
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn a_dual_channel_recording_of_a_live_call_is_downloaded_then_deleted() {
    let h = harness().await;
    let call_sid = h.emulator.add_live_call(&h.account.sid, "+15557654321", NUMBER);

    let create = CreateRecording::dual_channel("https://engine.example/twilio/recording-status");
    let recording =
        h.client.create_call_recording(&h.credentials, &call_sid, &create).await.unwrap();

    assert_eq!(recording.status, "in-progress");
    assert_eq!(recording.channels, Some(2));
    assert_eq!(recording.call_sid.as_deref(), Some(call_sid.as_str()));
    assert_eq!(recording.source.as_deref(), Some("StartCallRecordingAPI"));
    let sent = h.emulator.recording(&recording.sid).unwrap();
    assert_eq!(
        sent.create_params,
        [
            ("RecordingChannels", "dual"),
            ("RecordingTrack", "both"),
            ("RecordingStatusCallback", "https://engine.example/twilio/recording-status"),
            ("RecordingStatusCallbackEvent", "completed"),
            ("RecordingStatusCallbackEvent", "absent"),
            ("RecordingStatusCallbackMethod", "POST"),
            ("Trim", "do-not-trim"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
    // Not completed yet: no media.
    let early = h.client.download_recording_wav(&h.credentials, &recording.sid).await;
    assert!(matches!(early, Err(TwilioError::NotFound { code: Some(20404), .. })), "{early:?}");

    // The callback's URL does not resolve; the recording completes all the same.
    h.emulator.end_call(&call_sid, &[0x10; 8000], &[0x90; 8000]).await;
    let wav = h.client.download_recording_wav(&h.credentials, &recording.sid).await.unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(wav.len(), 44 + 8000 * 4);

    h.client.delete_recording(&h.credentials, &recording.sid).await.unwrap();
    assert!(h.emulator.recording(&recording.sid).is_none());
    let again = h.client.delete_recording(&h.credentials, &recording.sid).await;
    assert!(matches!(again, Err(TwilioError::NotFound { code: Some(20404), .. })), "{again:?}");
}

#[tokio::test]
async fn recording_a_call_that_is_not_in_progress_maps_to_upstream_21220() {
    let h = harness().await;
    h.emulator.add_number(&h.account.sid, NUMBER);
    let queued = h.client.create_call(&h.credentials, &outbound_call()).await.unwrap();

    let create = CreateRecording::dual_channel("https://engine.example/twilio/recording-status");
    let refused = h.client.create_call_recording(&h.credentials, &queued.sid, &create).await;
    let unknown = h
        .client
        .create_call_recording(&h.credentials, &format!("CA{}", "0".repeat(32)), &create)
        .await;

    assert!(
        matches!(refused, Err(TwilioError::Upstream { status: 400, code: Some(21220), .. })),
        "{refused:?}"
    );
    assert!(matches!(unknown, Err(TwilioError::NotFound { code: Some(20404), .. })), "{unknown:?}");
}
