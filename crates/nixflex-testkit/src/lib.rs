//! Emulators of the external services and test helpers, used by tests, `nixflex demo` and the
//! benchmarks. Each emulator speaks the provider's public protocol.

pub mod anthropic;
pub mod cartesia;
pub mod corpus;
pub mod deepgram;
pub mod elevenlabs;
pub mod function;
pub mod inworld;
pub mod openai;
mod speech;
pub mod twilio;
pub mod webhook;

/// A listener whose connections send without Nagle's delay, like the real services' (which
/// stream small events): without it a streamed reply waits ~40 ms for the client's delayed ACK.
pub(crate) fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    })
}
