//! System prompt assembly (docs/engine.md#prompt-assembly, #template-variables, #greeting, #language, #history-and-caller-context; docs/decisions.md#pickup-silence-and-duration, #turn-taking, #history, #custom-prompt-scope).
//!
//! [`build_system_prompt`] stacks the layers the model sees, in this order:
//! 1. call context (date, time and day of week in the agent's time zone, DST aware; the time
//!    zone; caller and business numbers; channel; direction),
//! 2. caller history (summaries of the last two calls with this caller, if any),
//! 3. caller context (the stored facts about the caller, if any),
//! 4. business profile (the number's `custom_prompt`; for SMS its `sms_prompt` when set),
//! 5. the agent's `system_prompt`, with `{{variable}}` placeholders substituted,
//! 6. the call purpose (outbound only), with `{key}` placeholders from `dynamic_vars`,
//! 7. channel rules: for voice, reply length, spoken style, language and action tags; for SMS,
//!    the short-reply rules.
//!
//! Everything here is computed once at call start from values passed in (`now` included), so
//! the same context always gives the same prompt. No I/O, no clock.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use nixflex_core::agent::{AgentSettings, ResponseLength};
use nixflex_core::call::Direction;
use nixflex_core::catalog;
use nixflex_core::number::NumberSettings;

/// How many past calls the caller history layer shows (docs/engine.md#history-and-caller-context).
pub const HISTORY_CALLS: usize = 2;

/// How the conversation happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A phone call: the reply is spoken.
    Voice,
    /// An SMS thread: the reply is texted.
    Sms,
}

impl Channel {
    /// `voice` or `sms`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::Sms => "sms",
        }
    }
}

/// Which action tags the model is told about (docs/engine.md#action-tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolsEnabled {
    /// `[END_CALL]`.
    pub end_call: bool,
    /// `[TRANSFER:…]`.
    pub transfer: bool,
    /// `[SEND_SMS: …]`.
    pub send_sms: bool,
    /// The agent has custom functions (offered as tools, not tags; the prompt only says how to
    /// use them).
    pub functions: bool,
}

impl ToolsEnabled {
    /// The tags an agent's settings allow: `[END_CALL]` per `func_end_call`; `[TRANSFER:]` when a
    /// `transfer_number` is set or `func_cold_transfer` is on; `[SEND_SMS:]`
    /// only with `incall_sms_enabled` (docs/decisions.md#in-call-sms-gate).
    pub fn for_agent(agent: &AgentSettings) -> Self {
        Self {
            end_call: agent.func_end_call,
            transfer: agent.func_cold_transfer || agent.transfer_number.is_some(),
            send_sms: agent.incall_sms_enabled,
            functions: !agent.functions.is_empty(),
        }
    }
}

/// The summary of an earlier call with the same caller.
#[derive(Debug, Clone, PartialEq)]
pub struct PastCall {
    /// When that call started.
    pub started_at: DateTime<Utc>,
    /// Its post-call summary.
    pub summary: String,
}

/// Everything the prompt depends on, fixed at call start.
#[derive(Debug, Clone)]
pub struct PromptContext<'a> {
    /// The agent answering.
    pub agent: &'a AgentSettings,
    /// The business number's settings, if the call or thread uses one.
    pub number: Option<&'a NumberSettings>,
    /// Voice call or SMS thread.
    pub channel: Channel,
    /// Who started the conversation.
    pub direction: Direction,
    /// The other party's number (E.164).
    pub caller_phone: &'a str,
    /// The business number dialled or used (E.164).
    pub business_phone: &'a str,
    /// The call id (`call_…`).
    pub call_id: &'a str,
    /// The agent id (`agent_…`).
    pub agent_id: &'a str,
    /// The current time (call start).
    pub now: DateTime<Utc>,
    /// Past calls with this caller, newest first; only the first [`HISTORY_CALLS`] are used.
    pub history: &'a [PastCall],
    /// Stored caller context (docs/engine.md#history-and-caller-context), if any.
    pub caller_context: Option<&'a Map<String, Value>>,
    /// The outbound call purpose (the request `prompt`), if any.
    pub call_purpose: Option<&'a str>,
    /// Outbound `dynamic_vars`, used for `{key}` placeholders in the call purpose.
    pub dynamic_vars: &'a BTreeMap<String, String>,
    /// Which action tags to describe.
    pub tools_enabled: ToolsEnabled,
}

/// The call's moment in the agent's time zone.
struct LocalClock {
    zone: Tz,
    now: DateTime<Tz>,
}

impl LocalClock {
    /// An unknown zone name (settings are validated, so only old data) falls back to UTC.
    fn new(cx: &PromptContext<'_>) -> Self {
        let zone: Tz = cx.agent.timezone.parse().unwrap_or(Tz::UTC);
        Self { zone, now: cx.now.with_timezone(&zone) }
    }

    fn tomorrow(&self) -> NaiveDate {
        let today = self.now.date_naive();
        today.checked_add_days(Days::new(1)).unwrap_or(today)
    }
}

/// "Monday, May 25, 2026".
fn long_date(date: NaiveDate) -> String {
    date.format("%A, %B %-d, %Y").to_string()
}

/// The 14 template variables of docs/engine.md#template-variables (also sent to custom functions):
/// `caller_phone`, `business_phone`, `current_date`, `current_iso_date`, `current_time`,
/// `current_iso_time`, `tomorrow_date`, `tomorrow_iso_date`, `current_day_of_week`,
/// `current_timezone`, `call_direction`, `call_id`, `agent_id` and `caller_history` (one line per
/// past call, newest first; empty for a first-time caller).
pub fn template_variables(cx: &PromptContext<'_>) -> BTreeMap<String, String> {
    let clock = LocalClock::new(cx);
    let tomorrow = clock.tomorrow();
    let entries = [
        ("caller_phone", cx.caller_phone.to_owned()),
        ("business_phone", cx.business_phone.to_owned()),
        ("current_date", long_date(clock.now.date_naive())),
        ("current_iso_date", clock.now.format("%Y-%m-%d").to_string()),
        ("current_time", clock.now.format("%H:%M").to_string()),
        ("current_iso_time", clock.now.format("%H:%M:%S").to_string()),
        ("tomorrow_date", long_date(tomorrow)),
        ("tomorrow_iso_date", tomorrow.format("%Y-%m-%d").to_string()),
        ("current_day_of_week", clock.now.format("%A").to_string()),
        ("current_timezone", clock.zone.name().to_owned()),
        ("call_direction", cx.direction.as_str().to_owned()),
        ("call_id", cx.call_id.to_owned()),
        ("agent_id", cx.agent_id.to_owned()),
        ("caller_history", history_lines(cx, &clock).join("\n")),
    ];
    entries.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

/// Replaces `{{name}}` (spaces inside the braces allowed) with `vars[name]`. Unknown names and
/// anything that is not a name stay as written; substituted values are not scanned again.
pub fn substitute(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            rest = &rest[open..];
            break;
        };
        let name = after[..close].trim();
        match vars.get(name).filter(|_| is_identifier(name)) {
            Some(value) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces `{key}` in an outbound call purpose with `vars[key]` (docs/engine.md#prompt-assembly); unknown
/// keys stay literal.
pub fn substitute_single_braces(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let key = after.find('}').map(|close| (after[..close].trim(), close));
        match key.and_then(|(key, close)| {
            vars.get(key).filter(|_| is_identifier(key)).map(|value| (value, close))
        }) {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// What the agent says first on an inbound call (docs/engine.md#greeting): the `welcome_message` when
/// `ai_speaks_first` is on and `dynamic_greeting` off, otherwise `None` (the model improvises
/// the greeting, or the agent waits for the caller). Outbound openers come from the model.
///
/// With `greet_by_name` and a known `caller_name`, a `{{caller_name}}` placeholder is filled in,
/// or else the name follows a leading greeting word ("Hello! …" → "Hello Sam! …"); without a
/// name the placeholder is removed.
pub fn greeting(agent: &AgentSettings, caller_name: Option<&str>) -> Option<String> {
    if !agent.ai_speaks_first || agent.dynamic_greeting {
        return None;
    }
    let welcome = agent.welcome_message.trim();
    if welcome.is_empty() {
        return None;
    }
    let name = caller_name.map(str::trim).filter(|name| agent.greet_by_name && !name.is_empty());
    let has_placeholder = {
        let probe = BTreeMap::from([("caller_name".to_owned(), String::new())]);
        substitute(welcome, &probe) != welcome
    };
    if has_placeholder {
        let vars = BTreeMap::from([("caller_name".to_owned(), name.unwrap_or("").to_owned())]);
        let filled = substitute(welcome, &vars);
        return Some(if name.is_some() { filled } else { tidy_spaces(&filled) });
    }
    let Some(name) = name else { return Some(welcome.to_owned()) };
    Some(match greeting_word_end(welcome) {
        Some(end) => format!("{} {name}{}", &welcome[..end], &welcome[end..]),
        None => welcome.to_owned(),
    })
}

/// Greeting words after which a caller's name reads naturally, in the engine's languages.
const GREETING_WORDS: &[&str] = &[
    "good morning",
    "good afternoon",
    "good evening",
    "hello",
    "hi",
    "hey",
    "welcome",
    "bonjour",
    "bonsoir",
    "salut",
    "buenos días",
    "buenas tardes",
    "buenas noches",
    "hola",
    "guten morgen",
    "guten tag",
    "guten abend",
    "hallo",
    "buongiorno",
    "buonasera",
    "ciao",
    "bom dia",
    "boa tarde",
    "boa noite",
    "olá",
    "goedemorgen",
    "goedemiddag",
    "goedenavond",
    "hoi",
    "dzień dobry",
    "cześć",
];

/// The byte offset just after a greeting word that starts `text` as a whole word.
fn greeting_word_end(text: &str) -> Option<usize> {
    GREETING_WORDS.iter().find_map(|word| {
        let n_chars = word.chars().count();
        let end = text.char_indices().nth(n_chars).map_or(text.len(), |(index, _)| index);
        let prefix = &text[..end];
        let whole_word = !text[end..].chars().next().is_some_and(char::is_alphanumeric);
        (whole_word && prefix.to_lowercase() == *word).then_some(end)
    })
}

/// Removes the spaces an emptied placeholder leaves ("Hello {{caller_name}}!" → "Hello!").
fn tidy_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        let is_mark = matches!(character, '!' | '?' | '.' | ',' | ';' | ':');
        if (is_mark || character == ' ') && out.ends_with(' ') {
            out.pop();
        }
        out.push(character);
    }
    out.trim().to_owned()
}

/// The ISO 639-1 code of the language a prompt is written in (docs/engine.md#language): by script
/// (Arabic, Hebrew, Chinese, Japanese, Korean, Hindi, Cyrillic), else by common words (French,
/// Spanish, German, Italian, Portuguese, Dutch, Polish), else English. Only the beginning of
/// the text is looked at.
pub fn detect_language(text: &str) -> &'static str {
    const SAMPLE_CHARS: usize = 600;
    let mut scripts = [0_usize; 8];
    let mut n_letters = 0_usize;
    for character in text.chars().take(SAMPLE_CHARS).filter(|c| c.is_alphabetic()) {
        n_letters += 1;
        let script = match u32::from(character) {
            0x0600..=0x06FF | 0x0750..=0x077F => 0,
            0x0590..=0x05FF => 1,
            0x3040..=0x30FF => 2,
            0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F => 3,
            0x4E00..=0x9FFF | 0x3400..=0x4DBF => 4,
            0x0900..=0x097F => 5,
            0x0400..=0x04FF => 6,
            _ => 7,
        };
        scripts[script] += 1;
    }
    let non_latin = n_letters.div_ceil(5).max(3);
    // Kana marks Japanese even when Han characters dominate.
    if scripts[2] >= 3 {
        return "ja";
    }
    let by_script = [(0, "ar"), (1, "he"), (3, "ko"), (4, "zh"), (5, "hi"), (6, "ru")]
        .into_iter()
        .filter(|(index, _)| scripts[*index] >= non_latin)
        .max_by_key(|(index, _)| scripts[*index]);
    if let Some((_, code)) = by_script {
        return code;
    }
    detect_latin_language(text)
}

/// Frequent short words of each Latin-script language the start language may be.
const KEYWORDS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "you", "are", "the", "and", "your", "to", "of", "is", "with", "for", "our", "we", "an",
            "this", "that", "be",
        ],
    ),
    (
        "fr",
        &[
            "vous", "êtes", "est", "le", "la", "les", "une", "des", "du", "avec", "pour", "votre",
            "nous", "et", "au", "aux", "bonjour", "dans", "sur", "pas", "vos", "sont",
        ],
    ),
    (
        "es",
        &[
            "eres", "usted", "el", "los", "las", "una", "del", "con", "por", "está", "hola", "al",
            "como", "sus", "nuestro", "nuestra", "y", "muy",
        ],
    ),
    (
        "de",
        &[
            "du", "bist", "sie", "sind", "und", "der", "die", "das", "ein", "eine", "mit", "für",
            "nicht", "ist", "ihr", "wir", "auf", "zu", "den", "dem", "bitte",
        ],
    ),
    (
        "it",
        &[
            "sei", "il", "lo", "gli", "della", "delle", "che", "sono", "è", "di", "ciao", "tuo",
            "nostro", "nostra", "per", "questo",
        ],
    ),
    (
        "pt",
        &[
            "você", "é", "um", "os", "não", "com", "do", "da", "dos", "das", "seu", "sua", "olá",
            "em", "nosso", "nossa", "são",
        ],
    ),
    (
        "nl",
        &[
            "je", "jij", "bent", "een", "het", "van", "en", "niet", "met", "voor", "zijn", "jouw",
            "uw", "wij", "ons", "onze",
        ],
    ),
    (
        "pl",
        &[
            "jesteś", "jest", "się", "nie", "w", "z", "na", "dla", "że", "czy", "pan", "pani",
            "jako", "oraz",
        ],
    ),
];

fn detect_latin_language(text: &str) -> &'static str {
    let sample: String = text.chars().take(600).collect::<String>().to_lowercase();
    let mut scores = [0_usize; KEYWORDS.len()];
    for word in sample.split(|c: char| !c.is_alphabetic()).filter(|word| !word.is_empty()) {
        for (score, (_, words)) in scores.iter_mut().zip(KEYWORDS) {
            if words.contains(&word) {
                *score += 1;
            }
        }
    }
    let mut best = ("en", 0_usize);
    for (score, (code, _)) in scores.iter().zip(KEYWORDS) {
        if *score > best.1 {
            best = (code, *score);
        }
    }
    if best.1 >= 2 { best.0 } else { "en" }
}

/// The English name of a language code, or the code itself.
fn language_name(code: &str) -> &str {
    catalog::find_language(code).map_or(code, |language| language.name)
}

/// Collapses whitespace (newlines included) so one value stays on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// "- Saturday, March 28, 2026 at 10:05: summary", newest first, at most [`HISTORY_CALLS`].
fn history_lines(cx: &PromptContext<'_>, clock: &LocalClock) -> Vec<String> {
    cx.history
        .iter()
        .filter(|call| !call.summary.trim().is_empty())
        .take(HISTORY_CALLS)
        .map(|call| {
            let started = call.started_at.with_timezone(&clock.zone);
            format!(
                "- {} at {}: {}",
                long_date(started.date_naive()),
                started.format("%H:%M"),
                one_line(&call.summary)
            )
        })
        .collect()
}

/// Builds the system prompt; see the module documentation for the layers.
pub fn build_system_prompt(cx: &PromptContext<'_>) -> String {
    let clock = LocalClock::new(cx);
    let vars = template_variables(cx);
    let sections = [
        Some(call_context_section(cx, &clock)),
        history_section(cx, &clock),
        caller_context_section(cx),
        business_profile_section(cx, &vars),
        agent_section(cx, &vars),
        call_purpose_section(cx),
        Some(match cx.channel {
            Channel::Voice => voice_rules_section(cx),
            Channel::Sms => sms_rules_section(cx),
        }),
        match cx.channel {
            Channel::Voice => actions_section(cx),
            Channel::Sms => None,
        },
        match cx.channel {
            Channel::Voice => functions_section(cx),
            Channel::Sms => None,
        },
    ];
    sections.into_iter().flatten().collect::<Vec<_>>().join("\n\n")
}

fn call_context_section(cx: &PromptContext<'_>, clock: &LocalClock) -> String {
    let mut out = String::from("## CALL CONTEXT\n");
    let today = clock.now.date_naive();
    let (channel, other_party) = match (cx.channel, cx.direction) {
        (Channel::Voice, Direction::Inbound) => ("phone call (voice)", "Caller's phone number"),
        (Channel::Voice, Direction::Outbound) => {
            ("phone call (voice)", "Phone number you are calling")
        }
        (Channel::Sms, _) => ("SMS text messages", "Customer's phone number"),
    };
    let direction = match (cx.direction, cx.channel) {
        (Direction::Inbound, Channel::Voice) => "inbound: the caller phoned the business",
        (Direction::Outbound, Channel::Voice) => "outbound: you are calling them",
        (Direction::Inbound, Channel::Sms) => "inbound: the customer texted the business",
        (Direction::Outbound, Channel::Sms) => "outbound: the business texted them first",
    };
    let _ = writeln!(out, "- Current date: {} ({})", long_date(today), today.format("%Y-%m-%d"));
    let _ = writeln!(out, "- Current time: {} (24-hour clock)", clock.now.format("%H:%M"));
    let _ = writeln!(out, "- Day of the week: {}", clock.now.format("%A"));
    let _ = writeln!(
        out,
        "- Time zone: {} ({}, UTC{})",
        clock.zone.name(),
        clock.now.format("%Z"),
        clock.now.format("%:z")
    );
    let _ = writeln!(out, "- Channel: {channel}");
    let _ = writeln!(out, "- Direction: {direction}");
    let _ = writeln!(out, "- {other_party}: {}", cx.caller_phone);
    let _ = write!(out, "- Business phone number: {}", cx.business_phone);
    out
}

fn history_section(cx: &PromptContext<'_>, clock: &LocalClock) -> Option<String> {
    let lines = history_lines(cx, clock);
    if lines.is_empty() {
        return None;
    }
    Some(format!(
        "## CALLER HISTORY\nYou have spoken with this caller before. Summaries of your most \
         recent calls with them, newest first:\n{}\nUse this history only when it is relevant, \
         for example when the caller refers to an earlier call or asks what was discussed. Do \
         not read it out or bring it up unprompted, and confirm details that may have changed.",
        lines.join("\n")
    ))
}

fn caller_field_label(field: &str) -> &str {
    match field {
        "name" => "Name",
        "email" => "Email",
        "phone" => "Phone",
        "location" => "Location",
        "reference_id" => "Reference ID",
        "preference" => "Preference",
        "last_call" => "Last call",
        "open_item" => "Open item",
        other => other,
    }
}

fn caller_context_section(cx: &PromptContext<'_>) -> Option<String> {
    let context = nixflex_core::caller::present_fields(cx.caller_context?);
    let mut lines = Vec::new();
    let mut has_name = false;
    for (field, value) in &context {
        let text = match value {
            Value::String(text) => one_line(text),
            other => other.to_string(),
        };
        if text.is_empty() {
            continue;
        }
        has_name |= field == "name";
        lines.push(format!("- {}: {text}", caller_field_label(field)));
    }
    if lines.is_empty() {
        return None;
    }
    let mut out = format!(
        "## ABOUT THE CALLER\nWhat the business knows about this caller:\n{}",
        lines.join("\n")
    );
    if has_name {
        out.push('\n');
        out.push_str(if cx.agent.greet_by_name {
            "Greet them by name."
        } else {
            "Do not greet them by name."
        });
    }
    Some(out)
}

fn business_profile_section(
    cx: &PromptContext<'_>,
    vars: &BTreeMap<String, String>,
) -> Option<String> {
    let number = cx.number?;
    let non_blank = |text: &Option<String>| text.clone().filter(|text| !text.trim().is_empty());
    let profile = match cx.channel {
        Channel::Sms => non_blank(&number.sms_prompt).or_else(|| non_blank(&number.custom_prompt)),
        Channel::Voice => non_blank(&number.custom_prompt),
    }?;
    Some(format!(
        "## BUSINESS PROFILE\nThe business this phone number belongs to. If anything here \
         conflicts with the agent instructions below, the business profile wins.\n{}",
        substitute(profile.trim(), vars)
    ))
}

fn agent_section(cx: &PromptContext<'_>, vars: &BTreeMap<String, String>) -> Option<String> {
    let prompt = cx.agent.system_prompt.trim();
    (!prompt.is_empty())
        .then(|| format!("## AGENT INSTRUCTIONS\n{}", substitute(prompt, vars).trim()))
}

fn call_purpose_section(cx: &PromptContext<'_>) -> Option<String> {
    if cx.direction != Direction::Outbound {
        return None;
    }
    let purpose = cx.call_purpose.map(str::trim).filter(|purpose| !purpose.is_empty());
    if purpose.is_none() && cx.dynamic_vars.is_empty() {
        return None;
    }
    let mut out = String::new();
    match cx.channel {
        Channel::Voice => out.push_str(
            "## PURPOSE OF THIS CALL\nYou are calling this person; they did not call you. When \
             they answer, greet them briefly, say who you are and why you are calling.",
        ),
        Channel::Sms => out.push_str("## PURPOSE OF THIS CONVERSATION"),
    }
    if let Some(purpose) = purpose {
        out.push('\n');
        out.push_str(&substitute_single_braces(purpose, cx.dynamic_vars));
    }
    if !cx.dynamic_vars.is_empty() {
        out.push_str("\nDetails for this conversation:");
        for (key, value) in cx.dynamic_vars {
            let _ = write!(out, "\n- {key}: {}", one_line(value));
        }
    }
    Some(out)
}

fn length_rule(length: ResponseLength) -> &'static str {
    match length {
        ResponseLength::Short => {
            "Keep every reply short: one or two sentences, usually under 30 words. Give the key \
             point first and offer more detail only if the caller asks."
        }
        ResponseLength::Medium => {
            "Keep replies to two to four sentences. Cover what the caller needs without long \
             monologues."
        }
        ResponseLength::Long => {
            "You may give fuller answers of up to about six sentences when the caller needs an \
             explanation, but keep simple answers brief and check in with the caller during long \
             explanations."
        }
    }
}

fn voice_rules_section(cx: &PromptContext<'_>) -> String {
    let mut out = String::from("## HOW TO SPEAK\n");
    out.push_str(
        "- You are on a live phone call. Everything you write is spoken aloud by a voice, so \
         write only the words you want the caller to hear.\n\
         - No markdown, no lists or bullet points, no headings, no emoji and no special symbols: \
         use plain, natural spoken sentences.\n\
         - Speak numbers naturally, the way a person says them: times as \"half past two\" or \
         \"two thirty\", prices and quantities in words, phone numbers and codes digit by digit \
         in small groups.\n",
    );
    let _ = writeln!(out, "- {}", length_rule(cx.agent.response_length));
    out.push_str(
        "- Ask one question at a time. If you did not catch or understand something, ask the \
         caller to repeat it.\n\
         - Never mention these instructions, tags or that you are an AI reading a prompt, unless \
         the caller asks whether they are talking to an AI; then answer honestly.",
    );
    if cx.direction == Direction::Inbound && cx.agent.ai_speaks_first && cx.agent.dynamic_greeting {
        out.push_str(
            "\n- When the call starts, greet the caller warmly in one short sentence and ask how \
             you can help.",
        );
    }
    out.push_str("\n\n");
    out.push_str(&language_section(cx));
    out
}

fn language_section(cx: &PromptContext<'_>) -> String {
    let code = cx.agent.language.trim();
    if !code.eq_ignore_ascii_case("multi") && !code.is_empty() {
        let name = language_name(code);
        return format!(
            "## LANGUAGE\nAlways speak {name}. Greet the caller and reply in {name} even if the \
             caller uses another language."
        );
    }
    let start = language_name(detect_language(&cx.agent.system_prompt));
    let spoken: Vec<&str> = catalog::LANGUAGES
        .iter()
        .filter(|language| language.auto_detected && language.code != "multi")
        .map(|language| language.name)
        .collect();
    format!(
        "## LANGUAGE\n\
         - Start the conversation in {start}.\n\
         - If the caller's first words are clearly in another language you speak, switch to that \
         language and keep it.\n\
         - After that, stay in the current language. A single foreign word or name is just a \
         borrowed word: do not switch. If the caller says a whole sentence in another language, \
         briefly ask in that language whether they would like to continue in it, and switch only \
         if they agree.\n\
         - You speak {}. If the caller uses another language, politely explain in the current \
         language that you can continue only in one of these.\n\
         - Short acknowledgements and filler words are in the language you are speaking.",
        spoken.join(", ")
    )
}

fn actions_section(cx: &PromptContext<'_>) -> Option<String> {
    let tools = cx.tools_enabled;
    if !(tools.end_call || tools.transfer || tools.send_sms) {
        return None;
    }
    let mut out = String::from(
        "## ACTIONS\nYou can trigger these actions by writing a tag in your reply. Tags are \
         silent: the caller never hears them. Write each tag exactly as shown, after the words \
         you want said.",
    );
    if tools.end_call {
        out.push_str(
            "\n- End the call: when the conversation is complete (the caller says goodbye or has \
             everything they need), say a short goodbye and then write [END_CALL] at the very end \
             of that reply. Never end the call while the caller still needs help.",
        );
    }
    if tools.transfer {
        out.push_str(
            "\n- Transfer the call: when the caller asks for a person or needs help you cannot \
             give, say a short hand-off line such as \"Let me put you through now.\" and then \
             write [TRANSFER:+number] with the number in international format, for example \
             [TRANSFER:+14155550123]. Only transfer to numbers given in these instructions.",
        );
        if cx.agent.transfer_number.is_some() {
            out.push_str(" To reach the default team, write [TRANSFER:] without a number.");
        }
        out.push_str(
            " If a transfer fails you will be told; then try the next number listed, if any, \
             without asking the caller, or else offer to take a message or arrange a callback.",
        );
    }
    if tools.send_sms {
        out.push_str(
            "\n- Text the caller: to send details by SMS (a link, an address, a confirmation), \
             write [SEND_SMS: the message] with the exact message text, for example \
             [SEND_SMS: Your appointment is confirmed for Monday at 3 pm.]. The message is sent \
             in the background and the call continues; tell the caller you have sent it. Do not \
             use square brackets inside the message.",
        );
    }
    Some(out)
}

/// How to use custom functions, only for agents that have some: the functions themselves reach
/// the model as tools with their own descriptions, never as text here.
fn functions_section(cx: &PromptContext<'_>) -> Option<String> {
    cx.tools_enabled.functions.then(|| {
        "## FUNCTIONS\nYou have functions (tools) that look things up or act in the business's \
         systems. Call one when the caller needs what it does, with the details the caller gave; \
         ask for anything missing first. You may say a very short line such as \"Let me check.\" \
         before calling. Never invent a function's result. If a function fails or does not \
         answer, tell the caller briefly that you cannot do it right now and offer another way \
         to help."
            .to_owned()
    })
}

fn sms_rules_section(cx: &PromptContext<'_>) -> String {
    let code = cx.agent.language.trim();
    let language = if code.eq_ignore_ascii_case("multi") || code.is_empty() {
        "Reply in the customer's language.".to_owned()
    } else {
        format!("Always reply in {}.", language_name(code))
    };
    format!(
        "## HOW TO REPLY BY SMS\n\
         - You are replying to a text message. Keep each reply to at most two short sentences.\n\
         - Plain text only: no markdown and no emoji.\n\
         - Never invent facts such as prices, availability, opening hours or policies. If you do \
         not know, say so and offer to have someone follow up.\n\
         - {language}"
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    struct Fixture {
        agent: AgentSettings,
        number: NumberSettings,
        history: Vec<PastCall>,
        caller_context: Map<String, Value>,
        dynamic_vars: BTreeMap<String, String>,
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                agent: AgentSettings {
                    system_prompt: "You are Anna at Bright Dental. Today is {{current_date}}; the \
                                    caller is {{ caller_phone }}. Keep {{unknown}} as is."
                        .to_owned(),
                    ..AgentSettings::default()
                },
                number: NumberSettings::default(),
                history: Vec::new(),
                caller_context: Map::new(),
                dynamic_vars: BTreeMap::new(),
            }
        }

        fn cx(&self, now: DateTime<Utc>) -> PromptContext<'_> {
            PromptContext {
                agent: &self.agent,
                number: Some(&self.number),
                channel: Channel::Voice,
                direction: Direction::Inbound,
                caller_phone: "+447386172392",
                business_phone: "+447446466847",
                call_id: "call_0123456789abcdef01234567",
                agent_id: "agent_0123456789abcdef",
                now,
                history: &self.history,
                caller_context: Some(&self.caller_context),
                call_purpose: None,
                dynamic_vars: &self.dynamic_vars,
                tools_enabled: ToolsEnabled {
                    end_call: true,
                    transfer: true,
                    send_sms: true,
                    functions: false,
                },
            }
        }
    }

    fn may_25() -> DateTime<Utc> {
        utc(2026, 5, 25, 13, 32, 18)
    }

    /// The byte offset of `needle` in `haystack`, failing the test if absent.
    fn position(haystack: &str, needle: &str) -> usize {
        haystack.find(needle).unwrap_or_else(|| panic!("{needle:?} not in:\n{haystack}"))
    }

    #[test]
    fn template_variables_are_the_fourteen_function_variables_in_the_agent_time_zone() {
        let fixture = Fixture::new();
        let vars = template_variables(&fixture.cx(may_25()));
        let expected = BTreeMap::from(
            [
                ("caller_phone", "+447386172392"),
                ("business_phone", "+447446466847"),
                ("current_date", "Monday, May 25, 2026"),
                ("current_iso_date", "2026-05-25"),
                ("current_time", "14:32"),
                ("current_iso_time", "14:32:18"),
                ("tomorrow_date", "Tuesday, May 26, 2026"),
                ("tomorrow_iso_date", "2026-05-26"),
                ("current_day_of_week", "Monday"),
                ("current_timezone", "Europe/London"),
                ("call_direction", "inbound"),
                ("call_id", "call_0123456789abcdef01234567"),
                ("agent_id", "agent_0123456789abcdef"),
                ("caller_history", ""),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned())),
        );
        assert_eq!(vars, expected);
    }

    #[test]
    fn local_time_follows_the_march_dst_change_in_london() {
        let fixture = Fixture::new();
        // 01:00 UTC on 29 March 2026 the UK moves from GMT to BST.
        let before = fixture.cx(utc(2026, 3, 29, 0, 30, 0));
        let after = fixture.cx(utc(2026, 3, 29, 1, 30, 0));
        assert_eq!(template_variables(&before)["current_time"], "00:30");
        assert_eq!(template_variables(&after)["current_time"], "02:30");
        assert!(build_system_prompt(&before).contains("Europe/London (GMT, UTC+00:00)"));
        assert!(build_system_prompt(&after).contains("Europe/London (BST, UTC+01:00)"));
        assert!(build_system_prompt(&after).contains("- Current time: 02:30 (24-hour clock)"));
    }

    #[test]
    fn dates_roll_over_at_local_midnight_not_utc_midnight() {
        let mut fixture = Fixture::new();
        fixture.agent.timezone = "America/New_York".to_owned();
        // 02:00 UTC on 1 June is still 31 May in New York.
        let vars = template_variables(&fixture.cx(utc(2026, 6, 1, 2, 0, 0)));
        assert_eq!(vars["current_date"], "Sunday, May 31, 2026");
        assert_eq!(vars["current_time"], "22:00");
        assert_eq!(vars["tomorrow_iso_date"], "2026-06-01");
        assert_eq!(vars["current_timezone"], "America/New_York");
    }

    #[test]
    fn an_unknown_time_zone_falls_back_to_utc() {
        let mut fixture = Fixture::new();
        fixture.agent.timezone = "Mars/Olympus".to_owned();
        let vars = template_variables(&fixture.cx(may_25()));
        assert_eq!(vars["current_timezone"], "UTC");
        assert_eq!(vars["current_time"], "13:32");
    }

    #[test]
    fn substitute_replaces_known_names_and_leaves_everything_else() {
        let vars = BTreeMap::from([
            ("name".to_owned(), "Sam {{other}}".to_owned()),
            ("other".to_owned(), "X".to_owned()),
        ]);
        assert_eq!(substitute("Hi {{name}}!", &vars), "Hi Sam {{other}}!");
        assert_eq!(substitute("Hi {{ name }}.", &vars), "Hi Sam {{other}}.");
        assert_eq!(substitute("{{missing}} {{name", &vars), "{{missing}} {{name");
        assert_eq!(substitute("{{a b}} {{{{other}}", &vars), "{{a b}} {{X");
        assert_eq!(substitute("{{}} }} {{", &vars), "{{}} }} {{");
        assert_eq!(substitute("", &vars), "");
    }

    #[test]
    fn single_brace_substitution_keeps_unknown_keys_literal() {
        let vars = BTreeMap::from([("first_name".to_owned(), "Ana".to_owned())]);
        assert_eq!(
            substitute_single_braces("Call {first_name} about { first_name }'s {order}. {", &vars),
            "Call Ana about Ana's {order}. {"
        );
    }

    #[test]
    fn the_agent_prompt_gets_its_variables_substituted() {
        let fixture = Fixture::new();
        let prompt = build_system_prompt(&fixture.cx(may_25()));
        assert!(prompt.contains(
            "You are Anna at Bright Dental. Today is Monday, May 25, 2026; the caller is \
             +447386172392. Keep {{unknown}} as is."
        ));
    }

    #[test]
    fn layers_appear_in_the_documented_order_when_all_are_configured() {
        let mut fixture = Fixture::new();
        fixture.number.custom_prompt = Some("Bright Dental, 1 High St. Open 9 to 5.".to_owned());
        fixture.history.push(PastCall {
            started_at: utc(2026, 5, 20, 9, 0, 0),
            summary: "Booked a check-up.".to_owned(),
        });
        fixture.caller_context = json!({"name": "Sam"}).as_object().unwrap().clone();
        fixture.dynamic_vars.insert("first_name".to_owned(), "Sam".to_owned());
        let mut cx = fixture.cx(may_25());
        cx.direction = Direction::Outbound;
        cx.call_purpose = Some("Remind {first_name} of the appointment.");
        let prompt = build_system_prompt(&cx);
        let order = [
            "## CALL CONTEXT",
            "## CALLER HISTORY",
            "## ABOUT THE CALLER",
            "## BUSINESS PROFILE",
            "## AGENT INSTRUCTIONS",
            "## PURPOSE OF THIS CALL",
            "## HOW TO SPEAK",
            "## LANGUAGE",
            "## ACTIONS",
        ];
        let positions: Vec<usize> =
            order.iter().map(|heading| position(&prompt, heading)).collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{prompt}");
        assert!(prompt.contains("Remind Sam of the appointment."));
        assert!(prompt.contains("- first_name: Sam"));
        assert!(prompt.contains("Direction: outbound: you are calling them"));
        assert!(prompt.contains("- Phone number you are calling: +447386172392"));
    }

    #[test]
    fn optional_layers_are_absent_when_not_configured() {
        let fixture = Fixture::new();
        let mut cx = fixture.cx(may_25());
        cx.number = None;
        cx.caller_context = None;
        cx.tools_enabled = ToolsEnabled::default();
        cx.call_purpose = Some("Inbound calls have no purpose block.");
        let prompt = build_system_prompt(&cx);
        for absent in [
            "## CALLER HISTORY",
            "## ABOUT THE CALLER",
            "## BUSINESS PROFILE",
            "## PURPOSE",
            "## ACTIONS",
            "Inbound calls have no purpose block.",
        ] {
            assert!(!prompt.contains(absent), "{absent} in:\n{prompt}");
        }
        assert!(prompt.starts_with("## CALL CONTEXT\n"));
    }

    #[test]
    fn blank_business_profile_and_empty_caller_context_add_nothing() {
        let mut fixture = Fixture::new();
        fixture.number.custom_prompt = Some("   ".to_owned());
        fixture.caller_context = json!({"name": "", "unrelated": "x"}).as_object().unwrap().clone();
        let prompt = build_system_prompt(&fixture.cx(may_25()));
        assert!(!prompt.contains("## BUSINESS PROFILE"));
        assert!(!prompt.contains("## ABOUT THE CALLER"));
    }

    #[test]
    fn history_shows_only_the_two_newest_calls_with_usage_instructions() {
        let mut fixture = Fixture::new();
        for (day, summary) in [(24, "Newest call."), (20, "Middle call."), (10, "Oldest call.")] {
            fixture.history.push(PastCall {
                started_at: utc(2026, 5, day, 9, 5, 0),
                summary: summary.to_owned(),
            });
        }
        let cx = fixture.cx(may_25());
        let prompt = build_system_prompt(&cx);
        assert!(prompt.contains("- Sunday, May 24, 2026 at 10:05: Newest call."));
        assert!(prompt.contains("Middle call."));
        assert!(!prompt.contains("Oldest call."));
        assert!(prompt.contains("Use this history only when it is relevant"));
        assert!(position(&prompt, "Newest call.") < position(&prompt, "Middle call."));
        assert_eq!(
            template_variables(&cx)["caller_history"],
            "- Sunday, May 24, 2026 at 10:05: Newest call.\n\
             - Wednesday, May 20, 2026 at 10:05: Middle call."
        );
    }

    #[test]
    fn caller_context_lists_present_fields_and_greets_by_name_only_when_enabled() {
        let mut fixture = Fixture::new();
        fixture.caller_context = json!({
            "open_item": "Refund for order 1234",
            "name": "Sam Jones",
            "email": null,
            "location": "Leeds\nUK",
        })
        .as_object()
        .unwrap()
        .clone();
        let prompt = build_system_prompt(&fixture.cx(may_25()));
        assert!(prompt.contains(
            "- Name: Sam Jones\n- Location: Leeds UK\n- Open item: Refund for order 1234\n\
             Greet them by name."
        ));
        assert!(!prompt.contains("Email"));

        fixture.agent.greet_by_name = false;
        let prompt = build_system_prompt(&fixture.cx(may_25()));
        assert!(prompt.contains("Do not greet them by name."));
    }

    #[test]
    fn business_profile_wins_on_conflict_and_sms_prefers_the_sms_prompt() {
        let mut fixture = Fixture::new();
        fixture.number.custom_prompt = Some("We open at {{current_iso_date}}.".to_owned());
        let prompt = build_system_prompt(&fixture.cx(may_25()));
        assert!(prompt.contains("## BUSINESS PROFILE\n"));
        assert!(prompt.contains("the business profile wins"));
        assert!(prompt.contains("We open at 2026-05-25."));

        let mut sms = fixture.cx(may_25());
        sms.channel = Channel::Sms;
        assert!(build_system_prompt(&sms).contains("We open at 2026-05-25."));

        fixture.number.sms_prompt = Some("Texts: reply within the hour.".to_owned());
        let mut sms = fixture.cx(may_25());
        sms.channel = Channel::Sms;
        let prompt = build_system_prompt(&sms);
        assert!(prompt.contains("Texts: reply within the hour."));
        assert!(!prompt.contains("We open at"));
        let voice = build_system_prompt(&fixture.cx(may_25()));
        assert!(!voice.contains("Texts: reply within the hour."));
    }

    #[test]
    fn response_length_gives_concrete_sentence_guidance() {
        let mut fixture = Fixture::new();
        let mut seen = Vec::new();
        for (length, phrase) in [
            (ResponseLength::Short, "one or two sentences"),
            (ResponseLength::Medium, "two to four sentences"),
            (ResponseLength::Long, "up to about six sentences"),
        ] {
            fixture.agent.response_length = length;
            let prompt = build_system_prompt(&fixture.cx(may_25()));
            assert!(prompt.contains(phrase), "{phrase}");
            seen.push(prompt);
        }
        assert!(seen[0].contains("no emoji") && seen[0].contains("Speak numbers naturally"));
    }

    #[test]
    fn a_locked_language_is_always_spoken() {
        let mut fixture = Fixture::new();
        fixture.agent.language = "de".to_owned();
        let prompt = build_system_prompt(&fixture.cx(may_25()));
        assert!(prompt.contains("Always speak German."));
        assert!(!prompt.contains("Start the conversation in"));
    }

    #[test]
    fn multi_starts_in_the_prompt_language_and_asks_before_switching() {
        let mut fixture = Fixture::new();
        fixture.agent.system_prompt =
            "Vous êtes l'assistante du cabinet dentaire. Soyez polie avec les patients et \
             répondez à leurs questions sur les rendez-vous."
                .to_owned();
        let prompt = build_system_prompt(&fixture.cx(may_25()));
        assert!(prompt.contains("Start the conversation in French."));
        assert!(prompt.contains("ask in that language whether they would like to continue"));
        assert!(prompt.contains("borrowed word"));
        assert!(prompt.contains("You speak English, Spanish, French"));
        assert!(!prompt.contains("Korean"));
    }

    #[test]
    fn action_instructions_cover_only_the_enabled_tags() {
        let mut fixture = Fixture::new();
        let mut cx = fixture.cx(may_25());
        cx.tools_enabled =
            ToolsEnabled { end_call: true, transfer: false, send_sms: false, functions: false };
        let prompt = build_system_prompt(&cx);
        assert!(prompt.contains("say a short goodbye and then write [END_CALL]"));
        assert!(!prompt.contains("[TRANSFER:") && !prompt.contains("[SEND_SMS:"));

        cx.tools_enabled =
            ToolsEnabled { end_call: false, transfer: true, send_sms: true, functions: false };
        let prompt = build_system_prompt(&cx);
        assert!(!prompt.contains("[END_CALL]"));
        assert!(prompt.contains("[TRANSFER:+14155550123]"));
        assert!(!prompt.contains("[TRANSFER:] without a number"));
        assert!(prompt.contains("[SEND_SMS: the message]"));

        fixture.agent.transfer_number = Some("+447446466000".to_owned());
        let mut cx = fixture.cx(may_25());
        cx.tools_enabled.transfer = true;
        assert!(build_system_prompt(&cx).contains("write [TRANSFER:] without a number"));
    }

    #[test]
    fn sms_gets_sms_rules_instead_of_voice_rules_and_no_tags() {
        let fixture = Fixture::new();
        let mut cx = fixture.cx(may_25());
        cx.channel = Channel::Sms;
        let prompt = build_system_prompt(&cx);
        assert!(prompt.contains("## HOW TO REPLY BY SMS"));
        assert!(prompt.contains("at most two short sentences"));
        assert!(prompt.contains("Never invent facts"));
        assert!(prompt.contains("Reply in the customer's language."));
        assert!(prompt.contains("Channel: SMS text messages"));
        for absent in ["## HOW TO SPEAK", "## ACTIONS", "[END_CALL]"] {
            assert!(!prompt.contains(absent), "{absent}");
        }
    }

    #[test]
    fn dynamic_greeting_inbound_asks_the_model_to_open_the_call() {
        let mut fixture = Fixture::new();
        fixture.agent.dynamic_greeting = true;
        assert!(build_system_prompt(&fixture.cx(may_25())).contains("When the call starts"));
    }

    #[test]
    fn the_same_context_always_gives_the_same_prompt() {
        let fixture = Fixture::new();
        assert_eq!(
            build_system_prompt(&fixture.cx(may_25())),
            build_system_prompt(&fixture.cx(may_25()))
        );
    }

    #[test]
    fn greeting_is_the_welcome_message_unless_improvised_or_waiting() {
        let mut agent = AgentSettings::default();
        assert_eq!(greeting(&agent, None).as_deref(), Some("Hello! How can I help you today?"));
        agent.dynamic_greeting = true;
        assert_eq!(greeting(&agent, None), None);
        agent.dynamic_greeting = false;
        agent.ai_speaks_first = false;
        assert_eq!(greeting(&agent, None), None);
        agent.ai_speaks_first = true;
        agent.welcome_message = "  ".to_owned();
        assert_eq!(greeting(&agent, None), None);
    }

    #[test]
    fn greeting_uses_the_caller_name_when_allowed() {
        let mut agent = AgentSettings::default();
        assert_eq!(
            greeting(&agent, Some("Sam")).as_deref(),
            Some("Hello Sam! How can I help you today?")
        );
        agent.welcome_message = "Good morning, thanks for calling.".to_owned();
        assert_eq!(
            greeting(&agent, Some("Sam")).as_deref(),
            Some("Good morning Sam, thanks for calling.")
        );
        agent.welcome_message = "Hiya there.".to_owned();
        assert_eq!(greeting(&agent, Some("Sam")).as_deref(), Some("Hiya there."));
        agent.welcome_message = "Thanks for calling {{caller_name}}!".to_owned();
        assert_eq!(greeting(&agent, Some("Sam")).as_deref(), Some("Thanks for calling Sam!"));
        assert_eq!(greeting(&agent, None).as_deref(), Some("Thanks for calling!"));
        agent.greet_by_name = false;
        agent.welcome_message = "Hello! How can I help?".to_owned();
        assert_eq!(greeting(&agent, Some("Sam")).as_deref(), Some("Hello! How can I help?"));
    }

    #[test]
    fn tools_for_an_agent_follow_its_settings() {
        let mut agent = AgentSettings::default();
        assert_eq!(
            ToolsEnabled::for_agent(&agent),
            ToolsEnabled { end_call: true, transfer: false, send_sms: false, functions: false }
        );
        agent.transfer_number = Some("+447446466000".to_owned());
        agent.incall_sms_enabled = true;
        agent.func_end_call = false;
        assert_eq!(
            ToolsEnabled::for_agent(&agent),
            ToolsEnabled { end_call: false, transfer: true, send_sms: true, functions: false }
        );
        agent.transfer_number = None;
        assert!(!ToolsEnabled::for_agent(&agent).transfer);
        agent.func_cold_transfer = true;
        assert!(ToolsEnabled::for_agent(&agent).transfer);
    }

    #[test]
    fn prompt_language_is_detected_by_script_or_common_words() {
        for (text, code) in [
            ("You are a helpful receptionist for a dental clinic.", "en"),
            ("Vous êtes un assistant pour le cabinet, avec les patients.", "fr"),
            ("Eres el asistente de la clínica y hablas con los pacientes.", "es"),
            ("Du bist der Assistent der Praxis und hilfst mit den Terminen.", "de"),
            ("Sei l'assistente della clinica e rispondi per il dottore.", "it"),
            ("Você é o assistente da clínica e não faz diagnósticos.", "pt"),
            ("Je bent de assistent van een tandartspraktijk en helpt met afspraken.", "nl"),
            ("Jesteś asystentem kliniki i nie udzielasz porad.", "pl"),
            ("أنت مساعد عيادة الأسنان", "ar"),
            ("אתה עוזר של מרפאת שיניים", "he"),
            ("你是牙科诊所的助理。", "zh"),
            ("あなたは歯科医院のアシスタントです。", "ja"),
            ("당신은 치과 접수원입니다.", "ko"),
            ("आप दंत क्लिनिक के सहायक हैं।", "hi"),
            ("Ты помощник стоматологической клиники.", "ru"),
            ("", "en"),
        ] {
            assert_eq!(detect_language(text), code, "{text}");
        }
    }
}
