//! Caller context (docs/api.md#caller-context; docs/decisions.md#number-deletion, #caller-context): what a business knows about one caller of
//! one of its numbers. Developers set six fields; the engine writes `last_call` and `open_item`.

use serde_json::{Map, Value};

use crate::error::ErrorCode;
use crate::validate::{ValidationError, as_str, check_len};

/// Fields a developer may set.
pub const DEVELOPER_FIELDS: &[&str] =
    &["name", "email", "phone", "location", "reference_id", "preference"];
/// Fields only the engine writes.
pub const ENGINE_FIELDS: &[&str] = &["last_call", "open_item"];
/// Maximum length of each developer field.
pub const MAX_FIELD_CHARS: usize = 500;

/// Validates a developer patch: only the six fields (strings ≤ 500 chars, or `null` to remove);
/// engine fields are refused; other keys are ignored. Returns the patch restricted to the known
/// fields. `field_prefix` prefixes `details.field` (e.g. `callers[3].`).
///
/// # Errors
/// `engine_only_field` or `invalid_request`.
pub fn validate_patch(
    body: &Map<String, Value>,
    field_prefix: &str,
) -> Result<Map<String, Value>, ValidationError> {
    for engine in ENGINE_FIELDS {
        if body.contains_key(*engine) {
            return Err(ValidationError::new(
                ErrorCode::EngineOnlyField,
                &format!("{field_prefix}{engine}"),
                format!("`{engine}` is written by the engine after calls and cannot be set"),
            ));
        }
    }
    let mut patch = Map::new();
    for field in DEVELOPER_FIELDS {
        let Some(value) = body.get(*field) else { continue };
        let path = format!("{field_prefix}{field}");
        if !value.is_null() {
            let text = as_str(&path, value)?;
            check_len(&path, text, MAX_FIELD_CHARS, ErrorCode::InvalidRequest)?;
        }
        patch.insert((*field).to_owned(), value.clone());
    }
    Ok(patch)
}

/// Applies a validated patch to a stored context: values set, `null` removes.
pub fn merge(context: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (field, value) in patch {
        if value.is_null() {
            context.remove(field);
        } else {
            context.insert(field.clone(), value.clone());
        }
    }
}

/// The context as returned: the present fields, in a stable order.
pub fn present_fields(context: &Map<String, Value>) -> Map<String, Value> {
    DEVELOPER_FIELDS
        .iter()
        .chain(ENGINE_FIELDS)
        .filter_map(|f| {
            context.get(*f).filter(|v| !v.is_null()).map(|v| ((*f).to_owned(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn engine_fields_are_refused_and_others_validated() {
        let err = validate_patch(json!({"last_call": "x"}).as_object().unwrap(), "").unwrap_err();
        assert_eq!(err.code, ErrorCode::EngineOnlyField);
        let err =
            validate_patch(json!({"name": 5}).as_object().unwrap(), "callers[2].").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("callers[2].name"));
        assert!(validate_patch(json!({"name": "x".repeat(501)}).as_object().unwrap(), "").is_err());
        let ok = validate_patch(
            json!({"name": "Ann", "email": null, "shoe": "9"}).as_object().unwrap(),
            "",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn merging_sets_and_removes() {
        let mut context = json!({"name": "Ann", "email": "a@x.com", "last_call": "refund"})
            .as_object()
            .unwrap()
            .clone();
        merge(&mut context, json!({"email": null, "location": "Leeds"}).as_object().unwrap());
        assert_eq!(
            Value::Object(present_fields(&context)),
            json!({"name": "Ann", "location": "Leeds", "last_call": "refund"})
        );
    }
}
