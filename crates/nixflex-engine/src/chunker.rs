//! Sentence chunking of streamed LLM text for text-to-speech.
//!
//! [`SentenceChunker`] receives the reply token by token (after [`crate::tags`] has removed the
//! action tags) and hands back speakable chunks as soon as a sentence is complete, so speech
//! synthesis can start on the first sentence while the model is still writing the rest. To cut
//! the time to first audio further, the *first* chunk of a reply may also end at a clause
//! boundary (comma, semicolon, colon, dash) once it is long enough.
//!
//! A sentence ends at `.`, `!`, `?`, `…`, `。`, `！`, `？` or a newline. Western terminators
//! must be followed by whitespace, so decimals (`3.14`), URLs and e-mail addresses never split;
//! a `.` after a common abbreviation (`Dr.`, `e.g.`, `a.m.`), an initial (`J.`) or a list
//! marker at the start of a line (`1.`) does not end a sentence either.
//!
//! The chunker is pure: no I/O, no clock, no task. Each pushed character is examined once
//! (look-behind is bounded), so the cost per token is proportional to the token's length.

/// A `.` preceded by one of these words (compared case-insensitively, without the final dot)
/// does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt", "vs", "etc", "e.g", "i.e", "a.m",
    "p.m", "approx",
];

/// Words longer than this are never abbreviations, initials or list markers, which bounds the
/// look-behind at each `.`.
const MAX_LOOKBEHIND_CHARS: usize = 12;

/// A chunk without any sentence end is cut at the next whitespace once it reaches this many
/// characters, so a run-on reply still reaches the caller in reasonable pieces.
pub const MAX_CHUNK_CHARS: usize = 400;

/// Splits streamed text into speakable chunks; see the module documentation.
#[derive(Debug, Clone)]
pub struct SentenceChunker {
    /// Clause boundaries may end the first chunk once it has at least this many characters.
    min_first_chars: usize,
    /// Text received but not yet returned.
    buffer: String,
    /// Byte offset in `buffer` of the next character to examine; everything before it has
    /// been examined and holds no boundary.
    scan: usize,
    /// Characters in `buffer[..scan]`.
    scanned_chars: usize,
    /// Whether a chunk of the current reply has been returned (only the first chunk may end at
    /// a clause boundary).
    emitted_any: bool,
}

/// What the character at the scan position means.
enum Decision {
    /// Not a boundary; move on by one character.
    Continue,
    /// A chunk ends before byte offset `end`, and scanning resumes at `resume`.
    Cut { end: usize, resume: usize },
    /// The decision needs characters that have not arrived yet.
    Wait,
}

impl SentenceChunker {
    /// A chunker whose first chunk may end at a comma, semicolon, colon or dash once it has at
    /// least `min_first_chars` characters.
    pub fn new(min_first_chars: usize) -> Self {
        Self {
            min_first_chars,
            buffer: String::new(),
            scan: 0,
            scanned_chars: 0,
            emitted_any: false,
        }
    }

    /// Adds streamed text and returns the chunks completed by it, trimmed and never empty.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buffer.push_str(text);
        let mut chunks = Vec::new();
        while self.scan < self.buffer.len() {
            match self.decide() {
                Decision::Continue => {
                    let width = self.buffer[self.scan..].chars().next().map_or(1, char::len_utf8);
                    self.scan += width;
                    self.scanned_chars += 1;
                }
                Decision::Cut { end, resume } => {
                    if let Some(chunk) = speakable(&self.buffer[..end]) {
                        chunks.push(chunk);
                        self.emitted_any = true;
                    }
                    self.buffer.drain(..resume);
                    self.scan = 0;
                    self.scanned_chars = 0;
                }
                Decision::Wait => break,
            }
        }
        chunks
    }

    /// Returns whatever is left of the reply (trimmed; `None` if nothing speakable) and gets
    /// ready for the next reply.
    pub fn finish(&mut self) -> Option<String> {
        let rest = speakable(&self.buffer);
        self.reset();
        rest
    }

    /// Drops everything buffered (e.g. on barge-in) and gets ready for the next reply.
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.scan = 0;
        self.scanned_chars = 0;
        self.emitted_any = false;
    }

    /// Whether text is waiting for a sentence end.
    pub fn is_empty(&self) -> bool {
        self.buffer.trim().is_empty()
    }

    fn decide(&self) -> Decision {
        let at = self.scan;
        let rest = &self.buffer[at..];
        let Some(current) = rest.chars().next() else { return Decision::Wait };
        let after_current = at + current.len_utf8();
        match current {
            '\n' | '\r' => Decision::Cut { end: at, resume: after_current },
            '.' | '!' | '?' | '…' | '。' | '！' | '？' => self.decide_terminator(at),
            ',' | ';' | ':' | '—' | '–' | '-' | '，' | '；' | '：' if self.may_cut_clause() => {
                self.decide_clause(at, current)
            }
            _ if current.is_whitespace() && self.scanned_chars >= MAX_CHUNK_CHARS => {
                Decision::Cut { end: at, resume: after_current }
            }
            _ => Decision::Continue,
        }
    }

    /// A run of terminators (`?!`, `...`) plus closing quotes or brackets ends a sentence if
    /// whitespace follows (or anything, after a full-width terminator).
    fn decide_terminator(&self, at: usize) -> Decision {
        let mut end = at;
        let mut n_terminators = 0_usize;
        let mut full_width = false;
        let mut dots_only = true;
        let mut in_closers = false;
        for character in self.buffer[at..].chars() {
            let is_terminator = matches!(character, '.' | '!' | '?' | '…' | '。' | '！' | '？');
            if is_terminator && !in_closers {
                n_terminators += 1;
                full_width |= matches!(character, '。' | '！' | '？');
                dots_only &= character == '.';
            } else if is_closer(character) {
                in_closers = true;
            } else {
                let boundary = full_width || character.is_whitespace();
                if !boundary {
                    return Decision::Continue;
                }
                if dots_only && n_terminators == 1 && self.dot_is_not_a_sentence_end(at) {
                    return Decision::Continue;
                }
                return Decision::Cut { end, resume: end };
            }
            end += character.len_utf8();
        }
        Decision::Wait
    }

    fn may_cut_clause(&self) -> bool {
        !self.emitted_any && self.scanned_chars + 1 >= self.min_first_chars
    }

    /// The first chunk may end after a clause mark followed by whitespace; a plain or en dash
    /// must also be preceded by whitespace (so `well-known` and `2–3` stay whole).
    fn decide_clause(&self, at: usize, mark: char) -> Decision {
        let end = at + mark.len_utf8();
        let Some(next) = self.buffer[end..].chars().next() else { return Decision::Wait };
        let spaced_before = self.buffer[..at].chars().next_back().is_some_and(char::is_whitespace);
        let cut = match mark {
            '—' | '，' | '；' | '：' => true,
            '-' | '–' => spaced_before && next.is_whitespace(),
            _ => next.is_whitespace(),
        };
        if cut { Decision::Cut { end, resume: end } } else { Decision::Continue }
    }

    /// Whether the single `.` at `at` belongs to an abbreviation, an initial or a list marker.
    fn dot_is_not_a_sentence_end(&self, at: usize) -> bool {
        let before = &self.buffer[..at];
        let mut word_start = at;
        let mut n_chars = 0;
        for (index, character) in before.char_indices().rev() {
            if character.is_whitespace() {
                break;
            }
            n_chars += 1;
            if n_chars > MAX_LOOKBEHIND_CHARS {
                return false;
            }
            word_start = index;
        }
        let word = before[word_start..].trim_start_matches(['(', '"', '\'', '“', '‘', '«']);
        if word.is_empty() {
            return false;
        }
        if ABBREVIATIONS.iter().any(|abbreviation| word.eq_ignore_ascii_case(abbreviation)) {
            return true;
        }
        if is_initials(word) {
            return true;
        }
        // "1." at the start of a line (or after a colon) is a list marker, not a sentence end.
        if word.len() <= 3 && word.bytes().all(|byte| byte.is_ascii_digit()) {
            let preceding = before[..word_start].trim_end();
            return preceding.is_empty() || preceding.ends_with(':');
        }
        false
    }
}

impl Default for SentenceChunker {
    /// First chunks may end at a clause boundary after 20 characters.
    fn default() -> Self {
        Self::new(20)
    }
}

/// `J` or `J.R` (the final dot is not part of `word`). A lone `I` is the pronoun ("So do I."),
/// not an initial.
fn is_initials(word: &str) -> bool {
    if word == "I" {
        return false;
    }
    let mut expect_letter = true;
    for character in word.chars() {
        if expect_letter {
            if !character.is_uppercase() {
                return false;
            }
        } else if character != '.' {
            return false;
        }
        expect_letter = !expect_letter;
    }
    !expect_letter
}

fn is_closer(character: char) -> bool {
    matches!(character, '"' | '\'' | '”' | '’' | ')' | '»' | '」' | '』' | '）')
}

/// The trimmed chunk, or `None` if it has nothing a voice could say.
fn speakable(text: &str) -> Option<String> {
    let trimmed = text.trim();
    trimmed.chars().any(char::is_alphanumeric).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one by one and returns every chunk, including the final remainder.
    fn chunks_of(min_first_chars: usize, pieces: &[&str]) -> Vec<String> {
        let mut chunker = SentenceChunker::new(min_first_chars);
        let mut chunks = Vec::new();
        for piece in pieces {
            chunks.extend(chunker.push(piece));
        }
        chunks.extend(chunker.finish());
        chunks
    }

    fn whole(text: &str) -> Vec<String> {
        chunks_of(usize::MAX, &[text])
    }

    /// Splits `text` into pieces of `size` characters.
    fn pieces(text: &str, size: usize) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        chars.chunks(size).map(|piece| piece.iter().collect()).collect()
    }

    #[test]
    fn sentences_are_split_at_terminators_followed_by_whitespace() {
        assert_eq!(
            whole("Hello there. How are you? Great!  Bye… ok"),
            ["Hello there.", "How are you?", "Great!", "Bye…", "ok"]
        );
    }

    #[test]
    fn a_chunk_is_returned_as_soon_as_the_following_space_arrives() {
        let mut chunker = SentenceChunker::new(usize::MAX);
        assert!(chunker.push("Hello there").is_empty());
        assert!(chunker.push(".").is_empty());
        assert_eq!(chunker.push(" How"), ["Hello there."]);
        assert_eq!(chunker.finish().as_deref(), Some("How"));
    }

    #[test]
    fn abbreviation_split_across_tokens_does_not_end_the_sentence() {
        assert_eq!(
            chunks_of(usize::MAX, &["Dr", ".", " Smith", " will see", " you. Thanks"]),
            ["Dr. Smith will see you.", "Thanks"]
        );
    }

    #[test]
    fn common_abbreviations_do_not_split() {
        let text = "Mr. and Mrs. Jones met Ms. Lee and Prof. Kim on Main St. today, \
                    e.g. at 9 a.m. or 5 p.m. with fruit, veg, etc. and cats vs. dogs. Next";
        assert_eq!(whole(text), [&text[..text.len() - " Next".len()], "Next"]);
    }

    #[test]
    fn decimals_urls_and_emails_do_not_split() {
        assert_eq!(
            whole("Pi is 3.14 and the site is www.example.com. Mail bob@mail.example.org today."),
            ["Pi is 3.14 and the site is www.example.com.", "Mail bob@mail.example.org today."]
        );
    }

    #[test]
    fn decimal_split_across_tokens_does_not_split() {
        assert_eq!(
            chunks_of(usize::MAX, &["It costs 3", ".", "50 pounds."]),
            ["It costs 3.50 pounds."]
        );
    }

    #[test]
    fn initials_do_not_split() {
        assert_eq!(
            whole("John F. Kennedy and J.R.R. Tolkien met. So did I. Then"),
            ["John F. Kennedy and J.R.R. Tolkien met.", "So did I.", "Then"]
        );
    }

    #[test]
    fn numbered_list_markers_do_not_split_but_numbers_ending_a_sentence_do() {
        assert_eq!(
            whole("1. Pick a time\n2. Confirm it. I counted to 10. Done"),
            ["1. Pick a time", "2. Confirm it.", "I counted to 10.", "Done"]
        );
    }

    #[test]
    fn newlines_split_and_blank_lines_give_no_empty_chunks() {
        assert_eq!(whole("First line\n\n\nSecond line\r\n"), ["First line", "Second line"]);
    }

    #[test]
    fn chunks_without_anything_speakable_are_dropped() {
        assert_eq!(whole("Hi! ... !!! \n - \n"), ["Hi!"]);
        assert_eq!(whole("   "), Vec::<String>::new());
    }

    #[test]
    fn closing_quotes_and_brackets_stay_with_their_sentence() {
        assert_eq!(
            whole("He said \"no.\" Then (really!) she left."),
            ["He said \"no.\"", "Then (really!)", "she left."]
        );
    }

    #[test]
    fn repeated_terminators_stay_together() {
        assert_eq!(whole("Really?! Wait... what?"), ["Really?!", "Wait...", "what?"]);
    }

    #[test]
    fn full_width_terminators_split_without_a_following_space() {
        assert_eq!(whole("你好。今天怎么样？很好！"), ["你好。", "今天怎么样？", "很好！"]);
    }

    #[test]
    fn first_chunk_may_end_at_a_clause_once_long_enough() {
        assert_eq!(
            chunks_of(10, &["Sure, I can help with that, just a moment, please. Ok, fine."]),
            ["Sure, I can help with that,", "just a moment, please.", "Ok, fine."]
        );
    }

    #[test]
    fn first_chunk_clause_cut_handles_dashes_and_semicolons() {
        assert_eq!(
            whole_with_min(5, "A well-known shop — open late."),
            ["A well-known shop —", "open late."]
        );
        assert_eq!(
            whole_with_min(5, "Open 2–3 days - maybe more."),
            ["Open 2–3 days -", "maybe more."]
        );
        assert_eq!(
            whole_with_min(5, "Hello there; see you at 10:30 then."),
            ["Hello there;", "see you at 10:30 then."]
        );
    }

    fn whole_with_min(min_first_chars: usize, text: &str) -> Vec<String> {
        chunks_of(min_first_chars, &[text])
    }

    #[test]
    fn short_first_clause_is_not_cut() {
        assert_eq!(whole_with_min(20, "Yes, of course. Bye."), ["Yes, of course.", "Bye."]);
    }

    #[test]
    fn run_on_text_is_cut_at_whitespace_after_the_maximum_length() {
        let text = "word ".repeat(200);
        let chunks = whole(&text);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|chunk| chunk.chars().count() <= MAX_CHUNK_CHARS + 5));
        assert_eq!(chunks.join(" "), text.trim());
    }

    #[test]
    fn finish_resets_so_the_next_reply_gets_a_clause_cut_again() {
        let mut chunker = SentenceChunker::new(5);
        assert_eq!(chunker.push("Hello there, friend. "), ["Hello there,", "friend."]);
        assert_eq!(chunker.finish(), None);
        assert_eq!(chunker.push("Hello again, friend"), ["Hello again,"]);
        assert!(!chunker.is_empty());
        chunker.reset();
        assert!(chunker.is_empty());
        assert_eq!(chunker.finish(), None);
    }

    #[test]
    fn every_token_split_gives_the_same_chunks_as_the_whole_text() {
        let texts = [
            "Dr. Smith said 3.14 is pi. Call me at 9 a.m. on Mon. OK? Sure! Visit x.co… bye",
            "Hi, this is Anna from the clinic — calling about your visit. 1. Bring ID\n2. Arrive early.",
            "你好。我们明天见！\"Quoted.\" Then e.g. this; fine.",
        ];
        for text in texts {
            for min_first in [0, 8, usize::MAX] {
                let expected = chunks_of(min_first, &[text]);
                for size in 1..8 {
                    let split = pieces(text, size);
                    let split: Vec<&str> = split.iter().map(String::as_str).collect();
                    assert_eq!(chunks_of(min_first, &split), expected, "size {size}: {text}");
                }
            }
        }
    }
}
