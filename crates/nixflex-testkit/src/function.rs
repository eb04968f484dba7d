//! A customer's custom-function endpoint: records every request (path, headers, raw body, so a
//! test can verify the signature itself) and answers as scripted — at once, after a delay, with
//! an error status, or never — one [`Answer`] per request in order, then the default answer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use crate::webhook::Received;

/// How the endpoint answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Answer `status` with the JSON `body` after `delay`.
    Json {
        /// The HTTP status.
        status: u16,
        /// The JSON body.
        body: Value,
        /// How long to wait before answering.
        delay: Duration,
    },
    /// Never answer (the request hangs until the client gives up).
    Never,
}

impl Answer {
    /// `200 {"result": result}` at once.
    pub fn result(result: impl Into<Value>) -> Self {
        Self::Json { status: 200, body: json!({ "result": result.into() }), delay: Duration::ZERO }
    }

    /// `200 {"result": result}` after `delay`.
    pub fn slow(result: impl Into<Value>, delay: Duration) -> Self {
        Self::Json { status: 200, body: json!({ "result": result.into() }), delay }
    }

    /// `status {"error": "…"}` at once.
    pub fn status(status: u16) -> Self {
        Self::Json { status, body: json!({ "error": "scripted failure" }), delay: Duration::ZERO }
    }
}

#[derive(Debug)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
    arrived: tokio::sync::Notify,
}

/// A running function endpoint on loopback; stops when dropped.
#[derive(Debug)]
pub struct FunctionEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scripted = shared.script.lock().ok().and_then(|mut script| script.pop_front());
    let answer = scripted.unwrap_or_else(|| {
        shared.default.lock().map(|a| a.clone()).unwrap_or_else(|_| Answer::result("ok"))
    });
    let status = match &answer {
        Answer::Json { status, .. } => *status,
        Answer::Never => 0,
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    if let Ok(mut received) = shared.received.lock() {
        received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body: body.to_vec(),
            status,
            at: std::time::Instant::now(),
        });
    }
    shared.arrived.notify_waiters();
    match answer {
        Answer::Json { status, body, delay } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Answer::Never => std::future::pending().await,
    }
}

impl FunctionEndpoint {
    /// Starts an endpoint on an ephemeral loopback port; it answers `200 {"result": "ok"}` until
    /// scripted otherwise.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Answer::result("ok")),
            arrived: tokio::sync::Notify::new(),
        });
        let app = axum::Router::new().fallback(answer).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(crate::nodelay(listener), app).await;
        });
        Ok(Self { addr, shared, server })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request gets `answer` (answers queue in order).
    pub fn push(&self, answer: Answer) {
        if let Ok(mut script) = self.shared.script.lock() {
            script.push_back(answer);
        }
    }

    /// Requests beyond the script get `answer`.
    pub fn set_default(&self, answer: Answer) {
        if let Ok(mut default) = self.shared.default.lock() {
            *default = answer;
        }
    }

    /// Every request so far, in arrival order (`status` 0: not answered by design).
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until at least `n` requests arrived or `timeout` passed; returns how many did.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let count = self.received().len();
            if count >= n {
                return count;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.received().len();
            }
        }
    }
}

impl Drop for FunctionEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}
