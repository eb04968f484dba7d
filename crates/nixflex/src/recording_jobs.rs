//! The recording jobs this node runs (docs/recordings.md#deleting-recordings): `recording.delete`
//! retries the deletion of a file whose store failed when its call was erased.

use nixflex_engine::Recordings;
use nixflex_engine::recordings::{RECORDING_DELETE, RecordingError};
use nixflex_jobs::{JobError, Registry};

/// Registers the recording handlers.
pub fn register(registry: &mut Registry, recordings: Recordings) {
    registry.register(RECORDING_DELETE, move |job| {
        let recordings = recordings.clone();
        async move {
            let field = |name: &str| {
                job.payload
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| JobError::Permanent(format!("payload has no `{name}`")))
            };
            let account_id = field("account_id")?;
            let location = field("location")?;
            match recordings.delete(&account_id.as_str().into(), &location).await {
                Ok(()) | Err(RecordingError::NotFound | RecordingError::BucketRemoved) => Ok(()),
                Err(error) => Err(JobError::Retryable(error.to_string())),
            }
        }
    });
}
