//! The engine's own recording of a call (`recording_source: "nixflex"`, docs/recordings.md#the-engines-own-recording):
//! two μ-law tracks at 8 kHz — the caller and the agent — placed on one clock that starts when
//! the media stream started, and turned into a dual-channel 16-bit PCM WAV (caller left, agent
//! right) once the call is over.
//!
//! Where each frame goes:
//! - a caller frame at the `timestamp` Twilio gives it (milliseconds since the stream started),
//!   or, without a plausible one, at its arrival time (appended after the caller audio already
//!   held, so a burst of late frames is not written over itself);
//! - an agent frame at the time it *plays* — the pacer's 20 ms grid, not the moment it was
//!   sent (frames go out up to the pacer's lead early);
//! - on barge-in the agent track is cut at the `clear`: audio that was sent ahead of its play
//!   time but dropped by the `clear` was never heard, so it is not in the recording;
//! - anything not covered by a frame is silence.
//!
//! Cost: one byte per sample, 8 KB per second per track, so 16 KB per second of call (about
//! 29 MB for the longest call an agent allows, 30 minutes, plus its closing grace). The tracks
//! are plain `Vec`s: placing a frame copies 160 bytes and allocates only when a track's capacity
//! doubles; there is no I/O and no await. A track never grows past the limit given at
//! construction (frames beyond it are dropped), so a bogus timestamp cannot make it grow. The
//! WAV is twice the tracks' size (16-bit samples) and is built only after the call ended, by
//! [`CallCapture::to_wav`], off the audio path.

use std::io::Cursor;
use std::time::Duration;

use nixflex_pipeline::audio::{MULAW_SILENCE, TELEPHONY_SAMPLE_RATE, mulaw};

/// A caller frame whose timestamp is further than this from its arrival time is placed by its
/// arrival time instead (the timestamp is not Twilio's clock). Frames buffered while the stream
/// is being set up arrive late by the set-up time, which stays well below this.
pub const MAX_TIMESTAMP_SKEW: Duration = Duration::from_secs(5);

/// Samples converted to WAV per step, so encoding needs a small fixed buffer on top of the
/// output.
const ENCODE_CHUNK: usize = 8_000;

/// The samples of `at` on the 8 kHz grid.
fn sample_index(at: Duration) -> usize {
    let samples = at.as_micros() * u128::from(TELEPHONY_SAMPLE_RATE) / 1_000_000;
    usize::try_from(samples).unwrap_or(usize::MAX)
}

/// The two tracks of a call being recorded; see the module documentation.
#[derive(Debug, Clone)]
pub struct CallCapture {
    caller: Vec<u8>,
    agent: Vec<u8>,
    /// Samples a track may hold.
    limit: usize,
}

/// A call's recording as a WAV file.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedWav {
    /// RIFF/WAVE bytes: 2 channels (caller left, agent right), 8000 Hz, 16-bit PCM.
    pub wav: Vec<u8>,
    /// Its length in seconds (sample frames / 8000).
    pub duration_s: f64,
}

/// The WAV could not be written.
#[derive(Debug, thiserror::Error)]
#[error("the recording could not be encoded: {0}")]
pub struct EncodeError(String);

impl CallCapture {
    /// An empty recording that holds at most `max_length` of audio per track.
    pub fn new(max_length: Duration) -> Self {
        Self { caller: Vec::new(), agent: Vec::new(), limit: sample_index(max_length) }
    }

    /// A caller frame: `timestamp` is Twilio's (time since the stream started), `arrived` when
    /// it reached the session, on the recording's clock.
    pub fn caller_frame(&mut self, timestamp: Option<Duration>, arrived: Duration, audio: &[u8]) {
        let plausible = timestamp.filter(|t| t.abs_diff(arrived) <= MAX_TIMESTAMP_SKEW);
        let at = match plausible {
            Some(timestamp) => sample_index(timestamp),
            // In arrival order: a frame that arrives while earlier audio still covers its
            // moment follows that audio.
            None => sample_index(arrived).max(self.caller.len()),
        };
        place(&mut self.caller, at, audio, self.limit);
    }

    /// An agent frame that plays at `plays_at` on the recording's clock.
    pub fn agent_frame(&mut self, plays_at: Duration, audio: &[u8]) {
        place(&mut self.agent, sample_index(plays_at), audio, self.limit);
    }

    /// The agent's audio was cleared at `at`: what was queued to play from then on is dropped.
    pub fn cut_agent(&mut self, at: Duration) {
        let at = sample_index(at);
        if self.agent.len() > at {
            self.agent.truncate(at);
        }
    }

    /// The call ended at `at`: agent audio sent ahead of its play time never played.
    pub fn end(&mut self, at: Duration) {
        self.cut_agent(at);
    }

    /// Sample frames in the recording (the longer track).
    pub fn samples(&self) -> usize {
        self.caller.len().max(self.agent.len())
    }

    /// The recording's length.
    pub fn duration(&self) -> Duration {
        let samples = u64::try_from(self.samples()).unwrap_or(u64::MAX);
        Duration::from_micros(samples.saturating_mul(125))
    }

    /// Bytes the tracks hold now (their capacity).
    pub fn memory_bytes(&self) -> usize {
        self.caller.capacity() + self.agent.capacity()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.samples() == 0
    }

    /// The caller's track so far (μ-law, one byte per sample).
    pub fn caller_track(&self) -> &[u8] {
        &self.caller
    }

    /// The agent's track so far (μ-law, one byte per sample).
    pub fn agent_track(&self) -> &[u8] {
        &self.agent
    }

    /// The recording as a dual-channel 16-bit PCM WAV at 8 kHz, caller left, agent right; the
    /// shorter track is padded with silence.
    ///
    /// # Errors
    /// When the WAV writer fails (it writes to memory; only an impossible size could fail).
    pub fn to_wav(&self) -> Result<CapturedWav, EncodeError> {
        let frames = self.samples();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: TELEPHONY_SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let error = |e: hound::Error| EncodeError(e.to_string());
        let mut out = Cursor::new(Vec::with_capacity(44 + frames * 4));
        let mut writer = hound::WavWriter::new(&mut out, spec).map_err(error)?;
        let track =
            |track: &[u8], i: usize| mulaw::decode(track.get(i).copied().unwrap_or(MULAW_SILENCE));
        let mut start = 0;
        while start < frames {
            let end = (start + ENCODE_CHUNK).min(frames);
            let n_samples = u32::try_from((end - start) * 2)
                .map_err(|_| EncodeError("the recording is too long".to_owned()))?;
            let mut chunk = writer.get_i16_writer(n_samples);
            for i in start..end {
                chunk.write_sample(track(&self.caller, i));
                chunk.write_sample(track(&self.agent, i));
            }
            chunk.flush().map_err(error)?;
            start = end;
        }
        writer.finalize().map_err(error)?;
        #[allow(clippy::cast_precision_loss)]
        let duration_s = frames as f64 / f64::from(TELEPHONY_SAMPLE_RATE);
        Ok(CapturedWav { wav: out.into_inner(), duration_s })
    }
}

/// Writes `audio` into `track` from sample `at` (over what is there, after silence up to `at`),
/// keeping the track within `limit` samples.
fn place(track: &mut Vec<u8>, at: usize, audio: &[u8], limit: usize) {
    if at >= limit {
        return;
    }
    let audio = &audio[..audio.len().min(limit - at)];
    if track.len() < at {
        track.resize(at, MULAW_SILENCE);
    }
    let overlap = (track.len() - at).min(audio.len());
    track[at..at + overlap].copy_from_slice(&audio[..overlap]);
    track.extend_from_slice(&audio[overlap..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// One 20 ms frame of a constant non-silent μ-law code.
    fn frame(code: u8) -> Vec<u8> {
        vec![code; 160]
    }

    /// The stretches of a track that are not silence, in ms: (start, end).
    fn sounding(track: &[u8]) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut start = None;
        for (i, &code) in track.iter().chain(std::iter::once(&MULAW_SILENCE)).enumerate() {
            match (start, code == MULAW_SILENCE) {
                (None, false) => start = Some(i),
                (Some(s), true) => {
                    spans.push((s / 8, i / 8));
                    start = None;
                }
                _ => {}
            }
        }
        spans
    }

    #[test]
    fn both_tracks_sit_on_one_clock_with_silence_in_the_gaps() {
        let mut capture = CallCapture::new(Duration::from_secs(60));
        // The agent greets from 0 to 100 ms (five frames on the grid).
        for n in 0..5 {
            capture.agent_frame(ms(20 * n), &frame(0x10));
        }
        // The caller speaks from 400 to 500 ms; the frames arrive a little late.
        for n in 0..5 {
            let at = 400 + 20 * n;
            capture.caller_frame(Some(ms(at)), ms(at + 7), &frame(0x20));
        }
        // The agent answers at 1000 ms.
        for n in 0..3 {
            capture.agent_frame(ms(1000 + 20 * n), &frame(0x10));
        }
        assert_eq!(sounding(capture.agent_track()), [(0, 100), (1000, 1060)]);
        assert_eq!(sounding(capture.caller_track()), [(400, 500)]);
        assert_eq!(capture.duration(), ms(1060));
        // The caller's track starts with silence up to its first frame.
        assert!(capture.caller_track()[..3200].iter().all(|&c| c == MULAW_SILENCE));
    }

    #[test]
    fn caller_frames_follow_twilios_timestamps_not_their_arrival() {
        let mut capture = CallCapture::new(Duration::from_secs(60));
        // Buffered while the stream was set up: all arrive at 300 ms.
        for n in 0..3 {
            capture.caller_frame(Some(ms(100 + 20 * n)), ms(300), &frame(0x20));
        }
        // Then one out of order (a retransmitted segment): it lands at its own time.
        capture.caller_frame(Some(ms(200)), ms(310), &frame(0x30));
        capture.caller_frame(Some(ms(180)), ms(311), &frame(0x31));
        assert_eq!(sounding(capture.caller_track()), [(100, 160), (180, 220)]);
        assert_eq!(capture.caller_track()[sample_index(ms(185))], 0x31);
        assert_eq!(capture.caller_track()[sample_index(ms(205))], 0x30);
    }

    #[test]
    fn without_a_plausible_timestamp_caller_frames_are_placed_in_arrival_order() {
        let mut capture = CallCapture::new(Duration::from_secs(60));
        // No timestamps: a burst of three frames arriving together is kept whole, in order.
        capture.caller_frame(None, ms(100), &frame(0x21));
        capture.caller_frame(None, ms(101), &frame(0x22));
        capture.caller_frame(None, ms(101), &frame(0x23));
        // A pause, then speech again.
        capture.caller_frame(None, ms(500), &frame(0x24));
        // A timestamp an hour away from the arrival is not Twilio's clock: arrival order.
        capture.caller_frame(Some(Duration::from_secs(3600)), ms(520), &frame(0x25));
        assert_eq!(sounding(capture.caller_track()), [(100, 160), (500, 540)]);
        let at = |t: u64| capture.caller_track()[sample_index(ms(t))];
        assert_eq!((at(110), at(130), at(150), at(510), at(530)), (0x21, 0x22, 0x23, 0x24, 0x25));
        assert_eq!(capture.duration(), ms(540), "the bogus timestamp did not grow the track");
    }

    #[test]
    fn a_barge_in_cuts_the_agent_audio_queued_past_the_clear() {
        let mut capture = CallCapture::new(Duration::from_secs(60));
        // Frames are sent up to 60 ms ahead: at 200 ms the agent has sent audio playing until
        // 260 ms when the caller's barge-in clears it.
        for n in 0..13 {
            capture.agent_frame(ms(20 * n), &frame(0x10));
        }
        capture.cut_agent(ms(200));
        // The agent's next turn starts at 900 ms on a fresh grid.
        capture.agent_frame(ms(900), &frame(0x11));
        assert_eq!(sounding(capture.agent_track()), [(0, 200), (900, 920)]);
        // A clear after everything already played changes nothing.
        capture.cut_agent(ms(2000));
        assert_eq!(sounding(capture.agent_track()), [(0, 200), (900, 920)]);
    }

    #[test]
    fn the_end_of_the_call_drops_agent_audio_that_never_played() {
        let mut capture = CallCapture::new(Duration::from_secs(60));
        capture.caller_frame(Some(ms(0)), ms(0), &frame(0x20));
        for n in 0..10 {
            capture.agent_frame(ms(20 * n), &frame(0x10));
        }
        capture.end(ms(140));
        assert_eq!(capture.duration(), ms(140));
    }

    #[test]
    fn tracks_never_grow_past_their_limit() {
        let mut capture = CallCapture::new(ms(100));
        for n in 0..20 {
            capture.agent_frame(ms(20 * n), &frame(0x10));
            capture.caller_frame(Some(ms(20 * n)), ms(20 * n), &frame(0x20));
        }
        capture.agent_frame(Duration::from_secs(1_000_000), &frame(0x10));
        assert_eq!((capture.agent_track().len(), capture.caller_track().len()), (800, 800));
        assert!(capture.memory_bytes() < 4 * 800, "{}", capture.memory_bytes());
    }

    #[test]
    fn the_wav_is_dual_channel_16_bit_pcm_at_8_khz_caller_left_agent_right() {
        let mut capture = CallCapture::new(Duration::from_secs(60));
        let caller = mulaw::encode(-12_000);
        let agent = mulaw::encode(9_000);
        // 2.5 s: the caller at 0–20 ms, the agent at 2480–2500 ms.
        capture.caller_frame(Some(ms(0)), ms(0), &frame(caller));
        capture.agent_frame(ms(2480), &frame(agent));
        let wav = capture.to_wav().unwrap();
        assert!((wav.duration_s - 2.5).abs() < 1e-9, "{}", wav.duration_s);
        assert_eq!(wav.wav.len(), 44 + 20_000 * 4, "the canonical 44-byte header, then samples");

        let mut reader = hound::WavReader::new(Cursor::new(&wav.wav)).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample, spec.sample_format),
            (2, 8000, 16, hound::SampleFormat::Int)
        );
        assert_eq!(reader.duration(), 20_000, "sample frames = duration × 8000");
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
        assert!(left[..160].iter().all(|&s| s == mulaw::decode(caller)));
        assert!(left[160..].iter().all(|&s| s == 0));
        assert!(right[..19_840].iter().all(|&s| s == 0));
        assert!(right[19_840..].iter().all(|&s| s == mulaw::decode(agent)));
        // The header also parses with the pipeline's own reader.
        let header = nixflex_pipeline::audio::wav::parse_header(&wav.wav).unwrap();
        assert_eq!((header.format.channels, header.data_offset), (2, 44));
    }

    #[test]
    fn an_empty_recording_is_a_valid_empty_wav() {
        let wav = CallCapture::new(ms(100)).to_wav().unwrap();
        let reader = hound::WavReader::new(Cursor::new(&wav.wav)).unwrap();
        assert_eq!((reader.spec().channels, reader.duration()), (2, 0));
        assert!(wav.duration_s.abs() < f64::EPSILON);
    }
}
