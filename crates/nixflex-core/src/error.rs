//! The API error-code table: every machine-readable `code` the API can return, with its broad
//! `type` and HTTP status (docs/api.md#errors). One table, so that docs, OpenAPI and handlers agree.

use std::fmt;

/// The broad class of an error (`error.type` in the envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// 401: missing, invalid or revoked key.
    AuthenticationError,
    /// 403: authenticated, but not allowed.
    PermissionError,
    /// 400 (and 405/413/414/415/416): malformed or missing parameters.
    InvalidRequest,
    /// 402: balance exhausted.
    PaymentRequired,
    /// 404: does not exist or is not yours.
    NotFound,
    /// 409: conflicts with the current state.
    Conflict,
    /// 429: too many requests.
    RateLimitError,
    /// 502: an upstream provider failed.
    ProviderError,
    /// 500/501/503: our own failure.
    ServerError,
}

impl ErrorType {
    /// The snake_case name used in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthenticationError => "authentication_error",
            Self::PermissionError => "permission_error",
            Self::InvalidRequest => "invalid_request",
            Self::PaymentRequired => "payment_required",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::RateLimitError => "rate_limit_error",
            Self::ProviderError => "provider_error",
            Self::ServerError => "server_error",
        }
    }
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($name:literal, $ty:ident, $status:literal) ),+ $(,)?) => {
        /// A stable, machine-readable error reason (`error.code`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $( $(#[$doc])* $variant ),+ }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant ),+ ];

            /// The snake_case code string.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $name ),+ }
            }

            /// The broad error type.
            pub fn error_type(self) -> ErrorType {
                match self { $( Self::$variant => ErrorType::$ty ),+ }
            }

            /// The HTTP status code.
            pub fn http_status(self) -> u16 {
                match self { $( Self::$variant => $status ),+ }
            }
        }
    };
}

error_codes! {
    /// Wrong, missing or revoked API key.
    InvalidApiKey => ("invalid_api_key", AuthenticationError, 401),
    /// The Authorization header has a key id but no secret half.
    KeySecretRequired => ("key_secret_required", AuthenticationError, 401),
    /// Request-rate limit exceeded; `details.retry_after` gives seconds.
    RateLimitExceeded => ("rate_limit_exceeded", RateLimitError, 429),
    /// Generic validation failure or missing parameter.
    InvalidRequest => ("invalid_request", InvalidRequest, 400),
    /// A required field is absent or empty.
    MissingField => ("missing_field", InvalidRequest, 400),
    /// The request body is not valid JSON.
    InvalidJson => ("invalid_json", InvalidRequest, 400),
    /// A body field the operation does not know (`details.field`, `details.suggestion`).
    UnknownField => ("unknown_field", InvalidRequest, 400),
    /// A body was sent without `Content-Type: application/json`.
    UnsupportedMediaType => ("unsupported_media_type", InvalidRequest, 415),
    /// The request body is larger than the server accepts.
    RequestTooLarge => ("request_too_large", InvalidRequest, 413),
    /// The request's path and query are longer than the server accepts.
    UriTooLong => ("uri_too_long", InvalidRequest, 414),
    /// No route matches the path.
    RouteNotFound => ("route_not_found", NotFound, 404),
    /// The route exists but not for this HTTP method.
    MethodNotAllowed => ("method_not_allowed", InvalidRequest, 405),
    /// Sign-up through the API is disabled on this server.
    SignupDisabled => ("signup_disabled", PermissionError, 403),
    /// Unknown key id, or another account's.
    KeyNotFound => ("key_not_found", NotFound, 404),
    /// The account's last active key cannot be revoked.
    LastActiveKey => ("last_active_key", Conflict, 409),
    /// Same Idempotency-Key reused with a different request.
    IdempotencyKeyReused => ("idempotency_key_reused", Conflict, 409),
    /// A request with the same Idempotency-Key is still running.
    IdempotencyRequestInFlight => ("idempotency_request_in_flight", Conflict, 409),
    /// The request already succeeded, and its response held a secret that is shown only once:
    /// it is replayed only to the key that made the request, never to anyone else.
    IdempotentReplayWithheld => ("idempotent_replay_withheld", Conflict, 409),
    /// Unknown agent id, or another account's.
    AgentNotFound => ("agent_not_found", NotFound, 404),
    /// The agent exists but belongs to another account.
    AgentNotOwned => ("agent_not_owned", PermissionError, 403),
    /// The agent is inactive (`is_active: false`).
    AgentInactive => ("agent_inactive", InvalidRequest, 400),
    /// `system_prompt` is longer than allowed.
    PromptTooLong => ("prompt_too_long", InvalidRequest, 400),
    /// `voice_id` is not in the voice catalogue.
    InvalidVoiceId => ("invalid_voice_id", InvalidRequest, 400),
    /// `language` is not a supported code.
    InvalidLanguage => ("invalid_language", InvalidRequest, 400),
    /// Voicemail leaving enabled without a message.
    VoicemailMessageRequired => ("voicemail_message_required", InvalidRequest, 400),
    /// A phone number is not in E.164 format.
    InvalidPhoneFormat => ("invalid_phone_format", InvalidRequest, 400),
    /// A Twilio Account SID is not `AC` + 32 hex.
    InvalidTwilioSid => ("invalid_twilio_sid", InvalidRequest, 400),
    /// The number is not in the given Twilio account.
    NumberNotInTwilio => ("number_not_in_twilio", NotFound, 404),
    /// Twilio rejected the Account SID and auth token.
    TwilioInvalidCredentials => ("twilio_invalid_credentials", AuthenticationError, 401),
    /// Twilio answered with error 20003 (authenticate).
    TwilioAuthFailed => ("twilio_auth_failed", AuthenticationError, 401),
    /// The number is already imported (by any account).
    NumberAlreadyImported => ("number_already_imported", Conflict, 409),
    /// Unknown number, or another account's.
    NumberNotFound => ("number_not_found", NotFound, 404),
    /// `custom_prompt` is longer than 8000 characters.
    CustomPromptTooLong => ("custom_prompt_too_long", InvalidRequest, 400),
    /// No caller-context record for (number, caller).
    CallerNotFound => ("caller_not_found", NotFound, 404),
    /// Tried to set an engine-written caller-context field.
    EngineOnlyField => ("engine_only_field", InvalidRequest, 400),
    /// Unknown call id, or another account's.
    CallNotFound => ("call_not_found", NotFound, 404),
    /// The agent has no outbound-enabled number.
    AgentNoPhone => ("agent_no_phone", InvalidRequest, 400),
    /// `from_number` is not imported to this account.
    FromNumberNotOwned => ("from_number_not_owned", PermissionError, 403),
    /// Several outbound numbers and no `from_number`.
    FromNumberRequired => ("from_number_required", InvalidRequest, 400),
    /// Twilio rejected the dial.
    OutboundFailed => ("outbound_failed", ProviderError, 502),
    /// Too many calls in flight.
    ConcurrentCallLimit => ("concurrent_call_limit", RateLimitError, 429),
    /// More than 10,000 recipients.
    TooManyRecipients => ("too_many_recipients", InvalidRequest, 400),
    /// A schedule without a valid date, time or window.
    InvalidSchedule => ("invalid_schedule", InvalidRequest, 400),
    /// Unknown campaign id, or another account's.
    CampaignNotFound => ("campaign_not_found", NotFound, 404),
    /// The voice campaign has finished.
    CampaignAlreadyCompleted => ("campaign_already_completed", InvalidRequest, 400),
    /// The SMS campaign has finished.
    CampaignAlreadyDone => ("campaign_already_done", InvalidRequest, 400),
    /// The campaign has no recipients.
    CampaignNoRecipients => ("campaign_no_recipients", InvalidRequest, 400),
    /// SMS text over 1600 characters.
    MessageTooLong => ("message_too_long", InvalidRequest, 400),
    /// SMS cannot be sent to this region from this number.
    SmsNotSupportedInRegion => ("sms_not_supported_in_region", InvalidRequest, 400),
    /// The recipient opted out with STOP.
    RecipientUnsubscribed => ("recipient_unsubscribed", InvalidRequest, 400),
    /// Unknown message id, or another account's.
    MessageNotFound => ("message_not_found", NotFound, 404),
    /// The call has no recording (recording was off, it is still being stored, or it was deleted).
    RecordingNotFound => ("recording_not_found", NotFound, 404),
    /// A `Range` header that selects no byte of the recording.
    RangeNotSatisfiable => ("range_not_satisfiable", InvalidRequest, 416),
    /// A recording link whose signature is wrong or whose time ran out.
    RecordingLinkInvalid => ("recording_link_invalid", PermissionError, 403),
    /// The bucket refused the test write, so its settings were not saved.
    StorageVerificationFailed => ("storage_verification_failed", InvalidRequest, 400),
    /// The account's LLM failed the test completion, so its settings were not saved.
    LlmVerificationFailed => ("llm_verification_failed", InvalidRequest, 400),
    /// The account's speech provider failed the test synthesis, so its settings were not saved.
    TtsVerificationFailed => ("tts_verification_failed", InvalidRequest, 400),
    /// The account's balance is exhausted.
    InsufficientBalance => ("insufficient_balance", PaymentRequired, 402),
    /// A carrier webhook without a valid `X-Twilio-Signature`.
    InvalidSignature => ("invalid_signature", PermissionError, 403),
    /// The server has no public URL configured, so the carrier cannot reach it.
    PublicUrlNotConfigured => ("public_url_not_configured", ServerError, 503),
    /// An upstream provider failed or timed out.
    ProviderError => ("provider_error", ProviderError, 502),
    /// The feature is not built yet on this server.
    NotImplemented => ("not_implemented", ServerError, 501),
    /// A dependency (the database) is unavailable.
    ServiceUnavailable => ("service_unavailable", ServerError, 503),
    /// The request took longer than the server allows.
    RequestTimeout => ("request_timeout", ServerError, 503),
    /// An internal failure.
    InternalError => ("internal_error", ServerError, 500),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The documentation URL of an error code.
pub fn doc_url(code: ErrorCode) -> String {
    format!("https://docs.nixflex.com/reference/errors#{}", code.as_str())
}

/// `docs/specs/api-errors.md`, generated from the table.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# API error codes\n\nEvery `code` the API returns, its `type` and HTTP status. Generated from the code table\n(`nixflex_core::error`): `UPDATE_DOCS=1 cargo test -p nixflex-core` rewrites this file, and a test fails\nwhen it is out of date.\n\n| code | status | type |\n|---|---|---|\n",
    );
    for code in ErrorCode::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.http_status(),
            code.error_type().as_str()
        ));
    }
    out.push_str("\nEvery error response is `{\"error\": {\"type\", \"code\", \"message\", \"doc_url\", \"details\"?}}`; `details`\ncarries structured extras such as `field` (the input at fault), `row_index`, `retry_after` (seconds),\n`max_bytes` or `twilio_error`.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_error_reference_document_matches_the_table() {
        // The directory cargo / nextest name when running the test, so that a binary reused
        // from a build cache made in another checkout reads this checkout's file.
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
        let path = format!("{dir}/../../docs/specs/api-errors.md");
        let expected = render_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/specs/api-errors.md is stale: run UPDATE_DOCS=1 cargo test -p nixflex-core"
        );
    }

    #[test]
    fn codes_are_unique_snake_case_and_status_matches_type() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            let status = code.http_status();
            let expected: &[u16] = match code.error_type() {
                ErrorType::AuthenticationError => &[401],
                ErrorType::PermissionError => &[403],
                ErrorType::InvalidRequest => &[400, 405, 413, 414, 415, 416],
                ErrorType::PaymentRequired => &[402],
                ErrorType::NotFound => &[404],
                ErrorType::Conflict => &[409],
                ErrorType::RateLimitError => &[429],
                ErrorType::ProviderError => &[502],
                ErrorType::ServerError => &[500, 501, 503],
            };
            assert!(expected.contains(&status), "{name} has status {status}");
        }
    }
}
