//! Where recordings go and how they come back (docs/recordings.md): the server's own store (a
//! directory under the data directory, or a bucket), an account's own bucket when it set one,
//! signed expiring URLs, deletion and the retention sweep.
//!
//! A stored recording is named by its *location*, `"<store>:<path>"`, kept on the call: `local:`
//! and `s3:` are the server's store, `byo:` the account's bucket. The path is
//! `recordings/<account_id>/<call_id>.wav` everywhere.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use nixflex_core::agent::{AgentSettings, RecordingSource};
use nixflex_core::call::StoredRecording;
use nixflex_core::crypto::SecretBox;
use nixflex_core::ids::{AccountId, CallId};
use nixflex_core::number::NumberSettings;
use nixflex_providers::storage::{ByteRange, ObjectStorage, ObjectStream, S3Config, StorageError};
use nixflex_store::{AccountStorage, RecordingRepo, StoreError};
use secrecy::SecretString;

/// The job kind that deletes a recording file whose first deletion failed (payload:
/// `account_id`, `location`).
pub const RECORDING_DELETE: &str = "recording.delete";

/// Recordings the retention sweep deletes per run.
const SWEEP_BATCH: i64 = 200;

/// Which kind of store the server keeps recordings in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStore {
    /// A directory on this server's disk (`local:`).
    Local,
    /// The server's S3-compatible bucket (`s3:`).
    S3,
}

impl ServerStore {
    fn prefix(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::S3 => "s3",
        }
    }
}

/// How recordings are kept.
#[derive(Debug, Clone)]
pub struct RecordingsConfig {
    /// The server's own store.
    pub server: ObjectStorage,
    /// What it is.
    pub server_kind: ServerStore,
    /// The public base URL recording links start with.
    pub public_url: String,
    /// How long a signed recording link works.
    pub url_ttl: Duration,
    /// Recordings are deleted this long after their call ended (`None`: kept).
    pub retention: Option<Duration>,
    /// Accounts' buckets may use plain-http endpoints on private addresses (local testing
    /// only); otherwise they must be https and resolve to public addresses.
    pub allow_private_buckets: bool,
}

/// How a recording operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file is not there.
    #[error("the recording file is missing")]
    NotFound,
    /// It is in the account's bucket, and the account removed its bucket settings.
    #[error("the recording is in the account's own bucket, which is no longer configured")]
    BucketRemoved,
    /// The requested byte range is outside the recording.
    #[error("the range is outside the recording's {size} bytes")]
    RangeNotSatisfiable {
        /// The recording's size in bytes.
        size: u64,
    },
    /// The object store failed.
    #[error("recording storage: {0}")]
    Storage(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StorageError> for RecordingError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound => Self::NotFound,
            StorageError::RangeNotSatisfiable { size } => Self::RangeNotSatisfiable { size },
            other => Self::Storage(other.to_string()),
        }
    }
}

/// The recordings service: cheap to clone.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

struct Inner {
    config: RecordingsConfig,
    store: Arc<dyn RecordingRepo>,
    secrets: SecretBox,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings").field("server", &self.inner.config.server).finish()
    }
}

/// Who records a call with these settings, if anyone: recording is on when the number's
/// `record_call` says so, or (`null`) the agent's does; the source is the number's
/// `recording_source` if set, else the agent's.
pub fn recording_source(agent: &AgentSettings, number: &NumberSettings) -> Option<RecordingSource> {
    number
        .record_call
        .unwrap_or(agent.record_call)
        .then(|| number.recording_source.unwrap_or(agent.recording_source))
}

/// Whether the carrier records a call of this agent on this number (the source is `provider`).
pub fn carrier_records(agent: &AgentSettings, number: &NumberSettings) -> bool {
    recording_source(agent, number) == Some(RecordingSource::Provider)
}

/// The object path of a call's recording.
pub fn object_path(account_id: &AccountId, call_id: &CallId) -> String {
    format!("recordings/{account_id}/{call_id}.wav")
}

impl Recordings {
    /// The service over this configuration, database and master key.
    pub fn new(
        config: RecordingsConfig,
        store: Arc<dyn RecordingRepo>,
        secrets: SecretBox,
    ) -> Self {
        Self { inner: Arc::new(Inner { config, store, secrets }) }
    }

    /// The configuration.
    pub fn config(&self) -> &RecordingsConfig {
        &self.inner.config
    }

    /// Where the carrier sends the status of a recording of a call on `business_number`:
    /// `<public base>/twilio/recording-status?number=<E.164>`. Twilio's recording callback names
    /// no phone number, so the URL carries the number whose auth token signs it (the signature
    /// covers the query, so it cannot be changed).
    pub fn status_callback_url(&self, business_number: &str) -> String {
        let number: String =
            url::form_urlencoded::byte_serialize(business_number.as_bytes()).collect();
        format!(
            "{}/twilio/recording-status?number={number}",
            self.inner.config.public_url.trim_end_matches('/')
        )
    }

    /// Notes that the carrier is recording the call as `recording_sid`: until it is stored or
    /// reported failed, the call's follow-up waits for it (docs/recordings.md#carrier-recordings).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn note_carrier_recording(
        &self,
        call_id: &CallId,
        recording_sid: &str,
    ) -> Result<bool, RecordingError> {
        Ok(self
            .inner
            .store
            .set_carrier_recording(call_id, recording_sid, nixflex_store::now())
            .await?)
    }

    /// The call no longer waits for the carrier recording `recording_sid` (stored, or failed).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn forget_carrier_recording(
        &self,
        call_id: &CallId,
        recording_sid: &str,
    ) -> Result<bool, RecordingError> {
        Ok(self
            .inner
            .store
            .clear_carrier_recording(call_id, recording_sid, nixflex_store::now())
            .await?)
    }

    /// The carrier recording the call still waits for, if any.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn pending_carrier_recording(
        &self,
        call_id: &CallId,
    ) -> Result<Option<String>, RecordingError> {
        Ok(self.inner.store.carrier_recording(call_id).await?)
    }

    /// A client for an account's bucket with these settings (the secret in clear).
    ///
    /// # Errors
    /// When the settings cannot make a client (empty bucket, malformed endpoint).
    pub fn bucket(
        &self,
        bucket: &str,
        endpoint: Option<&str>,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<ObjectStorage, StorageError> {
        ObjectStorage::s3(&S3Config {
            bucket: bucket.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            region: region.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: SecretString::from(secret_key.to_owned()),
            allow_http: self.inner.config.allow_private_buckets,
            public_only: !self.inner.config.allow_private_buckets,
        })
    }

    fn account_bucket(&self, settings: &AccountStorage) -> Result<ObjectStorage, RecordingError> {
        let secret = self.inner.secrets.open(&settings.secret_key_sealed).map_err(|_| {
            RecordingError::Storage("the bucket's secret key cannot be unsealed".to_owned())
        })?;
        Ok(self.bucket(
            &settings.bucket,
            settings.endpoint.as_deref(),
            &settings.region,
            &settings.access_key,
            &secret,
        )?)
    }

    /// Stores a call's recording — in the account's bucket when it set one, else in the
    /// server's store — and notes its location on the call. If the account's bucket refuses,
    /// the recording goes to the server's store instead, so it is not lost.
    ///
    /// # Errors
    /// When neither store took it, or the database failed.
    pub async fn save(
        &self,
        account_id: &AccountId,
        call_id: &CallId,
        wav: Bytes,
        duration_s: Option<f64>,
    ) -> Result<StoredRecording, RecordingError> {
        let path = object_path(account_id, call_id);
        let mut location = None;
        if let Some(settings) = self.inner.store.account_storage(account_id).await? {
            let put = match self.account_bucket(&settings) {
                Ok(bucket) => bucket.put(&path, wav.clone()).await.map_err(RecordingError::from),
                Err(error) => Err(error),
            };
            match put {
                Ok(()) => location = Some(format!("byo:{path}")),
                Err(error) => tracing::warn!(
                    message = "The account's bucket refused the recording; it is kept in the server's store instead.",
                    error = %error
                ),
            }
        }
        let location = match location {
            Some(location) => location,
            None => {
                self.inner.config.server.put(&path, wav).await?;
                format!("{}:{path}", self.inner.config.server_kind.prefix())
            }
        };
        let recording = StoredRecording { location, duration_s };
        self.inner.store.set_call_recording(call_id, &recording, nixflex_store::now()).await?;
        Ok(recording)
    }

    /// Where a location's file lives, and its path there.
    async fn resolve(
        &self,
        account_id: &AccountId,
        location: &str,
    ) -> Result<(ObjectStorage, String), RecordingError> {
        let (kind, path) = location
            .split_once(':')
            .ok_or_else(|| RecordingError::Storage(format!("malformed location `{location}`")))?;
        match kind {
            "byo" => {
                let settings = self
                    .inner
                    .store
                    .account_storage(account_id)
                    .await?
                    .ok_or(RecordingError::BucketRemoved)?;
                Ok((self.account_bucket(&settings)?, path.to_owned()))
            }
            kind if kind == self.inner.config.server_kind.prefix() => {
                Ok((self.inner.config.server.clone(), path.to_owned()))
            }
            other => Err(RecordingError::Storage(format!(
                "the recording is in the server's `{other}` store, which this server is not configured with"
            ))),
        }
    }

    /// Reads a recording.
    ///
    /// # Errors
    /// [`RecordingError::NotFound`] when the file is gone; otherwise when its store fails.
    pub async fn read(
        &self,
        account_id: &AccountId,
        location: &str,
    ) -> Result<Bytes, RecordingError> {
        let (storage, path) = self.resolve(account_id, location).await?;
        Ok(storage.get(&path).await?)
    }

    /// Streams a recording, or the byte range asked for, without holding it in memory.
    ///
    /// # Errors
    /// [`RecordingError::NotFound`], [`RecordingError::RangeNotSatisfiable`], or the store's
    /// failure.
    pub async fn open(
        &self,
        account_id: &AccountId,
        location: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectStream, RecordingError> {
        let (storage, path) = self.resolve(account_id, location).await?;
        Ok(storage.stream(&path, range).await?)
    }

    /// Deletes a recording's file (a file already gone counts as deleted).
    ///
    /// # Errors
    /// When its store fails or can no longer be reached.
    pub async fn delete(
        &self,
        account_id: &AccountId,
        location: &str,
    ) -> Result<(), RecordingError> {
        let (storage, path) = self.resolve(account_id, location).await?;
        Ok(storage.delete(&path).await?)
    }

    /// The signed link to a call's recording, valid for the configured time from `now`.
    pub fn url(&self, call_id: &CallId, now: DateTime<Utc>) -> String {
        let ttl = chrono::Duration::from_std(self.inner.config.url_ttl)
            .unwrap_or_else(|_| chrono::Duration::hours(24));
        let expires = (now + ttl).timestamp();
        let signature = self.inner.secrets.sign(&signed_message(call_id.as_str(), expires));
        format!(
            "{}/recordings/{call_id}.wav?expires={expires}&signature={signature}",
            self.inner.config.public_url.trim_end_matches('/')
        )
    }

    /// Whether a link's `expires` and `signature` are ours for this call and still valid.
    pub fn check_url(
        &self,
        call_id: &str,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> bool {
        expires >= now.timestamp()
            && self.inner.secrets.verify_signed(&signed_message(call_id, expires), signature)
    }

    /// Deletes up to one batch of recordings whose calls ended longer ago than the retention
    /// time; returns how many were deleted. Recordings whose store fails stay for the next run.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn sweep_expired(&self, now: DateTime<Utc>) -> Result<usize, RecordingError> {
        let Some(retention) = self.inner.config.retention else {
            return Ok(0);
        };
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let Some(before) = now.checked_sub_signed(retention) else {
            return Ok(0);
        };
        let expired = self.inner.store.expired_recordings(before, SWEEP_BATCH).await?;
        let mut deleted = 0;
        for recording in expired {
            let gone = match self.delete(&recording.account_id, &recording.location).await {
                Ok(()) => true,
                // The account removed its bucket: the file is theirs now; forget it.
                Err(RecordingError::BucketRemoved) => true,
                Err(error) => {
                    tracing::warn!(message = "An expired recording could not be deleted; retrying at the next sweep.", call_id = %recording.call_id, error = %error);
                    false
                }
            };
            if gone
                && self
                    .inner
                    .store
                    .clear_call_recording(&recording.call_id, &recording.location, now)
                    .await?
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

fn signed_message(call_id: &str, expires: i64) -> String {
    format!("recording:{call_id}:{expires}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carrier_records_when_recording_is_on_and_the_source_is_provider() {
        let agent = AgentSettings::default();
        let inherit = NumberSettings::default();
        assert!(carrier_records(&agent, &inherit), "the defaults: on, provider");
        let off = NumberSettings { record_call: Some(false), ..NumberSettings::default() };
        assert!(!carrier_records(&agent, &off), "the number turns it off");
        let ours = NumberSettings {
            recording_source: Some(RecordingSource::Nixflex),
            ..NumberSettings::default()
        };
        assert!(!carrier_records(&agent, &ours), "the engine records instead");
        let agent_off = AgentSettings { record_call: false, ..AgentSettings::default() };
        assert!(!carrier_records(&agent_off, &inherit));
        let on = NumberSettings { record_call: Some(true), ..NumberSettings::default() };
        assert!(carrier_records(&agent_off, &on), "the number's setting overrides the agent's");
        let agent_ours = AgentSettings {
            recording_source: RecordingSource::Nixflex,
            ..AgentSettings::default()
        };
        let provider = NumberSettings {
            recording_source: Some(RecordingSource::Provider),
            ..NumberSettings::default()
        };
        assert!(carrier_records(&agent_ours, &provider));
    }

    #[test]
    fn the_numbers_settings_override_the_agents() {
        let agent = |record_call, recording_source| AgentSettings {
            record_call,
            recording_source,
            ..AgentSettings::default()
        };
        let number = |record_call, recording_source| NumberSettings {
            record_call,
            recording_source,
            ..NumberSettings::default()
        };
        use RecordingSource::{Nixflex, Provider};
        let cases = [
            (agent(true, Provider), number(None, None), Some(Provider)),
            (agent(true, Nixflex), number(None, None), Some(Nixflex)),
            (agent(true, Provider), number(None, Some(Nixflex)), Some(Nixflex)),
            (agent(true, Nixflex), number(Some(true), Some(Provider)), Some(Provider)),
            (agent(true, Nixflex), number(Some(false), None), None),
            (agent(false, Nixflex), number(None, None), None),
            (agent(false, Nixflex), number(Some(true), Some(Nixflex)), Some(Nixflex)),
            (agent(false, Provider), number(Some(true), None), Some(Provider)),
        ];
        for (agent, number, expected) in cases {
            assert_eq!(recording_source(&agent, &number), expected, "{number:?}");
        }
    }
}
