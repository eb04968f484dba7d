"""Drives the Deepgram live emulator with the official `deepgram-sdk` Python package (v7).

Run by tests/deepgram_official_client.rs, which scripts the utterances
"I need to reschedule my appointment." and "Thanks, goodbye." and passes the emulator's
ws:// and http:// base URLs in NIXFLEX_DEEPGRAM_WS_URL and NIXFLEX_DEEPGRAM_HTTP_URL.
The SDK is pointed at the emulator through its environment object (the `production` URL is
the one `listen.v1.connect` uses). Three seconds of 8 kHz mu-law audio are streamed: silence,
a tone the emulator hears as speech, silence; then a second utterance flushed by Finalize.
"""

import math
import os
import sys

from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment

ws_url = os.environ["NIXFLEX_DEEPGRAM_WS_URL"]
http_url = os.environ["NIXFLEX_DEEPGRAM_HTTP_URL"]
environment = DeepgramClientEnvironment(base=http_url, production=ws_url, agent=ws_url, agent_rest=http_url)
client = DeepgramClient(api_key="dg-test-key", environment=environment)


def check(condition, message):
    if not condition:
        print("FAILED:", message)
        sys.exit(1)


def mulaw(sample):
    """G.711 mu-law encoding of one 16-bit sample (reference algorithm, 14-bit input)."""
    value = sample >> 2
    sign = 0x80 if value < 0 else 0x00
    magnitude = (-value - 1) if value < 0 else value
    biased = magnitude + 33
    segment = max(biased.bit_length() - 6, 0)
    code = 0x7F if segment >= 8 else (segment << 4) | ((biased >> (segment + 1)) & 0x0F)
    return (sign | code) ^ 0xFF


def tone(seconds):
    return bytes(mulaw(int(8000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(int(8000 * seconds)))


def silence(seconds):
    return b"\xff" * int(8000 * seconds)


def frames(audio):
    return [audio[i:i + 160] for i in range(0, len(audio), 160)]


messages = []
with client.listen.v1.connect(
    model="nova-3",
    encoding="mulaw",
    sample_rate=8000,
    channels=1,
    interim_results=True,
    endpointing=300,
    utterance_end_ms=1000,
    vad_events=True,
    smart_format=True,
    language="en",
) as socket:
    for frame in frames(silence(0.3) + tone(1.2) + silence(1.5)):
        socket.send_media(frame)
    socket.send_keep_alive()
    while True:
        message = socket.recv()
        messages.append(message)
        if getattr(message, "type", None) == "UtteranceEnd":
            break
    # A second utterance, cut short by Finalize.
    for frame in frames(tone(0.5)):
        socket.send_media(frame)
    socket.send_finalize()
    while True:
        message = socket.recv()
        messages.append(message)
        if getattr(message, "type", None) == "Results" and message.from_finalize:
            break
    socket.send_close_stream()
    while True:
        message = socket.recv()
        messages.append(message)
        if getattr(message, "type", None) == "Metadata":
            break

types = [getattr(m, "type", None) for m in messages]
check(types[0] == "SpeechStarted", f"types {types}")
check(abs(messages[0].timestamp - 0.3) < 0.05, f"speech started at {messages[0].timestamp}")
results = [m for m in messages if getattr(m, "type", None) == "Results"]
interims = [r for r in results if not r.is_final]
check(len(interims) >= 1, "interim results")
final = next(r for r in results if r.is_final and r.speech_final)
check(final.channel.alternatives[0].transcript == "I need to reschedule my appointment.", f"final {final}")
check(final.channel.alternatives[0].confidence > 0.9, "confidence")
check(len(final.channel.alternatives[0].words) == 6, "words")
check(final.metadata.model_info.arch == "nova-3", f"metadata {final.metadata}")
check("UtteranceEnd" in types, "utterance end")
flushed = results[-1]
check(flushed.from_finalize and flushed.channel.alternatives[0].transcript == "Thanks, goodbye.", f"finalize {flushed}")
check(types[-1] == "Metadata" and messages[-1].channels == 1, "metadata last")

print("OK deepgram", len(messages), "messages")
