//! Call recordings, as Twilio's Recordings resource has them: started on a live call through
//! `POST …/Calls/{CA}/Recordings.json` (the source Twilio calls `StartCallRecordingAPI`), made
//! from the call's audio while it lasts, and finished when the call ends.
//!
//! The media comes from the caller emulator: a call it places while attached to the REST
//! emulator ([`crate::twilio::caller::CallerEmulator::with_network`]) has a [`Tap`] that the REST
//! side switches on when a recording starts. From the next 20 ms tick on, the caller's media loop
//! keeps a [`Tape`]: the frame it sent as the caller and the agent audio it played in the same
//! tick, so both channels stay time-aligned. When the call ends the tape becomes a dual-channel
//! 8 kHz 16-bit WAV — caller on the first channel, agent on the second, as Twilio's dual-channel
//! recordings of an inbound call are laid out (the caller's leg first) — and the recording status
//! callback goes to the URL given at creation.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use nixflex_pipeline::audio::{TELEPHONY_SAMPLE_RATE, mulaw};
use serde_json::{Value, json};

use crate::twilio::state::API_PREFIX;

/// The recording `source` of a recording started through the REST API on a live call.
pub const SOURCE_START_CALL_RECORDING_API: &str = "StartCallRecordingAPI";

/// A recording as the emulator stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingState {
    /// `RE` + 32 hex.
    pub sid: String,
    /// Owning account.
    pub account_sid: String,
    /// The recorded call.
    pub call_sid: String,
    /// `in-progress`, then `completed` (or `absent` when no audio was captured).
    pub status: String,
    /// 1 (`mono`) or 2 (`dual`).
    pub channels: u8,
    /// `inbound`, `outbound` or `both`.
    pub track: String,
    /// `StartCallRecordingAPI`.
    pub source: String,
    /// `RecordingStatusCallback`, if given.
    pub status_callback: Option<String>,
    /// `RecordingStatusCallbackMethod` (`POST` by default).
    pub status_callback_method: String,
    /// `RecordingStatusCallbackEvent` values (`completed` by default).
    pub status_callback_events: Vec<String>,
    /// Every parameter of the create request, in order.
    pub create_params: Vec<(String, String)>,
    /// Creation time (= start time).
    pub date_created: DateTime<Utc>,
    /// Last change.
    pub date_updated: DateTime<Utc>,
    /// Whole seconds, once completed.
    pub duration: Option<u64>,
    /// The WAV file, once completed.
    pub wav: Option<Bytes>,
}

impl RecordingState {
    /// `…/Recordings/{RE}` without extension: what `RecordingUrl` carries.
    pub fn media_path(&self) -> String {
        format!("{API_PREFIX}/Accounts/{}/Recordings/{}", self.account_sid, self.sid)
    }

    /// The resource JSON, field for field as in twilio-python's `test_recording.py` samples.
    pub(crate) fn to_json(&self) -> Value {
        let base = format!("{API_PREFIX}/Accounts/{}", self.account_sid);
        json!({
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "call_sid": self.call_sid,
            "conference_sid": null,
            "date_created": self.date_created.to_rfc2822(),
            "date_updated": self.date_updated.to_rfc2822(),
            "start_time": self.date_created.to_rfc2822(),
            "duration": self.duration.map_or_else(|| "-1".to_owned(), |d| d.to_string()),
            "sid": self.sid,
            "price": null,
            "price_unit": "USD",
            "status": self.status,
            "channels": self.channels,
            "source": self.source,
            "error_code": null,
            "track": self.track,
            "encryption_details": null,
            "media_url": format!("https://api.twilio.com{}", self.media_path()),
            "uri": format!("{base}/Recordings/{}.json", self.sid),
            "subresource_uris": {
                "add_on_results": format!("{base}/Recordings/{}/AddOnResults.json", self.sid),
                "transcriptions": format!("{base}/Recordings/{}/Transcriptions.json", self.sid),
            },
        })
    }
}

/// The switch between a live emulated call and the REST emulator: on once a recording of the
/// call has started.
#[derive(Debug, Default)]
pub(crate) struct Tap {
    recording: AtomicBool,
}

impl Tap {
    pub(crate) fn start_recording(&self) {
        self.recording.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }
}

/// The two tracks of a recording in progress, μ-law, one 20 ms frame per tick each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tape {
    /// What the caller sent.
    pub(crate) caller: Vec<u8>,
    /// What the caller heard of the agent (silence where nothing played).
    pub(crate) agent: Vec<u8>,
}

impl Tape {
    /// Samples per channel (the shorter track is padded with silence when the WAV is made).
    pub(crate) fn samples(&self) -> usize {
        self.caller.len().max(self.agent.len())
    }

    /// Whole seconds of audio, rounded up (Twilio's `RecordingDuration` is whole seconds).
    pub(crate) fn duration_secs(&self) -> u64 {
        let samples = u64::try_from(self.samples()).unwrap_or(u64::MAX);
        samples.div_ceil(u64::from(TELEPHONY_SAMPLE_RATE))
    }

    /// A canonical 16-bit PCM WAV at 8 kHz: `channels` 2 interleaves caller (first) and agent
    /// (second); 1 mixes them.
    pub(crate) fn to_wav(&self, channels: u8) -> Bytes {
        let samples = self.samples();
        let pick = |track: &[u8], i: usize| {
            mulaw::decode(track.get(i).copied().unwrap_or(nixflex_pipeline::audio::MULAW_SILENCE))
        };
        let channels = u16::from(channels.clamp(1, 2));
        let data_len = samples * usize::from(channels) * 2;
        let mut wav = Vec::with_capacity(44 + data_len);
        let data_len_u32 = u32::try_from(data_len).unwrap_or(u32::MAX);
        let byte_rate = TELEPHONY_SAMPLE_RATE * u32::from(channels) * 2;
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&data_len_u32.saturating_add(36).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16_u32.to_le_bytes());
        wav.extend_from_slice(&1_u16.to_le_bytes());
        wav.extend_from_slice(&channels.to_le_bytes());
        wav.extend_from_slice(&TELEPHONY_SAMPLE_RATE.to_le_bytes());
        wav.extend_from_slice(&byte_rate.to_le_bytes());
        wav.extend_from_slice(&(channels * 2).to_le_bytes());
        wav.extend_from_slice(&16_u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&data_len_u32.to_le_bytes());
        for i in 0..samples {
            let (caller, agent) = (pick(&self.caller, i), pick(&self.agent, i));
            if channels == 2 {
                wav.extend_from_slice(&caller.to_le_bytes());
                wav.extend_from_slice(&agent.to_le_bytes());
            } else {
                let mixed = (i32::from(caller) + i32::from(agent))
                    .clamp(i32::from(i16::MIN), i32::from(i16::MAX));
                let mixed = i16::try_from(mixed).unwrap_or_default();
                wav.extend_from_slice(&mixed.to_le_bytes());
            }
        }
        Bytes::from(wav)
    }
}

/// A recording status callback to send: where, how, and the parameters.
#[derive(Debug, Clone)]
pub(crate) struct RecordingCallback {
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) auth_token: String,
    pub(crate) params: Vec<(String, String)>,
}

/// The parameters of a recording status callback (docs/protocols.md, Twilio's "recording status
/// callback" parameters).
pub(crate) fn callback_params(recording: &RecordingState) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("AccountSid", recording.account_sid.clone()),
        ("CallSid", recording.call_sid.clone()),
        ("RecordingSid", recording.sid.clone()),
        ("RecordingUrl", format!("https://api.twilio.com{}", recording.media_path())),
        ("RecordingStatus", recording.status.clone()),
        ("RecordingDuration", recording.duration.unwrap_or(0).to_string()),
        ("RecordingChannels", recording.channels.to_string()),
        (
            "RecordingStartTime",
            recording.date_created.format("%a, %d %b %Y %H:%M:%S +0000").to_string(),
        ),
        ("RecordingSource", recording.source.clone()),
        ("RecordingTrack", recording.track.clone()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    if recording.status == "absent" {
        params.push(("ErrorCode".to_owned(), "0".to_owned()));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dual_channel_wav_interleaves_caller_then_agent() {
        let tape = Tape {
            caller: vec![mulaw::encode(1000); 8000],
            agent: vec![mulaw::encode(-2000); 4000],
        };
        let wav = tape.to_wav(2);
        let header = nixflex_pipeline::audio::wav::parse_header(&wav).unwrap();
        assert_eq!(header.format.channels, 2);
        assert_eq!(header.format.sample_rate, 8000);
        assert_eq!(header.format.bits_per_sample, 16);
        assert_eq!(header.data_len, Some(8000 * 4));
        let sample = |at: usize| i16::from_le_bytes([wav[44 + at * 2], wav[45 + at * 2]]);
        assert_eq!(
            (sample(0), sample(1)),
            (mulaw::decode(mulaw::encode(1000)), mulaw::decode(mulaw::encode(-2000)))
        );
        // The agent's shorter track is padded with silence.
        assert_eq!(sample(2 * 7999 + 1), mulaw::decode(nixflex_pipeline::audio::MULAW_SILENCE));
        assert_eq!(tape.duration_secs(), 1);
        assert_eq!(Tape { caller: vec![0; 8001], agent: Vec::new() }.duration_secs(), 2);
    }
}
