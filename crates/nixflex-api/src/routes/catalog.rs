//! The voice catalogue and language list (docs/decisions.md#voices-and-languages, #voice-catalogues) that agent `voice_id` and
//! `language` are validated against.

use axum::Json;
use axum::extract::State;
use nixflex_core::catalog::{self, LANGUAGES};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{Caller, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::state::AppState;

/// A voice agents can use.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VoiceObject {
    /// The value for `voice_id`.
    pub(crate) voice_id: &'static str,
    /// The TTS provider serving it.
    pub(crate) provider: &'static str,
    /// The provider's own voice id.
    pub(crate) provider_voice_id: &'static str,
    /// `female`, `male` or `neutral`.
    pub(crate) gender: &'static str,
    /// Native language code.
    pub(crate) language: &'static str,
    /// Short description.
    pub(crate) description: &'static str,
    /// Whether it is the default voice.
    pub(crate) is_default: bool,
}

/// A page of voices.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VoiceList {
    /// Voices.
    pub(crate) voices: Vec<VoiceObject>,
    /// Total voices matching.
    pub(crate) count: i64,
    /// Page size.
    pub(crate) limit: i64,
    /// Offset.
    pub(crate) offset: i64,
}

/// A language agents can speak.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LanguageObject {
    /// The value for `language` (ISO 639-1, or `multi`).
    pub(crate) code: &'static str,
    /// English name.
    pub(crate) name: &'static str,
    /// Whether `multi` switches into it by itself; others need the explicit code.
    pub(crate) auto_detected: bool,
}

/// A page of languages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LanguageList {
    /// Languages.
    pub(crate) languages: Vec<LanguageObject>,
    /// Total.
    pub(crate) count: i64,
    /// Page size.
    pub(crate) limit: i64,
    /// Offset.
    pub(crate) offset: i64,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_voices)).routes(routes!(list_languages))
}

fn page_of<T>(items: Vec<T>, limit: i64, offset: i64) -> (Vec<T>, i64) {
    let count = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = usize::try_from(limit).unwrap_or(0);
    (items.into_iter().skip(skip).take(take).collect(), count)
}

/// List the voices of the configured TTS provider (extension).
#[utoipa::path(
    get, path = "/v1/voices", tag = "catalogue",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100"),
           ("offset" = Option<i64>, Query, description = "Rows to skip"),
           ("language" = Option<String>, Query, description = "Only voices native in this language")),
    responses(
        (status = 200, description = "Voices", body = VoiceList),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_voices(
    State(state): State<AppState>,
    _caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<VoiceList>> {
    let page = query.page()?;
    let provider = state.config().tts_provider;
    let language = query.get("language").map(str::to_ascii_lowercase);
    let voices: Vec<VoiceObject> = catalog::voices(provider)
        .iter()
        .filter(|voice| language.as_deref().is_none_or(|l| voice.language == l))
        .map(|voice| VoiceObject {
            voice_id: voice.voice_id,
            provider: provider.as_str(),
            provider_voice_id: voice.provider_voice_id,
            gender: voice.gender,
            language: voice.language,
            description: voice.description,
            is_default: voice.voice_id == "Ashley",
        })
        .collect();
    let (voices, count) = page_of(voices, page.limit, page.offset);
    Ok(Json(VoiceList { voices, count, limit: page.limit, offset: page.offset }))
}

/// List the languages agents can use (extension).
#[utoipa::path(
    get, path = "/v1/languages", tag = "catalogue",
    params(("limit" = Option<i64>, Query, description = "Page size, default 25, max 100"),
           ("offset" = Option<i64>, Query, description = "Rows to skip")),
    responses(
        (status = 200, description = "Languages", body = LanguageList),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn list_languages(_caller: Caller, query: QueryPairs) -> ApiResult<Json<LanguageList>> {
    let page = query.page()?;
    let languages = LANGUAGES
        .iter()
        .map(|l| LanguageObject { code: l.code, name: l.name, auto_detected: l.auto_detected })
        .collect();
    let (languages, count) = page_of(languages, page.limit, page.offset);
    Ok(Json(LanguageList { languages, count, limit: page.limit, offset: page.offset }))
}
