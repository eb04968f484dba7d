//! SMS (docs/sms.md): sending through the number's Twilio account, the message log kept current
//! by status callbacks, opt-outs, and the agent's replies to inbound texts — over real HTTP, with
//! the Twilio and Anthropic emulators, on both databases.

use std::time::{Duration, Instant};

use chrono::Utc;
use nixflex_core::call::{CallRecord, CallStatus, Direction};
use nixflex_providers::twilio::signature;
use nixflex_testkit::anthropic::{AnthropicEmulator, Fault, Reply};
use nixflex_testkit::twilio::{MessageOutcome, TwilioEmulator};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, Key, TestApp, TwilioNumber, both, expect_error, twilio_number};

const NUMBER: &str = "+14155552671";
const CUSTOMER: &str = "+447386172392";

struct SmsLab {
    app: TestApp,
    twilio: TwilioEmulator,
    llm: AnthropicEmulator,
    key: Key,
    agent_id: String,
    number: TwilioNumber,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl SmsLab {
    /// A server whose public URL is its own loopback address, so the emulator's status callbacks
    /// and inbound texts reach it.
    async fn start(backend: Backend, agent: Value) -> Self {
        let twilio = TwilioEmulator::start().await.unwrap();
        let llm = AnthropicEmulator::start().await.unwrap();
        let port = free_port();
        let (twilio_base, llm_base) = (twilio.base_url().to_owned(), llm.base_url());
        let app = TestApp::spawn_with(backend, |c| {
            c.listen = format!("127.0.0.1:{port}");
            c.public_url = Some(format!("http://127.0.0.1:{port}"));
            c.twilio_api_base = twilio_base;
            c.twilio_request_timeout_ms = 2000;
            c.anthropic_base_url = llm_base;
            c.anthropic_api_key = Some(SecretString::from("sk-ant-test"));
            c.jobs_backoff_base_ms = 20;
            c.jobs_backoff_cap_ms = 50;
            c.jobs_poll_ms = 20;
        })
        .await;
        let key = app.signup().await;
        let agent = app.create_agent(&key, agent).await;
        let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
        let number = twilio_number(&twilio, NUMBER);
        let response = app.post(&key, "/v1/phone-numbers", number.import_body(&agent_id)).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        Self { app, twilio, llm, key, agent_id, number }
    }

    async fn send(&self, body: Value) -> reqwest::Response {
        self.app.post(&self.key, "/v1/sms", body).await
    }

    async fn message(&self, id: &str) -> Value {
        let response = self.app.get(&self.key, &format!("/v1/sms/{id}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn inbound(&self, body: &str) -> String {
        let (sid, status) =
            self.twilio.send_inbound_sms(CUSTOMER, NUMBER, body, None).await.unwrap();
        assert_eq!(status, 200);
        sid
    }

    /// Texts the emulator was asked to send to the customer.
    fn sent_to_customer(&self) -> Vec<String> {
        self.twilio
            .messages()
            .into_iter()
            .filter(|m| m.direction == "outbound-api" && m.to == CUSTOMER)
            .map(|m| m.body)
            .collect()
    }

    async fn wait_for_sent(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = self.sent_to_customer();
            if sent.len() >= n {
                return sent;
            }
            assert!(Instant::now() < deadline, "expected {n} texts, got {sent:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every `sms.reply` job has finished (done or dead).
    async fn replies_settled(&self) {
        use nixflex_store::{JobFilter, JobState, Page};
        let store =
            nixflex_store::open(&self.app.config.effective_database_url(), 2).await.unwrap();
        let filter = JobFilter { state: None, kind: Some("sms.reply".to_owned()) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let jobs = store.list_jobs(&filter, Page { limit: 100, offset: 0 }).await.unwrap();
            if !jobs.is_empty()
                && jobs.iter().all(|j| matches!(j.state, JobState::Done | JobState::Dead))
            {
                return;
            }
            assert!(Instant::now() < deadline, "sms.reply jobs never settled: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn sms_send_logs_and_follows_status_callbacks(backend: Backend) {
    let lab = SmsLab::start(backend, json!({})).await;
    let response = lab
        .send(json!({"agent_id": lab.agent_id, "to": CUSTOMER, "message": "Your table is booked for 7pm.", "context": {"reply_context": "Booking #42"}, "metadata": {"order": 42}}))
        .await;
    assert_eq!(response.status(), 201);
    let sent: Value = response.json().await.unwrap();
    let id = sent["message_id"].as_str().unwrap();
    assert!(nixflex_core::ids::is_message_id(id), "{sent}");
    let sid = sent["twilio_sid"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("SM"));
    assert_eq!(sent["status"], "queued");
    assert_eq!((sent["to"].as_str(), sent["from"].as_str()), (Some(CUSTOMER), Some(NUMBER)));
    assert_eq!(
        (sent["to_number"].as_str(), sent["from_number"].as_str()),
        (Some(CUSTOMER), Some(NUMBER))
    );
    assert_eq!(sent["segments"], 1);
    assert_eq!(sent["metadata"]["order"], 42);
    // Sent through the number's own Twilio account, with our status callback.
    let created = lab.twilio.message(&sid).unwrap();
    assert_eq!(created.account_sid, lab.number.sid);
    assert_eq!(created.from, NUMBER);
    assert!(created.status_callback.as_deref().unwrap().ends_with("/twilio/sms-status"));

    // Twilio's order: sent, delivered. Then a late, out-of-order `sent` changes nothing.
    let answers = lab.twilio.deliver_message(&sid, MessageOutcome::Delivered).await;
    assert_eq!(answers, vec![Ok(200), Ok(200)]);
    assert_eq!(lab.message(id).await["status"], "delivered");
    assert_eq!(lab.twilio.send_message_status(&sid, "sent", None).await, Ok(200));
    assert_eq!(lab.twilio.send_message_status(&sid, "queued", None).await, Ok(200));
    assert_eq!(lab.message(id).await["status"], "delivered");

    // An undelivered one keeps Twilio's error code; a late `delivered` does not undo it.
    let second: Value = lab
        .send(json!({"agent_id": lab.agent_id, "to": "+447700900123", "message": "Hi"}))
        .await
        .json()
        .await
        .unwrap();
    let second_sid = second["twilio_sid"].as_str().unwrap().to_owned();
    lab.twilio.deliver_message(&second_sid, MessageOutcome::Undelivered(30007)).await;
    assert_eq!(lab.twilio.send_message_status(&second_sid, "delivered", None).await, Ok(200));
    let second = lab.message(second["message_id"].as_str().unwrap()).await;
    assert_eq!(
        (second["status"].as_str(), second["error_code"].as_i64()),
        (Some("undelivered"), Some(30007))
    );

    // Failed at delivery because the recipient opted out at the carrier (21610): later sends to
    // them are refused without asking Twilio.
    let third: Value = lab
        .send(json!({"agent_id": lab.agent_id, "to": "+447700900456", "message": "Hi"}))
        .await
        .json()
        .await
        .unwrap();
    let third_sid = third["twilio_sid"].as_str().unwrap().to_owned();
    assert_eq!(
        lab.twilio.deliver_message(&third_sid, MessageOutcome::Failed(21610)).await,
        vec![Ok(200)]
    );
    let third = lab.message(third["message_id"].as_str().unwrap()).await;
    assert_eq!(
        (third["status"].as_str(), third["error_code"].as_i64()),
        (Some("failed"), Some(21610))
    );
    expect_error(
        lab.send(json!({"agent_id": lab.agent_id, "to": "+447700900456", "message": "Again"}))
            .await,
        400,
        "recipient_unsubscribed",
    )
    .await;

    // The log, with its filters.
    let list: Value = lab.app.get(&lab.key, "/v1/sms").await.json().await.unwrap();
    assert_eq!(list["count"], 3);
    let list: Value = lab
        .app
        .get(&lab.key, &format!("/v1/sms?to=%2B{}", &CUSTOMER[1..]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["messages"][0]["message_id"], id);
    let list: Value =
        lab.app.get(&lab.key, "/v1/sms?direction=inbound").await.json().await.unwrap();
    assert_eq!(list["count"], 0);
    let list: Value = lab
        .app
        .get(&lab.key, &format!("/v1/sms?agent_id={}&limit=1", lab.agent_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((list["count"].as_i64(), list["messages"].as_array().unwrap().len()), (Some(3), 1));
    expect_error(lab.app.get(&lab.key, "/v1/sms?direction=sideways").await, 400, "invalid_request")
        .await;

    // Usage counts the three texts: all handed to the carrier, one delivered, two failed
    // (undelivered, failed); an inbound text is not counted.
    lab.inbound("Thanks!").await;
    let usage: Value =
        lab.app.get(&lab.key, "/v1/usage?period=all_time").await.json().await.unwrap();
    assert_eq!(
        usage["sms"],
        json!({"sent": 3, "delivered": 1, "failed": 2, "cost_usd": 0.0}),
        "{usage}"
    );
    let before: Value = lab
        .app
        .get(&lab.key, "/v1/usage?since=2020-01-01&until=2020-02-01")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["sms"]["sent"], 0, "{before}");

    // Another account sees none of it.
    let other = lab.app.signup().await;
    expect_error(lab.app.get(&other, &format!("/v1/sms/{id}")).await, 404, "message_not_found")
        .await;
    let list: Value = lab.app.get(&other, "/v1/sms").await.json().await.unwrap();
    assert_eq!(list["count"], 0);
    let usage: Value = lab.app.get(&other, "/v1/usage").await.json().await.unwrap();
    assert_eq!(usage["sms"]["sent"], 0, "{usage}");
}

async fn sms_send_refusals_map_to_clear_codes(backend: Backend) {
    let lab = SmsLab::start(backend, json!({})).await;
    let agent = lab.agent_id.clone();
    expect_error(
        lab.send(json!({"agent_id": agent, "to": CUSTOMER, "message": "x".repeat(1601)})).await,
        400,
        "message_too_long",
    )
    .await;
    expect_error(
        lab.send(json!({"agent_id": agent, "to": "12345", "message": "Hi"})).await,
        400,
        "invalid_phone_format",
    )
    .await;
    expect_error(lab.send(json!({"agent_id": agent, "message": "Hi"})).await, 400, "missing_field")
        .await;
    expect_error(lab.send(json!({"agent_id": agent, "to": CUSTOMER, "message": "Hi", "from_number": "+14155550000"})).await, 403, "from_number_not_owned").await;
    expect_error(
        lab.send(json!({"agent_id": agent, "to": CUSTOMER, "message": "Hi", "colour": "red"}))
            .await,
        400,
        "unknown_field",
    )
    .await;
    assert!(lab.twilio.messages().is_empty(), "nothing reached Twilio");

    // Legacy body names.
    let legacy = lab.send(json!({"agent_id": agent, "to_number": CUSTOMER, "body": "Legacy hello", "from_number": NUMBER})).await;
    assert_eq!(legacy.status(), 201);

    // Twilio's refusals.
    lab.twilio.fail_next("/Messages.json", 400, 21408);
    let error = expect_error(
        lab.send(json!({"agent_id": agent, "to": "+15005550009", "message": "Hi"})).await,
        400,
        "sms_not_supported_in_region",
    )
    .await;
    assert_eq!(error["details"]["twilio_error"]["code"], 21408);
    lab.twilio.fail_next("/Messages.json", 400, 21211);
    let error = expect_error(
        lab.send(json!({"agent_id": agent, "to": "+15005550001", "message": "Hi"})).await,
        502,
        "provider_error",
    )
    .await;
    assert_eq!(error["details"]["twilio_error"]["code"], 21211);
    let failed = lab.message(error["details"]["message_id"].as_str().unwrap()).await;
    assert_eq!(
        (failed["status"].as_str(), failed["error_code"].as_i64()),
        (Some("failed"), Some(21211))
    );

    // Twilio's own opt-out list (21610): refused now, and later sends never reach Twilio.
    lab.twilio.fail_next("/Messages.json", 400, 21610);
    expect_error(
        lab.send(json!({"agent_id": agent, "to": "+447700900555", "message": "Hi"})).await,
        400,
        "recipient_unsubscribed",
    )
    .await;
    lab.twilio.clear_requests();
    expect_error(
        lab.send(json!({"agent_id": agent, "to": "+447700900555", "message": "Hi"})).await,
        400,
        "recipient_unsubscribed",
    )
    .await;
    assert!(lab.twilio.requests().is_empty());

    // Idempotency-Key: one text, the same answer.
    let send = || {
        lab.app
            .request(reqwest::Method::POST, "/v1/sms", Some(&lab.key))
            .header("idempotency-key", "sms-once")
            .json(&json!({"agent_id": agent, "to": "+447700900777", "message": "Once"}))
    };
    let first: Value = send().send().await.unwrap().json().await.unwrap();
    let again: Value = send().send().await.unwrap().json().await.unwrap();
    assert_eq!(first["message_id"], again["message_id"]);
    assert_eq!(lab.twilio.messages().iter().filter(|m| m.to == "+447700900777").count(), 1);
}

async fn sms_stop_refuses_sends_until_start(backend: Backend) {
    let lab = SmsLab::start(backend, json!({})).await;
    let send = || lab.send(json!({"agent_id": lab.agent_id, "to": CUSTOMER, "message": "Offer!"}));
    assert_eq!(send().await.status(), 201);
    lab.inbound("Stop").await;
    expect_error(send().await, 400, "recipient_unsubscribed").await;
    lab.inbound("START").await;
    assert_eq!(send().await.status(), 201);
    lab.inbound("unsubscribe").await;
    expect_error(send().await, 400, "recipient_unsubscribed").await;
    // Keywords never reach the LLM; both inbound texts are in the thread.
    assert!(lab.llm.requests().is_empty());
    let thread: Value = lab
        .app
        .get(&lab.key, &format!("/v1/sms?customer_number=%2B{}&direction=inbound", &CUSTOMER[1..]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(thread["count"], 3, "{thread}");
    assert_eq!(thread["messages"][0]["status"], "received");
    assert_eq!(thread["messages"][0]["from"], CUSTOMER);
}

async fn sms_help_gets_the_fixed_text(backend: Backend) {
    let lab = SmsLab::start(backend, json!({})).await;
    lab.inbound("help").await;
    let sent = lab.wait_for_sent(1).await;
    assert_eq!(sent, vec![nixflex_core::sms::HELP_TEXT.to_owned()]);
    assert!(lab.llm.requests().is_empty());
}

/// A past call between the customer and the agent on the number, with its summary.
async fn yesterdays_call(lab: &SmsLab) -> String {
    let store = nixflex_store::open(&lab.app.config.effective_database_url(), 2).await.unwrap();
    let yesterday = Utc::now() - chrono::Duration::days(1);
    let call = CallRecord {
        call_id: nixflex_core::ids::new_call_id(),
        account_id: lab.key.account_id.as_str().into(),
        agent_id: Some(lab.agent_id.as_str().into()),
        direction: Direction::Inbound,
        from_number: CUSTOMER.to_owned(),
        to_number: NUMBER.to_owned(),
        twilio_call_sid: None,
        call_status: CallStatus::Completed,
        ended_reason: None,
        started_at: yesterday,
        answered_at: Some(yesterday),
        ended_at: Some(yesterday),
        duration_seconds: Some(60),
        transcript: Vec::new(),
        turns: Vec::new(),
        avg_latency_ms: None,
        recording: None,
        call_summary: None,
        caller_sentiment: None,
        call_successful: None,
        extracted_data: serde_json::Map::new(),
        voicemail_detected: false,
        campaign_id: None,
        metadata: None,
        cost_usd: None,
        precall_reject_reason: None,
        amd_result: None,
        carrier_details: None,
        function_calls: Vec::new(),
        provider_events: Vec::new(),
        voicemail_detection_method: None,
        stream_token_hash: None,
        created_at: yesterday,
        updated_at: yesterday,
    };
    store.insert_call(&call).await.unwrap();
    let analysis = nixflex_store::CallAnalysis {
        call_summary: Some(
            "Caller asked to move their dentist appointment to Friday at 3pm.".to_owned(),
        ),
        caller_sentiment: Some("neutral".to_owned()),
        call_successful: Some(true),
        extracted_data: serde_json::Map::new(),
    };
    assert!(store.record_analysis(&call.call_id, &analysis).await.unwrap());
    call.call_id.to_string()
}

async fn sms_reply_remembers_yesterdays_call(backend: Backend) {
    let lab = SmsLab::start(backend, json!({"name": "Dana", "system_prompt": "You are the receptionist of Bright Smiles dental clinic."})).await;
    yesterdays_call(&lab).await;
    lab.llm.push_reply(Reply::text("Yes, you're booked for Friday at 3pm. 😊 See you then!"));
    lab.inbound("Hi, is my appointment still on?").await;
    let sent = lab.wait_for_sent(1).await;
    assert_eq!(sent, vec!["Yes, you're booked for Friday at 3pm. See you then!".to_owned()]);

    let request = &lab.llm.requests()[0].body;
    let system = request["system"].to_string();
    assert!(system.contains("dentist appointment to Friday"), "{system}");
    assert!(system.contains("SMS text messages"), "{system}");
    assert!(system.contains("Bright Smiles"), "{system}");
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["role"], "user");
    assert!(messages[0].to_string().contains("is my appointment still on"));

    // The thread holds both, the reply as an outbound `reply` of the agent.
    let thread: Value = lab
        .app
        .get(&lab.key, &format!("/v1/sms?customer_number=%2B{}", &CUSTOMER[1..]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(thread["count"], 2, "{thread}");
    assert_eq!(thread["messages"][0]["source"], "reply");
    assert_eq!(thread["messages"][0]["agent_id"], lab.agent_id.as_str());
    assert_eq!(thread["messages"][1]["direction"], "inbound");

    // The next text carries the thread so far.
    lab.llm.push_reply(Reply::text("You're welcome."));
    lab.inbound("Great, thanks").await;
    lab.wait_for_sent(2).await;
    let messages = lab.llm.requests()[1].body["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["user", "assistant", "user"]);
}

async fn sms_retried_webhook_is_logged_and_answered_once(backend: Backend) {
    let lab = SmsLab::start(backend, json!({})).await;
    lab.llm.push_reply(Reply::text("Hello there."));
    let url = format!("{}/twilio/sms", lab.app.config.public_url.as_deref().unwrap());
    let params: Vec<(String, String)> = [
        ("MessageSid", format!("SM{}", "3".repeat(32))),
        ("AccountSid", lab.number.sid.clone()),
        ("From", CUSTOMER.to_owned()),
        ("To", NUMBER.to_owned()),
        ("Body", "Hello?".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for _ in 0..3 {
        let response = lab
            .twilio
            .send_webhook_with_idempotency_token(&url, &lab.number.token, &params, "same-delivery")
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap().matches("<Message>").count(),
            0,
            "no TwiML reply"
        );
    }
    lab.wait_for_sent(1).await;
    lab.replies_settled().await;
    assert_eq!(lab.sent_to_customer().len(), 1);
    assert_eq!(lab.llm.requests().len(), 1);
    let list: Value =
        lab.app.get(&lab.key, "/v1/sms?direction=inbound").await.json().await.unwrap();
    assert_eq!(list["count"], 1);

    // A forged inbound text is refused and logged nowhere.
    let sig = signature::compute_signature(&"0".repeat(32), &url, &params);
    let forged = lab
        .app
        .client
        .post(lab.app.url("/twilio/sms"))
        .header("x-twilio-signature", sig)
        .form(&params)
        .send()
        .await
        .unwrap();
    expect_error(forged, 403, "invalid_signature").await;
}

async fn sms_llm_failure_is_retried_without_doubling_the_reply(backend: Backend) {
    let lab = SmsLab::start(backend, json!({})).await;
    lab.llm.push_fault(Fault::Status(400));
    lab.llm.push_reply(Reply::text("Sorry for the wait, how can I help?"));
    lab.inbound("Are you open today?").await;
    let sent = lab.wait_for_sent(1).await;
    assert_eq!(sent, vec!["Sorry for the wait, how can I help?".to_owned()]);
    lab.replies_settled().await;
    assert_eq!(lab.llm.requests().len(), 2, "one failed request, one retry");
    assert_eq!(lab.sent_to_customer().len(), 1);

    // Twilio failing the reply's send: the job retries the same text, once it goes through.
    lab.twilio.fail_times("/Messages.json", 2, 503, None);
    lab.llm.push_reply(Reply::text("We close at 6pm."));
    lab.inbound("Until when?").await;
    let sent = lab.wait_for_sent(2).await;
    assert_eq!(sent[1], "We close at 6pm.");
    lab.replies_settled().await;
    assert_eq!(lab.sent_to_customer().len(), 2);
    assert_eq!(lab.llm.requests().len(), 3, "the LLM is not asked again for a retried send");
}

async fn sms_replies_off_logs_without_answering(backend: Backend) {
    let lab = SmsLab::start(backend, json!({"enable_sms_reply": false})).await;
    lab.inbound("Anyone there?").await;
    lab.replies_settled().await;
    assert!(lab.sent_to_customer().is_empty());
    assert!(lab.llm.requests().is_empty());
    let list: Value = lab.app.get(&lab.key, "/v1/sms").await.json().await.unwrap();
    assert_eq!(list["count"], 1);
    assert_eq!(list["messages"][0]["message"], "Anyone there?");
}

async fn sms_post_call_text_is_sent_once_per_call(backend: Backend) {
    use nixflex_store::{CALL_ENDED, JobFilter, JobState, NewJob, Page};
    let template = "Thanks {caller_name}! {call_summary} Reply here with questions. - {business_name} {unknown}";
    let lab = SmsLab::start(
        backend,
        json!({"name": "Bright Smiles", "post_call_sms_enabled": true, "post_call_sms_template": template}),
    )
    .await;
    let call_id = yesterdays_call(&lab).await;
    let store = nixflex_store::open(&lab.app.config.effective_database_url(), 2).await.unwrap();
    let mut name = serde_json::Map::new();
    name.insert("name".to_owned(), json!("Sam"));
    store
        .upsert_callers(&NUMBER.into(), &[(CUSTOMER.to_owned(), name)], nixflex_store::now())
        .await
        .unwrap();
    // The call's follow-up runs, then runs again (a re-delivered job): one text.
    for key in ["first", "again"] {
        let mut job = NewJob::new(CALL_ENDED, &call_id, json!({"call_id": call_id}), 3);
        job.idempotency_key = format!("{CALL_ENDED}:{call_id}:{key}");
        assert!(store.enqueue_job(&job).await.unwrap());
    }
    let sent = lab.wait_for_sent(1).await;
    assert_eq!(
        sent[0],
        "Thanks Sam! Caller asked to move their dentist appointment to Friday at 3pm. Reply here with questions. - Bright Smiles {unknown}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let filter = JobFilter { state: None, kind: None };
        let jobs = store.list_jobs(&filter, Page { limit: 100, offset: 0 }).await.unwrap();
        let settled = jobs
            .iter()
            .filter(|j| j.kind == CALL_ENDED || j.kind == "sms.post_call")
            .all(|j| j.state == JobState::Done);
        if settled && jobs.iter().filter(|j| j.kind == CALL_ENDED).count() == 2 {
            assert_eq!(jobs.iter().filter(|j| j.kind == "sms.post_call").count(), 1, "{jobs:?}");
            break;
        }
        assert!(Instant::now() < deadline, "follow-ups never settled: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lab.sent_to_customer().len(), 1);
    let list: Value = lab.app.get(&lab.key, "/v1/sms").await.json().await.unwrap();
    assert_eq!(list["messages"][0]["source"], "post_call");
}

async fn sms_delete_all_erases_the_accounts_log(backend: Backend) {
    let lab = SmsLab::start(backend, json!({"enable_sms_reply": false})).await;
    for to in ["+447700900001", "+447700900002"] {
        let response = lab.send(json!({"agent_id": lab.agent_id, "to": to, "message": "Hi"})).await;
        assert_eq!(response.status(), 201);
    }
    lab.inbound("STOP").await;
    let response = lab.app.delete(&lab.key, "/v1/calls").await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["sms_deleted"].as_i64(), body["deleted_messages"].as_i64()),
        (Some(3), Some(3)),
        "{body}"
    );
    let list: Value = lab.app.get(&lab.key, "/v1/sms").await.json().await.unwrap();
    assert_eq!(list["count"], 0);
    // The opt-out outlives the log.
    expect_error(
        lab.send(json!({"agent_id": lab.agent_id, "to": CUSTOMER, "message": "Hi"})).await,
        400,
        "recipient_unsubscribed",
    )
    .await;
}

/// Twilio's first status callback can overtake its answer to the send: the callback then finds
/// no message with its SID, and belongs to the newest pending text between the same numbers.
async fn sms_status_callback_that_overtakes_the_send_is_kept(backend: Backend) {
    use nixflex_core::sms::{SmsMessage, SmsSource, SmsStatus};
    let lab = SmsLab::start(backend, json!({})).await;
    let store = nixflex_store::open(&lab.app.config.effective_database_url(), 2).await.unwrap();
    let at = nixflex_store::now();
    let in_flight = SmsMessage {
        message_id: nixflex_core::ids::new_message_id(),
        account_id: lab.key.account_id.as_str().into(),
        agent_id: Some(lab.agent_id.as_str().into()),
        direction: Direction::Outbound,
        business_number: NUMBER.to_owned(),
        customer_number: CUSTOMER.to_owned(),
        body: "Hi".to_owned(),
        status: SmsStatus::Pending,
        twilio_sid: None,
        segments: 1,
        error_code: None,
        error_message: None,
        reply_context: None,
        source: SmsSource::Api,
        send_key: None,
        metadata: None,
        created_at: at,
        updated_at: at,
    };
    assert!(store.insert_sms(&in_flight).await.unwrap());
    let sid = format!("SM{}", "4".repeat(32));
    let url = format!("{}/twilio/sms-status", lab.app.config.public_url.as_deref().unwrap());
    let callback = |status: &str| -> Vec<(String, String)> {
        [
            ("MessageSid", sid.clone()),
            ("MessageStatus", status.to_owned()),
            ("AccountSid", lab.number.sid.clone()),
            ("From", NUMBER.to_owned()),
            ("To", CUSTOMER.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let response =
        lab.twilio.send_webhook(&url, &lab.number.token, &callback("sent")).await.unwrap();
    assert_eq!(response.status(), 200);
    let message = lab.message(&in_flight.message_id).await;
    assert_eq!(
        (message["status"].as_str(), message["twilio_sid"].as_str()),
        (Some("sent"), Some(sid.as_str()))
    );
    // The send's answer, arriving late, does not move it back.
    store
        .mark_sms_handed(&in_flight.message_id, &sid, SmsStatus::Queued, nixflex_store::now())
        .await
        .unwrap();
    assert_eq!(lab.message(&in_flight.message_id).await["status"], "sent");
    // A callback for a SID nobody sent changes nothing.
    let stray: Vec<(String, String)> = callback("delivered")
        .into_iter()
        .map(|(k, v)| if k == "MessageSid" { (k, format!("SM{}", "5".repeat(32))) } else { (k, v) })
        .collect();
    assert_eq!(
        lab.twilio.send_webhook(&url, &lab.number.token, &stray).await.unwrap().status(),
        200
    );
    assert_eq!(lab.message(&in_flight.message_id).await["status"], "sent");
}

/// The emulator plays scripted deliveries by itself, as Twilio does after answering the send.
async fn sms_scripted_deliveries_reach_the_log(backend: Backend) {
    let lab = SmsLab::start(backend, json!({})).await;
    lab.twilio
        .script_message_outcomes(&[MessageOutcome::Undelivered(30007), MessageOutcome::Delivered]);
    let mut ids = Vec::new();
    for to in ["+447700900101", "+447700900102"] {
        let sent: Value = lab
            .send(json!({"agent_id": lab.agent_id, "to": to, "message": "Hi"}))
            .await
            .json()
            .await
            .unwrap();
        ids.push(sent["message_id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let first = lab.message(&ids[0]).await;
        let second = lab.message(&ids[1]).await;
        if first["status"] == "undelivered" && second["status"] == "delivered" {
            assert_eq!(first["error_code"], 30007);
            assert!(second["error_code"].is_null());
            break;
        }
        assert!(Instant::now() < deadline, "deliveries never arrived: {first} {second}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both!(
    sms_send_logs_and_follows_status_callbacks,
    sms_send_refusals_map_to_clear_codes,
    sms_stop_refuses_sends_until_start,
    sms_help_gets_the_fixed_text,
    sms_reply_remembers_yesterdays_call,
    sms_retried_webhook_is_logged_and_answered_once,
    sms_llm_failure_is_retried_without_doubling_the_reply,
    sms_replies_off_logs_without_answering,
    sms_post_call_text_is_sent_once_per_call,
    sms_delete_all_erases_the_accounts_log,
    sms_status_callback_that_overtakes_the_send_is_kept,
    sms_scripted_deliveries_reach_the_log,
);
