"""Drives the Cartesia emulator with the official `cartesia` Python SDK.

Run by crates/nixflex-testkit/tests/cartesia_official_client.rs with NIXFLEX_CARTESIA_URL set to
the emulator. Prints `OK cartesia` when every check passes.
"""

import os
import struct

import cartesia
from cartesia import Cartesia

base_url = os.environ["NIXFLEX_CARTESIA_URL"]
client = Cartesia(api_key="sk_car_test", base_url=base_url, max_retries=0)

# 1. Raw 16 kHz PCM streamed from /tts/bytes, 60 ms of audio per character.
text = "Hello from the emulator"
response = client.tts.generate(
    model_id="sonic-3",
    transcript=text,
    voice={"mode": "id", "id": "voice-1"},
    output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
)
audio = response.read()
assert len(audio) == len(text) * 16000 * 60 // 1000 * 2, len(audio)
samples = struct.unpack("<%dh" % (len(audio) // 2), audio)
assert max(abs(s) for s in samples) > 1000, "the audio is silent"

# 2. μ-law at 8 kHz with the voice given as a plain id, streamed chunk by chunk.
with client.tts.with_streaming_response.generate(
    model_id="sonic-3",
    transcript="Hi",
    voice="voice-1",
    output_format={"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000},
) as streamed:
    ulaw = b"".join(streamed.iter_bytes())
assert len(ulaw) == 2 * 8000 * 60 // 1000, len(ulaw)

# 3. A WAV container starts with a RIFF header.
wav = client.tts.generate(
    model_id="sonic-3",
    transcript="Hi",
    voice="voice-1",
    output_format={"container": "wav", "encoding": "pcm_s16le", "sample_rate": 8000},
).read()
assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE", wav[:12]

# 4. A wrong key is a 401 the SDK raises as AuthenticationError.
wrong = Cartesia(api_key="wrong-key", base_url=base_url, max_retries=0)
try:
    wrong.tts.generate(
        model_id="sonic-3",
        transcript="x",
        voice="voice-1",
        output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
    ).read()
    raise AssertionError("a wrong key was accepted")
except cartesia.AuthenticationError as error:
    assert error.status_code == 401

# 5. An unknown voice is a 404.
try:
    client.tts.generate(
        model_id="sonic-3",
        transcript="x",
        voice="nobody",
        output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
    ).read()
    raise AssertionError("an unknown voice was accepted")
except cartesia.NotFoundError as error:
    assert error.status_code == 404

print("OK cartesia")
