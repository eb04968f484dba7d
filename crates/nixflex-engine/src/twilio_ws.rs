//! The Twilio Media Streams wire format (docs/protocols.md#twilio-media-streams), decoded and encoded without
//! serde on the per-frame path: inbound `media` payloads are base64-decoded into a reused buffer,
//! outbound messages are written into one pre-sized string.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A message from Twilio.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// First message: the socket is up.
    Connected,
    /// The stream started.
    Start(StartInfo),
    /// Caller audio: μ-law bytes were decoded into the buffer given to [`decode`].
    Media {
        /// Milliseconds since the stream started, per Twilio (`None` when the message had no
        /// readable `timestamp`).
        timestamp_ms: Option<u64>,
    },
    /// A keypad digit.
    Dtmf {
        /// `0-9`, `*`, `#`.
        digit: char,
    },
    /// A mark we sent has been played (or cleared).
    Mark {
        /// Its name.
        name: String,
    },
    /// The call or stream ended.
    Stop,
    /// An event we do not know (ignored, as Twilio may add events).
    Other,
}

/// The `start` message's payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StartInfo {
    /// `MZ…`.
    pub stream_sid: String,
    /// `CA…`.
    pub call_sid: String,
    /// `AC…`.
    pub account_sid: String,
    /// The `<Parameter>`s of the TwiML.
    pub custom_parameters: Map<String, Value>,
    /// e.g. `audio/x-mulaw`.
    pub encoding: String,
    /// e.g. 8000.
    pub sample_rate: u32,
}

/// A message that is not valid Media Streams JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed media-stream message: {0}")]
pub struct DecodeError(pub String);

#[derive(Deserialize)]
struct Envelope<'a> {
    event: &'a str,
    #[serde(borrow, default)]
    media: Option<MediaBody<'a>>,
    #[serde(default)]
    start: Option<StartBody>,
    #[serde(default)]
    dtmf: Option<DtmfBody>,
    #[serde(default)]
    mark: Option<MarkBody>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(default)]
    track: Option<&'a str>,
    #[serde(default)]
    timestamp: Option<&'a str>,
    payload: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    stream_sid: String,
    #[serde(default)]
    call_sid: String,
    #[serde(default)]
    account_sid: String,
    #[serde(default)]
    custom_parameters: Map<String, Value>,
    #[serde(default)]
    media_format: Option<MediaFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    #[serde(default)]
    encoding: String,
    #[serde(default)]
    sample_rate: u32,
}

#[derive(Deserialize)]
struct DtmfBody {
    digit: String,
}

#[derive(Deserialize)]
struct MarkBody {
    name: String,
}

/// Decodes one text frame. For `media`, the audio is written into `audio` (cleared first).
///
/// # Errors
/// [`DecodeError`] for invalid JSON, a missing field or bad base64.
pub fn decode(text: &str, audio: &mut Vec<u8>) -> Result<Inbound, DecodeError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))?;
    match envelope.event {
        "connected" => Ok(Inbound::Connected),
        "start" => {
            let start = envelope.start.ok_or_else(|| DecodeError("start without start".into()))?;
            let format = start
                .media_format
                .unwrap_or(MediaFormat { encoding: String::new(), sample_rate: 0 });
            Ok(Inbound::Start(StartInfo {
                stream_sid: start.stream_sid,
                call_sid: start.call_sid,
                account_sid: start.account_sid,
                custom_parameters: start.custom_parameters,
                encoding: format.encoding,
                sample_rate: format.sample_rate,
            }))
        }
        "media" => {
            let media = envelope.media.ok_or_else(|| DecodeError("media without media".into()))?;
            if media.track.is_some_and(|t| t != "inbound" && t != "inbound_track") {
                return Ok(Inbound::Other);
            }
            audio.clear();
            B64.decode_vec(media.payload, audio).map_err(|e| DecodeError(e.to_string()))?;
            let timestamp_ms = media.timestamp.and_then(|t| t.parse().ok());
            Ok(Inbound::Media { timestamp_ms })
        }
        "dtmf" => {
            let dtmf = envelope.dtmf.ok_or_else(|| DecodeError("dtmf without dtmf".into()))?;
            let digit =
                dtmf.digit.chars().next().ok_or_else(|| DecodeError("empty digit".into()))?;
            Ok(Inbound::Dtmf { digit })
        }
        "mark" => {
            let mark = envelope.mark.ok_or_else(|| DecodeError("mark without mark".into()))?;
            Ok(Inbound::Mark { name: mark.name })
        }
        "stop" => Ok(Inbound::Stop),
        _ => Ok(Inbound::Other),
    }
}

/// `{"event":"media","streamSid":…,"media":{"payload":…}}` for μ-law bytes.
pub fn media(stream_sid: &str, mulaw: &[u8]) -> String {
    let mut out = String::with_capacity(64 + stream_sid.len() + mulaw.len().div_ceil(3) * 4);
    out.push_str(r#"{"event":"media","streamSid":""#);
    out.push_str(stream_sid);
    out.push_str(r#"","media":{"payload":""#);
    B64.encode_string(mulaw, &mut out);
    out.push_str(r#""}}"#);
    out
}

/// `{"event":"mark","streamSid":…,"mark":{"name":…}}`.
pub fn mark(stream_sid: &str, name: &str) -> String {
    serde_json::json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})
        .to_string()
}

/// `{"event":"clear","streamSid":…}`.
pub fn clear(stream_sid: &str) -> String {
    serde_json::json!({"event": "clear", "streamSid": stream_sid}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilios_documented_messages_decode() {
        let mut audio = Vec::new();
        assert_eq!(
            decode(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#, &mut audio)
                .unwrap(),
            Inbound::Connected
        );
        let start = decode(
            r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"streamSid":"MZ1","accountSid":"AC1","callSid":"CA1","tracks":["inbound"],"customParameters":{"call_id":"call_1","token":"t"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#,
            &mut audio,
        )
        .unwrap();
        let Inbound::Start(info) = start else { panic!("not a start") };
        assert_eq!(
            (info.stream_sid.as_str(), info.call_sid.as_str(), info.sample_rate),
            ("MZ1", "CA1", 8000)
        );
        assert_eq!(info.custom_parameters["call_id"], "call_1");
        let media = decode(
            r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"40","payload":"//8A"}}"#,
            &mut audio,
        )
        .unwrap();
        assert_eq!(media, Inbound::Media { timestamp_ms: Some(40) });
        assert_eq!(audio, vec![0xFF, 0xFF, 0x00]);
        let untimed = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8A"}}"#;
        assert_eq!(decode(untimed, &mut audio).unwrap(), Inbound::Media { timestamp_ms: None });
        assert_eq!(decode(r#"{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"7"}}"#, &mut audio).unwrap(), Inbound::Dtmf { digit: '7' });
        assert_eq!(
            decode(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"1-2"}}"#, &mut audio)
                .unwrap(),
            Inbound::Mark { name: "1-2".into() }
        );
        assert_eq!(
            decode(
                r#"{"event":"stop","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#,
                &mut audio
            )
            .unwrap(),
            Inbound::Stop
        );
        assert_eq!(decode(r#"{"event":"future-thing"}"#, &mut audio).unwrap(), Inbound::Other);
        assert!(decode("not json", &mut audio).is_err());
        assert!(decode(r#"{"event":"media","media":{"payload":"***"}}"#, &mut audio).is_err());
    }

    #[test]
    fn outbound_messages_have_twilios_shape() {
        let text = media("MZ1", &[0xFF, 0xFF, 0x00]);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"event": "media", "streamSid": "MZ1", "media": {"payload": "//8A"}})
        );
        let value: Value = serde_json::from_str(&mark("MZ1", "3-1")).unwrap();
        assert_eq!(value["mark"]["name"], "3-1");
        let value: Value = serde_json::from_str(&clear("MZ1")).unwrap();
        assert_eq!(value, serde_json::json!({"event": "clear", "streamSid": "MZ1"}));
    }
}
