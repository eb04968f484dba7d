//! Voicemail detection from the call itself (docs/engine.md#voicemail): a phrase matcher over
//! what the callee says, and a beep detector over the callee's audio.
//!
//! Both are pure: text and μ-law frames go in, decisions come out; no clock, no I/O. The session
//! feeds them on an outbound call's first seconds; carrier AMD (when `amd_enabled`) races them,
//! and whichever fires first decides.
//!
//! - [`PhraseMatcher`]: the greeting phrases of voicemail systems in English, French, Spanish,
//!   German and Arabic ("please leave a message", "laissez un message", "deje su mensaje",
//!   "hinterlassen sie eine nachricht", "اترك رسالة", …). Text is folded before matching —
//!   lower case, accents and Arabic diacritics removed, Arabic letter variants unified,
//!   punctuation to spaces — so recogniser spelling differences do not matter. A phrase must
//!   match on word boundaries ("message" does not match "messages…" mid-word).
//! - [`BeepDetector`]: the tone a voicemail system plays before recording. A beep is a single
//!   steady tone (400–2,100 Hz in practice) lasting 150 ms or more; speech and noise spread their
//!   energy over many frequencies and move. Per 20 ms frame, Goertzel filters measure the power
//!   at candidate frequencies; a frame is *tonal* when one frequency holds most of the frame's
//!   energy and the frame is loud enough. Enough consecutive tonal frames at the same frequency
//!   make a beep, reported when the tone stops — the moment to start speaking.

use nixflex_pipeline::audio::mulaw;

/// Greeting phrases of voicemail systems, by language (folded: see [`fold`]).
const PHRASES: &[(&str, &str)] = &[
    // English
    ("en", "leave a message"),
    ("en", "leave your message"),
    ("en", "leave me a message"),
    ("en", "leave your name and number"),
    ("en", "after the tone"),
    ("en", "after the beep"),
    ("en", "at the tone"),
    ("en", "you have reached"),
    ("en", "you ve reached"),
    ("en", "is not available"),
    ("en", "are not available"),
    ("en", "cannot take your call"),
    ("en", "can t take your call"),
    ("en", "can t come to the phone"),
    ("en", "unable to take your call"),
    ("en", "unable to answer"),
    ("en", "voicemail"),
    ("en", "voice mail"),
    ("en", "mailbox"),
    ("en", "record your message"),
    ("en", "please record"),
    ("en", "no one is available"),
    ("en", "the person you are calling"),
    ("en", "the number you have dialed"),
    ("en", "get back to you"),
    ("en", "call you back"),
    // French
    ("fr", "laissez un message"),
    ("fr", "laissez votre message"),
    ("fr", "laisser un message"),
    ("fr", "apres le bip"),
    ("fr", "apres le signal sonore"),
    ("fr", "messagerie vocale"),
    ("fr", "vous etes bien sur"),
    ("fr", "n est pas disponible"),
    ("fr", "ne peut pas repondre"),
    ("fr", "je vous rappellerai"),
    // Spanish
    ("es", "deje su mensaje"),
    ("es", "deje un mensaje"),
    ("es", "dejar un mensaje"),
    ("es", "despues del tono"),
    ("es", "buzon de voz"),
    ("es", "no esta disponible"),
    ("es", "no puede atender"),
    ("es", "ha llamado a"),
    // German
    ("de", "hinterlassen sie eine nachricht"),
    ("de", "hinterlassen sie mir eine nachricht"),
    ("de", "nachricht nach dem signalton"),
    ("de", "nach dem signalton"),
    ("de", "nach dem piepton"),
    ("de", "mailbox von"),
    ("de", "anrufbeantworter"),
    ("de", "ist nicht erreichbar"),
    ("de", "ist zur zeit nicht"),
    ("de", "rufe sie zuruck"),
    // Arabic
    ("ar", "اترك رساله"),
    ("ar", "اترك رسالتك"),
    ("ar", "اترك رسالة"),
    ("ar", "بعد سماع الصفاره"),
    ("ar", "بعد الصفاره"),
    ("ar", "البريد الصوتي"),
    ("ar", "غير متاح حاليا"),
    ("ar", "لا يمكن الرد"),
    ("ar", "الرجاء ترك رساله"),
];

/// A phrase that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhraseMatch {
    /// The phrase (folded).
    pub phrase: &'static str,
    /// Its language (`en`, `fr`, `es`, `de`, `ar`).
    pub language: &'static str,
}

/// Folds text for matching: lower case, Latin accents and Arabic diacritics removed, Arabic
/// letter variants unified (alef forms → ا, ة → ه, ى → ي), anything that is not a letter or a
/// digit to one space, trimmed.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars().flat_map(char::to_lowercase) {
        let mapped = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => Some('a'),
            'ç' => Some('c'),
            'è' | 'é' | 'ê' | 'ë' => Some('e'),
            'ì' | 'í' | 'î' | 'ï' => Some('i'),
            'ñ' => Some('n'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => Some('o'),
            'ù' | 'ú' | 'û' | 'ü' => Some('u'),
            'ý' | 'ÿ' => Some('y'),
            'ß' => {
                out.push_str("ss");
                space = false;
                continue;
            }
            'أ' | 'إ' | 'آ' | 'ٱ' => Some('ا'),
            'ة' => Some('ه'),
            'ى' => Some('ي'),
            // Arabic diacritics (tashkeel) and the tatweel: dropped.
            '\u{064B}'..='\u{0652}' | '\u{0640}' => continue,
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        };
        match mapped {
            Some(c) => {
                out.push(c);
                space = false;
            }
            None if !space => {
                out.push(' ');
                space = true;
            }
            None => {}
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Watches what the callee says for a voicemail greeting.
#[derive(Debug, Default)]
pub struct PhraseMatcher {
    /// Everything heard so far, folded, with a space at both ends (for word boundaries).
    heard: String,
}

/// Text kept: greetings are short, and detection only runs on the call's first seconds.
const MAX_HEARD_CHARS: usize = 2000;

impl PhraseMatcher {
    /// A matcher that has heard nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a final transcript and returns the most specific voicemail phrase now present, if
    /// any (a phrase may span two transcripts).
    pub fn push(&mut self, transcript: &str) -> Option<PhraseMatch> {
        let folded = fold(transcript);
        if folded.is_empty() {
            return None;
        }
        if self.heard.is_empty() {
            self.heard.push(' ');
        }
        self.heard.push_str(&folded);
        self.heard.push(' ');
        if self.heard.len() > MAX_HEARD_CHARS {
            let mut cut = self.heard.len() - MAX_HEARD_CHARS;
            while !self.heard.is_char_boundary(cut) {
                cut += 1;
            }
            self.heard.replace_range(..cut, " ");
        }
        find_phrase(&self.heard)
    }
}

/// The longest (most specific) phrase of [`PHRASES`] in `padded` (folded text with a space at
/// both ends): "mailbox von" says more about the language than "mailbox".
fn find_phrase(padded: &str) -> Option<PhraseMatch> {
    PHRASES
        .iter()
        .filter(|(_, phrase)| padded.contains(&format!(" {phrase} ")))
        .max_by_key(|(_, phrase)| phrase.chars().count())
        .map(|(language, phrase)| PhraseMatch { phrase, language })
}

/// Whether `transcript` alone contains a voicemail phrase.
pub fn is_voicemail_greeting(transcript: &str) -> Option<PhraseMatch> {
    find_phrase(&format!(" {} ", fold(transcript)))
}

/// Candidate beep frequencies, Hz: voicemail systems use 425–2,000 Hz tones.
const BEEP_FREQUENCIES: [f64; 18] = [
    400.0, 425.0, 440.0, 480.0, 500.0, 600.0, 700.0, 800.0, 850.0, 900.0, 950.0, 1000.0, 1100.0,
    1200.0, 1400.0, 1600.0, 1800.0, 2000.0,
];
/// Frames of steady tone that make a beep (8 × 20 ms = 160 ms).
const BEEP_MIN_FRAMES: u32 = 8;
/// A tone longer than this is a dial tone or a fax, not a beep (5 s).
const BEEP_MAX_FRAMES: u32 = 250;
/// Share of a frame's energy one frequency must hold for the frame to be tonal.
const TONAL_SHARE: f64 = 0.6;
/// Mean square amplitude below which a frame is too quiet to count (about -50 dBFS).
const MIN_POWER: f64 = 10_000.0;

/// A beep that ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beep {
    /// Its frequency (the nearest candidate), Hz.
    pub frequency_hz: f64,
    /// Its length in 20 ms frames.
    pub frames: u32,
}

/// Finds the tone a voicemail system plays before it records (see the module documentation).
#[derive(Debug, Default)]
pub struct BeepDetector {
    /// The candidate index of the current run of tonal frames.
    run_bin: Option<usize>,
    /// Its length in frames.
    run_frames: u32,
    /// Decoded samples of the current frame (reused).
    samples: Vec<i16>,
}

impl BeepDetector {
    /// A detector that has heard nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one frame of μ-law audio (any length; 160 bytes = 20 ms at 8 kHz). Returns the beep
    /// when a tone long enough to be one has just ended.
    pub fn push_frame(&mut self, mulaw_frame: &[u8]) -> Option<Beep> {
        self.samples.clear();
        mulaw::decode_into(mulaw_frame, &mut self.samples);
        let bin = tonal_bin(&self.samples);
        match (bin, self.run_bin) {
            // The tone goes on (the same frequency, or its neighbour: the candidates are close).
            (Some(bin), Some(run)) if bin.abs_diff(run) <= 1 => {
                self.run_frames += 1;
                None
            }
            (now, _) => {
                let ended = self.finish_run();
                self.run_bin = now;
                self.run_frames = u32::from(now.is_some());
                ended
            }
        }
    }

    /// The run that just ended, if it was a beep.
    fn finish_run(&mut self) -> Option<Beep> {
        let bin = self.run_bin.take()?;
        let frames = std::mem::take(&mut self.run_frames);
        (BEEP_MIN_FRAMES..=BEEP_MAX_FRAMES)
            .contains(&frames)
            .then(|| Beep { frequency_hz: BEEP_FREQUENCIES[bin], frames })
    }
}

/// The candidate frequency holding most of the frame's energy, when the frame is loud and tonal.
fn tonal_bin(samples: &[i16]) -> Option<usize> {
    if samples.is_empty() {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = samples.len() as f64;
    let energy: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    if energy / n < MIN_POWER {
        return None;
    }
    let (bin, power) = BEEP_FREQUENCIES
        .iter()
        .enumerate()
        .map(|(i, f)| (i, goertzel_power(samples, *f)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    // A sinusoid of amplitude A over N samples: Goertzel power ≈ (A·N/2)², energy ≈ A²·N/2, so
    // power / (energy · N / 2) ≈ 1 for a pure tone on the candidate frequency.
    let share = power / (energy * n / 2.0);
    (share >= TONAL_SHARE).then_some(bin)
}

/// Goertzel's algorithm: the power of `samples` at `frequency_hz` (8 kHz sampling).
fn goertzel_power(samples: &[i16], frequency_hz: f64) -> f64 {
    let omega = 2.0 * std::f64::consts::PI * frequency_hz / 8000.0;
    let coeff = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for sample in samples {
        let s0 = f64::from(*sample) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_removes_case_accents_diacritics_and_punctuation() {
        assert_eq!(fold("  Après le BIP, merci!  "), "apres le bip merci");
        assert_eq!(fold("Buzón de voz."), "buzon de voz");
        assert_eq!(
            fold("Hinterlassen Sie eine Nachricht nach dem Signalton — danke"),
            "hinterlassen sie eine nachricht nach dem signalton danke"
        );
        assert_eq!(fold("You've reached Sam"), "you ve reached sam");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("اُترُك رِسالة"), "اترك رساله");
        assert_eq!(fold("إترك رسالتك"), "اترك رسالتك");
    }

    #[test]
    fn greetings_in_five_languages_are_recognised() {
        let greetings = [
            ("Hi, you've reached Dana. Please leave a message after the tone.", "en"),
            ("The person you are calling is not available.", "en"),
            (
                "Bonjour, vous êtes bien sur le répondeur de Paul, laissez un message après le bip.",
                "fr",
            ),
            ("Hola, ha llamado a Lucía. Deje su mensaje después del tono.", "es"),
            ("Hallo, hier ist die Mailbox von Jonas. Hinterlassen Sie eine Nachricht.", "de"),
            ("مرحبا، الرجاء ترك رسالة بعد سماع الصفارة", "ar"),
        ];
        for (greeting, language) in greetings {
            let found = is_voicemail_greeting(greeting).unwrap_or_else(|| panic!("{greeting}"));
            assert_eq!(found.language, language, "{greeting}: {found:?}");
        }
    }

    #[test]
    fn ordinary_answers_are_not_voicemail() {
        for answer in [
            "Hello?",
            "Yes, this is Dana speaking, who's calling?",
            "Oui allô, c'est qui ?",
            "¿Sí, dígame?",
            "Ja, hallo, wer ist da?",
            "نعم، مرحبا",
            "I got your messages yesterday", // "message" inside a longer word does not count
            "Sorry, I'm driving, can you call later",
        ] {
            assert_eq!(is_voicemail_greeting(answer), None, "{answer}");
        }
    }

    #[test]
    fn a_phrase_split_across_two_transcripts_still_matches() {
        let mut matcher = PhraseMatcher::new();
        assert_eq!(matcher.push("Hi, this is Sam. Please leave"), None);
        let found = matcher.push("a message. Thanks!").unwrap();
        assert_eq!(found.phrase, "leave a message");
    }

    #[test]
    fn the_matcher_keeps_bounded_text() {
        let mut matcher = PhraseMatcher::new();
        for _ in 0..1000 {
            assert_eq!(matcher.push("hello there how are you today"), None);
        }
        assert!(matcher.heard.len() <= MAX_HEARD_CHARS + 40);
        assert!(matcher.push("leave a message").is_some());
    }

    fn tone(frequency_hz: f64, frames: usize, amplitude: f64) -> Vec<Vec<u8>> {
        (0..frames)
            .map(|f| {
                (0..160)
                    .map(|i| {
                        #[allow(clippy::cast_precision_loss)]
                        let t = (f * 160 + i) as f64 / 8000.0;
                        #[allow(clippy::cast_possible_truncation)]
                        let sample = (amplitude
                            * (2.0 * std::f64::consts::PI * frequency_hz * t).sin())
                            as i16;
                        mulaw::encode(sample)
                    })
                    .collect()
            })
            .collect()
    }

    /// Pseudo-random noise (a fixed LCG, so the test is deterministic).
    fn noise(frames: usize, amplitude: f64) -> Vec<Vec<u8>> {
        let mut state: u32 = 12345;
        (0..frames)
            .map(|_| {
                (0..160)
                    .map(|_| {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        let unit = f64::from((state >> 16) & 0x7fff) / 32767.0 * 2.0 - 1.0;
                        #[allow(clippy::cast_possible_truncation)]
                        let sample = (unit * amplitude) as i16;
                        mulaw::encode(sample)
                    })
                    .collect()
            })
            .collect()
    }

    fn run(detector: &mut BeepDetector, frames: &[Vec<u8>]) -> Vec<Beep> {
        frames.iter().filter_map(|frame| detector.push_frame(frame)).collect()
    }

    #[test]
    fn a_beep_is_reported_when_it_ends() {
        let mut detector = BeepDetector::new();
        let mut frames = noise(50, 3000.0); // the greeting (speech-like noise)
        frames.extend(tone(1000.0, 15, 8000.0)); // 300 ms beep
        let beeps_before_silence = run(&mut detector, &frames);
        assert!(beeps_before_silence.is_empty(), "not before the tone ends");
        let beeps = run(&mut detector, &[vec![0xFF; 160]]);
        assert_eq!(beeps.len(), 1);
        assert!((beeps[0].frequency_hz - 1000.0).abs() < 1.0);
        assert!((14..=16).contains(&beeps[0].frames), "{beeps:?}");
    }

    #[test]
    fn beeps_of_common_frequencies_are_found() {
        for frequency in [440.0, 850.0, 1400.0, 2000.0] {
            let mut detector = BeepDetector::new();
            let mut frames = tone(frequency, 12, 6000.0);
            frames.push(vec![0xFF; 160]);
            let beeps = run(&mut detector, &frames);
            assert_eq!(beeps.len(), 1, "{frequency} Hz");
        }
    }

    #[test]
    fn noise_short_blips_long_tones_and_quiet_tones_are_not_beeps() {
        let mut detector = BeepDetector::new();
        let mut frames = noise(200, 8000.0);
        frames.extend(tone(1000.0, 4, 8000.0)); // an 80 ms blip
        frames.extend(noise(10, 8000.0));
        frames.extend(tone(440.0, 300, 8000.0)); // a 6 s dial tone
        frames.extend(noise(10, 8000.0));
        frames.extend(tone(1000.0, 20, 30.0)); // far too quiet
        frames.push(vec![0xFF; 160]);
        assert_eq!(run(&mut detector, &frames), Vec::new());
    }
}
