//! Accepting client connections with the limits a public listener needs
//! (docs/security.md#connection-limits):
//!
//! - a **header read timeout**: a client that does not finish sending a request's headers in
//!   time (or leaves a keep-alive connection idle that long) is disconnected, so connections that
//!   never finish their headers cannot pile up;
//! - a **connection cap**: past `max_connections` open connections (HTTP and WebSocket alike), a
//!   new connection is answered at once with `503 service_unavailable` in the error envelope and
//!   closed, instead of waiting in the kernel's queue or exhausting file descriptors;
//! - the process's **open-file limit** raised to its hard limit at start, with the cap kept
//!   below it (calls also need descriptors for provider sockets and the database).
//!
//! Each connection is served by hyper's HTTP/1.1 server (with upgrades, for the media
//! WebSocket) and stops gracefully when the server shuts down.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use nixflex_api::error::ApiError;
use nixflex_core::error::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Limits applied to every client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest time to receive a request's headers (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// Most open connections; more are refused with 503.
    pub max_connections: usize,
}

/// Raises the soft open-file limit to the hard limit and returns the limit now in force
/// (`None` where the platform has no such limit or it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => Some(limit),
            Err(error) => {
                tracing::warn!(message = "Could not raise the open-file limit.", error = %error);
                rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap in force: the configured one, but at most half the open-file limit, since
/// a call's connection comes with outgoing sockets (speech recognition, the LLM, speech
/// synthesis) and the database pool needs descriptors too.
pub fn effective_max_connections(configured: usize, open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) => {
            let half = usize::try_from(limit / 2).unwrap_or(usize::MAX);
            configured.min(half).max(1)
        }
        None => configured,
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets open requests finish.
/// Returns the tracker of connection tasks, so the caller can wait for them (with its grace).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> TaskTracker {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let mut refused_logged_at: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept: back off
                // briefly instead of spinning; existing connections keep being served.
                tracing::warn!(message = "Accepting a connection failed.", error = %error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Media frames are small and paced: Nagle's algorithm would hold them for the peer's ACK.
        let _ = tcp.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(serve_connection(tcp, peer, app, limits, shutdown, permit));
            }
            Err(_) => {
                let now = tokio::time::Instant::now();
                if refused_logged_at.is_none_or(|at| now - at > Duration::from_secs(10)) {
                    refused_logged_at = Some(now);
                    tracing::warn!(
                        message = "Connection cap reached; refusing new connections with 503.",
                        max_connections = limits.max_connections
                    );
                }
                tracker.spawn(refuse(tcp));
            }
        }
    }
    tracker.close();
    tracker
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let service = app.map_request(move |mut request: axum::extract::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    // The permit travels with the socket, so an upgraded WebSocket keeps its slot until it closes.
    let io = TokioIo::new(Counted { inner: tcp, _permit: permit });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(message = "Connection ended with an error.", error = %error);
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            if let Err(error) = connection.await {
                tracing::debug!(message = "Connection ended with an error during shutdown.", error = %error);
            }
        }
    }
}

/// Answers a connection over the cap with a complete 503 response, then closes it.
async fn refuse(mut tcp: TcpStream) {
    let body = ApiError::new(
        ErrorCode::ServiceUnavailable,
        "The server has reached its connection limit; retry shortly.",
    )
    .body()
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Never wait on a client that does not read.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

/// A socket that holds a connection slot for as long as it is open.
struct Counted {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_under_half_the_open_file_limit() {
        assert_eq!(effective_max_connections(20_000, Some(1024)), 512);
        assert_eq!(effective_max_connections(100, Some(1_048_576)), 100);
        assert_eq!(effective_max_connections(100, None), 100);
        assert_eq!(effective_max_connections(100, Some(1)), 1);
    }
}
