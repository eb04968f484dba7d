//! Webhook delivery attempts, kept per call so users can see what was sent where and how it went.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::ids::CallId;

use crate::StoreError;

/// One attempt to deliver one event to one URL.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    /// `whd_` + 24 hex.
    pub delivery_id: String,
    /// The call the event is about.
    pub call_id: CallId,
    /// `call.completed`, `call.started`, `webhook.test`.
    pub event: String,
    /// The stable event id receivers de-duplicate on.
    pub event_id: String,
    /// Where it was sent.
    pub url: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When it was sent.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<i64>,
    /// Time to the receiver's answer (or the failure).
    pub latency_ms: Option<f64>,
    /// What went wrong (network error, timeout, refused target, non-2xx).
    pub error: Option<String>,
    /// Whether the receiver accepted it (2xx).
    pub delivered: bool,
}

/// Webhook delivery attempts.
#[async_trait]
pub trait WebhookRepo: Send + Sync {
    /// Records an attempt (ignored when the call was deleted meanwhile).
    async fn record_webhook_delivery(&self, delivery: &WebhookDelivery) -> Result<(), StoreError>;

    /// A call's attempts, oldest first.
    async fn webhook_deliveries(
        &self,
        call_id: &CallId,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
}

macro_rules! impl_webhooks {
    ($store:ty, $db:ty, $backend:literal) => {
        mod webhooks_sql {
            use async_trait::async_trait;
            use nixflex_core::ids::CallId;
            use sqlx::Row as _;

            use super::*;
            use crate::sql::map_err;
            use crate::{StoreError, WebhookDelivery};

            #[async_trait]
            impl crate::WebhookRepo for $store {
                async fn record_webhook_delivery(&self, delivery: &WebhookDelivery) -> Result<(), StoreError> {
                    let done = sqlx::query(
                        "insert into webhook_deliveries (delivery_id, call_id, event, event_id, url, attempt, attempted_at, \
                         status_code, latency_ms, error, delivered) \
                         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 where exists (select 1 from calls where call_id = $2)",
                    )
                    .bind(&delivery.delivery_id)
                    .bind(delivery.call_id.as_str())
                    .bind(&delivery.event)
                    .bind(&delivery.event_id)
                    .bind(&delivery.url)
                    .bind(delivery.attempt)
                    .bind(delivery.attempted_at)
                    .bind(delivery.status_code)
                    .bind(delivery.latency_ms)
                    .bind(&delivery.error)
                    .bind(delivery.delivered)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    let _ = done;
                    Ok(())
                }

                async fn webhook_deliveries(&self, call_id: &CallId) -> Result<Vec<WebhookDelivery>, StoreError> {
                    let rows = sqlx::query(
                        "select * from webhook_deliveries where call_id = $1 order by attempted_at, attempt, delivery_id",
                    )
                    .bind(call_id.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    rows.iter()
                        .map(|row| {
                            Ok(WebhookDelivery {
                                delivery_id: row.try_get("delivery_id")?,
                                call_id: row.try_get::<String, _>("call_id")?.into(),
                                event: row.try_get("event")?,
                                event_id: row.try_get("event_id")?,
                                url: row.try_get("url")?,
                                attempt: row.try_get("attempt")?,
                                attempted_at: row.try_get("attempted_at")?,
                                status_code: row.try_get("status_code")?,
                                latency_ms: row.try_get("latency_ms")?,
                                error: row.try_get("error")?,
                                delivered: row.try_get("delivered")?,
                            })
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(map_err)
                }
            }
        }
    };
}
pub(crate) use impl_webhooks;
