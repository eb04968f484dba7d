//! Carrier recordings end to end (docs/recordings.md#carrier-recordings): the caller emulator,
//! attached to the Twilio REST emulator, plays one Twilio; the engine starts the carrier's
//! recording when the call connects, the recording status callback arrives when the call ends,
//! and the recording is stored before `call.completed` goes out.

use std::time::{Duration, Instant};

use nixflex_store::{JobFilter, JobState, Page};
use nixflex_testkit::twilio::RecordingState;
use nixflex_testkit::twilio::caller::{
    CallEventKind, CallRecording, CallerEmulator, CallerScript, WebhookPurpose,
};
use nixflex_testkit::webhook::WebhookReceiver;
use reqwest::Method;
use serde_json::{Value, json};

use crate::engine::CallLab;
use crate::helpers::{Backend, both, enc, twilio_number};

const NUMBER: &str = "+14155552671";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A lab whose agent posts its webhooks to `receiver`, with a short wait for recordings.
async fn lab(
    backend: Backend,
    receiver: &WebhookReceiver,
    tweak: impl FnOnce(&mut nixflex::config::Config),
) -> CallLab {
    CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello, Bella's Bakery!", "webhook_url": receiver.url("/crm")}),
        |c| {
            c.recording_wait_secs = 20;
            tweak(c);
        },
    )
    .await
}

/// Places a call that hears the greeting and hangs up, through an emulator attached to the
/// lab's Twilio.
async fn short_call(lab: &CallLab) -> CallRecording {
    call_talking_for(lab, secs(0.6)).await
}

/// Like [`short_call`], the caller talking for `talk` after the greeting started.
async fn call_talking_for(lab: &CallLab, talk: Duration) -> CallRecording {
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let script = CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .say("Just checking, bye.", talk)
        .hang_up();
    let recording = caller.place_inbound_call(lab.place(), script).await;
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    recording
}

/// The one recording the carrier made of `call_sid`.
fn carrier_recording(lab: &CallLab, call_sid: &str) -> RecordingState {
    let made: Vec<RecordingState> =
        lab.twilio.recordings().into_iter().filter(|r| r.call_sid == call_sid).collect();
    assert_eq!(made.len(), 1, "{made:?}");
    made.into_iter().next().unwrap()
}

/// The HTTP statuses our server answered the recording status callbacks with.
fn recording_callbacks(recording: &CallRecording) -> Vec<Option<u16>> {
    recording
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            CallEventKind::Webhook { purpose: WebhookPurpose::RecordingStatus, status, .. } => {
                Some(*status)
            }
            _ => None,
        })
        .collect()
}

/// The `call.completed` webhook, once delivered.
async fn completed_webhook(receiver: &WebhookReceiver) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(hook) =
            receiver.received().iter().map(|r| r.json()).find(|p| p["event"] == "call.completed")
        {
            return hook;
        }
        assert!(Instant::now() < deadline, "no call.completed: {:?}", receiver.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn jobs_of(lab: &CallLab, kind: &str) -> Vec<nixflex_store::Job> {
    let store = nixflex_store::open(&lab.app.config.effective_database_url(), 2).await.unwrap();
    let filter = JobFilter { state: None, kind: Some(kind.to_owned()) };
    store.list_jobs(&filter, Page { limit: 50, offset: 0 }).await.unwrap()
}

async fn a_provider_recorded_call_is_stored_before_call_completed_goes_out(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |_| {}).await;

    let recording = short_call(&lab).await;

    // The engine started a dual-channel recording with our callback, and Twilio reported it.
    let started: Vec<_> = lab
        .twilio
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/Calls/{}/Recordings.json", recording.call_sid)))
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].status, 201);
    assert_eq!(started[0].form_param("RecordingChannels"), Some("dual"));
    assert_eq!(
        started[0].form_param("RecordingStatusCallback").map(str::to_owned),
        Some(format!("{}/twilio/recording-status?number={}", lab.app.base, enc(NUMBER)))
    );
    assert_eq!(recording_callbacks(&recording), [Some(200)]);
    let made = carrier_recording(&lab, &recording.call_sid);
    assert_eq!((made.status.as_str(), made.channels), ("completed", 2));

    // call.completed carries the stored recording: it went out after the recording was saved.
    let hook = completed_webhook(&receiver).await;
    let call_id = hook["call_id"].as_str().unwrap().to_owned();
    assert!(hook["recording_url"].is_string(), "{hook}");
    let call: Value =
        lab.app.get(&lab.key, &format!("/v1/calls/{call_id}")).await.json().await.unwrap();
    assert!(call["recording_url"].is_string(), "{call}");
    assert_eq!(call["recording_duration_s"].as_f64(), made.duration.map(|d| d as f64));
    let path = lab
        .app
        .config
        .recordings_dir()
        .join(format!("recordings/{}/{call_id}.wav", lab.key.account_id));
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(stored, made.wav.unwrap().to_vec(), "the carrier's WAV, byte for byte");
    // Dual channel, time-aligned: the agent's greeting (second channel) starts before the caller
    // speaks (first channel), who waited for it.
    let header = nixflex_pipeline::audio::wav::parse_header(&stored).unwrap();
    assert_eq!((header.format.channels, header.format.sample_rate), (2, 8000));
    let frames: Vec<(i16, i16)> = stored[header.data_offset..]
        .chunks_exact(4)
        .map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]])))
        .collect();
    let first_sound = |channel: fn(&(i16, i16)) -> i16| {
        frames.iter().position(|f| channel(f).unsigned_abs() > 1000).expect("a channel with sound")
    };
    let (caller_starts, agent_starts) = (first_sound(|f| f.0), first_sound(|f| f.1));
    assert!(agent_starts < caller_starts, "agent at {agent_starts}, caller at {caller_starts}");
    // Waiting did not spend the follow-up's attempts.
    let ended = lab.follow_up_ran(&call_id).await;
    assert_eq!(ended.attempts, 1);
    // The carrier's copy is kept by default.
    assert!(lab.twilio.recording(&made.sid).is_some());
}

/// The follow-up waiting for a late recording runs as soon as the recording is stored, not at
/// its next look: here it would look again only after ten minutes.
async fn a_stored_recording_makes_the_waiting_follow_up_run_at_once(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |c| {
        c.recording_recheck_ms = 600_000;
        c.recording_wait_secs = 600;
    })
    .await;
    // The first download fails, so the recording is stored only on the fetch's second attempt,
    // after the call's follow-up has found it missing and started to wait.
    lab.twilio.fail_times(".wav", 1, 500, None);

    let recording = short_call(&lab).await;
    let hook = completed_webhook(&receiver).await;

    assert!(hook["recording_url"].is_string(), "{hook}");
    assert_eq!(carrier_recording(&lab, &recording.call_sid).status, "completed");
    let downloads: Vec<u16> = lab
        .twilio
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(".wav"))
        .map(|r| r.status)
        .collect();
    assert_eq!(downloads, [500, 200], "stored on the second attempt");
    let ended = lab.follow_up_ran(hook["call_id"].as_str().unwrap()).await;
    assert_eq!(ended.attempts, 1, "waiting spent no attempt");
}

async fn call_completed_waits_for_a_missing_recording_only_up_to_the_bound(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |c| c.recording_wait_secs = 2).await;
    // The carrier's media cannot be downloaded: the recording is never stored.
    lab.twilio.fail_always(".wav", 500, None);

    let recording = short_call(&lab).await;
    let hung_up = Instant::now();
    let hook = completed_webhook(&receiver).await;

    assert_eq!(recording_callbacks(&recording), [Some(200)]);
    assert!(hook["recording_url"].is_null(), "{hook}");
    assert!(hung_up.elapsed() >= Duration::from_millis(1500), "it waited for the recording");
    let ended = lab.follow_up_ran(hook["call_id"].as_str().unwrap()).await;
    assert_eq!(ended.attempts, 1, "waiting spent no attempt");
    assert!(!lab.twilio.requests().iter().any(|r| r.path.ends_with(".wav") && r.status == 200));
}

async fn an_absent_recording_lets_call_completed_go_out_at_once(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |c| c.recording_wait_secs = 60).await;
    lab.twilio.lose_recordings(true);

    let recording = short_call(&lab).await;
    let hung_up = Instant::now();
    let hook = completed_webhook(&receiver).await;

    assert_eq!(recording_callbacks(&recording), [Some(200)]);
    assert_eq!(carrier_recording(&lab, &recording.call_sid).status, "absent");
    assert!(hung_up.elapsed() < Duration::from_secs(15), "it did not wait out the bound");
    assert!(hook["recording_url"].is_null(), "{hook}");
    assert!(jobs_of(&lab, "recording.fetch").await.is_empty(), "nothing to fetch");
}

async fn a_failed_start_is_retried_and_a_refused_one_leaves_the_call_unrecorded(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |c| c.recording_wait_secs = 60).await;

    // Twilio is briefly unavailable: the third attempt, 1.5 s later, starts the recording.
    lab.twilio.fail_times("/Recordings.json", 2, 503, None);
    let first = call_talking_for(&lab, secs(3.0)).await;
    let hook = completed_webhook(&receiver).await;
    assert!(hook["recording_url"].is_string(), "{hook}");
    assert_eq!(carrier_recording(&lab, &first.call_sid).status, "completed");

    // Twilio refuses: no retry, the call goes on, and call.completed does not wait.
    lab.twilio.fail_always("/Recordings.json", 400, 21220);
    let second = short_call(&lab).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    let hook = loop {
        let completed: Vec<Value> = receiver
            .received()
            .iter()
            .map(|r| r.json())
            .filter(|p| p["event"] == "call.completed")
            .collect();
        if completed.len() == 2 {
            break completed[1].clone();
        }
        assert!(Instant::now() < deadline, "the second call.completed never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(hook["recording_url"].is_null(), "{hook}");
    assert_eq!(second.agent_utterances().len(), 1, "the caller heard the greeting");
    let attempts = |call_sid: &str| {
        lab.twilio
            .requests()
            .iter()
            .filter(|r| r.path.ends_with(&format!("/Calls/{call_sid}/Recordings.json")))
            .count()
    };
    assert_eq!((attempts(&first.call_sid), attempts(&second.call_sid)), (3, 1));
}

async fn a_repeated_recording_callback_stores_the_recording_once(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |_| {}).await;
    let recording = short_call(&lab).await;
    let made = carrier_recording(&lab, &recording.call_sid);
    completed_webhook(&receiver).await;

    // Twilio retries the same callback (e.g. our answer was lost).
    let url = format!("{}/twilio/recording-status?number={}", lab.app.base, enc(NUMBER));
    let params: Vec<(String, String)> = [
        ("AccountSid", lab.number.sid.as_str()),
        ("CallSid", recording.call_sid.as_str()),
        ("RecordingSid", made.sid.as_str()),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "1"),
    ]
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .to_vec();
    for _ in 0..2 {
        let answer = lab.twilio.send_webhook(&url, &lab.number.token, &params).await.unwrap();
        assert_eq!(answer.status(), 200);
    }

    let fetches = jobs_of(&lab, "recording.fetch").await;
    assert_eq!(fetches.len(), 1, "one job per call and recording: {fetches:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_of(&lab, "recording.fetch").await[0].state != JobState::Done {
        assert!(Instant::now() < deadline, "the fetch never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let downloads = lab
        .twilio
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/Recordings/{}.wav", made.sid)))
        .count();
    assert_eq!(downloads, 1, "downloaded and stored once");
}

async fn deleting_carrier_recordings_removes_the_carriers_copy_once_stored(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |c| c.delete_carrier_recordings = true).await;
    let recording = short_call(&lab).await;
    let made = carrier_recording(&lab, &recording.call_sid);

    let hook = completed_webhook(&receiver).await;

    assert!(hook["recording_url"].is_string(), "{hook}");
    // The fetch deletes the carrier's copy right after storing it, before call.completed.
    assert!(lab.twilio.recording(&made.sid).is_none(), "the carrier's copy is gone");
    let deletes: Vec<_> = lab
        .twilio
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "DELETE" && r.path.ends_with(&format!("/Recordings/{}.json", made.sid))
        })
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].status, 204);
}

async fn a_recording_callback_for_another_accounts_call_changes_nothing(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |_| {}).await;
    // Another tenant with its own number and Twilio account.
    let other_number = "+14155550199";
    let stranger = lab.app.signup().await;
    let agent = lab.app.create_agent(&stranger, json!({})).await;
    let other = twilio_number(&lab.twilio, other_number);
    let imported = lab
        .app
        .post(
            &stranger,
            "/v1/phone-numbers",
            other.import_body(agent["agent_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(imported.status(), 201);
    // The victim's call, recorded by the carrier as usual.
    let recording = short_call(&lab).await;
    let made = carrier_recording(&lab, &recording.call_sid);
    completed_webhook(&receiver).await;
    let before = jobs_of(&lab, "recording.fetch").await.len();

    // The stranger's number signs a callback naming the victim's call.
    let url = format!("{}/twilio/recording-status?number={}", lab.app.base, enc(other_number));
    let params: Vec<(String, String)> = [
        ("AccountSid", other.sid.as_str()),
        ("CallSid", recording.call_sid.as_str()),
        ("RecordingSid", "RE00000000000000000000000000000001"),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "1"),
    ]
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .to_vec();
    let answer = lab.twilio.send_webhook(&url, &other.token, &params).await.unwrap();
    assert_eq!(answer.status(), 200, "the same answer as for an unknown call");
    // The same callback for the victim's number, signed with the stranger's token: refused.
    let victims_url = format!("{}/twilio/recording-status?number={}", lab.app.base, enc(NUMBER));
    let forged = lab.twilio.send_webhook(&victims_url, &other.token, &params).await.unwrap();
    assert_eq!(forged.status(), 403);

    assert_eq!(jobs_of(&lab, "recording.fetch").await.len(), before, "nothing queued");
    let call_id = jobs_of(&lab, "recording.fetch").await[0].payload["call_id"].clone();
    let call: Value = lab
        .app
        .get(&lab.key, &format!("/v1/calls/{}", call_id.as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert!(call["recording_url"].is_string(), "the victim's recording is untouched");
    assert!(lab.twilio.recording(&made.sid).is_some());
}

async fn recording_off_on_the_number_starts_no_carrier_recording(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab = lab(backend, &receiver, |_| {}).await;
    let patched = lab
        .app
        .request(Method::PATCH, &format!("/v1/phone-numbers/{}", enc(NUMBER)), Some(&lab.key))
        .json(&json!({"record_call": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    let recording = short_call(&lab).await;
    let hook = completed_webhook(&receiver).await;

    let started =
        lab.twilio.requests().into_iter().filter(|r| r.path.contains("/Recordings")).count();
    assert_eq!(started, 0, "no REST recording was started");
    assert!(recording_callbacks(&recording).is_empty());
    assert!(hook["recording_url"].is_null(), "{hook}");
    assert!(lab.twilio.recordings().is_empty());
}

both!(
    a_provider_recorded_call_is_stored_before_call_completed_goes_out,
    a_stored_recording_makes_the_waiting_follow_up_run_at_once,
    call_completed_waits_for_a_missing_recording_only_up_to_the_bound,
    an_absent_recording_lets_call_completed_go_out_at_once,
    a_failed_start_is_retried_and_a_refused_one_leaves_the_call_unrecorded,
    a_repeated_recording_callback_stores_the_recording_once,
    deleting_carrier_recordings_removes_the_carriers_copy_once_stored,
    a_recording_callback_for_another_accounts_call_changes_nothing,
    recording_off_on_the_number_starts_no_carrier_recording,
);
