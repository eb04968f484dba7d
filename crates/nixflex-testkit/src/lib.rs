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

/// A file of the running test's package: under the `CARGO_MANIFEST_DIR` cargo and nextest set
/// when they run a test, else under `compiled_dir` (the same variable at compile time). A test
/// binary reused from a build cache made in another checkout then still reads this checkout's
/// files.
pub fn package_file(compiled_dir: &str, relative: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from(compiled_dir), std::path::PathBuf::from);
    dir.join(relative)
}

/// A listener whose connections send without Nagle's delay, like the real services' (which
/// stream small events): without it a streamed reply waits ~40 ms for the client's delayed ACK.
pub(crate) fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    })
}
