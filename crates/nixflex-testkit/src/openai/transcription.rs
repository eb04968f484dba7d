//! `POST /v1/audio/transcriptions` of the OpenAI-compatible emulator
//! (docs/protocols.md#openai-compatible-endpoints): a multipart form with `file` and `model`
//! (both required), `language`, `prompt` and `response_format` (`json`, `text` or
//! `verbose_json`; others are refused like the API's 400). The file must be a WAV; audio with no
//! speech (no 20 ms frame louder than RMS 500) transcribes to `""`, audio with speech to the
//! next scripted transcript ([`OpenAiEmulator::push_transcript`]). Faults have their own queue
//! ([`OpenAiEmulator::push_transcription_fault`]): `Status`, `SlowFirstByte`, `Stall` (never
//! answers) and `Pass`.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use nixflex_pipeline::audio::{pcm16le_to_samples, tone::rms, wav};
use serde_json::json;

use super::{OpenAiEmulator, Shared, error_response, status_fault_response};
use crate::anthropic::Fault;

/// What one transcription request carried, for assertions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TranscriptionRequest {
    /// The `model` field.
    pub model: String,
    /// The `language` field.
    pub language: Option<String>,
    /// The `prompt` field.
    pub prompt: Option<String>,
    /// The `response_format` field.
    pub response_format: Option<String>,
    /// Bytes of the uploaded file.
    pub file_bytes: usize,
    /// The transcript answered (`None` when the request was refused or a fault struck).
    pub answered: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Script {
    transcripts: VecDeque<String>,
    faults: VecDeque<Fault>,
    requests: Vec<TranscriptionRequest>,
}

impl OpenAiEmulator {
    /// Queues what the next request whose audio holds speech transcribes to.
    pub fn push_transcript(&self, text: impl Into<String>) {
        self.shared.script().transcription.transcripts.push_back(text.into());
    }

    /// Queues a fault for the next transcription request.
    pub fn push_transcription_fault(&self, fault: Fault) {
        self.shared.script().transcription.faults.push_back(fault);
    }

    /// The transcription requests so far.
    pub fn transcription_requests(&self) -> Vec<TranscriptionRequest> {
        self.shared.script().transcription.requests.clone()
    }
}

fn invalid(message: &str, param: Option<&str>) -> Response {
    error_response(400, message, "invalid_request_error", None, param)
}

/// Whether a 16-bit WAV file holds a 20 ms frame louder than RMS 500.
fn has_speech(file: &[u8]) -> Result<bool, ()> {
    let header = wav::parse_header(file).map_err(|_| ())?;
    if !header.format.is_pcm16_mono() {
        return Err(());
    }
    let data = file.get(header.data_offset..).unwrap_or_default();
    let samples = pcm16le_to_samples(data);
    let frame = (header.format.sample_rate as usize / 50).max(1);
    Ok(samples.chunks(frame).any(|chunk| rms(chunk) > 500.0))
}

pub(super) async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let authorised = super::bearer_authorised(&headers, shared.config.api_key.as_deref());
    if !authorised {
        return error_response(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        );
    }
    let mut request = TranscriptionRequest::default();
    let mut file: Option<Vec<u8>> = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_owned();
                let Ok(bytes) = field.bytes().await else {
                    return invalid("The multipart body could not be read.", None);
                };
                let text = || String::from_utf8_lossy(&bytes).into_owned();
                match name.as_str() {
                    "file" => file = Some(bytes.to_vec()),
                    "model" => request.model = text(),
                    "language" => request.language = Some(text()),
                    "prompt" => request.prompt = Some(text()),
                    "response_format" => request.response_format = Some(text()),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => return invalid("The multipart body could not be parsed.", None),
        }
    }
    request.file_bytes = file.as_ref().map_or(0, Vec::len);
    let fault = {
        let mut script = shared.script();
        script.transcription.requests.push(request.clone());
        script.transcription.faults.pop_front()
    };
    let Some(file) = file else {
        return invalid("you must provide a file", Some("file"));
    };
    if request.model.trim().is_empty() {
        return invalid("you must provide a model parameter", Some("model"));
    }
    let format = request.response_format.clone().unwrap_or_else(|| "json".to_owned());
    if !matches!(format.as_str(), "json" | "text" | "verbose_json") {
        return invalid(
            &format!("response_format {format:?} is not supported by the emulator"),
            Some("response_format"),
        );
    }
    let Ok(speech) = has_speech(&file) else {
        return invalid(
            "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
            Some("file"),
        );
    };
    match fault {
        Some(Fault::Status(status)) => return status_fault_response(status),
        Some(Fault::SlowFirstByte(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Stall { .. }) => std::future::pending::<()>().await,
        _ => {}
    }
    let text = if speech {
        shared.script().transcription.transcripts.pop_front().unwrap_or_default()
    } else {
        String::new()
    };
    {
        let mut script = shared.script();
        if let Some(logged) =
            script.transcription.requests.iter_mut().rev().find(|r| r.answered.is_none())
        {
            logged.answered = Some(text.clone());
        }
    }
    let seconds = file.len().saturating_sub(44) as f64 / 16_000.0;
    match format.as_str() {
        "text" => text.into_response(),
        "verbose_json" => axum::Json(json!({
            "task": "transcribe",
            "language": request.language.as_deref().unwrap_or("english"),
            "duration": seconds,
            "text": text,
            "segments": [],
        }))
        .into_response(),
        _ => axum::Json(json!({
            "text": text,
            "usage": { "type": "duration", "seconds": seconds.ceil() },
        }))
        .into_response(),
    }
}
