//! Carrier recordings after the call (docs/recordings.md#carrier-recordings): the
//! `recording.fetch` job that the recording status callback queues. It downloads the carrier's
//! WAV with the call's number's credentials, stores it through [`Recordings::save`], lets the
//! call's follow-up stop waiting, and deletes the carrier's copy when the server is configured to.
//!
//! A run is idempotent: a call that already holds its recording is not downloaded again (only
//! the carrier copy's deletion may be left to do), and a carrier copy already gone counts as
//! deleted.

use std::sync::Arc;

use nixflex_core::call::CallRecord;
use nixflex_core::crypto::SecretBox;
use nixflex_core::ids::CallId;
use nixflex_providers::twilio::{TwilioClient, TwilioCredentials, TwilioError};
use nixflex_store::{NewJob, Store};
use serde::{Deserialize, Serialize};

use crate::followup::FollowUpError;
use crate::recordings::{RecordingError, Recordings};

/// The job kind that fetches a completed carrier recording.
pub const RECORDING_FETCH: &str = "recording.fetch";

/// The payload of a `recording.fetch` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingFetch {
    /// The recorded call.
    pub call_id: String,
    /// Its account.
    pub account_id: String,
    /// The carrier's `RE…` SID.
    pub recording_sid: String,
    /// Seconds, from the status callback.
    pub duration_s: Option<f64>,
}

impl RecordingFetch {
    /// The job, keyed by the call and the recording SID, so the carrier's retried callbacks
    /// queue it once.
    pub fn job(&self, max_attempts: i64) -> Result<NewJob, serde_json::Error> {
        let key = format!("{}:{}", self.call_id, self.recording_sid);
        Ok(NewJob::new(RECORDING_FETCH, &key, serde_json::to_value(self)?, max_attempts))
    }
}

/// What the `recording.fetch` job needs.
#[derive(Debug, Clone)]
pub struct CarrierRecordings {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    twilio: TwilioClient,
    recordings: Recordings,
    delete_carrier_copy: bool,
}

fn storage_error(error: RecordingError) -> FollowUpError {
    FollowUpError::Retryable(format!("storing the recording: {error}"))
}

fn twilio_error(what: &str, error: &TwilioError) -> FollowUpError {
    match error {
        // Twilio may not serve the media at the instant it reports `completed`.
        TwilioError::NotFound { .. } => FollowUpError::Retryable(format!("{what}: {error}")),
        error if error.is_retryable() => FollowUpError::Retryable(format!("{what}: {error}")),
        error => FollowUpError::Permanent(format!("{what}: {error}")),
    }
}

impl CarrierRecordings {
    /// The job's steps over this store, master key, Twilio client and recordings service;
    /// `delete_carrier_copy` deletes the carrier's copy once stored.
    pub fn new(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        twilio: TwilioClient,
        recordings: Recordings,
        delete_carrier_copy: bool,
    ) -> Self {
        Self { store, secrets, twilio, recordings, delete_carrier_copy }
    }

    /// The credentials of the number the call was on, if it is still imported by the call's
    /// account.
    async fn credentials(
        &self,
        call: &CallRecord,
    ) -> Result<Option<TwilioCredentials>, FollowUpError> {
        let number =
            self.store.find_active_number(&crate::followup::business_number(call).into()).await?;
        let Some(number) = number.filter(|n| n.account_id == call.account_id) else {
            return Ok(None);
        };
        crate::engine::number_credentials(&self.secrets, &number).map(Some).ok_or_else(|| {
            FollowUpError::Permanent("the number's auth token cannot be unsealed".to_owned())
        })
    }

    /// One run of `recording.fetch`.
    ///
    /// # Errors
    /// [`FollowUpError::Retryable`] when Twilio or the storage failed in a way worth retrying;
    /// [`FollowUpError::Permanent`] when Twilio refused (e.g. the credentials no longer work).
    pub async fn fetch(&self, job: &RecordingFetch) -> Result<(), FollowUpError> {
        let call_id = CallId::from(job.call_id.as_str());
        let Some(call) = self.store.find_call(&call_id).await? else {
            // Deleted before its recording came: nothing to keep.
            return Ok(());
        };
        if call.account_id.as_str() != job.account_id {
            return Err(FollowUpError::Permanent("the job names another account".to_owned()));
        }
        let Some(credentials) = self.credentials(&call).await? else {
            tracing::warn!(message = "The call's number is no longer imported; its carrier recording cannot be fetched.", call_id = %call_id, recording_sid = %job.recording_sid);
            self.recordings
                .forget_carrier_recording(&call_id, &job.recording_sid)
                .await
                .map_err(storage_error)?;
            return Ok(());
        };
        if call.recording.is_none() {
            let wav = self
                .twilio
                .download_recording_wav(&credentials, &job.recording_sid)
                .await
                .map_err(|e| twilio_error("downloading the recording", &e))?;
            self.recordings
                .save(&call.account_id, &call_id, wav, job.duration_s)
                .await
                .map_err(storage_error)?;
            tracing::info!(message = "Carrier recording stored.", call_id = %call_id, recording_sid = %job.recording_sid);
        }
        self.recordings
            .forget_carrier_recording(&call_id, &job.recording_sid)
            .await
            .map_err(storage_error)?;
        // The call's `call.ended` may be waiting for this recording, looking again every
        // second: it can run now (docs/recordings.md#carrier-recordings).
        let follow_up = NewJob::call_follow_up(
            nixflex_store::CALL_ENDED,
            call_id.as_str(),
            call.account_id.as_str(),
            1,
        );
        self.store.run_queued_job_now(&follow_up.idempotency_key, nixflex_store::now()).await?;
        if self.delete_carrier_copy {
            match self.twilio.delete_recording(&credentials, &job.recording_sid).await {
                Ok(()) | Err(TwilioError::NotFound { .. }) => {}
                Err(error) if error.is_retryable() => {
                    return Err(twilio_error("deleting the carrier's copy", &error));
                }
                // The recording is stored: a refusal (e.g. the credentials were revoked) leaves
                // the carrier's copy in place rather than killing a job whose work is done.
                Err(error) => {
                    tracing::warn!(message = "The carrier refused to delete its copy of the recording; it stays there.", call_id = %call_id, recording_sid = %job.recording_sid, error = %error);
                }
            }
        }
        Ok(())
    }
}
