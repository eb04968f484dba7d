//! [`TwilioError`]: what can go wrong when calling Twilio's REST API, shaped so that the API layer
//! can map each case to its own error code (e.g. `twilio_auth_failed`, `number_not_in_twilio`).
//!
//! Twilio reports failures as JSON (`twilio-python` `twilio/base/exceptions.py`,
//! `TwilioRestException`; <https://www.twilio.com/docs/usage/twilios-response>):
//! `{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}`.
//!
//! `Display` never includes Twilio's `message`, which can echo phone numbers (PII); read the
//! field when it is needed.

use std::time::Duration;

use serde::Deserialize;

/// Twilio error code for failed authentication (HTTP 401).
pub const CODE_AUTHENTICATE: u32 = 20003;
/// Twilio error code for an unknown resource (HTTP 404).
pub const CODE_NOT_FOUND: u32 = 20404;
/// Twilio error code for "Too Many Requests" (HTTP 429).
pub const CODE_TOO_MANY_REQUESTS: u32 = 20429;

/// A failed call to Twilio's REST API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TwilioError {
    /// Twilio rejected the credentials (HTTP 401, Twilio code 20003 in practice).
    #[error("Twilio authentication failed (http {status}, twilio code {code:?})")]
    Authentication {
        /// HTTP status, 401 in practice.
        status: u16,
        /// Twilio error code, usually 20003.
        code: Option<u32>,
        /// Twilio's message, usually "Authenticate".
        message: String,
    },
    /// The resource does not exist in this account (HTTP 404, Twilio code 20404).
    #[error("Twilio resource not found (twilio code {code:?})")]
    NotFound {
        /// Twilio error code, usually 20404.
        code: Option<u32>,
        /// Twilio's message, which names the requested path.
        message: String,
    },
    /// Twilio kept answering 429 / code 20429 until the retries ran out.
    #[error("Twilio rate limit exceeded after {attempts} attempts")]
    RateLimited {
        /// Twilio error code, usually 20429.
        code: Option<u32>,
        /// How many requests were made, the first one included.
        attempts: u32,
        /// The last `Retry-After` Twilio sent, if any.
        retry_after: Option<Duration>,
    },
    /// Any other error status from Twilio (validation errors, 5xx, …).
    #[error("Twilio returned http {status} (twilio code {code:?})")]
    Upstream {
        /// HTTP status.
        status: u16,
        /// Twilio error code, when the body carried one (e.g. 21211 invalid `To`).
        code: Option<u32>,
        /// Twilio's message (may contain PII).
        message: String,
        /// Twilio's documentation link for the code.
        more_info: Option<String>,
    },
    /// No response within the connect or request timeout.
    #[error("Twilio request timed out")]
    Timeout,
    /// The request could not be sent or the response could not be read.
    #[error("Twilio request failed")]
    Transport(#[source] reqwest::Error),
    /// Twilio answered with a success status but a body we could not decode.
    #[error("Twilio response could not be decoded")]
    Decode(#[source] serde_json::Error),
    /// The caller passed a value that cannot be sent (e.g. a SID with path characters).
    #[error("invalid Twilio request: {0}")]
    InvalidRequest(&'static str),
    /// The client could not be built from its configuration.
    #[error("invalid Twilio client configuration: {0}")]
    Config(&'static str),
}

impl TwilioError {
    /// True when the same request may succeed if sent again later: rate limiting, timeouts,
    /// transport failures and 5xx answers. Note that a timed-out `POST` may have been applied.
    pub fn is_retryable(&self) -> bool {
        match self {
            TwilioError::RateLimited { .. } | TwilioError::Timeout | TwilioError::Transport(_) => {
                true
            }
            TwilioError::Upstream { status, .. } => *status >= 500,
            TwilioError::Authentication { .. }
            | TwilioError::NotFound { .. }
            | TwilioError::Decode(_)
            | TwilioError::InvalidRequest(_)
            | TwilioError::Config(_) => false,
        }
    }

    /// Twilio's numeric error code, when Twilio sent one.
    pub fn twilio_code(&self) -> Option<u32> {
        match self {
            TwilioError::Authentication { code, .. }
            | TwilioError::NotFound { code, .. }
            | TwilioError::RateLimited { code, .. }
            | TwilioError::Upstream { code, .. } => *code,
            TwilioError::Timeout
            | TwilioError::Transport(_)
            | TwilioError::Decode(_)
            | TwilioError::InvalidRequest(_)
            | TwilioError::Config(_) => None,
        }
    }

    /// The HTTP status Twilio answered with, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            TwilioError::Authentication { status, .. } | TwilioError::Upstream { status, .. } => {
                Some(*status)
            }
            TwilioError::NotFound { .. } => Some(404),
            TwilioError::RateLimited { .. } => Some(429),
            TwilioError::Timeout
            | TwilioError::Transport(_)
            | TwilioError::Decode(_)
            | TwilioError::InvalidRequest(_)
            | TwilioError::Config(_) => None,
        }
    }

    /// Maps an error answer (status + body) to the matching variant. `attempts` is only used for
    /// rate limiting.
    pub(crate) fn from_response(
        status: u16,
        body: &[u8],
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Self {
        let parsed = TwilioErrorBody::parse(body);
        let code = parsed.code;
        let message = parsed.message.unwrap_or_default();
        if status == 401 || code == Some(CODE_AUTHENTICATE) {
            TwilioError::Authentication { status, code, message }
        } else if status == 404 || code == Some(CODE_NOT_FOUND) {
            TwilioError::NotFound { code, message }
        } else if is_rate_limited(status, code) {
            TwilioError::RateLimited { code, attempts, retry_after }
        } else {
            TwilioError::Upstream { status, code, message, more_info: parsed.more_info }
        }
    }
}

/// True for answers that mean "slow down": HTTP 429 or Twilio code 20429 on any status.
pub(crate) fn is_rate_limited(status: u16, code: Option<u32>) -> bool {
    status == 429 || code == Some(CODE_TOO_MANY_REQUESTS)
}

/// Twilio's JSON error body. Every field is optional: proxies and load balancers in front of
/// Twilio can answer with HTML or nothing.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TwilioErrorBody {
    #[serde(default)]
    pub(crate) code: Option<u32>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) more_info: Option<String>,
}

impl TwilioErrorBody {
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_body_maps_to_authentication_with_code() {
        let body = br#"{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#;
        let error = TwilioError::from_response(401, body, 1, None);
        assert!(matches!(
            &error,
            TwilioError::Authentication { status: 401, code: Some(20003), message } if message == "Authenticate"
        ));
        assert_eq!(error.twilio_code(), Some(20003));
        assert!(!error.is_retryable());
    }

    #[test]
    fn not_found_body_maps_to_not_found() {
        let body = br#"{"code": 20404, "message": "The requested resource /2010-04-01/Accounts/AC1/Calls/CA1.json was not found", "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}"#;
        let error = TwilioError::from_response(404, body, 1, None);
        assert!(matches!(error, TwilioError::NotFound { code: Some(20404), .. }));
        assert_eq!(error.http_status(), Some(404));
    }

    #[test]
    fn validation_error_keeps_code_message_and_more_info() {
        let body = br#"{"code": 21211, "message": "Invalid 'To' Phone Number", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let error = TwilioError::from_response(400, body, 1, None);
        match &error {
            TwilioError::Upstream { status, code, message, more_info } => {
                assert_eq!(*status, 400);
                assert_eq!(*code, Some(21211));
                assert_eq!(message, "Invalid 'To' Phone Number");
                assert_eq!(more_info.as_deref(), Some("https://www.twilio.com/docs/errors/21211"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!error.is_retryable());
    }

    #[test]
    fn code_20429_on_a_400_is_rate_limiting() {
        let error = TwilioError::from_response(400, br#"{"code":20429}"#, 3, None);
        assert!(matches!(error, TwilioError::RateLimited { code: Some(20429), attempts: 3, .. }));
        assert!(error.is_retryable());
    }

    #[test]
    fn non_json_server_error_is_a_retryable_upstream_error_without_code() {
        let error = TwilioError::from_response(502, b"<html>bad gateway</html>", 1, None);
        assert!(matches!(error, TwilioError::Upstream { status: 502, code: None, .. }));
        assert!(error.is_retryable());
    }

    #[test]
    fn display_does_not_leak_the_twilio_message() {
        let body =
            br#"{"code":21211,"message":"The 'To' number +15551234567 is not valid","status":400}"#;
        let error = TwilioError::from_response(400, body, 1, None);
        assert!(!error.to_string().contains("+15551234567"));
    }
}
