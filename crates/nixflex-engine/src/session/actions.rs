//! What the agent asks for during a call with action tags — end the call, transfer it, text the
//! caller — as one [`Command`] type with one handler ([`Session::on_command`]). Turn tasks turn
//! action tags into commands; the actor handles them in order with the agent's speech. New
//! actions plug in here without touching the actor loop. Custom functions are not tags: they
//! are offered as LLM tools and run inside the turn (`crate::functions`), because their result
//! must come back to the model before it goes on.
//!
//! What the prompt advertises follows what this handler can do ([`tools_enabled`]): an action
//! the server cannot carry out is never offered to the model, so callers are not told "I've sent
//! it" or "transferring you" when nothing happens. If the model uses one anyway, the handler says
//! so honestly: the next LLM request carries a note that it was not carried out.

use futures::Sink;
use nixflex_core::agent::AgentSettings;
use tracing::Instrument as _;

use super::{EndReason, Session};
use crate::prompt::ToolsEnabled;
use crate::tags::Action;

/// Something the agent asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// `[END_CALL]`: finish speaking, then hang up.
    EndCall,
    /// `[TRANSFER:…]`: hand the caller over (`None`: the agent's `transfer_number`).
    Transfer {
        /// The destination.
        number: Option<String>,
        /// The legacy `[TRANSFER:+E164:warm]` form.
        warm: bool,
    },
    /// `[SEND_SMS: …]`: text the caller.
    SendSms {
        /// The message.
        text: String,
    },
    /// A tag the engine recognises but does nothing with (`[WAIT:]`, malformed tags).
    Ignored {
        /// The tag's kind, for the log.
        kind: &'static str,
    },
}

impl Command {
    /// The command an action tag asks for.
    pub(crate) fn from_tag(action: Action) -> Self {
        match action {
            Action::EndCall => Self::EndCall,
            Action::Transfer { number, warm } => Self::Transfer { number, warm },
            Action::SendSms { text } => Self::SendSms { text },
            other @ (Action::Wait { .. } | Action::Malformed { .. }) => {
                Self::Ignored { kind: other.kind() }
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::EndCall => "end_call",
            Self::Transfer { .. } => "transfer",
            Self::SendSms { .. } => "send_sms",
            Self::Ignored { kind } => kind,
        }
    }
}

/// What this server can carry out during a call. Transfers are offered to agents with a
/// `transfer_number` or `func_cold_transfer` (`ToolsEnabled::for_agent`); in-call texts go
/// through the SMS service (docs/sms.md#in-call-texts).
const CAN_TRANSFER: bool = true;
const CAN_SEND_SMS: bool = true;
/// The longest text (Twilio's limit).
const MAX_SMS_CHARS: usize = 1600;

/// The action tags the prompt offers an agent: those its settings allow *and* this server can
/// carry out.
pub(crate) fn tools_enabled(agent: &AgentSettings) -> ToolsEnabled {
    let configured = ToolsEnabled::for_agent(agent);
    ToolsEnabled {
        end_call: configured.end_call,
        transfer: configured.transfer && CAN_TRANSFER,
        send_sms: configured.send_sms && CAN_SEND_SMS,
        functions: configured.functions,
    }
}

impl<W> Session<W>
where
    W: Sink<String> + Unpin + Send,
{
    /// The one handler of everything the agent asks for.
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::EndCall if self.setup.agent.func_end_call => {
                self.end_after_playout = Some(EndReason::Completed);
            }
            Command::EndCall => {
                tracing::info!(message = "[END_CALL] ignored: func_end_call is off.");
            }
            Command::Ignored { kind } => {
                tracing::info!(message = "Action tag ignored.", action = kind);
            }
            Command::SendSms { text }
                if tools_enabled(&self.setup.agent).send_sms && self.engine.sms().is_some() =>
            {
                self.send_sms(text);
            }
            Command::Transfer { number, warm } => self.request_transfer(number, warm),
            unavailable @ Command::SendSms { .. } => {
                let kind = unavailable.kind();
                tracing::info!(
                    message = "The agent asked for an action this server cannot carry out yet.",
                    action = kind
                );
                self.action_notes.push(
                    "[System note: the text message you asked for was NOT sent; texting is not available on this line. Do not tell the caller a message was sent.]",
                );
            }
        }
    }

    /// `[SEND_SMS: …]`: texts the caller from the call's number, off the audio path, once per
    /// tag (its send key names the call and the tag's order), through the one sending path that
    /// checks the account's opt-out list. The outcome is in the SMS log; the call goes on.
    fn send_sms(&mut self, text: String) {
        let Some(sms) = self.engine.sms().cloned() else { return };
        self.texts_sent += 1;
        let body: String = text.trim().chars().take(MAX_SMS_CHARS).collect();
        if body.is_empty() {
            return;
        }
        let out = crate::sms::Outgoing {
            from: self.setup.number.clone(),
            agent_id: Some(self.setup.agent_id.clone()),
            to: self.setup.caller_number().to_owned(),
            body,
            reply_context: None,
            metadata: None,
            source: nixflex_core::sms::SmsSource::InCall,
            send_key: Some(format!("in_call:{}:{}", self.setup.call.call_id, self.texts_sent)),
        };
        self.engine.spawn_tracked(
            async move {
                match sms.send(out).await {
                    Ok(message) => {
                        tracing::info!(message = "In-call text sent.", message_id = %message.message_id);
                    }
                    Err(error) => {
                        tracing::warn!(message = "In-call text not sent.", error = %error);
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// The notes about unavailable actions since the last caller turn, joined (and cleared).
    pub(super) fn take_action_notes(&mut self) -> Option<String> {
        if self.action_notes.is_empty() {
            return None;
        }
        let notes = self.action_notes.join("\n");
        self.action_notes.clear();
        Some(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_actions_this_server_can_carry_out_are_advertised() {
        let mut agent = AgentSettings {
            transfer_number: Some("+447446466000".to_owned()),
            func_cold_transfer: true,
            incall_sms_enabled: true,
            ..AgentSettings::default()
        };
        let tools = tools_enabled(&agent);
        assert!(tools.end_call);
        assert!(tools.transfer, "an agent with a transfer number is offered transfers");
        assert!(tools.send_sms, "in-call texts, for agents that enable them");
        agent.incall_sms_enabled = false;
        assert!(!tools_enabled(&agent).send_sms);
        agent.func_end_call = false;
        assert!(!tools_enabled(&agent).end_call);
        let without = AgentSettings::default();
        assert!(!tools_enabled(&without).transfer, "no number, no transfer offered");
    }

    #[test]
    fn action_tags_become_commands() {
        assert_eq!(Command::from_tag(Action::EndCall), Command::EndCall);
        assert_eq!(
            Command::from_tag(Action::Transfer { number: Some("+1".into()), warm: false }),
            Command::Transfer { number: Some("+1".into()), warm: false }
        );
        assert_eq!(
            Command::from_tag(Action::SendSms { text: "hi".into() }),
            Command::SendSms { text: "hi".into() }
        );
        assert_eq!(
            Command::from_tag(Action::Wait { seconds: 1.0 }),
            Command::Ignored { kind: "wait" }
        );
    }
}
