//! Twilio's playback of a bidirectional stream, emulated: agent `media` payloads join a queue
//! that plays out in real time (160 bytes per 20 ms tick); `mark`s wait in the queue behind the
//! audio sent before them and are echoed when that audio has finished playing; `clear` drops
//! the queued audio and releases every pending mark at once.
//!
//! Positions are counted in μ-law bytes since the stream started. A tick first finishes the
//! frame started at the previous tick (so a mark is echoed when its audio has *finished*), then
//! starts the next one. The queue is told the time; it reads no clock, which keeps it testable
//! without a runtime. It does not allocate per frame: the byte ring and the deques reuse their
//! capacity.

use std::collections::VecDeque;
use std::time::Duration;

use nixflex_pipeline::audio::MULAW_FRAME_BYTES;

use crate::twilio::caller::recording::{AgentFrame, InboundGap, UTTERANCE_GAP};
use crate::twilio::caller::script::{AgentView, FRAME_DURATION};

#[derive(Debug)]
struct PendingMark {
    /// The mark is echoed once playback has completed up to this position.
    position: u64,
    name: String,
}

/// The part of an agent frame still in the queue.
#[derive(Debug)]
struct PendingChunk {
    /// Index into the recording's agent frames.
    frame_index: usize,
    start: u64,
    end: u64,
    started: bool,
}

/// The playback queue of one call.
#[derive(Debug, Default)]
pub(crate) struct Playback {
    /// Audio queued and not yet started.
    audio: VecDeque<u8>,
    /// Position just after the last queued byte.
    enqueued: u64,
    /// Position just after the last byte started.
    started: u64,
    /// Position just after the last byte finished.
    completed: u64,
    marks: VecDeque<PendingMark>,
    chunks: VecDeque<PendingChunk>,
    /// When the current utterance started playing.
    utterance_start: Option<Duration>,
    /// When the most recently started frame finishes.
    last_audible_end: Option<Duration>,
    /// When playback of the current utterance first ran short, if it is short now.
    starving_since: Option<Duration>,
    /// When agent media last arrived.
    last_arrival: Option<Duration>,
    /// Underruns found so far.
    gaps: Vec<InboundGap>,
}

impl Playback {
    /// Queues a frame's audio (`frame_index` is its index in the recording's agent frames).
    pub(crate) fn enqueue_audio(&mut self, frame_index: usize, audio: &[u8], now: Duration) {
        self.last_arrival = Some(now);
        if audio.is_empty() {
            return;
        }
        let length = audio.len() as u64;
        self.chunks.push_back(PendingChunk {
            frame_index,
            start: self.enqueued,
            end: self.enqueued + length,
            started: false,
        });
        self.enqueued += length;
        self.audio.extend(audio);
    }

    /// Queues a mark behind the audio queued so far. Returns the name back when nothing is
    /// queued or playing: the mark is then echoed at once.
    pub(crate) fn enqueue_mark(&mut self, name: String) -> Option<String> {
        if self.completed >= self.enqueued {
            return Some(name);
        }
        self.marks.push_back(PendingMark { position: self.enqueued, name });
        None
    }

    /// Drops every queued byte and moves every pending mark into `echoed`. The frame already
    /// playing finishes. Returns the number of bytes dropped.
    pub(crate) fn clear(&mut self, frames: &mut [AgentFrame], echoed: &mut Vec<String>) -> usize {
        let dropped = self.audio.len();
        self.audio.clear();
        self.enqueued = self.started;
        let started = self.started;
        self.chunks.retain_mut(|chunk| {
            if chunk.end <= started {
                return true;
            }
            if let Some(frame) = frames.get_mut(chunk.frame_index) {
                frame.cleared = true;
            }
            // A chunk that is partly playing keeps its playing part; the rest is gone.
            chunk.end = started;
            chunk.start < started
        });
        echoed.extend(self.marks.drain(..).map(|mark| mark.name));
        dropped
    }

    /// Advances playback by one frame at `now`: finishes the frame started at the previous
    /// tick (recording play-end times and moving marks whose audio is done into `echoed`) and
    /// starts the next one. Returns the bytes started.
    pub(crate) fn tick(
        &mut self,
        now: Duration,
        frames: &mut [AgentFrame],
        echoed: &mut Vec<String>,
    ) -> usize {
        self.tick_into(now, frames, echoed, None)
    }

    /// [`Playback::tick`], appending the bytes started to `played` when given (a recording's
    /// agent track).
    pub(crate) fn tick_into(
        &mut self,
        now: Duration,
        frames: &mut [AgentFrame],
        echoed: &mut Vec<String>,
        played: Option<&mut Vec<u8>>,
    ) -> usize {
        self.completed = self.started;
        while let Some(chunk) = self.chunks.front() {
            if chunk.end > self.completed {
                break;
            }
            if let Some(frame) = frames.get_mut(chunk.frame_index) {
                frame.played_end = Some(now);
            }
            self.chunks.pop_front();
        }
        while let Some(mark) = self.marks.front() {
            if mark.position > self.completed {
                break;
            }
            if let Some(mark) = self.marks.pop_front() {
                echoed.push(mark.name);
            }
        }

        let n_bytes = self.audio.len().min(MULAW_FRAME_BYTES);
        match played {
            Some(played) => played.extend(self.audio.drain(..n_bytes)),
            None => {
                self.audio.drain(..n_bytes);
            }
        }
        self.started += n_bytes as u64;
        for chunk in &mut self.chunks {
            if chunk.start >= self.started {
                break;
            }
            if !chunk.started {
                chunk.started = true;
                if let Some(frame) = frames.get_mut(chunk.frame_index) {
                    frame.played_start = Some(now);
                }
            }
        }
        self.track_utterance(now, n_bytes);
        n_bytes
    }

    fn track_utterance(&mut self, now: Duration, n_bytes: usize) {
        let within_utterance =
            self.last_audible_end.is_some_and(|end| now.saturating_sub(end) <= UTTERANCE_GAP);
        if n_bytes == 0 {
            if !within_utterance {
                self.utterance_start = None;
                self.starving_since = None;
            } else if self.starving_since.is_none() {
                self.starving_since = Some(now);
            }
            return;
        }
        if !within_utterance {
            self.utterance_start = Some(now);
            self.starving_since = None;
        }
        if n_bytes == MULAW_FRAME_BYTES {
            if let Some(since) = self.starving_since.take() {
                self.gaps.push(InboundGap { at: since, duration: now - since });
            }
        } else if self.starving_since.is_none() {
            // A short frame: the queue ran out partway through it.
            self.starving_since = Some(now);
        }
        self.last_audible_end = Some(now + FRAME_DURATION);
    }

    /// What the script needs to know at `now` (call after [`Playback::tick`]).
    pub(crate) fn view(&self, now: Duration) -> AgentView {
        let playing = self.started > self.completed;
        AgentView {
            last_arrival: self.last_arrival,
            last_audible_end: self.last_audible_end,
            audible_for: if playing {
                self.utterance_start.map(|start| now.saturating_sub(start))
            } else {
                None
            },
            idle: !playing && self.audio.is_empty(),
        }
    }

    /// Hands over the underruns found.
    pub(crate) fn take_gaps(&mut self) -> Vec<InboundGap> {
        std::mem::take(&mut self.gaps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn frame_at(received: u64, bytes: usize) -> AgentFrame {
        AgentFrame {
            received_at: ms(received),
            bytes,
            played_start: None,
            played_end: None,
            cleared: false,
        }
    }

    /// Runs ticks at 0, 20, 40, … up to (excluding) `until` ms, from `from` ms.
    fn run_ticks(
        playback: &mut Playback,
        frames: &mut [AgentFrame],
        from: u64,
        until: u64,
    ) -> Vec<(u64, String)> {
        let mut all_echoed = Vec::new();
        let mut echoed = Vec::new();
        for at in (from..until).step_by(20) {
            playback.tick(ms(at), frames, &mut echoed);
            all_echoed.extend(echoed.drain(..).map(|name| (at, name)));
        }
        all_echoed
    }

    #[test]
    fn a_mark_is_echoed_when_the_audio_before_it_has_finished_playing() {
        let mut playback = Playback::default();
        let mut frames = vec![frame_at(0, 8000)];
        playback.enqueue_audio(0, &[0x55; 8000], ms(0));
        assert_eq!(playback.enqueue_mark("one-second".to_owned()), None);

        let echoed = run_ticks(&mut playback, &mut frames, 0, 1100);

        // 50 frames start at 0..980 ms; the last one finishes at the tick of 1000 ms.
        assert_eq!(echoed, vec![(1000, "one-second".to_owned())]);
        assert_eq!(frames[0].played_start, Some(ms(0)));
        assert_eq!(frames[0].played_end, Some(ms(1000)));
        assert!(playback.gaps.is_empty());
    }

    #[test]
    fn a_mark_with_nothing_queued_or_playing_is_echoed_at_once() {
        let mut playback = Playback::default();

        assert_eq!(playback.enqueue_mark("now".to_owned()), Some("now".to_owned()));
    }

    #[test]
    fn clear_drops_queued_audio_and_releases_pending_marks_in_order() {
        let mut playback = Playback::default();
        let mut frames = vec![frame_at(0, 320), frame_at(0, 800)];
        playback.enqueue_audio(0, &[0x55; 320], ms(0));
        assert_eq!(playback.enqueue_mark("a".to_owned()), None);
        playback.enqueue_audio(1, &[0x55; 800], ms(0));
        assert_eq!(playback.enqueue_mark("b".to_owned()), None);
        run_ticks(&mut playback, &mut frames, 0, 40); // two frames started: all of frame 0

        let mut echoed = Vec::new();
        let dropped = playback.clear(&mut frames, &mut echoed);

        assert_eq!(dropped, 800);
        assert_eq!(echoed, vec!["a".to_owned(), "b".to_owned()]);
        assert!(frames[1].cleared);
        assert_eq!(frames[1].played_start, None);
        // The frame playing when the clear came still finishes; then the queue is idle.
        run_ticks(&mut playback, &mut frames, 40, 60);
        assert_eq!(frames[0].played_end, Some(ms(40)));
        assert!(playback.view(ms(40)).idle);
    }

    #[test]
    fn a_short_pause_inside_an_utterance_is_an_underrun_and_a_long_one_is_not() {
        let mut playback = Playback::default();
        let mut frames = vec![frame_at(0, 160), frame_at(60, 160), frame_at(1000, 160)];
        playback.enqueue_audio(0, &[0x55; 160], ms(0));
        run_ticks(&mut playback, &mut frames, 0, 60); // plays at 0, dry at 20 and 40
        playback.enqueue_audio(1, &[0x55; 160], ms(60));
        run_ticks(&mut playback, &mut frames, 60, 1000); // plays at 60, then dry for long
        playback.enqueue_audio(2, &[0x55; 160], ms(1000));
        run_ticks(&mut playback, &mut frames, 1000, 1040);

        assert_eq!(playback.take_gaps(), vec![InboundGap { at: ms(20), duration: ms(40) }]);
    }

    #[test]
    fn the_view_reports_how_long_the_current_utterance_has_been_audible() {
        let mut playback = Playback::default();
        let mut frames = vec![frame_at(0, 3200)];
        playback.enqueue_audio(0, &[0x55; 3200], ms(0));
        run_ticks(&mut playback, &mut frames, 0, 220);

        let view = playback.view(ms(200));

        assert_eq!(view.audible_for, Some(ms(200)));
        assert!(!view.idle);
        assert_eq!(view.last_arrival, Some(ms(0)));
    }
}
