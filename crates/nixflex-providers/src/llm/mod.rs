//! LLM clients implementing [`nixflex_pipeline::llm::LlmProvider`]: Anthropic Messages and
//! OpenAI-compatible Chat Completions, both streamed over server-sent events.
//!
//! `http` and `sse` hold the plumbing shared by the HTTP clients of this crate (the TTS
//! clients use `http` too): client construction, timeouts, error mapping, SSE decoding.

pub mod anthropic;
pub(crate) mod http;
pub mod openai;
mod sse;
