//! Usage (docs/api.md#usage, docs/decisions.md#usage): what an account's calls add up to over a
//! period, with its limits. The answer carries both shapes the hosted product is known by: the
//! official SDK's flat keys (all-time totals and this month's peaks) and the documentation's
//! nested blocks for the requested period.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, QueryPairs};
use crate::openapi::ErrorEnvelope;
use crate::routes::calls::parse_time;
use crate::state::AppState;

/// Calls over the period.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CallTotals {
    /// Calls that reached the account's numbers or that it placed (refused ones included).
    total: i64,
    /// Inbound calls.
    inbound: i64,
    /// Outbound calls.
    outbound: i64,
    /// Billed minutes, metered per second, to 4 decimals: connected time (answer → hang-up),
    /// except that a call that reached voicemail counts only the message left.
    minutes: f64,
    /// `minutes` × the server's price per minute (0 unless the operator sets one); carrier
    /// charges are not included.
    cost_usd: f64,
}

/// Outbound texts created over the period.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SmsTotals {
    /// Texts handed to the carrier (given a SID), whatever happened next.
    sent: i64,
    /// Texts the carrier confirmed delivered.
    delivered: i64,
    /// Texts that could not be sent (`failed`) or were not delivered (`undelivered`).
    failed: i64,
    /// Always 0: texts are not charged (docs/decisions.md#sms-opt-out).
    cost_usd: f64,
}

/// Prepaid balance. A self-hosted server does not bill, so there is none.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Balance {
    /// `null`: no prepaid credit on a self-hosted server.
    credit_usd: Option<f64>,
    /// Always false.
    auto_topup_enabled: bool,
    /// `null`.
    auto_topup_threshold_usd: Option<f64>,
    /// `null`.
    auto_topup_amount_usd: Option<f64>,
}

/// Usage and limits.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Usage {
    /// `self_hosted`.
    plan: &'static str,
    /// All-time number of calls (SDK).
    total_calls: i64,
    /// All-time connected minutes (SDK).
    total_minutes: f64,
    /// All-time cost in USD (SDK).
    total_cost: f64,
    /// Read requests allowed per minute for this account.
    rate_limit_per_minute: i64,
    /// The account's concurrent-call cap.
    max_concurrent: i64,
    /// The most calls connected at once this calendar month (UTC).
    peak_concurrent_this_month: i64,
    /// Inbound calls refused busy at the cap this calendar month (UTC).
    rejected_at_cap_this_month: i64,
    /// The period reported in `calls` and `sms`: `today`, `month_to_date`, `last_30_days`,
    /// `all_time`, or `custom` when `since`/`until` were given.
    period: String,
    /// Start of the period (inclusive); `null` for all time.
    since: Option<DateTime<Utc>>,
    /// End of the period (exclusive): `until`, or now.
    until: DateTime<Utc>,
    /// Calls over the period.
    calls: CallTotals,
    /// Texts over the period.
    sms: SmsTotals,
    /// Prepaid balance (none when self-hosted).
    balance: Balance,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_usage))
}

/// Connected seconds as minutes, to 4 decimals.
fn minutes(seconds: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let minutes = seconds as f64 / 60.0;
    (minutes * 10_000.0).round() / 10_000.0
}

fn cost(minutes: f64, price_per_minute: f64) -> f64 {
    (minutes * price_per_minute * 10_000.0).round() / 10_000.0
}

/// The start of `period` at `now` (UTC); `None` for all time.
fn period_start(period: &str, now: DateTime<Utc>) -> ApiResult<Option<DateTime<Utc>>> {
    let midnight =
        |at: DateTime<Utc>| Utc.with_ymd_and_hms(at.year(), at.month(), at.day(), 0, 0, 0).single();
    match period {
        "today" => Ok(midnight(now)),
        "month_to_date" => Ok(month_start(now)),
        "last_30_days" => Ok(Some(now - Duration::days(30))),
        "all_time" => Ok(None),
        other => Err(ApiError::invalid(format!(
            "`period` must be today, month_to_date, last_30_days or all_time, not `{other}`."
        ))
        .detail("field", "period")),
    }
}

fn month_start(at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0).single()
}

/// Usage and limits of the account: all-time totals and this month's peaks (the SDK's keys),
/// and calls and texts over a period (`period`, or `since`/`until`, which override it).
#[utoipa::path(
    get, path = "/v1/usage", tag = "account",
    params(
        ("period" = Option<String>, Query, description = "today, month_to_date (default), last_30_days or all_time",
         pattern = "^(today|month_to_date|last_30_days|all_time)$"),
        ("since" = Option<String>, Query, description = "Start (inclusive): ISO-8601 date-time or date; overrides `period`"),
        ("until" = Option<String>, Query, description = "End (exclusive): ISO-8601 date-time or date; default now"),
    ),
    responses(
        (status = 200, description = "Usage", body = Usage),
        (status = 400, description = "`invalid_request` (bad period, since or until)", body = ErrorEnvelope),
        (status = 401, description = "`invalid_api_key`, `key_secret_required`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limit_exceeded`", body = ErrorEnvelope),
    )
)]
async fn get_usage(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<Usage>> {
    let now = nixflex_store::now();
    let text = |name: &str| query.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
    let named = text("period");
    let mut since = period_start(named.as_deref().unwrap_or("month_to_date"), now)?;
    let mut until = now;
    let custom = query.get("since").is_some_and(|v| !v.is_empty())
        || query.get("until").is_some_and(|v| !v.is_empty());
    if let Some(raw) = text("since") {
        since = Some(parse_time("since", &raw)?);
    }
    if let Some(raw) = text("until") {
        until = parse_time("until", &raw)?;
    }
    if since.is_some_and(|s| s >= until) {
        return Err(ApiError::invalid("`since` must be before `until`.").detail("field", "since"));
    }
    let period = if custom {
        "custom".to_owned()
    } else {
        named.unwrap_or_else(|| "month_to_date".to_owned())
    };

    let account = &caller.account;
    let store = state.store();
    let in_period = store.call_usage(&account.account_id, since, Some(until)).await?;
    let all_time = store.call_usage(&account.account_id, None, None).await?;
    let this_month = store.call_usage(&account.account_id, month_start(now), None).await?;
    let texts = store.sms_usage(&account.account_id, since, Some(until)).await?;
    let price = state.config().price_per_minute_usd;
    let period_minutes = minutes(in_period.connected_seconds);
    let total_minutes = minutes(all_time.connected_seconds);
    Ok(Json(Usage {
        plan: "self_hosted",
        total_calls: all_time.total,
        total_minutes,
        total_cost: cost(total_minutes, price),
        rate_limit_per_minute: account.rate_limit_reads.unwrap_or(state.config().reads_per_minute),
        max_concurrent: account
            .max_concurrent_calls
            .unwrap_or(state.engine().config().default_max_concurrent_calls),
        peak_concurrent_this_month: this_month.peak_concurrent,
        rejected_at_cap_this_month: this_month.rejected_at_cap,
        period,
        since,
        until,
        calls: CallTotals {
            total: in_period.total,
            inbound: in_period.inbound,
            outbound: in_period.outbound,
            minutes: period_minutes,
            cost_usd: cost(period_minutes, price),
        },
        sms: SmsTotals {
            sent: texts.sent,
            delivered: texts.delivered,
            failed: texts.failed,
            cost_usd: 0.0,
        },
        balance: Balance {
            credit_usd: None,
            auto_topup_enabled: false,
            auto_topup_threshold_usd: None,
            auto_topup_amount_usd: None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_where_they_say() {
        let now = Utc.with_ymd_and_hms(2026, 3, 15, 13, 45, 0).unwrap();
        assert_eq!(
            period_start("today", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 15, 0, 0, 0).single()
        );
        assert_eq!(
            period_start("month_to_date", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single()
        );
        assert_eq!(period_start("last_30_days", now).unwrap(), Some(now - Duration::days(30)));
        assert_eq!(period_start("all_time", now).unwrap(), None);
        assert!(period_start("yesterday", now).is_err());
        assert!((minutes(90) - 1.5).abs() < f64::EPSILON);
        assert!((minutes(1) - 0.0167).abs() < 1e-9);
        assert!((cost(1.5, 0.02) - 0.03).abs() < 1e-9);
    }
}
