//! Documented endpoints that are not built yet. They answer 501 `not_implemented` with a clear
//! message instead of 404, and appear in the OpenAPI document as such. Each entry is removed
//! when its capability lands.

use axum::Router;
use axum::routing::{MethodFilter, on};

use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppState;

/// A pending route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRoute {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) what: &'static str,
    pub(crate) tag: &'static str,
}

const fn p(
    method: &'static str,
    path: &'static str,
    what: &'static str,
    tag: &'static str,
) -> PendingRoute {
    PendingRoute { method, path, what, tag }
}

pub(crate) const PENDING: &[PendingRoute] = &[
    p("GET", "/v1/usage", "Usage and limits", "account"),
    p("PUT", "/v1/account/storage", "Bring-your-own recording storage", "account"),
    p("GET", "/v1/account/storage", "Bring-your-own recording storage", "account"),
    p("DELETE", "/v1/account/storage", "Bring-your-own recording storage", "account"),
    p("PUT", "/v1/account/llm", "Bring-your-own LLM", "account"),
    p("GET", "/v1/account/llm", "Bring-your-own LLM", "account"),
    p("DELETE", "/v1/account/llm", "Bring-your-own LLM", "account"),
    p("PUT", "/v1/account/tts", "Bring-your-own TTS", "account"),
    p("GET", "/v1/account/tts", "Bring-your-own TTS", "account"),
    p("DELETE", "/v1/account/tts", "Bring-your-own TTS", "account"),
    p("POST", "/v1/calls/outbound", "Outbound calls", "calls"),
    p("POST", "/v1/calls/batch", "Batch call campaigns", "campaigns"),
    p("GET", "/v1/calls/batch", "Batch call campaigns", "campaigns"),
    p("GET", "/v1/calls/batch/{campaign_id}", "Batch call campaigns", "campaigns"),
    p("POST", "/v1/calls/batch/{campaign_id}/launch", "Launching a batch campaign", "campaigns"),
    p("POST", "/v1/calls/batch/{campaign_id}/pause", "Pausing a batch campaign", "campaigns"),
    p("POST", "/v1/calls/batch/{campaign_id}/resume", "Resuming a batch campaign", "campaigns"),
    p("POST", "/v1/calls/batch/{campaign_id}/cancel", "Cancelling a batch campaign", "campaigns"),
    p(
        "PUT",
        "/v1/integrations/monitor/number/{phone_number}",
        "Live call monitoring",
        "integrations",
    ),
    p(
        "GET",
        "/v1/integrations/monitor/number/{phone_number}",
        "Live call monitoring",
        "integrations",
    ),
    p("PUT", "/v1/integrations/web-calls/number/{phone_number}", "Web calls", "integrations"),
    p("GET", "/v1/integrations/web-calls/number/{phone_number}", "Web calls", "integrations"),
    p("POST", "/v1/sms", "Sending SMS", "sms"),
    p("GET", "/v1/sms", "SMS message log", "sms"),
    p("GET", "/v1/sms/{message_id}", "SMS messages", "sms"),
    p("POST", "/v1/sms/campaigns", "SMS campaigns", "sms"),
    p("GET", "/v1/sms/campaigns", "SMS campaigns", "sms"),
    p("GET", "/v1/sms/campaigns/{campaign_id}", "SMS campaigns", "sms"),
    p("DELETE", "/v1/sms/campaigns/{campaign_id}", "Cancelling an SMS campaign", "sms"),
    p("POST", "/v1/sms/campaigns/{campaign_id}/launch", "Launching an SMS campaign", "sms"),
];

fn filter(method: &str) -> MethodFilter {
    match method {
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        "DELETE" => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    }
}

/// The pending routes as an axum router (paths with several methods are merged).
pub(crate) fn router() -> Router<AppState> {
    let mut router = Router::new();
    let mut seen: Vec<&str> = Vec::new();
    for route in PENDING {
        if seen.contains(&route.path) {
            continue;
        }
        seen.push(route.path);
        let mut methods = axum::routing::MethodRouter::new();
        for same in PENDING.iter().filter(|r| r.path == route.path) {
            let what = same.what;
            methods = methods.merge(on(filter(same.method), move |_caller: Caller| async move {
                ApiError::not_implemented(what)
            }));
        }
        router = router.route(route.path, methods);
    }
    router
}
