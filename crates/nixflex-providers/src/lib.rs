//! Clients for the external services: Twilio (telephony), and the speech/LLM providers.
//!
//! Every client takes its base URL and credentials from the caller (config), so that a local
//! server or one of the emulators in `nixflex-testkit` can stand in for the real service.

pub mod llm;
pub mod stt;
pub mod tts;
pub mod twilio;
