//! The one error type every provider (LLM, STT, TTS) returns.
//!
//! A provider error says *what kind* of failure happened and whether trying again may help
//! (`retryable`); the supervisor decides what to do with it (retry, fall back, apologise, hang up).
//! The message may quote upstream error text, so treat `Display` as potentially sensitive: it
//! must never carry an API key, and callers log it as a field, not inside a message template.

use std::fmt;

/// What went wrong when talking to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// The credentials were rejected (HTTP 401/403, WebSocket upgrade refused for auth).
    Auth,
    /// The provider throttled us (HTTP 429 or an equivalent in-stream error).
    RateLimited,
    /// Connecting, the first byte or the next chunk took longer than configured.
    Timeout,
    /// The provider answered with an error status or an in-stream error of that class.
    Upstream {
        /// The HTTP status (or the status the in-stream error is equivalent to, e.g. 529 for
        /// Anthropic's `overloaded_error`).
        status: u16,
    },
    /// The provider sent something that does not follow its documented protocol.
    Protocol,
    /// The connection failed or broke (DNS, TCP, TLS, reset, truncated body).
    Transport,
    /// The request was cancelled by us (turn interrupted, stream dropped, input closed).
    Cancelled,
    /// The provider is not usable as configured (missing API key, invalid base URL).
    NotConfigured,
}

impl ProviderErrorKind {
    /// Whether an error of this kind is worth retrying when nothing else is known.
    pub fn default_retryable(self) -> bool {
        match self {
            Self::RateLimited | Self::Timeout | Self::Transport => true,
            Self::Upstream { status } => status >= 500 || status == 408 || status == 429,
            Self::Auth | Self::Protocol | Self::Cancelled | Self::NotConfigured => false,
        }
    }
}

impl fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth => f.write_str("authentication failed"),
            Self::RateLimited => f.write_str("rate limited"),
            Self::Timeout => f.write_str("timed out"),
            Self::Upstream { status } => write!(f, "upstream error (status {status})"),
            Self::Protocol => f.write_str("protocol error"),
            Self::Transport => f.write_str("transport error"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::NotConfigured => f.write_str("not configured"),
        }
    }
}

/// An error from an LLM, STT or TTS provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ProviderError {
    /// The class of failure.
    pub kind: ProviderErrorKind,
    /// A human-readable explanation (may quote the provider's own error message).
    pub message: String,
    /// Whether the same request may succeed if tried again.
    pub retryable: bool,
}

impl ProviderError {
    /// An error of `kind`, retryable as [`ProviderErrorKind::default_retryable`] says.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retryable: kind.default_retryable() }
    }

    /// Overrides whether the error is retryable.
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Credentials rejected.
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Auth, message)
    }

    /// Throttled by the provider (retryable).
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::RateLimited, message)
    }

    /// A configured timeout expired (retryable).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Timeout, message)
    }

    /// An error status from the provider; retryable for 5xx (incl. 529), 408 and 429.
    pub fn upstream(status: u16, message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Upstream { status }, message)
    }

    /// The provider broke its protocol (not retryable).
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Protocol, message)
    }

    /// The connection failed (retryable).
    pub fn transport(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Transport, message)
    }

    /// We cancelled the request.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Cancelled, message)
    }

    /// The provider is missing configuration (e.g. an API key).
    pub fn not_configured(message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::NotConfigured, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_timeouts_and_server_errors_are_retryable_by_default() {
        assert!(ProviderError::rate_limited("x").retryable);
        assert!(ProviderError::timeout("x").retryable);
        assert!(ProviderError::transport("x").retryable);
        assert!(ProviderError::upstream(500, "x").retryable);
        assert!(ProviderError::upstream(529, "x").retryable);
        assert!(!ProviderError::upstream(400, "x").retryable);
        assert!(!ProviderError::auth("x").retryable);
        assert!(!ProviderError::not_configured("x").retryable);
        assert!(!ProviderError::protocol("x").retryable);
    }

    #[test]
    fn display_names_the_kind_and_the_message() {
        let error = ProviderError::upstream(529, "overloaded");
        assert_eq!(error.to_string(), "upstream error (status 529): overloaded");
        assert!(!ProviderError::rate_limited("slow down").with_retryable(false).retryable);
    }
}
