//! `GET /metrics` in the Prometheus text format (docs/operations.md#metrics,
//! docs/decisions.md#metrics-endpoint): the process-wide Prometheus recorder that the `nixflex_metrics`
//! functions record into, the job queue's depth and the log's dropped lines read when scraped,
//! and the two ways to reach it — a separate `metrics_listen` listener, or the public listener
//! with the `metrics_token` bearer token. Without either, the public listener answers `/metrics`
//! with the ordinary 404 envelope.
//!
//! The recorder is global (the `metrics` facade has one per process), so servers started in
//! one process (tests) share their counters; each scrape renders them all.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nixflex_api::error::ApiError;
use nixflex_core::error::ErrorCode;
use nixflex_store::Store;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histograms are compacted when nobody scrapes (the exporter's upkeep).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder of this process: installed by the first server that starts; `None` when
/// another recorder was installed first (then `/metrics` renders nothing of ours).
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The log writer's count of dropped lines, when this process logs through one
/// (`nixflex serve`; docs/operations.md#logs).
static LOG_DROPS: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// Makes scrapes report how many log lines `counter`'s writer has dropped
/// (`nixflex_log_lines_dropped_total`). The first writer watched is the one reported.
pub fn watch_log_drops(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPS.set(counter);
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(nixflex_metrics::HTTP_REQUEST_DURATION.to_owned()),
                    nixflex_metrics::REQUEST_BUCKETS,
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(nixflex_metrics::CALL_SETUP.to_owned()),
                        nixflex_metrics::REQUEST_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(nixflex_metrics::TURN_LATENCY.to_owned()),
                        nixflex_metrics::TURN_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    nixflex_metrics::describe();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(message = "The metrics recorder could not be installed; /metrics stays empty.", error = %error);
                    None
                }
            }
        })
        .clone()
}

/// What a scrape renders.
#[derive(Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
    store: Arc<dyn Store>,
    /// The (kind, state) pairs of the job gauge set so far, so a kind whose queue emptied is
    /// reported as 0 rather than keeping its last value.
    job_series: Arc<Mutex<HashSet<(String, &'static str)>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("installed", &self.handle.is_some()).finish_non_exhaustive()
    }
}

impl Metrics {
    /// The process's recorder (installed now if it is not yet) and the store the job gauges
    /// are read from.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { handle: recorder(), store, job_series: Arc::default() }
    }

    /// Compacts the histograms every few seconds until `stop` is cancelled (the exporter has no
    /// task of its own without its HTTP listener).
    pub fn spawn_upkeep(&self, stop: CancellationToken) {
        let Some(handle) = self.handle.clone() else { return };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
                }
            }
        });
    }

    /// The text of a scrape: the job gauges refreshed from the store, then everything rendered.
    pub async fn render(&self) -> String {
        self.refresh_job_gauges().await;
        if let Some(drops) = LOG_DROPS.get() {
            nixflex_metrics::set_log_lines_dropped(
                u64::try_from(drops.dropped_lines()).unwrap_or(u64::MAX),
            );
        }
        self.handle.as_ref().map(PrometheusHandle::render).unwrap_or_default()
    }

    async fn refresh_job_gauges(&self) {
        let depth = match self.store.job_queue_depth().await {
            Ok(depth) => depth,
            Err(error) => {
                // The previous values stay; the scrape still answers.
                tracing::warn!(message = "Reading the job queue's depth for /metrics failed.", error = %error);
                return;
            }
        };
        let Ok(mut seen) = self.job_series.lock() else { return };
        let mut current = HashSet::with_capacity(depth.len());
        for (kind, state, count) in depth {
            nixflex_metrics::set_jobs(&kind, state.as_str(), count);
            current.insert((kind, state.as_str()));
        }
        for (kind, state) in seen.difference(&current) {
            nixflex_metrics::set_jobs(kind, state, 0);
        }
        seen.extend(current);
    }

    /// The router of the separate `metrics_listen` listener: `GET /metrics` and nothing else.
    pub fn listener_router(self) -> Router {
        Router::new().route("/metrics", get(scrape)).fallback(not_found).with_state(self)
    }

    /// The route added to the public router (behind its middleware) when `metrics_token` is
    /// set: `GET /metrics` with `Authorization: Bearer <metrics_token>`; without it, the usual
    /// 404.
    pub fn public_route<S: Clone + Send + Sync + 'static>(self, token: SecretString) -> Router<S> {
        Router::new()
            .route("/metrics", get(scrape_with_token))
            .with_state(TokenGuarded { metrics: self, token: Arc::new(token) })
    }
}

#[derive(Clone)]
struct TokenGuarded {
    metrics: Metrics,
    token: Arc<SecretString>,
}

async fn scrape(State(metrics): State<Metrics>) -> Response {
    text(metrics.render().await)
}

async fn scrape_with_token(State(guarded): State<TokenGuarded>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = guarded.token.expose_secret().as_bytes();
    if bool::from(presented.as_bytes().ct_eq(expected)) {
        text(guarded.metrics.render().await)
    } else {
        // As if the route did not exist: a scanner learns nothing (docs/operations.md#metrics).
        not_found().await
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))], body).into_response()
}

/// The 404 envelope `normalize_errors` gives unknown routes.
async fn not_found() -> Response {
    ApiError::new(
        ErrorCode::RouteNotFound,
        "No route matches this path. See GET /v1/openapi.json for the API reference.",
    )
    .into_response()
}
