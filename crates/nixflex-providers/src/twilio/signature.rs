//! Twilio `X-Twilio-Signature` computing and validation (docs/protocols.md#twilio-request-signature).
//!
//! The algorithm follows Twilio's reference implementations, `twilio/request_validator.py`
//! (twilio-python) and `src/webhooks/webhooks.ts` (twilio-node), and the security doc
//! <https://www.twilio.com/docs/usage/webhooks/webhooks-security>:
//!
//! 1. Start from the full URL Twilio requested, exactly as configured (query string included,
//!    not re-sorted).
//! 2. For `application/x-www-form-urlencoded` bodies, sort the POST parameter names byte-wise and
//!    append `name + value` for each, without delimiters. A name with several values appends
//!    `name + value` once per distinct value, values sorted byte-wise.
//! 3. For JSON (or any non-form) bodies, Twilio puts `bodySHA256=<hex sha256 of the raw body>` in
//!    the URL query and signs the URL alone; the body hash is checked separately.
//! 4. `HMAC-SHA1(key = auth token, message)`, base64 with padding.
//! 5. Validation compares in constant time and accepts the URL with its port removed or with the
//!    scheme's default port added (`:443` for https, `:80` otherwise), because Twilio's signing
//!    side is not consistent about ports.
//!
//! This module only does arithmetic on strings: it never logs, never reads the network, and never
//! panics on any input. The newer "Webhooks Rules" HMAC-SHA256 scheme (docs/protocols.md#webhooks-rules-signatures)
//! is not implemented: requests carrying `X-Twilio-Webhooks-Signature-Settings` need another key.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the HTTP header that carries Twilio's request signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Name of the URL query parameter that carries the hex SHA-256 of a non-form body.
pub const BODY_SHA256_PARAM: &str = "bodySHA256";

/// The body of a webhook request, as the validator needs to see it.
#[derive(Debug, Clone, Copy)]
pub enum SignedBody<'a> {
    /// An `application/x-www-form-urlencoded` body, already decoded into (name, value) pairs in
    /// any order. Repeated names appear once per value.
    Form(&'a [(String, String)]),
    /// Any other body (JSON in practice), as raw bytes. The URL must carry `bodySHA256`.
    Raw(&'a [u8]),
}

/// Computes the `X-Twilio-Signature` value for a request to `url` carrying the form `params`.
///
/// `params` may be in any order and may repeat names; pass an empty slice for a request with no
/// form body (the JSON case, where `url` already carries `bodySHA256`).
pub fn compute_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let digest = hmac_sha1(auth_token.as_bytes(), string_to_sign(url, params).as_bytes());
    BASE64_STANDARD.encode(digest)
}

/// Returns true when `header_value` is a valid signature for a form-encoded request to `url`.
///
/// `url` is the full URL Twilio requested (scheme, host, optional port, path and query exactly as
/// configured on the number or call). Both the URL without its port and the URL with the default
/// port are tried.
pub fn validate_form(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header_value: &str,
) -> bool {
    signature_matches_any_port_variant(auth_token, url, params, header_value)
}

/// Returns true when `header_value` is a valid signature for a non-form (JSON) request to `url`
/// whose raw body is `raw_body`.
///
/// The URL must carry `bodySHA256=<hex sha256 of raw_body>` in its query: a missing or wrong body
/// hash rejects the request, and the signature itself covers the URL only.
pub fn validate_json(auth_token: &str, url: &str, raw_body: &[u8], header_value: &str) -> bool {
    let Some(expected_hash) = body_sha256_from_url(url) else {
        return false;
    };
    let actual_hash = body_sha256_hex(raw_body);
    // Twilio sends lowercase hex; accept an uppercase rendering of the same digest too.
    let body_hash_ok: bool =
        actual_hash.as_bytes().ct_eq(expected_hash.to_ascii_lowercase().as_bytes()).into();
    let signature_ok = signature_matches_any_port_variant(auth_token, url, &[], header_value);
    body_hash_ok & signature_ok
}

/// Validates a webhook request whatever its body type; see [`validate_form`] and
/// [`validate_json`].
pub fn validate(auth_token: &str, url: &str, body: SignedBody<'_>, header_value: &str) -> bool {
    match body {
        SignedBody::Form(params) => validate_form(auth_token, url, params, header_value),
        SignedBody::Raw(raw_body) => validate_json(auth_token, url, raw_body, header_value),
    }
}

/// Lowercase hex SHA-256 of `body`, as Twilio puts it in the `bodySHA256` query parameter.
pub fn body_sha256_hex(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The string Twilio signs: the URL followed by `name + value` for every sorted, de-duplicated
/// parameter.
fn string_to_sign(url: &str, params: &[(String, String)]) -> String {
    let mut values_by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        values_by_name.entry(name.as_str()).or_default().insert(value.as_str());
    }
    let mut message = String::from(url);
    // `str`'s `Ord` is byte-wise, which is the order the reference implementations use.
    for (name, values) in &values_by_name {
        for value in values {
            message.push_str(name);
            message.push_str(value);
        }
    }
    message
}

fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    // `new_from_slice` accepts keys of any length for HMAC, so the error branch is unreachable;
    // an empty digest makes every comparison fail rather than panicking.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return [0; 20];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn signature_matches_any_port_variant(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header_value: &str,
) -> bool {
    let provided = header_value.trim().as_bytes();
    let mut matched = false;
    for candidate in [url_without_port(url), url_with_default_port(url)] {
        let expected = compute_signature(auth_token, &candidate, params);
        matched |= bool::from(expected.as_bytes().ct_eq(provided));
    }
    matched
}

/// The parts of an absolute URL around its authority's port.
struct UrlParts<'a> {
    /// `scheme://` plus any `userinfo@`.
    prefix: &'a str,
    scheme: &'a str,
    /// Host, with brackets for IPv6 literals.
    host: &'a str,
    /// Port digits, when the URL names a port.
    port: Option<&'a str>,
    /// Path, query and fragment, untouched.
    rest: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    let authority_start = scheme_end + 3;
    let after_scheme = &url[authority_start..];
    let authority_len = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_len];
    let rest = &after_scheme[authority_len..];
    let userinfo_len = authority.rfind('@').map_or(0, |at| at + 1);
    let prefix = &url[..authority_start + userinfo_len];
    let host_port = &authority[userinfo_len..];
    // An IPv6 literal is bracketed and contains colons itself; the port follows the bracket.
    let host_end = if host_port.starts_with('[') {
        host_port.find(']').map_or(host_port.len(), |bracket| bracket + 1)
    } else {
        host_port.find(':').unwrap_or(host_port.len())
    };
    let host = &host_port[..host_end];
    let port = host_port[host_end..].strip_prefix(':').filter(|port| !port.is_empty());
    Some(UrlParts { prefix, scheme, host, port, rest })
}

/// The URL with any explicit port removed (twilio-python `remove_port`).
fn url_without_port(url: &str) -> String {
    match split_url(url) {
        Some(parts) if parts.port.is_some() => {
            format!("{}{}{}", parts.prefix, parts.host, parts.rest)
        }
        _ => url.to_owned(),
    }
}

/// The URL with the scheme's default port added when it names none (twilio-python `add_port`:
/// 443 for https, 80 for anything else). A URL that names a port is returned unchanged.
fn url_with_default_port(url: &str) -> String {
    match split_url(url) {
        Some(parts) if parts.port.is_none() => {
            let default_port = if parts.scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
            format!("{}{}:{}{}", parts.prefix, parts.host, default_port, parts.rest)
        }
        _ => url.to_owned(),
    }
}

/// The first `bodySHA256` value in the URL's query, percent-decoded.
fn body_sha256_from_url(url: &str) -> Option<String> {
    let query_start = url.find('?')? + 1;
    let query_and_fragment = &url[query_start..];
    let query = query_and_fragment.split('#').next().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == BODY_SHA256_PARAM)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from twilio-python `tests/unit/test_request_validator.py` and twilio-node
    // `spec/validation.spec.js` (auth token "12345").
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const EXPECTED: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const JSON_BODY: &str = "{\"property\": \"value\", \"boolean\": true}";
    const JSON_BODY_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const JSON_SIGNATURE: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    fn default_params() -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ])
    }

    fn json_url() -> String {
        format!("{URL}&bodySHA256={JSON_BODY_HASH}")
    }

    #[test]
    fn compute_signature_matches_twilio_published_vector() {
        assert_eq!(compute_signature(TOKEN, URL, &default_params()), EXPECTED);
    }

    #[test]
    fn parameter_order_does_not_change_the_signature() {
        let mut params = default_params();
        params.reverse();
        assert_eq!(compute_signature(TOKEN, URL, &params), EXPECTED);
    }

    #[test]
    fn repeated_parameters_are_sorted_and_deduplicated() {
        // twilio-python `test_compute_signature_duplicate_multi_dict` and twilio-node
        // "multiple params and values" (Digits = ["5678", "1234", "1234"]).
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(compute_signature(TOKEN, URL, &params), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
        assert!(validate_form(TOKEN, URL, &params, "IK+Dwps556ElfBT0I3Rgjkr1wJU="));
    }

    #[test]
    fn array_parameter_validates_regardless_of_value_order() {
        // twilio-node "should validate request body with an array parameter".
        let forward = pairs(&[
            ("MessagingBinding.Address", "+1325xxxxxxx"),
            ("MessagingBinding.Address", "+1415xxxxxxx"),
        ]);
        let backward = pairs(&[
            ("MessagingBinding.Address", "+1415xxxxxxx"),
            ("MessagingBinding.Address", "+1325xxxxxxx"),
        ]);
        assert!(validate_form(TOKEN, URL, &forward, "83O6e2vORAoJHUNzJjDWN1jz+BA="));
        assert!(validate_form(TOKEN, URL, &backward, "83O6e2vORAoJHUNzJjDWN1jz+BA="));
    }

    #[test]
    fn validate_form_accepts_the_published_signature() {
        assert!(validate_form(TOKEN, URL, &default_params(), EXPECTED));
    }

    #[test]
    fn validate_form_removes_a_port_on_https() {
        let url = URL.replace(".com", ".com:1234");
        assert!(validate_form(TOKEN, &url, &default_params(), EXPECTED));
    }

    #[test]
    fn validate_form_keeps_an_explicit_port_on_http() {
        // Signature of the http URL *with* port 1234.
        let url = URL.replace(".com", ".com:1234").replace("https", "http");
        assert!(validate_form(TOKEN, &url, &default_params(), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="));
    }

    #[test]
    fn validate_form_adds_port_443_on_https() {
        assert!(validate_form(TOKEN, URL, &default_params(), "kvajT1Ptam85bY51eRf/AJRuM3w="));
    }

    #[test]
    fn validate_form_adds_port_80_on_http() {
        let url = URL.replace("https", "http");
        assert!(validate_form(TOKEN, &url, &default_params(), "0ZXoZLH/DfblKGATFgpif+LLRf4="));
    }

    #[test]
    fn validate_form_handles_urls_with_credentials() {
        // twilio-node "should validate urls with credentials" (+ "by adding port").
        let url = "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2";
        assert!(validate_form(TOKEN, url, &default_params(), "CukzLTc1tT5dXEDIHm/tKBanW10="));
        assert!(validate_form(TOKEN, url, &default_params(), "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="));
        let just_user = "https://user@mycompany.com/myapp.php?foo=1&bar=2";
        assert!(validate_form(TOKEN, just_user, &default_params(), "2YRLlVAflCqxaNicjMpJcSTgzSs="));
    }

    #[test]
    fn validate_form_handles_special_characters_in_the_query() {
        let url = format!("{URL}&Body=It's+amazing");
        assert!(validate_form(TOKEN, &url, &default_params(), "dsq4Ehbj6cs+KdTkpF5sSSplOWw="));
    }

    #[test]
    fn signature_from_a_url_with_port_validates_without_it_and_vice_versa() {
        // twilio-node `spec/unit/webhooks/webhooks.spec.js`, auth token "s3cr3t".
        let with_port = "https://example.com:443/path?test=param";
        let without_port = "https://example.com/path?test=param";
        let signed_with_port = compute_signature("s3cr3t", with_port, &[]);
        let signed_without_port = compute_signature("s3cr3t", without_port, &[]);
        assert!(validate_form("s3cr3t", with_port, &[], &signed_with_port));
        assert!(validate_form("s3cr3t", without_port, &[], &signed_with_port));
        assert!(validate_form("s3cr3t", without_port, &[], &signed_without_port));
        assert!(validate_form("s3cr3t", with_port, &[], &signed_without_port));
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_when_ports_change() {
        let url = "http://[::1]:8080/twilio/voice";
        assert_eq!(url_without_port(url), "http://[::1]/twilio/voice");
        assert_eq!(url_with_default_port("http://[::1]/x"), "http://[::1]:80/x");
    }

    #[test]
    fn default_port_goes_before_the_query_when_there_is_no_path() {
        assert_eq!(url_with_default_port("https://a.example?x=1"), "https://a.example:443?x=1");
        assert_eq!(url_without_port("https://a.example:8443#f"), "https://a.example#f");
    }

    #[test]
    fn tampered_parameter_is_rejected() {
        let mut params = default_params();
        params[1].1 = "9999".to_owned();
        assert!(!validate_form(TOKEN, URL, &params, EXPECTED));
    }

    #[test]
    fn added_parameter_is_rejected() {
        let mut params = default_params();
        params.push(("Extra".to_owned(), "1".to_owned()));
        assert!(!validate_form(TOKEN, URL, &params, EXPECTED));
    }

    #[test]
    fn tampered_url_is_rejected() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert!(!validate_form(TOKEN, url, &default_params(), EXPECTED));
        let other_host = "https://evil.example/myapp.php?foo=1&bar=2";
        assert!(!validate_form(TOKEN, other_host, &default_params(), EXPECTED));
    }

    #[test]
    fn wrong_token_is_rejected() {
        assert!(!validate_form("54321", URL, &default_params(), EXPECTED));
    }

    #[test]
    fn garbage_or_empty_headers_are_rejected_without_panicking() {
        for header in ["", "WRONG_SIGNATURE", "====", "\u{0}\u{ffff}", &EXPECTED[..10]] {
            assert!(!validate_form(TOKEN, URL, &default_params(), header));
        }
        for url in ["", "not a url", "https://", "://x", "https://[::1", "https://h:/p"] {
            assert!(!validate_form(TOKEN, url, &default_params(), EXPECTED));
        }
    }

    #[test]
    fn body_hash_matches_the_published_vector() {
        assert_eq!(body_sha256_hex(JSON_BODY.as_bytes()), JSON_BODY_HASH);
    }

    #[test]
    fn validate_json_accepts_the_published_body_vector() {
        assert!(validate_json(TOKEN, &json_url(), JSON_BODY.as_bytes(), JSON_SIGNATURE));
        assert!(validate(
            TOKEN,
            &json_url(),
            SignedBody::Raw(JSON_BODY.as_bytes()),
            JSON_SIGNATURE
        ));
    }

    #[test]
    fn validate_json_accepts_an_empty_json_object_body() {
        // twilio-node "should validate request body when empty".
        let url = format!(
            "{URL}&bodySHA256=44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert!(validate_json(TOKEN, &url, b"{}", "Ldidvp12m26NI7eqEvxnEpkd9Hc="));
    }

    #[test]
    fn validate_json_accepts_a_url_with_only_the_body_hash_param() {
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={JSON_BODY_HASH}");
        assert!(validate_json(TOKEN, &url, JSON_BODY.as_bytes(), "y77kIzt2vzLz71DgmJGsen2scGs="));
    }

    #[test]
    fn validate_json_rejects_a_tampered_body() {
        let tampered = format!("{JSON_BODY} ");
        assert!(!validate_json(TOKEN, &json_url(), tampered.as_bytes(), JSON_SIGNATURE));
    }

    #[test]
    fn validate_json_rejects_a_url_without_body_hash() {
        assert!(!validate_json(TOKEN, URL, JSON_BODY.as_bytes(), EXPECTED));
    }

    #[test]
    fn validate_json_rejects_a_wrong_body_hash_even_when_signed() {
        let url = format!("{URL}&bodySHA256={}", "0".repeat(64));
        let signature = compute_signature(TOKEN, &url, &[]);
        assert!(!validate_json(TOKEN, &url, JSON_BODY.as_bytes(), &signature));
    }

    #[test]
    fn validate_json_rejects_a_wrong_token() {
        assert!(!validate_json("nope", &json_url(), JSON_BODY.as_bytes(), JSON_SIGNATURE));
    }

    #[test]
    fn validate_json_tries_port_variants_too() {
        let url = json_url().replace(".com", ".com:443");
        assert!(validate_json(TOKEN, &url, JSON_BODY.as_bytes(), JSON_SIGNATURE));
    }
}
