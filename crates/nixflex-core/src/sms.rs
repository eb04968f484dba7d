//! SMS messages (docs/sms.md): the record of one text, its status order, segment counting and the
//! opt-out keywords that never reach the LLM.

use chrono::{DateTime, Utc};

use crate::call::Direction;
use crate::ids::{AccountId, AgentId};

/// The hard cap on a message's length (Twilio's concatenation limit).
pub const MAX_SMS_CHARS: usize = 1600;

/// The cap on `context.reply_context`.
pub const MAX_REPLY_CONTEXT_CHARS: usize = 2000;

/// What a `HELP` text is answered with (fixed; never the LLM).
pub const HELP_TEXT: &str =
    "Reply STOP to stop receiving messages, START to receive them again. Msg&data rates may apply.";

/// A message's delivery status. Twilio's callbacks may arrive out of order; a status only ever
/// moves forward along [`SmsStatus::rank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmsStatus {
    /// Logged, not yet handed to the carrier.
    Pending,
    /// Accepted by the carrier, waiting to be sent.
    Queued,
    /// Being sent.
    Sending,
    /// Handed to the network.
    Sent,
    /// The network confirmed delivery.
    Delivered,
    /// The network could not deliver it.
    Undelivered,
    /// It could not be sent.
    Failed,
    /// An inbound message.
    Received,
}

impl SmsStatus {
    /// Every status, in order.
    pub const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::Delivered,
        Self::Undelivered,
        Self::Failed,
        Self::Received,
    ];

    /// The API and database string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Received => "received",
        }
    }

    /// Parses our string.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == raw)
    }

    /// Maps a Twilio `MessageStatus` to ours (`accepted`/`scheduled` are `queued`; `read` is
    /// `delivered`; `canceled` is `failed`); `None` for statuses we do not track.
    pub fn from_twilio(raw: &str) -> Option<Self> {
        match raw {
            "accepted" | "scheduled" | "queued" => Some(Self::Queued),
            "sending" => Some(Self::Sending),
            "sent" => Some(Self::Sent),
            "delivered" | "read" => Some(Self::Delivered),
            "undelivered" => Some(Self::Undelivered),
            "failed" | "canceled" => Some(Self::Failed),
            "received" | "receiving" => Some(Self::Received),
            _ => None,
        }
    }

    /// Position in the lifecycle: a callback whose rank is not above the stored one changes
    /// nothing, so late or repeated callbacks never move a status backwards. The final statuses
    /// share the top rank: the first one reported stays.
    pub fn rank(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Queued => 1,
            Self::Sending => 2,
            Self::Sent => 3,
            Self::Delivered | Self::Undelivered | Self::Failed | Self::Received => 4,
        }
    }

    /// Whether no further status will come.
    pub fn is_final(self) -> bool {
        self.rank() == 4
    }
}

/// Why a message was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmsSource {
    /// `POST /v1/sms`.
    Api,
    /// The agent's answer to an inbound text.
    Reply,
    /// The fixed answer to `HELP`.
    Help,
    /// The post-call text.
    PostCall,
    /// `[SEND_SMS:]` during a call.
    InCall,
    /// A text the customer sent.
    Inbound,
    /// One recipient's text of an SMS campaign (docs/sms.md#campaigns).
    Campaign,
}

impl SmsSource {
    /// Every source.
    pub const ALL: &'static [Self] = &[
        Self::Api,
        Self::Reply,
        Self::Help,
        Self::PostCall,
        Self::InCall,
        Self::Inbound,
        Self::Campaign,
    ];

    /// The API and database string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Reply => "reply",
            Self::Help => "help",
            Self::PostCall => "post_call",
            Self::InCall => "in_call",
            Self::Inbound => "inbound",
            Self::Campaign => "campaign",
        }
    }

    /// Parses our string.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == raw)
    }
}

/// One text, inbound or outbound.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsMessage {
    /// `sms_` + 24 hex.
    pub message_id: String,
    /// Owner.
    pub account_id: AccountId,
    /// The agent answering the thread (kept after the agent is deleted).
    pub agent_id: Option<AgentId>,
    /// Inbound (customer → business) or outbound.
    pub direction: Direction,
    /// Our imported number.
    pub business_number: String,
    /// The customer's number (the thread key with `business_number`).
    pub customer_number: String,
    /// The text.
    pub body: String,
    /// Delivery status.
    pub status: SmsStatus,
    /// Twilio's `SM…` SID once the carrier has it.
    pub twilio_sid: Option<String>,
    /// Segments the carrier bills.
    pub segments: i64,
    /// Twilio's error code when it failed.
    pub error_code: Option<i64>,
    /// Twilio's error text when it failed.
    pub error_message: Option<String>,
    /// `context.reply_context` of the send (used when the recipient replies within 24 h).
    pub reply_context: Option<String>,
    /// Why it was written.
    pub source: SmsSource,
    /// What makes a send happen once (`reply:{inbound id}`, `post_call:{call id}`, …).
    pub send_key: Option<String>,
    /// Caller-supplied metadata (JSON object) echoed back.
    pub metadata: Option<serde_json::Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl SmsMessage {
    /// The sender.
    pub fn from_number(&self) -> &str {
        match self.direction {
            Direction::Inbound => &self.customer_number,
            Direction::Outbound => &self.business_number,
        }
    }

    /// The recipient.
    pub fn to_number(&self) -> &str {
        match self.direction {
            Direction::Inbound => &self.business_number,
            Direction::Outbound => &self.customer_number,
        }
    }
}

/// The GSM 03.38 basic character set (and its extension table, whose characters take two
/// septets).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How many segments the carrier splits `text` into: GSM-7 texts carry 160 septets in one
/// segment or 153 per segment when concatenated; anything outside GSM-7 is sent as UCS-2, 70
/// UTF-16 units alone or 67 per segment.
pub fn segments(text: &str) -> i64 {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if GSM_BASIC.contains(c) {
            septets += 1;
        } else if GSM_EXTENDED.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (units, single, multi) =
        if gsm { (septets, 160, 153) } else { (text.encode_utf16().count(), 70, 67) };
    let count = if units <= single { 1 } else { units.div_ceil(multi) };
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A keyword an inbound text may be (docs/sms.md#opt-outs): matched on the whole text, trimmed,
/// case-insensitively, with trailing punctuation ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, REVOKE.
    OptOut,
    /// START, UNSTOP, YES.
    OptIn,
    /// HELP, INFO.
    Help,
}

impl Keyword {
    /// The keyword `text` is, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        let word = text.trim().trim_end_matches(['.', '!', '?']).trim().to_ascii_uppercase();
        match word.as_str() {
            "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "OPTOUT"
            | "REVOKE" => Some(Self::OptOut),
            "START" | "UNSTOP" | "YES" => Some(Self::OptIn),
            "HELP" | "INFO" => Some(Self::Help),
            _ => None,
        }
    }
}

/// Renders an SMS campaign's `message_template` for one recipient (docs/sms.md#campaigns):
/// `{{name}}` (spaces inside the braces allowed) becomes `vars[name]`, or nothing when the
/// recipient has no such variable; braces around anything that is not a name stay as written.
/// Substituted values are not scanned again.
pub fn render_template(
    template: &str,
    vars: &std::collections::BTreeMap<String, String>,
) -> String {
    let is_name = |name: &str| {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            rest = &rest[open..];
            break;
        };
        let name = after[..close].trim();
        if is_name(name) {
            out.push_str(vars.get(name).map(String::as_str).unwrap_or_default());
            rest = &after[close + 2..];
        } else {
            out.push_str("{{");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_templates_fill_variables_and_blank_missing_ones() {
        let vars: std::collections::BTreeMap<String, String> =
            [("name".to_owned(), "Ann".to_owned()), ("when".to_owned(), "{{name}}".to_owned())]
                .into_iter()
                .collect();
        assert_eq!(
            render_template("Hi {{name}}, see you {{ when }}.", &vars),
            "Hi Ann, see you {{name}}."
        );
        assert_eq!(render_template("Hi {{missing}}!", &vars), "Hi !");
        assert_eq!(render_template("{{ not a name }} {{", &vars), "{{ not a name }} {{");
        assert_eq!(render_template("no placeholders", &vars), "no placeholders");
    }

    #[test]
    fn segments_follow_gsm7_and_ucs2_limits() {
        assert_eq!(segments(""), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // `€` takes two septets.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        // Any non-GSM character makes the whole text UCS-2.
        assert_eq!(segments(&format!("{}ł", "a".repeat(69))), 1);
        assert_eq!(segments(&format!("{}ł", "a".repeat(70))), 2);
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }

    #[test]
    fn keywords_match_whole_texts_only() {
        assert_eq!(Keyword::parse(" stop "), Some(Keyword::OptOut));
        assert_eq!(Keyword::parse("Unsubscribe."), Some(Keyword::OptOut));
        assert_eq!(Keyword::parse("STOPALL"), Some(Keyword::OptOut));
        assert_eq!(Keyword::parse("quit"), Some(Keyword::OptOut));
        assert_eq!(Keyword::parse("Start"), Some(Keyword::OptIn));
        assert_eq!(Keyword::parse("unstop"), Some(Keyword::OptIn));
        assert_eq!(Keyword::parse("help?"), Some(Keyword::Help));
        assert_eq!(Keyword::parse("please stop calling"), None);
        assert_eq!(Keyword::parse("Can I book for Friday?"), None);
    }

    #[test]
    fn statuses_never_rank_backwards_from_final() {
        assert!(SmsStatus::Queued.rank() < SmsStatus::Sent.rank());
        assert!(SmsStatus::Sent.rank() < SmsStatus::Delivered.rank());
        assert_eq!(SmsStatus::Delivered.rank(), SmsStatus::Undelivered.rank());
        assert_eq!(SmsStatus::from_twilio("accepted"), Some(SmsStatus::Queued));
        assert_eq!(SmsStatus::from_twilio("read"), Some(SmsStatus::Delivered));
        assert_eq!(SmsStatus::from_twilio("bogus"), None);
        for status in SmsStatus::ALL {
            assert_eq!(SmsStatus::parse(status.as_str()), Some(*status));
        }
    }
}
