//! Voice batch campaigns (docs/api.md#batch-campaigns, docs/campaigns.md): creation and its
//! checks, the scheduler placing each recipient's call through the Twilio emulator, outcomes per
//! recipient, retries, pause / resume / cancel mid-run, launch of a scheduled campaign, and the
//! `campaign_id` filter on calls.

use std::time::{Duration, Instant};

use nixflex_providers::twilio::signature;
use nixflex_testkit::twilio::{CallState, TwilioEmulator};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Key, PUBLIC_URL, TestApp, TwilioNumber, both, expect_error, twilio_number,
};

const NUMBER: &str = "+14155552671";
const PROMPT: &str = "Remind {first_name} about the dentist appointment on Tuesday.";

struct Lab {
    app: TestApp,
    twilio: TwilioEmulator,
    key: Key,
    agent_id: String,
    number: TwilioNumber,
}

async fn lab(backend: Backend) -> Lab {
    let (app, twilio) = TestApp::spawn_with_twilio_and(backend, |c| {
        c.campaign_tick_ms = 100;
        c.campaign_calls_per_second = 200.0;
        c.outbound_dial_recheck_ms = 200;
    })
    .await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({"name": "Reminders"})).await;
    let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
    let number = twilio_number(&twilio, NUMBER);
    let imported = app.post(&key, "/v1/phone-numbers", number.import_body(&agent_id)).await;
    assert_eq!(imported.status(), 201, "{}", imported.text().await.unwrap());
    Lab { app, twilio, key, agent_id, number }
}

fn callee(i: usize) -> String {
    format!("+4473861{i:05}")
}

impl Lab {
    fn body(&self, recipients: usize) -> Value {
        let recipients: Vec<Value> = (0..recipients)
            .map(|i| json!({"phone": callee(i), "variables": {"first_name": format!("Sam{i}")}}))
            .collect();
        json!({"agent_id": self.agent_id, "prompt": PROMPT, "recipients": recipients,
               "metadata": {"batch": "june"}})
    }

    async fn create(&self, body: Value) -> Value {
        let response = self.app.post(&self.key, "/v1/calls/batch", body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    async fn campaign(&self, id: &str) -> Value {
        let response = self.app.get(&self.key, &format!("/v1/calls/batch/{id}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn campaign_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let campaign = self.campaign(id).await;
            if done(&campaign) {
                return campaign;
            }
            assert!(Instant::now() < deadline, "{what}: {campaign}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn act(&self, id: &str, action: &str) -> reqwest::Response {
        self.app.post(&self.key, &format!("/v1/calls/batch/{id}/{action}"), json!({})).await
    }

    fn dials(&self) -> Vec<CallState> {
        self.twilio.calls().into_iter().filter(|c| c.direction == "outbound-api").collect()
    }

    /// Waits until `n` calls have been dialled; returns them oldest first.
    async fn dials_until(&self, n: usize) -> Vec<CallState> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let dials = self.dials();
            if dials.len() >= n {
                return dials;
            }
            assert!(Instant::now() < deadline, "{} dials, expected {n}", dials.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends Twilio's final status callback for a dialled call, signed as Twilio would.
    async fn end(&self, dial: &CallState, status: &str) {
        let url = dial.create_param_values("StatusCallback")[0].to_owned();
        let params: Vec<(String, String)> = [
            ("CallSid", dial.sid.as_str()),
            ("AccountSid", dial.account_sid.as_str()),
            ("From", dial.from.as_str()),
            ("To", dial.to.as_str()),
            ("CallStatus", status),
            ("ApiVersion", "2010-04-01"),
            ("Direction", "outbound-api"),
            ("CallDuration", "0"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let path = url.strip_prefix(PUBLIC_URL).unwrap();
        let sig = signature::compute_signature(&self.number.token, &url, &params);
        let response = self
            .app
            .client
            .post(self.app.url(path))
            .header("x-twilio-signature", sig)
            .form(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

async fn batch_create_checks_every_field_and_reports_invalid_rows(backend: Backend) {
    let lab = lab(backend).await;
    let with = |patch: Value| {
        let mut body = lab.body(2);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let bad = json!([{"phone": callee(0)}, {"phone": "0207 946 0000"}, {"phone": 42}]);
    let error = expect_error(
        lab.app.post(&lab.key, "/v1/calls/batch", with(json!({"recipients": bad}))).await,
        400,
        "invalid_phone_format",
    )
    .await;
    let invalid = error["details"]["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 2, "{error}");
    assert_eq!(invalid[0]["row_index"], 1);
    assert_eq!(invalid[0]["phone"], "0207 946 0000");
    assert_eq!(invalid[1]["row_index"], 2);

    let many: Vec<Value> = (0..10_001).map(|i| json!({"phone": callee(i)})).collect();
    expect_error(
        lab.app.post(&lab.key, "/v1/calls/batch", with(json!({"recipients": many}))).await,
        400,
        "too_many_recipients",
    )
    .await;
    for patch in [
        json!({"window_start_minutes": 1500}),
        json!({"window_start_minutes": 600, "window_end_minutes": 600}),
        json!({"window_days": ["mon", "funday"]}),
        json!({"timezone": "Mars/Olympus"}),
        json!({"schedule_type": "schedule"}),
        json!({"schedule_type": "schedule", "scheduled_date": "2026-13-01"}),
    ] {
        let response = lab.app.post(&lab.key, "/v1/calls/batch", with(patch.clone())).await;
        expect_error(response, 400, "invalid_schedule").await;
    }
    expect_error(
        lab.app.post(&lab.key, "/v1/calls/batch", with(json!({"prompt": " "}))).await,
        400,
        "missing_field",
    )
    .await;
    expect_error(
        lab.app
            .post(&lab.key, "/v1/calls/batch", with(json!({"agent_id": "agent_0000000000000000"})))
            .await,
        404,
        "agent_not_found",
    )
    .await;
    expect_error(
        lab.app
            .post(&lab.key, "/v1/calls/batch", with(json!({"from_number": "+14155550000"})))
            .await,
        403,
        "from_number_not_owned",
    )
    .await;

    // skip_invalid: the valid rows make the campaign; the invalid ones (and a repeated number)
    // are reported with their row.
    let rows = json!([{"phone": callee(0)}, {"phone": "nope"}, {"phone_number": callee(1)},
                      {"phone": callee(0)}]);
    let mut body =
        with(json!({"recipients": rows, "skip_invalid": true, "schedule_type": "schedule",
                               "scheduled_date": "2099-01-01", "name": "June reminders"}));
    body["max_concurrent"] = json!(3);
    let created = lab.create(body).await;
    assert_eq!(created["status"], "scheduled");
    assert_eq!(created["valid_count"], 2);
    assert_eq!(created["recipients_count"], 2);
    assert_eq!(created["invalid_count"], 2);
    assert_eq!(created["invalid"][0]["row_index"], 1);
    assert_eq!(created["invalid"][1]["row_index"], 3);
    assert_eq!(created["from_number"], NUMBER, "the agent's only outbound number");
    assert_eq!(created["name"], "June reminders");
    let id = created["campaign_id"].as_str().unwrap();
    assert!(id.starts_with("camp_") && id.len() == 21, "{id}");
    let campaign = lab.campaign(id).await;
    assert_eq!(campaign["timezone"], "Europe/London", "the agent's timezone");
    assert_eq!(campaign["window_start_minutes"], 0);
    assert_eq!(campaign["window_end_minutes"], 1440);
    assert_eq!(campaign["window_days"].as_array().unwrap().len(), 7);
    assert_eq!(campaign["counts"]["pending"], 2);
    assert_eq!(campaign["recipients"][1]["phone"], callee(1));
    assert_eq!(campaign["recipients"][1]["row_index"], 2);

    let list: Value =
        lab.app.get(&lab.key, "/v1/calls/batch?status=scheduled").await.json().await.unwrap();
    assert_eq!(list["count"], 1);
    assert_eq!(list["campaigns"][0]["campaign_id"], id);
    let none: Value =
        lab.app.get(&lab.key, "/v1/calls/batch?status=running").await.json().await.unwrap();
    assert_eq!(none["count"], 0);
    expect_error(
        lab.app.get(&lab.key, "/v1/calls/batch/camp_0123456789abcdef").await,
        404,
        "campaign_not_found",
    )
    .await;
    // Another account sees nothing.
    let other = lab.app.signup().await;
    expect_error(
        lab.app.get(&other, &format!("/v1/calls/batch/{id}")).await,
        404,
        "campaign_not_found",
    )
    .await;

    // A second outbound number makes from_number required.
    let second = twilio_number(&lab.twilio, "+14155552672");
    let imported =
        lab.app.post(&lab.key, "/v1/phone-numbers", second.import_body(&lab.agent_id)).await;
    assert_eq!(imported.status(), 201);
    expect_error(
        lab.app.post(&lab.key, "/v1/calls/batch", lab.body(1)).await,
        400,
        "from_number_required",
    )
    .await;
    assert!(lab.dials().is_empty(), "a scheduled campaign dials nothing");
}

async fn a_campaign_calls_each_recipient_once_and_completes_with_outcomes(backend: Backend) {
    let lab = lab(backend).await;
    let mut body = lab.body(3);
    body["recipients"][1]["prompt_override"] = json!("Ask Sam1 to confirm the new address.");
    body["recipients"][2]["metadata"] = json!({"crm_id": 7});
    let created = lab.create(body).await;
    assert_eq!(created["status"], "running");
    let id = created["campaign_id"].as_str().unwrap().to_owned();

    let dials = lab.dials_until(3).await;
    let mut called: Vec<&str> = dials.iter().map(|d| d.to.as_str()).collect();
    called.sort_unstable();
    assert_eq!(called, [callee(0), callee(1), callee(2)]);
    assert!(dials.iter().all(|d| d.from == NUMBER));
    for (dial, status) in dials.iter().zip(["completed", "busy", "no-answer"]) {
        lab.end(dial, status).await;
    }
    let done = lab.campaign_until(&id, "completed", |c| c["status"] == "completed").await;
    assert_eq!(done["counts"]["done"], 3);
    assert_eq!(done["counts"]["by_outcome"], json!({"busy": 1, "completed": 1, "no-answer": 1}));
    assert!(done["completed_at"].is_string());
    for recipient in done["recipients"].as_array().unwrap() {
        assert_eq!(recipient["status"], "done");
        assert_eq!(recipient["attempts"], 1);
        let call_id = recipient["call_id"].as_str().unwrap();
        let call: Value =
            lab.app.get(&lab.key, &format!("/v1/calls/{call_id}")).await.json().await.unwrap();
        assert_eq!(call["campaign_id"], id.as_str());
        assert_eq!(call["to_number"], recipient["phone"]);
        assert_eq!(call["call_status"], recipient["outcome"]);
        let expected = if recipient["row_index"] == 2 {
            json!({"batch": "june", "crm_id": 7})
        } else {
            json!({"batch": "june"})
        };
        assert_eq!(call["metadata"], expected, "the campaign's metadata, the recipient's over it");
    }
    let calls: Value =
        lab.app.get(&lab.key, &format!("/v1/calls?campaign_id={id}")).await.json().await.unwrap();
    assert_eq!(calls["count"], 3);
    assert_eq!(lab.dials().len(), 3, "each recipient dialled once");
    // A completed campaign cannot be launched, paused or cancelled.
    for action in ["launch", "pause", "cancel"] {
        expect_error(lab.act(&id, action).await, 400, "campaign_already_completed").await;
    }
}

async fn busy_recipients_are_called_again_up_to_max_attempts(backend: Backend) {
    let lab = lab(backend).await;
    let mut body = lab.body(1);
    body["max_attempts"] = json!(2);
    body["retry_delay_minutes"] = json!(0);
    let id = lab.create(body).await["campaign_id"].as_str().unwrap().to_owned();
    let first = lab.dials_until(1).await;
    lab.end(&first[0], "busy").await;
    let second = lab.dials_until(2).await;
    assert_eq!(second[1].to, callee(0));
    lab.end(&second[1], "busy").await;
    let done = lab.campaign_until(&id, "completed", |c| c["status"] == "completed").await;
    let recipient = &done["recipients"][0];
    assert_eq!(recipient["attempts"], 2);
    assert_eq!(recipient["outcome"], "busy");
    assert_eq!(lab.dials().len(), 2, "no third call");
}

async fn pause_resume_and_cancel_mid_run(backend: Backend) {
    let lab = lab(backend).await;
    let mut body = lab.body(3);
    body["max_concurrent"] = json!(1);
    let id = lab.create(body).await["campaign_id"].as_str().unwrap().to_owned();
    let first = lab.dials_until(1).await;
    let paused = lab.act(&id, "pause").await;
    assert_eq!(paused.status(), 200);
    assert_eq!(paused.json::<Value>().await.unwrap()["status"], "paused");
    assert_eq!(lab.act(&id, "pause").await.status(), 200, "pausing twice changes nothing");
    lab.end(&first[0], "completed").await;
    // Once the scheduler has recorded the outcome, it has run while paused: nothing new dialled.
    let settled = lab.campaign_until(&id, "first settled", |c| c["counts"]["done"] == 1).await;
    assert_eq!(settled["status"], "paused");
    assert_eq!(settled["counts"]["pending"], 2);
    assert_eq!(lab.dials().len(), 1, "a paused campaign places no call");

    let resumed = lab.act(&id, "resume").await;
    assert_eq!(resumed.json::<Value>().await.unwrap()["status"], "running");
    let second = lab.dials_until(2).await;
    let cancelled = lab.act(&id, "cancel").await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["counts"]["cancelled"], 1, "the recipient not yet called");
    assert_eq!(cancelled["counts"]["in_progress"], 1, "the call in progress goes on");
    lab.end(&second[1], "completed").await;
    let end = lab.campaign_until(&id, "second settled", |c| c["counts"]["done"] == 2).await;
    assert_eq!(end["status"], "cancelled");
    assert_eq!(end["recipients"][2]["status"], "cancelled");
    assert!(end["recipients"][2]["call_id"].is_null());
    assert_eq!(lab.dials().len(), 2);
    expect_error(lab.act(&id, "launch").await, 400, "campaign_already_completed").await;
    expect_error(lab.act(&id, "resume").await, 400, "campaign_already_completed").await;
    assert_eq!(lab.act(&id, "cancel").await.status(), 200, "cancelling twice changes nothing");
}

async fn a_scheduled_campaign_waits_until_launched(backend: Backend) {
    let lab = lab(backend).await;
    let mut body = lab.body(2);
    body["schedule_type"] = json!("schedule");
    body["scheduled_date"] = json!("2099-06-01");
    let created = lab.create(body).await;
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "scheduled");
    expect_error(lab.act(&id, "resume").await, 400, "invalid_request").await;
    let launched = lab.act(&id, "launch").await;
    assert_eq!(launched.status(), 200);
    let launched: Value = launched.json().await.unwrap();
    assert_eq!(launched["status"], "running");
    assert_eq!(launched["recipients_count"], 2);
    assert_eq!(launched["queued_count"], 2);
    let dials = lab.dials_until(2).await;
    let again: Value = lab.act(&id, "launch").await.json().await.unwrap();
    assert_eq!(again["status"], "running", "launching a running campaign changes nothing");
    for dial in &dials {
        lab.end(dial, "completed").await;
    }
    lab.campaign_until(&id, "completed", |c| c["status"] == "completed").await;
}

/// Each recipient's call carries its own purpose: the campaign's `prompt` with the recipient's
/// `variables` filled in, or the recipient's `prompt_override`; the model sees it in the call's
/// system prompt (the purpose itself is sealed and never returned by the API).
async fn recipients_variables_and_prompt_override_reach_their_calls_prompt(backend: Backend) {
    use nixflex_testkit::anthropic::Reply;
    use nixflex_testkit::twilio::callee::Callee;
    use nixflex_testkit::twilio::caller::CallerScript;
    let lab = crate::engine::CallLab::start_with(backend, json!({"name": "Ava"}), |c| {
        c.campaign_tick_ms = 100;
        c.campaign_calls_per_second = 200.0;
        c.outbound_dial_recheck_ms = 200;
    })
    .await;
    lab.llm.set_responder(|body| {
        if body["tool_choice"]["name"] == "record_call_analysis" {
            Reply::tool_call("record_call_analysis", json!({"call_summary": "A reminder."}))
        } else {
            Reply::text("Thanks, goodbye! [END_CALL]")
        }
    });
    let hello = CallerScript::new()
        .say("Hello?", Duration::from_millis(800))
        .wait_for_agent_speech(Duration::from_secs(10))
        .wait_for_agent_silence(Duration::from_millis(600), Duration::from_secs(15));
    for i in 0..2 {
        lab.stt.push_utterance("Hello?");
        lab.twilio.add_callee(&callee(i), Callee::human(hello.clone()));
    }
    let body = json!({
        "agent_id": lab.agent_id,
        "prompt": PROMPT,
        "recipients": [
            {"phone": callee(0), "variables": {"first_name": "Sam"}},
            {"phone": callee(1), "variables": {"first_name": "Kim"},
             "prompt_override": "Tell {first_name} that order 1234 has shipped."},
        ],
    });
    let response = lab.app.post(&lab.key, "/v1/calls/batch", body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let created: Value = response.json().await.unwrap();
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let campaign: Value =
            lab.app.get(&lab.key, &format!("/v1/calls/batch/{id}")).await.json().await.unwrap();
        if campaign["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the campaign never completed: {campaign}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let systems: Vec<String> = lab
        .llm
        .requests()
        .iter()
        .filter(|r| r.body["tool_choice"]["name"] != "record_call_analysis")
        .map(|r| r.body["system"].to_string())
        .collect();
    assert!(
        systems.iter().any(|s| s.contains("Remind Sam about the dentist appointment on Tuesday.")),
        "{systems:?}"
    );
    assert!(
        systems.iter().any(|s| s.contains("Tell Kim that order 1234 has shipped.")),
        "{systems:?}"
    );
    assert!(systems.iter().all(|s| !s.contains("{first_name}")), "{systems:?}");
}

both!(
    recipients_variables_and_prompt_override_reach_their_calls_prompt,
    batch_create_checks_every_field_and_reports_invalid_rows,
    a_campaign_calls_each_recipient_once_and_completes_with_outcomes,
    busy_recipients_are_called_again_up_to_max_attempts,
    pause_resume_and_cancel_mid_run,
    a_scheduled_campaign_waits_until_launched,
);
