//! The provider traits of the call pipeline and the audio helpers they share. No vendors, no
//! network, no database.
//!
//! This crate owns the *interfaces* that vendor clients implement (livekit-style streaming traits):
//! [`llm::LlmProvider`], [`stt::SttProvider`] and [`tts::TtsProvider`], their data types and the
//! shared [`ProviderError`]. It also owns the pure audio helpers ([`audio`]) every provider adapter
//! needs: G.711 μ-law, resampling to 8 kHz, WAV header handling and 20 ms framing. The concrete
//! clients live in `nixflex-providers`; nothing here opens a socket.
#![warn(missing_docs)]

pub mod audio;
mod error;
pub mod llm;
pub mod stt;
pub mod tts;

pub use error::{ProviderError, ProviderErrorKind};
