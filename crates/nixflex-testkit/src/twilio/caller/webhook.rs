//! Twilio's side of the webhooks of an inbound call: the request parameters Twilio sends
//! (voice request, `<Connect action>`, status and stream-status callbacks) and their delivery,
//! signed with `X-Twilio-Signature` (docs/protocols.md#twilio-request-signature) by `nixflex_providers`' signature code,
//! with a fresh `I-Twilio-Idempotency-Token` and Twilio's `User-Agent`.
//!
//! `GET` deliveries carry the parameters in the query string and sign the whole URL with no body
//! parameters, as Twilio does. Deliveries are attempted once: Twilio's retries are not emulated.

use std::time::Duration;

use nixflex_providers::twilio::signature::compute_signature;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};

use crate::twilio::{IDEMPOTENCY_TOKEN_HEADER, SIGNATURE_HEADER};

/// `User-Agent` of Twilio's webhook requests (the same value the REST emulator's webhooks use).
pub(crate) const TWILIO_USER_AGENT: &str = "TwilioProxy/1.1";

/// Twilio's API version, sent as `ApiVersion`.
const API_VERSION: &str = "2010-04-01";

/// Who the call is between; the source of the standard request parameters.
#[derive(Debug, Clone)]
pub(crate) struct CallParties {
    pub(crate) call_sid: String,
    pub(crate) account_sid: String,
    pub(crate) from: String,
    pub(crate) to: String,
    /// Added to every voice-call request after the standard parameters.
    pub(crate) extra_params: Vec<(String, String)>,
    /// A call placed through the Calls API (`Direction: outbound-api`) that the callee
    /// answered, rather than an incoming call.
    pub(crate) outbound: bool,
}

impl CallParties {
    /// Twilio's standard request parameters for a call in `call_status`
    /// (https://www.twilio.com/docs/usage/webhooks/voice-webhooks).
    pub(crate) fn standard_params(&self, call_status: &str) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = [
            ("CallSid", self.call_sid.as_str()),
            ("AccountSid", self.account_sid.as_str()),
            ("From", self.from.as_str()),
            ("To", self.to.as_str()),
            ("CallStatus", call_status),
            ("ApiVersion", API_VERSION),
            ("Direction", if self.outbound { "outbound-api" } else { "inbound" }),
            ("Caller", self.from.as_str()),
            ("Called", self.to.as_str()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        params.extend(self.extra_params.iter().cloned());
        params
    }
}

/// The HTTP method of a webhook (`method` / `statusCallbackMethod` attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookMethod {
    Get,
    Post,
}

impl WebhookMethod {
    /// Twilio's reading of a method attribute: `GET` (any case) or else `POST`.
    pub(crate) fn from_attribute(attribute: Option<&str>) -> Self {
        match attribute {
            Some(method) if method.eq_ignore_ascii_case("GET") => Self::Get,
            _ => Self::Post,
        }
    }
}

/// The answer to a webhook.
#[derive(Debug)]
pub(crate) struct WebhookAnswer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl WebhookAnswer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends signed webhooks for one auth token.
#[derive(Debug, Clone)]
pub(crate) struct WebhookSender {
    pub(crate) http: reqwest::Client,
    pub(crate) auth_token: String,
    pub(crate) timeout: Duration,
}

impl WebhookSender {
    /// Delivers `params` to `url` once.
    ///
    /// # Errors
    ///
    /// A message when the URL is invalid, the request could not be sent, timed out, or its body
    /// could not be read.
    pub(crate) async fn deliver(
        &self,
        method: WebhookMethod,
        url: &str,
        params: &[(String, String)],
    ) -> Result<WebhookAnswer, String> {
        let request = match method {
            WebhookMethod::Post => {
                let signature = compute_signature(&self.auth_token, url, params);
                self.http
                    .post(url)
                    .header(SIGNATURE_HEADER, signature)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(
                        url::form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(params)
                            .finish(),
                    )
            }
            WebhookMethod::Get => {
                let mut full_url = url::Url::parse(url).map_err(|error| error.to_string())?;
                full_url.query_pairs_mut().extend_pairs(params);
                let signature = compute_signature(&self.auth_token, full_url.as_str(), &[]);
                self.http.get(full_url).header(SIGNATURE_HEADER, signature)
            }
        };
        let response = request
            .header(USER_AGENT, TWILIO_USER_AGENT)
            .header(IDEMPOTENCY_TOKEN_HEADER, new_idempotency_token())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|error| error.to_string())?;
        Ok(WebhookAnswer { status, body })
    }
}

/// A random token in UUID form, like the `I-Twilio-Idempotency-Token` values Twilio sends.
fn new_idempotency_token() -> String {
    let hex = hex::encode(rand::random::<[u8; 16]>());
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Resolves a URL found in TwiML (absolute, or relative to the document's URL) as Twilio does.
/// For a stream, an `http(s)` result becomes `ws(s)`.
pub(crate) fn resolve_url(document_url: &str, found: &str, websocket: bool) -> Option<String> {
    // An absolute URL is kept exactly as written: the server signs and routes what it wrote.
    if url::Url::parse(found).is_ok() {
        return Some(found.to_owned());
    }
    let resolved = url::Url::parse(document_url).ok()?.join(found).ok()?.to_string();
    if !websocket {
        return Some(resolved);
    }
    Some(match resolved.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some(("http", rest)) => format!("ws://{rest}"),
        _ => resolved,
    })
}

/// reqwest is built with `rustls-no-provider` and panics when no crypto provider is installed;
/// the workspace standardises on *ring* (the REST emulator does the same).
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_twiml_urls_resolve_against_the_document_and_streams_become_websockets() {
        let document = "https://api.example.com/twilio/voice?x=1";

        assert_eq!(
            resolve_url(document, "/twilio/after", false).as_deref(),
            Some("https://api.example.com/twilio/after")
        );
        assert_eq!(
            resolve_url(document, "stream", true).as_deref(),
            Some("wss://api.example.com/twilio/stream")
        );
        assert_eq!(
            resolve_url(document, "ws://127.0.0.1:9/s", true).as_deref(),
            Some("ws://127.0.0.1:9/s")
        );
    }

    #[test]
    fn standard_params_are_twilios_inbound_voice_request() {
        let parties = CallParties {
            call_sid: "CA1".to_owned(),
            account_sid: "AC1".to_owned(),
            from: "+15550001111".to_owned(),
            to: "+15550002222".to_owned(),
            extra_params: vec![("FromCountry".to_owned(), "US".to_owned())],
            outbound: false,
        };

        let params = parties.standard_params("ringing");

        let names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "CallSid",
                "AccountSid",
                "From",
                "To",
                "CallStatus",
                "ApiVersion",
                "Direction",
                "Caller",
                "Called",
                "FromCountry"
            ]
        );
        assert!(params.contains(&("CallStatus".to_owned(), "ringing".to_owned())));
        assert!(params.contains(&("Caller".to_owned(), "+15550001111".to_owned())));
    }

    #[test]
    fn only_get_in_any_case_means_get() {
        assert_eq!(WebhookMethod::from_attribute(Some("get")), WebhookMethod::Get);
        assert_eq!(WebhookMethod::from_attribute(Some("POST")), WebhookMethod::Post);
        assert_eq!(WebhookMethod::from_attribute(None), WebhookMethod::Post);
    }
}
