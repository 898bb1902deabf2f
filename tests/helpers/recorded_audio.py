"""A recording against the audio that was sent, 0.1 s block by block: whether the message
arrived whole, or where a packet was lost (a damaged block) or audio was dropped or added
(a slip). Used by the SIP tests and benchmarks (``bench/sip_common.py``).
"""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000  # G.711's
BLOCK_SECONDS = 0.1  # compare_audio's unit: a lost 20 ms packet is a fifth of it
SEARCH_SAMPLES = 400  # 50 ms either side of where the previous block puts a block
SPEECH_RMS = 300.0  # a block quieter than this (16-bit) is a pause: not compared
DAMAGED_BELOW = 0.98  # normalised correlation; intact µ-law blocks: 0.9999, a lost 20 ms: < 0.9
SLIP_SAMPLES = 16  # 2 ms

Pcm = npt.NDArray[np.int16]


def decode_8k(data: bytes) -> Pcm:
    """An audio file's first channel as 16-bit PCM at 8 kHz."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pieces: list[Pcm] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        for frame in [*container.decode(audio=0), None]:
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1).astype(np.int16))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int16)


def _find(
    block: npt.NDArray[np.float64], stored: npt.NDArray[np.float64], lo: int, hi: int
) -> tuple[int, float]:
    """Where in ``stored[lo:hi + len(block)]`` ``block`` fits best: (start, normalised
    correlation). Correlated through the FFT: a search of the whole recording is cheap."""
    lo, hi = max(0, lo), min(len(stored) - len(block), hi)
    if hi < lo:
        return lo, 0.0
    window = stored[lo : hi + len(block)]
    size = 1 << (len(window) + len(block)).bit_length()
    spectrum = np.fft.rfft(window, size) * np.conj(np.fft.rfft(block, size))
    products = np.fft.irfft(spectrum, size)[: hi - lo + 1]
    energy = np.concatenate([[0.0], np.cumsum(window * window)])
    norms = np.sqrt(np.maximum(energy[len(block) :] - energy[: -len(block)], 0.0))
    # Where the recording is (nearly) silent the FFT's rounding noise, divided by a norm
    # near zero, would score anything: such places cannot hold a block of speech anyway.
    quiet = norms < np.sqrt(len(block)) * SPEECH_RMS / 4
    scores = np.where(quiet, 0.0, products / np.maximum(norms * np.linalg.norm(block), 1e-9))
    best = int(np.argmax(scores))
    return lo + best, float(scores[best])


def compare_audio(sent: Pcm, stored: Pcm) -> dict[str, Any]:
    """The streamed message against the recording, 0.1 s block by block. A block of speech
    is looked for near where the previous one was found (50 ms either side), or in the
    whole recording when none was found yet or the previous one was damaged (a long gap,
    a cut start). Found with a normalised correlation under ``DAMAGED_BELOW``: damaged (a
    lost packet concealed, a gap); found more than ``SLIP_SAMPLES`` from where the previous
    one put it: a slip (audio dropped or added). Whole: speech, neither."""
    block_len = round(BLOCK_SECONDS * SAMPLE_RATE)
    sent_f, stored_f = sent.astype(np.float64), stored.astype(np.float64)
    lag: int | None = None  # stored index minus sent index
    first_lag = 0
    speech = damaged = slips = 0
    worst = 1.0
    lost = False  # the previous block of speech was damaged
    first_intact: bool | None = None
    events: list[str] = []  # the first few damaged blocks and slips, for a look
    for offset in range(0, len(sent_f) - block_len + 1, block_len):
        block = sent_f[offset : offset + block_len]
        if np.sqrt(np.mean(block * block)) < SPEECH_RMS:
            continue
        speech += 1
        at = offset / SAMPLE_RATE
        if lag is None or lost:
            low, high = 0, len(stored_f)
        else:
            low, high = offset + lag - SEARCH_SAMPLES, offset + lag + SEARCH_SAMPLES
        found, score = _find(block, stored_f, low, high)
        worst = min(worst, score)
        lost = score < DAMAGED_BELOW
        if first_intact is None:
            first_intact = not lost
        if lost:
            damaged += 1
            events.append(f"{at:.2f}s damaged ({score:.3f})")
            continue
        if lag is None:
            first_lag = found - offset
        elif abs(found - offset - lag) > SLIP_SAMPLES:
            slips += 1
            events.append(f"{at:.2f}s slip {(found - offset - lag) / SAMPLE_RATE * 1000:+.1f} ms")
        lag = found - offset
    return {
        "start_intact": first_intact is True,  # the message's first block of speech found
        "end_intact": not lost and speech > 0,  # and its last
        "speech_blocks": speech,
        "damaged_blocks": damaged,
        "slips": slips,
        "message_starts_at_s": round(first_lag / SAMPLE_RATE, 3),
        "drift_ms": round(((lag or first_lag) - first_lag) / SAMPLE_RATE * 1000, 1),
        "worst_correlation": round(worst, 4),
        "whole": speech > 0 and damaged == 0 and slips == 0,
        "events": events[:20],
    }
