//! The call engine: admitting calls (`service`), and call sessions — turn-taking, prompt
//! assembly, action tags, playout, and the per-call actor that wires the providers together.
//! The audio path never waits on the database.

pub mod analysis;
pub mod byo;
pub mod campaigns;
pub mod capture;
pub mod carrier_recording;
pub mod chunker;
pub mod engine;
pub mod followup;
mod functions;
pub mod media;
pub mod outbound;
pub mod playout;
pub mod prompt;
pub mod providers;
pub mod recordings;
pub mod service;
pub mod session;
pub mod sms;
pub mod sms_campaign;
pub mod store;
pub mod tags;
pub mod transfer;
pub mod twilio_ws;
pub mod vad;
pub mod voicemail;
pub mod webhook;

pub use engine::{DEFAULT_OUTAGE_MESSAGE, Engine, EngineConfig, Providers};
pub use media::StreamRefused;
pub use outbound::{CallPurpose, OutboundRefused, OutboundRequest};
pub use recordings::{Recordings, RecordingsConfig};
pub use service::{Admission, BusyReason, InboundCall};
pub use session::EndReason;
pub use store::CallStore;

/// The recognition options a call with these agent settings uses (for pre-warming).
pub fn session_stt_options(
    agent: &nixflex_core::agent::AgentSettings,
) -> nixflex_pipeline::stt::SttOptions {
    session::stt_options(agent)
}
