//! The voice catalogues of the supported TTS providers and the language list
//! (docs/decisions.md#voices-and-languages, #voice-catalogues). `voice_id` and `language` on agents are validated against these.

/// A TTS provider whose catalogue is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtsProviderKind {
    /// Inworld TTS (the default).
    Inworld,
    /// Any OpenAI-compatible `/v1/audio/speech` server.
    OpenAi,
}

impl TtsProviderKind {
    /// The config/API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inworld => "inworld",
            Self::OpenAi => "openai",
        }
    }
}

/// One voice of a catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voice {
    /// The id agents use (`voice_id`).
    pub voice_id: &'static str,
    /// The id sent to the provider.
    pub provider_voice_id: &'static str,
    /// `female`, `male` or `neutral`.
    pub gender: &'static str,
    /// The language the voice is native in (a code of [`LANGUAGES`]).
    pub language: &'static str,
    /// A short description.
    pub description: &'static str,
}

const fn v(
    voice_id: &'static str,
    provider_voice_id: &'static str,
    gender: &'static str,
    language: &'static str,
    description: &'static str,
) -> Voice {
    Voice { voice_id, provider_voice_id, gender, language, description }
}

/// Inworld's voices (https://docs.inworld.ai/docs/tts/voices), by native language.
const INWORLD: &[Voice] = &[
    v("Ashley", "Ashley", "female", "en", "Warm, natural American English (the default)"),
    v("Alex", "Alex", "male", "en", "Energetic, expressive mid-range male"),
    v("Craig", "Craig", "male", "en", "Older British male, refined and articulate"),
    v("Deborah", "Deborah", "female", "en", "Gentle, elegant female"),
    v("Dennis", "Dennis", "male", "en", "Smooth, calm and friendly middle-aged male"),
    v("Edward", "Edward", "male", "en", "Emphatic, streetwise male"),
    v("Elizabeth", "Elizabeth", "female", "en", "Professional middle-aged female"),
    v("Hades", "Hades", "male", "en", "Commanding, gruff male"),
    v("Julia", "Julia", "female", "en", "Quirky, high-pitched female"),
    v("Mark", "Mark", "male", "en", "Energetic, expressive man with a rapid-fire delivery"),
    v("Olivia", "Olivia", "female", "en", "Young British female, upbeat and friendly"),
    v("Pixie", "Pixie", "female", "en", "High-pitched, childlike female"),
    v("Priya", "Priya", "female", "en", "Even-toned female with an Indian accent"),
    v("Ronald", "Ronald", "male", "en", "Confident British male with a deep, gravelly voice"),
    v("Sarah", "Sarah", "female", "en", "Fast-talking young adult woman"),
    v("Shaun", "Shaun", "male", "en", "Friendly, dynamic male"),
    v("Theodore", "Theodore", "male", "en", "Gravelly male with a time-worn quality"),
    v("Timothy", "Timothy", "male", "en", "Lively, upbeat American male"),
    v("Wendy", "Wendy", "female", "en", "Posh, middle-aged British female"),
    v("Diego", "Diego", "male", "es", "Soothing, gentle Mexican male"),
    v("Lupita", "Lupita", "female", "es", "Vibrant young Mexican female"),
    v("Miguel", "Miguel", "male", "es", "Calm Spanish male"),
    v("Rafael", "Rafael", "male", "es", "Middle-aged male from Spain"),
    v("Alain", "Alain", "male", "fr", "Smooth, low-pitched French male"),
    v("Hélène", "Hélène", "female", "fr", "Calm French female"),
    v("Mathieu", "Mathieu", "male", "fr", "High-pitched French male"),
    v("Étienne", "Étienne", "male", "fr", "Calm young French male"),
    v("Johanna", "Johanna", "female", "de", "Clear German female"),
    v("Josef", "Josef", "male", "de", "Deep German male"),
    v("Gianni", "Gianni", "male", "it", "Calm Italian male"),
    v("Orietta", "Orietta", "female", "it", "Warm Italian female"),
    v("Heitor", "Heitor", "male", "pt", "Composed Brazilian male"),
    v("Maitê", "Maitê", "female", "pt", "Friendly Brazilian female"),
    v("Erik", "Erik", "male", "nl", "Dutch male"),
    v("Katrien", "Katrien", "female", "nl", "Dutch female"),
    v("Szymon", "Szymon", "male", "pl", "Polish male"),
    v("Wojciech", "Wojciech", "male", "pl", "Deep Polish male"),
    v("Dmitry", "Dmitry", "male", "ru", "Russian male"),
    v("Svetlana", "Svetlana", "female", "ru", "Russian female"),
    v("Asuka", "Asuka", "female", "ja", "Friendly Japanese female"),
    v("Satoshi", "Satoshi", "male", "ja", "Dramatic Japanese male"),
    v("Hyunwoo", "Hyunwoo", "male", "ko", "Young Korean male"),
    v("Minji", "Minji", "female", "ko", "Energetic Korean female"),
    v("Jing", "Jing", "female", "zh", "Energetic Mandarin female"),
    v("Yichen", "Yichen", "male", "zh", "Calm Mandarin male"),
    v("Manoj", "Manoj", "male", "hi", "Hindi male"),
    v("Riya", "Riya", "female", "hi", "Hindi female"),
    v("Oren", "Oren", "male", "he", "Hebrew male"),
    v("Yael", "Yael", "female", "he", "Hebrew female"),
    v("Nour", "Nour", "female", "ar", "Arabic female"),
    v("Omar", "Omar", "male", "ar", "Arabic male"),
];

/// OpenAI-compatible speech voices; `Ashley` and `Dennis` map to the closest built-in voices so
/// that the default agent works on every provider (docs/decisions.md#voice-catalogues).
const OPENAI: &[Voice] = &[
    v("Ashley", "shimmer", "female", "en", "Warm female (OpenAI voice shimmer)"),
    v("Dennis", "onyx", "male", "en", "Calm, deep male (OpenAI voice onyx)"),
    v("alloy", "alloy", "neutral", "en", "OpenAI voice alloy"),
    v("ash", "ash", "male", "en", "OpenAI voice ash"),
    v("ballad", "ballad", "male", "en", "OpenAI voice ballad"),
    v("coral", "coral", "female", "en", "OpenAI voice coral"),
    v("echo", "echo", "male", "en", "OpenAI voice echo"),
    v("fable", "fable", "male", "en", "OpenAI voice fable"),
    v("nova", "nova", "female", "en", "OpenAI voice nova"),
    v("onyx", "onyx", "male", "en", "OpenAI voice onyx"),
    v("sage", "sage", "female", "en", "OpenAI voice sage"),
    v("shimmer", "shimmer", "female", "en", "OpenAI voice shimmer"),
    v("verse", "verse", "male", "en", "OpenAI voice verse"),
];

/// The catalogue of a provider.
pub fn voices(provider: TtsProviderKind) -> &'static [Voice] {
    match provider {
        TtsProviderKind::Inworld => INWORLD,
        TtsProviderKind::OpenAi => OPENAI,
    }
}

/// Finds a voice by id, case-insensitively.
pub fn find_voice(provider: TtsProviderKind, voice_id: &str) -> Option<&'static Voice> {
    voices(provider).iter().find(|voice| voice.voice_id.to_lowercase() == voice_id.to_lowercase())
}

/// A language the engine can speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Language {
    /// ISO 639-1 code, or `multi`.
    pub code: &'static str,
    /// English name.
    pub name: &'static str,
    /// Whether `multi` can switch into it on its own (docs/engine.md#language); the others need an explicit
    /// code on the agent.
    pub auto_detected: bool,
}

const fn l(code: &'static str, name: &'static str, auto_detected: bool) -> Language {
    Language { code, name, auto_detected }
}

/// Every language code an agent may use.
pub const LANGUAGES: &[Language] = &[
    l("multi", "Multilingual (follows the caller)", true),
    l("en", "English", true),
    l("es", "Spanish", true),
    l("fr", "French", true),
    l("de", "German", true),
    l("it", "Italian", true),
    l("pt", "Portuguese", true),
    l("nl", "Dutch", true),
    l("ru", "Russian", true),
    l("ja", "Japanese", true),
    l("hi", "Hindi", true),
    l("pl", "Polish", false),
    l("ko", "Korean", false),
    l("zh", "Chinese (Mandarin)", false),
    l("he", "Hebrew", false),
    l("ar", "Arabic", false),
];

/// Finds a language by code, case-insensitively.
pub fn find_language(code: &str) -> Option<&'static Language> {
    LANGUAGES.iter().find(|language| language.code.eq_ignore_ascii_case(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_voice_resolves_in_every_catalogue() {
        for provider in [TtsProviderKind::Inworld, TtsProviderKind::OpenAi] {
            assert!(find_voice(provider, "Ashley").is_some(), "{provider:?}");
            assert!(find_voice(provider, "ashley").is_some());
        }
        assert!(find_voice(TtsProviderKind::Inworld, "Nobody").is_none());
    }

    #[test]
    fn every_voice_language_is_a_listed_language_and_ids_are_unique() {
        for provider in [TtsProviderKind::Inworld, TtsProviderKind::OpenAi] {
            let mut ids: Vec<String> =
                voices(provider).iter().map(|voice| voice.voice_id.to_lowercase()).collect();
            for voice in voices(provider) {
                assert!(find_language(voice.language).is_some(), "{}", voice.voice_id);
            }
            let n = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), n, "{provider:?}");
        }
        assert!(find_language("multi").is_some());
        assert!(find_language("EN").is_some());
        assert!(find_language("xx").is_none());
    }
}
