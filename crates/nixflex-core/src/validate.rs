//! Shared validation: the error value handlers turn into 400s, JSON field readers, key
//! normalisation (camelCase aliases, docs/decisions.md#request-conventions) and outbound URL rules (docs/decisions.md#outbound-url-safety).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use crate::error::ErrorCode;

/// A rejected input: the code, a human message, and the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    /// The error code (400-class).
    pub code: ErrorCode,
    /// Human-readable, safe to show.
    pub message: String,
    /// The field at fault (`details.field`), e.g. `data_extraction_fields[2].name`.
    pub field: Option<String>,
}

impl ValidationError {
    /// A new error on a field.
    pub fn new(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: Some(field.to_owned()) }
    }

    /// `invalid_request` on a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, field, message)
    }

    /// `missing_field` on a field.
    pub fn missing(field: &str) -> Self {
        Self::new(ErrorCode::MissingField, field, format!("`{field}` is required"))
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Converts a camelCase key to snake_case (`agentId` → `agent_id`); snake_case is unchanged.
pub fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for ch in key.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Normalises an object's keys to snake_case; when both spellings are present the snake_case one
/// wins (it is the canonical name).
pub fn normalize_keys(body: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::with_capacity(body.len());
    let mut camel = Vec::new();
    for (key, value) in body {
        let snake = snake_case(&key);
        if snake == key {
            out.insert(key, value);
        } else {
            camel.push((snake, value));
        }
    }
    for (key, value) in camel {
        out.entry(key).or_insert(value);
    }
    out
}

/// Human name of a JSON value's type, for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Reads a string field (not null).
///
/// # Errors
/// `invalid_request` when the value is not a string.
pub fn as_str<'a>(field: &str, value: &'a Value) -> Result<&'a str, ValidationError> {
    value.as_str().ok_or_else(|| {
        ValidationError::invalid(
            field,
            format!("`{field}` must be a string, not {}", json_type(value)),
        )
    })
}

/// Reads a boolean field.
///
/// # Errors
/// `invalid_request` when the value is not a boolean.
pub fn as_bool(field: &str, value: &Value) -> Result<bool, ValidationError> {
    value.as_bool().ok_or_else(|| {
        ValidationError::invalid(
            field,
            format!("`{field}` must be a boolean, not {}", json_type(value)),
        )
    })
}

/// Reads a number field.
///
/// # Errors
/// `invalid_request` when the value is not a number.
pub fn as_f64(field: &str, value: &Value) -> Result<f64, ValidationError> {
    value.as_f64().ok_or_else(|| {
        ValidationError::invalid(
            field,
            format!("`{field}` must be a number, not {}", json_type(value)),
        )
    })
}

/// Reads an integer field within `min..=max` (an integral float such as `50.0` is accepted).
///
/// # Errors
/// `invalid_request` when not an integer or out of range.
pub fn as_int_in(field: &str, value: &Value, min: i64, max: i64) -> Result<i64, ValidationError> {
    let out_of_range =
        || ValidationError::invalid(field, format!("`{field}` must be between {min} and {max}"));
    let n = match value {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f.fract() == 0.0 && f.is_finite() => {
                if f < min as f64 || f > max as f64 {
                    return Err(out_of_range());
                }
                f as i64
            }
            _ => {
                return Err(ValidationError::invalid(
                    field,
                    format!("`{field}` must be a whole number"),
                ));
            }
        },
        other => {
            return Err(ValidationError::invalid(
                field,
                format!("`{field}` must be an integer, not {}", json_type(other)),
            ));
        }
    };
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

/// Rejects strings longer than `max` characters (counted as Unicode scalar values).
///
/// # Errors
/// The given `code` when too long.
pub fn check_len(
    field: &str,
    value: &str,
    max: usize,
    code: ErrorCode,
) -> Result<(), ValidationError> {
    let n = value.chars().count();
    if n > max {
        return Err(ValidationError::new(
            code,
            field,
            format!("`{field}` is {n} characters long; the maximum is {max}"),
        ));
    }
    Ok(())
}

/// Validates a URL the server will call (webhooks, custom functions, pre-call gate):
/// https only, and no loopback, private, link-local or metadata hosts (SSRF, docs/decisions.md#outbound-url-safety).
/// With `allow_private` (local testing) plain http and private hosts are allowed.
///
/// Host names are checked again after DNS resolution when the request is made.
///
/// # Errors
/// `invalid_request` with a message naming the rule broken.
pub fn outbound_url(
    field: &str,
    raw: &str,
    allow_private: bool,
) -> Result<url::Url, ValidationError> {
    let parsed = url::Url::parse(raw)
        .map_err(|_| ValidationError::invalid(field, format!("`{field}` is not a valid URL")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => {
            return Err(ValidationError::invalid(field, format!("`{field}` must be an https URL")));
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ValidationError::invalid(
            field,
            format!("`{field}` must not contain credentials"),
        ));
    }
    if allow_private {
        return Ok(parsed);
    }
    let forbidden = match parsed.host() {
        None => true,
        Some(url::Host::Ipv4(ip)) => !is_public_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost"
                || domain.ends_with(".localhost")
                || domain.ends_with(".local")
                || domain.ends_with(".internal")
                || domain == "metadata.google.internal"
                || !domain.contains('.')
        }
    };
    if forbidden {
        return Err(ValidationError::invalid(
            field,
            format!(
                "`{field}` must point to a public host (loopback, private and link-local addresses are not allowed)"
            ),
        ));
    }
    Ok(parsed)
}

/// Whether an address is publicly routable (not loopback, private, link-local, CGNAT, metadata,
/// multicast, documentation or unspecified).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link local
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)) // AWS metadata v6
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 192 && b == 0)
        || (a == 198 && (b == 18 || b == 19)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn camel_case_keys_become_snake_case_and_snake_wins_on_clash() {
        let body =
            json!({"agentId": "a", "phoneNumber": "+1", "twilio_sid": "x", "phone_number": "+2"});
        let out = normalize_keys(body.as_object().unwrap().clone());
        assert_eq!(out["agent_id"], "a");
        assert_eq!(out["phone_number"], "+2");
        assert_eq!(out["twilio_sid"], "x");
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn integers_accept_integral_floats_and_reject_others() {
        assert_eq!(as_int_in("x", &json!(50), 0, 100).unwrap(), 50);
        assert_eq!(as_int_in("x", &json!(50.0), 0, 100).unwrap(), 50);
        assert!(as_int_in("x", &json!(50.5), 0, 100).is_err());
        assert!(as_int_in("x", &json!(101), 0, 100).is_err());
        assert!(as_int_in("x", &json!(1e300), 0, 100).is_err());
        assert!(as_int_in("x", &json!("50"), 0, 100).is_err());
    }

    #[test]
    fn outbound_urls_must_be_public_https() {
        assert!(outbound_url("u", "https://example.com/hook", false).is_ok());
        for bad in [
            "http://example.com/hook",
            "https://127.0.0.1/x",
            "https://10.0.0.8/x",
            "https://169.254.169.254/latest",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://localhost/x",
            "https://svc.internal/x",
            "https://user:pw@example.com/x",
            "ftp://example.com",
            "not a url",
        ] {
            assert!(outbound_url("u", bad, false).is_err(), "{bad}");
        }
        assert!(outbound_url("u", "http://127.0.0.1:9000/x", true).is_ok());
    }
}
