//! Extractors that turn every malformed input into the documented envelope: JSON bodies,
//! pagination, boolean query filters, the authenticated caller.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use nixflex_core::error::ErrorCode;
use nixflex_store::{Account, Page};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller, put in the request extensions by the auth middleware.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account that owns everything the request touches.
    pub account: Account,
    /// The key used for this request.
    pub key_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidApiKey, "Invalid or missing API key"))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}

/// The client's IP: the socket peer, or the first `X-Forwarded-For` hop when configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// Reads it from request parts.
    pub fn from_parts(parts: &Parts, trust_forwarded_for: bool) -> Self {
        if trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Self(ip);
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Self(peer.unwrap_or(IpAddr::from([0, 0, 0, 0])))
    }
}

/// A JSON object body. An empty body counts as `{}`; a non-empty one must be
/// `application/json` and a JSON object.
#[derive(Debug, Clone, Default)]
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                too_large(state.config().max_body_bytes)
            } else {
                ApiError::invalid("The request body could not be read.")
            }
        })?;
        parse_object(&bytes, content_type.as_deref())
    }
}

/// 413 with the limit.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::RequestTooLarge,
        format!("The request body is larger than the {limit} bytes this server accepts."),
    )
    .detail("max_bytes", limit)
}

/// Parses a body as a JSON object, checking the Content-Type.
///
/// # Errors
/// `unsupported_media_type`, `invalid_json` or `invalid_request`.
pub fn parse_object(bytes: &[u8], content_type: Option<&str>) -> Result<JsonObject, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonObject::default());
    }
    let is_json = content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    });
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Request bodies must be JSON, sent with `Content-Type: application/json`.",
        )
        .detail("content_type", content_type.unwrap_or("").to_owned()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("The request body is not valid JSON: {error}."),
        )
        .detail("line", error.line())
        .detail("column", error.column())
    })?;
    match value {
        Value::Object(map) => Ok(JsonObject(map)),
        other => Err(ApiError::invalid(format!(
            "The request body must be a JSON object, not {}.",
            nixflex_core::validate::json_type(&other)
        ))),
    }
}

/// The raw query pairs, for handlers that validate parameters themselves.
#[derive(Debug, Clone, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `limit` (default 25, larger values clamped to 100) and `offset` (default 0).
    ///
    /// # Errors
    /// `invalid_request` for negative or non-numeric values (DECISIONS #1).
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = match self.get("limit") {
            None | Some("") => 25,
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if n >= 1 => n.min(100),
                Ok(_) => {
                    return Err(
                        ApiError::invalid("`limit` must be at least 1.").detail("field", "limit")
                    );
                }
                Err(_) if raw.trim().bytes().all(|b| b.is_ascii_digit()) => 100,
                Err(_) => {
                    return Err(ApiError::invalid(format!(
                        "`limit` must be an integer, not `{raw}`."
                    ))
                    .detail("field", "limit"));
                }
            },
        };
        let offset = match self.get("offset") {
            None | Some("") => 0,
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n,
                Ok(_) => {
                    return Err(ApiError::invalid("`offset` must not be negative.")
                        .detail("field", "offset"));
                }
                Err(_) => {
                    return Err(ApiError::invalid(format!(
                        "`offset` must be an integer, not `{raw}`."
                    ))
                    .detail("field", "offset"));
                }
            },
        };
        Ok(Page { limit, offset })
    }

    /// An optional boolean filter (`true`/`false`).
    ///
    /// # Errors
    /// `invalid_request` for any other value.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => {
                    Err(ApiError::invalid(format!("`{name}` must be true or false, not `{raw}`."))
                        .detail("field", name.to_owned()))
                }
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Self(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> QueryPairs {
        QueryPairs(q.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn pagination_defaults_clamps_and_rejects() {
        assert_eq!(pairs(&[]).page().unwrap(), Page { limit: 25, offset: 0 });
        assert_eq!(pairs(&[("limit", "500")]).page().unwrap().limit, 100);
        assert_eq!(pairs(&[("limit", "99999999999999999999999")]).page().unwrap().limit, 100);
        assert!(pairs(&[("limit", "-1")]).page().is_err());
        assert!(pairs(&[("limit", "0")]).page().is_err());
        assert!(pairs(&[("limit", "ten")]).page().is_err());
        assert!(pairs(&[("offset", "-5")]).page().is_err());
        assert_eq!(pairs(&[("offset", "7")]).page().unwrap().offset, 7);
    }

    #[test]
    fn bodies_must_be_json_objects_with_the_right_content_type() {
        assert!(parse_object(b"", None).unwrap().0.is_empty());
        assert!(parse_object(b"{\"a\":1}", Some("application/json; charset=utf-8")).is_ok());
        assert_eq!(
            parse_object(b"{\"a\":1}", Some("text/plain")).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
        assert_eq!(
            parse_object(b"{\"a\":1}", None).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
        assert_eq!(
            parse_object(b"{bad", Some("application/json")).unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_object(b"[1]", Some("application/json")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }
}
