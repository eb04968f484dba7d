//! The server's metrics (docs/operations.md#metrics): every metric's name, type and labels, and
//! one typed function per thing measured, so the crates that measure (the API's middleware, the
//! engine, the job worker, the recogniser's input) never spell a metric name themselves.
//!
//! Recording goes through the `metrics` facade: without an installed recorder (unit tests, the
//! CLI's admin commands) every function here is a no-op. The binary installs the Prometheus
//! recorder and serves its text (`crates/nixflex/src/metrics.rs`).
//!
//! What this module must not do: take labels that grow without bound (raw paths, ids, phone
//! numbers) or carry secrets. Labels are route templates, enum values and provider or job kind
//! names. Nothing here runs per 20 ms audio frame except [`caller_frame_dropped`], and only when
//! a frame is dropped.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// `nixflex_http_requests_total{method, route, status}` (counter): requests answered.
pub const HTTP_REQUESTS: &str = "nixflex_http_requests_total";
/// `nixflex_http_request_duration_seconds{method, route}` (histogram): time to the response's
/// head.
pub const HTTP_REQUEST_DURATION: &str = "nixflex_http_request_duration_seconds";
/// `nixflex_rate_limit_refusals_total{scope}` (counter): requests refused with 429.
pub const RATE_LIMIT_REFUSALS: &str = "nixflex_rate_limit_refusals_total";
/// `nixflex_calls_active` (gauge): call sessions running on this node.
pub const CALLS_ACTIVE: &str = "nixflex_calls_active";
/// `nixflex_calls_started_total{direction}` (counter): calls whose conversation started here.
pub const CALLS_STARTED: &str = "nixflex_calls_started_total";
/// `nixflex_calls_ended_total{reason}` (counter): call sessions ended, by `ended_reason`.
pub const CALLS_ENDED: &str = "nixflex_calls_ended_total";
/// `nixflex_call_setup_seconds` (histogram): from the media stream's `start` message to the
/// session running (the call, agent, number, history and caller context loaded).
pub const CALL_SETUP: &str = "nixflex_call_setup_seconds";
/// `nixflex_turn_latency_seconds{component}` (histogram): the parts of an answering turn's
/// latency, as the call record's `latencies` has them.
pub const TURN_LATENCY: &str = "nixflex_turn_latency_seconds";
/// `nixflex_dropped_frames_total{direction}` (counter): audio frames dropped.
pub const DROPPED_FRAMES: &str = "nixflex_dropped_frames_total";
/// `nixflex_provider_errors_total{stage, provider, kind}` (counter): failed provider requests.
pub const PROVIDER_ERRORS: &str = "nixflex_provider_errors_total";
/// `nixflex_jobs{kind, state}` (gauge): jobs queued or running, in the whole database, read
/// when scraped.
pub const JOBS: &str = "nixflex_jobs";
/// `nixflex_job_attempts_total{kind, outcome}` (counter): job attempts run by this node.
pub const JOB_ATTEMPTS: &str = "nixflex_job_attempts_total";

/// `nixflex_log_lines_dropped_total` (counter): log lines dropped because the log's writer fell
/// 128,000 lines behind (docs/operations.md#logs), read when scraped.
pub const LOG_LINES_DROPPED: &str = "nixflex_log_lines_dropped_total";

/// Histogram buckets (seconds) of HTTP requests and call set-up.
pub const REQUEST_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Histogram buckets (seconds) of turn latency components: fine where the engine's own share
/// lives (milliseconds), coarse where the providers' does.
pub const TURN_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0];

/// Gives every metric its help text and unit, and creates the series whose labels are known in
/// advance; call once after installing a recorder.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by method, matched route template and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request latency to the response head, by method and matched route template."
    );
    describe_counter!(
        RATE_LIMIT_REFUSALS,
        Unit::Count,
        "Requests refused by a rate limit (429), by the limit's scope: account or client_ip."
    );
    describe_gauge!(CALLS_ACTIVE, Unit::Count, "Call sessions running on this node.");
    describe_counter!(
        CALLS_STARTED,
        Unit::Count,
        "Calls whose conversation started on this node, by direction."
    );
    describe_counter!(
        CALLS_ENDED,
        Unit::Count,
        "Call sessions ended on this node, by ended_reason."
    );
    describe_histogram!(
        CALL_SETUP,
        Unit::Seconds,
        "From the media stream's start message to the session running."
    );
    describe_histogram!(
        TURN_LATENCY,
        Unit::Seconds,
        "Answering turns' latency by component: end_of_turn, stt, llm_first_token, tts_first_byte, engine_overhead, total."
    );
    describe_counter!(
        DROPPED_FRAMES,
        Unit::Count,
        "Audio frames dropped, by direction (caller: not passed to the recogniser because it fell behind)."
    );
    describe_counter!(
        PROVIDER_ERRORS,
        Unit::Count,
        "Failed provider requests, by stage (llm, stt, tts), provider and error kind."
    );
    describe_gauge!(
        JOBS,
        Unit::Count,
        "Jobs queued or running in the database (all nodes), by kind and state; read when scraped."
    );
    describe_counter!(
        JOB_ATTEMPTS,
        Unit::Count,
        "Job attempts run by this node, by kind and outcome (done, retry, dead, deferred, lost)."
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        Unit::Count,
        "Log lines dropped because whatever reads the log fell too far behind; requests and calls never wait for the log."
    );
    // Series with a fixed label set exist from the start (at 0), so dashboards and alerts see
    // them before the first call or refusal.
    counter!(LOG_LINES_DROPPED).increment(0);
    gauge!(CALLS_ACTIVE).increment(0.0);
    for direction in ["inbound", "outbound"] {
        counter!(CALLS_STARTED, "direction" => direction).increment(0);
    }
    counter!(DROPPED_FRAMES, "direction" => "caller").increment(0);
    for scope in ["account", "client_ip"] {
        counter!(RATE_LIMIT_REFUSALS, "scope" => scope).increment(0);
    }
}

/// The log's writer has dropped `total` lines since the process started.
pub fn set_log_lines_dropped(total: u64) {
    counter!(LOG_LINES_DROPPED).absolute(total);
}

/// A request was answered. `route` is the matched route template (`"unmatched"` when none).
pub fn http_request(method: &str, route: &str, status: u16, latency: Duration) {
    counter!(
        HTTP_REQUESTS,
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
    histogram!(HTTP_REQUEST_DURATION, "method" => method.to_owned(), "route" => route.to_owned())
        .record(latency.as_secs_f64());
}

/// Who a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// An account's reads or writes.
    Account,
    /// A client IP's unauthenticated requests or sign-ups.
    ClientIp,
}

/// A request was refused by a rate limit.
pub fn rate_limit_refused(scope: RateLimitScope) {
    let scope = match scope {
        RateLimitScope::Account => "account",
        RateLimitScope::ClientIp => "client_ip",
    };
    counter!(RATE_LIMIT_REFUSALS, "scope" => scope).increment(1);
}

/// Counts a call session in [`CALLS_ACTIVE`] while it lives.
#[derive(Debug)]
#[must_use = "the session is counted as active while this lives"]
pub struct ActiveCall(());

impl Drop for ActiveCall {
    fn drop(&mut self) {
        gauge!(CALLS_ACTIVE).decrement(1.0);
    }
}

/// A call session started on this node; `first_stream` is false for a caller returning from a
/// failed transfer (the same call, already counted as started). `direction` is `inbound` or
/// `outbound`; `setup` is how long the session took to load.
pub fn call_session_started(
    direction: &'static str,
    first_stream: bool,
    setup: Duration,
) -> ActiveCall {
    gauge!(CALLS_ACTIVE).increment(1.0);
    if first_stream {
        counter!(CALLS_STARTED, "direction" => direction).increment(1);
        histogram!(CALL_SETUP).record(setup.as_secs_f64());
    }
    ActiveCall(())
}

/// A call session ended with `reason` (the API's `ended_reason` value).
pub fn call_session_ended(reason: &'static str) {
    counter!(CALLS_ENDED, "reason" => reason).increment(1);
}

/// An answering turn's latency components, in milliseconds (as the call record has them).
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnLatencyMs {
    /// The caller's end of speech → the end of their turn decided.
    pub end_of_turn: f64,
    /// The caller's end of speech → the final transcript.
    pub stt: f64,
    /// The LLM request → its first token.
    pub llm_first_token: f64,
    /// The first sentence → its first audio from speech synthesis.
    pub tts_first_byte: f64,
    /// What the engine itself added.
    pub engine_overhead: f64,
    /// The caller's end of speech → the first agent audio frame sent.
    pub total: f64,
}

impl TurnLatencyMs {
    /// Records each component in [`TURN_LATENCY`].
    pub fn record(&self) {
        let seconds = |ms: f64| (ms / 1000.0).max(0.0);
        histogram!(TURN_LATENCY, "component" => "end_of_turn").record(seconds(self.end_of_turn));
        histogram!(TURN_LATENCY, "component" => "stt").record(seconds(self.stt));
        histogram!(TURN_LATENCY, "component" => "llm_first_token")
            .record(seconds(self.llm_first_token));
        histogram!(TURN_LATENCY, "component" => "tts_first_byte")
            .record(seconds(self.tts_first_byte));
        histogram!(TURN_LATENCY, "component" => "engine_overhead")
            .record(seconds(self.engine_overhead));
        histogram!(TURN_LATENCY, "component" => "total").record(seconds(self.total));
    }
}

/// A caller audio frame was dropped before the recogniser (its input queue was full). An atomic
/// increment on a counter with static labels: cheap enough for the audio path.
pub fn caller_frame_dropped() {
    counter!(DROPPED_FRAMES, "direction" => "caller").increment(1);
}

/// A provider request failed. `kind` is a short snake_case error class (`timeout`, `upstream`,
/// …); `provider` is the provider's name in the chain (e.g. `deepgram`).
pub fn provider_error(stage: &'static str, provider: &str, kind: &'static str) {
    counter!(PROVIDER_ERRORS, "stage" => stage, "provider" => provider.to_owned(), "kind" => kind)
        .increment(1);
}

/// Sets the number of jobs of `kind` in `state` (`queued` or `running`).
pub fn set_jobs(kind: &str, state: &'static str, count: i64) {
    #[allow(clippy::cast_precision_loss)] // a job count is far below 2^52
    gauge!(JOBS, "kind" => kind.to_owned(), "state" => state).set(count as f64);
}

/// How a job attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The handler succeeded.
    Done,
    /// It failed and will be retried.
    Retry,
    /// It failed for good (permanent error or the last attempt).
    Dead,
    /// It asked to run again later (the attempt does not count).
    Deferred,
    /// Its outcome could not be recorded (the lease was lost, or the store failed).
    Lost,
}

/// A job attempt of `kind` ended (`webhook.deliver` is each webhook delivery attempt).
pub fn job_attempt(kind: &str, outcome: JobOutcome) {
    let outcome = match outcome {
        JobOutcome::Done => "done",
        JobOutcome::Retry => "retry",
        JobOutcome::Dead => "dead",
        JobOutcome::Deferred => "deferred",
        JobOutcome::Lost => "lost",
    };
    counter!(JOB_ATTEMPTS, "kind" => kind.to_owned(), "outcome" => outcome).increment(1);
}
