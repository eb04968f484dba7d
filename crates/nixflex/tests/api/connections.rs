//! Connection handling under abuse (docs/security.md#connection-limits): clients that never
//! finish their headers are disconnected, a connection cap refuses the excess with the error
//! envelope, the open-file limit is raised at start, and `/healthz` keeps answering throughout.
//! These rules belong to the listener, not the store, so they run on SQLite only.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, on_backend};

/// Opens a connection that starts a request and never finishes its headers.
async fn half_open(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    tcp
}

/// Reads until the server closes the connection (or `deadline` passes, which fails the test).
async fn read_until_closed(tcp: &mut TcpStream, deadline: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    received
}

async fn health_answers_while_hundreds_of_clients_never_finish_their_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.header_read_timeout_ms = 1_500).await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        stalled.push(half_open(&app).await);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for _ in 0..5 {
        let health = client.get(format!("{}/healthz", app.base)).send().await.unwrap();
        assert_eq!(health.status(), 200);
    }
    // Every stalled connection is dropped by the header read timeout, not held forever.
    for tcp in &mut stalled {
        read_until_closed(tcp, Duration::from_secs(15)).await;
    }
    let health = client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

async fn connections_over_the_cap_get_503_in_the_envelope(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.max_connections = 20;
        c.header_read_timeout_ms = 1_000;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_open(&app).await);
    }
    let addr = app.base.trim_start_matches("http://");
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert_eq!(body["error"]["type"], "server_error");
    // Once the stalled clients are timed out, their slots serve again.
    for tcp in &mut held {
        read_until_closed(tcp, Duration::from_secs(10)).await;
    }
    let health = app.request(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

async fn the_open_file_limit_is_raised_to_the_hard_limit_at_start(backend: Backend) {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let lowered = hard.min(512);
    // Each test runs in its own process (nextest), so lowering the limit here affects no other.
    rlimit::setrlimit(rlimit::Resource::NOFILE, lowered, hard).unwrap();
    assert!(lowered <= soft);
    let app = TestApp::spawn(backend).await;
    let (now, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert_eq!(now, hard, "the soft limit is raised to the hard limit");
    let health = app.request(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

on_backend!(
    sqlite,
    Sqlite,
    health_answers_while_hundreds_of_clients_never_finish_their_headers,
    connections_over_the_cap_get_503_in_the_envelope,
    the_open_file_limit_is_raised_to_the_hard_limit_at_start,
);
