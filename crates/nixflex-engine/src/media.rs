//! Admitting a media stream: the first messages (`connected`, `start`), the per-call token
//! check, and loading everything the session needs, before any audio is processed.

use futures::{Sink, Stream, StreamExt};
use nixflex_core::call::Direction;
use nixflex_core::ids::{CallId, E164};
use nixflex_providers::twilio::CreateRecording;
use nixflex_store::CallUpdate;

use tracing::Instrument as _;

use crate::engine::Engine;
use crate::prompt::{HISTORY_CALLS, PastCall};
use crate::session::{CallSetup, EndReason, Session};
use crate::transfer::{NotConnected, RESUME_NUMBER_PARAM, RESUME_PARAM, Resume};
use crate::twilio_ws::{self, Inbound, StartInfo};

/// Attempts at starting a carrier recording.
const START_RECORDING_ATTEMPTS: u32 = 3;
/// The wait before the second attempt; the third waits twice as long.
const START_RECORDING_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// Why a media stream was refused before the conversation started.
#[derive(Debug, thiserror::Error)]
pub enum StreamRefused {
    /// No `start` message in time, or the socket closed first.
    #[error("the media stream sent no start message")]
    NoStart,
    /// The `call_id`/`token` parameters do not match a call.
    #[error("the media stream's call id or token is wrong")]
    BadToken,
    /// The call's number or agent no longer exists.
    #[error("the call's number or agent is gone")]
    Gone,
    /// The store failed.
    #[error("storage failed: {0}")]
    Store(#[from] nixflex_store::StoreError),
}

impl Engine {
    /// Runs a Twilio media stream from its first message to the end of the call.
    ///
    /// `reader` yields the socket's text messages: any type that derefs to `str`, so a caller
    /// can pass the socket's own message buffers (axum's `Utf8Bytes`) without copying them;
    /// `writer` takes the messages to send. Returns why the call ended, or why the stream was
    /// refused (the caller then closes the socket).
    ///
    /// The session runs inside a span carrying the call's `call_id` and `account_id`, so every
    /// log line of the call (and of its turn and recorder tasks) carries them; the engine tracks
    /// it, so a shutdown drains it.
    ///
    /// # Errors
    /// [`StreamRefused`] when the stream is not a call this server set up.
    pub async fn run_media_stream<R, T, W, E>(
        &self,
        mut reader: R,
        writer: W,
    ) -> Result<EndReason, StreamRefused>
    where
        R: Stream<Item = Result<T, E>> + Unpin + Send,
        T: std::ops::Deref<Target = str>,
        W: Sink<String> + Unpin + Send,
    {
        let start = tokio::time::timeout(self.config().start_timeout, async {
            let mut scratch = Vec::new();
            while let Some(Ok(text)) = reader.next().await {
                if let Ok(Inbound::Start(start)) = twilio_ws::decode(&text, &mut scratch) {
                    return Some(start);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or(StreamRefused::NoStart)?;
        let stream_started = tokio::time::Instant::now();
        let setup = self.load_setup(&start, stream_started).await?;
        if setup.resume.is_none() {
            self.call_connected(&setup);
        }
        let span = tracing::info_span!(
            "call",
            call_id = %setup.call.call_id,
            account_id = %setup.call.account_id
        );
        let _live = self.session_started();
        // Counted active until this function returns (docs/operations.md#metrics).
        let _counted = nixflex_metrics::call_session_started(
            setup.call.direction.as_str(),
            setup.resume.is_none(),
            stream_started.elapsed(),
        );
        let run = async move {
            tracing::info!(message = "Media stream started.");
            let session = Session::new(self.clone(), setup, writer, start.stream_sid);
            session.run(reader).await
        };
        // The session's state is large: one heap allocation per call keeps the caller's future
        // small.
        let reason = self.track(Box::pin(run.instrument(span))).await;
        nixflex_metrics::call_session_ended(reason.as_str());
        Ok(reason)
    }

    /// The call connected (its first stream; a call back from a failed transfer has connected
    /// before): its `call.started` webhooks go out from the job queue, queued on their own task
    /// so the greeting never waits for the database's writer, and the carrier's recording starts.
    fn call_connected(&self, setup: &CallSetup) {
        let started = nixflex_store::NewJob::call_follow_up(
            nixflex_store::CALL_STARTED,
            setup.call.call_id.as_str(),
            setup.call.account_id.as_str(),
            self.config().follow_up_max_attempts,
        );
        let engine = self.clone();
        tokio::spawn(async move {
            match engine.store().enqueue_job(&started).await {
                Ok(_) => engine.wake_follow_ups(),
                Err(error) => {
                    tracing::warn!(message = "Could not queue the call.started webhooks.", error = %error);
                }
            }
        });
        self.start_carrier_recording(setup);
    }

    /// Starts the carrier's dual-channel recording of a call that connected, when recording is
    /// on with the source `provider`. Off the audio path: on its own task, a couple of attempts
    /// for failures worth retrying; a failure is logged and the call goes on unrecorded.
    fn start_carrier_recording(&self, setup: &CallSetup) {
        let Some(recordings) = self.recordings().cloned() else { return };
        if !crate::recordings::carrier_records(&setup.agent, &setup.number.settings) {
            return;
        }
        let Some(call_sid) = setup.call.twilio_call_sid.clone() else { return };
        let create = CreateRecording::dual_channel(
            recordings.status_callback_url(setup.number.phone_number.as_str()),
        );
        let (engine, credentials) = (self.clone(), setup.credentials.clone());
        let call_id = setup.call.call_id.clone();
        let span = tracing::info_span!("carrier_recording", call_id = %call_id);
        self.spawn_tracked(
            async move {
                let twilio = engine.twilio();
                let mut attempt = 0;
                let recording = loop {
                    attempt += 1;
                    match twilio.create_call_recording(&credentials, &call_sid, &create).await {
                        Ok(recording) => break recording,
                        Err(error) if error.is_retryable() && attempt < START_RECORDING_ATTEMPTS => {
                            tracing::debug!(message = "Starting the carrier recording failed; retrying.", attempt, error = %error);
                            tokio::time::sleep(START_RECORDING_BACKOFF * attempt).await;
                        }
                        Err(error) => {
                            tracing::warn!(message = "The carrier recording could not be started; the call goes on unrecorded.", attempt, error = %error, twilio_code = error.twilio_code());
                            return;
                        }
                    }
                };
                match recordings.note_carrier_recording(&call_id, &recording.sid).await {
                    Ok(_) => tracing::info!(message = "Carrier recording started.", recording_sid = %recording.sid),
                    Err(error) => tracing::warn!(message = "The carrier recording started but could not be noted; the call's follow-up will not wait for it.", recording_sid = %recording.sid, error = %error),
                }
            }
            .instrument(span),
        );
    }

    async fn load_setup(
        &self,
        start: &StartInfo,
        stream_started: tokio::time::Instant,
    ) -> Result<CallSetup, StreamRefused> {
        let param =
            |name: &str| start.custom_parameters.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let call_id = param("call_id");
        let token = param("token");
        let store = self.store();
        let mut call =
            store.find_call(&CallId::from(call_id)).await?.ok_or(StreamRefused::BadToken)?;
        if !Engine::token_matches(&call, token) {
            return Err(StreamRefused::BadToken);
        }
        if call.ended_at.is_some() {
            return Err(StreamRefused::Gone);
        }
        let business_number = E164::from(match call.direction {
            Direction::Inbound => call.to_number.clone(),
            Direction::Outbound => call.from_number.clone(),
        });
        let caller_number = match call.direction {
            Direction::Inbound => call.from_number.clone(),
            Direction::Outbound => call.to_number.clone(),
        };
        let number =
            store.find_active_number(&business_number).await?.ok_or(StreamRefused::Gone)?;
        let agent_id = call.agent_id.clone().ok_or(StreamRefused::Gone)?;
        let (agent, _) =
            store.get_agent(&call.account_id, &agent_id).await?.ok_or(StreamRefused::Gone)?;
        let credentials = crate::engine::number_credentials(self.secrets(), &number)
            .ok_or(StreamRefused::Gone)?;
        let history = store
            .call_history(
                &call.account_id,
                &agent_id,
                &business_number,
                &caller_number,
                i64::try_from(HISTORY_CALLS).unwrap_or(i64::MAX),
            )
            .await?
            .into_iter()
            .map(|(started_at, summary)| PastCall { started_at, summary })
            .collect();
        let caller_context =
            store.get_caller(&business_number, &caller_number).await?.map(|c| c.context);
        // Requests to custom functions are signed like webhooks, with the account's active keys.
        let function_secrets = if agent.settings.functions.is_empty() {
            Vec::new()
        } else {
            let keys = store.active_keys(&call.account_id).await?;
            keys.iter().filter_map(|key| self.secrets().open(&key.secret_sealed).ok()).collect()
        };
        if call.twilio_call_sid.is_none() && !start.call_sid.is_empty() {
            store
                .update_call(
                    &call.call_id,
                    &CallUpdate {
                        twilio_call_sid: Some(start.call_sid.clone()),
                        ..CallUpdate::default()
                    },
                    nixflex_store::now(),
                )
                .await?;
            // The session hangs up at the carrier by this SID: keep the record it holds current.
            call.twilio_call_sid = Some(start.call_sid.clone());
        }
        let (purpose, action, message) = match call.direction {
            Direction::Outbound => self.call_plan(&call.call_id).await,
            Direction::Inbound => (None, None, None),
        };
        let voicemail_action = crate::session::VoicemailAction::resolve(
            call.direction,
            &number.settings,
            action.as_deref(),
            message.as_deref(),
        );
        // Only a call that had a conversation can come back from a transfer; the token proves
        // the parameters are the ones our answer to the transfer's callback gave the carrier.
        let resume = start
            .custom_parameters
            .get(RESUME_PARAM)
            .and_then(|v| v.as_str())
            .and_then(NotConnected::parse)
            .filter(|_| call.answered_at.is_some())
            .map(|status| Resume { status, number: param(RESUME_NUMBER_PARAM).to_owned() });
        // The account's own providers come first in the call's chains (cached per node).
        let (account_llm, account_tts) =
            tokio::join!(self.account_llm(&call.account_id), self.account_tts(&call.account_id));
        Ok(CallSetup {
            account_llm,
            account_tts,
            resume,
            purpose,
            voicemail_action,
            call,
            agent: agent.settings,
            agent_id,
            number,
            credentials,
            history,
            caller_context,
            function_secrets,
            stream_started,
        })
    }
}
