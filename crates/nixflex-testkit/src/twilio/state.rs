//! The emulator's in-memory Twilio: accounts, numbers, calls, messages, the request log and the
//! injected faults, plus how each resource renders as Twilio's JSON.
//!
//! JSON shapes follow the response samples of Twilio's API reference and of twilio-python's
//! generated tests (`tests/integration/api/v2010/account/test_incoming_phone_number.py`,
//! `test_call.py`, `test_message.py`), and a real `Messages.json` answer quoted in public code.
//! Everything here is synchronous and runs under the emulator's mutex: no I/O, no `.await`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::twilio::recordings::{RecordingCallback, RecordingState, Tap, Tape, callback_params};

/// Path prefix of Twilio's REST API v2010.
pub(crate) const API_PREFIX: &str = "/2010-04-01";

/// An account the emulator accepts requests for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedAccount {
    /// `AC` + 32 lowercase hex digits.
    pub sid: String,
    /// 32 lowercase hex digits.
    pub auth_token: String,
}

/// An incoming phone number as the emulator stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberState {
    /// `PN` + 32 hex.
    pub sid: String,
    /// Owning account.
    pub account_sid: String,
    /// E.164 number.
    pub phone_number: String,
    /// `friendly_name`.
    pub friendly_name: String,
    /// `voice_url` (`None` renders as `null`, as for a number that was never configured).
    pub voice_url: Option<String>,
    /// `voice_method`.
    pub voice_method: String,
    /// `voice_fallback_url`.
    pub voice_fallback_url: Option<String>,
    /// `voice_fallback_method`.
    pub voice_fallback_method: String,
    /// `voice_application_sid` (`""` when unset).
    pub voice_application_sid: String,
    /// `voice_receive_mode`.
    pub voice_receive_mode: String,
    /// `voice_caller_id_lookup`.
    pub voice_caller_id_lookup: bool,
    /// `sms_url`.
    pub sms_url: String,
    /// `sms_method`.
    pub sms_method: String,
    /// `sms_fallback_url`.
    pub sms_fallback_url: String,
    /// `sms_fallback_method`.
    pub sms_fallback_method: String,
    /// `sms_application_sid` (`""` when unset).
    pub sms_application_sid: String,
    /// `status_callback`.
    pub status_callback: String,
    /// `status_callback_method`.
    pub status_callback_method: String,
    /// `trunk_sid` (`None` renders as `null`).
    pub trunk_sid: Option<String>,
    /// Creation time.
    pub date_created: DateTime<Utc>,
    /// Last update time.
    pub date_updated: DateTime<Utc>,
}

impl NumberState {
    pub(crate) fn new(account_sid: &str, phone_number: &str, sid: String) -> Self {
        let now = Utc::now();
        Self {
            sid,
            account_sid: account_sid.to_owned(),
            phone_number: phone_number.to_owned(),
            friendly_name: format_number(phone_number),
            voice_url: None,
            voice_method: "POST".to_owned(),
            voice_fallback_url: None,
            voice_fallback_method: "POST".to_owned(),
            voice_application_sid: String::new(),
            voice_receive_mode: "voice".to_owned(),
            voice_caller_id_lookup: false,
            sms_url: String::new(),
            sms_method: "POST".to_owned(),
            sms_fallback_url: String::new(),
            sms_fallback_method: "POST".to_owned(),
            sms_application_sid: String::new(),
            status_callback: String::new(),
            status_callback_method: "POST".to_owned(),
            trunk_sid: None,
            date_created: now,
            date_updated: now,
        }
    }

    /// Applies the update parameters Twilio accepts; unknown names are ignored, as Twilio does.
    pub(crate) fn apply_update(&mut self, form: &[(String, String)]) {
        for (name, value) in form {
            let value = value.clone();
            match name.as_str() {
                "FriendlyName" => self.friendly_name = value,
                "VoiceUrl" => self.voice_url = Some(value),
                "VoiceMethod" => self.voice_method = value.to_ascii_uppercase(),
                "VoiceFallbackUrl" => self.voice_fallback_url = Some(value),
                "VoiceFallbackMethod" => self.voice_fallback_method = value.to_ascii_uppercase(),
                "VoiceApplicationSid" => self.voice_application_sid = value,
                "VoiceReceiveMode" => self.voice_receive_mode = value,
                "VoiceCallerIdLookup" => self.voice_caller_id_lookup = value == "true",
                "SmsUrl" => self.sms_url = value,
                "SmsMethod" => self.sms_method = value.to_ascii_uppercase(),
                "SmsFallbackUrl" => self.sms_fallback_url = value,
                "SmsFallbackMethod" => self.sms_fallback_method = value.to_ascii_uppercase(),
                "SmsApplicationSid" => self.sms_application_sid = value,
                "StatusCallback" => self.status_callback = value,
                "StatusCallbackMethod" => self.status_callback_method = value.to_ascii_uppercase(),
                "TrunkSid" => self.trunk_sid = if value.is_empty() { None } else { Some(value) },
                _ => {}
            }
        }
        self.date_updated = Utc::now();
    }

    pub(crate) fn uri(&self) -> String {
        format!("{API_PREFIX}/Accounts/{}/IncomingPhoneNumbers/{}.json", self.account_sid, self.sid)
    }

    /// The resource JSON, field for field as in Twilio's API reference sample.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "account_sid": self.account_sid,
            "address_requirements": "none",
            "address_sid": null,
            "api_version": "2010-04-01",
            "beta": false,
            "capabilities": {"voice": true, "sms": true, "mms": true, "fax": false},
            "date_created": self.date_created.to_rfc2822(),
            "date_updated": self.date_updated.to_rfc2822(),
            "emergency_status": "Inactive",
            "emergency_address_sid": null,
            "emergency_address_status": "unregistered",
            "friendly_name": self.friendly_name,
            "identity_sid": null,
            "origin": "twilio",
            "phone_number": self.phone_number,
            "sid": self.sid,
            "sms_application_sid": self.sms_application_sid,
            "sms_fallback_method": self.sms_fallback_method,
            "sms_fallback_url": self.sms_fallback_url,
            "sms_method": self.sms_method,
            "sms_url": self.sms_url,
            "status_callback": self.status_callback,
            "status_callback_method": self.status_callback_method,
            "trunk_sid": self.trunk_sid,
            "uri": self.uri(),
            "voice_application_sid": self.voice_application_sid,
            "voice_caller_id_lookup": self.voice_caller_id_lookup,
            "voice_fallback_method": self.voice_fallback_method,
            "voice_fallback_url": self.voice_fallback_url,
            "voice_method": self.voice_method,
            "voice_url": self.voice_url,
            "bundle_sid": null,
            "voice_receive_mode": self.voice_receive_mode,
            "status": "in-use",
            "type": "local",
            "subresource_uris": {
                "assigned_add_ons": format!(
                    "{API_PREFIX}/Accounts/{}/IncomingPhoneNumbers/{}/AssignedAddOns.json",
                    self.account_sid, self.sid
                ),
            },
        })
    }
}

/// A call as the emulator stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallState {
    /// `CA` + 32 hex.
    pub sid: String,
    /// Owning account.
    pub account_sid: String,
    /// `To`.
    pub to: String,
    /// `From`.
    pub from: String,
    /// Current status (`queued` after creation).
    pub status: String,
    /// `outbound-api` for calls created through the API.
    pub direction: String,
    /// The account's number used as `From`, if it is one.
    pub phone_number_sid: Option<String>,
    /// Every parameter of the create request, in order, repeated names included.
    pub create_params: Vec<(String, String)>,
    /// The parameters of each update request, in order.
    pub updates: Vec<Vec<(String, String)>>,
    /// The last `Url` given (on create or redirect).
    pub url: Option<String>,
    /// The last `Twiml` given (on create or redirect).
    pub twiml: Option<String>,
    /// Creation time.
    pub date_created: DateTime<Utc>,
    /// Last update time.
    pub date_updated: DateTime<Utc>,
    /// When the call ended, for final statuses set by an update.
    pub end_time: Option<DateTime<Utc>>,
}

impl CallState {
    /// Values of a create parameter, in order (e.g. every `StatusCallbackEvent`).
    pub fn create_param_values(&self, name: &str) -> Vec<&str> {
        values_of(&self.create_params, name)
    }

    /// True once the call can no longer change.
    pub fn is_final(&self) -> bool {
        is_final_call_status(&self.status)
    }

    pub(crate) fn uri(&self) -> String {
        format!("{API_PREFIX}/Accounts/{}/Calls/{}.json", self.account_sid, self.sid)
    }

    /// The resource JSON, field for field as in twilio-python's `test_call.py` samples.
    pub(crate) fn to_json(&self) -> Value {
        let base = format!("{API_PREFIX}/Accounts/{}/Calls", self.account_sid);
        let sub = |name: &str| format!("{base}/{}/{name}.json", self.sid);
        json!({
            "account_sid": self.account_sid,
            "annotation": null,
            "answered_by": null,
            "api_version": "2010-04-01",
            "caller_name": null,
            "date_created": self.date_created.to_rfc2822(),
            "date_updated": self.date_updated.to_rfc2822(),
            "direction": self.direction,
            "duration": self.end_time.map(|_| "0"),
            "end_time": self.end_time.map(|time| time.to_rfc2822()),
            "forwarded_from": null,
            "from": self.from,
            "from_formatted": format_number(&self.from),
            "group_sid": null,
            "parent_call_sid": null,
            "phone_number_sid": self.phone_number_sid,
            "price": null,
            "price_unit": "USD",
            "sid": self.sid,
            "start_time": null,
            "status": self.status,
            "subresource_uris": {
                "notifications": sub("Notifications"),
                "recordings": sub("Recordings"),
                "payments": sub("Payments"),
                "events": sub("Events"),
                "siprec": sub("Siprec"),
                "streams": sub("Streams"),
                "user_defined_message_subscriptions": sub("UserDefinedMessageSubscriptions"),
                "user_defined_messages": sub("UserDefinedMessages"),
            },
            "to": self.to,
            "to_formatted": format_number(&self.to),
            "trunk_sid": null,
            "uri": self.uri(),
            "queue_time": "0",
        })
    }
}

/// A message as the emulator stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// `SM` + 32 hex.
    pub sid: String,
    /// Owning account.
    pub account_sid: String,
    /// `To`.
    pub to: String,
    /// `From` (empty when only `MessagingServiceSid` was given).
    pub from: String,
    /// `Body`.
    pub body: String,
    /// `MessagingServiceSid`, if given.
    pub messaging_service_sid: Option<String>,
    /// Current status (`queued` after creation, `accepted` with a Messaging Service).
    pub status: String,
    /// Every parameter of the create request, in order.
    pub create_params: Vec<(String, String)>,
    /// Creation time.
    pub date_created: DateTime<Utc>,
    /// `StatusCallback` of the create request, if any.
    pub status_callback: Option<String>,
    /// Twilio's error code once the message failed or was undelivered.
    pub error_code: Option<u32>,
    /// `outbound-api` for created messages, `inbound` for texts the emulator delivered to a
    /// number.
    pub direction: String,
}

impl MessageState {
    pub(crate) fn uri(&self) -> String {
        format!("{API_PREFIX}/Accounts/{}/Messages/{}.json", self.account_sid, self.sid)
    }

    /// The resource JSON, as in a real `Messages.json` answer.
    pub(crate) fn to_json(&self) -> Value {
        let num_media = values_of(&self.create_params, "MediaUrl").len();
        // GSM-7 single segment is 160 characters; good enough for an emulator.
        let num_segments = self.body.chars().count().div_ceil(160).max(1);
        json!({
            "sid": self.sid,
            "date_created": self.date_created.to_rfc2822(),
            "date_updated": self.date_created.to_rfc2822(),
            "date_sent": null,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": if self.from.is_empty() { Value::Null } else { Value::from(self.from.clone()) },
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status": self.status,
            "num_segments": num_segments.to_string(),
            "num_media": num_media.to_string(),
            "direction": self.direction,
            "api_version": "2010-04-01",
            "price": null,
            "price_unit": "USD",
            "error_code": self.error_code,
            "error_message": null,
            "uri": self.uri(),
            "subresource_uris": {
                "media": format!(
                    "{API_PREFIX}/Accounts/{}/Messages/{}/Media.json",
                    self.account_sid, self.sid
                ),
            },
        })
    }
}

/// One request the emulator received, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Decoded form body parameters, in order, repeated names included.
    pub form: Vec<(String, String)>,
    /// User name of the HTTP Basic credentials, if any were sent.
    pub auth_user: Option<String>,
    /// True when the credentials matched an account.
    pub authenticated: bool,
    /// Status the emulator answered with.
    pub status: u16,
}

impl RecordedRequest {
    /// First value of form parameter `name`.
    pub fn form_param(&self, name: &str) -> Option<&str> {
        values_of(&self.form, name).first().copied()
    }

    /// Every value of form parameter `name`, in order.
    pub fn form_params(&self, name: &str) -> Vec<&str> {
        values_of(&self.form, name)
    }

    /// First value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        values_of(&self.query, name).first().copied()
    }
}

/// An injected failure: requests whose path contains `path_contains` get `status`.
#[derive(Debug, Clone)]
pub(crate) struct FailureRule {
    pub(crate) path_contains: String,
    /// `None`: every matching request fails until cleared.
    pub(crate) remaining: Option<u32>,
    pub(crate) status: u16,
    pub(crate) code: Option<u32>,
}

/// An injected delay before the emulator handles a matching request.
#[derive(Debug, Clone)]
pub(crate) struct DelayRule {
    pub(crate) path_contains: String,
    pub(crate) remaining: u32,
    pub(crate) delay: Duration,
}

/// Everything the emulator knows, behind one mutex.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) accounts: Vec<EmulatedAccount>,
    pub(crate) numbers: Vec<NumberState>,
    pub(crate) calls: Vec<CallState>,
    pub(crate) messages: Vec<MessageState>,
    pub(crate) recordings: Vec<RecordingState>,
    /// Taps of the live calls the caller emulator placed through this emulator, by call SID.
    pub(crate) taps: HashMap<String, Arc<Tap>>,
    /// Recordings finished while set capture nothing (`absent`).
    pub(crate) lose_recordings: bool,
    pub(crate) requests: Vec<RecordedRequest>,
    /// How the next created messages' deliveries end, in order.
    pub(crate) message_outcomes: std::collections::VecDeque<crate::twilio::MessageOutcome>,
    /// How created messages' deliveries end when no scripted outcome is left.
    pub(crate) default_message_outcome: Option<crate::twilio::MessageOutcome>,
    /// Deliveries to play once the current request has been answered.
    pub(crate) due_deliveries: Vec<(String, crate::twilio::MessageOutcome)>,
    pub(crate) failures: Vec<FailureRule>,
    pub(crate) delays: Vec<DelayRule>,
    /// Paths (substrings) of requests that are applied but whose answer is lost, once each.
    pub(crate) lost_answers: Vec<String>,
    /// Scripted callees of outbound calls, by the number called.
    pub(crate) callees: HashMap<String, crate::twilio::callee::Callee>,
    /// Calls just created whose callee is scripted; the handler starts them.
    pub(crate) pending_dials: Vec<crate::twilio::callee::Dial>,
    /// Conference rooms by name (`<Dial><Conference>`).
    pub(crate) conferences: HashMap<String, ConferenceRoom>,
}

/// A conference room: who is in it, whether it has started (a participant with
/// `startConferenceOnEnter` entered) and whether it has ended (one with `endConferenceOnExit`
/// left).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConferenceRoom {
    /// Call SIDs of the participants in the room now.
    pub(crate) participants: Vec<String>,
    pub(crate) started: bool,
    pub(crate) ended: bool,
}

impl State {
    pub(crate) fn account(&self, sid: &str) -> Option<&EmulatedAccount> {
        self.accounts.iter().find(|account| account.sid == sid)
    }

    /// Adds a call the caller emulator is placing (direction `inbound`) and returns the tap its
    /// media loop watches.
    pub(crate) fn add_live_call(&mut self, call: CallState) -> Arc<Tap> {
        let tap = Arc::new(Tap::default());
        self.taps.insert(call.sid.clone(), Arc::clone(&tap));
        self.calls.retain(|known| known.sid != call.sid);
        self.calls.push(call);
        tap
    }

    /// Taps a call that already exists (an answered outbound call), so recordings started on it
    /// capture its audio; returns the tap.
    pub(crate) fn tap_call(&mut self, call_sid: &str) -> Arc<Tap> {
        let tap = Arc::new(Tap::default());
        self.taps.insert(call_sid.to_owned(), Arc::clone(&tap));
        tap
    }

    /// Moves a live call to `status` (unless it already ended).
    pub(crate) fn set_live_call_status(&mut self, call_sid: &str, status: &str) {
        if let Some(call) = self.calls.iter_mut().find(|call| call.sid == call_sid)
            && !call.is_final()
        {
            let now = Utc::now();
            call.status = status.to_owned();
            call.date_updated = now;
            if call.is_final() {
                call.end_time = Some(now);
            }
        }
    }

    /// A live call ended: it is `completed` (if nothing ended it before), and each of its
    /// recordings in progress is finished from `tape` — `completed` with its WAV, or `absent`
    /// when no audio was captured. Returns the status callbacks to send.
    pub(crate) fn end_live_call(
        &mut self,
        call_sid: &str,
        tape: Option<&Tape>,
    ) -> Vec<RecordingCallback> {
        self.set_live_call_status(call_sid, "completed");
        self.taps.remove(call_sid);
        let now = Utc::now();
        let mut callbacks = Vec::new();
        for recording in &mut self.recordings {
            if recording.call_sid != call_sid || recording.status != "in-progress" {
                continue;
            }
            recording.date_updated = now;
            match tape.filter(|tape| tape.samples() > 0 && !self.lose_recordings) {
                Some(tape) => {
                    recording.status = "completed".to_owned();
                    recording.duration = Some(tape.duration_secs());
                    recording.wav = Some(tape.to_wav(recording.channels));
                }
                None => {
                    recording.status = "absent".to_owned();
                    recording.duration = Some(0);
                }
            }
            let wanted = recording.status_callback_events.contains(&recording.status);
            let token = self
                .accounts
                .iter()
                .find(|account| account.sid == recording.account_sid)
                .map(|account| account.auth_token.clone());
            if let (Some(url), Some(auth_token), true) =
                (recording.status_callback.clone(), token, wanted)
            {
                callbacks.push(RecordingCallback {
                    url,
                    method: recording.status_callback_method.clone(),
                    auth_token,
                    params: callback_params(recording),
                });
            }
        }
        callbacks
    }

    /// Takes the first failure rule matching `path`, consuming one use of a counted rule.
    pub(crate) fn take_failure(&mut self, path: &str) -> Option<(u16, Option<u32>)> {
        let index = self.failures.iter().position(|rule| path.contains(&rule.path_contains))?;
        let rule = &mut self.failures[index];
        let outcome = (rule.status, rule.code);
        if let Some(remaining) = rule.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.failures.remove(index);
            }
        }
        Some(outcome)
    }

    /// Whether the answer to this request is to be lost (consumes the rule).
    pub(crate) fn take_lost_answer(&mut self, path: &str) -> bool {
        match self.lost_answers.iter().position(|rule| path.contains(rule.as_str())) {
            Some(index) => {
                self.lost_answers.remove(index);
                true
            }
            None => false,
        }
    }

    /// Takes the first delay rule matching `path`, consuming one use.
    pub(crate) fn take_delay(&mut self, path: &str) -> Option<Duration> {
        let index = self.delays.iter().position(|rule| path.contains(&rule.path_contains))?;
        let rule = &mut self.delays[index];
        let delay = rule.delay;
        rule.remaining = rule.remaining.saturating_sub(1);
        if rule.remaining == 0 {
            self.delays.remove(index);
        }
        Some(delay)
    }
}

pub(crate) fn is_final_call_status(status: &str) -> bool {
    matches!(status, "completed" | "busy" | "failed" | "no-answer" | "canceled")
}

pub(crate) fn values_of<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
}

/// `(415) 867-5309` for North American numbers, the number itself otherwise (as Twilio's
/// `friendly_name` and `*_formatted` fields).
pub(crate) fn format_number(phone_number: &str) -> String {
    match phone_number.strip_prefix("+1") {
        Some(national) if national.len() == 10 && national.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &national[..3], &national[3..6], &national[6..])
        }
        _ => phone_number.to_owned(),
    }
}

/// Twilio's `PhoneNumber` list filter: a partial number, `*` matching any one character.
pub(crate) fn phone_number_matches(phone_number: &str, pattern: &str) -> bool {
    let number: Vec<char> = phone_number.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    if pattern.is_empty() {
        return true;
    }
    number.windows(pattern.len()).any(|window| {
        window.iter().zip(&pattern).all(|(digit, wanted)| *wanted == '*' || digit == wanted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn north_american_numbers_are_formatted_like_twilio() {
        assert_eq!(format_number("+18089255327"), "(808) 925-5327");
        assert_eq!(format_number("+442071838750"), "+442071838750");
    }

    #[test]
    fn phone_number_filter_matches_partial_numbers_and_wildcards() {
        assert!(phone_number_matches("+15551230001", "+15551230001"));
        assert!(phone_number_matches("+15551230001", "555123"));
        assert!(phone_number_matches("+15551230001", "555***0001"));
        assert!(!phone_number_matches("+15551230001", "+15551230002"));
        assert!(!phone_number_matches("+1555", "+15551230001"));
    }

    #[test]
    fn counted_failures_are_consumed_and_persistent_ones_stay() {
        let mut state = State::default();
        state.failures.push(FailureRule {
            path_contains: "Calls".into(),
            remaining: Some(2),
            status: 429,
            code: Some(20429),
        });
        assert_eq!(state.take_failure("/x/Calls.json"), Some((429, Some(20429))));
        assert_eq!(state.take_failure("/x/Messages.json"), None);
        assert_eq!(state.take_failure("/x/Calls.json"), Some((429, Some(20429))));
        assert_eq!(state.take_failure("/x/Calls.json"), None);
        state.failures.push(FailureRule {
            path_contains: String::new(),
            remaining: None,
            status: 500,
            code: None,
        });
        for _ in 0..3 {
            assert_eq!(state.take_failure("/any"), Some((500, None)));
        }
    }
}
