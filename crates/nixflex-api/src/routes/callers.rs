//! Caller context (docs/api.md#caller-context; docs/decisions.md#number-deletion, #caller-context): per (number, caller) facts the agent uses.

use axum::Json;
use axum::extract::{Path, State};
use nixflex_core::caller;
use nixflex_core::error::ErrorCode;
use nixflex_core::ids::E164;
use nixflex_core::phone;
use nixflex_core::validate::{ValidationError, normalize_keys};
use nixflex_store::CallerRecord;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Checked};
use crate::openapi::ErrorEnvelope;
use crate::routes::numbers::{owned_number, path_number};
use crate::state::AppState;

/// Most rows one import may carry.
const MAX_IMPORT_ROWS: usize = 1000;

/// Context fields of a caller: omitted fields stay, `null` removes one (each ≤ 500 characters).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by serde (type checking) and utoipa; the handlers validate the fields.
pub(crate) struct CallerContextInput {
    /// The caller's name.
    #[schema(max_length = 500)]
    name: Option<String>,
    /// The caller's e-mail.
    #[schema(max_length = 500)]
    email: Option<String>,
    /// Another contact number.
    #[schema(max_length = 500)]
    phone: Option<String>,
    /// Where the caller is.
    #[schema(max_length = 500)]
    location: Option<String>,
    /// Your own reference (customer id, …).
    #[serde(alias = "referenceId")]
    #[schema(max_length = 500)]
    reference_id: Option<String>,
    /// A preference to honour.
    #[schema(max_length = 500)]
    preference: Option<String>,
    // Written by the engine only: refused with `engine_only_field` by the handler.
    #[schema(ignore)]
    last_call: Option<Value>,
    #[schema(ignore)]
    open_item: Option<Value>,
}

/// One row of a caller import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct CallerImportRow {
    /// The caller, E.164.
    #[serde(alias = "callerNumber")]
    #[schema(value_type = String, required = true, pattern = r"^\+[1-9][0-9]{6,14}$")]
    caller_number: Option<Value>,
    /// The caller's name.
    #[schema(max_length = 500)]
    name: Option<String>,
    /// The caller's e-mail.
    #[schema(max_length = 500)]
    email: Option<String>,
    /// Another contact number.
    #[schema(max_length = 500)]
    phone: Option<String>,
    /// Where the caller is.
    #[schema(max_length = 500)]
    location: Option<String>,
    /// Your own reference (customer id, …).
    #[serde(alias = "referenceId")]
    #[schema(max_length = 500)]
    reference_id: Option<String>,
    /// A preference to honour.
    #[schema(max_length = 500)]
    preference: Option<String>,
    // Written by the engine only: refused with `engine_only_field` by the handler.
    #[schema(ignore)]
    last_call: Option<Value>,
    #[schema(ignore)]
    open_item: Option<Value>,
}

/// The body of a caller import: up to 1,000 rows, all validated before any is written.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct CallerImportInput {
    /// The rows.
    #[schema(value_type = Vec<CallerImportRow>, required = true, max_items = 1000)]
    callers: Option<Vec<CallerImportRow>>,
}

// The schema attributes above need literals; this keeps them equal to the limits enforced.
const _: () = assert!(caller::MAX_FIELD_CHARS == 500 && MAX_IMPORT_ROWS == 1000);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_caller, put_caller, delete_caller))
        .routes(routes!(import_callers))
}

fn caller_number(raw: &str) -> ApiResult<String> {
    path_number(raw)
}

fn caller_json(record: &CallerRecord) -> Value {
    json!({"caller": {
        "phone_number": record.phone_number,
        "caller_number": record.caller_number,
        "context": caller::present_fields(&record.context),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }})
}

fn not_found(phone_number: &str, caller_number: &str) -> ApiError {
    ApiError::new(
        ErrorCode::CallerNotFound,
        format!("No context for caller {caller_number} on {phone_number}."),
    )
}

/// Get what is known about a caller of one of your numbers.
#[utoipa::path(
    get, path = "/v1/phone-numbers/{phone_number}/callers/{caller_number}", tag = "phone-numbers",
    params(("phone_number" = String, Path, description = "Your number, E.164 with %2B"),
           ("caller_number" = String, Path, description = "The caller, E.164 with %2B")),
    responses(
        (status = 200, description = "`{\"caller\": {phone_number, caller_number, context, created_at, updated_at}}`; `context` holds only the fields present"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`, `caller_not_found`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_caller(
    State(state): State<AppState>,
    caller_key: Caller,
    Path((number_raw, caller_raw)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let phone_number = path_number(&number_raw)?;
    let caller_number = caller_number(&caller_raw)?;
    owned_number(&state, &caller_key, &phone_number).await?;
    let record = state
        .store()
        .get_caller(&E164::from(phone_number.as_str()), &caller_number)
        .await?
        .ok_or_else(|| not_found(&phone_number, &caller_number))?;
    Ok(Json(caller_json(&record)))
}

/// Set context fields for a caller (`name`, `email`, `phone`, `location`, `reference_id`,
/// `preference`; each ≤ 500 characters). Omitted fields stay; `null` removes a field.
/// `last_call` and `open_item` are written by the engine only.
#[utoipa::path(
    put, path = "/v1/phone-numbers/{phone_number}/callers/{caller_number}", tag = "phone-numbers",
    params(("phone_number" = String, Path, description = "Your number, E.164 with %2B"),
           ("caller_number" = String, Path, description = "The caller, E.164 with %2B")),
    request_body(content = CallerContextInput, description = "Any of name, email, phone, location, reference_id, preference", content_type = "application/json"),
    responses(
        (status = 200, description = "The caller record, as GET returns it"),
        (status = 400, description = "`engine_only_field`, `missing_field`, `invalid_phone_format`, `invalid_request`, `invalid_json`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn put_caller(
    State(state): State<AppState>,
    caller_key: Caller,
    Path((number_raw, caller_raw)): Path<(String, String)>,
    Checked { fields: body, .. }: Checked<CallerContextInput>,
) -> ApiResult<Json<Value>> {
    let phone_number = path_number(&number_raw)?;
    let caller_number = caller_number(&caller_raw)?;
    let patch = caller::validate_patch(&normalize_keys(body), "")?;
    if patch.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingField,
            format!("Give at least one of: {}.", caller::DEVELOPER_FIELDS.join(", ")),
        ));
    }
    owned_number(&state, &caller_key, &phone_number).await?;
    let mut records = state
        .store()
        .upsert_callers(
            &E164::from(phone_number.as_str()),
            &[(caller_number, patch)],
            nixflex_store::now(),
        )
        .await?;
    let record = records
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("upsert returned no record")))?;
    Ok(Json(caller_json(&record)))
}

/// Erase everything known about a caller (developer and engine fields).
#[utoipa::path(
    delete, path = "/v1/phone-numbers/{phone_number}/callers/{caller_number}", tag = "phone-numbers",
    params(("phone_number" = String, Path, description = "Your number, E.164 with %2B"),
           ("caller_number" = String, Path, description = "The caller, E.164 with %2B")),
    responses(
        (status = 200, description = "`{\"phone_number\", \"caller_number\", \"deleted\": true}`"),
        (status = 400, description = "`invalid_phone_format`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`, `caller_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn delete_caller(
    State(state): State<AppState>,
    caller_key: Caller,
    Path((number_raw, caller_raw)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let phone_number = path_number(&number_raw)?;
    let caller_number = caller_number(&caller_raw)?;
    owned_number(&state, &caller_key, &phone_number).await?;
    if !state.store().delete_caller(&E164::from(phone_number.as_str()), &caller_number).await? {
        return Err(not_found(&phone_number, &caller_number));
    }
    Ok(Json(json!({"phone_number": phone_number, "caller_number": caller_number, "deleted": true})))
}

/// Import context for up to 1,000 callers at once. Every row is validated before anything is
/// written: one bad row rejects the whole import (`details.row_index` names it).
#[utoipa::path(
    post, path = "/v1/phone-numbers/{phone_number}/callers/import", tag = "phone-numbers",
    params(("phone_number" = String, Path, description = "Your number, E.164 with %2B")),
    request_body(content = CallerImportInput, description = "`{\"callers\": [{\"caller_number\": \"+44…\", ...fields}]}`", content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"phone_number\", \"imported\": n}`"),
        (status = 400, description = "`missing_field`, `invalid_phone_format`, `engine_only_field`, `invalid_request`, `invalid_json`, `unknown_field`", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 404, description = "`number_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`idempotency_key_reused`, `idempotency_request_in_flight`", body = ErrorEnvelope),
        (status = 413, description = "`request_too_large`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn import_callers(
    State(state): State<AppState>,
    caller_key: Caller,
    Path(number_raw): Path<String>,
    Checked { fields: body, .. }: Checked<CallerImportInput>,
) -> ApiResult<Json<Value>> {
    let phone_number = path_number(&number_raw)?;
    let rows = match body.get("callers") {
        None | Some(Value::Null) => return Err(ValidationError::missing("callers").into()),
        Some(Value::Array(rows)) => rows,
        Some(_) => {
            return Err(ValidationError::invalid("callers", "`callers` must be an array").into());
        }
    };
    if rows.len() > MAX_IMPORT_ROWS {
        return Err(ApiError::invalid(format!(
            "At most {MAX_IMPORT_ROWS} callers per import; split the list."
        ))
        .detail("field", "callers"));
    }
    let mut patches: Vec<(String, Map<String, Value>)> = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let prefix = format!("callers[{index}].");
        let at_row = |error: ApiError| error.detail("row_index", index);
        let Value::Object(row) = row else {
            return Err(at_row(
                ValidationError::invalid(
                    &format!("callers[{index}]"),
                    "each caller must be an object",
                )
                .into(),
            ));
        };
        let row = normalize_keys(row.clone());
        let number = match row.get("caller_number") {
            Some(Value::String(raw)) => phone::parse_e164(raw).ok_or_else(|| {
                at_row(
                    ValidationError::new(
                        ErrorCode::InvalidPhoneFormat,
                        &format!("{prefix}caller_number"),
                        format!("`{raw}` is not an E.164 number"),
                    )
                    .into(),
                )
            })?,
            _ => {
                return Err(at_row(
                    ValidationError::missing(&format!("{prefix}caller_number")).into(),
                ));
            }
        };
        if patches.iter().any(|(existing, _)| *existing == number) {
            return Err(at_row(
                ValidationError::invalid(
                    &format!("{prefix}caller_number"),
                    format!("{number} appears twice"),
                )
                .into(),
            ));
        }
        let patch = caller::validate_patch(&row, &prefix).map_err(|e| at_row(e.into()))?;
        patches.push((number, patch));
    }
    owned_number(&state, &caller_key, &phone_number).await?;
    let imported = state
        .store()
        .upsert_callers(&E164::from(phone_number.as_str()), &patches, nixflex_store::now())
        .await?;
    Ok(Json(json!({"phone_number": phone_number, "imported": imported.len()})))
}
