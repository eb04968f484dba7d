//! `GET /metrics` (docs/operations.md#metrics): scraped from the separate `metrics_listen`
//! listener during and after a call driven by the caller emulator; hidden on the public listener
//! unless its bearer token is configured.
//!
//! The metrics recorder is one per process. nextest runs every test in its own process, and the
//! assertions compare scrapes taken before and after, so other servers of the same process
//! (under `cargo test`) would not make them pass by accident.

use std::time::{Duration, Instant};

use nixflex_testkit::anthropic::{Fault as LlmFault, Reply};
use nixflex_testkit::twilio::caller::{CallOutcome, CallerScript, EndedBy};
use secrecy::SecretString;
use serde_json::json;

use crate::engine::CallLab;
use crate::helpers::{Backend, TestApp, both, expect_error};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A scrape's samples: `name{labels}` → value.
struct Scrape(String);

impl Scrape {
    /// The value of the series written exactly `series` (0 when absent: a counter not yet
    /// incremented).
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse::<f64>().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    fn has_line_starting(&self, prefix: &str) -> bool {
        self.0.lines().any(|line| line.starts_with(prefix))
    }
}

async fn scrape(base: &str) -> Scrape {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    Scrape(response.text().await.unwrap())
}

/// Scrapes the public listener with the `metrics_token` bearer token.
async fn scrape_public(app: &TestApp, token: &str) -> Scrape {
    let response = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    Scrape(response.text().await.unwrap())
}

/// Scrapes until `ready` holds (the engine updates the metrics as the call goes; nothing here
/// sleeps a guessed time).
async fn scrape_until(base: &str, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let scraped = scrape(base).await;
        if ready(&scraped) {
            return scraped;
        }
        assert!(Instant::now() < deadline, "{what} never showed in /metrics:\n{}", scraped.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ACTIVE: &str = "nixflex_calls_active";
const STARTED: &str = "nixflex_calls_started_total{direction=\"inbound\"}";
const TOTAL_TURNS: &str = "nixflex_turn_latency_seconds_count{component=\"total\"}";

async fn a_call_is_counted_while_it_runs_and_by_its_end_reason(backend: Backend) {
    let lab = CallLab::start_with(
        backend,
        json!({"name": "Bella", "welcome_message": "Hello, Bella's Bakery!", "response_eagerness": 200}),
        |c| c.metrics_listen = Some("127.0.0.1:0".to_owned()),
    )
    .await;
    let server = lab.app.server.as_ref().unwrap();
    let metrics = format!("http://{}", server.metrics_addr.expect("the metrics listener is bound"));
    let before = scrape(&metrics).await;

    lab.stt.push_utterance("Do you have croissants today?");
    lab.llm.push_reply(Reply::text("Yes, we bake fresh croissants every morning."));
    let script = CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.6), secs(15.0))
        .say("Do you have croissants today?", secs(1.2))
        .wait_for_agent_speech(secs(10.0))
        // Held open until the test hangs up.
        .silence(secs(60.0));
    let call = lab.caller.start_inbound_call(lab.place(), script);

    // During the call: one more active call, one more started, and the answer's latency.
    let during = scrape_until(&metrics, "the call and its answering turn", |s| {
        s.value(ACTIVE) >= before.value(ACTIVE) + 1.0
            && s.value(TOTAL_TURNS) >= before.value(TOTAL_TURNS) + 1.0
    })
    .await;
    assert_eq!(during.value(ACTIVE), before.value(ACTIVE) + 1.0, "{}", during.0);
    assert_eq!(during.value(STARTED), before.value(STARTED) + 1.0, "{}", during.0);
    assert!(during.value("nixflex_call_setup_seconds_count") >= 1.0, "{}", during.0);

    call.hang_up();
    let recording = call.finish().await.unwrap();
    assert_eq!(recording.outcome, CallOutcome::Completed { ended_by: EndedBy::Caller });
    let finished = lab.finished_call().await;
    let reason = finished["ended_reason"].as_str().unwrap().to_owned();
    assert_eq!(reason, "caller_hangup");

    // After: no longer active, counted by its end reason; the turn's components are histograms.
    let ended = format!("nixflex_calls_ended_total{{reason=\"{reason}\"}}");
    let after =
        scrape_until(&metrics, "the call's end", |s| s.value(&ended) >= before.value(&ended) + 1.0)
            .await;
    assert_eq!(after.value(ACTIVE), before.value(ACTIVE), "{}", after.0);
    assert_eq!(after.value(&ended), before.value(&ended) + 1.0, "{}", after.0);
    for component in
        ["end_of_turn", "stt", "llm_first_token", "tts_first_byte", "engine_overhead", "total"]
    {
        let count = format!("nixflex_turn_latency_seconds_count{{component=\"{component}\"}}");
        assert!(after.value(&count) >= 1.0, "{component}: {}", after.0);
        assert!(
            after.has_line_starting(&format!(
                "nixflex_turn_latency_seconds_bucket{{component=\"{component}\",le=\"0.1\"}}"
            )),
            "{component} is a histogram with buckets: {}",
            after.0
        );
    }
    assert!(
        after.has_line_starting("# TYPE nixflex_turn_latency_seconds histogram"),
        "{}",
        after.0
    );

    // HTTP requests are labelled by route template, never by the path with its ids.
    let call_id = finished["call_id"].as_str().unwrap();
    assert!(
        after.value(
            "nixflex_http_requests_total{method=\"GET\",route=\"/v1/calls/{call_id}\",status=\"200\"}"
        ) >= 1.0,
        "{}",
        after.0
    );
    assert!(
        after.value(
            "nixflex_http_requests_total{method=\"POST\",route=\"/twilio/voice\",status=\"200\"}"
        ) >= 1.0,
        "{}",
        after.0
    );
    assert!(
        after.has_line_starting(
            "nixflex_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/calls\""
        ),
        "{}",
        after.0
    );
    assert!(!after.0.contains(call_id), "no ids in labels");
    assert!(!after.0.contains(&lab.key.secret), "no secrets");
    // The call's follow-up ran on this node's worker: its attempt is counted.
    lab.follow_up_ran(call_id).await;
    let job_done = "nixflex_job_attempts_total{kind=\"call.ended\",outcome=\"done\"}";
    scrape_until(&metrics, "the follow-up's attempt", |s| s.value(job_done) >= 1.0).await;

    // The public listener does not serve it.
    let public = lab.app.client.get(lab.app.url("/metrics")).send().await.unwrap();
    expect_error(public, 404, "route_not_found").await;
}

async fn the_public_listener_serves_metrics_only_with_the_token(backend: Backend) {
    let token = "scrape-token-0123456789abcdef";
    let app = TestApp::spawn_with(backend, |c| {
        c.metrics_token = Some(SecretString::from(token.to_owned()));
        c.rate_limit_reads_per_minute = 1;
    })
    .await;
    assert!(app.server.as_ref().unwrap().metrics_addr.is_none());
    let fresh = scrape_public(&app, token).await;
    assert!(
        fresh.has_line_starting("nixflex_calls_active 0"),
        "present before any call: {}",
        fresh.0
    );
    // Some traffic to count, including a refused one.
    let key = app.signup().await;
    assert_eq!(app.get(&key, "/v1/agents").await.status(), 200);
    assert_eq!(app.get(&key, "/v1/agents").await.status(), 429);
    // Two jobs waiting in the queue (not due for an hour): the depth is read when scraped.
    let secrets = nixflex::server::load_master_key(&app.config).unwrap();
    let store = nixflex::server::open_store(&app.config, &secrets).await.unwrap();
    for n in 0..2 {
        let mut job = nixflex_store::NewJob::new("metrics.test", &n.to_string(), json!({}), 1);
        job.run_at = nixflex_store::now() + chrono::Duration::hours(1);
        assert!(store.enqueue_job(&job).await.unwrap());
    }

    let missing = app.client.get(app.url("/metrics")).send().await.unwrap();
    expect_error(missing, 404, "route_not_found").await;
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", "Bearer scrape-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    expect_error(wrong, 404, "route_not_found").await;
    let as_api_key =
        app.request(reqwest::Method::GET, "/metrics", Some(&key)).send().await.unwrap();
    expect_error(as_api_key, 404, "route_not_found").await;

    let text = scrape_public(&app, token).await;
    assert!(
        text.value(
            "nixflex_http_requests_total{method=\"GET\",route=\"/v1/agents\",status=\"200\"}"
        ) >= 1.0,
        "{}",
        text.0
    );
    assert!(
        text.value(
            "nixflex_http_requests_total{method=\"POST\",route=\"/v1/keys\",status=\"201\"}"
        ) >= 1.0,
        "{}",
        text.0
    );
    assert_eq!(
        text.value("nixflex_rate_limit_refusals_total{scope=\"account\"}"),
        1.0,
        "{}",
        text.0
    );
    assert_eq!(
        text.value("nixflex_jobs{kind=\"metrics.test\",state=\"queued\"}"),
        2.0,
        "{}",
        text.0
    );
    assert!(text.has_line_starting("# TYPE nixflex_http_request_duration_seconds histogram"));
    assert!(!text.0.contains(token));
}

async fn without_metrics_options_the_public_listener_answers_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert!(app.server.as_ref().unwrap().metrics_addr.is_none());
    let response = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", "Bearer anything-at-all-here")
        .send()
        .await
        .unwrap();
    expect_error(response, 404, "route_not_found").await;
}

async fn a_provider_failure_is_counted_by_stage_provider_and_kind(backend: Backend) {
    let lab = CallLab::start_with(backend, json!({"welcome_message": "Hello!"}), |c| {
        c.metrics_listen = Some("127.0.0.1:0".to_owned())
    })
    .await;
    let metrics = format!("http://{}", lab.app.server.as_ref().unwrap().metrics_addr.unwrap());
    let series =
        "nixflex_provider_errors_total{stage=\"llm\",provider=\"anthropic\",kind=\"upstream\"}";
    let before = scrape(&metrics).await.value(series);
    lab.stt.push_utterance("Are you open on Sunday?");
    // Anthropic's `overloaded_error` (a 529): retried at once, and counted.
    lab.llm.push_fault(LlmFault::MidStreamError {
        after_deltas: 0,
        error_type: "overloaded_error".to_owned(),
    });
    lab.llm.push_reply(Reply::text("Yes, from nine to one. Bye! [END_CALL]"));
    let script = CallerScript::new()
        .wait_for_agent_speech(secs(10.0))
        .wait_for_agent_silence(secs(0.6), secs(10.0))
        .say("Are you open on Sunday?", secs(1.0));
    let recording = lab.caller.place_inbound_call(lab.place(), script).await;
    assert_eq!(recording.outcome, CallOutcome::Completed { ended_by: EndedBy::Server });
    let after = scrape(&metrics).await;
    assert_eq!(after.value(series), before + 1.0, "{}", after.0);
}

/// A log reader that has stopped: the writer thread's first write never returns.
struct StuckReader(std::sync::mpsc::Receiver<()>);

impl std::io::Write for StuckReader {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Returns once the test is over (its sender dropped).
        let _ = self.0.recv();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_dropped_behind_a_stuck_reader_are_counted() {
    use std::io::Write as _;
    // The server's log goes through a writer thread with a bounded hand-over
    // (docs/operations.md#logs); lines that do not fit are dropped, and counted.
    let (_hold, stuck) = std::sync::mpsc::channel::<()>();
    let (mut writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4)
        .lossy(true)
        .finish(StuckReader(stuck));
    nixflex::metrics::watch_log_drops(writer.error_counter());
    for n in 0..50 {
        // One write, one line (as the log's formatter hands them over).
        writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
    }
    let token = "scrape-token-0123456789abcdef";
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.metrics_token = Some(SecretString::from(token.to_owned()));
    })
    .await;
    let scraped = scrape_public(&app, token).await;
    let dropped = scraped.value("nixflex_log_lines_dropped_total");
    // A line or so is with the stuck writer, four wait in the hand-over: the rest dropped.
    assert!((44.0..=46.0).contains(&dropped), "{dropped} dropped:\n{}", scraped.0);
    // The writer thread stays stuck; don't wait for it.
    std::mem::forget(guard);
}

both!(
    a_call_is_counted_while_it_runs_and_by_its_end_reason,
    a_provider_failure_is_counted_by_stage_provider_and_kind,
    the_public_listener_serves_metrics_only_with_the_token,
    without_metrics_options_the_public_listener_answers_404,
);
