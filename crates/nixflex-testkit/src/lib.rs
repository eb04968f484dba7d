//! Emulators of the external services and test helpers, used by tests, `nixflex demo` and the
//! benchmarks. Each emulator speaks the provider's public protocol.

pub mod anthropic;
pub mod deepgram;
pub mod inworld;
pub mod openai;
pub mod twilio;
