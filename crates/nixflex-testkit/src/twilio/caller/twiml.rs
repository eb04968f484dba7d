//! Reading the TwiML our server answers with, the way Twilio reads it: a real XML parse
//! (`quick-xml`), entities and character references resolved, attribute values normalised as
//! XML 1.0 says, verbs kept in document order.
//!
//! Only the verbs the caller emulator acts on get their own variant (`<Say>`, `<Hangup>`,
//! `<Reject>`, `<Pause>`, `<Redirect>`, `<Connect><Stream>`); every other verb is kept by name so a
//! test can see it was answered. This module parses only: it does not fetch, run or validate
//! the document against Twilio's nesting rules.

use std::fmt;

use nixflex_providers::twilio::twiml::ConnectStream;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// A parsed TwiML `<Response>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Twiml {
    /// The verbs, in document order.
    pub verbs: Vec<TwimlVerb>,
}

impl Twiml {
    /// The text of every `<Say>`, in order.
    pub fn said(&self) -> Vec<&str> {
        self.verbs
            .iter()
            .filter_map(|verb| match verb {
                TwimlVerb::Say { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The first `<Connect><Stream>`, if any.
    pub fn connect_stream(&self) -> Option<&ConnectStream> {
        self.verbs.iter().find_map(|verb| match verb {
            TwimlVerb::ConnectStream { stream, .. } => Some(stream),
            _ => None,
        })
    }
}

/// One verb of a TwiML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwimlVerb {
    /// `<Say voice language>text</Say>`; the text is trimmed.
    Say {
        /// What Twilio would speak.
        text: String,
        /// The `voice` attribute.
        voice: Option<String>,
        /// The `language` attribute.
        language: Option<String>,
    },
    /// `<Hangup/>`.
    Hangup,
    /// `<Reject reason/>`; `reason` is Twilio's default `rejected` when the attribute is absent.
    Reject {
        /// `busy` or `rejected` (any other value is kept as written).
        reason: String,
    },
    /// `<Pause length/>`, length in whole seconds (Twilio's default is 1).
    Pause {
        /// The `length` attribute, when it is a number.
        length_seconds: Option<u32>,
    },
    /// `<Redirect method>url</Redirect>`.
    Redirect {
        /// The URL, as written.
        url: String,
        /// The `method` attribute.
        method: Option<String>,
    },
    /// `<Connect action method><Stream …><Parameter …/></Stream></Connect>`: a bidirectional
    /// media stream. `stream.action` carries the `<Connect action>`.
    ConnectStream {
        /// The stream, with `<Connect action>` in `stream.action`.
        stream: ConnectStream,
        /// `<Connect method>` for the action request (Twilio's default is `POST`).
        method: Option<String>,
    },
    /// `<Play>url</Play>`.
    Play {
        /// The URL, as written.
        url: String,
    },
    /// `<Dial action method timeout callerId><Number url>number</Number></Dial>` (or the number
    /// as the `<Dial>`'s own text).
    Dial(Dial),
    /// Any other verb, or a `<Connect>` around something else than `<Stream>`.
    Other {
        /// The element name.
        name: String,
    },
}

/// A `<Dial>` to one phone number (https://www.twilio.com/docs/voice/twiml/dial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The number dialled.
    pub number: String,
    /// `action`: requested when the dial ends, with `DialCallStatus`; its TwiML replaces the
    /// document.
    pub action: Option<String>,
    /// `method` for `action` (Twilio's default is `POST`).
    pub method: Option<String>,
    /// `timeout` in seconds (Twilio's default is 30).
    pub timeout_seconds: u32,
    /// `callerId`.
    pub caller_id: Option<String>,
    /// `<Number url>`: requested on the called party's leg when it answers.
    pub number_url: Option<String>,
    /// `<Conference>` instead of a number (then `number` is empty).
    pub conference: Option<Conference>,
}

/// A `<Dial><Conference>` (https://www.twilio.com/docs/voice/twiml/conference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conference {
    /// The room's name.
    pub name: String,
    /// `startConferenceOnEnter` (Twilio's default: true).
    pub start_on_enter: bool,
    /// `endConferenceOnExit` (default: false).
    pub end_on_exit: bool,
    /// `waitUrl`, as written.
    pub wait_url: Option<String>,
}

/// Why a document is not TwiML Twilio could run (Twilio's error 12100, "Document parse
/// failure").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwimlError {
    message: String,
}

impl TwimlError {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

impl fmt::Display for TwimlError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "invalid TwiML: {}", self.message)
    }
}

impl std::error::Error for TwimlError {}

/// Parses a TwiML document.
///
/// # Errors
///
/// When the document is not well-formed XML, or its root element is not `<Response>`, or a
/// `<Stream>` has no `url`.
pub fn parse_twiml(document: &str) -> Result<Twiml, TwimlError> {
    let root = parse_tree(document)?;
    if root.name != "Response" {
        return Err(TwimlError::new(format!(
            "the root element is <{}>, not <Response>",
            root.name
        )));
    }
    let mut verbs = Vec::with_capacity(root.children.len());
    for child in &root.children {
        verbs.push(verb_of(child)?);
    }
    Ok(Twiml { verbs })
}

fn verb_of(element: &Element) -> Result<TwimlVerb, TwimlError> {
    let verb = match element.name.as_str() {
        "Say" => TwimlVerb::Say {
            text: element.text.trim().to_owned(),
            voice: element.attribute("voice"),
            language: element.attribute("language"),
        },
        "Hangup" => TwimlVerb::Hangup,
        "Reject" => TwimlVerb::Reject {
            reason: element.attribute("reason").unwrap_or_else(|| "rejected".to_owned()),
        },
        "Pause" => TwimlVerb::Pause {
            length_seconds: element.attribute("length").and_then(|length| length.parse().ok()),
        },
        "Redirect" => TwimlVerb::Redirect {
            url: element.text.trim().to_owned(),
            method: element.attribute("method"),
        },
        "Connect" => match element.children.iter().find(|child| child.name == "Stream") {
            Some(stream) => TwimlVerb::ConnectStream {
                stream: connect_stream_of(element, stream)?,
                method: element.attribute("method"),
            },
            None => TwimlVerb::Other { name: element.name.clone() },
        },
        "Play" => TwimlVerb::Play { url: element.text.trim().to_owned() },
        "Dial" => {
            let number = element.children.iter().find(|child| child.name == "Number");
            let flag = |room: &Element, name: &str, default: bool| {
                room.attribute(name).map_or(default, |v| v.eq_ignore_ascii_case("true"))
            };
            let conference =
                element.children.iter().find(|child| child.name == "Conference").map(|room| {
                    Conference {
                        name: room.text.trim().to_owned(),
                        start_on_enter: flag(room, "startConferenceOnEnter", true),
                        end_on_exit: flag(room, "endConferenceOnExit", false),
                        wait_url: room.attribute("waitUrl"),
                    }
                });
            if conference.as_ref().is_some_and(|room| room.name.is_empty()) {
                return Err(TwimlError::new("<Conference> has no name"));
            }
            let text = number.map_or(element.text.as_str(), |n| n.text.as_str()).trim();
            if text.is_empty() && conference.is_none() {
                return Err(TwimlError::new("<Dial> has no number"));
            }
            TwimlVerb::Dial(Dial {
                number: text.to_owned(),
                action: element.attribute("action"),
                method: element.attribute("method"),
                timeout_seconds: element
                    .attribute("timeout")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(30),
                caller_id: element.attribute("callerId"),
                number_url: number.and_then(|n| n.attribute("url")),
                conference,
            })
        }
        other => TwimlVerb::Other { name: other.to_owned() },
    };
    Ok(verb)
}

fn connect_stream_of(connect: &Element, stream: &Element) -> Result<ConnectStream, TwimlError> {
    let url = stream
        .attribute("url")
        .filter(|url| !url.trim().is_empty())
        .ok_or_else(|| TwimlError::new("<Stream> has no url"))?;
    let parameters = stream
        .children
        .iter()
        .filter(|child| child.name == "Parameter")
        .filter_map(|parameter| Some((parameter.attribute("name")?, parameter.attribute("value")?)))
        .collect();
    Ok(ConnectStream {
        action: connect.attribute("action"),
        url,
        name: stream.attribute("name"),
        status_callback: stream.attribute("statusCallback"),
        status_callback_method: stream.attribute("statusCallbackMethod"),
        parameters,
    })
}

/// A minimal element tree: enough to read TwiML, which has no mixed content that matters.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    /// The concatenated character data directly inside the element.
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn attribute(&self, name: &str) -> Option<String> {
        self.attributes.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone())
    }
}

fn parse_tree(document: &str) -> Result<Element, TwimlError> {
    let mut reader = Reader::from_str(document);
    // Open elements, innermost last; the document root is the first one closed at depth 0.
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(|error| {
            TwimlError::new(format!("at byte {}: {error}", reader.buffer_position()))
        })?;
        match event {
            Event::Start(start) => open.push(element_of(&start)?),
            Event::Empty(start) => {
                let element = element_of(&start)?;
                close(element, &mut open, &mut root)?;
            }
            Event::End(_) => {
                let element = open.pop().ok_or_else(|| TwimlError::new("unbalanced end tag"))?;
                close(element, &mut open, &mut root)?;
            }
            Event::Text(text) => {
                let content =
                    text.xml10_content().map_err(|error| TwimlError::new(error.to_string()))?;
                push_text(&mut open, &root, &content)?;
            }
            Event::CData(data) => {
                let content = data.decode().map_err(|error| TwimlError::new(error.to_string()))?;
                push_text(&mut open, &root, &content)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    reference
                        .resolve_char_ref()
                        .map_err(|error| TwimlError::new(error.to_string()))?
                        .map(String::from)
                } else {
                    let name =
                        reference.decode().map_err(|error| TwimlError::new(error.to_string()))?;
                    resolve_predefined_entity(&name).map(str::to_owned)
                };
                let resolved =
                    resolved.ok_or_else(|| TwimlError::new("unknown entity reference"))?;
                push_text(&mut open, &root, &resolved)?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !open.is_empty() {
        return Err(TwimlError::new("the document ends inside an element"));
    }
    root.ok_or_else(|| TwimlError::new("the document has no root element"))
}

fn element_of(start: &BytesStart<'_>) -> Result<Element, TwimlError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| TwimlError::new(error.to_string()))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|error| TwimlError::new(error.to_string()))?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Element { name, attributes, ..Element::default() })
}

fn close(
    element: Element,
    open: &mut [Element],
    root: &mut Option<Element>,
) -> Result<(), TwimlError> {
    match open.last_mut() {
        Some(parent) => parent.children.push(element),
        None if root.is_none() => *root = Some(element),
        None => return Err(TwimlError::new("more than one root element")),
    }
    Ok(())
}

fn push_text(open: &mut [Element], root: &Option<Element>, text: &str) -> Result<(), TwimlError> {
    match open.last_mut() {
        Some(element) => element.text.push_str(text),
        // Whitespace around the root element is allowed; anything else is not XML.
        None if text.trim().is_empty() => {}
        None if root.is_some() => return Err(TwimlError::new("text after the root element")),
        None => return Err(TwimlError::new("text before the root element")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nixflex_providers::twilio::twiml::{self, RejectReason};

    use super::*;

    #[test]
    fn a_connect_stream_built_by_the_providers_builder_parses_back_to_the_same_stream() {
        let stream = ConnectStream {
            action: Some("https://a.example/after?x=1&y=2".to_owned()),
            url: "wss://m.example/twilio/stream".to_owned(),
            name: Some("main".to_owned()),
            status_callback: Some("https://a.example/stream-status".to_owned()),
            status_callback_method: Some("POST".to_owned()),
            parameters: vec![
                ("call_id".to_owned(), "c\"<1>&".to_owned()),
                ("note".to_owned(), "a\nb\tc".to_owned()),
            ],
        };
        let document =
            twiml::Response::new().say("Hello & welcome").connect_stream(&stream).to_xml();

        let parsed = parse_twiml(&document).unwrap();

        assert_eq!(parsed.said(), vec!["Hello & welcome"]);
        assert_eq!(parsed.connect_stream(), Some(&stream));
    }

    #[test]
    fn reject_keeps_its_reason_and_defaults_to_rejected() {
        let busy = parse_twiml(&twiml::reject(RejectReason::Busy)).unwrap();
        let bare = parse_twiml("<Response><Reject/></Response>").unwrap();

        assert_eq!(busy.verbs, vec![TwimlVerb::Reject { reason: "busy".to_owned() }]);
        assert_eq!(bare.verbs, vec![TwimlVerb::Reject { reason: "rejected".to_owned() }]);
    }

    #[test]
    fn verbs_keep_document_order_and_unknown_verbs_are_kept_by_name() {
        let document = r#"<?xml version="1.0"?>
            <!-- a comment -->
            <Response>
              <Say voice="alice">  One  </Say>
              <Pause length="2"/>
              <Gather input="speech"><Say>inner</Say></Gather>
              <Redirect method="GET">https://x.example/next</Redirect>
              <Connect><Room>r</Room></Connect>
              <Hangup/>
            </Response>"#;

        let parsed = parse_twiml(document).unwrap();

        assert_eq!(
            parsed.verbs,
            vec![
                TwimlVerb::Say {
                    text: "One".to_owned(),
                    voice: Some("alice".to_owned()),
                    language: None
                },
                TwimlVerb::Pause { length_seconds: Some(2) },
                TwimlVerb::Other { name: "Gather".to_owned() },
                TwimlVerb::Redirect {
                    url: "https://x.example/next".to_owned(),
                    method: Some("GET".to_owned())
                },
                TwimlVerb::Other { name: "Connect".to_owned() },
                TwimlVerb::Hangup,
            ]
        );
    }

    #[test]
    fn a_dial_keeps_its_number_action_timeout_caller_id_and_number_url() {
        let twiml = parse_twiml(
            r#"<Response><Dial action="/t?a=1&amp;b=2" timeout="10" callerId="+1555"><Number url="/ans">+1666</Number></Dial></Response>"#,
        )
        .unwrap();
        assert_eq!(
            twiml.verbs,
            [TwimlVerb::Dial(Dial {
                number: "+1666".to_owned(),
                action: Some("/t?a=1&b=2".to_owned()),
                method: None,
                timeout_seconds: 10,
                caller_id: Some("+1555".to_owned()),
                number_url: Some("/ans".to_owned()),
                conference: None,
            })]
        );
        let bare = parse_twiml("<Response><Dial> +1777 </Dial></Response>").unwrap();
        assert!(
            matches!(&bare.verbs[0], TwimlVerb::Dial(d) if d.number == "+1777" && d.timeout_seconds == 30)
        );
        assert!(parse_twiml("<Response><Dial></Dial></Response>").is_err());
    }

    #[test]
    fn character_references_and_cdata_are_resolved_in_text() {
        let parsed =
            parse_twiml("<Response><Say>caf&#233; &#x41;<![CDATA[<b>]]></Say></Response>").unwrap();

        assert_eq!(parsed.said(), vec!["café A<b>"]);
    }

    #[test]
    fn documents_twilio_could_not_run_are_errors() {
        for document in [
            "",
            "not xml",
            "<Response><Say>unclosed</Response>",
            "<Response></Response><Response></Response>",
            "<Other/>",
            "<Response><Connect><Stream/></Connect></Response>",
            "<Response><Say>&bogus;</Say></Response>",
        ] {
            assert!(parse_twiml(document).is_err(), "accepted {document:?}");
        }
    }

    #[test]
    fn a_dial_to_a_conference_keeps_the_room_and_its_flags_with_twilios_defaults() {
        let twiml = parse_twiml(
            r#"<Response><Dial action="/held"><Conference beep="false" endConferenceOnExit="true" startConferenceOnEnter="false">room-1</Conference></Dial><Dial><Conference>room-2</Conference></Dial></Response>"#,
        )
        .unwrap();
        let rooms: Vec<_> = twiml
            .verbs
            .iter()
            .filter_map(|verb| match verb {
                TwimlVerb::Dial(dial) => dial.conference.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(
            rooms,
            [
                Conference {
                    name: "room-1".to_owned(),
                    start_on_enter: false,
                    end_on_exit: true,
                    wait_url: None
                },
                Conference {
                    name: "room-2".to_owned(),
                    start_on_enter: true,
                    end_on_exit: false,
                    wait_url: None
                },
            ]
        );
        assert!(
            parse_twiml("<Response><Dial><Conference> </Conference></Dial></Response>").is_err()
        );
    }
}
