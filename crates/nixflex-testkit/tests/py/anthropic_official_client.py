"""Drives the Anthropic emulator with the official `anthropic` Python SDK.

Run by tests/anthropic_official_client.rs, which starts the emulator, scripts its replies in
this order, and passes the base URL in NIXFLEX_ANTHROPIC_URL:
  1. text "Hello from the emulator!"   (raw streamed events)
  2. text "Streaming helper works."    (messages.stream helper)
  3. tool call get_weather {"location": "San Francisco, CA", "unit": "celsius"}
  4. text "Not streamed."              (non-streamed request)
  5. HTTP 429                          (RateLimitError expected)
  6. overloaded_error after 1 delta    (error event mid-stream)
  7. text "Let me look." then tool calls get_weather Paris and get_weather Rome (streamed)
  8. text "Sunny in both."             (after the two tool_result blocks, streamed)
  9. (no reply used) a tool_use left without its tool_result: 400
"""

import os
import sys

import json

import anthropic

base_url = os.environ["NIXFLEX_ANTHROPIC_URL"]
client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0, timeout=10)
MODEL = "claude-haiku-4-5"
messages = [{"role": "user", "content": "Hello"}]


def check(condition, message):
    if not condition:
        print("FAILED:", message)
        sys.exit(1)


# 1. Raw streamed events: the documented sequence.
events = list(client.messages.create(model=MODEL, max_tokens=64, messages=messages, stream=True))
types = [event.type for event in events]
check(types[0] == "message_start", f"first event {types}")
check(types[1] == "content_block_start", f"second event {types}")
check(types[-2:] == ["message_delta", "message_stop"], f"last events {types}")
check("content_block_stop" in types, f"no content_block_stop in {types}")
text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
check(text == "Hello from the emulator!", f"streamed text {text!r}")
check(events[0].message.usage.input_tokens > 0, "input tokens")
check(events[-2].delta.stop_reason == "end_turn", "stop reason")
check(events[-2].usage.output_tokens > 1, "cumulative output tokens")

# 2. The streaming helper accumulates the final message.
with client.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
check(streamed == "Streaming helper works.", f"helper text {streamed!r}")
check(final.content[0].text == "Streaming helper works.", "final message text")
check(final.stop_reason == "end_turn", "final stop reason")

# 3. Tool use: input_json_delta pieces are parsed by the SDK into the tool input.
tools = [{
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]
with client.messages.stream(model=MODEL, max_tokens=256, messages=messages, tools=tools) as stream:
    final = stream.get_final_message()
tool_uses = [block for block in final.content if block.type == "tool_use"]
check(len(tool_uses) == 1, f"tool uses {final.content}")
check(tool_uses[0].name == "get_weather", "tool name")
check(tool_uses[0].input == {"location": "San Francisco, CA", "unit": "celsius"}, f"tool input {tool_uses[0].input}")
check(tool_uses[0].id.startswith("toolu_"), "tool id")
check(final.stop_reason == "tool_use", "tool stop reason")

# 4. Non-streamed request: a Message object.
message = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
check(message.type == "message" and message.role == "assistant", "message shape")
check(message.content[0].text == "Not streamed.", f"message text {message.content}")
check(message.usage.output_tokens > 0, "usage")

# 5. HTTP 429 in Anthropic's error shape.
try:
    client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    check(False, "429 was not raised")
except anthropic.RateLimitError as error:
    check(error.status_code == 429, "status")
    check(error.body["error"]["type"] == "rate_limit_error", f"error body {error.body}")

# 6. An error event mid-stream.
try:
    for event in client.messages.create(model=MODEL, max_tokens=64, messages=messages, stream=True):
        pass
    check(False, "the mid-stream error was not raised")
except anthropic.APIStatusError as error:
    check("overloaded_error" in str(error), f"error {error}")

# 7. Text then two tool calls in one streamed response; raw events carry input_json_delta pieces.
events = list(client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=tools, stream=True))
starts = [e.content_block for e in events if e.type == "content_block_start"]
check([b.type for b in starts] == ["text", "tool_use", "tool_use"], f"blocks {starts}")
pieces = {}
for event in events:
    if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
        pieces.setdefault(event.index, []).append(event.delta.partial_json)
check(all(len(p) > 1 for p in pieces.values()), f"tool input arrives in pieces {pieces}")
inputs = [json.loads("".join(pieces[i])) for i in sorted(pieces)]
check(inputs == [{"location": "Paris"}, {"location": "Rome"}], f"inputs {inputs}")
check(events[-2].delta.stop_reason == "tool_use", "stop reason tool_use")
assistant = {"role": "assistant", "content": [
    {"type": "text", "text": "Let me look."},
    *({"type": "tool_use", "id": b.id, "name": b.name, "input": inputs[i]} for i, b in enumerate(starts[1:])),
]}
results = [{"type": "tool_result", "tool_use_id": b.id, "content": "sunny"} for b in starts[1:]]

# 8. The tool results go back in the next user message; the model answers.
with client.messages.stream(model=MODEL, max_tokens=256, tools=tools, messages=messages + [assistant, {"role": "user", "content": results}]) as stream:
    answer = "".join(stream.text_stream)
check(answer == "Sunny in both.", f"answer after tool results {answer!r}")

# 9. A tool_use without its tool_result is refused as the API refuses it.
try:
    client.messages.create(model=MODEL, max_tokens=64, tools=tools, messages=messages + [assistant, {"role": "user", "content": results[:1]}])
    check(False, "a missing tool_result was not refused")
except anthropic.BadRequestError as error:
    check(error.status_code == 400 and starts[2].id in str(error), f"error {error}")

print("OK anthropic", anthropic.__version__)
