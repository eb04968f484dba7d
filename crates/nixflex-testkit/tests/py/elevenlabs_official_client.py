"""Drives the ElevenLabs emulator with the official `elevenlabs` Python SDK.

Run by crates/nixflex-testkit/tests/elevenlabs_official_client.rs with NIXFLEX_ELEVENLABS_URL set
to the emulator. Prints `OK elevenlabs` when every check passes.
"""

import os
import struct

from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

base_url = os.environ["NIXFLEX_ELEVENLABS_URL"]
client = ElevenLabs(api_key="xi-test", base_url=base_url)

# 1. Streamed speech as 16 kHz PCM: several chunks, 60 ms of audio per character.
text = "Hello from the emulator"
chunks = list(
    client.text_to_speech.stream(
        voice_id="voice-1",
        text=text,
        model_id="eleven_flash_v2_5",
        output_format="pcm_16000",
    )
)
audio = b"".join(chunks)
assert len(audio) == len(text) * 16000 * 60 // 1000 * 2, len(audio)
samples = struct.unpack("<%dh" % (len(audio) // 2), audio)
assert max(abs(s) for s in samples) > 1000, "the audio is silent"

# 2. The non-streamed endpoint in μ-law, for a phone line: one byte per sample at 8 kHz.
ulaw = b"".join(
    client.text_to_speech.convert(
        voice_id="voice-1", text="Hi", model_id="eleven_flash_v2_5", output_format="ulaw_8000"
    )
)
assert len(ulaw) == 2 * 8000 * 60 // 1000, len(ulaw)

# 3. A wrong key is ElevenLabs' 401 with its error detail.
wrong = ElevenLabs(api_key="wrong-key", base_url=base_url)
try:
    b"".join(wrong.text_to_speech.stream(voice_id="voice-1", text="x", output_format="pcm_16000"))
    raise AssertionError("a wrong key was accepted")
except ApiError as error:
    assert error.status_code == 401, error.status_code
    assert error.body["detail"]["status"] == "invalid_api_key", error.body

# 4. An unknown voice is a 404 `voice_not_found`.
try:
    b"".join(client.text_to_speech.stream(voice_id="nobody", text="x", output_format="pcm_16000"))
    raise AssertionError("an unknown voice was accepted")
except ApiError as error:
    assert error.status_code == 404, error.status_code
    assert error.body["detail"]["status"] == "voice_not_found", error.body

print("OK elevenlabs")
