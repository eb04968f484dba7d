//! Action tags in streamed LLM text (docs/engine.md#action-tags).
//!
//! The model triggers built-in actions by writing inline tags: `[END_CALL]`, `[TRANSFER:+E164]`,
//! `[TRANSFER:]` (the agent's transfer number), `[TRANSFER:+E164:warm]`, `[SEND_SMS: text]` and
//! the legacy `[WAIT:X]`. [`TagParser`] finds them in the token stream, however the tokens split
//! them, removes them from the text (the caller never hears a tag) and returns them in order of
//! appearance, interleaved with the text around them.
//!
//! Rules:
//! - Tag names are case-insensitive, and `_`, `-` or spaces between their letters are ignored
//!   (`[end call]` is `[END_CALL]`).
//! - Text that might still become a tag is held back, and released as text as soon as it cannot:
//!   `[note]`, `[1]` and `[wait for it]` are spoken text.
//! - A known tag name with bad syntax (`[TRANSFER:abc]`, `[SEND_SMS:]`) becomes
//!   [`Action::Malformed`]: stripped, not spoken, for the caller to log.
//! - Held-back text is capped at [`MAX_TAG_CHARS`], so a stray `[` never swallows a reply.
//!
//! The parser is pure (no I/O, no clock); each character is handled in constant amortised time.

/// The longest tag, in characters, including the brackets. A `[SEND_SMS: …` that grows past it
/// without a closing `]` becomes [`Action::Malformed`] and the text after it is spoken again.
pub const MAX_TAG_CHARS: usize = 500;

/// The longest `[` + name part (with spaces and separators) before a `:` or `]`.
const MAX_NAME_PART_CHARS: usize = 24;

/// The longest `[WAIT:X]` pause.
pub const MAX_WAIT_SECONDS: f64 = 60.0;

/// The tag names, normalised: upper case, separators removed.
const TAG_NAMES: [&[u8]; 4] = [b"ENDCALL", b"TRANSFER", b"SENDSMS", b"WAIT"];

/// The longest normalised name.
const MAX_NAME_LETTERS: usize = 8;

/// A piece of the model's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text to speak (may be only whitespace; never contains a recognised tag).
    Text(String),
    /// A tag, removed from the spoken text.
    Action(Action),
}

/// A built-in action requested by a tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `[END_CALL]`: finish speaking, then hang up.
    EndCall,
    /// `[TRANSFER:…]`: hand the caller over.
    Transfer {
        /// The E.164 destination; `None` for a bare `[TRANSFER:]` (the agent's
        /// `transfer_number`).
        number: Option<String>,
        /// `true` for the legacy `[TRANSFER:+E164:warm]` form.
        warm: bool,
    },
    /// `[SEND_SMS: text]`: text the caller in the background.
    SendSms {
        /// The message, trimmed; may contain `:`.
        text: String,
    },
    /// `[WAIT:X]` (legacy): pause before continuing.
    Wait {
        /// The pause, `0..=MAX_WAIT_SECONDS`.
        seconds: f64,
    },
    /// A known tag name with bad syntax, or a tag cut off by the end of the reply or by
    /// [`MAX_TAG_CHARS`]. Not spoken; log it and carry on.
    Malformed {
        /// The tag as written, brackets included (truncated at the cap).
        raw: String,
    },
}

impl Action {
    /// A short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EndCall => "end_call",
            Self::Transfer { .. } => "transfer",
            Self::SendSms { .. } => "send_sms",
            Self::Wait { .. } => "wait",
            Self::Malformed { .. } => "malformed",
        }
    }
}

/// Where the parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Plain text.
    Text,
    /// After `[`, reading the tag name.
    Name,
    /// After `NAME:`, reading the argument up to `]`.
    Body,
}

/// Finds action tags in a streamed reply; see the module documentation.
#[derive(Debug, Clone)]
pub struct TagParser {
    phase: Phase,
    /// The tag text held back so far, from its `[`.
    held: String,
    /// Characters in `held`.
    held_chars: usize,
    /// The name letters seen so far, upper-cased, separators dropped.
    name: [u8; MAX_NAME_LETTERS],
    /// How many of `name` are used.
    name_len: usize,
}

impl Default for TagParser {
    fn default() -> Self {
        Self::new()
    }
}

impl TagParser {
    /// A parser at the start of a reply.
    pub fn new() -> Self {
        Self {
            phase: Phase::Text,
            held: String::new(),
            held_chars: 0,
            name: [0; MAX_NAME_LETTERS],
            name_len: 0,
        }
    }

    /// Takes the next piece of the reply and returns what is now certain: text that cannot be
    /// part of a tag, and completed tags, in order.
    pub fn push(&mut self, delta: &str) -> Vec<Segment> {
        let mut out = Vec::new();
        self.feed(delta, &mut out);
        out
    }

    /// Ends the reply: a held `[` that never became a tag is returned as text, an unterminated
    /// known tag as [`Action::Malformed`]. The parser is then ready for the next reply.
    pub fn finish(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        while self.phase != Phase::Text {
            if self.phase == Phase::Body || self.name_is_complete() {
                let raw = std::mem::take(&mut self.held);
                out.push(Segment::Action(Action::Malformed { raw }));
                self.reset();
            } else {
                self.release(&mut out);
            }
        }
        self.reset();
        out
    }

    /// Drops anything held back (e.g. when the reply is interrupted).
    pub fn reset(&mut self) {
        self.phase = Phase::Text;
        self.held.clear();
        self.held_chars = 0;
        self.name_len = 0;
    }

    /// Whether text is being held back because it may still become a tag.
    pub fn is_holding(&self) -> bool {
        self.phase != Phase::Text
    }

    fn feed(&mut self, text: &str, out: &mut Vec<Segment>) {
        let mut rest = text;
        while !rest.is_empty() {
            if self.phase == Phase::Text {
                match rest.find('[') {
                    Some(open) => {
                        push_text(out, &rest[..open]);
                        self.phase = Phase::Name;
                        self.held.push('[');
                        self.held_chars = 1;
                        rest = &rest[open + 1..];
                    }
                    None => {
                        push_text(out, rest);
                        return;
                    }
                }
            } else {
                let mut chars = rest.chars();
                let Some(character) = chars.next() else { return };
                rest = chars.as_str();
                self.feed_held(character, out);
            }
        }
    }

    fn feed_held(&mut self, character: char, out: &mut Vec<Segment>) {
        self.held.push(character);
        self.held_chars += 1;
        match self.phase {
            Phase::Text => {}
            Phase::Name => self.feed_name(character, out),
            Phase::Body => {
                if character == ']' {
                    self.complete(out);
                } else if self.held_chars >= MAX_TAG_CHARS {
                    let raw = std::mem::take(&mut self.held);
                    out.push(Segment::Action(Action::Malformed { raw }));
                    self.reset();
                }
            }
        }
    }

    fn feed_name(&mut self, character: char, out: &mut Vec<Segment>) {
        if self.held_chars > MAX_NAME_PART_CHARS {
            return self.release(out);
        }
        match character {
            ':' if self.name_is_complete() => self.phase = Phase::Body,
            ']' if self.name_is_complete() => self.complete(out),
            ' ' | '\t' => {}
            '_' | '-' if self.name_len > 0 => {}
            letter if letter.is_ascii_alphabetic() && self.name_len < MAX_NAME_LETTERS => {
                self.name[self.name_len] = u8::try_from(letter.to_ascii_uppercase()).unwrap_or(0);
                self.name_len += 1;
                let name = &self.name[..self.name_len];
                if !TAG_NAMES.iter().any(|tag| tag.starts_with(name)) {
                    self.release(out);
                }
            }
            _ => self.release(out),
        }
    }

    fn name_is_complete(&self) -> bool {
        TAG_NAMES.contains(&&self.name[..self.name_len])
    }

    /// The held text cannot be a tag: its `[` is text, and the rest is read again (it may hold
    /// another `[`).
    fn release(&mut self, out: &mut Vec<Segment>) {
        let held = std::mem::take(&mut self.held);
        self.reset();
        push_text(out, "[");
        self.feed(held.get(1..).unwrap_or_default(), out);
    }

    /// A `]` closed a tag with a known name.
    fn complete(&mut self, out: &mut Vec<Segment>) {
        let raw = std::mem::take(&mut self.held);
        let action = parse_tag(&self.name[..self.name_len], &raw);
        out.push(Segment::Action(action));
        self.reset();
    }
}

/// Appends text to `out`, merging with a preceding text segment.
fn push_text(out: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Segment::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Segment::Text(text.to_owned()));
    }
}

/// Interprets a complete tag `raw` (`[…]`) whose normalised name is `name`.
fn parse_tag(name: &[u8], raw: &str) -> Action {
    let inner = raw.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(raw);
    let body = inner.split_once(':').map(|(_, body)| body.trim());
    let action = match name {
        b"ENDCALL" => body.is_none_or(str::is_empty).then_some(Action::EndCall),
        b"TRANSFER" => parse_transfer(body.unwrap_or_default()),
        b"SENDSMS" => body
            .filter(|text| !text.is_empty())
            .map(|text| Action::SendSms { text: text.to_owned() }),
        b"WAIT" => body.and_then(parse_wait),
        _ => None,
    };
    action.unwrap_or_else(|| Action::Malformed { raw: raw.to_owned() })
}

/// `""`, `+E164`, `+E164:warm`, `+E164:cold` or `:warm`.
fn parse_transfer(body: &str) -> Option<Action> {
    let (number_part, mode) = match body.split_once(':') {
        Some((number_part, mode)) => (number_part.trim(), Some(mode.trim())),
        None => (body, None),
    };
    let warm = match mode.map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "cold") => false,
        Some("warm") => true,
        Some(_) => return None,
    };
    let number = if number_part.is_empty() { None } else { Some(normalise_e164(number_part)?) };
    Some(Action::Transfer { number, warm })
}

/// `+` and 7–15 digits, not starting with 0, after dropping spaces, dashes, dots and
/// parentheses. Only the syntax is checked; the transfer itself validates the number.
fn normalise_e164(raw: &str) -> Option<String> {
    let compact: String =
        raw.chars().filter(|character| !matches!(character, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = compact.strip_prefix('+')?;
    let valid = (7..=15).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then_some(compact)
}

/// `2`, `1.5`, `3s`, `3 sec`, `3 seconds`.
fn parse_wait(body: &str) -> Option<Action> {
    let lower = body.to_ascii_lowercase();
    let number = ["seconds", "second", "secs", "sec", "s"]
        .iter()
        .find_map(|unit| lower.strip_suffix(unit))
        .unwrap_or(&lower)
        .trim();
    let seconds: f64 = number.parse().ok()?;
    (seconds.is_finite() && (0.0..=MAX_WAIT_SECONDS).contains(&seconds))
        .then_some(Action::Wait { seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Segment {
        Segment::Text(text.to_owned())
    }

    fn action(action: Action) -> Segment {
        Segment::Action(action)
    }

    fn transfer(number: Option<&str>, warm: bool) -> Action {
        Action::Transfer { number: number.map(str::to_owned), warm }
    }

    fn malformed(raw: &str) -> Action {
        Action::Malformed { raw: raw.to_owned() }
    }

    /// Merges adjacent text segments, so outputs of different splits compare equal.
    fn normalised(segments: Vec<Segment>) -> Vec<Segment> {
        let mut out = Vec::new();
        for segment in segments {
            match segment {
                Segment::Text(piece) => push_text(&mut out, &piece),
                Segment::Action(action) => out.push(Segment::Action(action)),
            }
        }
        out
    }

    fn parse_pieces(pieces: &[&str]) -> Vec<Segment> {
        let mut parser = TagParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(parser.push(piece));
        }
        out.extend(parser.finish());
        normalised(out)
    }

    fn parse(input: &str) -> Vec<Segment> {
        parse_pieces(&[input])
    }

    /// Byte offsets of every character boundary of `input`, both ends included.
    fn split_points(input: &str) -> Vec<usize> {
        (0..=input.len()).filter(|&index| input.is_char_boundary(index)).collect()
    }

    fn cases() -> Vec<(&'static str, Vec<Segment>)> {
        vec![
            ("Goodbye! [END_CALL]", vec![text("Goodbye! "), action(Action::EndCall)]),
            (
                "One moment.[TRANSFER:+14155552671] ok",
                vec![
                    text("One moment."),
                    action(transfer(Some("+14155552671"), false)),
                    text(" ok"),
                ],
            ),
            (
                "Putting you through [TRANSFER:]",
                vec![text("Putting you through "), action(transfer(None, false))],
            ),
            (
                "x[TRANSFER:+447446466847:warm]y",
                vec![text("x"), action(transfer(Some("+447446466847"), true)), text("y")],
            ),
            (
                "Sent. [SEND_SMS: Your code: 1234, see you at 10:30] Anything else?",
                vec![
                    text("Sent. "),
                    action(Action::SendSms {
                        text: "Your code: 1234, see you at 10:30".to_owned(),
                    }),
                    text(" Anything else?"),
                ],
            ),
            (
                "Hold on [WAIT:2.5] done",
                vec![text("Hold on "), action(Action::Wait { seconds: 2.5 }), text(" done")],
            ),
            (
                "See [note] and [1] and [wait for it].",
                vec![text("See [note] and [1] and [wait for it].")],
            ),
            (
                "Bad [TRANSFER:abc] tag",
                vec![text("Bad "), action(malformed("[TRANSFER:abc]")), text(" tag")],
            ),
            ("[[END_CALL]]", vec![text("["), action(Action::EndCall), text("]")]),
        ]
    }

    #[test]
    fn each_tag_is_recognised_in_one_piece() {
        for (input, expected) in cases() {
            assert_eq!(parse(input), expected, "{input}");
        }
    }

    #[test]
    fn each_tag_is_recognised_at_every_split_point() {
        for (input, expected) in cases() {
            for split in split_points(input) {
                let (head, tail) = input.split_at(split);
                assert_eq!(parse_pieces(&[head, tail]), expected, "{input:?} split at {split}");
            }
        }
    }

    #[test]
    fn each_tag_is_recognised_one_character_at_a_time() {
        for (input, expected) in cases() {
            let characters: Vec<String> = input.chars().map(String::from).collect();
            let pieces: Vec<&str> = characters.iter().map(String::as_str).collect();
            assert_eq!(parse_pieces(&pieces), expected, "{input}");
        }
    }

    #[test]
    fn tag_names_are_case_insensitive_and_tolerate_separators() {
        assert_eq!(parse("[end_call]"), [action(Action::EndCall)]);
        assert_eq!(parse("[End Call]"), [action(Action::EndCall)]);
        assert_eq!(parse("[ END-CALL ]"), [action(Action::EndCall)]);
        assert_eq!(
            parse("[transfer : +1 (415) 555-2671 : WARM]"),
            [action(transfer(Some("+14155552671"), true))]
        );
        assert_eq!(parse("[send_sms:hi]"), [action(Action::SendSms { text: "hi".to_owned() })]);
        assert_eq!(parse("[Wait: 3 seconds]"), [action(Action::Wait { seconds: 3.0 })]);
    }

    #[test]
    fn lenient_forms_of_known_tags_are_accepted() {
        assert_eq!(parse("[TRANSFER]"), [action(transfer(None, false))]);
        assert_eq!(parse("[TRANSFER::warm]"), [action(transfer(None, true))]);
        assert_eq!(
            parse("[TRANSFER:+14155552671:cold]"),
            [action(transfer(Some("+14155552671"), false))]
        );
        assert_eq!(parse("[END_CALL:]"), [action(Action::EndCall)]);
        assert_eq!(parse("[WAIT:0]"), [action(Action::Wait { seconds: 0.0 })]);
    }

    #[test]
    fn known_tags_with_bad_syntax_are_malformed_and_not_spoken() {
        for raw in [
            "[TRANSFER:abc]",
            "[TRANSFER:14155552671]",
            "[TRANSFER:+0123456789]",
            "[TRANSFER:+14155552671:lukewarm]",
            "[TRANSFER:+1:2:3]",
            "[SEND_SMS:]",
            "[SEND_SMS]",
            "[SEND_SMS:   ]",
            "[WAIT:soon]",
            "[WAIT:-1]",
            "[WAIT:1000]",
            "[WAIT]",
            "[END_CALL:now]",
        ] {
            assert_eq!(parse(&format!("a{raw}b")), [text("a"), action(malformed(raw)), text("b")]);
        }
    }

    #[test]
    fn unknown_bracketed_words_are_released_as_soon_as_they_cannot_be_a_tag() {
        let mut parser = TagParser::new();
        assert_eq!(parser.push("Hi ["), [text("Hi ")]);
        assert!(parser.is_holding());
        assert_eq!(parser.push("E"), []);
        assert_eq!(parser.push("x"), [text("[Ex")]);
        assert!(!parser.is_holding());
        assert_eq!(parser.push(" [wait"), [text(" ")]);
        assert_eq!(parser.push(" f"), [text("[wait f")]);
        assert_eq!(parser.finish(), []);
    }

    #[test]
    fn several_tags_come_out_in_order_of_appearance() {
        assert_eq!(
            parse("I'll text you.[SEND_SMS:Link: x.co/a][WAIT:1] Bye![END_CALL]"),
            [
                text("I'll text you."),
                action(Action::SendSms { text: "Link: x.co/a".to_owned() }),
                action(Action::Wait { seconds: 1.0 }),
                text(" Bye!"),
                action(Action::EndCall),
            ]
        );
    }

    #[test]
    fn sms_text_ends_at_the_first_closing_bracket() {
        assert_eq!(
            parse("[SEND_SMS: see [link] here]"),
            [action(Action::SendSms { text: "see [link".to_owned() }), text(" here]"),]
        );
    }

    #[test]
    fn a_lone_bracket_at_the_end_is_text() {
        assert_eq!(parse("Options [A"), [text("Options [A")]);
        assert_eq!(parse("Costs [EN"), [text("Costs [EN")]);
        assert_eq!(parse("["), [text("[")]);
    }

    #[test]
    fn an_unterminated_known_tag_at_the_end_is_malformed() {
        assert_eq!(parse("Bye [END_CALL"), [text("Bye "), action(malformed("[END_CALL"))]);
        assert_eq!(parse("[SEND_SMS: hi"), [action(malformed("[SEND_SMS: hi"))]);
    }

    #[test]
    fn a_tag_body_over_the_cap_is_malformed_and_the_rest_is_spoken() {
        let long = "x".repeat(MAX_TAG_CHARS);
        let input = format!("[SEND_SMS:{long} and more");
        let segments = parse(&input);
        let [Segment::Action(Action::Malformed { raw }), Segment::Text(rest)] = &segments[..]
        else {
            panic!("unexpected {segments:?}");
        };
        assert_eq!(raw.chars().count(), MAX_TAG_CHARS);
        assert_eq!(format!("{raw}{rest}"), input);
    }

    #[test]
    fn a_long_name_part_is_released_as_text() {
        let input = format!("[{}END_CALL]", " ".repeat(MAX_NAME_PART_CHARS));
        assert_eq!(parse(&input), [text(&input)]);
    }

    #[test]
    fn finish_resets_for_the_next_reply() {
        let mut parser = TagParser::new();
        assert_eq!(parser.push("a [END"), [text("a ")]);
        assert_eq!(parser.finish(), [text("[END")]);
        assert_eq!(parser.push("[END_CALL]"), [action(Action::EndCall)]);
        parser.push("[SEND");
        parser.reset();
        assert_eq!(parser.push("ok"), [text("ok")]);
    }

    #[test]
    fn action_kinds_have_stable_names() {
        assert_eq!(Action::EndCall.kind(), "end_call");
        assert_eq!(transfer(None, false).kind(), "transfer");
        assert_eq!(Action::SendSms { text: String::new() }.kind(), "send_sms");
        assert_eq!(Action::Wait { seconds: 1.0 }.kind(), "wait");
        assert_eq!(malformed("[x]").kind(), "malformed");
    }

    /// Removes every recognised tag from `input` (the tags in these inputs are well formed or
    /// known-malformed, so each `[KNOWN…]` ends at the next `]`).
    fn without_tags(input: &str) -> String {
        let mut out = String::new();
        for segment in parse(input) {
            if let Segment::Text(piece) = segment {
                out.push_str(&piece);
            }
        }
        out
    }

    #[test]
    fn text_segments_concatenate_to_the_input_without_its_tags_for_any_split() {
        let inputs = [
            ("Hello [END_CALL]", "Hello "),
            ("a[TRANSFER:+14155552671]b[1]c", "ab[1]c"),
            ("[note] [SEND_SMS: hi: there] [WAIT:2]end", "[note]  end"),
            ("[[[END_CALL][x[WAIT", "[[[x"),
            ("Price [TRANSFER:abc] is 5 [dollars].", "Price  is 5 [dollars]."),
            ("Ünïcödé [ENDÉ] [END_CALL]ok…", "Ünïcödé [ENDÉ] ok…"),
        ];
        // A deterministic generator of split sizes.
        let mut state = 0x2545_f491_u32;
        for (input, expected) in inputs {
            assert_eq!(without_tags(input), expected);
            for _ in 0..200 {
                let mut pieces = Vec::new();
                let mut rest = input;
                while !rest.is_empty() {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let mut size = usize::try_from(state % 6).unwrap() + 1;
                    while size < rest.len() && !rest.is_char_boundary(size) {
                        size += 1;
                    }
                    let (head, tail) = rest.split_at(size.min(rest.len()));
                    pieces.push(head);
                    rest = tail;
                }
                let spoken: String = parse_pieces(&pieces)
                    .into_iter()
                    .filter_map(|segment| match segment {
                        Segment::Text(piece) => Some(piece),
                        Segment::Action(_) => None,
                    })
                    .collect();
                assert_eq!(spoken, expected, "{pieces:?}");
            }
        }
    }
}
