//! Documented endpoints that are not built yet. They answer 501 `not_implemented` with a clear
//! message instead of 404, and appear in the OpenAPI document as such. Each entry is removed
//! when its capability lands.

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::routing::{MethodFilter, on};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ApiError;
use crate::extract::{Caller, JsonObject, check_body};
use crate::state::AppState;

/// The documented request body of a pending route: its schema, and the check that holds a body
/// to it (so a client learns about a wrong payload now, not when the route lands).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingBody {
    pub(crate) name: fn() -> std::borrow::Cow<'static, str>,
    pub(crate) description: &'static str,
    pub(crate) schema: fn() -> RefOr<Schema>,
    pub(crate) nested: fn(&mut Vec<(String, RefOr<Schema>)>),
    pub(crate) check: fn(Map<String, Value>) -> Result<(), ApiError>,
}

fn check<T: DeserializeOwned>(body: Map<String, Value>) -> Result<(), ApiError> {
    check_body::<T>(body).map(|_| ())
}

const fn body<T: ToSchema + DeserializeOwned>(description: &'static str) -> Option<PendingBody> {
    Some(PendingBody {
        name: <T as ToSchema>::name,
        description,
        schema: <T as PartialSchema>::schema,
        nested: <T as ToSchema>::schemas,
        check: check::<T>,
    })
}

/// A pending route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRoute {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) what: &'static str,
    pub(crate) tag: &'static str,
    pub(crate) body: Option<PendingBody>,
    /// Documented query parameters.
    pub(crate) query: &'static [&'static str],
}

const fn p(
    method: &'static str,
    path: &'static str,
    what: &'static str,
    tag: &'static str,
) -> PendingRoute {
    PendingRoute { method, path, what, tag, body: None, query: &[] }
}

const fn with(route: PendingRoute, body: Option<PendingBody>) -> PendingRoute {
    PendingRoute { body, ..route }
}

/// `{"enabled": bool}`: a per-number switch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SwitchInput {
    /// On or off.
    #[schema(value_type = bool)]
    enabled: Option<bool>,
}

pub(crate) const PENDING: &[PendingRoute] = &[
    with(
        p(
            "PUT",
            "/v1/integrations/monitor/number/{phone_number}",
            "Live call monitoring",
            "integrations",
        ),
        body::<SwitchInput>("`{\"enabled\": bool}`"),
    ),
    p(
        "GET",
        "/v1/integrations/monitor/number/{phone_number}",
        "Live call monitoring",
        "integrations",
    ),
    with(
        p("PUT", "/v1/integrations/web-calls/number/{phone_number}", "Web calls", "integrations"),
        body::<SwitchInput>("`{\"enabled\": bool}`"),
    ),
    p("GET", "/v1/integrations/web-calls/number/{phone_number}", "Web calls", "integrations"),
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
            let body = same.body;
            methods = methods.merge(on(
                filter(same.method),
                move |_caller: Caller, state: axum::extract::State<AppState>, req: Request| async move {
                    if let Some(body) = body {
                        let JsonObject(fields) = JsonObject::from_request(req, &state.0).await?;
                        (body.check)(fields)?;
                    }
                    Err::<(), _>(ApiError::not_implemented(what))
                },
            ));
        }
        router = router.route(route.path, methods);
    }
    router
}
