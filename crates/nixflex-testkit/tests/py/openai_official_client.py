"""Drives the OpenAI-compatible emulator with the official `openai` Python SDK.

Run by tests/openai_official_client.rs, which scripts the emulator in this order and passes
the base URL (with /v1) in NIXFLEX_OPENAI_URL:
  1. chat text "Hello from the emulator!"      (streamed, include_usage)
  2. chat tool call lookup_order {"order_id": "A-1001"}   (streamed)
  3. chat text "Not streamed."                  (non-streamed)
  4. HTTP 429                                   (RateLimitError expected)
  5. speech, pcm, "Hello there." -> 12 chars x 60 ms of 24 kHz s16le
  6. speech, mp3                                (400 in OpenAI's error shape)
  7. chat: two streamed tool calls lookup_order A-1 and A-2 in one response
  8. chat text "Both orders shipped."           (after the two tool results, streamed)
  9. (no reply used) a tool call left without its result: 400
"""

import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["NIXFLEX_OPENAI_URL"], api_key="sk-test", max_retries=0, timeout=10)
MODEL = "gpt-4o-mini"
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def check(condition, message):
    if not condition:
        print("FAILED:", message)
        sys.exit(1)


# 1. Streamed text with a usage chunk.
chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == "Hello from the emulator!", f"streamed text {text!r}")
check(chunks[0].choices[0].delta.role == "assistant", "first chunk role")
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
check(finishes == ["stop"], f"finish reasons {finishes}")
check(chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0, f"usage chunk {chunks[-1]}")
check(all(c.object == "chat.completion.chunk" for c in chunks), "chunk object")

# 2. Streamed tool call, arguments assembled by index (as the SDK docs show).
tools = [{"type": "function", "function": {"name": "lookup_order", "description": "Finds an order", "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}]
calls = {}
finish = None
for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=tools, stream=True):
    choice = chunk.choices[0]
    for call in choice.delta.tool_calls or []:
        entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
        if call.id:
            entry["id"] = call.id
        if call.function and call.function.name:
            entry["name"] += call.function.name
        if call.function and call.function.arguments:
            entry["arguments"] += call.function.arguments
    finish = choice.finish_reason or finish
check(finish == "tool_calls", f"tool finish {finish}")
check(calls[0]["name"] == "lookup_order" and calls[0]["id"].startswith("call_"), f"calls {calls}")
import json
check(json.loads(calls[0]["arguments"]) == {"order_id": "A-1001"}, f"arguments {calls[0]['arguments']}")

# 3. Non-streamed completion.
completion = client.chat.completions.create(model=MODEL, messages=messages)
check(completion.choices[0].message.content == "Not streamed.", f"completion {completion}")
check(completion.choices[0].finish_reason == "stop", "finish")
check(completion.usage.prompt_tokens > 0, "usage")

# 4. Rate limit in OpenAI's error shape.
try:
    client.chat.completions.create(model=MODEL, messages=messages)
    check(False, "429 not raised")
except openai.RateLimitError as error:
    check(error.status_code == 429, "status")
    check(error.code == "rate_limit_exceeded", f"code {error.code}")

# 5. Speech as raw 24 kHz PCM, streamed.
audio = b""
with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="alloy", input="Hello there.", response_format="pcm") as response:
    for chunk in response.iter_bytes():
        audio += chunk
check(len(audio) == 12 * 60 * 24 * 2, f"pcm bytes {len(audio)}")

# 6. Formats the emulator cannot make are refused with a 400.
try:
    client.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="mp3")
    check(False, "mp3 was not refused")
except openai.BadRequestError as error:
    check(error.status_code == 400 and error.param == "response_format", f"error {error}")

# 7. Two tool calls in one streamed response, then their results sent back as `tool` messages.
calls = {}
for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=tools, stream=True):
    for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
        entry["id"] = call.id or entry["id"]
        if call.function and call.function.name:
            entry["name"] += call.function.name
        if call.function and call.function.arguments:
            entry["arguments"] += call.function.arguments
check(sorted(calls) == [0, 1], f"two calls {calls}")
check([json.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"order_id": "A-1"}, {"order_id": "A-2"}], f"arguments {calls}")
check(calls[0]["id"] != calls[1]["id"], "distinct ids")
assistant = {"role": "assistant", "content": None, "tool_calls": [
    {"id": calls[i]["id"], "type": "function", "function": {"name": calls[i]["name"], "arguments": calls[i]["arguments"]}} for i in (0, 1)
]}
results = [{"role": "tool", "tool_call_id": calls[i]["id"], "content": "shipped"} for i in (0, 1)]

# 8. The next request carries the tool results; the model answers in text.
chunks = list(client.chat.completions.create(model=MODEL, messages=messages + [assistant] + results, tools=tools, stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == "Both orders shipped.", f"answer after tool results {text!r}")

# 9. A tool call without its result is refused as the API refuses it.
try:
    client.chat.completions.create(model=MODEL, messages=messages + [assistant] + results[:1], tools=tools)
    check(False, "a missing tool result was not refused")
except openai.BadRequestError as error:
    check(error.status_code == 400 and calls[1]["id"] in str(error), f"error {error}")

# 10. Transcription: a WAV with speech gets the scripted transcript; silence gets "".
import io, math, struct, wave

def wav_bytes(amplitude):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(8000)))
    return buffer.getvalue()

result = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", wav_bytes(8000), "audio/wav"), language="en", prompt="Vocabulary: Nixflex.")
check(result.text == "Do you deliver?", f"transcript {result.text!r}")
quiet = client.audio.transcriptions.create(model="whisper-1", file=("quiet.wav", wav_bytes(0), "audio/wav"))
check(quiet.text == "", f"silence {quiet.text!r}")
text = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", wav_bytes(8000), "audio/wav"), response_format="text")
check(text.strip() == "Second one.", f"text format {text!r}")

# 11. A file that is not audio is refused with the API's 400.
try:
    client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"not audio", "audio/wav"))
    check(False, "a non-audio file was not refused")
except openai.BadRequestError as error:
    check(error.status_code == 400 and error.param == "file", f"error {error}")

print("OK openai", openai.__version__)
