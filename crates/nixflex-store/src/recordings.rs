//! Where recordings are kept: the location on each call, the retention sweep's query, and each
//! account's own bucket (docs/recordings.md).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nixflex_core::call::StoredRecording;
use nixflex_core::ids::{AccountId, CallId};

use crate::StoreError;

/// An account's own S3-compatible bucket (`/v1/account/storage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStorage {
    /// Owner.
    pub account_id: AccountId,
    /// Bucket name.
    pub bucket: String,
    /// The S3 endpoint; `None` is Amazon S3.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Access key id (shown back to the account).
    pub access_key: String,
    /// The secret key, sealed under the master key (never shown back).
    pub secret_key_sealed: String,
    /// When the probe write last succeeded.
    pub verified_at: DateTime<Utc>,
    /// First saved.
    pub created_at: DateTime<Utc>,
    /// Last replaced.
    pub updated_at: DateTime<Utc>,
}

/// A stored recording and its call (what the retention sweep and deletions work on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRecording {
    /// The call it belongs to.
    pub call_id: CallId,
    /// Its account (whose bucket may hold it).
    pub account_id: AccountId,
    /// Where it is (see [`StoredRecording::location`]).
    pub location: String,
}

/// Recording locations and account buckets.
#[async_trait]
pub trait RecordingRepo: Send + Sync {
    /// Notes where a call's recording is stored (replacing any earlier one). False when the call
    /// no longer exists.
    async fn set_call_recording(
        &self,
        call_id: &CallId,
        recording: &StoredRecording,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Forgets a call's recording if it is still at `location` (the file was deleted). False
    /// when the call is gone or holds another recording now.
    async fn clear_call_recording(
        &self,
        call_id: &CallId,
        location: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Notes that the carrier is recording the call as `recording_sid` (docs/recordings.md#carrier-recordings).
    /// False when the call no longer exists.
    async fn set_carrier_recording(
        &self,
        call_id: &CallId,
        recording_sid: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Forgets the carrier recording `recording_sid` of the call (it is stored, or failed).
    /// False when the call is gone or notes another (or no) carrier recording.
    async fn clear_carrier_recording(
        &self,
        call_id: &CallId,
        recording_sid: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The carrier recording the call still waits for, if any.
    async fn carrier_recording(&self, call_id: &CallId) -> Result<Option<String>, StoreError>;

    /// Up to `limit` recordings of calls that ended before `before`, oldest first.
    async fn expired_recordings(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ExpiredRecording>, StoreError>;

    /// Every recording location of an account's calls (for deleting them all).
    async fn account_recordings(
        &self,
        account_id: &AccountId,
    ) -> Result<Vec<ExpiredRecording>, StoreError>;

    /// An account's own bucket, if it set one.
    async fn account_storage(
        &self,
        account_id: &AccountId,
    ) -> Result<Option<AccountStorage>, StoreError>;

    /// Saves (or replaces) an account's bucket.
    async fn put_account_storage(&self, storage: &AccountStorage) -> Result<(), StoreError>;

    /// Removes an account's bucket; false when it had none.
    async fn delete_account_storage(&self, account_id: &AccountId) -> Result<bool, StoreError>;
}

macro_rules! impl_recordings {
    ($store:ty, $db:ty, $backend:literal) => {
        mod recordings_sql {
            use async_trait::async_trait;
            use chrono::{DateTime, Utc};
            use nixflex_core::call::StoredRecording;
            use nixflex_core::ids::{AccountId, CallId};
            use sqlx::Row as _;

            use super::*;
            use crate::sql::map_err;
            use crate::{AccountStorage, ExpiredRecording, StoreError};

            /// Rows of `call_id, account_id, recording_location`.
            fn stored_recordings(
                rows: &[<$db as sqlx::Database>::Row],
            ) -> Result<Vec<ExpiredRecording>, StoreError> {
                rows.iter()
                    .map(|row| {
                        Ok(ExpiredRecording {
                            call_id: row.try_get::<String, _>("call_id")?.into(),
                            account_id: row.try_get::<String, _>("account_id")?.into(),
                            location: row.try_get("recording_location")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(map_err)
            }

            #[async_trait]
            impl crate::RecordingRepo for $store {
                async fn set_call_recording(
                    &self,
                    call_id: &CallId,
                    recording: &StoredRecording,
                    at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set recording_location = $2, recording_duration_s = $3, updated_at = $4 where call_id = $1",
                    )
                    .bind(call_id.as_str())
                    .bind(&recording.location)
                    .bind(recording.duration_s)
                    .bind(at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn clear_call_recording(
                    &self,
                    call_id: &CallId,
                    location: &str,
                    at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set recording_location = null, recording_duration_s = null, updated_at = $3 \
                         where call_id = $1 and recording_location = $2",
                    )
                    .bind(call_id.as_str())
                    .bind(location)
                    .bind(at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn set_carrier_recording(
                    &self,
                    call_id: &CallId,
                    recording_sid: &str,
                    at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set carrier_recording_sid = $2, updated_at = $3 where call_id = $1",
                    )
                    .bind(call_id.as_str())
                    .bind(recording_sid)
                    .bind(at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn clear_carrier_recording(
                    &self,
                    call_id: &CallId,
                    recording_sid: &str,
                    at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "update calls set carrier_recording_sid = null, updated_at = $3 \
                         where call_id = $1 and carrier_recording_sid = $2",
                    )
                    .bind(call_id.as_str())
                    .bind(recording_sid)
                    .bind(at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn carrier_recording(&self, call_id: &CallId) -> Result<Option<String>, StoreError> {
                    let row = sqlx::query("select carrier_recording_sid from calls where call_id = $1")
                        .bind(call_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| row.try_get::<Option<String>, _>("carrier_recording_sid"))
                        .transpose()
                        .map(Option::flatten)
                        .map_err(map_err)
                }

                async fn expired_recordings(
                    &self,
                    before: DateTime<Utc>,
                    limit: i64,
                ) -> Result<Vec<ExpiredRecording>, StoreError> {
                    let rows = sqlx::query(
                        "select call_id, account_id, recording_location from calls \
                         where recording_location is not null and ended_at < $1 order by ended_at limit $2",
                    )
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    stored_recordings(&rows)
                }

                async fn account_recordings(
                    &self,
                    account_id: &AccountId,
                ) -> Result<Vec<ExpiredRecording>, StoreError> {
                    let rows = sqlx::query(
                        "select call_id, account_id, recording_location from calls \
                         where account_id = $1 and recording_location is not null",
                    )
                    .bind(account_id.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                    stored_recordings(&rows)
                }

                async fn account_storage(
                    &self,
                    account_id: &AccountId,
                ) -> Result<Option<AccountStorage>, StoreError> {
                    let row = sqlx::query("select * from account_storage where account_id = $1")
                        .bind(account_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    row.map(|row| {
                        Ok(AccountStorage {
                            account_id: row.try_get::<String, _>("account_id")?.into(),
                            bucket: row.try_get("bucket")?,
                            endpoint: row.try_get("endpoint")?,
                            region: row.try_get("region")?,
                            access_key: row.try_get("access_key")?,
                            secret_key_sealed: row.try_get("secret_key_sealed")?,
                            verified_at: row.try_get("verified_at")?,
                            created_at: row.try_get("created_at")?,
                            updated_at: row.try_get("updated_at")?,
                        })
                    })
                    .transpose()
                    .map_err(|e: sqlx::Error| map_err(e))
                }

                async fn put_account_storage(&self, storage: &AccountStorage) -> Result<(), StoreError> {
                    sqlx::query(
                        "insert into account_storage (account_id, bucket, endpoint, region, access_key, secret_key_sealed, \
                         verified_at, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         on conflict (account_id) do update set bucket = excluded.bucket, endpoint = excluded.endpoint, \
                         region = excluded.region, access_key = excluded.access_key, \
                         secret_key_sealed = excluded.secret_key_sealed, verified_at = excluded.verified_at, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(storage.account_id.as_str())
                    .bind(&storage.bucket)
                    .bind(&storage.endpoint)
                    .bind(&storage.region)
                    .bind(&storage.access_key)
                    .bind(&storage.secret_key_sealed)
                    .bind(storage.verified_at)
                    .bind(storage.created_at)
                    .bind(storage.updated_at)
                    .execute(&mut *self.write().await?)
                    .await
                    .map_err(map_err)?;
                    Ok(())
                }

                async fn delete_account_storage(&self, account_id: &AccountId) -> Result<bool, StoreError> {
                    let done = sqlx::query("delete from account_storage where account_id = $1")
                        .bind(account_id.as_str())
                        .execute(&mut *self.write().await?)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }
            }
        }
    };
}
pub(crate) use impl_recordings;
