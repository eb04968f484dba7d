"""Finishes one corpus clip (called by generate.sh): reads 8 kHz float parts, trims each to at
most 20 ms of leading/trailing silence, joins them with 500 ms of zeros, scales the result so its
active-speech RMS is -20 dBFS and writes a canonical 44-byte-header 16-bit mono WAV.

Active speech: 10 ms frames whose RMS is within 35 dB of the loudest frame (the same idea as
nixflex-testkit's corpus::Clip::speech_ranges, which uses -45 dBFS on the normalised clip).
"""

import array
import math
import sys
import wave

RATE = 8000
FRAME = 80  # 10 ms
MARGIN = 120  # 15 ms kept before the first and after the last active frame (<= 20 ms)
TARGET_DBFS = -20.0
PAUSE = 4000  # 500 ms


def read_f32(path):
    samples = array.array("f")
    with open(path, "rb") as handle:
        samples.frombytes(handle.read())
    return list(samples)


def frame_rms(samples):
    out = []
    for start in range(0, len(samples), FRAME):
        frame = samples[start : start + FRAME]
        out.append(math.sqrt(sum(x * x for x in frame) / len(frame)))
    return out


def trim(samples):
    rms = frame_rms(samples)
    loudest = max(rms)
    # Silence: more than 50 dB below the loudest frame.
    active = [i for i, r in enumerate(rms) if r > loudest * 10 ** (-50 / 20)]
    start = max(0, active[0] * FRAME - MARGIN)
    end = min(len(samples), (active[-1] + 1) * FRAME + MARGIN)
    out = samples[start:end]
    # 5 ms fades so the trimmed edges do not click.
    fade = 40
    for i in range(min(fade, len(out))):
        gain = i / fade
        out[i] *= gain
        out[-1 - i] *= gain
    return out


def trim_quiet_edges(pcm):
    """Drops what is left at either end below -45 dBFS (Clip::speech_ranges' threshold) after
    the normalisation, keeping MARGIN samples, and fades the new edges."""
    threshold = 32768 * 10 ** (-45 / 20)
    rms = frame_rms(pcm)
    active = [i for i, r in enumerate(rms) if r > threshold]
    start = max(0, active[0] * FRAME - MARGIN)
    end = min(len(pcm), (active[-1] + 1) * FRAME + MARGIN)
    out = list(pcm[start:end])
    fade = 40
    for i in range(min(fade, len(out))):
        out[i] = round(out[i] * i / fade)
        out[-1 - i] = round(out[-1 - i] * i / fade)
    return array.array("h", out)


def main():
    target, *parts = sys.argv[1:]
    samples = []
    for index, part in enumerate(parts):
        if index:
            samples.extend([0.0] * PAUSE)
        samples.extend(trim(read_f32(part)))
    rms = frame_rms(samples)
    loudest = max(rms)
    active = [i for i, r in enumerate(rms) if r > loudest * 10 ** (-35 / 20)]
    energy = 0.0
    count = 0
    for i in active:
        frame = samples[i * FRAME : (i + 1) * FRAME]
        energy += sum(x * x for x in frame)
        count += len(frame)
    active_rms = math.sqrt(energy / count)
    gain = 10 ** (TARGET_DBFS / 20) / active_rms
    pcm = array.array("h")
    for x in samples:
        value = round(x * gain * 32768)
        pcm.append(max(-32768, min(32767, value)))
    pcm = trim_quiet_edges(pcm)
    if sys.byteorder != "little":
        pcm.byteswap()
    with wave.open(target, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())


main()
