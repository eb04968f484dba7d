//! A customer's webhook receiver: records every request (path, headers, raw body) and answers
//! with scripted statuses (200 once the script runs out), so tests can make it fail on demand.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::task::JoinHandle;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path it was sent to.
    pub path: String,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    /// The raw body, as signed.
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    statuses: Mutex<VecDeque<u16>>,
}

/// A running receiver on loopback.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let status = shared.statuses.lock().ok().and_then(|mut s| s.pop_front()).unwrap_or(200);
    if let Ok(mut received) = shared.received.lock() {
        received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body: body.to_vec(),
            status,
            at: std::time::Instant::now(),
        });
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

impl WebhookReceiver {
    /// Starts a receiver on an ephemeral loopback port.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new().fallback(receive).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(crate::nodelay(listener), app).await;
        });
        Ok(Self { addr, shared, server })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests answer these statuses, in order (then 200 again).
    pub fn answer_with(&self, statuses: &[u16]) {
        if let Ok(mut queue) = self.shared.statuses.lock() {
            queue.extend(statuses);
        }
    }

    /// Forgets the scripted statuses still pending: from now on every request gets 200.
    pub fn answer_ok_from_now_on(&self) {
        if let Ok(mut queue) = self.shared.statuses.lock() {
            queue.clear();
        }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
