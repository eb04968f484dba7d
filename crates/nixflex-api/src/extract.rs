//! Extractors that turn every malformed input into the documented envelope: JSON bodies
//! (checked against their typed request structs), query parameters, path segments, pagination,
//! boolean filters, the authenticated caller. `docs/input-validation.md` describes the rules.

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::KeyId;
use nixflex_core::validate::normalize_keys;
use nixflex_store::{Account, Page};
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller, put in the request extensions by the auth middleware.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account that owns everything the request touches.
    pub account: Account,
    /// The key used for this request.
    pub key_id: KeyId,
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
/// `application/json` and a JSON object without duplicate keys or NUL characters.
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
/// A body of zero bytes counts as `{}` (so `POST /v1/agents` with no body works); anything else
/// must be a JSON object: whitespace alone is not JSON.
///
/// # Errors
/// `unsupported_media_type`, `invalid_json` or `invalid_request`.
pub fn parse_object(bytes: &[u8], content_type: Option<&str>) -> Result<JsonObject, ApiError> {
    if bytes.is_empty() {
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
    let value = parse_strict(bytes)?;
    match value {
        Value::Object(map) => Ok(JsonObject(map)),
        other => Err(ApiError::invalid(format!(
            "The request body must be a JSON object, not {}.",
            nixflex_core::validate::json_type(&other)
        ))),
    }
}

/// What the strict parser refused, with the path of the field at fault.
#[derive(Debug)]
enum Refusal {
    Duplicate(String),
    Nul(String),
}

/// A `serde_json::Value` builder that refuses duplicate keys and NUL characters, remembering
/// where. serde_json alone keeps the last of two equal keys, and PostgreSQL cannot store NUL in
/// text, so both are refused here, before anything reaches a handler or the store.
struct StrictSeed<'r> {
    path: String,
    refusal: &'r RefCell<Option<Refusal>>,
}

impl StrictSeed<'_> {
    fn child(&self, segment: &str) -> StrictSeed<'_> {
        let path = if self.path.is_empty() {
            segment.to_owned()
        } else if segment.starts_with('[') {
            format!("{}{segment}", self.path)
        } else {
            format!("{}.{segment}", self.path)
        };
        StrictSeed { path, refusal: self.refusal }
    }

    fn refuse<E: de::Error>(&self, refusal: Refusal) -> E {
        *self.refusal.borrow_mut() = Some(refusal);
        E::custom("refused")
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        if v.contains('\0') {
            return Err(self.refuse(Refusal::Nul(self.path.clone())));
        }
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if v.contains('\0') {
            return Err(self.refuse(Refusal::Nul(self.path.clone())));
        }
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child(&format!("[{}]", items.len())))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.contains('\0') {
                let shown = key.replace('\0', "\\u0000");
                return Err(self.refuse(Refusal::Nul(self.child(&shown).path)));
            }
            if out.contains_key(&key) {
                return Err(self.refuse(Refusal::Duplicate(self.child(&key).path)));
            }
            let value = map.next_value_seed(self.child(&key))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON, refusing duplicate keys (`invalid_json`) and NUL characters in any string or key
/// (`invalid_request`), each naming the field.
///
/// # Errors
/// `invalid_json` or `invalid_request`.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ApiError> {
    let refusal = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed { path: String::new(), refusal: &refusal }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, refusal.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(Refusal::Nul(field))) => Err(nul_error(&field)),
        (Err(_), Some(Refusal::Duplicate(field))) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("The request body names `{field}` twice; send each field once."),
        )
        .detail("field", field)),
        (Err(error), None) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("The request body is not valid JSON: {error}."),
        )
        .detail("line", error.line())
        .detail("column", error.column())),
    }
}

/// 400 for a NUL character in a field, a query parameter or a path segment.
pub fn nul_error(field: &str) -> ApiError {
    ApiError::invalid(format!(
        "`{field}` contains a NUL character (\\u0000), which is not allowed in text."
    ))
    .detail("field", field.to_owned())
}

/// The closest of `known` to `name`, when it is close enough to be a likely typo.
pub fn closest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let name = name.to_ascii_lowercase();
    known
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(&name, candidate), candidate))
        .filter(|(distance, candidate)| {
            *distance <= 2.max(name.len().max(candidate.len()) / 3)
                || strsim::jaro_winkler(&name, candidate) >= 0.9
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// 400 `unknown_field`, suggesting the closest known name.
pub fn unknown_field<'k>(
    field: &str,
    name: &str,
    known: impl IntoIterator<Item = &'k str>,
    what: &str,
) -> ApiError {
    let suggestion = closest(name, known);
    let message = match suggestion {
        Some(s) => format!("Unknown {what} `{field}`; did you mean `{s}`?"),
        None => {
            format!("Unknown {what} `{field}`; see GET /v1/openapi.json for the accepted names.")
        }
    };
    let error = ApiError::new(ErrorCode::UnknownField, message).detail("field", field.to_owned());
    match suggestion {
        Some(s) => error.detail("suggestion", s.to_owned()),
        None => error,
    }
}

/// The names between backticks after `expected` in a serde message.
fn expected_names(message: &str) -> Vec<&str> {
    message
        .split_once("expected")
        .map(|(_, rest)| rest.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default()
}

fn first_quoted(message: &str) -> Option<&str> {
    message.split('`').nth(1)
}

/// Maps a typed-struct deserialization error to the envelope, naming the field.
fn typed_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = error.inner().to_string();
    let join = |name: &str| {
        if path.is_empty() || path == name || path.ends_with(&format!(".{name}")) {
            if path.is_empty() { name.to_owned() } else { path.clone() }
        } else {
            format!("{path}.{name}")
        }
    };
    if message.starts_with("unknown field") {
        let name = first_quoted(&message).unwrap_or("");
        let field = join(name);
        return unknown_field(&field, name, expected_names(&message), "field");
    }
    if message.starts_with("missing field") {
        let field = join(first_quoted(&message).unwrap_or(""));
        return ApiError::new(ErrorCode::MissingField, format!("`{field}` is required."))
            .detail("field", field);
    }
    let field = if path.is_empty() { "body".to_owned() } else { path };
    let reason = message.split(" at line ").next().unwrap_or(&message);
    ApiError::invalid(format!("`{field}` is not valid: {reason}.")).detail("field", field)
}

/// A JSON body checked against its typed request struct `T` (whose schema is the one in the
/// OpenAPI document): strict JSON (no duplicate keys, no NUL), camelCase keys normalised to
/// snake_case, then deserialised into `T`, which refuses unknown fields (with a suggestion)
/// and wrongly typed values (naming the field).
///
/// `fields` is the normalised object, for the handlers' own semantic validation (aliases,
/// `null` clearing, ranges and their specific error codes).
#[derive(Debug, Clone)]
pub struct Checked<T> {
    /// The typed body.
    pub input: T,
    /// The body as a snake_case object.
    pub fields: Map<String, Value>,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Checked<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let JsonObject(body) = JsonObject::from_request(req, state).await?;
        check_body(body)
    }
}

/// Checks an already-parsed object against `T` (see [`Checked`]).
///
/// # Errors
/// `unknown_field`, `missing_field` or `invalid_request`, naming the field.
pub fn check_body<T: DeserializeOwned>(body: Map<String, Value>) -> Result<Checked<T>, ApiError> {
    let fields = normalize_keys(body);
    let value = Value::Object(fields);
    let input = serde_path_to_error::deserialize(&value).map_err(|e| typed_error(&e))?;
    let Value::Object(fields) = value else { return Err(ApiError::invalid("not an object")) };
    Ok(Checked { input, fields })
}

/// Rejects NUL characters in path parameters and, for `/v1` routes, repeated, NUL-carrying or
/// undocumented query parameters. Runs after routing (it needs the matched route) and after
/// authentication.
pub async fn check_uri(req: Request, next: Next) -> Response {
    match uri_problem(&req) {
        Some(error) => error.into_response(),
        None => next.run(req).await,
    }
}

fn uri_problem(req: &Request) -> Option<ApiError> {
    let route = req.extensions().get::<MatchedPath>()?.as_str().to_owned();
    if !route.starts_with("/v1") {
        return None;
    }
    for (template, actual) in route.split('/').zip(req.uri().path().split('/')) {
        if let Some(name) = template.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
            && percent_encoding::percent_decode_str(actual).any(|b| b == 0)
        {
            return Some(nul_error(name));
        }
    }
    let pairs = match QueryPairs::parse(req.uri().query().unwrap_or("")) {
        Ok(pairs) => pairs,
        Err(error) => return Some(error),
    };
    // HEAD is answered by the GET route, with its parameters.
    let method =
        if req.method() == axum::http::Method::HEAD { "GET" } else { req.method().as_str() };
    let declared = crate::openapi::query_parameters(method, &route);
    for (name, _) in &pairs.0 {
        if !declared.iter().any(|d| d == name) {
            return Some(unknown_field(
                name,
                name,
                declared.iter().map(String::as_str),
                "query parameter",
            ));
        }
    }
    None
}

/// The raw query pairs, for handlers that validate parameters themselves.
#[derive(Debug, Clone, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The value of `name` (a name given twice is refused by [`QueryPairs::parse`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `limit` (default 25, larger values clamped to 100) and `offset` (default 0).
    ///
    /// # Errors
    /// `invalid_request` for negative or non-numeric values (docs/decisions.md#list-responses).
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

impl QueryPairs {
    /// Parses a query string, refusing a parameter given twice (`limit=1&limit=2` is ambiguous)
    /// and NUL characters in names or values.
    ///
    /// # Errors
    /// `invalid_request` naming the parameter.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name.contains('\0') || value.contains('\0') {
                return Err(nul_error(&name.replace('\0', "\\u0000")));
            }
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(ApiError::invalid(format!(
                    "The query parameter `{name}` is given more than once; give it once."
                ))
                .detail("field", name.into_owned()));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(pairs))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(parts.uri.query().unwrap_or(""))
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
    fn repeated_and_nul_query_parameters_are_refused() {
        assert_eq!(QueryPairs::parse("limit=5&offset=2").unwrap().get("limit"), Some("5"));
        let error = QueryPairs::parse("limit=1&limit=2").unwrap_err();
        assert_eq!(error.details["field"], "limit");
        let error = QueryPairs::parse("agent_id=a%00b").unwrap_err();
        assert_eq!(error.details["field"], "agent_id");
        assert!(QueryPairs::parse("a%00=1").is_err());
    }

    #[test]
    fn strict_json_refuses_duplicates_and_nul_naming_the_field() {
        let error = parse_strict(br#"{"a": 1, "b": {"c": [1, {"d": 1, "d": 2}]}}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidJson);
        assert_eq!(error.details["field"], "b.c[1].d");
        let error = parse_strict(br#"{"a": ["ok", "no\u0000"]}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert_eq!(error.details["field"], "a[1]");
        let error = parse_strict(br#"{"k\u0000": 1}"#).unwrap_err();
        assert_eq!(error.details["field"], "k\\u0000");
        assert_eq!(parse_strict(br#"{"a": [1, 2.5, null, true]}"#).unwrap()["a"][1], 2.5);
        assert_eq!(parse_strict(b"{} x").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(parse_strict(b"   ").unwrap_err().code, ErrorCode::InvalidJson);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        system_prompt: Option<String>,
        items: Option<Vec<Item>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        format_example: Option<String>,
        count: Option<u8>,
    }

    fn check(body: serde_json::Value) -> Result<Checked<Sample>, ApiError> {
        check_body::<Sample>(body.as_object().unwrap().clone())
    }

    #[test]
    fn typed_bodies_name_unknown_and_wrongly_typed_fields() {
        use serde_json::json;
        let error = check(json!({"sytem_prompt": "x"})).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownField);
        assert_eq!(error.details["field"], "sytem_prompt");
        assert_eq!(error.details["suggestion"], "system_prompt");
        let error = check(json!({"items": [{}, {"formt_example": "x"}]})).unwrap_err();
        assert_eq!(error.details["field"], "items[1].formt_example");
        assert_eq!(error.details["suggestion"], "format_example");
        let error = check(json!({"zzz": 1})).unwrap_err();
        assert!(!error.details.contains_key("suggestion"));
        let error = check(json!({"items": [{"count": "many"}]})).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert_eq!(error.details["field"], "items[0].count");
        // camelCase is the same field.
        let checked = check(json!({"systemPrompt": "x"})).unwrap();
        assert_eq!(checked.fields["system_prompt"], "x");
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
