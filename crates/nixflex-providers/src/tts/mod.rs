//! Text-to-speech clients implementing [`nixflex_pipeline::tts::TtsProvider`]. Each client
//! only fetches the vendor's PCM; [`nixflex_pipeline::tts::TtsStream::from_pcm`] converts it
//! to 8 kHz μ-law.

pub mod cartesia;
pub mod elevenlabs;
pub mod inworld;
pub mod openai;
