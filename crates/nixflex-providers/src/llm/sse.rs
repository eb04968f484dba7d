//! Turns a server-sent-event body into an [`LlmStream`] through a per-vendor parser.
//!
//! SSE framing (events split across network chunks, `\r\n`, comments) is handled by
//! `eventsource-stream`; the parser sees whole events and returns the [`LlmEvent`]s each one
//! produces. The stream ends after the parser reports that the completion finished, after the
//! first error, or when the body ends (which is an error unless the parser accepts it).

use std::collections::VecDeque;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use nixflex_pipeline::ProviderError;
use nixflex_pipeline::llm::{LlmEvent, LlmStream};

/// A vendor's interpretation of SSE events.
pub(crate) trait SseParser: Send + 'static {
    /// Handles one event (`event` is the SSE event name, empty when absent).
    fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<LlmEvent>, ProviderError>;

    /// Whether the completion is over (no more events are read after this).
    fn is_finished(&self) -> bool;

    /// The body ended before [`SseParser::is_finished`]: the final events, or an error.
    fn on_eof(&mut self) -> Result<Vec<LlmEvent>, ProviderError>;
}

struct State<S, P> {
    events: S,
    parser: P,
    pending: VecDeque<LlmEvent>,
    done: bool,
}

/// The [`LlmStream`] of an SSE body.
pub(crate) fn llm_stream<B, P>(provider: &'static str, body: B, parser: P) -> LlmStream
where
    B: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
    P: SseParser,
{
    let state = State {
        events: Box::pin(body.eventsource()),
        parser,
        pending: VecDeque::new(),
        done: false,
    };
    LlmStream::new(futures::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.done {
                return None;
            }
            let result = match state.events.next().await {
                Some(Ok(event)) => state.parser.on_event(&event.event, &event.data),
                Some(Err(EventStreamError::Transport(error))) => Err(error),
                Some(Err(error)) => Err(ProviderError::protocol(format!(
                    "{provider}: invalid event stream: {error}"
                ))),
                None => {
                    state.done = true;
                    state.parser.on_eof()
                }
            };
            match result {
                Ok(events) => {
                    state.pending.extend(events);
                    if state.parser.is_finished() {
                        state.done = true;
                    }
                }
                Err(error) => {
                    state.done = true;
                    state.pending.clear();
                    return Some((Err(error), state));
                }
            }
        }
    }))
}
