//! Clients for the external services: Twilio (telephony), the speech/LLM providers, and the
//! customer's own endpoints (`customer`: pre-call gate, later webhooks and functions), and object
//! storage for recordings (`storage`: a local directory or an S3-compatible bucket).
//!
//! Every client takes its base URL and credentials from the caller (config), so that a local
//! server or one of the emulators in `nixflex-testkit` can stand in for the real service.

pub mod customer;
pub mod llm;
pub mod storage;
pub mod stt;
pub mod tts;
pub mod twilio;
