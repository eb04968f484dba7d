//! Twilio REST API v2010 resources (what Twilio returns) and request parameters (what we send).
//!
//! Field and parameter names follow twilio-python `twilio/rest/api/v2010/account/…`
//! (`incoming_phone_number/__init__.py`, `call/__init__.py`, `message/__init__.py`) and the
//! response samples of Twilio's API reference. Every response field that Twilio may send as
//! `null` or leave out is an `Option`, and unknown fields are ignored, so that Twilio adding
//! fields never breaks decoding. Dates stay in Twilio's RFC 2822 text form.

use std::time::Duration;

use serde::Deserialize;

/// One `IncomingPhoneNumber` resource: a number owned by the account and its webhook setup.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct IncomingPhoneNumber {
    /// `PN…` SID.
    pub sid: String,
    /// `AC…` SID of the owning account.
    pub account_sid: String,
    /// E.164 number.
    pub phone_number: String,
    /// Display name (Twilio defaults it to the formatted number).
    #[serde(default)]
    pub friendly_name: Option<String>,
    /// URL Twilio requests when a call comes in.
    #[serde(default)]
    pub voice_url: Option<String>,
    /// `GET` or `POST` for `voice_url`.
    #[serde(default)]
    pub voice_method: Option<String>,
    /// URL Twilio requests when `voice_url` fails.
    #[serde(default)]
    pub voice_fallback_url: Option<String>,
    /// `GET` or `POST` for `voice_fallback_url`.
    #[serde(default)]
    pub voice_fallback_method: Option<String>,
    /// TwiML App handling calls instead of the voice URLs, when set.
    #[serde(default)]
    pub voice_application_sid: Option<String>,
    /// `voice` or `fax`.
    #[serde(default)]
    pub voice_receive_mode: Option<String>,
    /// Whether Twilio looks up the caller's name (CNAM).
    #[serde(default)]
    pub voice_caller_id_lookup: Option<bool>,
    /// URL Twilio requests when a message comes in.
    #[serde(default)]
    pub sms_url: Option<String>,
    /// `GET` or `POST` for `sms_url`.
    #[serde(default)]
    pub sms_method: Option<String>,
    /// URL Twilio requests when `sms_url` fails.
    #[serde(default)]
    pub sms_fallback_url: Option<String>,
    /// `GET` or `POST` for `sms_fallback_url`.
    #[serde(default)]
    pub sms_fallback_method: Option<String>,
    /// TwiML App handling messages instead of the SMS URLs, when set.
    #[serde(default)]
    pub sms_application_sid: Option<String>,
    /// URL receiving call status callbacks for calls to this number.
    #[serde(default)]
    pub status_callback: Option<String>,
    /// `GET` or `POST` for `status_callback`.
    #[serde(default)]
    pub status_callback_method: Option<String>,
    /// SIP trunk routing voice instead of the URLs, when set.
    #[serde(default)]
    pub trunk_sid: Option<String>,
    /// What the number can do.
    #[serde(default)]
    pub capabilities: Option<PhoneNumberCapabilities>,
    /// `in-use` and similar.
    #[serde(default)]
    pub status: Option<String>,
    /// RFC 2822 creation time.
    #[serde(default)]
    pub date_created: Option<String>,
    /// RFC 2822 last update time.
    #[serde(default)]
    pub date_updated: Option<String>,
    /// Path of this resource, relative to the API host.
    #[serde(default)]
    pub uri: Option<String>,
}

/// `capabilities` of an [`IncomingPhoneNumber`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PhoneNumberCapabilities {
    /// Can place and receive calls.
    #[serde(default)]
    pub voice: bool,
    /// Can send and receive SMS.
    #[serde(default)]
    pub sms: bool,
    /// Can send and receive MMS.
    #[serde(default)]
    pub mms: bool,
    /// Can send and receive faxes.
    #[serde(default)]
    pub fax: bool,
}

/// One page of `GET …/IncomingPhoneNumbers.json`.
#[derive(Debug, Deserialize)]
pub(crate) struct IncomingPhoneNumberPage {
    #[serde(default)]
    pub(crate) incoming_phone_numbers: Vec<IncomingPhoneNumber>,
    #[serde(default)]
    pub(crate) next_page_uri: Option<String>,
}

/// One page of `GET …/Calls.json`.
#[derive(Debug, Deserialize)]
pub(crate) struct CallPage {
    #[serde(default)]
    pub(crate) calls: Vec<Call>,
}

/// A `Call` resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Call {
    /// `CA…` SID.
    pub sid: String,
    /// `AC…` SID of the owning account.
    pub account_sid: String,
    /// Called party.
    #[serde(default)]
    pub to: Option<String>,
    /// Caller.
    #[serde(default)]
    pub from: Option<String>,
    /// Current status.
    pub status: CallStatus,
    /// `inbound`, `outbound-api` or `outbound-dial`.
    #[serde(default)]
    pub direction: Option<String>,
    /// The parent call, for `<Dial>` legs.
    #[serde(default)]
    pub parent_call_sid: Option<String>,
    /// `PN…` SID of the account's number used, if any.
    #[serde(default)]
    pub phone_number_sid: Option<String>,
    /// AMD result (`human`, `machine_start`, …) when answering machine detection ran.
    #[serde(default)]
    pub answered_by: Option<String>,
    /// Call length in seconds (a string, as Twilio sends it), once the call has ended.
    #[serde(default)]
    pub duration: Option<String>,
    /// RFC 2822 time the call was answered.
    #[serde(default)]
    pub start_time: Option<String>,
    /// RFC 2822 time the call ended.
    #[serde(default)]
    pub end_time: Option<String>,
    /// RFC 2822 creation time.
    #[serde(default)]
    pub date_created: Option<String>,
    /// RFC 2822 last update time.
    #[serde(default)]
    pub date_updated: Option<String>,
    /// Path of this resource, relative to the API host.
    #[serde(default)]
    pub uri: Option<String>,
}

/// Status of a [`Call`] (docs/protocols.md#twilio-rest-api).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CallStatus {
    /// Created, not dialled yet.
    Queued,
    /// Ringing at the called party.
    Ringing,
    /// Answered and connected.
    InProgress,
    /// Ended normally.
    Completed,
    /// The called party was busy.
    Busy,
    /// The call could not be placed.
    Failed,
    /// Nobody answered.
    NoAnswer,
    /// Cancelled while queued or ringing.
    Canceled,
    /// A status this client does not know yet.
    #[serde(other)]
    Unknown,
}

impl CallStatus {
    /// True once the call can no longer change (completed, busy, failed, no-answer, canceled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CallStatus::Completed
                | CallStatus::Busy
                | CallStatus::Failed
                | CallStatus::NoAnswer
                | CallStatus::Canceled
        )
    }
}

/// A `Message` resource (SMS/MMS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// `SM…` (or `MM…`) SID.
    pub sid: String,
    /// `AC…` SID of the owning account.
    pub account_sid: String,
    /// Recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// Sender.
    #[serde(default)]
    pub from: Option<String>,
    /// Message text.
    #[serde(default)]
    pub body: Option<String>,
    /// Current status.
    pub status: MessageStatus,
    /// `inbound`, `outbound-api`, `outbound-call` or `outbound-reply`.
    #[serde(default)]
    pub direction: Option<String>,
    /// Messaging Service used, if any.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Twilio error code when the message failed.
    #[serde(default)]
    pub error_code: Option<i64>,
    /// Twilio error text when the message failed.
    #[serde(default)]
    pub error_message: Option<String>,
    /// RFC 2822 creation time.
    #[serde(default)]
    pub date_created: Option<String>,
    /// RFC 2822 last update time.
    #[serde(default)]
    pub date_updated: Option<String>,
    /// RFC 2822 time the message was sent.
    #[serde(default)]
    pub date_sent: Option<String>,
    /// Path of this resource, relative to the API host.
    #[serde(default)]
    pub uri: Option<String>,
}

/// Filters of `GET …/Messages.json` (Twilio's documented `To`, `From`, `DateSent` and
/// `PageSize`); Twilio lists the newest messages first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// `To`: only messages to this number.
    pub to: Option<String>,
    /// `From`: only messages from this number.
    pub from: Option<String>,
    /// `DateSent>=` (`YYYY-MM-DD`, UTC): only messages sent on or after this day. Messages
    /// still queued have no send date and do not match.
    pub date_sent_after: Option<chrono::NaiveDate>,
    /// `PageSize` (Twilio: 1–1000, default 50).
    pub page_size: Option<u32>,
}

impl MessageFilter {
    pub(crate) fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        push_opt(&mut query, "To", self.to.as_deref());
        push_opt(&mut query, "From", self.from.as_deref());
        if let Some(day) = self.date_sent_after {
            query.push(("DateSent>", day.format("%Y-%m-%d").to_string()));
        }
        if let Some(page_size) = self.page_size {
            query.push(("PageSize", page_size.to_string()));
        }
        query
    }
}

/// One page of `GET …/Messages.json`.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagePage {
    #[serde(default)]
    pub(crate) messages: Vec<Message>,
    #[serde(default)]
    pub(crate) next_page_uri: Option<String>,
}

/// Status of a [`Message`] (docs/protocols.md#twilio-rest-api).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageStatus {
    /// Accepted, waiting to be sent.
    Queued,
    /// Being sent.
    Sending,
    /// Handed to the carrier.
    Sent,
    /// Could not be sent.
    Failed,
    /// The carrier confirmed delivery.
    Delivered,
    /// The carrier could not deliver it.
    Undelivered,
    /// Inbound message being received.
    Receiving,
    /// Inbound message received.
    Received,
    /// Accepted by a Messaging Service.
    Accepted,
    /// Scheduled for later.
    Scheduled,
    /// Read by the recipient (some channels).
    Read,
    /// Some parts delivered.
    PartiallyDelivered,
    /// A scheduled message was cancelled.
    Canceled,
    /// A status this client does not know yet.
    #[serde(other)]
    Unknown,
}

/// Filters for listing incoming phone numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingPhoneNumberFilter {
    /// `PhoneNumber`: Twilio matches partial numbers too (`*` is a one-digit wildcard).
    pub phone_number: Option<String>,
    /// `FriendlyName`.
    pub friendly_name: Option<String>,
    /// `PageSize` (Twilio default 50, maximum 1000).
    pub page_size: Option<u32>,
}

impl IncomingPhoneNumberFilter {
    pub(crate) fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        push_opt(&mut query, "PhoneNumber", self.phone_number.as_deref());
        push_opt(&mut query, "FriendlyName", self.friendly_name.as_deref());
        if let Some(page_size) = self.page_size {
            query.push(("PageSize", page_size.to_string()));
        }
        query
    }
}

/// Changes to an incoming phone number's configuration. Only fields that are `Some` are sent;
/// `Some(String::new())` clears a URL on Twilio's side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingPhoneNumberUpdate {
    /// `FriendlyName`.
    pub friendly_name: Option<String>,
    /// `VoiceUrl`.
    pub voice_url: Option<String>,
    /// `VoiceMethod`.
    pub voice_method: Option<String>,
    /// `VoiceFallbackUrl`.
    pub voice_fallback_url: Option<String>,
    /// `VoiceFallbackMethod`.
    pub voice_fallback_method: Option<String>,
    /// `VoiceApplicationSid` (overrides the voice URLs; `""` removes it).
    pub voice_application_sid: Option<String>,
    /// `VoiceReceiveMode` (`voice` or `fax`).
    pub voice_receive_mode: Option<String>,
    /// `VoiceCallerIdLookup`.
    pub voice_caller_id_lookup: Option<bool>,
    /// `SmsUrl`.
    pub sms_url: Option<String>,
    /// `SmsMethod`.
    pub sms_method: Option<String>,
    /// `SmsFallbackUrl`.
    pub sms_fallback_url: Option<String>,
    /// `SmsFallbackMethod`.
    pub sms_fallback_method: Option<String>,
    /// `SmsApplicationSid` (overrides the SMS URLs; `""` removes it).
    pub sms_application_sid: Option<String>,
    /// `StatusCallback`.
    pub status_callback: Option<String>,
    /// `StatusCallbackMethod`.
    pub status_callback_method: Option<String>,
    /// `TrunkSid` (routes voice to a SIP trunk; `""` removes it).
    pub trunk_sid: Option<String>,
}

impl IncomingPhoneNumberUpdate {
    pub(crate) fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut form = Vec::new();
        push_opt(&mut form, "FriendlyName", self.friendly_name.as_deref());
        push_opt(&mut form, "VoiceUrl", self.voice_url.as_deref());
        push_opt(&mut form, "VoiceMethod", self.voice_method.as_deref());
        push_opt(&mut form, "VoiceFallbackUrl", self.voice_fallback_url.as_deref());
        push_opt(&mut form, "VoiceFallbackMethod", self.voice_fallback_method.as_deref());
        push_opt(&mut form, "VoiceApplicationSid", self.voice_application_sid.as_deref());
        push_opt(&mut form, "VoiceReceiveMode", self.voice_receive_mode.as_deref());
        push_bool(&mut form, "VoiceCallerIdLookup", self.voice_caller_id_lookup);
        push_opt(&mut form, "SmsUrl", self.sms_url.as_deref());
        push_opt(&mut form, "SmsMethod", self.sms_method.as_deref());
        push_opt(&mut form, "SmsFallbackUrl", self.sms_fallback_url.as_deref());
        push_opt(&mut form, "SmsFallbackMethod", self.sms_fallback_method.as_deref());
        push_opt(&mut form, "SmsApplicationSid", self.sms_application_sid.as_deref());
        push_opt(&mut form, "StatusCallback", self.status_callback.as_deref());
        push_opt(&mut form, "StatusCallbackMethod", self.status_callback_method.as_deref());
        push_opt(&mut form, "TrunkSid", self.trunk_sid.as_deref());
        form
    }
}

/// What Twilio runs when an outbound call is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    /// `Url`: Twilio fetches TwiML from this URL (with `Method`, default `POST`).
    Url(String),
    /// `Twiml`: inline TwiML, at most 4,000 characters.
    Twiml(String),
    /// `ApplicationSid`: a TwiML App.
    ApplicationSid(String),
}

/// A call progress event for `StatusCallbackEvent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatusEvent {
    /// `initiated`.
    Initiated,
    /// `ringing`.
    Ringing,
    /// `answered`.
    Answered,
    /// `completed` (the only one Twilio sends by default).
    Completed,
}

impl CallStatusEvent {
    /// Twilio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatusEvent::Initiated => "initiated",
            CallStatusEvent::Ringing => "ringing",
            CallStatusEvent::Answered => "answered",
            CallStatusEvent::Completed => "completed",
        }
    }
}

/// Answering machine detection mode (`MachineDetection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineDetection {
    /// `Enable`: return as soon as a human or machine is recognised.
    Enable,
    /// `DetectMessageEnd`: for machines, wait for the end of the greeting (beep or silence).
    DetectMessageEnd,
}

impl MachineDetection {
    /// Twilio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineDetection::Enable => "Enable",
            MachineDetection::DetectMessageEnd => "DetectMessageEnd",
        }
    }
}

/// Parameters of `POST …/Calls.json`. Build with [`CreateCall::new`], then set the optional
/// fields that are needed; `None` / empty fields are not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateCall {
    /// `To`: E.164 number, SIP URI or client identifier.
    pub to: String,
    /// `From`: one of the account's numbers or verified caller IDs.
    pub from: String,
    /// `Url` | `Twiml` | `ApplicationSid`.
    pub target: CallTarget,
    /// `Method` for `Url`.
    pub method: Option<String>,
    /// `FallbackUrl`.
    pub fallback_url: Option<String>,
    /// `FallbackMethod`.
    pub fallback_method: Option<String>,
    /// `StatusCallback`.
    pub status_callback: Option<String>,
    /// `StatusCallbackEvent`, one form parameter per event.
    pub status_callback_events: Vec<CallStatusEvent>,
    /// `StatusCallbackMethod`.
    pub status_callback_method: Option<String>,
    /// `Timeout`: how long to ring, whole seconds (Twilio default 60, max 600).
    pub timeout: Option<Duration>,
    /// `TimeLimit`: maximum call length, whole seconds.
    pub time_limit: Option<Duration>,
    /// `SendDigits`.
    pub send_digits: Option<String>,
    /// `CallerId` (SIP calls).
    pub caller_id: Option<String>,
    /// `Record`.
    pub record: Option<bool>,
    /// `RecordingChannels`: `mono` or `dual`.
    pub recording_channels: Option<String>,
    /// `RecordingTrack`: `inbound`, `outbound` or `both`.
    pub recording_track: Option<String>,
    /// `RecordingStatusCallback`.
    pub recording_status_callback: Option<String>,
    /// `RecordingStatusCallbackEvent` (`in-progress`, `completed`, `absent`), one parameter each.
    pub recording_status_callback_events: Vec<String>,
    /// `RecordingStatusCallbackMethod`.
    pub recording_status_callback_method: Option<String>,
    /// `Trim`: `trim-silence` or `do-not-trim`.
    pub trim: Option<String>,
    /// `MachineDetection`.
    pub machine_detection: Option<MachineDetection>,
    /// `MachineDetectionTimeout`, whole seconds.
    pub machine_detection_timeout: Option<Duration>,
    /// `MachineDetectionSpeechThreshold`, milliseconds.
    pub machine_detection_speech_threshold: Option<Duration>,
    /// `MachineDetectionSpeechEndThreshold`, milliseconds.
    pub machine_detection_speech_end_threshold: Option<Duration>,
    /// `MachineDetectionSilenceTimeout`, milliseconds.
    pub machine_detection_silence_timeout: Option<Duration>,
    /// `AsyncAmd`.
    pub async_amd: Option<bool>,
    /// `AsyncAmdStatusCallback`.
    pub async_amd_status_callback: Option<String>,
    /// `AsyncAmdStatusCallbackMethod`.
    pub async_amd_status_callback_method: Option<String>,
}

impl CreateCall {
    /// A call from `from` to `to` that runs `target` when answered; every option unset.
    pub fn new(to: impl Into<String>, from: impl Into<String>, target: CallTarget) -> Self {
        Self {
            to: to.into(),
            from: from.into(),
            target,
            method: None,
            fallback_url: None,
            fallback_method: None,
            status_callback: None,
            status_callback_events: Vec::new(),
            status_callback_method: None,
            timeout: None,
            time_limit: None,
            send_digits: None,
            caller_id: None,
            record: None,
            recording_channels: None,
            recording_track: None,
            recording_status_callback: None,
            recording_status_callback_events: Vec::new(),
            recording_status_callback_method: None,
            trim: None,
            machine_detection: None,
            machine_detection_timeout: None,
            machine_detection_speech_threshold: None,
            machine_detection_speech_end_threshold: None,
            machine_detection_silence_timeout: None,
            async_amd: None,
            async_amd_status_callback: None,
            async_amd_status_callback_method: None,
        }
    }

    /// The form parameters, in a stable order, repeated names for the event lists.
    pub(crate) fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", self.to.clone()), ("From", self.from.clone())];
        match &self.target {
            CallTarget::Url(url) => form.push(("Url", url.clone())),
            CallTarget::Twiml(twiml) => form.push(("Twiml", twiml.clone())),
            CallTarget::ApplicationSid(sid) => form.push(("ApplicationSid", sid.clone())),
        }
        push_opt(&mut form, "Method", self.method.as_deref());
        push_opt(&mut form, "FallbackUrl", self.fallback_url.as_deref());
        push_opt(&mut form, "FallbackMethod", self.fallback_method.as_deref());
        push_opt(&mut form, "StatusCallback", self.status_callback.as_deref());
        for event in &self.status_callback_events {
            form.push(("StatusCallbackEvent", event.as_str().to_owned()));
        }
        push_opt(&mut form, "StatusCallbackMethod", self.status_callback_method.as_deref());
        push_secs(&mut form, "Timeout", self.timeout);
        push_secs(&mut form, "TimeLimit", self.time_limit);
        push_opt(&mut form, "SendDigits", self.send_digits.as_deref());
        push_opt(&mut form, "CallerId", self.caller_id.as_deref());
        push_bool(&mut form, "Record", self.record);
        push_opt(&mut form, "RecordingChannels", self.recording_channels.as_deref());
        push_opt(&mut form, "RecordingTrack", self.recording_track.as_deref());
        push_opt(&mut form, "RecordingStatusCallback", self.recording_status_callback.as_deref());
        for event in &self.recording_status_callback_events {
            form.push(("RecordingStatusCallbackEvent", event.clone()));
        }
        push_opt(
            &mut form,
            "RecordingStatusCallbackMethod",
            self.recording_status_callback_method.as_deref(),
        );
        push_opt(&mut form, "Trim", self.trim.as_deref());
        if let Some(mode) = self.machine_detection {
            form.push(("MachineDetection", mode.as_str().to_owned()));
        }
        push_secs(&mut form, "MachineDetectionTimeout", self.machine_detection_timeout);
        push_millis(
            &mut form,
            "MachineDetectionSpeechThreshold",
            self.machine_detection_speech_threshold,
        );
        push_millis(
            &mut form,
            "MachineDetectionSpeechEndThreshold",
            self.machine_detection_speech_end_threshold,
        );
        push_millis(
            &mut form,
            "MachineDetectionSilenceTimeout",
            self.machine_detection_silence_timeout,
        );
        push_bool(&mut form, "AsyncAmd", self.async_amd);
        push_opt(&mut form, "AsyncAmdStatusCallback", self.async_amd_status_callback.as_deref());
        push_opt(
            &mut form,
            "AsyncAmdStatusCallbackMethod",
            self.async_amd_status_callback_method.as_deref(),
        );
        form
    }
}

/// New status for a live call (`Status` of `POST …/Calls/{CA}.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallUpdateStatus {
    /// `completed`: hang up, even if the call is in progress.
    Completed,
    /// `canceled`: hang up only if the call is still queued or ringing.
    Canceled,
}

impl CallUpdateStatus {
    /// Twilio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CallUpdateStatus::Completed => "completed",
            CallUpdateStatus::Canceled => "canceled",
        }
    }
}

/// Parameters of `POST …/Calls/{CA}.json`: end a call or redirect it to new TwiML.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpdateCall {
    /// `Status`.
    pub status: Option<CallUpdateStatus>,
    /// `Url`: fetch new TwiML from here.
    pub url: Option<String>,
    /// `Method` for `url`.
    pub method: Option<String>,
    /// `Twiml`: run this TwiML now.
    pub twiml: Option<String>,
    /// `StatusCallback`.
    pub status_callback: Option<String>,
    /// `StatusCallbackMethod`.
    pub status_callback_method: Option<String>,
    /// `TimeLimit`, whole seconds.
    pub time_limit: Option<Duration>,
}

impl UpdateCall {
    /// `Status=completed`: hang up.
    pub fn hang_up() -> Self {
        Self { status: Some(CallUpdateStatus::Completed), ..Self::default() }
    }

    /// `Status=canceled`: stop a call that has not been answered yet.
    pub fn cancel() -> Self {
        Self { status: Some(CallUpdateStatus::Canceled), ..Self::default() }
    }

    /// `Twiml=…`: replace what the call is doing (e.g. `<Dial>` for a transfer).
    pub fn twiml(twiml: impl Into<String>) -> Self {
        Self { twiml: Some(twiml.into()), ..Self::default() }
    }

    /// `Url=…`: fetch new TwiML from `url`.
    pub fn redirect(url: impl Into<String>) -> Self {
        Self { url: Some(url.into()), ..Self::default() }
    }

    pub(crate) fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut form = Vec::new();
        if let Some(status) = self.status {
            form.push(("Status", status.as_str().to_owned()));
        }
        push_opt(&mut form, "Url", self.url.as_deref());
        push_opt(&mut form, "Method", self.method.as_deref());
        push_opt(&mut form, "Twiml", self.twiml.as_deref());
        push_opt(&mut form, "StatusCallback", self.status_callback.as_deref());
        push_opt(&mut form, "StatusCallbackMethod", self.status_callback_method.as_deref());
        push_secs(&mut form, "TimeLimit", self.time_limit);
        form
    }
}

/// Parameters of `POST …/Messages.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateMessage {
    /// `To`.
    pub to: String,
    /// `From` (one of `from` / `messaging_service_sid` is required).
    pub from: Option<String>,
    /// `MessagingServiceSid`.
    pub messaging_service_sid: Option<String>,
    /// `Body` (required unless `media_urls` is set).
    pub body: Option<String>,
    /// `MediaUrl`, one parameter each.
    pub media_urls: Vec<String>,
    /// `StatusCallback`.
    pub status_callback: Option<String>,
}

impl CreateMessage {
    /// A text message from one of the account's numbers.
    pub fn new(to: impl Into<String>, from: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            from: Some(from.into()),
            messaging_service_sid: None,
            body: Some(body.into()),
            media_urls: Vec::new(),
            status_callback: None,
        }
    }

    pub(crate) fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", self.to.clone())];
        push_opt(&mut form, "From", self.from.as_deref());
        push_opt(&mut form, "MessagingServiceSid", self.messaging_service_sid.as_deref());
        push_opt(&mut form, "Body", self.body.as_deref());
        for media_url in &self.media_urls {
            form.push(("MediaUrl", media_url.clone()));
        }
        push_opt(&mut form, "StatusCallback", self.status_callback.as_deref());
        form
    }
}

/// One `Recording` resource (`…/Recordings/{RE}.json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Recording {
    /// `RE…` SID.
    pub sid: String,
    /// `AC…` SID of the owning account.
    pub account_sid: String,
    /// The recorded call.
    #[serde(default)]
    pub call_sid: Option<String>,
    /// `in-progress`, `paused`, `stopped`, `processing`, `completed`, `absent`, `deleted`.
    pub status: String,
    /// 1 or 2.
    #[serde(default)]
    pub channels: Option<u8>,
    /// `StartCallRecordingAPI`, `DialVerb`, `OutboundAPI`, …
    #[serde(default)]
    pub source: Option<String>,
    /// Whole seconds as a string (`-1` while in progress).
    #[serde(default)]
    pub duration: Option<String>,
    /// RFC 2822 start time.
    #[serde(default)]
    pub start_time: Option<String>,
    /// Path of this resource, relative to the API host.
    #[serde(default)]
    pub uri: Option<String>,
}

/// Parameters of `POST …/Calls/{CA}/Recordings.json`: start recording a live call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateRecording {
    /// `RecordingChannels`: `mono` or `dual` (Twilio's default is `mono`).
    pub channels: Option<String>,
    /// `RecordingTrack`: `inbound`, `outbound` or `both` (the default).
    pub track: Option<String>,
    /// `RecordingStatusCallback`.
    pub status_callback: Option<String>,
    /// `RecordingStatusCallbackEvent`s (`in-progress`, `completed`, `absent`).
    pub status_callback_events: Vec<String>,
    /// `RecordingStatusCallbackMethod`.
    pub status_callback_method: Option<String>,
    /// `Trim`: `trim-silence` or `do-not-trim`.
    pub trim: Option<String>,
}

impl CreateRecording {
    /// A dual-channel recording of both tracks, untrimmed, whose `completed` and `absent`
    /// statuses are POSTed to `status_callback`.
    pub fn dual_channel(status_callback: impl Into<String>) -> Self {
        Self {
            channels: Some("dual".to_owned()),
            track: Some("both".to_owned()),
            status_callback: Some(status_callback.into()),
            status_callback_events: vec!["completed".to_owned(), "absent".to_owned()],
            status_callback_method: Some("POST".to_owned()),
            trim: Some("do-not-trim".to_owned()),
        }
    }

    pub(crate) fn to_form(&self) -> Vec<(&'static str, String)> {
        let mut form = Vec::new();
        push_opt(&mut form, "RecordingChannels", self.channels.as_deref());
        push_opt(&mut form, "RecordingTrack", self.track.as_deref());
        push_opt(&mut form, "RecordingStatusCallback", self.status_callback.as_deref());
        for event in &self.status_callback_events {
            form.push(("RecordingStatusCallbackEvent", event.clone()));
        }
        push_opt(
            &mut form,
            "RecordingStatusCallbackMethod",
            self.status_callback_method.as_deref(),
        );
        push_opt(&mut form, "Trim", self.trim.as_deref());
        form
    }
}

fn push_opt(form: &mut Vec<(&'static str, String)>, name: &'static str, value: Option<&str>) {
    if let Some(value) = value {
        form.push((name, value.to_owned()));
    }
}

/// Booleans go on the wire as `true` / `false` (twilio-python `serialize.boolean_to_string`).
fn push_bool(form: &mut Vec<(&'static str, String)>, name: &'static str, value: Option<bool>) {
    if let Some(value) = value {
        form.push((name, value.to_string()));
    }
}

fn push_secs(form: &mut Vec<(&'static str, String)>, name: &'static str, value: Option<Duration>) {
    if let Some(value) = value {
        form.push((name, value.as_secs().to_string()));
    }
}

fn push_millis(
    form: &mut Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<Duration>,
) {
    if let Some(value) = value {
        form.push((name, value.as_millis().to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_call_form_repeats_status_callback_event_per_event() {
        let mut create =
            CreateCall::new("+15550001111", "+15550002222", CallTarget::Url("https://x/v".into()));
        create.status_callback = Some("https://x/status".into());
        create.status_callback_events = vec![CallStatusEvent::Initiated, CallStatusEvent::Answered];
        create.timeout = Some(Duration::from_secs(25));
        create.machine_detection = Some(MachineDetection::DetectMessageEnd);
        create.machine_detection_speech_threshold = Some(Duration::from_millis(2400));
        create.async_amd = Some(true);
        let form = create.to_form();
        let events: Vec<&str> = form
            .iter()
            .filter(|(name, _)| *name == "StatusCallbackEvent")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(events, ["initiated", "answered"]);
        assert!(form.contains(&("Timeout", "25".to_owned())));
        assert!(form.contains(&("MachineDetection", "DetectMessageEnd".to_owned())));
        assert!(form.contains(&("MachineDetectionSpeechThreshold", "2400".to_owned())));
        assert!(form.contains(&("AsyncAmd", "true".to_owned())));
        assert!(!form.iter().any(|(name, _)| *name == "Record"));
    }

    #[test]
    fn number_update_sends_only_the_fields_that_are_set_and_empty_strings_clear() {
        let update = IncomingPhoneNumberUpdate {
            voice_url: Some("https://x/voice".into()),
            sms_url: Some(String::new()),
            ..IncomingPhoneNumberUpdate::default()
        };
        assert_eq!(
            update.to_form(),
            vec![("VoiceUrl", "https://x/voice".to_owned()), ("SmsUrl", String::new())]
        );
    }

    #[test]
    fn unknown_call_status_decodes_as_unknown() {
        let status: CallStatus = serde_json::from_str("\"teleported\"").unwrap();
        assert_eq!(status, CallStatus::Unknown);
        let status: CallStatus = serde_json::from_str("\"in-progress\"").unwrap();
        assert_eq!(status, CallStatus::InProgress);
        assert!(!status.is_final());
    }

    #[test]
    fn message_status_decodes_snake_case_values() {
        let status: MessageStatus = serde_json::from_str("\"partially_delivered\"").unwrap();
        assert_eq!(status, MessageStatus::PartiallyDelivered);
    }

    #[test]
    fn incoming_number_decodes_twilio_sample_with_nulls() {
        // Sample response of twilio-python tests/integration/api/v2010/account/test_incoming_phone_number.py.
        let json = r#"{"account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","address_requirements":"none","api_version":"2010-04-01","beta":false,"capabilities":{"mms":true,"sms":false,"voice":true},"date_created":"Thu, 30 Jul 2015 23:19:04 +0000","date_updated":"Thu, 30 Jul 2015 23:19:04 +0000","emergency_status":"Active","emergency_address_sid":"ADaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","friendly_name":"(808) 925-5327","phone_number":"+18089255327","sid":"PNaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","sms_application_sid":"","sms_fallback_method":"POST","sms_fallback_url":"","sms_method":"POST","sms_url":"","status_callback":"","status_callback_method":"POST","trunk_sid":null,"uri":"/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/IncomingPhoneNumbers/PNaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json","voice_application_sid":"","voice_caller_id_lookup":false,"voice_fallback_method":"POST","voice_fallback_url":null,"voice_method":"POST","voice_url":null}"#;
        let number: IncomingPhoneNumber = serde_json::from_str(json).unwrap();
        assert_eq!(number.phone_number, "+18089255327");
        assert_eq!(number.voice_url, None);
        assert_eq!(number.sms_url.as_deref(), Some(""));
        assert!(number.capabilities.unwrap().voice);
    }
}
