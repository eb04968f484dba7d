//! Outbound calls (docs/api.md#outbound-calls, docs/engine.md#outbound-calls): the endpoint's
//! validation, caller-ID choice, idempotent retries, dialling through the Twilio emulator's
//! Calls API, the carrier's outcomes, and the durable capacity queue (order, restarts, two
//! nodes, the queue time limit).

use std::time::{Duration, Instant};

use nixflex_providers::twilio::signature;
use nixflex_testkit::twilio::{CallState, TwilioEmulator};
use nixflex_testkit::webhook::WebhookReceiver;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Key, PUBLIC_URL, TestApp, TwilioNumber, both, expect_error, twilio_number,
};

const NUMBER: &str = "+14155552671";
const CALLEE: &str = "+447386172392";
const PURPOSE: &str = "Remind {first_name} about the dentist appointment on Tuesday.";

/// A server on the Twilio emulator, an account, an agent and one imported number.
struct Lab {
    app: TestApp,
    twilio: TwilioEmulator,
    key: Key,
    agent_id: String,
    number: TwilioNumber,
}

async fn lab(
    backend: Backend,
    agent: Value,
    tweak: impl FnOnce(&mut nixflex::config::Config),
) -> Lab {
    let (app, twilio) = TestApp::spawn_with_twilio_and(backend, |c| {
        c.allow_private_targets = true;
        c.webhook_retry_delays_ms = vec![50];
        tweak(c);
    })
    .await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, agent).await;
    let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
    let number = twilio_number(&twilio, NUMBER);
    let imported = app.post(&key, "/v1/phone-numbers", number.import_body(&agent_id)).await;
    assert_eq!(imported.status(), 201, "{}", imported.text().await.unwrap());
    Lab { app, twilio, key, agent_id, number }
}

impl Lab {
    fn body(&self, to: &str) -> Value {
        json!({"agent_id": self.agent_id, "to_number": to, "prompt": PURPOSE,
               "dynamic_vars": {"first_name": "Sam"}})
    }

    async fn place(&self, to: &str) -> Value {
        let response = self.app.post(&self.key, "/v1/calls/outbound", self.body(to)).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    async fn call(&self, call_id: &str) -> Value {
        self.app.get(&self.key, &format!("/v1/calls/{call_id}")).await.json().await.unwrap()
    }

    /// Waits until the call's record satisfies `done`.
    async fn call_until(&self, call_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let call = self.call(call_id).await;
            if done(&call) {
                return call;
            }
            assert!(Instant::now() < deadline, "{what}: {call}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The emulator's calls created through the API (dials), oldest first.
    fn dials(&self) -> Vec<CallState> {
        self.twilio.calls().into_iter().filter(|c| c.direction == "outbound-api").collect()
    }

    /// Waits for the dial of the call `call_id` (its answer URL names it).
    async fn dial_of(&self, call_id: &str) -> CallState {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(dial) = self
                .dials()
                .into_iter()
                .find(|d| d.create_param_values("Url").first().is_some_and(|u| u.contains(call_id)))
            {
                return dial;
            }
            assert!(Instant::now() < deadline, "call {call_id} was never dialled");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends one of Twilio's status callbacks for a dialled call, signed as Twilio would.
    async fn status(&self, dial: &CallState, status: &str, extra: &[(&str, &str)]) {
        let url = dial.create_param_values("StatusCallback")[0].to_owned();
        let mut params: Vec<(String, String)> = [
            ("CallSid", dial.sid.as_str()),
            ("AccountSid", dial.account_sid.as_str()),
            ("From", dial.from.as_str()),
            ("To", dial.to.as_str()),
            ("CallStatus", status),
            ("ApiVersion", "2010-04-01"),
            ("Direction", "outbound-api"),
            ("CallbackSource", "call-progress-events"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        params.push(("Timestamp".to_owned(), chrono::Utc::now().to_rfc2822()));
        let response = self.post_signed(&url, &params).await;
        assert_eq!(response.status(), 200);
    }

    /// POSTs `params` to our server at the path of `public_url` (a URL under `PUBLIC_URL`),
    /// signed over `public_url` with the number's auth token.
    async fn post_signed(
        &self,
        public_url: &str,
        params: &[(String, String)],
    ) -> reqwest::Response {
        let path = public_url.strip_prefix(PUBLIC_URL).expect("a callback URL of this server");
        let sig = signature::compute_signature(&self.number.token, public_url, params);
        self.app
            .client
            .post(self.app.url(path))
            .header("x-twilio-signature", sig)
            .form(params)
            .send()
            .await
            .unwrap()
    }
}

async fn the_request_is_validated_with_documented_codes(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller"}), |_| {}).await;
    let post = |body: Value| lab.app.post(&lab.key, "/v1/calls/outbound", body);
    let base = lab.body(CALLEE);
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    for field in ["prompt", "agent_id", "to_number"] {
        let error = expect_error(post(without(field)).await, 400, "missing_field").await;
        assert_eq!(error["details"]["field"], field);
    }
    let error = expect_error(post(with("prompt", json!("   "))).await, 400, "missing_field").await;
    assert_eq!(error["details"]["field"], "prompt");
    let error = expect_error(
        post(with("to_number", json!("07386 172392"))).await,
        400,
        "invalid_phone_format",
    )
    .await;
    assert_eq!(error["details"]["field"], "to_number");
    expect_error(post(with("from_number", json!("nope"))).await, 400, "invalid_phone_format").await;
    expect_error(post(with("voicemail_action", json!("sing"))).await, 400, "invalid_request").await;
    expect_error(post(with("metadata", json!("a string"))).await, 400, "invalid_request").await;
    expect_error(post(with("colour", json!("red"))).await, 400, "unknown_field").await;
    let error =
        expect_error(post(with("variables", json!({"a": "b"}))).await, 400, "invalid_request")
            .await;
    assert_eq!(error["details"]["field"], "variables");

    // Agents: unknown, another account's, inactive, without an outbound number.
    expect_error(
        post(with("agent_id", json!("agent_0123456789abcdef"))).await,
        404,
        "agent_not_found",
    )
    .await;
    let other = lab.app.signup().await;
    let foreign = lab.app.create_agent(&other, json!({"name": "Theirs"})).await;
    expect_error(post(with("agent_id", foreign["agent_id"].clone())).await, 403, "agent_not_owned")
        .await;
    let idle = lab.app.create_agent(&lab.key, json!({"name": "Idle", "is_active": false})).await;
    expect_error(post(with("agent_id", idle["agent_id"].clone())).await, 400, "agent_inactive")
        .await;
    let lonely = lab.app.create_agent(&lab.key, json!({"name": "Lonely"})).await;
    expect_error(post(with("agent_id", lonely["agent_id"].clone())).await, 400, "agent_no_phone")
        .await;
    // A number switched off for outbound calls is no caller ID.
    let patched = lab
        .app
        .request(
            Method::PATCH,
            &format!("/v1/phone-numbers/{}", NUMBER.replace('+', "%2B")),
            Some(&lab.key),
        )
        .json(&json!({"outbound_enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    expect_error(post(base.clone()).await, 400, "agent_no_phone").await;
    // A from_number not in the account.
    let error = expect_error(
        post(with("from_number", json!("+14155550000"))).await,
        403,
        "from_number_not_owned",
    )
    .await;
    assert_eq!(error["details"]["field"], "from_number");
    // Nothing was queued or dialled by any of these.
    let list: Value = lab.app.get(&lab.key, "/v1/calls").await.json().await.unwrap();
    assert_eq!(list["count"], 0, "{list}");
    assert!(lab.dials().is_empty());
}

async fn a_call_is_queued_then_dialled_with_callbacks_and_amd(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller", "amd_enabled": true}), |_| {}).await;
    let mut body = lab.body(CALLEE);
    body["variables"] = body.as_object_mut().unwrap().remove("dynamic_vars").unwrap();
    body["metadata"] = json!({"crm_id": "lead-42"});
    body["campaign_id"] = json!("spring-push");
    let response = lab.app.post(&lab.key, "/v1/calls/outbound", body).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let call_id = created["call_id"].as_str().unwrap();
    assert!(call_id.starts_with("call_") && call_id.len() == 29, "{created}");
    assert_eq!(
        created,
        json!({"call_id": call_id, "status": "queued", "to": CALLEE, "from": NUMBER,
               "twilio_call_sid": null})
    );

    let dial = lab.dial_of(call_id).await;
    assert_eq!((dial.to.as_str(), dial.from.as_str()), (CALLEE, NUMBER));
    let url = dial.create_param_values("Url")[0];
    assert_eq!(url, format!("{PUBLIC_URL}/twilio/voice?call_id={call_id}"));
    assert_eq!(
        dial.create_param_values("StatusCallback"),
        [format!("{PUBLIC_URL}/twilio/status?call_id={call_id}")]
    );
    assert_eq!(
        dial.create_param_values("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(dial.create_param_values("MachineDetection"), ["Enable"]);
    assert_eq!(dial.create_param_values("AsyncAmd"), ["true"]);
    let amd_url = dial.create_param_values("AsyncAmdStatusCallback")[0].to_owned();
    assert!(amd_url.starts_with(&format!("{PUBLIC_URL}/twilio/amd?call_id={call_id}")));

    let call = lab
        .call_until(call_id, "the SID is stored", |c| c["twilio_call_sid"] == dial.sid.as_str())
        .await;
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["call_status"], "initiated");
    assert_eq!(call["metadata"], json!({"crm_id": "lead-42"}));
    assert_eq!(call["campaign_id"], "spring-push");
    // The purpose is never shown, and is stored only sealed.
    assert!(!call.to_string().contains("dentist"), "{call}");
    let store = nixflex_store::open(&lab.app.config.effective_database_url(), 2).await.unwrap();
    let details = store.get_outbound(&call_id.into()).await.unwrap().unwrap();
    let sealed = details.purpose_sealed.expect("kept until the follow-up");
    assert!(!sealed.contains("dentist") && !sealed.contains("Sam"), "sealed: {sealed}");

    // Ringing, then the carrier's AMD verdict is stored on the call.
    lab.status(&dial, "ringing", &[]).await;
    lab.call_until(call_id, "ringing", |c| c["call_status"] == "ringing").await;
    let amd: Vec<(String, String)> = [
        ("CallSid", dial.sid.as_str()),
        ("AccountSid", dial.account_sid.as_str()),
        ("AnsweredBy", "machine_end_beep"),
        ("MachineDetectionDuration", "2430"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(lab.post_signed(&amd_url, &amd).await.status(), 200);
    lab.call_until(call_id, "the AMD result", |c| c["amd_result"] == "machine_end_beep").await;
    // A forged AMD callback (wrong token) changes nothing.
    let forged = lab
        .app
        .client
        .post(lab.app.url(amd_url.strip_prefix(PUBLIC_URL).unwrap()))
        .header("x-twilio-signature", "AAAA")
        .form(&amd)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(lab.dials().len(), 1, "dialled once");
}

async fn the_caller_id_is_the_given_number_or_the_oldest(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller"}), |_| {}).await;
    let second = "+14155552672";
    let newer = twilio_number(&lab.twilio, second);
    let imported =
        lab.app.post(&lab.key, "/v1/phone-numbers", newer.import_body(&lab.agent_id)).await;
    assert_eq!(imported.status(), 201);
    // No from_number: the oldest outbound-enabled number.
    let first = lab.place(CALLEE).await;
    assert_eq!(first["from"], NUMBER);
    // A given one of the agent's numbers.
    let mut body = lab.body(CALLEE);
    body["from_number"] = json!(second);
    let response = lab.app.post(&lab.key, "/v1/calls/outbound", body).await;
    assert_eq!(response.status(), 201);
    let chosen: Value = response.json().await.unwrap();
    assert_eq!(chosen["from"], second);
    let dial = lab.dial_of(chosen["call_id"].as_str().unwrap()).await;
    assert_eq!(dial.from, second);
    assert_eq!(dial.account_sid, newer.sid, "dialled with that number's Twilio account");
    // A number of the account that is another agent's is not this agent's caller ID.
    let other_agent = lab.app.create_agent(&lab.key, json!({"name": "Other"})).await;
    let third = twilio_number(&lab.twilio, "+14155552673");
    let other_id = other_agent["agent_id"].as_str().unwrap();
    assert_eq!(
        lab.app.post(&lab.key, "/v1/phone-numbers", third.import_body(other_id)).await.status(),
        201
    );
    let mut body = lab.body(CALLEE);
    body["from_number"] = json!("+14155552673");
    let error = expect_error(
        lab.app.post(&lab.key, "/v1/calls/outbound", body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(error["details"]["field"], "from_number");
}

async fn a_retried_create_returns_the_same_call_and_dials_once(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller"}), |_| {}).await;
    let send = || {
        lab.app
            .request(Method::POST, "/v1/calls/outbound", Some(&lab.key))
            .header("idempotency-key", "retry-after-timeout-1")
            .json(&lab.body(CALLEE))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["call_id"], second["call_id"]);
    let call_id = first["call_id"].as_str().unwrap();
    lab.dial_of(call_id).await;
    let list: Value = lab.app.get(&lab.key, "/v1/calls").await.json().await.unwrap();
    assert_eq!(list["count"], 1, "{list}");
    // Give any second dial the chance to happen: the worker polls every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lab.dials().len(), 1, "one dial");
}

/// Waits for `n` webhooks at the receiver.
async fn webhooks(receiver: &WebhookReceiver, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = receiver.received();
        if got.len() >= n {
            return got.iter().map(nixflex_testkit::webhook::Received::json).collect();
        }
        assert!(Instant::now() < deadline, "webhooks missing: {got:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn unanswered_calls_end_with_the_carriers_outcome(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab =
        lab(backend, json!({"name": "Caller", "webhook_url": receiver.url("/hook")}), |_| {}).await;
    let mut ids = Vec::new();
    for (i, (outcome, extra)) in [
        ("busy", vec![("SipResponseCode", "486")]),
        ("no-answer", vec![("SipResponseCode", "487")]),
        ("failed", vec![("SipResponseCode", "500")]),
        ("canceled", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = lab.body(&format!("+4473861723{i:02}"));
        body["metadata"] = json!({"row": i});
        let response = lab.app.post(&lab.key, "/v1/calls/outbound", body).await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        let call_id = created["call_id"].as_str().unwrap().to_owned();
        let dial = lab.dial_of(&call_id).await;
        lab.status(&dial, "initiated", &[]).await;
        lab.status(&dial, outcome, &[extra.as_slice(), &[("CallDuration", "0")]].concat()).await;
        let call = lab.call_until(&call_id, "ended", |c| c["ended_at"].is_string()).await;
        assert_eq!(call["call_status"], outcome, "{call}");
        assert_eq!(call["ended_reason"], outcome, "{call}");
        assert_eq!(call["duration_seconds"], 0);
        assert_eq!(call["carrier_details"]["carrier_status"], outcome, "{call}");
        if let Some((_, code)) = extra.first() {
            assert_eq!(call["carrier_details"]["sip_response_code"], code.parse::<i64>().unwrap());
        }
        ids.push(call_id);
    }
    // Each unanswered call still produces its call.completed webhook, with its metadata.
    let got = webhooks(&receiver, 4).await;
    for (i, call_id) in ids.iter().enumerate() {
        let payload = got
            .iter()
            .find(|p| p["call_id"] == call_id.as_str())
            .unwrap_or_else(|| panic!("no webhook for {call_id}: {got:?}"));
        assert_eq!(payload["event"], "call.completed");
        assert_eq!(payload["metadata"], json!({"row": i}));
        assert_eq!(payload["direction"], "outbound");
    }
}

async fn a_refused_dial_ends_the_call_failed_with_twilios_error(backend: Backend) {
    let receiver = WebhookReceiver::start().await.unwrap();
    let lab =
        lab(backend, json!({"name": "Caller", "webhook_url": receiver.url("/hook")}), |_| {}).await;
    lab.twilio.fail_next("/Calls.json", 400, 21211);
    let created = lab.place(CALLEE).await;
    let call_id = created["call_id"].as_str().unwrap();
    let call = lab.call_until(call_id, "ended", |c| c["ended_at"].is_string()).await;
    assert_eq!(call["call_status"], "failed");
    assert_eq!(call["ended_reason"], "failed");
    assert_eq!(call["carrier_details"]["twilio_error"]["code"], 21211, "{call}");
    assert!(call["carrier_details"]["twilio_error"]["message"].is_string());
    assert!(call["twilio_call_sid"].is_null());
    let got = webhooks(&receiver, 1).await;
    assert_eq!(got[0]["event"], "call.completed");
    assert_eq!(got[0]["call_id"], call_id);
}

/// Cap 1: the second call waits `queued` until the first ends, then is dialled; the oldest
/// queued call goes first.
async fn over_the_cap_calls_wait_in_order_until_a_slot_frees(backend: Backend) {
    // The dial jobs' own re-check is a minute away: a prompt dial can only come from the
    // call's end making them due.
    let lab = lab(backend, json!({"name": "Caller"}), |c| {
        c.max_concurrent_calls = 1;
        c.outbound_dial_recheck_ms = 60_000;
    })
    .await;
    let first = lab.place("+447386172301").await;
    let second = lab.place("+447386172302").await;
    let third = lab.place("+447386172303").await;
    let id = |v: &Value| v["call_id"].as_str().unwrap().to_owned();
    let dial = lab.dial_of(&id(&first)).await;
    // Two worker polls later the others still wait.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(lab.dials().len(), 1);
    assert_eq!(lab.call(&id(&second)).await["call_status"], "queued");
    assert_eq!(lab.call(&id(&third)).await["call_status"], "queued");
    // The first ends: the oldest waiting call is dialled promptly (not at the dial jobs' own
    // re-check, a minute away).
    let ended_at = Instant::now();
    lab.status(&dial, "no-answer", &[]).await;
    let next = lab.dial_of(&id(&second)).await;
    assert!(ended_at.elapsed() < Duration::from_secs(3), "dialled {:?} after", ended_at.elapsed());
    assert_eq!(lab.dials().len(), 2);
    assert_eq!(lab.call(&id(&third)).await["call_status"], "queued");
    lab.status(&next, "busy", &[]).await;
    lab.dial_of(&id(&third)).await;
    assert_eq!(lab.dials().len(), 3);
}

/// Twilio answering 5xx did not place the call: it goes back to the queue and is dialled again
/// (once it succeeds, once only).
async fn a_transient_twilio_error_redials_later(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller"}), |c| c.outbound_dial_recheck_ms = 200).await;
    lab.twilio.fail_next("/Calls.json", 503, None);
    let created = lab.place(CALLEE).await;
    let call_id = created["call_id"].as_str().unwrap();
    let dial = lab.dial_of(call_id).await;
    let call = lab.call_until(call_id, "the SID", |c| c["twilio_call_sid"].is_string()).await;
    assert_eq!(call["twilio_call_sid"], dial.sid.as_str());
    assert_eq!(call["call_status"], "initiated");
    let creates = lab
        .twilio
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
        .count();
    assert_eq!(creates, 2, "refused once, then placed");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(lab.dials().len(), 1);
}

/// The queue is in the database: a call queued before a restart is dialled after it.
async fn queued_calls_survive_a_restart(backend: Backend) {
    let mut lab = lab(backend, json!({"name": "Caller"}), |c| c.max_concurrent_calls = 1).await;
    let first = lab.place("+447386172301").await;
    let second = lab.place("+447386172302").await;
    let dial = lab.dial_of(first["call_id"].as_str().unwrap()).await;
    lab.app.restart().await;
    let second_id = second["call_id"].as_str().unwrap();
    assert_eq!(lab.call(second_id).await["call_status"], "queued");
    lab.status(&dial, "completed", &[("CallDuration", "12")]).await;
    lab.dial_of(second_id).await;
    assert_eq!(lab.dials().len(), 2);
}

/// Two nodes on one database dial each queued call exactly once.
async fn two_nodes_dial_each_queued_call_once(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller"}), |c| c.max_concurrent_calls = 2).await;
    let node = lab.app.spawn_node().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 { lab.app.base.clone() } else { node.base_url() };
        let response = lab
            .app
            .client
            .post(format!("{base}/v1/calls/outbound"))
            .header("authorization", lab.key.bearer())
            .json(&lab.body(&format!("+4473861723{i:02}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        ids.push(created["call_id"].as_str().unwrap().to_owned());
    }
    // End each call as it is dialled; every call is dialled once, two at a time at most.
    let mut ended = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while ended < ids.len() {
        assert!(Instant::now() < deadline, "not all dialled: {:?}", lab.dials());
        let dials = lab.dials();
        let live: Vec<&CallState> = dials.iter().filter(|d| d.status != "completed").collect();
        assert!(live.len() <= 2, "over the cap: {live:?}");
        if let Some(dial) = live.first() {
            lab.status(dial, "completed", &[("CallDuration", "3")]).await;
            lab.twilio.set_call_status(&dial.sid, "completed");
            ended += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let dials = lab.dials();
    assert_eq!(dials.len(), ids.len(), "each call dialled once: {dials:?}");
    for id in &ids {
        let count = dials
            .iter()
            .filter(|d| d.create_param_values("Url")[0].ends_with(&format!("call_id={id}")))
            .count();
        assert_eq!(count, 1, "{id}");
    }
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

async fn a_call_queued_too_long_ends_failed(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller"}), |c| {
        c.max_concurrent_calls = 1;
        c.outbound_queue_timeout_secs = 1;
    })
    .await;
    let first = lab.place("+447386172301").await;
    lab.dial_of(first["call_id"].as_str().unwrap()).await;
    let second = lab.place("+447386172302").await;
    let second_id = second["call_id"].as_str().unwrap();
    let call = lab.call_until(second_id, "given up", |c| c["ended_at"].is_string()).await;
    assert_eq!(call["call_status"], "failed");
    assert_eq!(call["ended_reason"], "failed");
    assert_eq!(call["carrier_details"]["reason"], "queue_timeout", "{call}");
    assert!(call["twilio_call_sid"].is_null());
    assert_eq!(lab.dials().len(), 1, "never dialled");
}

async fn the_list_filters_outbound_calls(backend: Backend) {
    let lab = lab(backend, json!({"name": "Caller"}), |c| c.max_concurrent_calls = 1).await;
    let mut body = lab.body("+447386172301");
    body["campaign_id"] = json!("camp-a");
    assert_eq!(lab.app.post(&lab.key, "/v1/calls/outbound", body).await.status(), 201);
    lab.place("+447386172302").await;
    let count = |query: String| {
        let lab = &lab;
        async move {
            let list: Value =
                lab.app.get(&lab.key, &format!("/v1/calls?{query}")).await.json().await.unwrap();
            list["count"].as_i64().unwrap()
        }
    };
    assert_eq!(count("campaign_id=camp-a".to_owned()).await, 1);
    assert_eq!(count("to_number=%2B447386172302".to_owned()).await, 1);
    assert_eq!(count(format!("from_number={}", NUMBER.replace('+', "%2B"))).await, 2);
    assert_eq!(count("direction=outbound".to_owned()).await, 2);
    // One is dialled (cap 1), the other waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("call_status=initiated".to_owned()).await != 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(count("call_status=queued".to_owned()).await, 1);
}

both!(
    the_request_is_validated_with_documented_codes,
    a_call_is_queued_then_dialled_with_callbacks_and_amd,
    the_caller_id_is_the_given_number_or_the_oldest,
    a_retried_create_returns_the_same_call_and_dials_once,
    unanswered_calls_end_with_the_carriers_outcome,
    a_refused_dial_ends_the_call_failed_with_twilios_error,
    over_the_cap_calls_wait_in_order_until_a_slot_frees,
    a_transient_twilio_error_redials_later,
    queued_calls_survive_a_restart,
    two_nodes_dial_each_queued_call_once,
    a_call_queued_too_long_ends_failed,
    the_list_filters_outbound_calls,
);

mod end_to_end {
    //! Outbound calls placed through the Twilio emulator's scripted callees: the phone network
    //! answers (or not) and sends Twilio's callbacks; Deepgram, Anthropic and Inworld are
    //! emulated.

    use std::time::Duration;

    use nixflex_testkit::anthropic::Reply;
    use nixflex_testkit::twilio::Callee;
    use nixflex_testkit::twilio::caller::{CallEventKind, CallOutcome, CallerScript, EndedBy};
    use serde_json::{Value, json};

    use crate::engine::CallLab;
    use crate::helpers::{Backend, both};

    const CALLEE: &str = "+447386172392";

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    async fn place(lab: &CallLab, to: &str) -> String {
        let response = lab
            .app
            .post(
                &lab.key,
                "/v1/calls/outbound",
                json!({"agent_id": lab.agent_id, "to_number": to,
                       "prompt": "Remind {first_name} about the dentist appointment on Tuesday.",
                       "dynamic_vars": {"first_name": "Sam"}, "metadata": {"lead": 7}}),
            )
            .await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        created["call_id"].as_str().unwrap().to_owned()
    }

    async fn ended(lab: &CallLab, call_id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let call: Value =
                lab.app.get(&lab.key, &format!("/v1/calls/{call_id}")).await.json().await.unwrap();
            if call["ended_at"].is_string() && call["ended_reason"].is_string() {
                return call;
            }
            assert!(std::time::Instant::now() < deadline, "never ended: {call}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn sid_of(lab: &CallLab, call_id: &str) -> String {
        lab.twilio
            .calls()
            .into_iter()
            .find(|c| c.create_param_values("Url").first().is_some_and(|u| u.contains(call_id)))
            .map(|c| c.sid)
            .expect("dialled")
    }

    /// A person answers; the agent, told the purpose and its variables, talks with them and
    /// ends the call; the call is an outbound call that ended `completed`, and its purpose is
    /// erased once its follow-up has run.
    async fn a_human_answered_outbound_call_runs_a_conversation(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava", "response_eagerness": 200})).await;
        lab.stt.push_utterance("Hello, who is this?");
        lab.llm.push_reply(Reply::text(
            "Hi Sam, this is Ava from the dental practice, reminding you of your appointment on Tuesday. Goodbye! [END_CALL]",
        ));
        lab.llm.push_reply(Reply::tool_call(
            nixflex_engine::analysis::TOOL_NAME,
            json!({"call_summary": "Reminded Sam of Tuesday's appointment.", "caller_sentiment": "neutral",
                   "call_successful": true, "extracted_data": {}}),
        ));
        lab.twilio.add_callee(
            CALLEE,
            Callee::human(
                CallerScript::new()
                    .silence(secs(0.3))
                    .say("Hello, who is this?", secs(1.0))
                    .wait_for_agent_speech(secs(10.0))
                    .wait_for_agent_silence(secs(3.0), secs(20.0)),
            ),
        );
        let call_id = place(&lab, CALLEE).await;
        let call = ended(&lab, &call_id).await;
        let sid = sid_of(&lab, &call_id);
        let run = lab.twilio.callee_run(&sid, Duration::from_secs(20)).await.expect("callee ran");
        let recording = run.recording.expect("answered");
        assert_eq!(
            recording.outcome,
            CallOutcome::Completed { ended_by: EndedBy::Server },
            "{:?}",
            recording.events
        );
        assert!(recording.errors().is_empty(), "{:?}", recording.errors());
        assert_eq!(call["direction"], "outbound");
        assert_eq!(call["call_status"], "completed");
        assert_eq!(call["ended_reason"], "completed");
        assert_eq!(call["twilio_call_sid"], sid.as_str());
        assert_eq!(
            (call["from_number"].as_str(), call["to_number"].as_str()),
            (Some(NUMBER), Some(CALLEE))
        );
        let transcript = call["transcript"].to_string();
        assert!(
            transcript.contains("Hello, who is this?") && transcript.contains("Tuesday"),
            "{transcript}"
        );
        // The callee spoke first: the instruction to open rode along with their words.
        let first = lab.llm.requests()[0].body["messages"].to_string();
        assert!(
            first.contains("Introduce yourself") && first.contains("Hello, who is this?"),
            "{first}"
        );
        assert_eq!(call["voicemail_detected"], false);
        assert_eq!(call["voicemail_detection_method"], Value::Null);
        // The purpose, with its variable substituted, reached the model.
        let system = lab.llm.requests()[0].body["system"].to_string();
        assert!(
            system.contains("Remind Sam about the dentist appointment on Tuesday."),
            "{system}"
        );
        // After the follow-up, the sealed purpose is gone.
        lab.follow_up_ran(&call_id).await;
        let store = nixflex_store::open(&lab.app.config.effective_database_url(), 2).await.unwrap();
        let details = store.get_outbound(&call_id.as_str().into()).await.unwrap().unwrap();
        assert!(details.purpose_sealed.is_none(), "the purpose is erased after the follow-up");
    }

    /// An answering machine with the agent's AMD on: Twilio's AMD verdict is stored on the call.
    async fn a_voicemail_callee_gets_its_amd_result_stored(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava", "amd_enabled": true})).await;
        lab.stt.push_utterance("Hi, you've reached Sam. Please leave a message after the tone.");
        lab.llm.push_reply(Reply::text("Hi Sam, please call the practice back. [END_CALL]"));
        lab.twilio.add_callee(
            CALLEE,
            Callee::Voicemail {
                ring_for: secs(0.1),
                greeting: "Hi, you've reached Sam. Please leave a message after the tone."
                    .to_owned(),
                greeting_length: secs(1.5),
                silence: secs(1.0),
            },
        );
        let call_id = place(&lab, CALLEE).await;
        let call = ended(&lab, &call_id).await;
        let sid = sid_of(&lab, &call_id);
        lab.twilio.callee_run(&sid, Duration::from_secs(20)).await.expect("callee ran");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let call = loop {
            let now: Value =
                lab.app.get(&lab.key, &format!("/v1/calls/{call_id}")).await.json().await.unwrap();
            if now["amd_result"].is_string() {
                break now;
            }
            assert!(std::time::Instant::now() < deadline, "no AMD result: {now} (ended: {call})");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(call["amd_result"], "machine_start", "MachineDetection=Enable answers early");
        assert_eq!(call["direction"], "outbound");
    }

    async fn place_with(lab: &CallLab, to: &str, extra: Value) -> String {
        let mut body = json!({"agent_id": lab.agent_id, "to_number": to,
                              "prompt": "Remind {first_name} about the dentist appointment on Tuesday.",
                              "dynamic_vars": {"first_name": "Sam"}});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let response = lab.app.post(&lab.key, "/v1/calls/outbound", body).await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        created["call_id"].as_str().unwrap().to_owned()
    }

    const GREETING: &str = "Hi, you've reached Sam. Please leave a message after the tone.";

    fn voicemail(greeting_length: f64, silence: f64) -> Callee {
        Callee::Voicemail {
            ring_for: secs(0.1),
            greeting: GREETING.to_owned(),
            greeting_length: secs(greeting_length),
            silence: secs(silence),
        }
    }

    /// A callee who says nothing: the agent waits `pickup_delay`, then speaks the opener the
    /// model writes from the purpose.
    async fn a_silent_callee_hears_the_opener_after_the_pickup_delay(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava", "pickup_delay": 5})).await;
        lab.llm.push_reply(Reply::text(
            "Hi Sam, this is Ava from the dental practice about Tuesday's appointment. Goodbye! [END_CALL]",
        ));
        lab.twilio.add_callee(
            CALLEE,
            Callee::human(
                CallerScript::new()
                    .wait_for_agent_speech(secs(15.0))
                    .wait_for_agent_silence(secs(3.0), secs(20.0)),
            ),
        );
        let call_id = place(&lab, CALLEE).await;
        let call = ended(&lab, &call_id).await;
        assert_eq!(call["ended_reason"], "completed", "{call}");
        let sid = sid_of(&lab, &call_id);
        let recording = lab
            .twilio
            .callee_run(&sid, Duration::from_secs(20))
            .await
            .expect("callee ran")
            .recording
            .expect("answered");
        let connected = recording
            .events
            .iter()
            .find(|e| matches!(e.kind, CallEventKind::StreamConnected { .. }))
            .expect("stream connected")
            .at;
        let first_audio = recording.agent_frames.first().expect("the agent spoke").received_at;
        assert!(
            first_audio >= connected + secs(4.8),
            "the agent waited for the callee: connected {connected:?}, spoke {first_audio:?}"
        );
        let request = lab.llm.requests()[0].body["messages"].to_string();
        assert!(request.contains("Introduce yourself"), "{request}");
        assert!(call["transcript"].to_string().contains("Tuesday's appointment"), "{call}");
    }

    /// A voicemail greeting recognised by the phrase matcher: the call hangs up at once, as
    /// `voicemail`, detected from the transcript, and nothing was said.
    async fn a_voicemail_greeting_hangs_up_detected_by_the_transcript(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava"})).await;
        lab.stt.push_utterance(GREETING);
        lab.twilio.add_callee(CALLEE, voicemail(1.5, 10.0));
        let call_id = place(&lab, CALLEE).await;
        let call = ended(&lab, &call_id).await;
        assert_eq!(call["ended_reason"], "voicemail", "{call}");
        assert_eq!(call["call_status"], "completed", "{call}");
        assert_eq!(call["voicemail_detected"], true, "{call}");
        assert_eq!(call["voicemail_detection_method"], "transcript", "{call}");
        let sid = sid_of(&lab, &call_id);
        let run = lab.twilio.callee_run(&sid, Duration::from_secs(20)).await.expect("callee ran");
        let recording = run.recording.expect("answered");
        assert_eq!(recording.outcome, CallOutcome::Completed { ended_by: EndedBy::Server });
        assert!(recording.agent_frames.is_empty(), "nothing is said to a machine");
        // Hung up before the beep and the silence after it.
        assert!(recording.duration < secs(8.0), "{:?}", recording.duration);
        let voicemails = lab.app.get(&lab.key, "/v1/calls?voicemail_detected=true").await;
        let voicemails: Value = voicemails.json().await.unwrap();
        assert_eq!(voicemails["calls"][0]["call_id"], call_id.as_str(), "{voicemails}");
        // The seconds spent detecting the machine are not charged.
        assert!(call["duration_seconds"].as_i64().unwrap() >= 1, "{call}");
        let usage: Value =
            lab.app.get(&lab.key, "/v1/usage?period=all_time").await.json().await.unwrap();
        assert_eq!(usage["calls"]["minutes"], 0.0, "{usage}");
        assert_eq!(usage["total_minutes"], 0.0, "{usage}");
    }

    /// With `amd_enabled`, Twilio's machine verdict ends the call before any phrase is heard.
    async fn a_machine_verdict_from_amd_hangs_up(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava", "amd_enabled": true})).await;
        // No transcript: only AMD can tell (its verdict comes 1.5 s after the answer).
        lab.twilio.add_callee(CALLEE, voicemail(8.0, 5.0));
        let call_id = place(&lab, CALLEE).await;
        let call = ended(&lab, &call_id).await;
        assert_eq!(call["ended_reason"], "voicemail", "{call}");
        assert_eq!(call["voicemail_detected"], true, "{call}");
        assert_eq!(call["voicemail_detection_method"], "amd", "{call}");
        assert_eq!(call["amd_result"], "machine_start", "{call}");
        let sid = sid_of(&lab, &call_id);
        let run = lab.twilio.callee_run(&sid, Duration::from_secs(20)).await.expect("callee ran");
        let recording = run.recording.expect("answered");
        assert!(
            recording.duration < secs(7.0),
            "hung up during the greeting: {:?}",
            recording.duration
        );
    }

    /// `leave_message`: the agent waits for the beep, then speaks the message verbatim, then
    /// hangs up.
    async fn a_message_is_left_after_the_beep(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava"})).await;
        let message = "Hi Sam, this is Ava from the dental practice. Please call us back.";
        lab.stt.push_utterance(GREETING);
        lab.twilio.add_callee(CALLEE, voicemail(1.5, 12.0));
        let call_id = place_with(
            &lab,
            CALLEE,
            json!({"voicemail_action": "leave_message", "voicemail_message": message}),
        )
        .await;
        let call = ended(&lab, &call_id).await;
        assert_eq!(call["ended_reason"], "voicemail", "{call}");
        assert_eq!(call["voicemail_detected"], true, "{call}");
        assert_eq!(call["voicemail_detection_method"], "transcript", "{call}");
        assert!(call["transcript"].to_string().contains(message), "{call}");
        let sid = sid_of(&lab, &call_id);
        let run = lab.twilio.callee_run(&sid, Duration::from_secs(30)).await.expect("callee ran");
        let recording = run.recording.expect("answered");
        assert_eq!(recording.outcome, CallOutcome::Completed { ended_by: EndedBy::Server });
        let beep_ended = recording
            .events
            .iter()
            .find(|e| {
                matches!(&e.kind, CallEventKind::CallerSpeechEnded { label } if label == "tone")
            })
            .expect("the beep played")
            .at;
        assert!(!recording.agent_frames.is_empty(), "the message was spoken");
        assert!(
            recording.agent_frames.iter().all(|f| f.received_at >= beep_ended && !f.cleared),
            "the message came after the beep ({beep_ended:?}): {:?}",
            recording.agent_frames.first()
        );
        // The message is spoken verbatim, without the model.
        assert!(lab.llm.requests().is_empty());
        // Only the message is charged, not the greeting and the wait for the beep.
        let usage: Value =
            lab.app.get(&lab.key, "/v1/usage?period=all_time").await.json().await.unwrap();
        let billed = usage["calls"]["minutes"].as_f64().unwrap() * 60.0;
        let duration = call["duration_seconds"].as_f64().unwrap();
        assert!(billed >= 1.0 && billed < duration, "billed {billed} s of {duration} s: {usage}");
    }

    /// `ignore`: the voicemail is noted but the conversation goes on as with a person.
    async fn ignore_carries_on_after_a_voicemail(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava"})).await;
        lab.stt.push_utterance(GREETING);
        lab.llm.push_reply(Reply::text("Hi Sam, please call the practice back. [END_CALL]"));
        lab.twilio.add_callee(CALLEE, voicemail(1.5, 10.0));
        let call_id = place_with(&lab, CALLEE, json!({"voicemail_action": "ignore"})).await;
        let call = ended(&lab, &call_id).await;
        assert_eq!(call["ended_reason"], "completed", "{call}");
        assert_eq!(call["voicemail_detected"], true, "{call}");
        assert_eq!(call["voicemail_detection_method"], "transcript", "{call}");
        assert!(call["transcript"].to_string().contains("call the practice back"), "{call}");
    }

    /// An inbound call that reaches a voicemail system (a call forwarded to one, a machine
    /// calling back) hangs up cleanly as `voicemail`, without answering the greeting.
    async fn an_inbound_call_from_a_voicemail_system_hangs_up(backend: Backend) {
        let lab = CallLab::start(
            backend,
            json!({"name": "Bella", "welcome_message": "Hello, Bella's Bakery!"}),
        )
        .await;
        lab.stt.push_utterance(GREETING);
        let script = CallerScript::new()
            .wait_for_agent_speech(secs(10.0))
            .wait_for_agent_silence(secs(0.6), secs(15.0))
            .say(GREETING, secs(1.5))
            .silence(secs(10.0));
        let recording = lab.caller.place_inbound_call(lab.place(), script).await;
        assert_eq!(
            recording.outcome,
            CallOutcome::Completed { ended_by: EndedBy::Server },
            "{:?}",
            recording.events
        );
        assert!(recording.duration < secs(10.0), "{:?}", recording.duration);
        assert_eq!(recording.agent_utterances().len(), 1, "the greeting only");
        let call = lab.finished_call().await;
        assert_eq!(call["direction"], "inbound");
        assert_eq!(call["ended_reason"], "voicemail", "{call}");
        assert_eq!(call["voicemail_detected"], true, "{call}");
        assert_eq!(call["voicemail_detection_method"], "transcript", "{call}");
        assert!(lab.llm.requests().is_empty(), "the greeting is not answered");
    }

    /// Callees that never answer: the emulator's callbacks end each call with its outcome.
    async fn scripted_unanswered_callees_end_with_their_outcome(backend: Backend) {
        let lab = CallLab::start(backend, json!({"name": "Ava"})).await;
        for (to, callee, outcome, sip) in [
            ("+447386172301", Callee::Busy, "busy", 486),
            ("+447386172302", Callee::NoAnswer { ring_for: secs(0.2) }, "no-answer", 487),
            ("+447386172303", Callee::Failed, "failed", 404),
        ] {
            lab.twilio.add_callee(to, callee);
            let call_id = place(&lab, to).await;
            let call = ended(&lab, &call_id).await;
            assert_eq!(call["call_status"], outcome, "{call}");
            assert_eq!(call["ended_reason"], outcome, "{call}");
            assert_eq!(call["carrier_details"]["sip_response_code"], sip, "{call}");
            assert_eq!(call["answered_at"], Value::Null);
            lab.follow_up_ran(&call_id).await;
        }
    }

    const NUMBER: &str = "+14155552671";

    both!(
        a_human_answered_outbound_call_runs_a_conversation,
        a_voicemail_callee_gets_its_amd_result_stored,
        scripted_unanswered_callees_end_with_their_outcome,
        a_silent_callee_hears_the_opener_after_the_pickup_delay,
        a_voicemail_greeting_hangs_up_detected_by_the_transcript,
        a_machine_verdict_from_amd_hangs_up,
        a_message_is_left_after_the_beep,
        ignore_carries_on_after_a_voicemail,
        an_inbound_call_from_a_voicemail_system_hangs_up,
    );
}
