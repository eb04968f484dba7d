//! TwiML documents the engine returns to Twilio's voice and messaging webhooks.
//!
//! The output is byte-for-byte what the official helper library's `VoiceResponse.to_xml()` /
//! `MessagingResponse.to_xml()` produce (twilio-python `twilio/twiml/__init__.py`): the XML
//! declaration, attributes in alphabetical order, empty elements written `<Name />`, and the
//! escaping of Python's `xml.etree.ElementTree`. One deliberate difference: characters that XML 1.0
//! forbids (most C0 controls) are dropped instead of being copied into an invalid document.
//!
//! Build a document with [`Response`] and its verb methods, or with the one-verb shortcuts
//! ([`hangup`], [`reject`], [`say`], …). This module only builds strings; it does not know which
//! verbs are legal in which webhook (e.g. `<Message>` belongs in a messaging response).

use std::fmt::Write as _;
use std::time::Duration;

/// The XML declaration twilio-python puts in front of every document.
pub const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Content type to send TwiML with.
pub const CONTENT_TYPE: &str = "text/xml";

/// Why `<Reject>` refuses a call: Twilio plays a busy signal or a "not in service" message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// `reason="busy"`: the caller hears a busy signal.
    Busy,
    /// `reason="rejected"` (Twilio's default): the caller hears a not-in-service tone.
    Rejected,
}

impl RejectReason {
    fn as_str(self) -> &'static str {
        match self {
            RejectReason::Busy => "busy",
            RejectReason::Rejected => "rejected",
        }
    }
}

/// A bidirectional media stream: `<Connect [action]><Stream …><Parameter …/></Stream></Connect>`
/// (docs/protocols.md#twiml).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectStream {
    /// `<Connect action>`: where Twilio asks for more TwiML once the stream ends.
    pub action: Option<String>,
    /// `<Stream url>`: the `wss://` URL of our media socket; must carry no query string.
    pub url: String,
    /// `<Stream name>`: a name unique within the call.
    pub name: Option<String>,
    /// `<Stream statusCallback>`: receives stream-started/stopped/failed events.
    pub status_callback: Option<String>,
    /// `<Stream statusCallbackMethod>`: `GET` or `POST`.
    pub status_callback_method: Option<String>,
    /// `<Parameter name value/>` pairs, surfaced as `start.customParameters`, in order.
    pub parameters: Vec<(String, String)>,
}

/// Options of `<Say>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SayOptions {
    /// `voice`, e.g. `alice` or `Polly.Joanna`.
    pub voice: Option<String>,
    /// `language`, e.g. `en-US`.
    pub language: Option<String>,
}

/// Options of `<Dial>` around a single `<Number>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialOptions {
    /// `action`: where Twilio posts the dial outcome and asks for more TwiML.
    pub action: Option<String>,
    /// `method` for `action`.
    pub method: Option<String>,
    /// `callerId`: the number shown to the called party.
    pub caller_id: Option<String>,
    /// `timeout`: how long to ring, whole seconds.
    pub timeout: Option<Duration>,
    /// `timeLimit`: maximum call length, whole seconds.
    pub time_limit: Option<Duration>,
    /// `<Number url>`: TwiML for the called party once it answers, before the two are
    /// connected (Twilio requests it on the called party's leg).
    pub number_url: Option<String>,
}

/// Options of `<Dial>` around a `<Conference>` (https://www.twilio.com/docs/voice/twiml/conference).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceOptions {
    /// `<Dial action>`: requested when this participant leaves the conference.
    pub action: Option<String>,
    /// `<Dial method>` for `action`.
    pub method: Option<String>,
    /// `startConferenceOnEnter` (Twilio's default is true): false makes this participant wait
    /// on hold (`waitUrl`) until one with true joins.
    pub start_on_enter: Option<bool>,
    /// `endConferenceOnExit` (default false): the conference ends for everyone when this
    /// participant leaves.
    pub end_on_exit: Option<bool>,
    /// `beep` (default true): the tone when someone joins or leaves.
    pub beep: Option<bool>,
    /// `waitUrl`: what waiting participants hear (Twilio's default is hold music; empty
    /// means silence).
    pub wait_url: Option<String>,
}

/// A TwiML `<Response>` under construction. Verbs appear in the order they are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    verbs: Vec<Element>,
}

impl Response {
    /// An empty `<Response />`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `<Say>text</Say>`.
    #[must_use]
    pub fn say(self, text: &str) -> Self {
        self.say_with(text, &SayOptions::default())
    }

    /// Appends `<Say voice language>text</Say>`.
    #[must_use]
    pub fn say_with(mut self, text: &str, options: &SayOptions) -> Self {
        let mut say = Element::new("Say").text(text);
        say.attr_opt("voice", options.voice.as_deref());
        say.attr_opt("language", options.language.as_deref());
        self.verbs.push(say);
        self
    }

    /// Appends `<Hangup />`.
    #[must_use]
    pub fn hangup(mut self) -> Self {
        self.verbs.push(Element::new("Hangup"));
        self
    }

    /// Appends `<Reject reason="…" />`.
    #[must_use]
    pub fn reject(mut self, reason: RejectReason) -> Self {
        let mut reject = Element::new("Reject");
        reject.attr("reason", reason.as_str());
        self.verbs.push(reject);
        self
    }

    /// Appends `<Message>body</Message>` (messaging responses).
    #[must_use]
    pub fn message(mut self, body: &str) -> Self {
        self.verbs.push(Element::new("Message").text(body));
        self
    }

    /// Appends `<Connect><Stream>…</Stream></Connect>`.
    #[must_use]
    pub fn connect_stream(mut self, stream: &ConnectStream) -> Self {
        let mut stream_element = Element::new("Stream");
        stream_element.attr("url", &stream.url);
        stream_element.attr_opt("name", stream.name.as_deref());
        stream_element.attr_opt("statusCallback", stream.status_callback.as_deref());
        stream_element.attr_opt("statusCallbackMethod", stream.status_callback_method.as_deref());
        for (name, value) in &stream.parameters {
            let mut parameter = Element::new("Parameter");
            parameter.attr("name", name);
            parameter.attr("value", value);
            stream_element.children.push(parameter);
        }
        let mut connect = Element::new("Connect");
        connect.attr_opt("action", stream.action.as_deref());
        connect.children.push(stream_element);
        self.verbs.push(connect);
        self
    }

    /// Appends `<Dial …><Number>number</Number></Dial>`.
    #[must_use]
    pub fn dial_number(mut self, number: &str, options: &DialOptions) -> Self {
        let mut dial = Element::new("Dial");
        dial.attr_opt("action", options.action.as_deref());
        dial.attr_opt("method", options.method.as_deref());
        dial.attr_opt("callerId", options.caller_id.as_deref());
        if let Some(timeout) = options.timeout {
            dial.attr("timeout", &timeout.as_secs().to_string());
        }
        if let Some(time_limit) = options.time_limit {
            dial.attr("timeLimit", &time_limit.as_secs().to_string());
        }
        let mut called = Element::new("Number");
        called.attr_opt("url", options.number_url.as_deref());
        dial.children.push(called.text(number));
        self.verbs.push(dial);
        self
    }

    /// Appends `<Dial …><Conference …>name</Conference></Dial>`.
    #[must_use]
    pub fn dial_conference(mut self, name: &str, options: &ConferenceOptions) -> Self {
        let flag = |value: bool| if value { "true" } else { "false" };
        let mut dial = Element::new("Dial");
        dial.attr_opt("action", options.action.as_deref());
        dial.attr_opt("method", options.method.as_deref());
        let mut room = Element::new("Conference");
        room.attr_opt("startConferenceOnEnter", options.start_on_enter.map(flag));
        room.attr_opt("endConferenceOnExit", options.end_on_exit.map(flag));
        room.attr_opt("beep", options.beep.map(flag));
        room.attr_opt("waitUrl", options.wait_url.as_deref());
        dial.children.push(room.text(name));
        self.verbs.push(dial);
        self
    }

    /// Appends `<Play>url</Play>`.
    #[must_use]
    pub fn play(mut self, url: &str) -> Self {
        self.verbs.push(Element::new("Play").text(url));
        self
    }

    /// Renders the document, XML declaration included.
    pub fn to_xml(&self) -> String {
        let mut response = Element::new("Response");
        response.children.clone_from(&self.verbs);
        let mut out = String::from(XML_DECLARATION);
        response.render(&mut out);
        out
    }
}

/// `<Response />`: Twilio does nothing more (for a message webhook: no reply).
pub fn empty() -> String {
    Response::new().to_xml()
}

/// `<Response><Hangup /></Response>`.
pub fn hangup() -> String {
    Response::new().hangup().to_xml()
}

/// `<Response><Reject reason="…" /></Response>`.
pub fn reject(reason: RejectReason) -> String {
    Response::new().reject(reason).to_xml()
}

/// `<Response><Say>text</Say></Response>`.
pub fn say(text: &str) -> String {
    Response::new().say(text).to_xml()
}

/// `<Response><Message>body</Message></Response>`.
pub fn message(body: &str) -> String {
    Response::new().message(body).to_xml()
}

/// `<Response><Connect><Stream>…</Stream></Connect></Response>`.
pub fn connect_stream(stream: &ConnectStream) -> String {
    Response::new().connect_stream(stream).to_xml()
}

/// `<Response><Dial …><Number>number</Number></Dial></Response>`.
pub fn dial_number(number: &str, options: &DialOptions) -> String {
    Response::new().dial_number(number, options).to_xml()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    name: &'static str,
    attributes: Vec<(&'static str, String)>,
    text: Option<String>,
    children: Vec<Element>,
}

impl Element {
    fn new(name: &'static str) -> Self {
        Self { name, attributes: Vec::new(), text: None, children: Vec::new() }
    }

    fn text(mut self, text: &str) -> Self {
        self.text = Some(text.to_owned());
        self
    }

    fn attr(&mut self, name: &'static str, value: &str) {
        self.attributes.push((name, value.to_owned()));
    }

    fn attr_opt(&mut self, name: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.attr(name, value);
        }
    }

    fn render(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        // twilio-python sorts attribute names before writing them.
        let mut attributes: Vec<&(&'static str, String)> = self.attributes.iter().collect();
        attributes.sort_by_key(|(name, _)| *name);
        for (name, value) in attributes {
            // Writing into a String cannot fail.
            let _ = write!(out, " {name}=\"");
            escape_attribute(value, out);
            out.push('"');
        }
        // ElementTree omits empty text (twilio-python only sets `text` when it is truthy).
        let text = self.text.as_deref().filter(|text| !text.is_empty());
        if text.is_none() && self.children.is_empty() {
            out.push_str(" />");
            return;
        }
        out.push('>');
        if let Some(text) = text {
            escape_text(text, out);
        }
        for child in &self.children {
            child.render(out);
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

/// Characters XML 1.0 allows (production `Char`); everything else is dropped.
fn is_xml_char(character: char) -> bool {
    matches!(character,
        '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Text escaping of ElementTree's `_escape_cdata`.
fn escape_text(text: &str, out: &mut String) {
    for character in text.chars().filter(|character| is_xml_char(*character)) {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            other => out.push(other),
        }
    }
}

/// Attribute escaping of ElementTree's `_escape_attrib` (Python ≥ 3.9): whitespace other than the
/// space is written as a character reference so that parsers do not normalise it away.
fn escape_attribute(value: &str, out: &mut String) {
    for character in value.chars().filter(|character| is_xml_char(*character)) {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#09;"),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected strings were produced by twilio-python 9.x `VoiceResponse().to_xml()`.

    #[test]
    fn empty_response_is_a_self_closing_element() {
        assert_eq!(empty(), r#"<?xml version="1.0" encoding="UTF-8"?><Response />"#);
    }

    #[test]
    fn hangup_response_matches_the_helper_library() {
        assert_eq!(
            hangup(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>"#
        );
    }

    #[test]
    fn reject_response_carries_the_reason() {
        assert_eq!(
            reject(RejectReason::Busy),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy" /></Response>"#
        );
        assert!(reject(RejectReason::Rejected).contains(r#"<Reject reason="rejected" />"#));
    }

    #[test]
    fn say_escapes_markup_in_text() {
        assert_eq!(
            say("Tom & Jerry <3 \"quotes\""),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Tom &amp; Jerry &lt;3 \
             \"quotes\"</Say></Response>"
        );
    }

    #[test]
    fn say_with_options_sorts_attributes() {
        let options = SayOptions {
            voice: Some("Polly.Joanna".to_owned()),
            language: Some("en-US".to_owned()),
        };
        assert_eq!(
            Response::new().say_with("Hi", &options).to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="en-US" voice="Polly.Joanna">Hi</Say></Response>"#
        );
    }

    #[test]
    fn dial_conference_matches_the_helper_library() {
        let hold = ConferenceOptions {
            action: Some("https://a/t?x=1&y=2".to_owned()),
            method: Some("POST".to_owned()),
            start_on_enter: Some(false),
            end_on_exit: Some(true),
            beep: Some(false),
            wait_url: None,
        };
        assert_eq!(
            Response::new().dial_conference("nixflex-transfer-call_1", &hold).to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://a/t?x=1&amp;y=2" method="POST"><Conference beep="false" endConferenceOnExit="true" startConferenceOnEnter="false">nixflex-transfer-call_1</Conference></Dial></Response>"#
        );
        let join = ConferenceOptions {
            start_on_enter: Some(true),
            end_on_exit: Some(true),
            beep: Some(false),
            ..ConferenceOptions::default()
        };
        assert_eq!(
            Response::new().play("https://a/w").dial_conference("room", &join).to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Play>https://a/w</Play><Dial><Conference beep="false" endConferenceOnExit="true" startConferenceOnEnter="true">room</Conference></Dial></Response>"#
        );
    }

    #[test]
    fn message_response_matches_the_helper_library() {
        assert_eq!(
            message("Thanks! We'll call you back."),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks! We'll call you back.</Message></Response>"#
        );
    }

    #[test]
    fn connect_stream_matches_the_helper_library_and_escapes_attributes() {
        let stream = ConnectStream {
            action: Some("https://a/b?x=1&y=2".to_owned()),
            url: "wss://m/ws".to_owned(),
            status_callback: Some("https://s".to_owned()),
            status_callback_method: Some("POST".to_owned()),
            parameters: vec![("call_id".to_owned(), "c\"<1>&".to_owned())],
            ..ConnectStream::default()
        };
        assert_eq!(
            connect_stream(&stream),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect action="https://a/b?x=1&amp;y=2"><Stream statusCallback="https://s" statusCallbackMethod="POST" url="wss://m/ws"><Parameter name="call_id" value="c&quot;&lt;1&gt;&amp;" /></Stream></Connect></Response>"#
        );
    }

    #[test]
    fn connect_stream_without_action_or_parameters_is_minimal() {
        let stream = ConnectStream { url: "wss://m/ws".to_owned(), ..ConnectStream::default() };
        assert_eq!(
            connect_stream(&stream),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://m/ws" /></Connect></Response>"#
        );
    }

    #[test]
    fn dial_number_matches_the_helper_library() {
        let options = DialOptions {
            action: Some("https://x".to_owned()),
            caller_id: Some("+1555".to_owned()),
            timeout: Some(Duration::from_secs(20)),
            ..DialOptions::default()
        };
        assert_eq!(
            dial_number("+1666", &options),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://x" callerId="+1555" timeout="20"><Number>+1666</Number></Dial></Response>"#
        );
    }

    #[test]
    fn dial_number_carries_the_called_partys_url_on_the_number() {
        let options = DialOptions {
            number_url: Some("https://x/answered?a=1&b=2".to_owned()),
            ..DialOptions::default()
        };
        assert_eq!(
            dial_number("+1666", &options),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number url="https://x/answered?a=1&amp;b=2">+1666</Number></Dial></Response>"#
        );
    }

    #[test]
    fn play_escapes_its_url() {
        assert_eq!(
            Response::new().play("https://x/w?a=1&b=2").to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Play>https://x/w?a=1&amp;b=2</Play></Response>"#
        );
    }

    #[test]
    fn verbs_are_rendered_in_the_order_they_were_added() {
        assert_eq!(
            Response::new().say("Bye").hangup().to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>Bye</Say><Hangup /></Response>"#
        );
    }

    #[test]
    fn attribute_whitespace_becomes_character_references() {
        let stream = ConnectStream {
            url: "wss://m/ws".to_owned(),
            parameters: vec![("note".to_owned(), "a\nb\tc\rd".to_owned())],
            ..ConnectStream::default()
        };
        assert!(connect_stream(&stream).contains(r#"value="a&#10;b&#09;c&#13;d""#));
    }

    #[test]
    fn characters_forbidden_by_xml_are_dropped() {
        assert_eq!(
            say("a\u{0}b\u{1b}c\u{FFFE}d"),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>abcd</Say></Response>"#
        );
    }

    #[test]
    fn empty_say_text_is_written_as_an_empty_element() {
        assert_eq!(
            say(""),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say /></Response>"#
        );
    }
}
