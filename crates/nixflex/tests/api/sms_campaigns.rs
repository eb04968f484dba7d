//! SMS campaigns (docs/sms.md#campaigns): create, list, get, launch, cancel; the sender job's
//! pacing, counts under mixed delivery outcomes, and exactly one text per recipient when a run
//! dies between its claim and Twilio's answer — over real HTTP, with the Twilio emulator, on both
//! databases.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nixflex_core::call::Direction;
use nixflex_core::sms::{SmsMessage, SmsSource, SmsStatus};
use nixflex_testkit::twilio::{MessageOutcome, TwilioEmulator};
use serde_json::{Value, json};

use crate::helpers::{Backend, Key, TestApp, TwilioNumber, both, expect_error, twilio_number};

const NUMBER: &str = "+14155552671";

struct Lab {
    app: TestApp,
    twilio: TwilioEmulator,
    key: Key,
    agent_id: String,
    number: TwilioNumber,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn phone(i: usize) -> String {
    format!("+4473861{i:05}")
}

impl Lab {
    /// A server whose public URL is its own loopback address (so the emulator's status callbacks
    /// and inbound texts reach it), sending campaigns at `rate` texts per second.
    async fn start(backend: Backend, rate: f64) -> Self {
        let twilio = TwilioEmulator::start().await.unwrap();
        let port = free_port();
        let twilio_base = twilio.base_url().to_owned();
        let app = TestApp::spawn_with(backend, |c| {
            c.listen = format!("127.0.0.1:{port}");
            c.public_url = Some(format!("http://127.0.0.1:{port}"));
            c.twilio_api_base = twilio_base;
            c.twilio_request_timeout_ms = 2000;
            c.jobs_backoff_base_ms = 20;
            c.jobs_backoff_cap_ms = 50;
            c.jobs_poll_ms = 20;
            c.sms_campaign_rate_per_second = rate;
            // The tests poll campaigns every 25 ms; the read limit is not what they test.
            c.rate_limit_reads_per_minute = 100_000;
        })
        .await;
        let key = app.signup().await;
        let agent = app.create_agent(&key, json!({"name": "Campaigner"})).await;
        let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
        let number = twilio_number(&twilio, NUMBER);
        let response = app.post(&key, "/v1/phone-numbers", number.import_body(&agent_id)).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        Self { app, twilio, key, agent_id, number }
    }

    fn body(&self, recipients: Value) -> Value {
        json!({
            "agent_id": self.agent_id,
            "from_number": NUMBER,
            "name": "Reminders",
            "message_template": "Hi {{name}}, your visit is on {{day}}.",
            "recipients": recipients,
            "schedule_type": "now",
        })
    }

    async fn create(&self, body: Value) -> Value {
        let response = self.app.post(&self.key, "/v1/sms/campaigns", body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    async fn get(&self, id: &str) -> Value {
        let response =
            self.app.get(&self.key, &format!("/v1/sms/campaigns/{id}?recipients_limit=1000")).await;
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// Polls the campaign until `done(campaign)` holds.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let campaign = self.get(id).await;
            if done(&campaign) {
                return campaign;
            }
            assert!(Instant::now() < deadline, "campaign never {what}: {campaign}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Texts the emulator was asked to send, by recipient.
    fn texts_by_recipient(&self) -> HashMap<String, Vec<String>> {
        let mut by: HashMap<String, Vec<String>> = HashMap::new();
        for m in self.twilio.messages() {
            if m.direction == "outbound-api" {
                by.entry(m.to.clone()).or_default().push(m.body.clone());
            }
        }
        by
    }

    async fn store(&self) -> std::sync::Arc<dyn nixflex_store::Store> {
        nixflex_store::open(&self.app.config.effective_database_url(), 2).await.unwrap()
    }
}

fn recipients(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"phone": phone(i), "variables": {"name": format!("P{i}"), "day": "Monday"}}))
            .collect(),
    )
}

async fn sms_campaign_sends_each_recipient_its_rendered_text(backend: Backend) {
    let lab = Lab::start(backend, 50.0).await;
    let mut list = recipients(3);
    // A missing variable renders empty; a duplicate phone is texted once and reported.
    list.as_array_mut().unwrap().push(json!({"phone_number": phone(3)}));
    list.as_array_mut().unwrap().push(json!({"phone": phone(0)}));
    let created = lab.create(lab.body(list)).await;
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("smsc_") && id.len() == 21, "{created}");
    assert_eq!(created["status"], "running");
    assert_eq!(created["total_count"], 4);
    assert_eq!(created["recipients_count"], 4);
    assert_eq!(created["valid_count"], 4);
    assert_eq!(
        created["invalid"],
        json!([{"phone": phone(0), "reason": "duplicate", "row_index": 4}])
    );
    assert_eq!(created["source"], "api");
    let done = lab.wait_for(&id, "done", |c| c["status"] == "done").await;
    assert_eq!(done["pending_count"], 4, "texts stay queued at Twilio until reported: {done}");
    let texts = lab.texts_by_recipient();
    assert_eq!(texts.len(), 4);
    assert_eq!(texts[&phone(1)], vec!["Hi P1, your visit is on Monday.".to_owned()]);
    assert_eq!(texts[&phone(3)], vec!["Hi , your visit is on .".to_owned()]);
    let r0 = &done["recipients"][0];
    assert_eq!(r0["phone"], phone(0));
    assert_eq!(r0["rendered_message"], "Hi P0, your visit is on Monday.");
    assert_eq!(r0["status"], "queued");
    assert!(r0["twilio_sid"].as_str().unwrap().starts_with("SM"));
    assert!(r0["sent_at"].is_string());
    // The text is in the message log as a campaign text.
    let message =
        lab.app.get(&lab.key, &format!("/v1/sms/{}", r0["message_id"].as_str().unwrap())).await;
    let message: Value = message.json().await.unwrap();
    assert_eq!(message["source"], "campaign");
    assert_eq!(message["metadata"]["campaign_id"], id.as_str());
    // Paging of recipients.
    let page: Value = lab
        .app
        .get(&lab.key, &format!("/v1/sms/campaigns/{id}?recipients_limit=2&recipients_offset=1"))
        .await
        .json()
        .await
        .unwrap();
    let phones: Vec<&str> = page["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phone"].as_str().unwrap())
        .collect();
    assert_eq!(phones, [phone(1), phone(2)]);
    // The list, with the status filter.
    let listed: Value =
        lab.app.get(&lab.key, "/v1/sms/campaigns?status=done").await.json().await.unwrap();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["campaigns"][0]["campaign_id"], id.as_str());
    assert_eq!(listed["campaigns"][0]["total_count"], 4);
    let none: Value =
        lab.app.get(&lab.key, "/v1/sms/campaigns?status=running").await.json().await.unwrap();
    assert_eq!(none["count"], 0);
    // A finished campaign can be neither launched nor cancelled.
    let launched =
        lab.app.post(&lab.key, &format!("/v1/sms/campaigns/{id}/launch"), json!({})).await;
    expect_error(launched, 400, "campaign_already_done").await;
    let cancelled = lab.app.delete(&lab.key, &format!("/v1/sms/campaigns/{id}")).await;
    expect_error(cancelled, 400, "campaign_already_done").await;
}

async fn sms_campaign_create_rejects_bad_input(backend: Backend) {
    let lab = Lab::start(backend, 50.0).await;
    let post = |body: Value| lab.app.post(&lab.key, "/v1/sms/campaigns", body);
    let mut bad = lab.body(json!([{"phone": phone(0)}, {"phone": "12345"}]));
    let error = expect_error(post(bad.clone()).await, 400, "invalid_phone_format").await;
    assert_eq!(
        error["details"]["invalid"],
        json!([{"phone": "12345", "reason": "invalid_phone_format", "row_index": 1}])
    );
    bad["skip_invalid"] = json!(true);
    let created = lab.create(bad).await;
    assert_eq!(
        (created["valid_count"].as_u64(), created["invalid_count"].as_u64()),
        (Some(1), Some(1))
    );
    let too_many = recipients(10_001);
    expect_error(post(lab.body(too_many)).await, 400, "too_many_recipients").await;
    let mut no_name = lab.body(recipients(1));
    no_name.as_object_mut().unwrap().remove("name");
    expect_error(post(no_name).await, 400, "missing_field").await;
    let mut not_ours = lab.body(recipients(1));
    not_ours["from_number"] = json!("+14155550000");
    expect_error(post(not_ours).await, 403, "from_number_not_owned").await;
    let mut no_date = lab.body(recipients(1));
    no_date["schedule_type"] = json!("schedule");
    expect_error(post(no_date.clone()).await, 400, "invalid_schedule").await;
    no_date["scheduled_at"] = json!("next tuesday");
    expect_error(post(no_date).await, 400, "invalid_schedule").await;
    let mut long = lab.body(recipients(1));
    long["message_template"] = json!("x".repeat(1601));
    expect_error(post(long).await, 400, "message_too_long").await;
    let mut unknown = lab.body(recipients(1));
    unknown["colour"] = json!("red");
    expect_error(post(unknown).await, 400, "unknown_field").await;
    let missing = lab.app.get(&lab.key, "/v1/sms/campaigns/smsc_0000000000000000").await;
    expect_error(missing, 404, "campaign_not_found").await;
    let other = lab.app.signup().await;
    let id = created["campaign_id"].as_str().unwrap();
    let foreign = lab.app.get(&other, &format!("/v1/sms/campaigns/{id}")).await;
    expect_error(foreign, 404, "campaign_not_found").await;
}

async fn sms_campaign_scheduled_waits_then_launch_sends_and_cancel_stops(backend: Backend) {
    let lab = Lab::start(backend, 50.0).await;
    let mut body = lab.body(recipients(3));
    body["schedule_type"] = json!("schedule");
    body["scheduled_at"] = json!("2099-01-01T09:00:00Z");
    let scheduled = lab.create(body.clone()).await;
    let id = scheduled["campaign_id"].as_str().unwrap().to_owned();
    assert_eq!(scheduled["status"], "scheduled");
    assert_eq!(scheduled["scheduled_at"], "2099-01-01T09:00:00Z");
    // A second scheduled campaign is cancelled before anything is sent.
    let other = lab.create(body).await;
    let other_id = other["campaign_id"].as_str().unwrap().to_owned();
    let cancelled = lab.app.delete(&lab.key, &format!("/v1/sms/campaigns/{other_id}")).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(
        cancelled,
        json!({"campaign_id": other_id, "deleted": true, "cancelled_count": 3, "status": "done"})
    );
    let after = lab.get(&other_id).await;
    assert_eq!(
        (after["status"].as_str(), after["cancelled_count"].as_i64()),
        (Some("done"), Some(3))
    );
    assert!(after["cancelled_at"].is_string());
    assert_eq!(after["recipients"][0]["status"], "cancelled");
    assert!(lab.texts_by_recipient().is_empty(), "nothing is sent before the schedule");
    let launched =
        lab.app.post(&lab.key, &format!("/v1/sms/campaigns/{id}/launch"), json!({})).await;
    assert_eq!(launched.status(), 200);
    let launched: Value = launched.json().await.unwrap();
    assert_eq!(launched["status"], "running");
    assert_eq!(launched["total_count"], 3);
    lab.wait_for(&id, "done", |c| c["status"] == "done").await;
    assert_eq!(lab.texts_by_recipient().len(), 3);
    // Launching a running or finished campaign: already done.
    let again = lab.app.post(&lab.key, &format!("/v1/sms/campaigns/{id}/launch"), json!({})).await;
    expect_error(again, 400, "campaign_already_done").await;
}

async fn sms_campaign_cancel_mid_run_stops_further_texts(backend: Backend) {
    // 5 texts a second: cancelling right after the first text leaves most unsent.
    let lab = Lab::start(backend, 5.0).await;
    let created = lab.create(lab.body(recipients(20))).await;
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.twilio.messages().is_empty() {
        assert!(Instant::now() < deadline, "the first text was never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancelled = lab.app.delete(&lab.key, &format!("/v1/sms/campaigns/{id}")).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    let n = cancelled["cancelled_count"].as_i64().unwrap();
    assert!(n > 0 && n < 20, "{cancelled}");
    // Texts already claimed may still go out; after they settle, sent + cancelled = 20.
    let settled = lab
        .wait_for(&id, "settled", |c| {
            c["recipients"].as_array().unwrap().iter().all(|r| r["status"] != "pending")
        })
        .await;
    let sent = lab.twilio.messages().len();
    assert_eq!(i64::try_from(sent).unwrap() + n, 20, "{settled}");
    assert_eq!(settled["cancelled_count"], n);
    assert_eq!(settled["status"], "done");
}

async fn sms_campaign_is_paced_per_sending_number(backend: Backend) {
    let lab = Lab::start(backend, 10.0).await;
    let started = Instant::now();
    let first = lab.create(lab.body(recipients(6))).await;
    // A second campaign from the same number shares its pace.
    let mut body = lab.body(Value::Array((6..12).map(|i| json!({"phone": phone(i)})).collect()));
    body["name"] = json!("More");
    let second = lab.create(body).await;
    for c in [&first, &second] {
        lab.wait_for(c["campaign_id"].as_str().unwrap(), "done", |c| c["status"] == "done").await;
    }
    let elapsed = started.elapsed();
    let mut times: Vec<_> = lab.twilio.messages().iter().map(|m| m.date_created).collect();
    times.sort();
    assert_eq!(times.len(), 12);
    // 12 texts at 10 a second: 1.1 s from the first slot to the last; the first text may leave
    // its slot a little late (the send itself takes time), so allow 0.2 s. Unpaced, the 12 texts
    // take a few tens of milliseconds.
    let span = (times[11] - times[0]).to_std().unwrap();
    assert!(span >= Duration::from_millis(900), "12 texts in {span:?}");
    assert!(elapsed >= Duration::from_millis(900));
}

async fn sms_campaign_counts_follow_mixed_delivery_outcomes(backend: Backend) {
    let lab = Lab::start(backend, 50.0).await;
    // The last recipient opted out (texted STOP) earlier.
    let (_, status) = lab.twilio.send_inbound_sms(&phone(6), NUMBER, "STOP", None).await.unwrap();
    assert_eq!(status, 200);
    lab.twilio.script_message_outcomes(&[
        MessageOutcome::Delivered,
        MessageOutcome::Delivered,
        MessageOutcome::Undelivered(30007),
        MessageOutcome::Failed(30034),
    ]);
    let created = lab.create(lab.body(recipients(7))).await;
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let done = lab
        .wait_for(&id, "settled", |c| {
            c["status"] == "done" && c["delivered_count"] == 2 && c["failed_count"] == 2
        })
        .await;
    assert_eq!(done["opted_out_count"], 1, "{done}");
    assert_eq!(done["pending_count"], 2, "{done}");
    let opted =
        done["recipients"].as_array().unwrap().iter().find(|r| r["phone"] == phone(6)).unwrap();
    assert_eq!(opted["status"], "opted_out");
    assert!(opted["twilio_sid"].is_null());
    // One of the two texts left queued is reported `sent` and never confirmed: a failure.
    let queued = done["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "queued")
        .unwrap()["twilio_sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(lab.twilio.send_message_status(&queued, "sent", None).await.unwrap(), 200);
    let done = lab.wait_for(&id, "counted", |c| c["failed_count"] == 3).await;
    assert_eq!(
        (
            done["total_count"].as_i64(),
            done["delivered_count"].as_i64(),
            done["failed_count"].as_i64(),
            done["pending_count"].as_i64(),
            done["opted_out_count"].as_i64(),
        ),
        (Some(7), Some(2), Some(3), Some(1), Some(1)),
        "{done}"
    );
    let undelivered = done["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "undelivered")
        .unwrap();
    assert_eq!(undelivered["error_code"], 30007);
    assert_eq!(lab.texts_by_recipient().len(), 6, "the opted-out recipient got nothing");
}

async fn sms_campaign_lost_twilio_answer_is_reconciled_not_resent(backend: Backend) {
    let lab = Lab::start(backend, 50.0).await;
    // Twilio creates the first text but its answer never arrives: the run cannot tell whether
    // it was sent, so it leaves the recipient claimed and fails; the next run asks Twilio.
    lab.twilio.lose_next_answer("/Messages.json");
    let created = lab.create(lab.body(recipients(5))).await;
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let done = lab.wait_for(&id, "done", |c| c["status"] == "done").await;
    let texts = lab.texts_by_recipient();
    assert_eq!(texts.len(), 5, "{texts:?}");
    for (to, bodies) in &texts {
        assert_eq!(bodies.len(), 1, "{to} was texted {} times", bodies.len());
    }
    // Every recipient has its Twilio SID, the reconciled one included.
    let sids: Vec<&str> = done["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["twilio_sid"].as_str().unwrap())
        .collect();
    let emulated: Vec<String> = lab.twilio.messages().into_iter().map(|m| m.sid).collect();
    for sid in sids {
        assert!(emulated.iter().any(|s| s == sid));
    }
    let listed = lab
        .twilio
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/Messages.json"))
        .count();
    assert!(listed >= 1, "the reconciliation asked Twilio");
}

async fn sms_campaign_crash_between_claim_and_carrier_request_texts_once(backend: Backend) {
    let lab = Lab::start(backend, 50.0).await;
    let mut body = lab.body(recipients(3));
    body["schedule_type"] = json!("schedule");
    body["scheduled_at"] = json!("2099-01-01T09:00:00Z");
    let created = lab.create(body).await;
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let store = lab.store().await;
    let campaign = store.find_sms_campaign(&id).await.unwrap().unwrap();
    // The state an earlier run left when it died:
    // - recipient 0: its text logged and accepted by Twilio, the SID never noted;
    // - recipient 1: its text logged, the process died before asking Twilio.
    let log = |i: usize| SmsMessage {
        message_id: nixflex_core::ids::new_message_id(),
        account_id: campaign.account_id.clone(),
        agent_id: Some(lab.agent_id.as_str().into()),
        direction: Direction::Outbound,
        business_number: NUMBER.to_owned(),
        customer_number: phone(i),
        body: format!("Hi P{i}, your visit is on Monday."),
        status: SmsStatus::Pending,
        twilio_sid: None,
        segments: 1,
        error_code: None,
        error_message: None,
        reply_context: None,
        source: SmsSource::Campaign,
        send_key: Some(nixflex_store::campaign_send_key(&id, &phone(i))),
        metadata: None,
        created_at: nixflex_store::now(),
        updated_at: nixflex_store::now(),
    };
    for i in [0, 1] {
        assert!(store.insert_sms(&log(i)).await.unwrap());
    }
    let client = nixflex_providers::twilio::TwilioClient::new(
        nixflex_providers::twilio::TwilioClientConfig {
            base_url: lab.twilio.base_url().to_owned(),
            ..nixflex_providers::twilio::TwilioClientConfig::default()
        },
    )
    .unwrap();
    let credentials = nixflex_providers::twilio::TwilioCredentials::new(
        lab.number.sid.clone(),
        lab.number.token.clone(),
    );
    let accepted = client
        .create_message(
            &credentials,
            &nixflex_providers::twilio::CreateMessage::new(
                phone(0),
                NUMBER,
                "Hi P0, your visit is on Monday.",
            ),
        )
        .await
        .unwrap();
    let launched =
        lab.app.post(&lab.key, &format!("/v1/sms/campaigns/{id}/launch"), json!({})).await;
    assert_eq!(launched.status(), 200);
    let done = lab.wait_for(&id, "done", |c| c["status"] == "done").await;
    let texts = lab.texts_by_recipient();
    for i in 0..3 {
        assert_eq!(texts.get(&phone(i)).map(Vec::len), Some(1), "recipient {i}: {texts:?}");
    }
    assert_eq!(done["recipients"][0]["twilio_sid"], accepted.sid.as_str(), "{done}");
    assert!(done["recipients"][1]["twilio_sid"].as_str().unwrap().starts_with("SM"));
}

both!(
    sms_campaign_sends_each_recipient_its_rendered_text,
    sms_campaign_create_rejects_bad_input,
    sms_campaign_scheduled_waits_then_launch_sends_and_cancel_stops,
    sms_campaign_cancel_mid_run_stops_further_texts,
    sms_campaign_is_paced_per_sending_number,
    sms_campaign_counts_follow_mixed_delivery_outcomes,
    sms_campaign_lost_twilio_answer_is_reconciled_not_resent,
    sms_campaign_crash_between_claim_and_carrier_request_texts_once,
);
