//! Speech-to-text clients implementing [`nixflex_pipeline::stt::SttProvider`].

pub mod deepgram;
pub mod openai;
