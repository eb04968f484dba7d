//! Carrier endpoints (`/twilio/*`, ENGINE §2.2, DECISIONS #19): what Twilio calls when a call or a
//! text reaches an imported number.
//!
//! Every request passes [`verify_signature`] first: `X-Twilio-Signature` is checked against the
//! auth token of the number the request is for (PROTOCOLS.md §4.1), over the URL Twilio requested
//! (the configured public URL plus path and query). A missing or wrong signature is refused with
//! 403 before any handler runs, so nothing happens.
//!
//! Until the call engine lands, inbound calls are answered with a busy signal and texts are
//! acknowledged without a reply.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nixflex_core::error::ErrorCode;
use nixflex_core::number::PhoneNumber;
use nixflex_core::phone;
use nixflex_providers::twilio::{signature, twiml};

use crate::error::ApiError;
use crate::state::AppState;

/// Carrier webhooks are small; anything larger is not from Twilio.
const MAX_CARRIER_BODY: usize = 256 * 1024;

/// A verified carrier request: the number it is for and its form parameters.
#[derive(Debug, Clone)]
pub struct CarrierRequest {
    /// The imported number the request concerns.
    pub number: PhoneNumber,
    /// Form parameters (empty for JSON bodies).
    pub params: Vec<(String, String)>,
}

impl CarrierRequest {
    /// The last value of a parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/status", post(status))
        .route("/twilio/sms", post(sms))
        .route_layer(axum::middleware::from_fn_with_state(state, verify_signature))
}

fn twiml_response(body: String) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(twiml::CONTENT_TYPE));
    response
}

fn refused(reason: &str) -> Response {
    tracing::warn!(message = "Carrier request refused: bad or missing signature.", reason);
    ApiError::new(
        ErrorCode::InvalidSignature,
        "The X-Twilio-Signature header is missing or does not match.",
    )
    .into_response()
}

fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Checks `X-Twilio-Signature` with the auth token of the number the request is for.
pub(crate) async fn verify_signature(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_CARRIER_BODY).await else {
        return refused("body too large");
    };
    let Some(signature_header) = parts
        .headers
        .get(signature::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return refused("no signature header");
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let params = if is_form { form_pairs(&bytes) } else { Vec::new() };
    let query = parts.uri.query().map(|q| form_pairs(q.as_bytes())).unwrap_or_default();
    let lookup = |name: &str| {
        params.iter().chain(&query).rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    let account_sid = lookup("AccountSid");

    // The URL Twilio requested: the configured public base (or, without one, the Host header).
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let bases: Vec<String> = match &state.config().public_url {
        Some(base) => vec![base.clone()],
        None => {
            let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            vec![format!("https://{host}"), format!("http://{host}")]
        }
    };

    let mut candidates: Vec<String> = Vec::new();
    for name in ["To", "Called", "From", "Caller"] {
        if let Some(number) = lookup(name).as_deref().and_then(phone::parse_e164)
            && !candidates.contains(&number)
        {
            candidates.push(number);
        }
    }
    for candidate in candidates {
        let number = match state.store().find_active_number(&candidate).await {
            Ok(Some(number)) => number,
            Ok(None) => continue,
            Err(error) => return ApiError::from(error).into_response(),
        };
        if account_sid.as_deref().is_some_and(|sid| sid != number.twilio_account_sid) {
            continue;
        }
        let Ok(token) = state.secrets().open(&number.twilio_auth_token_sealed) else { continue };
        let valid = bases.iter().any(|base| {
            let url = format!("{base}{path_and_query}");
            if is_form {
                signature::validate_form(&token, &url, &params, &signature_header)
            } else {
                signature::validate_json(&token, &url, &bytes, &signature_header)
            }
        });
        if valid {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(CarrierRequest { number, params });
            return next.run(req).await;
        }
    }
    refused("no imported number whose auth token matches")
}

/// `POST /twilio/voice`: an inbound call. The call engine is not built yet, so every call gets a
/// busy signal (never answered, never charged).
async fn voice(request: axum::Extension<CarrierRequest>) -> Response {
    tracing::info!(
        message = "Inbound call refused with busy: the call engine is not available yet.",
        number_sid = %request.number.twilio_number_sid,
        call_sid = request.param("CallSid").unwrap_or_default()
    );
    twiml_response(twiml::reject(twiml::RejectReason::Busy))
}

/// `POST /twilio/status`: call progress. Acknowledged (calls are not recorded yet).
async fn status(_request: axum::Extension<CarrierRequest>) -> Response {
    twiml_response(twiml::empty())
}

/// `POST /twilio/sms`: an inbound text. Acknowledged without a reply until SMS lands.
async fn sms(_request: axum::Extension<CarrierRequest>) -> Response {
    twiml_response(twiml::empty())
}
