//! What the caller hears: the queue of agent audio sent to Twilio, and what of it was played
//! (docs/engine.md#playout-and-marks, docs/protocols.md#twilio-media-streams).
//!
//! [`Playout`] holds 160-byte μ-law frames (20 ms at 8 kHz) grouped into segments, one per
//! spoken chunk of text. After a segment's last frame it yields a `mark` named `"{turn}-{seq}"`;
//! Twilio echoes the mark once the audio before it has played, so an echoed mark means the
//! caller heard that segment. On barge-in, [`Playout::clear`] drops everything queued and
//! reports what was heard (echoed segments plus the share of a partly sent segment, by words)
//! and what was not, so the LLM history keeps only the spoken part.
//!
//! [`Pacer`] paces frames on an absolute 20 ms grid with a small lead (60 ms by default): enough
//! that network jitter never starves Twilio's buffer, little enough that a `clear` silences the
//! agent at once.
//!
//! Both are pure: the caller passes time in and sends what comes out. Frames are borrowed
//! slices of the segment's buffer, so sending a frame allocates nothing.

use std::collections::VecDeque;
use std::ops::Add;
use std::time::{Duration, Instant};

use nixflex_pipeline::audio::{MULAW_FRAME_BYTES, MULAW_SILENCE};

/// The length of one frame.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// How many turns [`Playout::heard_text_of_turn`] remembers.
const HEARD_TURNS: usize = 16;

/// The next thing to send to Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// 160 bytes of μ-law audio (a `media` message).
    Audio(&'a [u8]),
    /// A `mark` with this name, after the last frame of a segment.
    Mark(&'a str),
}

/// What [`Playout::clear`] dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interrupted {
    /// The turn that was playing: that of the first dropped segment, or if nothing was queued,
    /// the most recently queued turn. `None` if nothing was ever queued.
    pub turn: Option<u64>,
    /// Everything the caller heard of `turn` (same as [`Playout::heard_text_of_turn`]).
    pub heard_text: String,
    /// The dropped text the caller did not hear, all turns.
    pub unheard_text: String,
}

/// One spoken chunk.
#[derive(Debug)]
struct Segment {
    turn: u64,
    /// The mark name, `"{turn}-{seq}"`.
    mark: String,
    text: String,
    /// The audio; whole frames once closed. Freed when the mark is sent.
    audio: Vec<u8>,
    /// Frames of the segment (complete ones while open).
    n_frames: usize,
    frames_sent: usize,
    /// No more audio will come.
    closed: bool,
    mark_sent: bool,
}

impl Segment {
    /// The first `frames_sent / n_frames` of the text's words, and the rest.
    fn split_by_progress(&self) -> (String, String) {
        let words: Vec<&str> = self.text.split_whitespace().collect();
        // A segment without audio counts as heard once its mark was sent.
        let n_heard = (words.len() * self.frames_sent.min(self.n_frames))
            .checked_div(self.n_frames)
            .unwrap_or(usize::from(self.mark_sent) * words.len());
        (words[..n_heard].join(" "), words[n_heard..].join(" "))
    }
}

/// The queue of agent audio; see the module documentation.
#[derive(Debug, Default)]
pub struct Playout {
    /// Segments not yet heard, in order: first those whose mark was sent, then the one being
    /// sent, then queued ones; the last may be open.
    segments: VecDeque<Segment>,
    /// How many segments at the front have had their mark sent.
    sending: usize,
    /// The next mark sequence number (unique per call).
    next_seq: u64,
    /// The last turn that queued audio.
    last_turn: Option<u64>,
    /// Heard text per turn, oldest first.
    heard: VecDeque<(u64, String)>,
}

impl Playout {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues one complete spoken chunk and returns the name of the mark sent after it. A
    /// trailing partial frame is padded with μ-law silence.
    pub fn enqueue(&mut self, turn: u64, text: &str, audio: &[u8]) -> String {
        self.push_audio(turn, audio);
        self.end_segment(turn, text)
    }

    /// Appends streamed audio to the open segment of `turn` (opening one if needed; an open
    /// segment of another turn is closed first). Only whole frames become sendable.
    pub fn push_audio(&mut self, turn: u64, audio: &[u8]) {
        let open = self.segments.back_mut().filter(|segment| !segment.closed);
        let segment = match open {
            Some(segment) if segment.turn == turn => segment,
            _ => {
                self.close_open(None);
                self.open_segment(turn)
            }
        };
        segment.audio.extend_from_slice(audio);
        segment.n_frames = segment.audio.len() / MULAW_FRAME_BYTES;
    }

    /// Closes the open segment of `turn` with the text it speaks (padding its last frame with
    /// silence) and returns its mark name. Without an open segment of `turn`, queues an empty
    /// one, so the mark still follows everything before it.
    pub fn end_segment(&mut self, turn: u64, text: &str) -> String {
        let has_open = self.segments.back().is_some_and(|segment| !segment.closed);
        let open_of_turn =
            self.segments.back().is_some_and(|segment| !segment.closed && segment.turn == turn);
        if has_open && !open_of_turn {
            self.close_open(None);
        }
        if !open_of_turn {
            self.open_segment(turn);
        }
        self.close_open(Some(text));
        self.segments.back().map(|segment| segment.mark.clone()).unwrap_or_default()
    }

    fn open_segment(&mut self, turn: u64) -> &mut Segment {
        self.next_seq += 1;
        self.last_turn = Some(turn);
        self.segments.push_back(Segment {
            turn,
            mark: format!("{turn}-{}", self.next_seq),
            text: String::new(),
            audio: Vec::new(),
            n_frames: 0,
            frames_sent: 0,
            closed: false,
            mark_sent: false,
        });
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Closes the open segment, if any, padding its audio to whole frames.
    fn close_open(&mut self, text: Option<&str>) {
        let Some(segment) = self.segments.back_mut().filter(|segment| !segment.closed) else {
            return;
        };
        let partial = segment.audio.len() % MULAW_FRAME_BYTES;
        if partial != 0 {
            segment.audio.resize(segment.audio.len() + MULAW_FRAME_BYTES - partial, MULAW_SILENCE);
        }
        segment.n_frames = segment.audio.len() / MULAW_FRAME_BYTES;
        segment.closed = true;
        if let Some(text) = text {
            text.trim().clone_into(&mut segment.text);
        }
    }

    /// Whether [`Self::next_frame`] has something to return now.
    pub fn has_frames(&self) -> bool {
        self.segments
            .get(self.sending)
            .is_some_and(|segment| segment.frames_sent < segment.n_frames || segment.closed)
    }

    /// The next frame or mark to send, or `None` if nothing is ready (queue empty, or the open
    /// segment is waiting for more audio).
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        let index = self.sending;
        let segment = self.segments.get_mut(index)?;
        if segment.frames_sent < segment.n_frames {
            let start = segment.frames_sent * MULAW_FRAME_BYTES;
            segment.frames_sent += 1;
            let segment = &self.segments[index];
            return segment.audio.get(start..start + MULAW_FRAME_BYTES).map(Frame::Audio);
        }
        if !segment.closed {
            return None;
        }
        segment.mark_sent = true;
        segment.audio = Vec::new();
        self.sending += 1;
        Some(Frame::Mark(&self.segments[index].mark))
    }

    /// Twilio echoed a mark: that segment, and any before it, has been heard. Unknown names
    /// are ignored (for instance the marks Twilio echoes after a `clear` dropped them).
    pub fn on_mark(&mut self, name: &str) {
        let Some(position) =
            self.segments.iter().take(self.sending).position(|segment| segment.mark == name)
        else {
            return;
        };
        for segment in self.segments.drain(..=position) {
            add_heard(&mut self.heard, segment.turn, &segment.text);
        }
        self.sending -= position + 1;
    }

    /// Drops everything queued (on barge-in, after sending Twilio a `clear`) and reports what
    /// the caller heard and did not. A partly sent segment counts as heard in proportion to
    /// the frames sent, by words. Marks of dropped segments are forgotten.
    pub fn clear(&mut self) -> Interrupted {
        let turn = self.segments.front().map(|segment| segment.turn).or(self.last_turn);
        let mut unheard = Vec::new();
        for segment in self.segments.drain(..) {
            let (heard, rest) = segment.split_by_progress();
            add_heard(&mut self.heard, segment.turn, &heard);
            if !rest.is_empty() {
                unheard.push(rest);
            }
        }
        self.sending = 0;
        let heard_text =
            turn.map(|turn| self.heard_text_of_turn(turn).to_owned()).unwrap_or_default();
        Interrupted { turn, heard_text, unheard_text: unheard.join(" ") }
    }

    /// Nothing queued, nothing open and every mark echoed: the caller has heard everything.
    pub fn is_idle(&self) -> bool {
        self.segments.is_empty()
    }

    /// Audio queued but not yet sent.
    pub fn queued_ms(&self) -> Duration {
        let frames: usize = self
            .segments
            .iter()
            .skip(self.sending)
            .map(|segment| segment.n_frames.saturating_sub(segment.frames_sent))
            .sum();
        FRAME_DURATION * u32::try_from(frames).unwrap_or(u32::MAX)
    }

    /// Marks sent and not yet echoed.
    pub fn pending_marks(&self) -> usize {
        self.sending
    }

    /// The text of `turn` the caller has heard so far (echoed segments, plus the heard part of
    /// a segment cut by [`Self::clear`]); empty if unknown. The last 16 turns are remembered.
    pub fn heard_text_of_turn(&self, turn: u64) -> &str {
        self.heard
            .iter()
            .rev()
            .find(|(heard_turn, _)| *heard_turn == turn)
            .map_or("", |(_, text)| text.as_str())
    }
}

fn add_heard(heard: &mut VecDeque<(u64, String)>, turn: u64, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some((_, existing)) = heard.iter_mut().rev().find(|(heard_turn, _)| *heard_turn == turn)
    {
        if !existing.is_empty() {
            existing.push(' ');
        }
        existing.push_str(text);
        return;
    }
    if heard.len() >= HEARD_TURNS {
        heard.pop_front();
    }
    heard.push_back((turn, text.to_owned()));
}

/// A point in time the pacer can compute with: tokio's or std's `Instant` in the session,
/// [`Duration`] offsets since call start in tests.
pub trait TimePoint: Copy + Ord + Add<Duration, Output = Self> {
    /// `self − duration`, or `self` if that is not representable.
    fn minus(self, duration: Duration) -> Self;

    /// `self − earlier`, or zero if `earlier` is later.
    fn saturating_since(self, earlier: Self) -> Duration;
}

impl TimePoint for Instant {
    fn minus(self, duration: Duration) -> Self {
        self.checked_sub(duration).unwrap_or(self)
    }

    fn saturating_since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl TimePoint for tokio::time::Instant {
    fn minus(self, duration: Duration) -> Self {
        self.checked_sub(duration).unwrap_or(self)
    }

    fn saturating_since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl TimePoint for Duration {
    fn minus(self, duration: Duration) -> Self {
        self.saturating_sub(duration)
    }

    fn saturating_since(self, earlier: Self) -> Duration {
        self.saturating_sub(earlier)
    }
}

/// When the next 20 ms frame is due, on an absolute grid.
///
/// Frame *n* after the anchor plays at `anchor + n × 20 ms` and may be sent `lead` earlier.
/// Sending on an absolute grid (not "20 ms after the last send") keeps timer jitter from
/// accumulating. If a frame is sent after its play time (the queue ran dry), the grid is
/// re-anchored at that moment instead of bursting to catch up, so Twilio never holds more than
/// `lead` (plus the frame playing) of agent audio.
#[derive(Debug, Clone, Copy)]
pub struct Pacer<T: TimePoint = tokio::time::Instant> {
    anchor: T,
    /// Frames sent since `anchor`.
    sent: u32,
    lead: Duration,
}

impl<T: TimePoint> Pacer<T> {
    /// The default lead: three frames.
    pub const DEFAULT_LEAD: Duration = Duration::from_millis(60);

    /// A pacer whose first frame may be sent at once, with the default lead.
    pub fn new(start: T) -> Self {
        Self::with_lead(start, Self::DEFAULT_LEAD)
    }

    /// A pacer with an explicit lead.
    pub fn with_lead(start: T, lead: Duration) -> Self {
        Self { anchor: start, sent: 0, lead }
    }

    /// When the next frame may be sent (possibly in the past: send now).
    pub fn next_due(&self) -> T {
        self.play_time_of_next().minus(self.lead)
    }

    /// Records that a frame was sent at `at`; returns when it plays (its point on the grid).
    pub fn on_sent(&mut self, at: T) -> T {
        if self.play_time_of_next() < at {
            self.anchor = at;
            self.sent = 0;
        }
        let plays_at = self.play_time_of_next();
        self.sent = self.sent.saturating_add(1);
        plays_at
    }

    /// How much audio is buffered at Twilio at `at`, by this pacer's account (sent audio
    /// whose play time has not passed).
    pub fn buffered(&self, at: T) -> Duration {
        self.play_time_of_next().saturating_since(at)
    }

    fn play_time_of_next(&self) -> T {
        self.anchor + FRAME_DURATION * self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(n_bytes: usize, value: u8) -> Vec<u8> {
        vec![value; n_bytes]
    }

    /// Sends everything ready and returns it, as ("audio", first byte) or ("mark", name).
    fn drain(playout: &mut Playout) -> Vec<(String, String)> {
        let mut sent = Vec::new();
        while let Some(frame) = playout.next_frame() {
            sent.push(match frame {
                Frame::Audio(bytes) => {
                    assert_eq!(bytes.len(), MULAW_FRAME_BYTES);
                    ("audio".to_owned(), format!("{:02x}{:02x}", bytes[0], bytes[159]))
                }
                Frame::Mark(name) => ("mark".to_owned(), name.to_owned()),
            });
        }
        sent
    }

    fn entry(kind: &str, value: &str) -> (String, String) {
        (kind.to_owned(), value.to_owned())
    }

    #[test]
    fn enqueued_audio_comes_out_as_frames_then_the_mark() {
        let mut playout = Playout::new();
        let mark = playout.enqueue(3, "Hello there.", &audio(400, 0x11));
        assert_eq!(mark, "3-1");
        assert!(playout.has_frames());
        assert_eq!(playout.queued_ms(), Duration::from_millis(60));
        // 400 bytes = two whole frames and a third padded with μ-law silence.
        assert_eq!(
            drain(&mut playout),
            [
                entry("audio", "1111"),
                entry("audio", "1111"),
                entry("audio", "11ff"),
                entry("mark", "3-1"),
            ]
        );
        assert!(!playout.has_frames());
        assert_eq!(playout.pending_marks(), 1);
        assert!(!playout.is_idle());
    }

    #[test]
    fn streamed_audio_is_padded_only_at_the_end_of_the_segment() {
        let mut playout = Playout::new();
        playout.push_audio(1, &audio(100, 0x22));
        assert!(!playout.has_frames(), "no whole frame yet");
        assert_eq!(playout.next_frame(), None);
        playout.push_audio(1, &audio(100, 0x33));
        assert_eq!(drain(&mut playout), [entry("audio", "2233")]);
        assert!(!playout.is_idle(), "the segment is still open");
        let mark = playout.end_segment(1, "One.");
        assert_eq!(drain(&mut playout), [entry("audio", "33ff"), entry("mark", &mark)]);
    }

    #[test]
    fn marks_come_in_segment_order_with_unique_names() {
        let mut playout = Playout::new();
        let first = playout.enqueue(1, "One.", &audio(160, 1));
        let second = playout.enqueue(1, "Two.", &audio(160, 2));
        let third = playout.enqueue(2, "Three.", &audio(160, 3));
        assert_eq!([first.as_str(), second.as_str(), third.as_str()], ["1-1", "1-2", "2-3"]);
        assert_eq!(
            drain(&mut playout),
            [
                entry("audio", "0101"),
                entry("mark", "1-1"),
                entry("audio", "0202"),
                entry("mark", "1-2"),
                entry("audio", "0303"),
                entry("mark", "2-3"),
            ]
        );
        assert_eq!(playout.pending_marks(), 3);
    }

    #[test]
    fn an_echoed_mark_makes_its_segment_and_earlier_ones_heard() {
        let mut playout = Playout::new();
        playout.enqueue(1, "One.", &audio(160, 1));
        playout.enqueue(1, "Two.", &audio(160, 2));
        playout.enqueue(1, "Three.", &audio(160, 3));
        drain(&mut playout);
        playout.on_mark("1-1");
        assert_eq!(playout.heard_text_of_turn(1), "One.");
        assert_eq!(playout.pending_marks(), 2);
        // A lost echo: the later mark implies the earlier segment played.
        playout.on_mark("1-3");
        assert_eq!(playout.heard_text_of_turn(1), "One. Two. Three.");
        assert!(playout.is_idle());
        assert_eq!(playout.pending_marks(), 0);
        playout.on_mark("1-3");
        playout.on_mark("9-9");
        assert_eq!(playout.heard_text_of_turn(1), "One. Two. Three.", "repeats change nothing");
    }

    #[test]
    fn a_mark_not_yet_sent_cannot_be_echoed() {
        let mut playout = Playout::new();
        playout.enqueue(1, "One.", &audio(160, 1));
        playout.on_mark("1-1");
        assert_eq!(playout.heard_text_of_turn(1), "");
        assert_eq!(drain(&mut playout).len(), 2, "the segment is still queued");
    }

    #[test]
    fn clear_mid_segment_reports_heard_and_unheard_text_by_words() {
        let mut playout = Playout::new();
        playout.enqueue(4, "Sure, I can help.", &audio(320, 1));
        playout.enqueue(4, "Your booking is on Monday the fifth at ten o'clock.", &audio(1600, 2));
        playout.enqueue(4, "Anything else?", &audio(320, 3));
        // The first segment played; 4 of the second's 10 frames were sent.
        drain_frames(&mut playout, 3);
        playout.on_mark("4-1");
        drain_frames(&mut playout, 4);

        let interrupted = playout.clear();

        assert_eq!(
            interrupted,
            Interrupted {
                turn: Some(4),
                heard_text: "Sure, I can help. Your booking is on".to_owned(),
                unheard_text: "Monday the fifth at ten o'clock. Anything else?".to_owned(),
            }
        );
        assert!(playout.is_idle());
        assert!(!playout.has_frames());
        assert_eq!(playout.pending_marks(), 0);
        assert_eq!(playout.queued_ms(), Duration::ZERO);
        assert_eq!(playout.heard_text_of_turn(4), "Sure, I can help. Your booking is on");
        // Twilio echoes the marks that the clear dropped: they change nothing.
        playout.on_mark("4-2");
        assert_eq!(playout.heard_text_of_turn(4), "Sure, I can help. Your booking is on");
    }

    fn drain_frames(playout: &mut Playout, n_items: usize) {
        for _ in 0..n_items {
            assert!(playout.next_frame().is_some());
        }
    }

    #[test]
    fn a_fully_sent_segment_awaiting_its_echo_counts_as_heard_on_clear() {
        let mut playout = Playout::new();
        playout.enqueue(2, "Hello there.", &audio(320, 1));
        playout.enqueue(2, "How are you?", &audio(320, 1));
        drain_frames(&mut playout, 3);
        let interrupted = playout.clear();
        assert_eq!(interrupted.heard_text, "Hello there.");
        assert_eq!(interrupted.unheard_text, "How are you?");
    }

    #[test]
    fn clear_with_nothing_queued_reports_the_last_turn() {
        let mut playout = Playout::new();
        assert_eq!(playout.clear(), Interrupted::default());
        playout.enqueue(5, "Done.", &audio(160, 1));
        drain(&mut playout);
        playout.on_mark("5-1");
        let interrupted = playout.clear();
        assert_eq!(interrupted.turn, Some(5));
        assert_eq!(interrupted.heard_text, "Done.");
        assert_eq!(interrupted.unheard_text, "");
    }

    #[test]
    fn audio_of_a_new_turn_closes_the_open_segment_of_the_old_one() {
        let mut playout = Playout::new();
        playout.push_audio(1, &audio(100, 1));
        playout.push_audio(2, &audio(160, 2));
        let mark = playout.end_segment(2, "New turn.");
        assert_eq!(mark, "2-2");
        assert_eq!(
            drain(&mut playout),
            [
                entry("audio", "01ff"),
                entry("mark", "1-1"),
                entry("audio", "0202"),
                entry("mark", "2-2"),
            ]
        );
    }

    #[test]
    fn a_segment_without_audio_still_yields_its_mark() {
        let mut playout = Playout::new();
        let mark = playout.end_segment(1, "Silent.");
        assert_eq!(drain(&mut playout), [entry("mark", &mark)]);
        playout.on_mark(&mark);
        assert_eq!(playout.heard_text_of_turn(1), "Silent.");
    }

    #[test]
    fn heard_text_is_remembered_for_the_last_sixteen_turns() {
        let mut playout = Playout::new();
        for turn in 1..=20 {
            let mark = playout.enqueue(turn, &format!("Turn {turn}."), &audio(160, 1));
            drain(&mut playout);
            playout.on_mark(&mark);
        }
        assert_eq!(playout.heard_text_of_turn(4), "");
        assert_eq!(playout.heard_text_of_turn(5), "Turn 5.");
        assert_eq!(playout.heard_text_of_turn(20), "Turn 20.");
    }

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Runs a sender that wakes at `wakeups` and sends every due frame of `available`; returns
    /// the send times.
    fn sends(pacer: &mut Pacer<Duration>, wakeups: &[u64], mut available: usize) -> Vec<u64> {
        let mut sent_at = Vec::new();
        for &now in wakeups {
            let now = ms(now);
            while available > 0 && pacer.next_due() <= now {
                pacer.on_sent(now);
                available -= 1;
                sent_at.push(u64::try_from(now.as_millis()).unwrap());
            }
        }
        sent_at
    }

    #[test]
    fn pacer_sends_the_lead_at_once_then_one_frame_per_twenty_ms() {
        let mut pacer = Pacer::new(ms(1000));
        let wakeups: Vec<u64> = (1000..=1100).step_by(10).collect();
        // Frame 0 plays at 1000 ms; frames 1–3 fill the 60 ms lead; then one per 20 ms.
        assert_eq!(
            sends(&mut pacer, &wakeups, 8),
            [1000, 1000, 1000, 1000, 1020, 1040, 1060, 1080]
        );
        assert_eq!(pacer.next_due(), ms(1100));
    }

    #[test]
    fn pacer_keeps_an_absolute_grid_despite_late_wakeups() {
        let mut pacer = Pacer::new(ms(0));
        // Waking 7 ms late each time (within the lead) does not shift the grid.
        assert_eq!(sends(&mut pacer, &[0, 27, 47, 67], 7), [0, 0, 0, 0, 27, 47, 67]);
        assert_eq!(pacer.next_due(), ms(80));
    }

    #[test]
    fn pacer_re_anchors_after_an_underrun_instead_of_bursting() {
        let mut pacer = Pacer::new(ms(0));
        assert_eq!(sends(&mut pacer, &[0], 2), [0, 0]);
        // The queue ran dry; audio resumes at 500 ms: no catch-up burst beyond the lead.
        assert_eq!(sends(&mut pacer, &[500, 510, 520], 10), [500, 500, 500, 500, 520]);
        assert!(pacer.buffered(ms(520)) <= Pacer::<Duration>::DEFAULT_LEAD + FRAME_DURATION);
    }

    #[test]
    fn pacer_reports_each_frames_play_time_on_its_grid() {
        let mut pacer = Pacer::new(ms(1000));
        // The lead goes out at once but plays on the grid.
        let played: Vec<Duration> = (0..4).map(|_| pacer.on_sent(ms(1000))).collect();
        assert_eq!(played, [ms(1000), ms(1020), ms(1040), ms(1060)]);
        // After an underrun the grid restarts at the late send.
        assert_eq!(pacer.on_sent(ms(1500)), ms(1500));
        assert_eq!(pacer.on_sent(ms(1500)), ms(1520));
    }

    #[test]
    fn pacer_never_holds_more_than_the_lead_ahead() {
        let mut pacer = Pacer::new(ms(0));
        let wakeups: Vec<u64> = (0..2000).step_by(5).collect();
        let mut available = 1000;
        for &now in &wakeups {
            let now = ms(now);
            while available > 0 && pacer.next_due() <= now {
                pacer.on_sent(now);
                available -= 1;
                assert!(pacer.buffered(now) <= ms(80), "at {now:?}");
            }
        }
    }

    #[test]
    fn pacer_works_with_std_and_tokio_instants() {
        let tokio_start = tokio::time::Instant::now();
        let mut tokio_pacer = Pacer::new(tokio_start);
        for _ in 0..3 {
            tokio_pacer.on_sent(tokio_start);
        }
        assert_eq!(tokio_pacer.next_due(), tokio_start);
        let start = Instant::now();
        let mut pacer = Pacer::new(start);
        for _ in 0..4 {
            assert!(pacer.next_due() <= start);
            pacer.on_sent(start);
        }
        assert_eq!(pacer.next_due(), start + ms(20));
    }
}
